import Foundation
import OnceKafka
import OncePipeline
import OncePostgres

/// One replay as `once_replays` records it: what it was asked to do and how far it got.
public struct ReplayLogEntry: Sendable, Hashable {
    public enum State: String, Sendable, Hashable {
        case running, finished, failed
    }

    public var id: Int64
    public var partition: TopicPartition
    public var from: Int64
    /// The last offset asked for (nil: the end of the log).
    public var through: Int64?
    public var dryRun: Bool
    public var state: State
    /// The offset after the last record done.
    public var nextOffset: Int64
    public var records: Int64
    public var applied: Int64
    public var duplicates: Int64
    public var conflicts: Int64
    public var deadLettered: Int64
    public var error: String?
    public var startedAt: Date
    public var updatedAt: Date
    public var finishedAt: Date?
}

/// The group's replays in `once_replays`: each `PartitionReplay` adds its row when it starts
/// and updates it after every batch, so that another process (the console, `once status`)
/// sees its progress. A row left `running` by a replay that was killed stays so; its
/// `updated_at` tells. A value type; each method runs one statement on the connection it is
/// given, blocking its thread. Errors are the connection's `PostgresError`s.
public struct ReplayLog: Sendable {
    public let consumerGroup: String

    public init(consumerGroup: String) {
        self.consumerGroup = consumerGroup
    }

    /// The newest `limit` replays, newest first.
    public func recent(limit: Int = 50, on db: PostgresConnection) throws -> [ReplayLogEntry] {
        try db.query(
            """
            SELECT id, topic, partition, from_offset, through_offset, dry_run, state, next_offset, records, applied,
                   duplicates, conflicts, dead_lettered, error, started_at, updated_at, finished_at
            FROM once_replays WHERE consumer_group = $1 ORDER BY id DESC LIMIT $2
            """,
            [.text(consumerGroup), .int64(Int64(limit))]
        ).map { row in
            ReplayLogEntry(
                id: try row.decode(Int64.self, column: 0),
                partition: TopicPartition(try row.decode(String.self, column: 1), try row.decode(Int32.self, column: 2)),
                from: try row.decode(Int64.self, column: 3), through: try row.decode(Int64?.self, column: 4),
                dryRun: try row.decode(Bool.self, column: 5),
                state: ReplayLogEntry.State(rawValue: try row.decode(String.self, column: 6)) ?? .failed,
                nextOffset: try row.decode(Int64.self, column: 7), records: try row.decode(Int64.self, column: 8),
                applied: try row.decode(Int64.self, column: 9), duplicates: try row.decode(Int64.self, column: 10),
                conflicts: try row.decode(Int64.self, column: 11), deadLettered: try row.decode(Int64.self, column: 12),
                error: try row.decode(String?.self, column: 13), startedAt: try row.decode(Date.self, column: 14),
                updatedAt: try row.decode(Date.self, column: 15), finishedAt: try row.decode(Date?.self, column: 16))
        }
    }

    /// Adds a running replay's row; returns its id.
    func start(_ request: PartitionReplay.Request, on db: PostgresConnection) throws -> Int64 {
        try db.query(
            """
            INSERT INTO once_replays (consumer_group, topic, partition, from_offset, through_offset, dry_run, next_offset)
            VALUES ($1, $2, $3, $4, $5, $6, $4) RETURNING id
            """,
            [.text(consumerGroup), .text(request.partition.topic), .int32(request.partition.partition),
             .int64(request.from), PostgresValue(request.through), .bool(request.dryRun)]
        )[0].decode(Int64.self, column: 0)
    }

    /// Records how far replay `id` got; with `state`, that it ended so (and why, for a failure).
    func update(
        _ id: Int64, with report: ReplayReport, state: ReplayLogEntry.State = .running, error: String? = nil,
        on db: PostgresConnection
    ) throws {
        let outcomes = report.outcomes
        try db.execute(
            """
            UPDATE once_replays SET next_offset = $2, records = $3, applied = $4, duplicates = $5, conflicts = $6,
                dead_lettered = $7, state = $8, error = $9, updated_at = now(),
                finished_at = CASE WHEN $8 = 'running' THEN NULL ELSE now() END
            WHERE id = $1
            """,
            [.int64(id), .int64((report.lastOffset ?? report.request.from - 1) + 1), .int(report.recordsRead),
             .int(outcomes[.applied]), .int(outcomes[.duplicate]), .int(outcomes[.conflict]),
             .int(outcomes[.deadLettered]), .text(state.rawValue), PostgresValue(error)])
    }
}
