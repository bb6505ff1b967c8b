import Foundation
import OnceKafka
import OnceOutbox
import OncePostgres

/// One row of `dead_letters`, as `once dlq` shows it.
public struct DeadLetterEntry: Sendable, Hashable {
    public var id: Int64
    public var consumerGroup: String
    public var source: TopicPartition
    public var offset: Int64
    public var eventID: String
    public var reasonCode: String
    public var error: String
    /// The record's original bytes (nil for a record without a value).
    public var payload: [UInt8]?
    public var headers: [KafkaHeader]
    public var createdAt: Date
    public var resolvedAt: Date?
    public var retries: Int
}

/// Reads a group's dead letters.
public struct DeadLetterQueue: Sendable {
    public let consumerGroup: String

    public init(consumerGroup: String) {
        self.consumerGroup = consumerGroup
    }

    /// Oldest first; unresolved only unless `includeResolved`; at most `limit`.
    /// Payloads are left out (nil): `entry(id:)` has them.
    public func list(includeResolved: Bool = false, limit: Int = 1000, on db: PostgresConnection) throws
        -> [DeadLetterEntry]
    {
        try db.query(
            """
            SELECT id, consumer_group, topic, partition, kafka_offset, event_id, reason_code, error, NULL::bytea,
                   headers::text, created_at, resolved_at, retries
            FROM dead_letters
            WHERE consumer_group = $1 AND ($2 OR resolved_at IS NULL)
            ORDER BY id LIMIT $3
            """,
            [.text(consumerGroup), .bool(includeResolved), .int64(Int64(limit))]
        ).map(Self.entry)
    }

    /// Any group's dead letter `id`, with its payload.
    public func entry(id: Int64, on db: PostgresConnection) throws -> DeadLetterEntry? {
        try db.query(
            """
            SELECT id, consumer_group, topic, partition, kafka_offset, event_id, reason_code, error, payload,
                   headers::text, created_at, resolved_at, retries
            FROM dead_letters WHERE id = $1
            """,
            [.int64(id)]
        ).first.map(Self.entry)
    }

    private static func entry(_ row: PostgresRow) throws -> DeadLetterEntry {
        DeadLetterEntry(
            id: try row.decode(Int64.self, column: 0),
            consumerGroup: try row.decode(String.self, column: 1),
            source: TopicPartition(try row.decode(String.self, column: 2), try row.decode(Int32.self, column: 3)),
            offset: try row.decode(Int64.self, column: 4),
            eventID: try row.decode(String.self, column: 5),
            reasonCode: try row.decode(String.self, column: 6),
            error: try row.decode(String.self, column: 7),
            payload: try row.decode([UInt8]?.self, column: 8),
            headers: StoredHeaders.headers(fromJSON: try row.decode(String.self, column: 9)),
            createdAt: try row.decode(Date.self, column: 10),
            resolvedAt: try row.decode(Date?.self, column: 11),
            retries: try row.decode(Int.self, column: 12))
    }
}
