import OnceKafka
import OncePostgres
import OnceTracing

/// The pipeline's validation and transaction, set up once: `once run`'s workers, replays,
/// dead-letter retries and tests all go through one of these.
///
/// `process` runs records of one partition without consuming (replays and tests): the stored
/// position is neither checked nor moved; everything else (dedup, handlers, outcomes, dead
/// letters, outbox) is exactly what `once run` does. A `Sendable` value; decoding is pure
/// work on any thread, and every transaction blocks the thread of the connection it is given.
public struct RecordProcessor: Sendable {
    package let decoder: BatchDecoder
    package let transaction: BatchTransaction

    public init(
        consumerGroup: String, registry: HandlerRegistry, deadLetterTopic: String = PipelineDefaults.deadLetterTopic,
        maxRecordBytes: Int = PipelineDefaults.maxRecordBytes, tracing: RecordTracing = .propagateOnly
    ) {
        decoder = BatchDecoder(registry: registry, maxRecordBytes: maxRecordBytes, tracing: tracing)
        transaction = BatchTransaction(consumerGroup: consumerGroup, registry: registry, deadLetterTopic: deadLetterTopic)
    }

    /// The group whose claims and dead letters it writes.
    public var consumerGroup: String { transaction.consumerGroup }

    /// Applies `records` (one partition, offset order) in one transaction and reports the outcome
    /// of each record: handlers' outcomes for new events, `dead_lettered` for rejected ones,
    /// and `duplicate` for records whose event id was already processed. With `dryRun` the
    /// transaction runs to its end and is rolled back: the report tells what would have happened.
    public func process(
        _ records: [KafkaRecord], dryRun: Bool = false, on db: PostgresConnection
    ) throws -> ProcessReport {
        try process(decode(records), dryRun: dryRun, on: db)
    }

    /// Validates `records` for `process(_:dryRun:on:)`: pure work, on any thread, so that a
    /// caller can decode one batch while the previous one's transaction runs.
    package func decode(_ records: [KafkaRecord]) -> DecodedBatch {
        DecodedBatch(records: records, decoded: records.map(decoder.decode))
    }

    package func process(_ batch: DecodedBatch, dryRun: Bool = false, on db: PostgresConnection) throws -> ProcessReport {
        guard let first = batch.records.first else { return ProcessReport() }
        let part = BatchPart(batch: PartitionBatch(partition: first.topicPartition, records: batch.records), records: batch.decoded)
        let summary = try commit([part], mode: dryRun ? .dryRun : .replay, on: db)
        var report = ProcessReport()
        for outcome in summary.outcomes { report.counts[outcome, default: 0] += 1 }
        report.counts[.duplicate, default: 0] += summary.duplicates
        report.outboxRows = summary.outboxRows
        report.deadLetters = summary.deadLetters
        return report
    }

    /// One transaction over `parts` in `mode`. When records carry traces, the transaction has
    /// a span, and each traced record's span ends with its outcome once the transaction has
    /// committed (`RecordTracing`).
    package func commit(_ parts: [BatchPart], mode: TransactionMode, on db: PostgresConnection) throws -> BatchSummary {
        let traced = parts.flatMap { $0.records.compactMap(\.tracedEvent) }
        guard !traced.isEmpty else { return try transaction.commit(parts, mode: mode, on: db) }
        let span = decoder.tracing.transactionSpan(
            over: traced.compactMap(\.trace), records: parts.reduce(0) { $0 + $1.records.count })
        let summary: BatchSummary
        do {
            summary = try transaction.commit(parts, mode: mode, on: db)
        } catch {
            span?.recordError(error)
            span?.end()
            throw error
        }
        span?.end()
        if case .dryRun = mode { return summary }
        for event in traced {
            event.trace?.finish(outcome: summary.tracedOutcomes[ObjectIdentifier(event)]?.rawValue ?? "already_processed")
        }
        return summary
    }
}

/// Records of one partition with what validation made of each, ready for a transaction.
package struct DecodedBatch: Sendable {
    package var records: [KafkaRecord]
    package var decoded: [BatchRecord]
}

/// How many records of a run ended in each outcome.
public struct ProcessReport: Sendable, Hashable {
    public var counts: [EventOutcome: Int] = [:]
    public var outboxRows = 0
    /// The records dead-lettered by this run, and why.
    public var deadLetters: [DeadLetterNote] = []

    public init() {}

    public subscript(_ outcome: EventOutcome) -> Int { counts[outcome] ?? 0 }

    /// Adds another run's counts to these.
    public mutating func add(_ other: ProcessReport) {
        counts.merge(other.counts, uniquingKeysWith: +)
        outboxRows += other.outboxRows
        deadLetters += other.deadLetters
    }
}
