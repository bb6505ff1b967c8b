import ArgumentParser
import Foundation
import Logging
import OnceKafka
import OncePostgres

/// `deploy/local/bench`'s driver. Against the local services, in one run: produces the
/// completion workload (untimed), runs `once run` over it batched and per record, measures the
/// database's ceiling for the same rows, replays the processed range, measures end-to-end
/// latency at a steady rate, measures retention (throughput beside a window of history, a prune
/// against a DELETE sweep, an upgrade of an older schema), checks correctness after each, and
/// writes a Markdown summary (standard output) and a JSON file with every figure.
@main
struct OnceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "OnceBench",
        abstract:
            "Measure once: batched vs per-record vs the database's ceiling, replay, latency, memory, retention.")

    @Option(help: "The once executable (default: next to this one).")
    var once: String?

    @Option(
        help: "libpq URL of the local server; the bench creates databases of its own there (env ONCE_DATABASE_URL).")
    var databaseURL: String?

    @Option(help: "Kafka bootstrap servers (env ONCE_KAFKA_BROKERS).")
    var brokers: String?

    @Option(help: "Records in the workload.")
    var events = 200_000

    @Option(help: "Accounts the events charge and grant.")
    var accounts = 2_000

    @Option(help: "Partitions of the bench's topics.")
    var partitions: Int32 = 8

    @Option(help: "Share of producer duplicates (new event id, same batch or grant).")
    var duplicates = 0.20

    @Option(help: "Share of exact redeliveries (the same record again).")
    var redeliveries = 0.05

    @Option(help: "Records the per-record strategy consumes (a prefix of the workload).")
    var perRecordEvents = 20_000

    @Option(help: "once run --connections, for both strategies and the latency run.")
    var connections = 4

    @Option(help: "once run --max-batch for the batched strategy and the latency run.")
    var maxBatch = 2_000

    @Option(
        name: .customLong("kafka-property"), help: "A librdkafka property for every once run (name=value); repeatable.")
    var kafkaProperties: [String] = []

    @Option(
        help:
            "The batched peer's script, run from where it is (env ONCE_BENCH_PEER; default ../shared/peers/batched_consumer.py from the working directory)."
    )
    var peer: String?

    @Option(help: "The peer's schema (default: schema.sql beside the script).")
    var peerSchema: String?

    @Option(
        help: "A Python with confluent-kafka and psycopg for the peer (env ONCE_BENCH_PYTHON; default .local/venv/bin/python)."
    )
    var peerPython: String?

    @Option(help: "Processes of the peer in one consumer group.")
    var peerProcesses = 2

    @Option(help: "Sessions of the ceiling (default: one per core).")
    var ceilingConnections: Int?

    @Option(help: "Records per transaction of the ceiling.")
    var ceilingChunk = 2_000

    @Option(help: "Records per replay transaction.")
    var replayBatch = 2_000

    @Option(help: "Events per second offered in the latency step.")
    var latencyRate = 2_000

    @Option(help: "Seconds of offered load in the latency step.")
    var latencySeconds = 20.0

    @Option(help: "Rows of history in processed_messages for the retention step (over seven day partitions).")
    var historyRows = 20_000_000

    @Option(help: "Processed rows of the older schema that the retention step upgrades.")
    var upgradeRows = 1_000_000

    @Option(help: "Seed of the workload.")
    var seed: UInt64 = 20_261_122

    @Option(
        help:
            "Comma-separated steps: json, read, batched, per-record, peer, ceiling, replay, broker-latency, latency, retention."
    )
    var steps = "json,read,batched,per-record,peer,ceiling,replay,broker-latency,latency,retention"

    @Option(help: "Where the JSON report goes.")
    var json = "docs/benchmark-results.json"

    @Option(help: "Directory for the logs of the once processes.")
    var logs = ".local/bench"

    @Option(help: "A label for the code measured (the bench script passes the git commit).")
    var commit = "unknown"

    @Flag(help: "Leave the bench's topics on the broker (for profiling runs by hand).")
    var keepTopics = false

    func validate() throws {
        guard events > 0, perRecordEvents > 0, accounts > 1, partitions > 0 else {
            throw ValidationError("counts must be positive (and at least 2 accounts)")
        }
        let known: Set<String> = [
            "json", "read", "broker-latency", "batched", "per-record", "peer", "ceiling", "replay", "latency",
            "retention",
        ]
        for step in stepList where !known.contains(step) { throw ValidationError("unknown step \(step)") }
        if stepList.contains("replay") && !stepList.contains("batched") {
            throw ValidationError("replay replays the batched run: include the batched step")
        }
        guard peerProcesses > 0 else { throw ValidationError("--peer-processes must be positive") }
        guard historyRows >= 1_000, upgradeRows > 0 else {
            throw ValidationError("--history-rows must be at least 1000 and --upgrade-rows positive")
        }
    }

    var stepList: [String] { steps.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let environment = ProcessInfo.processInfo.environment
        guard let serverURL = databaseURL ?? environment["ONCE_DATABASE_URL"] else {
            throw ValidationError("no database: pass --database-url or set ONCE_DATABASE_URL")
        }
        guard let brokers = brokers ?? environment["ONCE_KAFKA_BROKERS"] else {
            throw ValidationError("no broker: pass --brokers or set ONCE_KAFKA_BROKERS")
        }
        let benchStarted = ContinuousClock.now
        let onceBinary =
            once
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("once")
            .path
        guard FileManager.default.isExecutableFile(atPath: onceBinary) else {
            throw ValidationError("no once executable at \(onceBinary)")
        }
        let logDirectory = URL(fileURLWithPath: logs)
        try FileManager.default.createDirectory(at: logDirectory, withIntermediateDirectories: true)
        let runID = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        // The postmaster is the parent of a backend of ours (when the server runs on this machine),
        // read while that session is open: a closed session's backend may have exited already.
        let cpu: CPUProbe = try {
            let db = try PostgresConnection(url: serverURL)
            defer { db.close() }
            let backendPID = try db.query("SELECT pg_backend_pid()")[0].decode(Int32.self, column: 0)
            return CPUProbe.locate(backendPID: backendPID, brokers: brokers)
        }()
        let context = BenchContext(
            once: OnceBinary(path: onceBinary, logDirectory: logDirectory), serverURL: serverURL, brokers: brokers,
            kafkaProperties: ["max.poll.interval.ms=6000", "session.timeout.ms=6000"] + kafkaProperties,
            connections: connections, maxBatch: maxBatch, runID: runID,
            cpu: cpu)
        let steps = Set(stepList)
        func say(_ text: String) {
            FileHandle.standardError.write(Data("bench: \(text)\n".utf8))
        }

        var machine = try Machine.read(serverURL: serverURL)
        say(
            "machine: \(machine.cores) cores, \(Int(machine.cpuBusyBeforeStart * 100))% busy in the last second, load \(machine.loadAverageAtStart); run \(runID)"
        )
        say(
            "cpu: PostgreSQL's postmaster \(context.cpu.postmaster.map(String.init) ?? "not found (CPU not counted)"), "
                + "the broker \(context.cpu.broker.map(String.init) ?? "not found (CPU not counted)")")
        let peerScript = peer ?? environment["ONCE_BENCH_PEER"] ?? "../shared/peers/batched_consumer.py"
        let peerSettings = PeerSettings(
            script: peerScript,
            schema: peerSchema
                ?? URL(fileURLWithPath: peerScript).deletingLastPathComponent().appendingPathComponent("schema.sql").path,
            python: peerPython ?? environment["ONCE_BENCH_PYTHON"] ?? ".local/venv/bin/python",
            processes: peerProcesses)
        let peerMissing = stepList.contains("peer") ? peerSettings.missing() : nil

        // The workload, produced before anything is timed.
        let workload = Workload(
            total: events, accounts: accounts, partitions: partitions, duplicateShare: duplicates,
            redeliveryShare: redeliveries, seed: seed)
        let full = workload.expectation()
        let prefixCount = min(perRecordEvents, events)
        let prefix = workload.expectation(count: prefixCount)
        let topics = (
            main: "once-bench-\(runID)-main", prefix: "once-bench-\(runID)-prefix",
            latency: "once-bench-\(runID)-latency",
            floor: "once-bench-\(runID)-floor",
            retentionLatency: "once-bench-\(runID)-retention-latency",
            upgrade: "once-bench-\(runID)-upgrade",
            completions: "once-bench-\(runID)-completions"
        )
        let allTopics = [
            topics.main, topics.prefix, topics.latency, topics.floor, topics.retentionLatency, topics.upgrade,
            topics.completions,
        ]
        // The peer reads `data.batch_id` of every event: it takes the workload's completions only
        // (with their duplicates and redeliveries), and once runs over the same topic beside it.
        let completions = workload.expectation(only: .charge)
        let runPeer = steps.contains("peer") && peerMissing == nil
        let admin = try await KafkaAdmin(bootstrapServers: brokers)
        try await admin.createTopics(allTopics.map { KafkaTopicSpecification(name: $0, partitions: partitions) })
        let produceStarted = ContinuousClock.now
        if !steps.isDisjoint(with: ["read", "batched", "replay", "retention"]) {
            try await produce(workload.outgoing(topic: topics.main), brokers: brokers)
        }
        if steps.contains("per-record") {
            try await produce(workload.outgoing(topic: topics.prefix, count: prefixCount), brokers: brokers)
        }
        if runPeer {
            try await produce(workload.outgoing(topic: topics.completions, only: .charge), brokers: brokers)
            say("produced the \(completions.records) completion records of the workload to \(topics.completions) (not timed)")
        }
        let produceSeconds = (ContinuousClock.now - produceStarted).seconds
        say(
            "produced \(events) records (\(full.processed) event ids, \(full.applied) business keys) to \(topics.main) "
                + "and the first \(prefixCount) to \(topics.prefix) in \(String(format: "%.1f", produceSeconds)) s (not timed)"
        )

        var report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()), commit: commit, verdict: "", machine: machine,
            workload: .init(
                records: events, firstEmissions: workload.logicals.count,
                producerDuplicates: workload.duplicateCount, exactRedeliveries: workload.redeliveryCount,
                accounts: accounts, partitions: Int(partitions),
                grantsShare: Double(workload.logicals.filter { $0.kind == .grant }.count)
                    / Double(workload.logicals.count),
                seed: seed, produceSeconds: produceSeconds),
            settings: .init(
                connections: connections, maxBatch: maxBatch, kafkaProperties: context.kafkaProperties,
                perRecordEvents: prefixCount, ceilingConnections: ceilingConnections ?? machine.cores,
                ceilingChunk: ceilingChunk, replayBatch: replayBatch),
            targets: [], failures: [], totalSeconds: 0)

        do {
            if steps.contains("json") {
                let result = try JSONStep.run(values: workload.records.map(\.value))
                report.jsonCodec = result
                say(String(
                    format: "json: OnceJSON parses %.1fx and writes %.1fx as many values per second as Foundation's JSONSerialization",
                    result.parseRatio, result.writeRatio))
            }
            if steps.contains("read") {
                let result = try await ReadStep.run(topic: topics.main, expectation: full, context: context)
                report.read = result
                say("read: a bare consumer gets \(Int(result.recordsPerSecond)) records/s from the broker")
            }
            if steps.contains("batched") {
                say("batched: once run --max-batch \(maxBatch) --connections \(connections)")
                let result = try await ConsumeStep.run(
                    strategy: "batched", database: "once_bench_batched", topic: topics.main, expectation: full,
                    maxBatch: maxBatch, context: context, log: say)
                report.batched = result
                say(summary(result))
            }
            if steps.contains("per-record") {
                say(
                    "per-record: once run --max-batch 1 --connections \(connections) over the first \(prefixCount) records"
                )
                let result = try await ConsumeStep.run(
                    strategy: "per-record", database: "once_bench_per_record", topic: topics.prefix,
                    expectation: prefix,
                    maxBatch: 1, context: context, log: say)
                report.perRecord = result
                say(summary(result))
            }
            if steps.contains("peer") {
                if let peerMissing {
                    say("peer: skipped: \(peerMissing)")
                    report.peerSkipped = peerMissing
                } else {
                    say(
                        "peer: once run --max-batch \(maxBatch) --connections \(connections) over the \(completions.records) "
                            + "completion records, then \(peerProcesses) processes of \(peerSettings.script) over the same topic")
                    let once = try await ConsumeStep.run(
                        strategy: "batched-completions", database: "once_bench_batched_completions",
                        topic: topics.completions, expectation: completions, maxBatch: maxBatch, context: context,
                        log: say)
                    report.batchedCompletions = once
                    say(summary(once))
                    let result = try await PeerStep.run(
                        settings: peerSettings, topic: topics.completions, expectation: completions, context: context,
                        log: say)
                    report.peer = result
                    say(
                        "peer: \(Int(result.eventsPerSecond)) events/s (\(result.records) records in "
                            + "\(String(format: "%.2f", result.seconds)) s); once batched over the same topic "
                            + "\(String(format: "%.2f", once.eventsPerSecond / result.eventsPerSecond))×; peak RSS "
                            + "\(result.peakRSSBytes.map { String($0 / 1_000_000) }.joined(separator: " / ")) MB; checks "
                            + "\(result.checks.allPassed ? "passed" : "FAILED")")
                }
            }
            if steps.contains("ceiling") {
                let sessions = ceilingConnections ?? machine.cores
                say("ceiling: the same rows by INSERT … SELECT generate_series on \(sessions) sessions")
                let result = try await CeilingStep.run(
                    expectation: full, accounts: accounts, chunk: ceilingChunk, connections: sessions, context: context)
                report.ceiling = result
                say("ceiling: \(Int(result.eventsPerSecond)) events/s (\(String(format: "%.2f", result.seconds)) s)")
            }
            if steps.contains("replay"), report.batched != nil {
                say("replay: every partition of \(topics.main) from offset 0 through its stored position")
                let database = BenchDatabase(
                    name: "once_bench_batched",
                    url: try BenchDatabase.replacingDatabase(in: serverURL, with: "once_bench_batched"))
                let result = try await ReplayStep.run(
                    database: database, group: "bench-\(runID)-batched", topic: topics.main, expectation: full,
                    batchSize: replayBatch, context: context)
                report.replay = result
                say(
                    "replay: \(Int(result.eventsPerSecond)) events/s in the engine (\(String(format: "%.2f", result.seconds)) s); "
                        + "once replay processes \(String(format: "%.1f", result.commandSeconds)) s")
            }
            if steps.contains("broker-latency") {
                say("broker latency: \(latencyRate) records/s for \(latencySeconds) s to a bare consumer")
                let result = try await BrokerLatencyStep.run(
                    rate: latencyRate, duration: .milliseconds(Int64(latencySeconds * 1000)), topic: topics.floor,
                    partitions: partitions,
                    context: context)
                report.brokerLatency = result
                say(
                    "broker latency: p50 \(result.p50Milliseconds) ms, p99 \(result.p99Milliseconds) ms, max \(result.maxMilliseconds) ms"
                )
            }
            if steps.contains("latency") {
                say("latency: \(latencyRate) events/s for \(latencySeconds) s to a running once run")
                let result = try await LatencyStep.run(
                    rate: latencyRate, duration: .milliseconds(Int64(latencySeconds * 1000)), topic: topics.latency,
                    partitions: partitions, accounts: accounts, context: context, log: say)
                report.latency = result
                say(
                    "latency: p50 \(result.p50Milliseconds) ms, p99 \(result.p99Milliseconds) ms, max \(result.maxMilliseconds) ms"
                )
            }
            if steps.contains("retention") {
                let result = try await RetentionStep.run(
                    historyRows: historyRows, upgradeRows: upgradeRows, workloadTopic: topics.main, expectation: full,
                    latencyTopic: topics.retentionLatency, upgradeTopic: topics.upgrade, partitions: partitions,
                    accounts: accounts, rate: latencyRate, sessions: machine.cores, context: context, log: say)
                report.retention = result
                say(
                    "retention: \(String(format: "%.2f", result.withHistoryOverEmpty))× beside the history; prune "
                        + "\(String(format: "%.2f", result.prune.seconds)) s against a sweep of "
                        + "\(String(format: "%.1f", result.prune.sweepSeconds)) s; p99 \(result.prune.quiet.p99Milliseconds) / "
                        + "\(result.prune.duringPrune.p99Milliseconds) / \(result.prune.duringSweep.p99Milliseconds) ms "
                        + "(without / prune / sweep); migrate \(String(format: "%.2f", result.upgrade.migrateSeconds)) s; "
                        + "checks \(result.allChecks.allPassed ? "passed" : "FAILED")")
            }
        } catch {
            say("a step failed: \(error)")
            report.failures.append("\(error)")
        }

        if keepTopics {
            say("kept topics \(allTopics.joined(separator: ", "))")
        } else {
            try? await admin.deleteTopics(allTopics)
        }
        await admin.close()

        machine.loadAverageAtEnd = Machine.loadAverage()
        report.machine = machine
        let stepFailures = report.failures
        report.totalSeconds = (ContinuousClock.now - benchStarted).seconds
        report.evaluate()
        report.failures = stepFailures + report.failures
        if !report.failures.isEmpty { report.verdict = "FAILED" }
        let jsonURL = URL(fileURLWithPath: json)
        try FileManager.default.createDirectory(
            at: jsonURL.deletingLastPathComponent(), withIntermediateDirectories: true)
        try report.json().write(to: jsonURL)
        print(report.markdown())
        say("wrote \(json)")
        if !report.correct { throw ExitCode(1) }
    }

    private func summary(_ result: ConsumeResult) -> String {
        "\(result.strategy): \(Int(result.eventsPerSecond)) events/s (\(result.records) records in "
            + "\(String(format: "%.2f", result.seconds)) s; once run took \(String(format: "%.1f", result.processSeconds)) s; "
            + "peak RSS \(result.peakRSSBytes / 1_000_000) MB; checks \(result.checks.allPassed ? "passed" : "FAILED"))"
    }

    /// The producer that fills the bench's topics before anything is timed: large batches.
    static func bulkProducer(brokers: String) throws -> KafkaProducer {
        var configuration = KafkaProducerConfiguration(bootstrapServers: brokers)
        configuration.clientID = "once-bench-producer"
        configuration.linger = .milliseconds(20)
        configuration.messageTimeout = .seconds(120)
        configuration.properties = [
            "batch.num.messages": "10000", "batch.size": "1000000", "queue.buffering.max.messages": "1000000",
            "queue.buffering.max.kbytes": "1048576",
        ]
        return try KafkaProducer(configuration: configuration)
    }

    /// Sends the records in large batches and waits for every acknowledgement.
    private func produce(_ records: [KafkaOutgoingRecord], brokers: String) async throws {
        let producer = try Self.bulkProducer(brokers: brokers)
        defer { Task { await producer.close() } }
        for start in stride(from: 0, to: records.count, by: 50_000) {
            let results = try await producer.send(Array(records[start..<min(start + 50_000, records.count)]))
            for result in results { _ = try result.get() }
        }
    }
}
