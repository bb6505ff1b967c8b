import Foundation
import OnceKafka
import OnceOutbox
import OncePostgres
import OnceSchema

/// One row of `dead_letters`, as `once dlq` and the console show it.
public struct DeadLetterEntry: Sendable, Hashable {
    public var id: Int64
    public var consumerGroup: String
    public var source: TopicPartition
    public var offset: Int64
    public var eventID: String
    public var reasonCode: String
    public var error: String
    /// The record's original bytes (nil for a record without a value, and in lists).
    public var payload: [UInt8]?
    public var headers: [KafkaHeader]
    public var createdAt: Date
    public var resolvedAt: Date?
    public var retries: Int
    /// How it was resolved (nil while unresolved).
    public var resolution: DeadLetterResolution?
    /// Who resolved it: the operator who retried or discarded it.
    public var resolvedBy: String?
    /// Why it was discarded, in the operator's words.
    public var note: String?
}

/// How a dead letter left the queue. Either way its row stays, for the audit, until its time
/// partition leaves the retention window.
public enum DeadLetterResolution: String, Sendable, Hashable, CaseIterable {
    /// A retry went through: the record applied, or turned out to be a duplicate or conflict.
    case retried
    /// An operator gave it up, with a note; its record never applies.
    case discarded
}

/// Which dead letters a list shows. Every field narrows it; the default is every unresolved one.
public struct DeadLetterFilter: Sendable, Hashable {
    /// The reason code (`dead_letters.reason_code`), exactly.
    public var reason: String?
    /// The source topic, exactly.
    public var topic: String?
    /// Dead-lettered at or after this time.
    public var since: Date?
    public var includeResolved: Bool
    public var limit: Int

    public init(
        reason: String? = nil, topic: String? = nil, since: Date? = nil, includeResolved: Bool = false, limit: Int = 1000
    ) {
        self.reason = reason
        self.topic = topic
        self.since = since
        self.includeResolved = includeResolved
        self.limit = limit
    }
}

/// What one discard did.
public struct DeadLetterDiscardResult: Sendable, Hashable {
    public enum Status: Sendable, Hashable {
        case discarded
        /// Nothing to do: it was resolved before (retried or discarded).
        case alreadyResolved
        case notFound
        /// It belongs to another consumer group, named here.
        case otherGroup(String)
    }

    public var id: Int64
    public var status: Status
}

/// The group's unresolved dead letters counted by reason and by age, for `once status`.
public struct DeadLetterSummary: Sendable, Hashable {
    public struct Reason: Sendable, Hashable {
        public var reason: String
        public var count: Int64
        /// Of `count`, how many are younger than an hour, and than a day.
        public var lastHour: Int64
        public var lastDay: Int64
        public var oldest: Date
    }

    /// By reason code, in code order.
    public var reasons: [Reason]

    public init(reasons: [Reason]) {
        self.reasons = reasons
    }

    public var total: Int64 { reasons.reduce(0) { $0 + $1.count } }
}

/// Reads a group's dead letters, and discards them. A value type; every method runs one
/// statement (or one short transaction) on the connection it is given, blocking its thread.
/// Errors are the connection's `PostgresError`s.
public struct DeadLetterQueue: Sendable {
    public let consumerGroup: String

    public init(consumerGroup: String) {
        self.consumerGroup = consumerGroup
    }

    static let columns = """
        id, consumer_group, topic, partition, kafka_offset, event_id, reason_code, error, %PAYLOAD%,
        headers::text, created_at, resolved_at, retries, resolution, resolved_by, resolution_note
        """

    /// Unresolved only unless `includeResolved`; at most `limit`.
    public func list(includeResolved: Bool = false, limit: Int = 1000, on db: PostgresConnection) throws
        -> [DeadLetterEntry]
    {
        try list(DeadLetterFilter(includeResolved: includeResolved, limit: limit), on: db)
    }

    /// The dead letters `filter` selects, oldest first. Payloads are left out (nil):
    /// `entry(id:)` has them.
    public func list(_ filter: DeadLetterFilter, on db: PostgresConnection) throws -> [DeadLetterEntry] {
        try db.query(
            """
            SELECT \(Self.columns.replacingOccurrences(of: "%PAYLOAD%", with: "NULL::bytea"))
            FROM dead_letters
            WHERE consumer_group = $1 AND ($2 OR resolved_at IS NULL)
              AND ($4::text IS NULL OR reason_code = $4) AND ($5::text IS NULL OR topic = $5)
              AND ($6::timestamptz IS NULL OR created_at >= $6)
            ORDER BY id LIMIT $3
            """,
            [
                .text(consumerGroup), .bool(filter.includeResolved), .int64(Int64(filter.limit)),
                PostgresValue(filter.reason), PostgresValue(filter.topic), filter.since.map(PostgresValue.timestamptz) ?? .null,
            ]
        ).map(Self.entry)
    }

    /// Any group's dead letter `id`, with its payload.
    public func entry(id: Int64, on db: PostgresConnection) throws -> DeadLetterEntry? {
        try db.query(
            "SELECT \(Self.columns.replacingOccurrences(of: "%PAYLOAD%", with: "payload")) FROM dead_letters WHERE id = $1",
            [.int64(id)]
        ).first.map(Self.entry)
    }

    /// Gives up dead letter `id`: it is resolved as `discarded`, by `operatorName`, with
    /// `note`, and its record never applies (its claim stays). The row stays for the audit.
    public func discard(id: Int64, by operatorName: String, note: String, on db: PostgresConnection) throws
        -> DeadLetterDiscardResult
    {
        try db.transaction { tx in
            guard
                let row = try tx.query(
                    "SELECT consumer_group, resolved_at IS NOT NULL FROM dead_letters WHERE id = $1 FOR UPDATE",
                    [.int64(id)]
                ).first
            else { return DeadLetterDiscardResult(id: id, status: .notFound) }
            let group = try row.decode(String.self, column: 0)
            guard group == consumerGroup else { return DeadLetterDiscardResult(id: id, status: .otherGroup(group)) }
            guard try !row.decode(Bool.self, column: 1) else {
                return DeadLetterDiscardResult(id: id, status: .alreadyResolved)
            }
            try Self.markDiscarded("id = $1", [.int64(id)], by: operatorName, note: note, on: tx)
            return DeadLetterDiscardResult(id: id, status: .discarded)
        }
    }

    /// Discards every unresolved dead letter of the group with reason code `reason`, in one
    /// transaction; returns their ids, oldest first.
    public func discard(reason: String, by operatorName: String, note: String, on db: PostgresConnection) throws
        -> [Int64]
    {
        try db.transaction { tx in
            try Self.markDiscarded(
                "consumer_group = $1 AND reason_code = $2 AND resolved_at IS NULL", [.text(consumerGroup), .text(reason)],
                by: operatorName, note: note, on: tx
            ).sorted()
        }
    }

    private static func markDiscarded(
        _ condition: String, _ parameters: [PostgresValue], by operatorName: String, note: String,
        on tx: PostgresConnection
    ) throws -> [Int64] {
        let by = parameters.count + 1
        // Resolved rows move to the partition of their resolution's interval, as a retry's do.
        return try tx.query(
            """
            UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded',
                resolved_by = $\(by), resolution_note = $\(by + 1),
                bucket = (SELECT \(TimePartitions.claimBucket(at: "now()", window: "w")) FROM once_partitioning w)
            WHERE \(condition)
            RETURNING id
            """,
            parameters + [.text(operatorName), .text(note)]
        ).map { try $0.decode(Int64.self, column: 0) }
    }

    /// The unresolved dead letters by reason and age, as of the database's clock.
    public func summary(on db: PostgresConnection) throws -> DeadLetterSummary {
        DeadLetterSummary(
            reasons: try db.query(
                """
                SELECT reason_code, count(*), count(*) FILTER (WHERE created_at > now() - interval '1 hour'),
                       count(*) FILTER (WHERE created_at > now() - interval '1 day'), min(created_at)
                FROM dead_letters WHERE consumer_group = $1 AND resolved_at IS NULL
                GROUP BY reason_code ORDER BY reason_code
                """,
                [.text(consumerGroup)]
            ).map { row in
                DeadLetterSummary.Reason(
                    reason: try row.decode(String.self, column: 0), count: try row.decode(Int64.self, column: 1),
                    lastHour: try row.decode(Int64.self, column: 2), lastDay: try row.decode(Int64.self, column: 3),
                    oldest: try row.decode(Date.self, column: 4))
            })
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
            retries: try row.decode(Int.self, column: 12),
            resolution: try row.decode(String?.self, column: 13).flatMap(DeadLetterResolution.init(rawValue:)),
            resolvedBy: try row.decode(String?.self, column: 14),
            note: try row.decode(String?.self, column: 15))
    }
}
