import Foundation
import OnceTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Plain HTTP to the console as a script or an attacker would send it: no cookie jar, no
/// redirects followed, every header explicit.
struct ConsoleHTTP: Sendable {
    let port: Int

    struct Answer: Sendable {
        var status: Int
        var body: String
        var headers: [String: String]

        /// The `Set-Cookie` value of the console's session cookie, without its attributes.
        var sessionCookie: String? {
            guard let line = headers.first(where: { $0.key.lowercased() == "set-cookie" })?.value else { return nil }
            return line.split(separator: ";").first.map { String($0).trimmingCharacters(in: .whitespaces) }
        }

        /// The CSRF token the page's forms carry.
        var csrf: String? {
            body.firstMatch(of: /name="csrf" value="([0-9a-f]+)"/).map { String($0.1) }
        }
    }

    /// Stops URLSession from following redirects, so a 303 and its `Set-Cookie` are seen.
    final class NoRedirects: NSObject, URLSessionTaskDelegate, Sendable {
        func urlSession(
            _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
            newRequest request: URLRequest, completionHandler: @escaping @Sendable (URLRequest?) -> Void
        ) {
            completionHandler(nil)
        }
    }

    static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpShouldSetCookies = false
        configuration.httpCookieStorage = nil
        return URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }()

    func get(_ path: String, headers: [String: String] = [:]) async throws -> Answer {
        try await send("GET", path, headers: headers)
    }

    func post(_ path: String, form: [(String, String)] = [], headers: [String: String] = [:]) async throws -> Answer {
        let body = form.map { "\(encode($0.0))=\(encode($0.1))" }.joined(separator: "&")
        return try await send(
            "POST", path, body: Data(body.utf8),
            headers: headers.merging(["Content-Type": "application/x-www-form-urlencoded"]) { old, _ in old })
    }

    func send(_ method: String, _ path: String, body: Data? = nil, headers: [String: String]) async throws -> Answer {
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)\(path)")))
        request.httpMethod = method
        request.httpBody = body
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await Self.session.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        var fields: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String, let value = value as? String { fields[name] = value }
        }
        return Answer(status: http.statusCode, body: String(decoding: data, as: UTF8.self), headers: fields)
    }

    private func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}

extension OperatorFixture {
    /// `once console` against this fixture on a free loopback port, with `token` as
    /// ONCE_CONSOLE_TOKEN (none when nil); returns the process and its port.
    func startConsole(token: String?, extra: [String] = []) async throws -> (OnceProcess, Int) {
        let process = try OnceProcess(
            ["console", "--http", "127.0.0.1:0"] + connection + extra,
            environment: ["ONCE_CONSOLE_TOKEN": token ?? ""])
        var port: Int?
        try await eventually("the console's address in the log", timeout: .seconds(60)) {
            port = process.output.firstMatch(of: /console: http:\/\/127\.0\.0\.1:([0-9]+)\/console/).flatMap { Int($0.1) }
            if port == nil && !process.process.isRunning { throw ConsoleStartFailed(output: process.output) }
            return port != nil
        }
        return (process, try #require(port))
    }

    /// The dead letter written for the record at `offset` of partition `partition`.
    func deadLetterID(offset: Int64, partition: Int32 = 0) throws -> Int64 {
        try count(
            "SELECT id FROM dead_letters WHERE topic = $1 AND partition = $2 AND kafka_offset = $3",
            [.text(topic), .int32(partition), .int64(offset)])
    }
}

struct ConsoleStartFailed: Error, CustomStringConvertible {
    var output: String
    var description: String { "once console ended before listening:\n\(output)" }
}
