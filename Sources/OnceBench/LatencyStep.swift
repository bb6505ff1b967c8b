import Foundation
import Histogram
import OnceKafka
import OncePipeline
import OncePostgres
import Synchronization

/// End-to-end latency at a steady offered rate: a paced producer sends new events (no
/// duplicates) to a running `once run`, each stamped with `occurred_at` (milliseconds) as it is
/// handed to the producer; an observer learns when each record's batch committed; the latency
/// of a record is its commit time less its `occurred_at`.
///
/// Commit times: the observer LISTENs on the channel every batch transaction NOTIFYs at commit
/// (`once_outbox`) and, on each notification (or every 20 ms), reads the stored positions; a
/// record counts as committed at the first read whose position for its partition is past its
/// offset, timed after that read returns. So a latency is late by up to one read (well under a
/// millisecond here) and by the truncation of `occurred_at` to milliseconds; never early.
struct LatencyResult: Codable, Sendable {
    var offeredRate: Int
    var offeredSeconds: Double
    var achievedRate: Double
    var records: Int
    var producerLinger: String
    var arguments: [String]
    /// [first second, p50 ms, p99 ms] per 5 s of offered load.
    var windows: [[Double]]
    var p50Milliseconds: Double
    var p90Milliseconds: Double
    var p99Milliseconds: Double
    var p999Milliseconds: Double
    var maxMilliseconds: Double
    var meanMilliseconds: Double
    /// (percentile, milliseconds) along the distribution, for the chart.
    var distribution: [[Double]]
    /// The same latencies measured to the transaction's start (`processed_at`) instead of its
    /// commit: a lower bound, from the database alone.
    var transactionStartP50Milliseconds: Double
    var transactionStartP99Milliseconds: Double
    var observations: Int
    var peakRSSBytes: Int
    var checks: [Check]
}

enum LatencyStep {
    static func run(
        rate: Int, duration: Duration, topic: String, partitions: Int32, accounts: Int, context: BenchContext,
        log: (String) -> Void
    ) async throws -> LatencyResult {
        let database = try await BenchDatabase.fresh(
            "once_bench_latency", serverURL: context.serverURL, once: context.once)
        let group = "bench-\(context.runID)-latency"
        let live = try await LiveRun.start(
            database: database, group: group, topic: topic, partitions: partitions, context: context,
            logName: "latency-run", log: log)
        defer { live.kill() }

        let observer = try await CommitObserver(database: database, group: group)
        let load = PacedLoad(rate: rate, topic: topic, partitions: partitions, accounts: accounts)
        let offered = try await load.offer(count: Int(Double(rate) * duration.seconds), brokers: context.brokers)
        let observations = try await live.stop(afterCommitting: offered.records, observer: observer)

        // Each record's commit: the first observation past its offset.
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var windows = LatencyWindows(start: offered.startedAt, duration: duration)
        let (samples, unobserved) = offered.latencies(observations)
        for sample in samples {
            _ = histogram.record(UInt64(sample.latencyMicroseconds))
            windows.record(sentMicroseconds: sample.sentMicroseconds, latencyMicroseconds: sample.latencyMicroseconds)
        }
        func milliseconds(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        var distribution: [[Double]] = []
        for step in histogram.percentiles(ticksPerHalfDistance: 5) {
            distribution.append([step.percentileLevelIteratedTo, milliseconds(step.value)])
            if step.percentileLevelIteratedTo >= 100 { break }
        }

        let db = try database.connect()
        defer { db.close() }
        let lower = try db.query(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d)
            FROM (SELECT extract(epoch FROM p.processed_at - l.occurred_at) * 1000 AS d
                  FROM processed_messages p JOIN credit_ledger l USING (event_id)
                  WHERE p.consumer_group = $1) s
            """, [.text(group)])[0]
        var checks = try Checks.consumer(database, group: group, expectation: offered.expectation)
        checks.append(
            Check(
                name: "records whose commit was observed", expected: Int64(offered.records),
                actual: Int64(histogram.totalCount)))
        checks.append(Check(name: "records never observed committed", expected: 0, actual: Int64(unobserved)))
        return LatencyResult(
            offeredRate: rate, offeredSeconds: offered.seconds, achievedRate: Double(offered.records) / offered.seconds,
            records: offered.records, producerLinger: "\(BenchContext.latencyProducerLinger)",
            arguments: live.arguments,
            windows: windows.summary,
            p50Milliseconds: milliseconds(histogram.valueAtPercentile(50)),
            p90Milliseconds: milliseconds(histogram.valueAtPercentile(90)),
            p99Milliseconds: milliseconds(histogram.valueAtPercentile(99)),
            p999Milliseconds: milliseconds(histogram.valueAtPercentile(99.9)),
            maxMilliseconds: milliseconds(histogram.max), meanMilliseconds: histogram.mean / 1000,
            distribution: distribution,
            transactionStartP50Milliseconds: try lower.decode(Double?.self, column: 0) ?? 0,
            transactionStartP99Milliseconds: try lower.decode(Double?.self, column: 1) ?? 0,
            observations: observations.count, peakRSSBytes: live.child.memorySample.highWaterKiB * 1024, checks: checks)
    }
}

/// A `once run` left running (no `--until-idle`) with the latency steps' client settings,
/// joined and holding every partition of its topic before anything is offered to it.
struct LiveRun: Sendable {
    let child: OnceChild
    let database: BenchDatabase
    let group: String
    let arguments: [String]

    /// Starts `once run` (the bench's flags, `fetch.wait.max.ms=10`, then `extraArguments`) and
    /// waits until it has claimed every partition, plus a second.
    static func start(
        database: BenchDatabase, group: String, topic: String, partitions: Int32, context: BenchContext,
        extraArguments: [String] = [], logName: String, log: (String) -> Void
    ) async throws -> LiveRun {
        var arguments = [
            "run", "--database-url", database.url, "--brokers", context.brokers, "--topics", topic, "--group", group,
            "--connections", String(context.connections), "--max-batch", String(context.maxBatch),
        ]
        for (name, value) in BenchContext.latencyConsumerProperties {
            arguments += ["--kafka-property", "\(name)=\(value)"]
        }
        for property in context.kafkaProperties { arguments += ["--kafka-property", property] }
        arguments += extraArguments
        let child = try context.once.start(arguments, logName: logName)
        log("once run (\(logName)): pid \(child.pid), log \(child.log.path)")
        let live = LiveRun(child: child, database: database, group: group, arguments: arguments)

        // Wait for the group to join and every partition to be claimed.
        let joinDeadline = ContinuousClock.now + .seconds(90)
        do {
            let positions = StoredPositions(consumerGroup: group)
            while try database.withConnection({ try positions.positions(on: $0).count }) < Int(partitions) {
                guard child.process.isRunning else {
                    throw BenchFailure("once run (\(logName)) exited early:\n\(child.output.suffix(4000))")
                }
                guard ContinuousClock.now < joinDeadline else {
                    throw BenchFailure("once run (\(logName)) did not claim its partitions in 90 s")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await Task.sleep(for: .seconds(1))
        } catch {
            live.kill()
            throw error
        }
        return live
    }

    /// Waits until `records` records are below the stored positions, stops the observer, then
    /// stops `once run` with SIGTERM (which must end it cleanly); returns the observations.
    func stop(afterCommitting records: Int, observer: CommitObserver) async throws -> [CommitObserver.Observation] {
        let drainDeadline = ContinuousClock.now + .seconds(120)
        let positions = StoredPositions(consumerGroup: group)
        while try database.withConnection({ try positions.recordsBelow(on: $0) }) < Int64(records) {
            guard ContinuousClock.now < drainDeadline else {
                throw BenchFailure("\(group): not every record committed within 120 s")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let observations = await observer.stop()
        child.signal(SIGTERM)
        guard let status = try await child.wait(timeout: .seconds(30)), status == 0 else {
            throw BenchFailure("once run (\(group)) did not stop cleanly on SIGTERM:\n\(child.output.suffix(4000))")
        }
        return observations
    }

    /// Ends the process if it still runs (after a failure).
    func kill() {
        if child.process.isRunning { child.signal(SIGKILL) }
    }
}

/// A steady offered load: new events (no repeats, three charges to a grant) at `rate` per
/// second, each stamped with `occurred_at` (milliseconds) as it is handed to a producer that
/// lingers `BenchContext.latencyProducerLinger`. Every 2 ms the producer is given whatever the
/// schedule says is due.
struct PacedLoad: Sendable {
    var rate: Int
    var topic: String
    var partitions: Int32
    var accounts: Int
    /// Event ids and business keys start with it, so that loads sharing a database stay apart.
    var prefix = "lat"
    var tenant = Workload.tenant

    struct Sent: Sendable {
        var partition: Int32
        var offset: Int64
        var occurredMilliseconds: Int64
    }

    /// One record's latency, by the wall-clock time it was sent.
    struct Sample: Sendable {
        var sentMicroseconds: Int64
        var latencyMicroseconds: Int64
    }

    /// What was offered, acknowledged by the broker.
    struct Offered: Sendable {
        var sent: [Sent]
        var expectation: Expectation
        /// Wall-clock µs when the load began.
        var startedAt: Int64
        var seconds: Double
        var records: Int { sent.count }

        /// Each record's latency: from its `occurred_at` to the first observation whose stored
        /// position for its partition is past its offset; and how many were never observed so.
        func latencies(_ observations: [CommitObserver.Observation]) -> (samples: [Sample], unobserved: Int) {
            var samples: [Sample] = []
            samples.reserveCapacity(sent.count)
            var unobserved = 0
            for (partition, list) in Dictionary(grouping: sent, by: \.partition) {
                var cursor = 0
                for record in list.sorted(by: { $0.offset < $1.offset }) {
                    while cursor < observations.count
                        && (observations[cursor].positions[partition] ?? 0) <= record.offset
                    {
                        cursor += 1
                    }
                    guard cursor < observations.count else {
                        unobserved += 1
                        continue
                    }
                    let sentMicroseconds = record.occurredMilliseconds * 1000
                    samples.append(
                        Sample(
                            sentMicroseconds: sentMicroseconds,
                            latencyMicroseconds: max(0, observations[cursor].time - sentMicroseconds)))
                }
            }
            return (samples, unobserved)
        }
    }

    /// Offers `count` records, or (with `count` nil) until `stop` is set; returns once every
    /// record is acknowledged.
    func offer(count: Int?, until stop: Locked<Bool>? = nil, brokers: String) async throws -> Offered {
        var producerConfiguration = KafkaProducerConfiguration(bootstrapServers: brokers)
        producerConfiguration.clientID = "once-bench-\(prefix)"
        producerConfiguration.linger = BenchContext.latencyProducerLinger
        let producer = try KafkaProducer(configuration: producerConfiguration)

        let sent = Locked<[Sent]>([])
        var sends: [Task<Void, Error>] = []
        var random = SplitMix64(seed: 7)
        var expectation = Expectation()
        var produced = 0
        let clock = ContinuousClock()
        let start = clock.now
        let startedAt = wallMicroseconds()
        let total = count ?? Int.max
        while produced < total && stop?.value != true {
            let due = min(total, Int((clock.now - start).seconds * Double(rate)))
            if due > produced {
                let stamp = wallMicroseconds() / 1000
                var chunk: [KafkaOutgoingRecord] = []
                for index in produced..<due {
                    let kind: Workload.Kind = index % 4 == 3 ? .grant : .charge
                    let key = "\(prefix)-\(kind == .charge ? "batch" : "grant")-\(index)"
                    let logical = Workload.Logical(
                        kind: kind, businessKey: key, account: Int(random.next(below: UInt64(accounts))),
                        credits: Int64(random.next(below: 500) + 1), partition: Int32(fnv1a(key) % UInt64(partitions)))
                    expectation.records += 1
                    expectation.recordsPerPartition[logical.partition, default: 0] += 1
                    expectation.processed += 1
                    expectation.applied += 1
                    expectation.balances[Workload.accountID(logical.account), default: 0] += logical.amount
                    expectation.ledgerTotal += logical.amount
                    chunk.append(
                        KafkaOutgoingRecord(
                            topic: topic, partition: logical.partition, key: Array(key.utf8),
                            value: Workload.envelope(
                                eventID: "\(prefix)-e\(index)", logical: logical, occurredMilliseconds: stamp,
                                tenant: tenant)))
                }
                produced = due
                let batch = chunk
                sends.append(
                    Task {
                        let reports = try await producer.send(batch)
                        let delivered = try reports.map { try $0.get() }
                        sent.update { list in
                            for report in delivered {
                                list.append(
                                    Sent(
                                        partition: report.partition, offset: report.offset, occurredMilliseconds: stamp)
                                )
                            }
                        }
                    })
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        let seconds = (clock.now - start).seconds
        for send in sends { try await send.value }
        await producer.close()
        return Offered(sent: sent.value, expectation: expectation, startedAt: startedAt, seconds: seconds)
    }
}

/// Reads a group's stored positions whenever a batch commits (LISTEN on the relay's wake-up
/// channel, which every batch that wrote outbox rows NOTIFYs at commit) and at least every
/// 20 ms; keeps each reading that moved a position, with the wall-clock time it returned.
final class CommitObserver: Sendable {
    struct Observation: Sendable {
        var time: Int64
        var positions: [Int32: Int64]
    }

    private let task: Task<[Observation], Error>
    private let stopping = Locked(false)

    init(database: BenchDatabase, group: String) async throws {
        let client = try await PostgresSession.connect(
            configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-observer"),
            threadName: "once-bench-observer")
        try await client.withConnection { db in try db.listen(channel: "once_outbox") }
        let stopping = self.stopping
        task = Task {
            var observations: [Observation] = []
            var last: [Int32: Int64] = [:]
            while !stopping.value {
                let observation = try await client.withConnection { db in
                    _ = try db.waitForNotifications(timeout: .milliseconds(20))
                    var positions: [Int32: Int64] = [:]
                    for stored in try StoredPositions(consumerGroup: group).positions(on: db) {
                        if let next = stored.nextOffset { positions[stored.partition.partition] = next }
                    }
                    return Observation(time: wallMicroseconds(), positions: positions)
                }
                if observation.positions != last {
                    observations.append(observation)
                    last = observation.positions
                }
            }
            await client.close()
            return observations
        }
    }

    /// Stops observing and returns the readings, oldest first.
    func stop() async -> [Observation] {
        stopping.update { $0 = true }
        return (try? await task.value) ?? []
    }
}

/// Latencies in windows of offered load (by the time each record was sent), to show whether
/// they hold steady over a run or grow: this broker's fetches slow down as batches pile up.
struct LatencyWindows {
    static let width: Int64 = 5_000_000  // microseconds
    private let start: Int64
    private let last: Int64
    private var windows: [Int64: Histogram<UInt64>] = [:]

    /// `start`: wall-clock microseconds when the offered load began; records sent after
    /// `duration` (the schedule's last few) count in the last window.
    init(start: Int64, duration: Duration) {
        self.start = start
        last = max(0, Int64(duration.seconds * 1_000_000) - 1) / Self.width
    }

    mutating func record(sentMicroseconds: Int64, latencyMicroseconds: Int64) {
        let window = min(last, max(0, sentMicroseconds - start) / Self.width)
        var histogram =
            windows[window]
            ?? Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        _ = histogram.record(UInt64(max(0, latencyMicroseconds)))
        windows[window] = histogram
    }

    /// [first second of the window, p50 ms, p99 ms] per window, in order.
    var summary: [[Double]] {
        windows.keys.sorted().map { window in
            let histogram = windows[window]!
            return [
                Double(window * Self.width) / 1_000_000, Double(histogram.valueAtPercentile(50)) / 1000,
                Double(histogram.valueAtPercentile(99)) / 1000,
            ]
        }
    }
}
