import OncePostgres

/// An event to publish after the transaction that produced it commits.
///
/// (`tenantID`, `eventType`, `aggregateID`) is its business key: writing the same key twice keeps
/// the first row, so a replay cannot publish a second, different event for it.
public struct OutboxMessage: Sendable, Hashable {
    public var tenantID: String
    public var eventType: String
    public var aggregateID: String
    public var topic: String
    public var key: String?
    public var payload: [UInt8]?
    /// Kafka headers as name → value, stored as a JSON object.
    public var headers: [String: String]

    public init(
        tenantID: String, eventType: String, aggregateID: String, topic: String, key: String?,
        payload: [UInt8]?, headers: [String: String] = [:]
    ) {
        self.tenantID = tenantID
        self.eventType = eventType
        self.aggregateID = aggregateID
        self.topic = topic
        self.key = key
        self.payload = payload
        self.headers = headers
    }
}

/// Writes outbox rows inside the caller's transaction and remembers that it did, so the batch
/// can wake the relay (NOTIFY is delivered only on commit).
final class OutboxWriter {
    static let channel = "once_outbox"
    private(set) var inserted = 0

    func insert(_ messages: [OutboxMessage], on connection: PostgresConnection) throws {
        guard !messages.isEmpty else { return }
        // One round trip for the lot; rows with an existing business key are skipped.
        _ = try connection.pipeline { pipeline in
            for message in messages {
                let headers = JSONWriter.serializeString(.object(message.headers.mapValues { .string($0) }))
                try pipeline.query(
                    """
                    INSERT INTO outbox (tenant_id, event_type, aggregate_id, topic, message_key, payload, headers)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (tenant_id, event_type, aggregate_id) DO NOTHING
                    """,
                    [
                        .text(message.tenantID), .text(message.eventType), .text(message.aggregateID),
                        .text(message.topic), PostgresValue(message.key), PostgresValue(message.payload),
                        .jsonb(headers),
                    ])
            }
        }
        inserted += messages.count
    }
}
