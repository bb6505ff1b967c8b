import Foundation
import OnceTestSupport
import Testing

/// The console's security over plain HTTP: actions need the token (and, from a browser session,
/// its CSRF token and origin), nothing changes otherwise; data is escaped; it refuses to listen
/// beyond loopback without a token; and without a token it stays read-only.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct ConsoleSecurityTests {
    static let script = "<script>alert(1)</script>"

    /// A good grant, one with negative credits (invalid_data) and one whose bytes are a script
    /// tag (invalid_json), processed.
    static func poisoned() async throws -> (fixture: OperatorFixture, badCredits: Int64, script: Int64) {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce([fixture.grant("good-1"), fixture.grant("bad-credits", credits: -5), Array(script.utf8)])
        try await fixture.processAll()
        return (fixture, try fixture.deadLetterID(offset: 1), try fixture.deadLetterID(offset: 2))
    }

    @Test func actionsWithoutTheTokenOrWithAForgedFormGet401Or403AndChangeNothing() async throws {
        let (fixture, badCredits, script) = try await Self.poisoned()
        let (console, port) = try await fixture.startConsole(token: "console-test-token")
        let http = ConsoleHTTP(port: port)
        let before = try fixture.snapshot()
        let retryPath = "/console/dead-letters/\(script)/retry"

        // No credentials at all; a wrong bearer token; a wrong token at the login form.
        let bare = try await http.post(retryPath)
        #expect(bare.status == 401, "\(bare.body)")
        #expect(bare.headers.contains { $0.key.lowercased() == "www-authenticate" })
        #expect(try await http.post(retryPath, headers: ["Authorization": "Bearer wrong"]).status == 401)
        #expect(try await http.post(retryPath, headers: ["Authorization": "Basic console-test-token"]).status == 401)
        let wrongLogin = try await http.post("/console/login", form: [("token", "guess"), ("operator", "x")])
        #expect(wrongLogin.status == 401)
        #expect(wrongLogin.sessionCookie == nil)
        #expect(try fixture.snapshot() == before, "a refused action changed the database")

        // A real session: HttpOnly, SameSite=Strict; its CSRF token in the page's forms.
        let login = try await http.post("/console/login", form: [("token", "console-test-token"), ("operator", "tester")])
        #expect(login.status == 303, "\(login.body)")
        let setCookie = login.headers.first { $0.key.lowercased() == "set-cookie" }?.value ?? ""
        #expect(setCookie.contains("HttpOnly"), "\(setCookie)")
        #expect(setCookie.contains("SameSite=Strict"), "\(setCookie)")
        let cookie = try #require(login.sessionCookie)
        let page = try await http.get("/console/dead-letters/\(script)", headers: ["Cookie": cookie])
        let csrf = try #require(page.csrf, "no CSRF token in the page")

        // The session without its CSRF token, with a wrong one, or from another origin.
        #expect(try await http.post(retryPath, headers: ["Cookie": cookie]).status == 403)
        let wrongCSRF = try await http.post(
            retryPath, form: [("csrf", String(repeating: "0", count: csrf.count))], headers: ["Cookie": cookie])
        #expect(wrongCSRF.status == 403)
        #expect(wrongCSRF.body.contains("CSRF"))
        let crossOrigin = try await http.post(
            retryPath, form: [("csrf", csrf)], headers: ["Cookie": cookie, "Origin": "http://evil.example"])
        #expect(crossOrigin.status == 403)
        // A CSRF token of this session does not work with another session's cookie.
        let other = try #require(
            try await http.post("/console/login", form: [("token", "console-test-token"), ("operator", "other")]).sessionCookie)
        #expect(try await http.post(retryPath, form: [("csrf", csrf)], headers: ["Cookie": other]).status == 403)
        #expect(try fixture.snapshot() == before, "a refused action changed the database")

        // The same request with the right CSRF token acts: the record fails again, and is counted.
        let allowed = try await http.post(
            retryPath, form: [("csrf", csrf)], headers: ["Cookie": cookie, "Origin": "http://127.0.0.1:\(port)"])
        #expect(allowed.status == 200, "\(allowed.body)")
        #expect(allowed.body.contains("failed again"))
        #expect(try fixture.count("SELECT retries FROM dead_letters WHERE id = $1", [.int64(script)]) == 1)

        // A script with the bearer token, after a fix: applied once.
        try fixture.execute(
            "UPDATE dead_letters SET payload = $2 WHERE id = $1",
            [.int64(badCredits), .bytea(fixture.grant("bad-credits", credits: 5))])
        let bearer = try await http.post(
            "/console/dead-letters/\(badCredits)/retry", headers: ["Authorization": "Bearer console-test-token"])
        #expect(bearer.status == 200, "\(bearer.body)")
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id = 'bad-credits'") == 1)
        #expect(
            try fixture.count("SELECT count(*) FROM dead_letters WHERE id = $1 AND resolved_at IS NOT NULL", [.int64(badCredits)])
                == 1)

        console.signal(SIGTERM)
        #expect(try await console.waitForExit(timeout: .seconds(30)) == 0, "\(console.output)")
        await fixture.tearDown()
    }

    @Test func aScriptInAPayloadIsShownAsText() async throws {
        let (fixture, _, script) = try await Self.poisoned()
        let (console, port) = try await fixture.startConsole(token: nil)
        let http = ConsoleHTTP(port: port)
        let page = try await http.get("/console/dead-letters/\(script)")
        #expect(page.status == 200)
        #expect(!page.body.contains(Self.script), "the payload's script tag is in the HTML")
        #expect(!page.body.contains("<script"), "a script tag is in the HTML")
        #expect(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        let policy = page.headers.first { $0.key.lowercased() == "content-security-policy" }?.value ?? ""
        #expect(policy.contains("default-src 'none'"), "\(policy)")
        let list = try await http.get("/console/dead-letters")
        #expect(list.body.contains("invalid_json"))
        #expect(!list.body.contains("<script"))

        console.signal(SIGTERM)
        _ = try await console.waitForExit(timeout: .seconds(30))
        await fixture.tearDown()
    }

    @Test func withoutATokenItIsReadOnlyAndSaysHowToEnableActions() async throws {
        let (fixture, badCredits, _) = try await Self.poisoned()
        let (console, port) = try await fixture.startConsole(token: nil)
        let http = ConsoleHTTP(port: port)
        let overview = try await http.get("/console")
        #expect(overview.status == 200)
        #expect(overview.body.contains(fixture.topic))
        #expect(overview.body.contains("ONCE_CONSOLE_TOKEN"))
        let detail = try await http.get("/console/dead-letters/\(badCredits)")
        #expect(!detail.body.contains("retry-form"), "a read-only console offers a retry")
        let before = try fixture.snapshot()
        let refused = try await http.post(
            "/console/dead-letters/\(badCredits)/retry", headers: ["Authorization": "Bearer "])
        #expect(refused.status == 403)
        #expect(refused.body.contains("ONCE_CONSOLE_TOKEN"))
        #expect(try await http.post("/console/login", form: [("token", "")]).status == 403)
        #expect(try fixture.snapshot() == before)

        console.signal(SIGTERM)
        _ = try await console.waitForExit(timeout: .seconds(30))
        await fixture.tearDown()
    }

    @Test func aNonLoopbackAddressNeedsAToken() async throws {
        let fixture = try await OperatorFixture.make()
        let refused = try await OnceProcess.run(
            ["console", "--http", "0.0.0.0:0", "--database-url", fixture.database.url],
            environment: ["ONCE_CONSOLE_TOKEN": ""], timeout: .seconds(30))
        expectFailure(refused, mentioning: "ONCE_CONSOLE_TOKEN")
        #expect(refused.output.contains("0.0.0.0"))

        // With a token it listens there.
        let allowed = try OnceProcess(
            ["console", "--http", "0.0.0.0:0", "--database-url", fixture.database.url],
            environment: ["ONCE_CONSOLE_TOKEN": "t"])
        try await eventually("listening", timeout: .seconds(30)) { allowed.output.contains("console: http://0.0.0.0:") }
        allowed.signal(SIGTERM)
        #expect(try await allowed.waitForExit(timeout: .seconds(30)) == 0, "\(allowed.output)")
        await fixture.tearDown()
    }
}
