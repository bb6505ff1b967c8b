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

/// Where a partition's owner believes the stored position is, and under which claim.
package struct PartitionFence: Sendable, Hashable {
    package var generation: Int64
    /// The stored `next_offset` this owner last saw or wrote (nil: nothing stored yet).
    package var nextOffset: Int64?

    package init(generation: Int64, nextOffset: Int64?) {
        self.generation = generation
        self.nextOffset = nextOffset
    }
}

/// The batch found its partition claimed by another member or reset by an operator: nothing
/// was written, and the owner must re-read the stored position before going on.
package struct BatchFenced: Error, CustomStringConvertible {
    package var partition: TopicPartition
    package var generation: Int64
    package var description: String { "\(partition) is no longer held under generation \(generation)" }
}

/// The group's stored positions: every statement on `consumer_offsets` but the status
/// report's read, and the rules they keep.
///
/// The rules: a member that is assigned a partition *claims* it, bumping its generation and
/// naming itself the owner; a batch moves the position only under the generation it was
/// claimed with and only from where the batch starts (the fence: a zombie, or a member whose
/// partition an operator reset, writes nothing); an operator's reset bumps the generation and
/// keeps the owner, who notices the new generation (its batch is fenced, or its periodic check
/// sees it) and adopts the new position. A value type; every method runs one statement (or one
/// short transaction) on the connection it is given, so it blocks that connection's thread.
/// Errors are the connection's `PostgresError`s, and `BatchFenced` from `advance`.
public struct StoredPositions: Sendable {
    public let consumerGroup: String

    public init(consumerGroup: String) {
        self.consumerGroup = consumerGroup
    }

    // MARK: Reading and operator resets

    /// The group's positions, by topic and partition.
    public func positions(on db: PostgresConnection) throws -> [StoredPosition] {
        try db.query(
            """
            SELECT topic, partition, next_offset, generation, owner, updated_at FROM consumer_offsets
            WHERE consumer_group = $1 ORDER BY topic, partition
            """,
            [.text(consumerGroup)]
        ).map(Self.position)
    }

    /// How many records lie below the group's stored positions, over all its partitions.
    public func recordsBelow(on db: PostgresConnection) throws -> Int64 {
        try db.query(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE consumer_group = $1",
            [.text(consumerGroup)]
        )[0].decode(Int64.self, column: 0)
    }

    /// Stores each partition's offset as its next offset, in one statement, each under a new
    /// generation (adding a row without an owner where the group has none), keeping the owners;
    /// returns the positions as stored now, by topic and partition.
    public func reset(_ targets: [(TopicPartition, Int64)], on db: PostgresConnection) throws -> [StoredPosition] {
        try db.query(
            """
            INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, generation, owner)
            SELECT $1, t.topic, t.partition, t.next_offset, 1, NULL
            FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS t(topic, partition, next_offset)
            ON CONFLICT (consumer_group, topic, partition)
            DO UPDATE SET next_offset = EXCLUDED.next_offset, generation = o.generation + 1, updated_at = now()
            RETURNING topic, partition, next_offset, generation, owner, updated_at
            """,
            [.text(consumerGroup), .textArray(targets.map(\.0.topic)), .int64Array(targets.map { Int64($0.0.partition) }),
             .int64Array(targets.map(\.1))]
        ).map(Self.position).sorted { ($0.partition.topic, $0.partition.partition) < ($1.partition.topic, $1.partition.partition) }
    }

    // MARK: A member's claims

    /// Claims `partitions` for `owner` under a new generation each; returns where each one's
    /// position is now.
    package func claim(
        _ partitions: [TopicPartition], owner: String, on db: PostgresConnection
    ) throws -> [(TopicPartition, PartitionFence)] {
        try db.query(
            """
            INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, generation, owner)
            SELECT $1, c.topic, c.partition, NULL, 1, $2
            FROM unnest($3::text[], $4::bigint[]) AS c(topic, partition)
            ON CONFLICT (consumer_group, topic, partition)
            DO UPDATE SET generation = o.generation + 1, owner = EXCLUDED.owner, updated_at = now()
            RETURNING topic, partition, next_offset, generation
            """,
            [.text(consumerGroup), .text(owner), .textArray(partitions.map(\.topic)), .int64Array(partitions.map { Int64($0.partition) })]
        ).map { row in
            (TopicPartition(try row.decode(String.self, column: 0), try row.decode(Int32.self, column: 1)),
             PartitionFence(generation: try row.decode(Int64.self, column: 3), nextOffset: try row.decode(Int64?.self, column: 2)))
        }
    }

    /// One partition's claim as stored now, and its owner (nil: the group has no row for it).
    package func claim(of partition: TopicPartition, on db: PostgresConnection) throws -> (PartitionFence, owner: String?)? {
        try db.query(
            "SELECT next_offset, generation, owner FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            [.text(consumerGroup), .text(partition.topic), .int32(partition.partition)]
        ).first.map { row in
            (PartitionFence(generation: try row.decode(Int64.self, column: 1), nextOffset: try row.decode(Int64?.self, column: 0)),
             try row.decode(String?.self, column: 2))
        }
    }

    /// The claims as stored now of `partitions`, for the periodic check of idle partitions.
    package func claims(
        of partitions: [TopicPartition], on db: PostgresConnection
    ) throws -> [(TopicPartition, PartitionFence, owner: String?)] {
        try db.query(
            """
            SELECT o.topic, o.partition, o.next_offset, o.generation, o.owner
            FROM consumer_offsets o
            JOIN unnest($2::text[], $3::bigint[]) AS h(topic, partition)
                ON o.topic = h.topic AND o.partition = h.partition
            WHERE o.consumer_group = $1
            """,
            [.text(consumerGroup), .textArray(partitions.map(\.topic)), .int64Array(partitions.map { Int64($0.partition) })]
        ).map { row in
            let fence = PartitionFence(
                generation: try row.decode(Int64.self, column: 3), nextOffset: try row.decode(Int64?.self, column: 2))
            return (TopicPartition(try row.decode(String.self, column: 0), try row.decode(Int32.self, column: 1)),
                    fence, try row.decode(String?.self, column: 4))
        }
    }

    // MARK: The fence

    /// Inside a batch transaction: moves `partition`'s position from `fence.nextOffset` to
    /// `nextOffset`, only under `fence.generation`; throws `BatchFenced` (and writes nothing)
    /// when the partition was claimed by another member or reset since.
    package func advance(
        _ partition: TopicPartition, under fence: PartitionFence, to nextOffset: Int64, on tx: PostgresConnection
    ) throws {
        let moved = try tx.query(
            prepared: "once_fence",
            """
            UPDATE consumer_offsets SET next_offset = $5, updated_at = now()
            WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND generation = $4
              AND next_offset IS NOT DISTINCT FROM $6
            """,
            [.text(consumerGroup), .text(partition.topic), .int32(partition.partition), .int64(fence.generation),
             .int64(nextOffset), PostgresValue(fence.nextOffset)]
        ).affectedRows
        guard moved == 1 else { throw BatchFenced(partition: partition, generation: fence.generation) }
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
