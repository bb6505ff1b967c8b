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
        try await eventually("chromedriver answers", timeout: .seconds(20)) {
            (try? await self.call("GET", "/status"))?["value"] != nil
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
        driver.terminate()
        driver.waitUntilExit()
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
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
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
