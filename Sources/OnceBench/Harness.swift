import Foundation
import OncePipeline
import OncePostgres
import Synchronization

/// A database of the bench's own on the local server: dropped if it exists, created, and
/// migrated by `once migrate`, as an operator would.
struct BenchDatabase: Sendable {
    let name: String
    let url: String

    static func fresh(_ name: String, serverURL: String, once: OnceBinary) async throws -> BenchDatabase {
        let admin = try PostgresConnection(url: serverURL)
        defer { admin.close() }
        try admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        try admin.execute("CREATE DATABASE \(name)")
        let url = try replacingDatabase(in: serverURL, with: name)
        let migrate = try await once.run(["migrate", "--database-url", url], logName: "\(name)-migrate")
        guard migrate.status == 0 else { throw BenchFailure("once migrate on \(name) failed:\n\(migrate.output)") }
        return BenchDatabase(name: name, url: url)
    }

    /// Opens a session (blocking; for short checks on the driver's own thread).
    func connect() throws -> PostgresConnection { try PostgresConnection(url: url) }

    func scalar(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int64 {
        let db = try connect()
        defer { db.close() }
        return try db.query(sql, parameters)[0].decode(Int64?.self, column: 0) ?? 0
    }

    /// Runs `body` on a session of its own (blocking).
    func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let db = try connect()
        defer { db.close() }
        return try body(db)
    }

    /// Runs statements one after another on a session of their own (blocking).
    func execute(_ statements: String...) throws {
        let db = try connect()
        defer { db.close() }
        for statement in statements { try db.execute(statement) }
    }

    static func replacingDatabase(in url: String, with name: String) throws -> String {
        guard var components = URLComponents(string: url) else {
            throw BenchFailure("the database URL \(url) is not a URL")
        }
        components.path = "/\(name)"
        guard let text = components.string else { throw BenchFailure("cannot build a URL for database \(name)") }
        return text
    }
}

/// The `once` executable, run as a child process with its output in a log file.
struct OnceBinary: Sendable {
    let path: String
    let logDirectory: URL

    /// Runs `once ARGUMENTS` to the end.
    func run(_ arguments: [String], logName: String, timeout: Duration = .seconds(300)) async throws -> (
        status: Int32, output: String
    ) {
        let child = try start(arguments, logName: logName)
        guard let status = try await child.wait(timeout: timeout) else {
            child.signal(SIGKILL)
            throw BenchFailure("once \(arguments.first ?? "") did not finish within \(timeout); log \(child.log.path)")
        }
        return (status, child.output)
    }

    func start(_ arguments: [String], logName: String) throws -> OnceChild {
        try OnceChild(
            executable: path, arguments: arguments, log: logDirectory.appendingPathComponent("\(logName).log"))
    }
}

/// A running child process (`once`, or the peer's Python) whose resident memory is sampled while
/// it runs.
final class OnceChild: @unchecked Sendable {
    // @unchecked Sendable: `process` is launched in init and only read afterwards (its pid,
    // whether it runs, how it ended), which Foundation's Process allows from any thread; the
    // memory samples are behind a Mutex.
    let process: Process
    let log: URL
    private let memory = Locked(MemorySample())
    private let sampler: Task<Void, Never>

    struct MemorySample: Sendable {
        /// The kernel's high-water mark of resident memory (VmHWM), in KiB, as last read.
        var highWaterKiB = 0
        /// The largest current resident size (VmRSS) seen by a sample, in KiB.
        var largestResidentKiB = 0
        var samples = 0
    }

    init(executable: String, arguments: [String], log: URL) throws {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        // once run's HTTP endpoint on a free port, unless the caller's ONCE_HTTP says (`off`, for
        // the A/B of metrics on against off).
        process.environment = ["ONCE_HTTP": "127.0.0.1:0"].merging(ProcessInfo.processInfo.environment) { _, caller in caller }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.log = log
        let pid = process.processIdentifier
        let memory = self.memory
        sampler = Task.detached {
            while !Task.isCancelled {
                // Gone, or a zombie (whose status has no memory lines): the last sample stands.
                guard let (hwm, rss) = Self.readMemory(pid: pid) else { break }
                memory.update { sample in
                    sample.highWaterKiB = max(sample.highWaterKiB, hwm)
                    sample.largestResidentKiB = max(sample.largestResidentKiB, rss)
                    sample.samples += 1
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    deinit {
        sampler.cancel()
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    var pid: Int32 { process.processIdentifier }
    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
    var memorySample: MemorySample { memory.value }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the exit; the status (128 + n after signal n), or nil if still running after `timeout`.
    func wait(timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        sampler.cancel()
        return process.terminationReason == .uncaughtSignal
            ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// VmHWM and VmRSS of a live process, in KiB.
    static func readMemory(pid: Int32) -> (Int, Int)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        var hwm: Int?
        var rss: Int?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("VmHWM:") { hwm = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) }
            if line.hasPrefix("VmRSS:") { rss = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) }
        }
        guard let hwm, let rss else { return nil }
        return (hwm, rss)
    }
}

/// Watches a group's stored positions from a session of its own: when the first batch
/// committed, and when the stored positions reached a target (the last commit). Commit times
/// are PostgreSQL's `clock_timestamp()` at the poll that first saw the change, so they are late
/// by at most one poll interval plus a round trip.
final class CommitWatch: Sendable {
    struct Observation: Sendable {
        /// µs since the epoch of the first poll that saw any stored position.
        var firstSeen: Int64?
        /// µs since the epoch of the first poll that saw the positions sum to the target.
        var targetSeen: Int64?
        var polls = 0
        /// The records below the positions at `firstSeen` and at `targetSeen`.
        var firstSeenRecords: Int64 = 0
        var targetSeenRecords: Int64 = 0
        /// CPU at `firstSeen` and at `targetSeen`, when the watch was given a probe.
        var firstSample: CPUProbe.Sample?
        var targetSample: CPUProbe.Sample?

        /// The CPU between the first commit seen and the last, for the records committed in
        /// between: the steady processing, without joining the group before it or the relay's
        /// tail and the idle time after it. The client is the processes `track(_:)` named.
        func processingCPU(clientName: String) -> CPUUsage? {
            guard let firstSample, let targetSample, let firstSeen, let targetSeen, targetSeen > firstSeen else {
                return nil
            }
            return CPUProbe.usage(
                from: firstSample, to: targetSample, client: .tracked, clientName: clientName,
                records: Int(targetSeenRecords - firstSeenRecords))
        }
    }

    private let state = Locked(Observation())
    private let clients = Locked<[Int32]>([])
    /// The watch's own backend: its CPU is the bench's, not the client's (`CPUProbe.Sample.benchBackends`).
    let backends: [Int32]
    private let task: Task<Void, Error>

    /// Polls every `interval`; with a `cpu` probe, samples it (and the processes `track(_:)`
    /// names) at the first commit seen and at the target.
    init(
        database: BenchDatabase, group: String, target: Int, cpu: CPUProbe? = nil,
        interval: Duration = .milliseconds(10)
    ) async throws {
        let client = try await PostgresSession.connect(
            configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-watch"))
        let state = self.state
        let clients = self.clients
        let backends = try await client.withConnection { db in db.backendPID.map { [$0] } ?? [] }
        self.backends = backends
        task = Task {
            defer { Task { await client.close() } }
            while !Task.isCancelled {
                let positions = StoredPositions(consumerGroup: group)
                let (now, total) = try await client.withConnection { db in
                    let total = try positions.recordsBelow(on: db)
                    let now = try db.query("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0]
                    return (try now.decode(Int64.self, column: 0), total)
                }
                // Only this task writes the observation, so what it reads here still holds below.
                let seen = state.value
                let isFirst = total > 0 && seen.firstSeen == nil
                let isTarget = total >= Int64(target) && seen.targetSeen == nil
                let sample = isFirst || isTarget ? cpu?.sample(tracking: clients.value, benchBackends: backends) : nil
                let done = state.update { observation in
                    observation.polls += 1
                    if isFirst {
                        observation.firstSeen = now
                        observation.firstSeenRecords = total
                        observation.firstSample = sample
                    }
                    if isTarget {
                        observation.targetSeen = now
                        observation.targetSeenRecords = total
                        observation.targetSample = sample
                    }
                    return observation.targetSeen != nil
                }
                if done { break }
                try await Task.sleep(for: interval)
            }
        }
    }

    var observation: Observation { state.value }

    /// The client processes whose own CPU the samples read.
    func track(_ pids: [Int32]) { clients.update { $0 = pids } }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// A value shared between tasks, behind a lock.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    var value: Value { mutex.withLock { $0 } }

    @discardableResult
    func update<T: Sendable>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&$0) } }
}

/// Something in the bench itself went wrong (not a measured figure).
struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
