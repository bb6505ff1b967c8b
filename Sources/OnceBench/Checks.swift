import OncePipeline
import OncePostgres

/// One correctness check: what the workload says, what the database holds.
struct Check: Codable, Sendable {
    var name: String
    var expected: Int64
    var actual: Int64
    var passed: Bool { expected == actual }
}

extension Array where Element == Check {
    var allPassed: Bool { allSatisfy(\.passed) }
    var failures: [Check] { filter { !$0.passed } }
}

/// The contract's invariants (CONTRACT.md §2) and the workload's counts, checked by query
/// after a strategy ran: one ledger row per business key and exactly the keys produced,
/// balances equal to the ledger sums and to the workload's, one `processed_messages` row per
/// event id with the expected outcomes, every record below the stored positions, no dead
/// letters, one outbox row per effect. The effects counted are `tenant`'s and the rows the
/// pipeline keeps are `group`'s, so that a database may hold other loads as well. `outboxRows`
/// is what the outbox should hold, when not one row per effect applied.
enum Checks {
    /// Whose tables the database holds.
    enum Tables: Sendable {
        /// once's migrations: every check.
        case once
        /// The peer's `schema.sql`: no dead letters nor credit conflicts to count, and stored
        /// positions without once's generation and owner columns.
        case peer
    }

    static func consumer(
        _ database: BenchDatabase, group: String, tenant: String = Workload.tenant, expectation: Expectation,
        outboxRows: Int? = nil, tables: Tables = .once
    ) throws -> [Check] {
        let db = try database.connect()
        defer { db.close() }
        func count(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int64 {
            try db.query(sql, parameters)[0].decode(Int64?.self, column: 0) ?? 0
        }
        let accounts = expectation.balances.keys.sorted()
        let perPartition = expectation.recordsPerPartition.keys.sorted()
        var checks: [Check] = []
        func check(_ name: String, _ expected: Int, _ actual: Int64) {
            checks.append(Check(name: name, expected: Int64(expected), actual: actual))
        }
        func check(_ name: String, _ expected: Int64, _ actual: Int64) {
            checks.append(Check(name: name, expected: expected, actual: actual))
        }

        check(
            "ledger rows (one per business key applied)", expectation.applied,
            try count("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(tenant)]))
        check(
            "business keys with more than one ledger row", 0,
            try count(
                """
                SELECT count(*) FROM (SELECT 1 FROM credit_ledger WHERE tenant_id = $1
                                      GROUP BY tenant_id, kind, business_key HAVING count(*) > 1) d
                """, [.text(tenant)]))
        check(
            "ledger amount total", expectation.ledgerTotal,
            try count(
                "SELECT coalesce(sum(amount), 0)::bigint FROM credit_ledger WHERE tenant_id = $1", [.text(tenant)]))
        check(
            "accounts whose balance differs from their ledger sum", 0,
            try count(
                """
                SELECT count(*) FROM credit_accounts a
                FULL JOIN (SELECT tenant_id, account_id, sum(amount)::bigint AS total FROM credit_ledger GROUP BY 1, 2) l
                    USING (tenant_id, account_id)
                WHERE a.balance IS DISTINCT FROM coalesce(l.total, 0)
                """))
        check(
            "accounts whose balance differs from the workload's", 0,
            try count(
                """
                SELECT count(*) FROM unnest($2::text[], $3::bigint[]) AS e(account_id, balance)
                FULL JOIN (SELECT account_id, balance FROM credit_accounts WHERE tenant_id = $1) a USING (account_id)
                WHERE a.balance IS DISTINCT FROM e.balance
                """,
                [.text(tenant), .textArray(accounts), .int64Array(accounts.map { expectation.balances[$0]! })])
        )
        check(
            "processed_messages rows (one per event id)", expectation.processed,
            try count("SELECT count(*) FROM processed_messages WHERE consumer_group = $1", [.text(group)]))
        check(
            "outcome applied", expectation.applied,
            try count(
                "SELECT count(*) FROM processed_messages WHERE consumer_group = $1 AND outcome = 'applied'",
                [.text(group)]))
        check(
            "outcome duplicate (producer duplicates)", expectation.duplicates,
            try count(
                "SELECT count(*) FROM processed_messages WHERE consumer_group = $1 AND outcome = 'duplicate'",
                [.text(group)]))
        let positions = StoredPositions(consumerGroup: group)
        check("records below the stored positions", expectation.records, try positions.recordsBelow(on: db))
        let stored: [Int32: Int64?]
        switch tables {
        case .once:
            stored = Dictionary(
                try positions.positions(on: db).map { ($0.partition.partition, $0.nextOffset) },
                uniquingKeysWith: { $1 })
        case .peer:
            stored = Dictionary(
                try db.query(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1", [.text(group)]
                ).map { row in (try row.decode(Int32.self, column: 0), try row.decode(Int64?.self, column: 1)) },
                uniquingKeysWith: { $1 })
        }
        check(
            "partitions whose stored position differs from their record count", 0,
            Int64(Set(perPartition).union(stored.keys).filter { partition in
                (stored[partition] ?? nil) != expectation.recordsPerPartition[partition].map { Int64($0) }
            }.count))
        if tables == .once {
            check(
                "dead letters", 0,
                try count("SELECT count(*) FROM dead_letters WHERE consumer_group = $1", [.text(group)]))
            check(
                "credit conflicts", 0,
                try count("SELECT count(*) FROM credit_conflicts WHERE tenant_id = $1", [.text(tenant)]))
        }
        check(
            outboxRows == nil ? "outbox rows (one per effect)" : "outbox rows", outboxRows ?? expectation.applied,
            try count("SELECT count(*) FROM outbox WHERE tenant_id = $1", [.text(tenant)]))
        return checks
    }
}
