import Foundation
import OnceKafka
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
    let decoder: BatchDecoder
    let transaction: BatchTransaction

    public init(consumerGroup: String, registry: HandlerRegistry, deadLetterTopic: String = "once.dead-letters") {
        self.consumerGroup = consumerGroup
        decoder = BatchDecoder(registry: registry)
        transaction = BatchTransaction(group: consumerGroup, registry: registry, deadLetterTopic: deadLetterTopic)
    }

    /// The group's unresolved dead letters, oldest first.
    public func unresolved(on db: PostgresConnection) throws -> [Int64] {
        try db.query(
            "SELECT id FROM dead_letters WHERE consumer_group = $1 AND resolved_at IS NULL ORDER BY id",
            [.text(consumerGroup)]
        ).map { try $0.decode(Int64.self, column: 0) }
    }

    /// Retries dead letter `id` in one transaction and says what became of it.
    public func retry(id: Int64, on db: PostgresConnection) throws -> DeadLetterRetryResult {
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
            headers: Self.headers(fromJSON: try row.decode(String.self, column: 6)))
        let claimed = try row.decode(String.self, column: 4)

        let summary: BatchSummary
        do {
            summary = try transaction.commit(
                [decoder.decode(record)], of: PartitionBatch(partition: record.topicPartition, records: [record]),
                fence: nil,
                options: .init(retrying: RetriedDeadLetter(id: id, group: consumerGroup, eventID: claimed)), on: db)
        } catch is DeadLetterSettledMeanwhile {
            return DeadLetterRetryResult(id: id, status: .alreadyResolved, retries: retries)
        }
        if let again = summary.deadLetters.first {
            return DeadLetterRetryResult(id: id, status: .failedAgain(again), retries: retries + 1)
        }
        return DeadLetterRetryResult(
            id: id, status: .resolved(summary.outcomes.first ?? .duplicate), retries: retries + 1)
    }

    /// The headers `DeadLetter.headersJSON` stored: a JSON array of {name, value}.
    static func headers(fromJSON text: String) -> [KafkaHeader] {
        guard case .array(let items)? = try? JSONParser.parse(Array(text.utf8)) else { return [] }
        return items.compactMap { item in
            guard let name = item["name"]?.stringValue else { return nil }
            return KafkaHeader(name: name, value: item["value"]?.stringValue.map { Array($0.utf8) })
        }
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

/// Why one record was dead-lettered, as a replay or a retry reports it.
public struct DeadLetterNote: Sendable, Hashable {
    public var eventID: String
    public var reason: DeadLetterReason
    public var message: String
}

extension DeadLetter {
    var note: DeadLetterNote { DeadLetterNote(eventID: eventID, reason: reason, message: message) }
}

/// The dead letter a batch transaction re-drives: the two statements that make a retry's
/// bookkeeping part of the re-drive's transaction.
struct RetriedDeadLetter: Sendable {
    var id: Int64
    var group: String
    /// The id its record was claimed under when it was dead-lettered.
    var eventID: String

    /// Locks the dead letter (a concurrent retry waits, then finds it settled) and releases the
    /// claim of its record, unless the record now carries another id.
    func releaseClaim(of records: [BatchRecord], group: String, on tx: PostgresConnection) throws {
        let unresolved = try tx.query(
            "SELECT 1 FROM dead_letters WHERE id = $1 AND consumer_group = $2 AND resolved_at IS NULL FOR UPDATE",
            [.int64(id), .text(group)])
        guard !unresolved.isEmpty else { throw DeadLetterSettledMeanwhile() }
        guard let record = records.first, record.eventID == eventID else { return }
        // Its tenant's claim in whichever partition it fell (or the pre-upgrade one, which
        // kept no tenant for a rejected record).
        try tx.execute(
            """
            DELETE FROM processed_messages
            WHERE consumer_group = $1 AND event_id = $2 AND (tenant_id = $3 OR tenant_id IS NULL) AND outcome = 'dead_lettered'
            """,
            [.text(group), .text(eventID), .text(record.claimTenant)])
    }

    /// Resolves the dead letter, or records why it failed again.
    func settle(failedAgain letter: DeadLetter?, on tx: PostgresConnection) throws {
        if let letter {
            try tx.execute(
                """
                UPDATE dead_letters SET reason_code = $2, error = $3, event_id = $4, retries = retries + 1
                WHERE id = $1
                """,
                [.int64(id), .text(letter.reason.rawValue), .text(letter.message), .text(letter.eventID)])
        } else {
            try tx.execute(
                """
                UPDATE dead_letters SET resolved_at = now(), retries = retries + 1,
                    bucket = (SELECT \(TimePartitions.claimBucket(at: "now()", window: "w")) FROM once_partitioning w)
                WHERE id = $1
                """, [.int64(id)])
        }
    }
}

/// The dead letter was resolved between reading it and locking it.
struct DeadLetterSettledMeanwhile: Error {}
