import Foundation
import Testing

/// The `once` executable run as a child process, its output going to a file.
///
/// The binary is the one `swift build` put next to the test bundle (or `ONCE_BINARY`).
/// Not thread-safe: one test owns it. `deinit` kills a process still running.
public final class OnceProcess: @unchecked Sendable {
    // @unchecked Sendable: used by one test task at a time; `Process` is only read after launch.
    public let process = Process()
    public let outputURL: URL
    public let arguments: [String]

    public static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["ONCE_BINARY"] { return URL(fileURLWithPath: path) }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // The runner may be inside the .xctest bundle (…/debug/oncePackageTests.xctest/…).
        while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.appendingPathComponent("once").path) {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("once")
    }

    /// Starts `once ARGUMENTS` with `environment` added to this process's environment. Its HTTP
    /// endpoint takes a free port (`ONCE_HTTP=127.0.0.1:0`) unless `environment` says otherwise,
    /// since tests run several members at once.
    public init(_ arguments: [String], environment: [String: String] = [:]) throws {
        self.arguments = arguments
        outputURL = FileManager.default.temporaryDirectory.appendingPathComponent("once-\(UUID().uuidString.prefix(8)).log")
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputURL)
        process.executableURL = Self.binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["ONCE_HTTP": "127.0.0.1:0"].merging(environment) { _, new in new }) { _, new in new }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: outputURL)
    }

    public var output: String { (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "" }

    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to end; returns its exit status (128 + n for a signal n), or nil
    /// if it still runs after `timeout`.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// Runs `once ARGUMENTS` to the end and returns its status and output.
    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
        let child = try OnceProcess(arguments, environment: environment)
        guard let status = try await child.waitForExit(timeout: timeout) else {
            child.signal(SIGKILL)
            throw ConditionTimedOut("once \(arguments.joined(separator: " ")) to finish; output:\n\(child.output)")
        }
        return (status, child.output)
    }
}
