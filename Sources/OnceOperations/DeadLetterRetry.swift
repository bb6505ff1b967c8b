import Foundation
import OnceKafka
import OnceOutbox
import OncePipeline
import OncePostgres

/// Re-drives dead letters through the pipeline after a fix (`once dlq retry`).
///
/// A dead letter's record went through the pipeline once: its event id (or the synthetic
/// `kafka:<topic>/<partition>/<offset>`) is claimed in `processed_messages` with outcome
/// `dead_lettered`, so running its bytes again would only count as a duplicate. A retry runs
/// the stored bytes (`dead_letters.payload`, under the record's topic, partition and offset)
/// through the batch transaction, which in the same transaction first releases that claim
/// and finally settles the dead letter: resolved (`resolved_at` set) when the record now
/// applies (or turns out to be a duplicate or conflict of an effect already made), or kept
/// unresolved with the new reason and error when it fails again. Either way `retries` counts
/// the attempt, and no second `dead_letters` row is written for the record.
///
/// When the stored bytes now carry another event id than the one claimed (a payload fixed by
/// hand), the old claim stays: a later replay of the original record still finds it processed.
/// Blocking: call it with a connection on its own thread.
public struct DeadLetterRetry: Sendable {
    public let consumerGroup: String
    let processor: RecordProcessor

    public init(consumerGroup: String, registry: HandlerRegistry, deadLetterTopic: String = PipelineDefaults.deadLetterTopic) {
        self.consumerGroup = consumerGroup
        processor = RecordProcessor(consumerGroup: consumerGroup, registry: registry, deadLetterTopic: deadLetterTopic)
    }

    /// The group's unresolved dead letters (of one reason code, when given), oldest first.
    public func unresolved(reason: String? = nil, on db: PostgresConnection) throws -> [Int64] {
        try db.query(
            """
            SELECT id FROM dead_letters
            WHERE consumer_group = $1 AND resolved_at IS NULL AND ($2::text IS NULL OR reason_code = $2)
            ORDER BY id
            """,
            [.text(consumerGroup), PostgresValue(reason)]
        ).map { try $0.decode(Int64.self, column: 0) }
    }

    /// Retries dead letter `id` in one transaction and says what became of it; `operatorName`
    /// is recorded as who resolved it when it goes through.
    public func retry(id: Int64, by operatorName: String, on db: PostgresConnection) throws -> DeadLetterRetryResult {
        guard
            let row = try db.query(
                """
                SELECT consumer_group, topic, partition, kafka_offset, event_id, payload, headers::text,
                       resolved_at IS NOT NULL, retries
                FROM dead_letters WHERE id = $1
                """,
                [.int64(id)]
            ).first
        else {
            return DeadLetterRetryResult(id: id, status: .notFound)
        }
        let group = try row.decode(String.self, column: 0)
        guard group == consumerGroup else { return DeadLetterRetryResult(id: id, status: .otherGroup(group)) }
        let retries = try row.decode(Int.self, column: 8)
        guard try !row.decode(Bool.self, column: 7) else {
            return DeadLetterRetryResult(id: id, status: .alreadyResolved, retries: retries)
        }
        let record = KafkaRecord(
            topic: try row.decode(String.self, column: 1),
            partition: try row.decode(Int32.self, column: 2),
            offset: try row.decode(Int64.self, column: 3),
            key: nil,
            value: try row.decode([UInt8]?.self, column: 5),
            headers: StoredHeaders.headers(fromJSON: try row.decode(String.self, column: 6)))
        let claimed = try row.decode(String.self, column: 4)

        let summary: BatchSummary
        do {
            let part = BatchPart(
                batch: PartitionBatch(partition: record.topicPartition, records: [record]),
                records: [processor.decoder.decode(record)])
            summary = try processor.commit(
                [part], mode: .deadLetterRetry(RetriedDeadLetter(id: id, consumerGroup: consumerGroup, eventID: claimed, operatorName: operatorName)), on: db)
        } catch is DeadLetterSettledMeanwhile {
            return DeadLetterRetryResult(id: id, status: .alreadyResolved, retries: retries)
        }
        if let again = summary.deadLetters.first {
            return DeadLetterRetryResult(id: id, status: .failedAgain(again), retries: retries + 1)
        }
        return DeadLetterRetryResult(
            id: id, status: .resolved(summary.outcomes.first ?? .duplicate), retries: retries + 1)
    }
}

/// What one retry did.
public struct DeadLetterRetryResult: Sendable, Hashable {
    public enum Status: Sendable, Hashable {
        /// The record went through: applied now, or a duplicate or conflict of an effect already
        /// made. The dead letter is resolved.
        case resolved(EventOutcome)
        /// The record was rejected again; the dead letter keeps the new reason and error.
        case failedAgain(DeadLetterNote)
        /// Nothing to do: it was resolved before (or by a concurrent retry).
        case alreadyResolved
        case notFound
        /// It belongs to another consumer group, named here.
        case otherGroup(String)
    }

    public var id: Int64
    public var status: Status
    /// The dead letter's retry count after this attempt.
    public var retries = 0

    public var isResolved: Bool {
        switch status {
        case .resolved, .alreadyResolved: return true
        case .failedAgain, .notFound, .otherGroup: return false
        }
    }
}

