import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OncePipeline
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// Migration 4 on a populated database: the history made under the old key (group, event id)
/// keeps every record it has seen from applying again. The bench's upgrade step does the same
/// with a million rows; this is its small copy for every test run.
@Suite("Upgrade to per-tenant dedup and time partitions", .timeLimit(.minutes(3)))
struct UpgradeTests {
    static let rows = 20_000
    static let group = "once-upgrade-test"
    static let tenant = "acme"
    static let topic = "upgrade-events"

    private func grant(_ index: Int, tenant: String = UpgradeTests.tenant) -> KafkaRecord {
        let value = JSONWriter.serialize(
            .object([
                "event_id": .string("up-\(index)"), "type": "credits.granted", "version": 1,
                "tenant_id": .string(tenant), "occurred_at": "2026-11-20T08:00:00Z",
                "data": .object([
                    "grant_id": .string("grant-\(index)"), "account_id": "acct", "credits": 1,
                ]),
            ]))
        return KafkaRecord(topic: Self.topic, partition: 0, offset: Int64(index), key: nil, value: value)
    }

    @Test("a database of the old schema with 20,000 processed grants upgrades, and none of them applies again")
    func upgradeKeepsHistory() async throws {
        let old = Migration.pipeline.filter { $0.version < 4 } + Domain.migrations
        let database = try await OnceTestSupport.TestDatabase.create(migrations: old)
        defer { database.drop() }
        let db = try database.connect()
        defer { db.close() }
        #expect(try db.query("SELECT to_regclass('once_partitioning')")[0].decode(String?.self, column: 0) == nil)

        // What the old version wrote for the grants, made server-side.
        let bounds: [PostgresValue] = [.int(Self.rows - 1), .text(Self.group), .text(Self.tenant), .text(Self.topic)]
        try db.execute(
            """
            INSERT INTO processed_messages (consumer_group, event_id, topic, partition, kafka_offset, event_type, tenant_id, outcome)
            SELECT $2, 'up-' || i, $4, 0, i, 'credits.granted', $3, 'applied' FROM generate_series(0, $1::integer) i
            """, bounds)
        try db.execute(
            "INSERT INTO credit_accounts (tenant_id, account_id, balance) VALUES ($1, 'acct', $2)",
            [.text(Self.tenant), .int(Self.rows)])
        try db.execute(
            """
            INSERT INTO credit_ledger (tenant_id, account_id, kind, business_key, credits, amount, event_id, occurred_at)
            SELECT $3, 'acct', 'grant', 'grant-' || i, 1, 1, 'up-' || i, '2026-11-20T08:00:00Z'
            FROM generate_series(0, $1::integer) i
            """, [.int(Self.rows - 1), .text(Self.group), .text(Self.tenant)])

        // A dead letter retried before the upgrade, and one still waiting.
        try db.execute(
            """
            INSERT INTO dead_letters (consumer_group, topic, partition, kafka_offset, event_id, reason_code, error, resolved_at)
            VALUES ($1, $2, 0, 1, 'dl-1', 'handler_failed', 'x', now()), ($1, $2, 0, 2, 'dl-2', 'handler_failed', 'y', NULL)
            """, [.text(Self.group), .text(Self.topic)])

        #expect(
            try Migrator(migrations: Migration.pipeline + Domain.migrations).migrate(on: db) == [4, 5, 6, 7, 8],
            "the upgrade to time partitions, least privilege, resolutions and replays, the relay's floor, full pages")
        #expect(
            try db.query("SELECT event_id, resolution FROM dead_letters ORDER BY id").map {
                [try $0.decode(String.self, column: 0), try $0.decode(String?.self, column: 1) ?? "-"]
            } == [["dl-1", "retried"], ["dl-2", "-"]], "the old resolution was a retry; the waiting one stays unresolved")
        #expect(
            try db.query("SELECT count(*) FROM processed_messages WHERE bucket = '-infinity'")[0].decode(Int64.self, column: 0)
                == Int64(Self.rows), "the history is the legacy partition, whole")

        // Every record again, as a replay or a redelivery after the upgrade would bring it.
        let processor = RecordProcessor(consumerGroup: Self.group, registry: Harness.registry)
        var report = ProcessReport()
        for start in stride(from: 0, to: Self.rows, by: 2000) {
            report.add(try processor.process((start..<min(start + 2000, Self.rows)).map { grant($0) }, on: db))
        }
        #expect(report[.applied] == 0)
        #expect(report[.duplicate] == Self.rows, "each found as already processed")
        #expect(try db.query("SELECT count(*) FROM processed_messages")[0].decode(Int64.self, column: 0) == Int64(Self.rows))
        #expect(try db.query("SELECT count(*) FROM credit_ledger")[0].decode(Int64.self, column: 0) == Int64(Self.rows))
        #expect(try db.query("SELECT balance FROM credit_accounts")[0].decode(Int64.self, column: 0) == Int64(Self.rows))
        #expect(try db.query("SELECT count(*) FROM outbox")[0].decode(Int64.self, column: 0) == 0)

        // The same id in another tenant is another event: the old key would have dropped it.
        let other = try processor.process([grant(0, tenant: "globex")], on: db)
        #expect(other[.applied] == 1)
        #expect(try db.query("SELECT count(*) FROM credit_ledger WHERE tenant_id = 'globex'")[0].decode(Int64.self, column: 0) == 1)
    }
}
