import Foundation
import OnceTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Headless Chromium driven through chromedriver's W3C WebDriver HTTP API: a chromedriver of
/// the test's own on a free port, one browser session, and the few commands the console's
/// tests use (navigate, find, click, type, read text, screenshots).
///
/// Not thread-safe: one test owns it. `quit()` ends the session and the driver; `deinit` kills
/// a driver still running. Errors are `WebDriverError`, carrying the driver's own message.
final class WebDriver: @unchecked Sendable {
    // @unchecked Sendable: one test task uses it at a time; the Process is only read after launch.
    let driver = Process()
    let port: Int
    private(set) var sessionID = ""
    static let elementKey = "element-6066-11e4-a52e-4f735466cecf"

    /// Where Debian's packages put them (deploy/local/bootstrap installs chromium and chromium-driver).
    static let chromium = "/usr/bin/chromium"
    static let chromedriver = "/usr/bin/chromedriver"

    static var isInstalled: Bool {
        FileManager.default.isExecutableFile(atPath: chromium) && FileManager.default.isExecutableFile(atPath: chromedriver)
    }

    init() async throws {
        port = try freePort()
        driver.executableURL = URL(fileURLWithPath: Self.chromedriver)
        driver.arguments = ["--port=\(port)"]
        driver.standardOutput = FileHandle.nullDevice
        driver.standardError = FileHandle.nullDevice
        try driver.run()
        var lastError = "no answer"
        do {
            try await eventually("chromedriver answers", timeout: .seconds(20)) {
                do {
                    return try await self.call("GET", "/status")["value"] != nil
                } catch {
                    lastError = "\(error)"
                    return false
                }
            }
        } catch {
            throw WebDriverError("chromedriver on port \(port) did not answer (running: \(driver.isRunning)): \(lastError)")
        }
        let capabilities: [String: Any] = [
            "capabilities": [
                "alwaysMatch": [
                    "browserName": "chrome",
                    "goog:chromeOptions": [
                        "binary": Self.chromium,
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1",
                        ],
                    ],
                ]
            ]
        ]
        let answer = try await call("POST", "/session", capabilities)
        let value = try #require(answer["value"] as? [String: Any])
        sessionID = try #require(value["sessionId"] as? String, "no session: \(answer)")
    }

    deinit {
        if driver.isRunning { kill(driver.processIdentifier, SIGKILL) }
    }

    func quit() async {
        _ = try? await call("DELETE", "/session/\(sessionID)")
        // chromedriver does not always end on SIGTERM; it holds nothing worth a clean stop.
        kill(driver.processIdentifier, SIGKILL)
        _ = try? await eventually("chromedriver ended", timeout: .seconds(10)) { !driver.isRunning }
    }

    // MARK: Commands

    func navigate(_ url: String) async throws {
        _ = try await session("POST", "/url", ["url": url])
    }

    func title() async throws -> String {
        try await session("GET", "/title")["value"] as? String ?? ""
    }

    func currentURL() async throws -> String {
        try await session("GET", "/url")["value"] as? String ?? ""
    }

    /// The first element matching a CSS selector.
    func find(_ css: String) async throws -> String {
        let answer = try await session("POST", "/element", ["using": "css selector", "value": css])
        guard let element = answer["value"] as? [String: Any], let id = element[Self.elementKey] as? String else {
            throw WebDriverError("no element \(css): \(answer)")
        }
        return id
    }

    /// Every element matching a CSS selector.
    func findAll(_ css: String) async throws -> [String] {
        let answer = try await session("POST", "/elements", ["using": "css selector", "value": css])
        return (answer["value"] as? [[String: Any]] ?? []).compactMap { $0[Self.elementKey] as? String }
    }

    func text(_ css: String) async throws -> String {
        let id = try await find(css)
        return try await session("GET", "/element/\(id)/text")["value"] as? String ?? ""
    }

    func attribute(_ css: String, _ name: String) async throws -> String? {
        let id = try await find(css)
        return try await session("GET", "/element/\(id)/attribute/\(name)")["value"] as? String
    }

    func click(_ css: String) async throws {
        let id = try await find(css)
        _ = try await session("POST", "/element/\(id)/click", [:])
    }

    func type(_ css: String, _ text: String) async throws {
        let id = try await find(css)
        _ = try await session("POST", "/element/\(id)/clear", [:])
        _ = try await session("POST", "/element/\(id)/value", ["text": text])
    }

    /// Picks the `<option>` with this value in a `<select>`.
    func select(_ css: String, value: String) async throws {
        try await click("\(css) option[value=\"\(value)\"]")
    }

    /// The page's source as the browser holds it.
    func source() async throws -> String {
        try await session("GET", "/source")["value"] as? String ?? ""
    }

    /// True when the page opened a JavaScript dialog (an `alert(1)` that ran).
    func hasAlert() async throws -> Bool {
        let answer = try await call("GET", "/session/\(sessionID)/alert/text", nil, allowError: true)
        return (answer["value"] as? [String: Any])?["error"] == nil
    }

    /// A PNG of the viewport.
    func screenshot() async throws -> Data {
        let encoded = try await session("GET", "/screenshot")["value"] as? String ?? ""
        return try #require(Data(base64Encoded: encoded), "the screenshot is not base64")
    }

    /// A PNG of the whole page: the window made as tall as the document first.
    func fullPageScreenshot(width: Int = 1280) async throws -> Data {
        let height = try await session(
            "POST", "/execute/sync",
            ["script": "return Math.ceil(document.documentElement.scrollHeight)", "args": [] as [Any]])["value"] as? Int ?? 900
        _ = try await session("POST", "/window/rect", ["width": width, "height": min(max(height + 20, 500), 4000)])
        let png = try await screenshot()
        _ = try await session("POST", "/window/rect", ["width": width, "height": 900])
        return png
    }

    // MARK: The wire

    private func session(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> [String: Any] {
        try await call(method, "/session/\(sessionID)\(path)", body)
    }

    private func call(_ method: String, _ path: String, _ body: [String: Any]? = nil, allowError: Bool = false)
        async throws -> [String: Any]
    {
        let payload = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let (status, data) = try await plainHTTP(port: port, method: method, path: path, body: payload)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        if status >= 400 && !allowError {
            throw WebDriverError("\(method) \(path): \(status) \(String(decoding: data, as: UTF8.self).prefix(600))")
        }
        return object
    }
}

/// A WebDriver command that failed, with what the driver said.
struct WebDriverError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A TCP port nobody listens on now (bound to port 0, read, closed).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw WebDriverError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw WebDriverError("bind() failed") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw WebDriverError("getsockname() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// One HTTP/1.1 exchange on a connection of its own (`Connection: close`), on a thread of its
/// own so that the blocking socket calls stay off the cooperative pool. chromedriver writes its
/// header fields without a blank after the colon, which FoundationNetworking's parser rejects
/// ("Failed writing header"); this reads them as RFC 9112 allows.
func plainHTTP(port: Int, method: String, path: String, body: Data?) async throws -> (status: Int, body: Data) {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try blockingHTTP(port: port, method: method, path: path, body: body) })
        }
        thread.start()
    }
}

private func blockingHTTP(port: Int, method: String, path: String, body: Data?) throws -> (status: Int, body: Data) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw WebDriverError("socket() failed") }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 45, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw WebDriverError("cannot connect to 127.0.0.1:\(port) (errno \(errno))") }
    var request = Data(
        ("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body?.count ?? 0)\r\n\r\n").utf8)
    if let body { request.append(body) }
    try request.withUnsafeBytes { raw in
        var sent = 0
        while sent < raw.count {
            let n = send(fd, raw.baseAddress! + sent, raw.count - sent, 0)
            guard n > 0 else { throw WebDriverError("send() failed (errno \(errno))") }
            sent += n
        }
    }
    var received = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    let separator = Data("\r\n\r\n".utf8)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n < 0 { throw WebDriverError("recv() failed (errno \(errno))") }
        if n == 0 { break }
        received.append(contentsOf: buffer[0..<n])
        if let end = received.range(of: separator) {
            let head = String(decoding: received[..<end.lowerBound], as: UTF8.self)
            let length = head.split(separator: "\r\n").dropFirst().first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }
            if let length, received.count - end.upperBound >= length { break }
        }
    }
    guard let end = received.range(of: separator) else { throw WebDriverError("no HTTP answer from port \(port)") }
    let statusLine = String(decoding: received[..<end.lowerBound], as: UTF8.self).split(separator: " ")
    guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw WebDriverError("a bad status line") }
    return (status, Data(received[end.upperBound...]))
}
