import Foundation
import OnceCore
import OnceDomain
import OnceKafka
import OncePostgres

/// Replays a fully processed range (every partition of the batched run's topic, from offset 0
/// to its stored position) through `RecordProcessor`, the pipeline's transaction without the
/// stored position, which is what a replay runs: the duplicate-storm path, where every record's
/// event id is already in `processed_messages` and nothing may change.
///
/// A manually assigned consumer reads the partitions one after another while one database
/// session processes batches of `batchSize` records of one partition each; reading the next
/// batch overlaps with committing the previous one. Timed from the assignment of the first
/// partition to the commit of the last batch.
struct ReplayResult: Codable, Sendable {
    var method: String
    var topic: String
    var partitions: Int
    var records: Int
    var batchSize: Int
    var transactions: Int
    var outcomes: [String: Int]
    var seconds: Double
    var eventsPerSecond: Double
    /// Time spent waiting for Kafka polls and for the database, out of `seconds`.
    var pollSeconds: Double
    var databaseWaitSeconds: Double
    var checks: [Check]
}

enum ReplayStep {
    static func run(
        database: BenchDatabase, group: String, topic: String, expectation: Expectation, batchSize: Int, context: BenchContext
    ) async throws -> ReplayResult {
        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        let processor = RecordProcessor(consumerGroup: group, registry: registry)
        let session = try await PostgresClient.connect(
            configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-replay"),
            threadName: "once-bench-replay")
        var configuration = KafkaConsumerConfiguration(bootstrapServers: context.brokers, groupID: "bench-\(context.runID)-replay")
        configuration.clientID = "once-bench-replay"
        let consumer = try await KafkaConsumer(configuration: configuration)

        var report = ProcessReport()
        var transactions = 0
        let started = ContinuousClock.now
        var pending: Task<ProcessReport, Error>?
        var pollTime = Duration.zero
        var databaseWait = Duration.zero
        func submit(_ batch: [KafkaRecord]) async throws {
            let waitStarted = ContinuousClock.now
            if let previous = pending { report.add(try await previous.value) }
            databaseWait += ContinuousClock.now - waitStarted
            transactions += 1
            pending = Task { try await session.withConnection { db in try processor.process(batch, on: db) } }
        }
        // Every partition assigned at once (a fresh assignment costs a fetch round of its own);
        // records gathered per partition into batches of one partition each.
        var ends: [TopicPartition: Int64] = [:]
        for (partition, count) in expectation.recordsPerPartition { ends[TopicPartition(topic, partition)] = Int64(count) }
        try await consumer.assign(ends.mapValues { _ in 0 })
        var next: [TopicPartition: Int64] = ends.mapValues { _ in 0 }
        var batches: [TopicPartition: [KafkaRecord]] = [:]
        let deadline = ContinuousClock.now + .seconds(120)
        while next.contains(where: { $0.value < ends[$0.key]! }) {
            guard ContinuousClock.now < deadline else { throw BenchFailure("replay: reading \(topic) stalled at \(next)") }
            let pollStarted = ContinuousClock.now
            let polled = try await consumer.poll(maxRecords: batchSize, timeout: .milliseconds(100))
            pollTime += ContinuousClock.now - pollStarted
            for record in polled.records {
                let tp = record.topicPartition
                guard let end = ends[tp], record.offset >= next[tp]!, record.offset < end else { continue }
                batches[tp, default: []].append(record)
                next[tp] = record.offset + 1
                if batches[tp]!.count == batchSize || next[tp] == end {
                    try await submit(batches[tp]!)
                    batches[tp] = []
                }
            }
        }
        let lastWait = ContinuousClock.now
        if let last = pending { report.add(try await last.value) }
        databaseWait += ContinuousClock.now - lastWait
        let seconds = (ContinuousClock.now - started).seconds
        await consumer.close()
        await session.close()

        var checks = try Checks.consumer(database, group: group, expectation: expectation)
        checks.append(Check(name: "replayed records counted as duplicates", expected: Int64(expectation.records), actual: Int64(report[.duplicate])))
        checks.append(Check(name: "replayed records applied again", expected: 0, actual: Int64(report[.applied])))
        checks.append(Check(name: "outbox rows written by the replay", expected: 0, actual: Int64(report.outboxRows)))
        return ReplayResult(
            method: "OnceCore.RecordProcessor in the bench driver (the transaction a replay runs)",
            topic: topic, partitions: expectation.recordsPerPartition.count, records: expectation.records,
            batchSize: batchSize, transactions: transactions,
            outcomes: Dictionary(uniqueKeysWithValues: report.counts.map { ($0.key.rawValue, $0.value) }),
            seconds: seconds, eventsPerSecond: Double(expectation.records) / seconds, pollSeconds: pollTime.seconds,
            databaseWaitSeconds: databaseWait.seconds, checks: checks)
    }
}
