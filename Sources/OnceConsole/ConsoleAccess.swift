import Crypto
import Foundation

/// Who may act through the console, and the proofs a browser carries: a signed session cookie
/// and a CSRF token derived from it.
///
/// Pages are read-only and open to whoever reaches the listener; every action (a POST) needs the
/// operator token (`ONCE_CONSOLE_TOKEN`): either `Authorization: Bearer <token>`, or a session
/// cookie that the login form sets once the token was typed in, together with the session's CSRF
/// token in the form. Without a token configured every action is refused.
///
/// Nothing is stored on the server: a session is `issued.random.operator.mac`, the MAC an
/// HMAC-SHA256 under a key derived from the token and a secret of this process, so a restart or
/// another token ends every session. Every comparison of a secret is in constant time.
/// Immutable and `Sendable`; safe to share between request handlers.
public struct ConsoleAccess: Sendable {
    /// The name of the session cookie.
    public static let cookieName = "once_console"
    /// How long a session lasts after login.
    public static let sessionLifetime: Int64 = 12 * 3600

    private let tokenDigest: [UInt8]?
    private let key: SymmetricKey

    /// `token` nil or empty disables every action. `secret` is this process's own (random by
    /// default); tests pass one to get repeatable sessions.
    public init(token: String?, secret: SymmetricKey = SymmetricKey(size: .bits256)) {
        let token = token.flatMap { $0.isEmpty ? nil : $0 }
        tokenDigest = token.map { Array(SHA256.hash(data: Data($0.utf8))) }
        let material = Data((token ?? "").utf8)
        key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: material, using: secret)))
    }

    /// True when a token is configured, that is when actions can be enabled at all.
    public var actionsEnabled: Bool { tokenDigest != nil }

    /// Whether `candidate` is the configured token; compares digests in constant time.
    public func accepts(token candidate: String) -> Bool {
        guard let tokenDigest else { return false }
        let digest = Array(SHA256.hash(data: Data(candidate.utf8)))
        return Self.constantTimeEqual(digest, tokenDigest)
    }

    /// Whether an `Authorization` header value is `Bearer <the token>`.
    public func acceptsBearer(_ header: String?) -> Bool {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        return accepts(token: String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces))
    }

    /// A browser session for the operator `name` (shown on resolved dead letters), issued at
    /// `now` (seconds since the epoch): the cookie's value.
    public func newSession(operator name: String, now: Int64 = Int64(Date().timeIntervalSince1970)) -> String {
        var random = SystemRandomNumberGenerator()
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }
        let body = "\(now).\(Self.hex(nonce)).\(Self.base64URL(Data(Self.operatorName(name).utf8)))"
        return body + "." + mac("session:" + body)
    }

    /// The session a cookie value proves, or nil when it is missing, forged, expired or made
    /// for another token or process.
    public func session(fromCookie value: String?, now: Int64 = Int64(Date().timeIntervalSince1970))
        -> ConsoleSession?
    {
        guard actionsEnabled, let value else { return nil }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, let issued = Int64(parts[0]), let code = Self.unhex(parts[3]) else { return nil }
        let body = parts[0...2].joined(separator: ".")
        guard HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: Data(("session:" + body).utf8), using: key)
        else { return nil }
        guard issued <= now + 60, now - issued < Self.sessionLifetime else { return nil }
        guard let nameData = Self.unbase64URL(parts[2]) else { return nil }
        return ConsoleSession(id: body, operatorName: String(decoding: nameData, as: UTF8.self))
    }

    /// The CSRF token every form of `session` carries.
    public func csrfToken(for session: ConsoleSession) -> String {
        mac("csrf:" + session.id)
    }

    /// Whether `candidate` is `session`'s CSRF token; constant time.
    public func acceptsCSRF(_ candidate: String?, for session: ConsoleSession) -> Bool {
        guard let candidate, let code = Self.unhex(candidate) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: Data(("csrf:" + session.id).utf8), using: key)
    }

    /// What may be done with a POST carrying these credentials.
    ///
    /// - `origin`/`host`: the request's `Origin` header (checked when present: it must name
    ///   this listener) and its host (`Host` or `:authority`).
    /// - `bearer`: the `Authorization` header; a valid one needs no CSRF token (a browser never
    ///   adds it on its own).
    /// - `cookie`/`csrf`: the session cookie's value and the form's `csrf` field.
    public func authorize(
        origin: String?, host: String?, bearer: String?, cookie: String?, csrf: String?,
        now: Int64 = Int64(Date().timeIntervalSince1970)
    ) -> ConsoleAuthorization {
        guard actionsEnabled else { return .disabled }
        if let origin, !Self.sameOrigin(origin, host: host) {
            return .forbidden("the request comes from another origin (\(origin))")
        }
        if let bearer {
            return acceptsBearer(bearer) ? .allowed(operator: "bearer token") : .unauthorized("the bearer token is wrong")
        }
        guard let session = session(fromCookie: cookie, now: now) else {
            return .unauthorized(cookie == nil ? "log in with the console token first" : "the session has expired; log in again")
        }
        guard acceptsCSRF(csrf, for: session) else {
            return .forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        }
        return .allowed(operator: session.operatorName)
    }

    /// `origin` (`scheme://host[:port]`) names `host` (`host[:port]`).
    static func sameOrigin(_ origin: String, host: String?) -> Bool {
        guard let host, !host.isEmpty else { return false }
        for scheme in ["http://", "https://"] where origin.hasPrefix(scheme) {
            return origin.dropFirst(scheme.count).lowercased() == host.lowercased()
        }
        return false
    }

    /// The name kept on what an operator resolved: printable, at most 64 characters.
    static func operatorName(_ name: String) -> String {
        let kept = name.trimmingCharacters(in: .whitespacesAndNewlines).unicodeScalars
            .filter { !CharacterSet.controlCharacters.contains($0) }
        let text = String(String.UnicodeScalarView(kept)).prefix(64)
        return text.isEmpty ? "console" : String(text)
    }

    private func mac(_ text: String) -> String {
        Self.hex(Array(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: key)))
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func unhex(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0, !chars.isEmpty else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        for index in stride(from: 0, to: chars.count, by: 2) {
            guard let high = value(chars[index]), let low = value(chars[index + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64URL(_ text: String) -> Data? {
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard)
    }
}

/// A logged-in browser session: its id (what its CSRF token is derived from) and the operator
/// name given at login.
public struct ConsoleSession: Sendable, Hashable {
    public var id: String
    public var operatorName: String
}

/// The answer to "may this POST act?".
public enum ConsoleAuthorization: Sendable, Hashable {
    /// Yes, on behalf of this operator.
    case allowed(operator: String)
    /// 401: no credentials, or wrong ones.
    case unauthorized(String)
    /// 403: credentials, but a forged form (CSRF token, origin).
    case forbidden(String)
    /// 403: no token is configured, so no action is possible.
    case disabled
}
