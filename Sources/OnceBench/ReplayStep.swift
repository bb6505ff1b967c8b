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
        func submit(_ batch: [KafkaRecord]) async throws {
            if let previous = pending { report.add(try await previous.value) }
            transactions += 1
            pending = Task { try await session.withConnection { db in try processor.process(batch, on: db) } }
        }
        for partition in expectation.recordsPerPartition.keys.sorted() {
            let end = Int64(expectation.recordsPerPartition[partition]!)
            let tp = TopicPartition(topic, partition)
            try await consumer.assign([tp: 0])
            var next: Int64 = 0
            var batch: [KafkaRecord] = []
            let deadline = ContinuousClock.now + .seconds(60)
            while next < end {
                guard ContinuousClock.now < deadline else { throw BenchFailure("replay: \(tp) stalled at offset \(next)") }
                let polled = try await consumer.poll(maxRecords: batchSize, timeout: .milliseconds(100))
                for record in polled.records where record.topicPartition == tp && record.offset >= next && record.offset < end {
                    batch.append(record)
                    next = record.offset + 1
                    if batch.count == batchSize {
                        try await submit(batch)
                        batch = []
                    }
                }
            }
            if !batch.isEmpty { try await submit(batch) }
        }
        if let last = pending { report.add(try await last.value) }
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
            seconds: seconds, eventsPerSecond: Double(expectation.records) / seconds, checks: checks)
    }
}
