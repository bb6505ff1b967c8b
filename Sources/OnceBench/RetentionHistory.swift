import Foundation
import OncePostgres

/// A retention window's worth of `processed_messages`, made by the server alone for the
/// retention step: the seven day partitions before today, created and registered as
/// `once_ensure_partitions` does (`once_create_partition`, contiguous, `once_partitioning.oldest`
/// moved back to the first of them), each filled by one `INSERT … SELECT generate_series`, then
/// vacuumed and analysed, as autovacuum would have left days that are done with.
///
/// The rows are a consumer group's of their own (`bench-history`), in the workload's tenant,
/// with ids in UUID text (most producers' ids look so). Each partition's unique index holds
/// them, so a claim routed to a partition descends an index of that partition's size; the group
/// decides only which stretch of the index a claim's ids fall in, as the workload's own ids
/// (`bench-e…`) do.
///
/// The oldest day holds a tenth of the rows (the partition the prune drops: 2,000,000 of
/// 20,000,000), the six others share the rest. A plain table, `processed_messages_sweep`, holds
/// the same rows as the oldest day, with the index on `processed_at` that a sweep by `DELETE`
/// needs: the anchors' way of retention, measured beside the prune.
struct History: Codable, Sendable {
    struct Day: Codable, Sendable {
        var partition: String
        /// The partition's range, in seconds since the epoch.
        var lower: Int64
        var upper: Int64
        var rows: Int
    }

    static let group = "bench-history"
    static let sweepTable = "processed_messages_sweep"

    var group = History.group
    var rows: Int
    /// Oldest first.
    var days: [Day]
    var sweepTable = History.sweepTable
    var sweepRows: Int
    /// Creating, filling, vacuuming and analysing it all, and the checkpoint after.
    var seconds: Double
    /// `pg_total_relation_size` of the day partitions, and of the sweep's table.
    var bytes: Int64
    var sweepBytes: Int64
    var checks: [Check]

    var oldest: Day { days[0] }

    /// Fills `database` (migrated, nothing in it yet) on `sessions` sessions at once.
    static func make(rows: Int, on database: BenchDatabase, sessions: Int) async throws -> History {
        let started = ContinuousClock.now
        let db = try database.connect()
        defer { db.close() }
        let window = try db.query(
            """
            SELECT extract(epoch FROM date_bin(width, now(), 'epoch'))::bigint, extract(epoch FROM width)::bigint
            FROM once_partitioning
            """)[0]
        let today = try window.decode(Int64.self, column: 0)
        let width = try window.decode(Int64.self, column: 1)

        let oldestRows = rows / 10
        let rest = rows - oldestRows
        var days: [Day] = []
        for back in stride(from: 7, through: 1, by: -1) {
            let lower = today - Int64(back) * width
            try db.execute(
                "SELECT once_create_partition('processed_messages', to_timestamp($1), to_timestamp($2))",
                [.int64(lower), .int64(lower + width)])
            let name = try db.query(
                "SELECT partition FROM once_time_partitions WHERE parent = 'processed_messages' AND lower = to_timestamp($1)",
                [.int64(lower)])[0].decode(String.self, column: 0)
            let count = back == 7 ? oldestRows : rest / 6 + (back == 1 ? rest % 6 : 0)
            days.append(Day(partition: name, lower: lower, upper: lower + width, rows: count))
        }
        try db.execute("UPDATE once_partitioning SET oldest = to_timestamp($1)", [.int64(days[0].lower)])
        try db.execute(
            "CREATE TABLE \(sweepTable) (LIKE processed_messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (fillfactor = 85)"
        )
        try db.execute("CREATE UNIQUE INDEX \(sweepTable)_key ON \(sweepTable) (consumer_group, tenant_id, event_id)")
        try db.execute("CREATE INDEX \(sweepTable)_processed_at ON \(sweepTable) (processed_at)")

        // One job per table: the days newest first, the oldest day's copy last.
        var jobs: [Fill] = []
        var firstID: Int64 = 0
        for day in days {
            jobs.append(Fill(table: day.partition, firstID: firstID, rows: day.rows, lower: day.lower, width: width))
            firstID += Int64(day.rows)
        }
        jobs.reverse()
        jobs.append(Fill(table: sweepTable, firstID: 0, rows: days[0].rows, lower: days[0].lower, width: width))
        let work = jobs
        let next = Locked(0)
        let inserted = Locked([String: Int]())
        let clients = try await (0..<max(1, sessions)).asyncMap { index in
            try await PostgresSession.connect(
                configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-history-\(index)"),
                threadName: "once-bench-history-\(index)")
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                group.addTask {
                    while true {
                        let index = next.update { value -> Int in
                            value += 1
                            return value - 1
                        }
                        guard index < work.count else { return }
                        let job = work[index]
                        let count = try await client.withConnection { db in try job.run(on: db) }
                        inserted.update { $0[job.table] = count }
                    }
                }
            }
            try await group.waitForAll()
        }
        for client in clients { await client.close() }
        // The generation's dirty pages out of the way of what is measured next. The parent is not
        // analysed: that would analyse today's partitions too, empty (see `RetentionStep.settle`).
        try db.execute("CHECKPOINT")
        RetentionStep.flushOperatingSystemCaches()

        let sizes = try db.query(
            """
            SELECT coalesce(sum(pg_total_relation_size(to_regclass(quote_ident(p)))), 0)::bigint,
                   pg_total_relation_size(to_regclass(quote_ident($2)))
            FROM unnest($1::text[]) AS p
            """, [.textArray(days.map(\.partition)), .text(sweepTable)])[0]
        let done = inserted.value
        var checks = days.map { day in
            Check(
                name: "history rows in \(day.partition)", expected: Int64(day.rows),
                actual: Int64(done[day.partition] ?? 0))
        }
        checks.append(
            Check(
                name: "rows in the sweep's copy of the oldest day", expected: Int64(days[0].rows),
                actual: Int64(done[sweepTable] ?? 0)))
        return History(
            rows: rows, days: days, sweepRows: days[0].rows, seconds: (ContinuousClock.now - started).seconds,
            bytes: try sizes.decode(Int64.self, column: 0), sweepBytes: try sizes.decode(Int64.self, column: 1),
            checks: checks)
    }

    /// One table's rows: ids `firstID…` spread evenly over the day from `lower`, `processed_at`
    /// rising through it; a fifth of them `duplicate`, as the workload's outcomes are.
    struct Fill: Sendable {
        var table: String
        var firstID: Int64
        var rows: Int
        var lower: Int64
        var width: Int64

        /// Inserts, then vacuums and analyses the table; returns the rows inserted.
        func run(on db: PostgresConnection) throws -> Int {
            let count = try db.execute(
                """
                INSERT INTO \(table)
                    (consumer_group, tenant_id, event_id, topic, partition, kafka_offset, event_type, outcome,
                     processed_at, bucket)
                SELECT $1, $2, md5('history-' || i)::uuid::text, 'bench-history', (i % 8)::integer, i / 8,
                       CASE WHEN i % 4 = 3 THEN 'credits.granted' ELSE 'batch.completed' END,
                       CASE WHEN i % 5 = 4 THEN 'duplicate' ELSE 'applied' END,
                       to_timestamp($3 + (i - $4) * $5::float8), to_timestamp($3)
                FROM generate_series($4::bigint, $4::bigint + $6 - 1) AS i
                """,
                [
                    .text(History.group), .text(Workload.tenant), .int64(lower), .int64(firstID),
                    .double(Double(width) / Double(max(1, rows))), .int(rows),
                ])
            try db.execute("VACUUM (ANALYZE) \(table)")
            return count
        }
    }
}
