import OnceKafka
import OncePostgres

/// A record rejected for good: kept with its bytes, its position and a reason, and published to
/// the dead-letter topic with headers naming the source and the reason.
struct DeadLetter: Sendable {
    var record: KafkaRecord
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
    static func write(_ letters: [DeadLetter], group: String, topic: String, context: HandlerContext) throws {
        guard !letters.isEmpty else { return }
        _ = try context.connection.pipeline { pipeline in
            for letter in letters {
                try pipeline.query(
                    """
                    INSERT INTO dead_letters
                        (consumer_group, topic, partition, kafka_offset, event_id, reason_code, error, payload, headers)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    """,
                    [.text(group), .text(letter.record.topic), .int32(letter.record.partition),
                     .int64(letter.record.offset), .text(letter.eventID), .text(letter.reason.rawValue),
                     .text(letter.message), PostgresValue(letter.record.value), .jsonb(letter.headersJSON)])
            }
        }
        try context.publish(letters.map { $0.outboxMessage(group: group, topic: topic) })
    }

    /// The record for the dead-letter topic: the original value and headers naming the source
    /// and the reason. A `too_large` value is left out (no broker would take it); its bytes are in
    /// `dead_letters.payload` and its size in the `once-payload-bytes` header.
    func outboxMessage(group: String, topic: String) -> OutboxMessage {
        var message = OutboxMessage(
            tenantID: tenantID ?? "",
            eventType: "once.dead_letter",
            aggregateID: "\(group)/\(record.topic)/\(record.partition)/\(record.offset)",
            topic: topic,
            key: eventID,
            payload: record.value,
            headers: [
                "once-consumer-group": group,
                "once-source-topic": record.topic,
                "once-source-partition": String(record.partition),
                "once-source-offset": String(record.offset),
                "once-event-id": eventID,
                "once-reason": reason.rawValue,
                "once-error": message,
            ])
        if reason == .tooLarge {
            message.payload = nil
            message.headers["once-payload-bytes"] = String(record.value?.count ?? 0)
        }
        return message
    }

    /// The record's own headers, as a JSON array of {name, value} (values as UTF-8 text).
    var headersJSON: String {
        let items: [JSONValue] = record.headers.map { header in
            .object([
                "name": .string(header.name),
                "value": header.value.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null,
            ])
        }
        return JSONWriter.serializeString(.array(items))
    }
}
