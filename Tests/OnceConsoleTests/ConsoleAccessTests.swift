import Crypto
import Foundation
import Testing

@testable import OnceConsole

/// The console's security logic as plain values: tokens, sessions, CSRF tokens, origins and
/// where it may listen.
@Suite struct ConsoleAccessTests {
    let secret = SymmetricKey(data: Array(repeating: UInt8(7), count: 32))
    let now: Int64 = 1_800_000_000

    @Test func tokensCompareWholeAndBearerNeedsItsScheme() {
        let access = ConsoleAccess(token: "s3cret-token", secret: secret)
        #expect(access.actionsEnabled)
        #expect(access.accepts(token: "s3cret-token"))
        #expect(!access.accepts(token: "s3cret-toke"))
        #expect(!access.accepts(token: "s3cret-token "))
        #expect(!access.accepts(token: ""))
        #expect(access.acceptsBearer("Bearer s3cret-token"))
        #expect(access.acceptsBearer("bearer s3cret-token"))
        #expect(!access.acceptsBearer("Basic s3cret-token"))
        #expect(!access.acceptsBearer("Bearer wrong"))
        #expect(!access.acceptsBearer(nil))
    }

    @Test func withoutATokenNothingIsAccepted() {
        for token in [nil, ""] as [String?] {
            let access = ConsoleAccess(token: token, secret: secret)
            #expect(!access.actionsEnabled)
            #expect(!access.accepts(token: ""))
            #expect(access.session(fromCookie: access.newSession(operator: "x", now: now), now: now) == nil)
            #expect(access.authorize(origin: nil, host: "h", bearer: "Bearer ", cookie: nil, csrf: nil, now: now) == .disabled)
        }
    }

    @Test func sessionsCarryTheOperatorAndCannotBeForged() throws {
        let access = ConsoleAccess(token: "t0ken", secret: secret)
        let cookie = access.newSession(operator: "  Ada <ops>\n", now: now)
        let session = try #require(access.session(fromCookie: cookie, now: now + 10))
        #expect(session.operatorName == "Ada <ops>")
        #expect(ConsoleAccess.operatorName("") == "console")

        // Another operator name under the same MAC, a flipped MAC, another token, another process.
        var parts = cookie.split(separator: ".").map(String.init)
        parts[2] = ConsoleAccess.base64URL(Data("root".utf8))
        #expect(access.session(fromCookie: parts.joined(separator: "."), now: now) == nil)
        let flipped = String(cookie.dropLast()) + (cookie.hasSuffix("0") ? "1" : "0")
        #expect(access.session(fromCookie: flipped, now: now) == nil)
        #expect(ConsoleAccess(token: "other", secret: secret).session(fromCookie: cookie, now: now) == nil)
        #expect(ConsoleAccess(token: "t0ken").session(fromCookie: cookie, now: now) == nil)
        #expect(access.session(fromCookie: "garbage", now: now) == nil)
        // Expiry.
        #expect(access.session(fromCookie: cookie, now: now + ConsoleAccess.sessionLifetime) == nil)
    }

    @Test func csrfTokensBelongToOneSession() throws {
        let access = ConsoleAccess(token: "t0ken", secret: secret)
        let first = try #require(access.session(fromCookie: access.newSession(operator: "a", now: now), now: now))
        let second = try #require(access.session(fromCookie: access.newSession(operator: "a", now: now), now: now))
        let token = access.csrfToken(for: first)
        #expect(access.acceptsCSRF(token, for: first))
        #expect(!access.acceptsCSRF(token, for: second))
        #expect(!access.acceptsCSRF(nil, for: first))
        #expect(!access.acceptsCSRF("zz", for: first))
    }

    @Test func authorizeDecidesEveryCase() throws {
        let access = ConsoleAccess(token: "t0ken", secret: secret)
        let cookie = access.newSession(operator: "ada", now: now)
        let session = try #require(access.session(fromCookie: cookie, now: now))
        let csrf = access.csrfToken(for: session)
        let host = "127.0.0.1:9464"
        func decide(origin: String? = nil, bearer: String? = nil, cookie: String? = nil, csrf: String? = nil)
            -> ConsoleAuthorization
        {
            access.authorize(origin: origin, host: host, bearer: bearer, cookie: cookie, csrf: csrf, now: now)
        }
        #expect(decide() == .unauthorized("log in with the console token first"))
        #expect(decide(bearer: "Bearer t0ken") == .allowed(operator: "bearer token"))
        if case .unauthorized = decide(bearer: "Bearer nope") {} else { Issue.record("a wrong bearer token passed") }
        #expect(decide(cookie: cookie, csrf: csrf) == .allowed(operator: "ada"))
        #expect(decide(origin: "http://127.0.0.1:9464", cookie: cookie, csrf: csrf) == .allowed(operator: "ada"))
        if case .forbidden = decide(cookie: cookie, csrf: nil) {} else { Issue.record("a form without CSRF passed") }
        if case .forbidden = decide(cookie: cookie, csrf: String(repeating: "0", count: 64)) {} else {
            Issue.record("a wrong CSRF token passed")
        }
        if case .forbidden = decide(origin: "http://evil.example", cookie: cookie, csrf: csrf) {} else {
            Issue.record("another origin passed")
        }
        if case .forbidden = decide(origin: "http://evil.example", bearer: "Bearer t0ken") {} else {
            Issue.record("another origin passed with a bearer token")
        }
        if case .unauthorized = decide(cookie: "forged.cookie.x.y", csrf: csrf) {} else { Issue.record("a forged cookie passed") }
    }

    @Test func constantTimeEqualityIsEquality() {
        #expect(ConsoleAccess.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!ConsoleAccess.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!ConsoleAccess.constantTimeEqual([1, 2], [1, 2, 3]))
        #expect(ConsoleAccess.unhex(ConsoleAccess.hex([0, 15, 255])) == [0, 15, 255])
        #expect(ConsoleAccess.unhex("0g") == nil)
    }

    @Test func onlyLoopbackWithoutAToken() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1"] {
            #expect(ConsoleListenPolicy.isLoopback(host), "\(host)")
            #expect(ConsoleListenPolicy.refusal(host: host, token: nil) == nil)
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "127.0.0.256", "example.org"] {
            #expect(!ConsoleListenPolicy.isLoopback(host), "\(host)")
            let refusal = ConsoleListenPolicy.refusal(host: host, token: nil)
            #expect(refusal?.contains("ONCE_CONSOLE_TOKEN") == true)
            #expect(refusal?.contains("\n") == false)
            #expect(ConsoleListenPolicy.refusal(host: host, token: "") != nil)
            #expect(ConsoleListenPolicy.refusal(host: host, token: "t") == nil)
        }
    }

    @Test func sameOriginComparesSchemeLessHost() {
        #expect(ConsoleAccess.sameOrigin("http://127.0.0.1:9464", host: "127.0.0.1:9464"))
        #expect(ConsoleAccess.sameOrigin("https://Console.Example:443", host: "console.example:443"))
        #expect(!ConsoleAccess.sameOrigin("http://127.0.0.1:9465", host: "127.0.0.1:9464"))
        #expect(!ConsoleAccess.sameOrigin("null", host: "127.0.0.1:9464"))
        #expect(!ConsoleAccess.sameOrigin("http://127.0.0.1:9464", host: nil))
    }
}
