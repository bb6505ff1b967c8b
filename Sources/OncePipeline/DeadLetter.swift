import Logging
import OnceEnvelope
import OnceKafka
import OnceOutbox
import OncePostgres
import OnceSchema

/// A record rejected for good: kept with its bytes, its position and a reason, and published to
/// the dead-letter topic with headers naming the source and the reason.
struct DeadLetter: Sendable {
    package var record: KafkaRecord
    var eventID: String
    var tenantID: String?
    var reason: DeadLetterReason
    var message: String

    /// The dead letter of a record that failed validation; nil for a valid event.
    init?(invalid: BatchRecord) {
        guard case .invalid(let record, let error) = invalid else { return nil }
        self.record = record
        self.eventID = invalid.eventID
        self.tenantID = nil
        self.reason = error.reason
        self.message = error.message
    }

    /// The dead letter of a valid event its handler rejected.
    init(failed event: DecodedEvent, reason: String) {
        record = event.record
        eventID = event.envelope.eventID
        tenantID = event.envelope.tenantID
        self.reason = .handlerFailed
        message = reason
    }

    /// Writes the rows and their outbox records in the caller's transaction.
    static func write(_ letters: [DeadLetter], consumerGroup: String, topic: String, context: HandlerContext) throws {
        guard !letters.isEmpty else { return }
        _ = try context.connection.pipeline { pipeline in
            for letter in letters {
                try pipeline.query(
                    """
                    INSERT INTO dead_letters
                        (consumer_group, topic, partition, kafka_offset, event_id, reason_code, error, payload, headers)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    """,
                    [.text(consumerGroup), .text(letter.record.topic), .int32(letter.record.partition),
                     .int64(letter.record.offset), .text(letter.eventID), .text(letter.reason.rawValue),
                     .text(letter.message), PostgresValue(letter.record.value), .jsonb(letter.headersJSON)])
            }
        }
        // A record can be dead-lettered again, once its claim is pruned and it is replayed.
        try context.outbox.insert(
            letters.map { $0.outboxMessage(consumerGroup: consumerGroup, topic: topic) }, keys: .mayRepeat,
            on: context.connection)
    }

    /// The record for the dead-letter topic: the original value, the source record's headers,
    /// and headers naming the source and the reason. A `too_large` value is left out (no broker
    /// would take it); its bytes are in `dead_letters.payload` and its size in the
    /// `once-payload-bytes` header.
    func outboxMessage(consumerGroup: String, topic: String) -> OutboxMessage {
        var message = OutboxMessage(
            tenantID: tenantID ?? "",
            eventType: "once.dead_letter",
            aggregateID: "\(consumerGroup)/\(record.topic)/\(record.partition)/\(record.offset)",
            topic: topic,
            key: eventID,
            payload: record.value,
            headers: sourceHeaders.merging([
                "once-consumer-group": consumerGroup,
                "once-source-topic": record.topic,
                "once-source-partition": String(record.partition),
                "once-source-offset": String(record.offset),
                "once-event-id": eventID,
                "once-reason": reason.rawValue,
                "once-error": message,
            ]) { _, once in once })
        if reason == .tooLarge {
            message.payload = nil
            message.headers["once-payload-bytes"] = String(record.value?.count ?? 0)
        }
        return message
    }

    /// The source record's own headers (a `traceparent` among them), for the dead-letter
    /// topic's record beside the `once-*` ones, which win a clash; a header that repeats keeps
    /// its last value, one without a value is left out (`dead_letters.headers` keeps them all).
    var sourceHeaders: [String: String] {
        var headers: [String: String] = [:]
        for header in record.headers {
            guard let value = header.value else { continue }
            headers[header.name] = String(decoding: value, as: UTF8.self)
        }
        return headers
    }

    /// The record's own headers, as `StoredHeaders` keeps them.
    var headersJSON: String { StoredHeaders.jsonString(record.headers) }

    var note: DeadLetterNote {
        DeadLetterNote(
            eventID: eventID, reason: reason, message: message, topic: record.topic, partition: record.partition,
            offset: record.offset)
    }
}

/// Why one record was dead-lettered, as a replay or a retry reports it.
public struct DeadLetterNote: Sendable, Hashable {
    public var eventID: String
    public var reason: DeadLetterReason
    public var message: String
    /// Where the record was.
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    /// The fields a log line about it carries.
    public var logMetadata: Logger.Metadata {
        [
            "once.topic": "\(topic)", "once.partition": "\(partition)", "once.offset": "\(offset)",
            "once.event_id": "\(eventID)", "once.reason": "\(reason.rawValue)",
        ]
    }
}

/// The dead letter a batch transaction re-drives: the two statements that make a retry's
/// bookkeeping part of the re-drive's transaction.
package struct RetriedDeadLetter: Sendable {
    package var id: Int64
    package var consumerGroup: String
    /// The id its record was claimed under when it was dead-lettered.
    package var eventID: String
    /// Who asked for the retry (`dead_letters.resolved_by` when it goes through).
    package var operatorName: String

    package init(id: Int64, consumerGroup: String, eventID: String, operatorName: String) {
        self.id = id
        self.consumerGroup = consumerGroup
        self.eventID = eventID
        self.operatorName = operatorName
    }

    /// Locks the dead letter (a concurrent retry waits, then finds it settled) and releases the
    /// claim of its record, unless the record now carries another id.
    func releaseClaim(of records: [BatchRecord], consumerGroup: String, on tx: PostgresConnection) throws {
        let unresolved = try tx.query(
            "SELECT 1 FROM dead_letters WHERE id = $1 AND consumer_group = $2 AND resolved_at IS NULL FOR UPDATE",
            [.int64(id), .text(consumerGroup)])
        guard !unresolved.isEmpty else { throw DeadLetterSettledMeanwhile() }
        guard let record = records.first, record.eventID == eventID else { return }
        // Its tenant's claim in whichever partition it fell (or the pre-upgrade one, which
        // kept no tenant for a rejected record).
        try tx.execute(
            """
            DELETE FROM processed_messages
            WHERE consumer_group = $1 AND event_id = $2 AND (tenant_id = $3 OR tenant_id IS NULL) AND outcome = 'dead_lettered'
            """,
            [.text(consumerGroup), .text(eventID), .text(record.claimTenant)])
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
                UPDATE dead_letters SET resolved_at = now(), retries = retries + 1, resolution = 'retried', resolved_by = $2,
                    bucket = (SELECT \(TimePartitions.claimBucket(at: "now()", window: "w")) FROM once_partitioning w)
                WHERE id = $1
                """, [.int64(id), .text(operatorName)])
        }
    }
}

/// The dead letter was resolved between reading it and locking it.
package struct DeadLetterSettledMeanwhile: Error {}
