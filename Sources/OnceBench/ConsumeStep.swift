import Foundation
import OncePostgres

/// What the bench needs to reach the services and run `once`.
struct BenchContext: Sendable {
    var once: OnceBinary
    var serverURL: String
    var brokers: String
    /// Every `once run` gets these: the local broker completes rebalances only after about
    /// `max.poll.interval.ms`, so it is set low (as the tests do), plus `--kafka-property` flags.
    var kafkaProperties: [String]
    var connections: Int
    var maxBatch: Int
    var runID: String
    /// The processes whose CPU each strategy is charged with.
    var cpu: CPUProbe

    /// Client settings of the two latency steps, for this broker. Tansu 0.6 answers a fetch that
    /// finds nothing only after sleeping half of `fetch.wait.max.ms` (librdkafka's default is
    /// 500 ms), and new records do not wake it; so the consumers wait at most 10 ms. Each of its
    /// fetches lists every stored batch of the partition, so the producers linger 10 ms to store
    /// fewer, larger batches. Both are plain client properties (`--kafka-property` for `once run`).
    static let latencyConsumerProperties = ["fetch.wait.max.ms": "10"]
    static let latencyProducerLinger = Duration.milliseconds(10)

    /// The `--kafka-property` values as librdkafka properties, for the bench's own consumers.
    var consumerProperties: [String: String] {
        var properties: [String: String] = [:]
        for item in kafkaProperties {
            guard let equals = item.firstIndex(of: "=") else { continue }
            properties[String(item[..<equals])] = String(item[item.index(after: equals)...])
        }
        return properties
    }
}

/// One strategy's run of `once run --until-idle` over a topic the bench produced.
struct ConsumeResult: Codable, Sendable {
    var strategy: String
    var topic: String
    var records: Int
    var connections: Int
    var maxBatch: Int
    var arguments: [String]
    /// µs since the epoch: `min(processed_at)`, the start of the first batch transaction.
    var firstTransactionStart: Int64
    /// µs since the epoch: `max(processed_at)`, the start of the last batch transaction.
    var lastTransactionStart: Int64
    /// µs since the epoch: the first poll of `consumer_offsets` that saw a committed batch.
    var firstCommitSeen: Int64
    /// µs since the epoch: the first poll that saw every record below the stored positions.
    var lastCommitSeen: Int64
    var commitPolls: Int
    /// From the first transaction's start to the last commit seen.
    var seconds: Double
    var eventsPerSecond: Double
    /// `once run` from launch to exit (joining the group, processing, publishing the outbox,
    /// the idle time that ends it).
    var processSeconds: Double
    var exitStatus: Int32
    var peakRSSBytes: Int
    var largestSampledRSSBytes: Int
    var memorySamples: Int
    var batches: Int64
    /// CPU of `once run` (launch to exit), of the PostgreSQL cluster and of the broker meanwhile.
    var cpu: CPUUsage?
    /// The same from the first commit seen to the last, for the records committed in between.
    var processingCPU: CPUUsage?
    var checks: [Check]
}

enum ConsumeStep {
    /// On a fresh database of that name.
    static func run(
        strategy: String, database name: String, topic: String, expectation: Expectation, maxBatch: Int,
        context: BenchContext, log: (String) -> Void
    ) async throws -> ConsumeResult {
        let database = try await BenchDatabase.fresh(name, serverURL: context.serverURL, once: context.once)
        return try await run(
            strategy: strategy, on: database, topic: topic, expectation: expectation, maxBatch: maxBatch,
            context: context, log: log)
    }

    /// On a migrated database that holds nothing of the group `bench-RUN-STRATEGY` yet (it may
    /// hold other groups' rows); `extraArguments` go to `once run` after the bench's own.
    static func run(
        strategy: String, on database: BenchDatabase, topic: String, expectation: Expectation, maxBatch: Int,
        extraArguments: [String] = [], context: BenchContext, log: (String) -> Void
    ) async throws -> ConsumeResult {
        let group = "bench-\(context.runID)-\(strategy)"
        var arguments = [
            "run", "--database-url", database.url, "--brokers", context.brokers, "--topics", topic, "--group", group,
            "--until-idle", "2", "--connections", String(context.connections), "--max-batch", String(maxBatch),
        ]
        for property in context.kafkaProperties { arguments += ["--kafka-property", property] }
        arguments += extraArguments
        let watch = try await CommitWatch(database: database, group: group, target: expectation.records, cpu: context.cpu)
        let cpuBefore = context.cpu.sample(benchBackends: watch.backends)
        let launched = ContinuousClock.now
        let child = try context.once.start(arguments, logName: "\(strategy)-run")
        watch.track([child.pid])
        log("once run (\(strategy)): pid \(child.pid), \(expectation.records) records, log \(child.log.path)")
        guard let status = try await child.wait(timeout: .seconds(900)) else {
            child.signal(SIGKILL)
            await watch.stop()
            throw BenchFailure("once run (\(strategy)) did not finish within 900 s; log \(child.log.path)")
        }
        let processSeconds = (ContinuousClock.now - launched).seconds
        let cpu = CPUProbe.usage(
            from: cpuBefore, to: context.cpu.sample(benchBackends: watch.backends), client: .children, clientName: "once run",
            records: expectation.records)
        await watch.stop()
        guard status == 0 else {
            throw BenchFailure("once run (\(strategy)) exited with status \(status):\n\(child.output.suffix(4000))")
        }
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
        let batches = try row.decode(Int64.self, column: 2)
        guard let firstSeen = seen.firstSeen, let lastSeen = seen.targetSeen else {
            throw BenchFailure("once run (\(strategy)) ended before every record was committed; log \(child.log.path)")
        }
        let seconds = Double(lastSeen - first) / 1_000_000
        let memory = child.memorySample
        return ConsumeResult(
            strategy: strategy, topic: topic, records: expectation.records, connections: context.connections,
            maxBatch: maxBatch, arguments: arguments, firstTransactionStart: first, lastTransactionStart: last,
            firstCommitSeen: firstSeen, lastCommitSeen: lastSeen, commitPolls: seen.polls, seconds: seconds,
            eventsPerSecond: Double(expectation.records) / seconds, processSeconds: processSeconds,
            exitStatus: status, peakRSSBytes: memory.highWaterKiB * 1024,
            largestSampledRSSBytes: memory.largestResidentKiB * 1024, memorySamples: memory.samples, batches: batches,
            cpu: cpu, processingCPU: seen.processingCPU(clientName: "once run"),
            checks: try Checks.consumer(database, group: group, expectation: expectation))
    }
}

extension Duration {
    var seconds: Double {
        let (whole, fraction) = components
        return Double(whole) + Double(fraction) / 1e18
    }
}
