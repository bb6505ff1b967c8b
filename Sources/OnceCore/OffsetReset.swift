import Foundation
import OnceKafka
import OncePostgres

/// A partition's stored position in `consumer_offsets`: where the group goes on from, and
/// under which claim.
public struct StoredPosition: Sendable, Hashable {
    public var partition: TopicPartition
    /// nil until the first batch commits: the partition starts at its earliest offset.
    public var nextOffset: Int64?
    public var generation: Int64
    /// The member that claimed the partition last (nil when only an operator wrote the row).
    public var owner: String?
    public var updatedAt: Date
}

/// Where an operator moves a partition's stored position to.
public enum OffsetTarget: Sendable, Hashable {
    case offset(Int64)
    /// The first offset still stored on the broker.
    case earliest
    /// The end of the log: everything in it now is skipped.
    case latest
    /// The first offset whose record was stamped at or after this time (ms since the epoch);
    /// the end of the log when there is none.
    case time(milliseconds: Int64)

    /// The offset on the broker, checked to lie within the partition's log.
    public func resolve(with reader: PartitionReader) async throws -> Int64 {
        let marks = try await reader.watermarks()
        switch self {
        case .earliest:
            return marks.low
        case .latest:
            return try await reader.end()
        case .time(let milliseconds):
            return try await reader.firstOffset(atOrAfter: milliseconds)
        case .offset(let offset):
            guard offset >= marks.low else {
                throw OffsetOutOfRange(
                    "offset \(offset) is before the first offset still stored in \(reader.partition) (\(marks.low))")
            }
            if offset <= marks.high { return offset }
            let end = try await reader.end()
            guard offset <= end else {
                throw OffsetOutOfRange("offset \(offset) is past the end of \(reader.partition) (\(end))")
            }
            return offset
        }
    }
}

/// The group's stored positions: reading them, and moving one (`once offsets`).
///
/// A move bumps the partition's generation and keeps its owner. The owner, if it is running,
/// notices the new generation within about a second (its batches in flight are fenced, an idle
/// partition is found by its periodic check), adopts the new position and fetches from there;
/// a stale member, whose claim is older, cannot commit over it.
public struct ConsumerOffsets: Sendable {
    public let group: String

    public init(group: String) {
        self.group = group
    }

    public func positions(on db: PostgresConnection) throws -> [StoredPosition] {
        try db.query(
            """
            SELECT topic, partition, next_offset, generation, owner, updated_at FROM consumer_offsets
            WHERE consumer_group = $1 ORDER BY topic, partition
            """,
            [.text(group)]
        ).map(Self.position)
    }

    /// Stores `offset` as the partition's next offset under a new generation (adding the row
    /// when the group has none for it); returns the position before (nil: none) and after.
    public func reset(
        _ partition: TopicPartition, to offset: Int64, on db: PostgresConnection
    ) throws -> (before: StoredPosition?, after: StoredPosition) {
        try db.transaction { tx in
            let parameters: [PostgresValue] = [.text(group), .text(partition.topic), .int32(partition.partition)]
            let before = try tx.query(
                """
                SELECT topic, partition, next_offset, generation, owner, updated_at FROM consumer_offsets
                WHERE consumer_group = $1 AND topic = $2 AND partition = $3 FOR UPDATE
                """,
                parameters
            ).first.map(Self.position)
            let after = try tx.query(
                """
                INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, generation, owner)
                VALUES ($1, $2, $3, $4, 1, NULL)
                ON CONFLICT (consumer_group, topic, partition)
                DO UPDATE SET next_offset = EXCLUDED.next_offset, generation = o.generation + 1, updated_at = now()
                RETURNING topic, partition, next_offset, generation, owner, updated_at
                """,
                parameters + [.int64(offset)])
            return (before, try Self.position(after[0]))
        }
    }

    private static func position(_ row: PostgresRow) throws -> StoredPosition {
        StoredPosition(
            partition: TopicPartition(try row.decode(String.self, column: 0), try row.decode(Int32.self, column: 1)),
            nextOffset: try row.decode(Int64?.self, column: 2),
            generation: try row.decode(Int64.self, column: 3),
            owner: try row.decode(String?.self, column: 4),
            updatedAt: try row.decode(Date.self, column: 5))
    }
}

/// The requested offset lies outside the partition's log.
public struct OffsetOutOfRange: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
