import Foundation
import OncePostgres

/// Where the batched peer (`../shared/peers/batched_consumer.py`: confluent-kafka and psycopg,
/// one transaction of set-based statements per poll batch) is, and how it is run.
struct PeerSettings: Sendable {
    /// The peer's script, run from where it is (never copied into the repository).
    var script: String
    /// The tables it writes (`schema.sql` beside the script).
    var schema: String
    /// An interpreter with `confluent_kafka` and `psycopg` (the project's venv).
    var python: String
    /// Processes in one consumer group (the peer's README: one per core, two here).
    var processes: Int

    /// Why the peer cannot run here, or nil when it can: the script or the schema is absent, or
    /// the interpreter lacks the peer's libraries.
    func missing() -> String? {
        let files = FileManager.default
        guard files.fileExists(atPath: script) else { return "no peer at \(script)" }
        guard files.fileExists(atPath: schema) else { return "no peer schema at \(schema)" }
        guard files.isExecutableFile(atPath: python) else { return "no Python at \(python)" }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: python)
        probe.arguments = ["-c", "import confluent_kafka, psycopg"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        do { try probe.run() } catch { return "\(python) does not start: \(error)" }
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else {
            return "\(python) lacks confluent-kafka or psycopg (deploy/local/bench installs them into the venv)"
        }
        return nil
    }
}

/// The peer's run over the completion records: `processes` copies of the script in one group,
/// on a database of its own with the peer's `schema.sql`. Timed as `once run` is: from the
/// first transaction's start to the first poll that saw every record below its stored positions.
struct PeerResult: Codable, Sendable {
    var script: String
    var python: String
    var processes: Int
    var topic: String
    var records: Int
    var arguments: [String]
    /// µs since the epoch: `min(processed_at)`, the start of the first batch transaction.
    var firstTransactionStart: Int64
    var lastTransactionStart: Int64
    var firstCommitSeen: Int64
    var lastCommitSeen: Int64
    var commitPolls: Int
    var seconds: Double
    var eventsPerSecond: Double
    /// From the launch of the processes until they were stopped (after the last commit seen;
    /// left alone, each would wait 30 s for more records).
    var processSeconds: Double
    /// VmHWM of each process, in bytes.
    var peakRSSBytes: [Int]
    var batches: Int64
    /// CPU of the peer's processes (all of them), of the PostgreSQL cluster and of the broker.
    var cpu: CPUUsage?
    /// The same from the first commit seen to the last, for the records committed in between.
    var processingCPU: CPUUsage?
    var checks: [Check]

    var largestPeakRSSBytes: Int { peakRSSBytes.max() ?? 0 }
}

enum PeerStep {
    static func run(
        settings: PeerSettings, topic: String, expectation: Expectation, context: BenchContext,
        log: (String) -> Void
    ) async throws -> PeerResult {
        let database = try BenchDatabase.fresh(
            "once_bench_peer", serverURL: context.serverURL,
            schema: try String(contentsOfFile: settings.schema, encoding: .utf8))
        let group = "bench-\(context.runID)-peer"
        let arguments = [settings.script, context.brokers, database.url, topic, group, String(expectation.records)]
        let watch = try await CommitWatch(database: database, group: group, target: expectation.records, cpu: context.cpu)
        let cpuBefore = context.cpu.sample()
        let launched = ContinuousClock.now
        let children = try (0..<settings.processes).map { index in
            try OnceChild(
                executable: settings.python, arguments: arguments,
                log: context.once.logDirectory.appendingPathComponent("peer-\(index).log"))
        }
        watch.track(children.map(\.pid))
        log(
            "peer: pids \(children.map { String($0.pid) }.joined(separator: ", ")), \(expectation.records) records, "
                + "logs \(context.once.logDirectory.path)/peer-*.log")

        // Until every record is below the stored positions; a process that ends before is a failure.
        let deadline = launched + .seconds(900)
        while watch.observation.targetSeen == nil {
            if let ended = children.first(where: { !$0.process.isRunning }) {
                await watch.stop()
                let status = try await ended.wait(timeout: .seconds(1)) ?? -1
                throw BenchFailure(
                    "the peer (pid \(ended.pid)) exited with status \(status) before every record was committed:\n"
                        + "\(ended.output.suffix(4000))")
            }
            guard ContinuousClock.now < deadline else {
                await watch.stop()
                throw BenchFailure("the peer did not commit every record within 900 s; logs \(children[0].log.path)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        await watch.stop()
        let peaks = children.map { $0.memorySample.highWaterKiB * 1024 }
        for child in children { child.signal(SIGTERM) }
        for child in children {
            if try await child.wait(timeout: .seconds(10)) == nil {
                child.signal(SIGKILL)
                _ = try await child.wait(timeout: .seconds(10))
            }
        }
        let processSeconds = (ContinuousClock.now - launched).seconds
        // After the processes are reaped: their time is in the bench's children's time.
        let cpu = CPUProbe.usage(
            from: cpuBefore, to: context.cpu.sample(), client: .children,
            clientName: "the peer's \(settings.processes) Python processes", records: expectation.records)

        let seen = watch.observation
        let db = try database.connect()
        defer { db.close() }
        let row = try db.query(
            """
            SELECT (extract(epoch FROM min(processed_at)) * 1000000)::bigint,
                   (extract(epoch FROM max(processed_at)) * 1000000)::bigint,
                   count(DISTINCT processed_at)::bigint
            FROM processed_messages WHERE consumer_group = $1
            """, [.text(group)])[0]
        let first = try row.decode(Int64?.self, column: 0) ?? 0
        let last = try row.decode(Int64?.self, column: 1) ?? 0
        let lastSeen = seen.targetSeen ?? 0
        let seconds = Double(lastSeen - first) / 1_000_000
        return PeerResult(
            script: settings.script, python: settings.python, processes: settings.processes, topic: topic,
            records: expectation.records, arguments: arguments, firstTransactionStart: first,
            lastTransactionStart: last, firstCommitSeen: seen.firstSeen ?? 0, lastCommitSeen: lastSeen,
            commitPolls: seen.polls, seconds: seconds, eventsPerSecond: Double(expectation.records) / seconds,
            processSeconds: processSeconds, peakRSSBytes: peaks, batches: try row.decode(Int64.self, column: 2),
            cpu: cpu, processingCPU: seen.processingCPU(clientName: "the peer's \(settings.processes) Python processes"),
            checks: try Checks.consumer(database, group: group, expectation: expectation, tables: .peer))
    }
}

extension BenchDatabase {
    /// A database dropped if it exists, created, and given `schema` (statements separated by
    /// `;`, `--` comments on lines of their own), as the peer's README says.
    static func fresh(_ name: String, serverURL: String, schema: String) throws -> BenchDatabase {
        let admin = try PostgresConnection(url: serverURL)
        defer { admin.close() }
        try admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        try admin.execute("CREATE DATABASE \(name)")
        let database = BenchDatabase(name: name, url: try replacingDatabase(in: serverURL, with: name))
        let text = schema.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }
            .joined(separator: "\n")
        let statements = text.split(separator: ";").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .filter { !$0.isEmpty }
        try database.withConnection { db in
            for statement in statements { try db.execute(statement) }
        }
        return database
    }
}
