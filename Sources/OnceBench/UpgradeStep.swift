import Foundation
import OnceDomain
import OnceKafka
import OncePostgres
import OnceSchema

/// The upgrade to time partitions, on a database that an older `once` has been writing to.
///
/// No older binary is at hand, so the database is made as one would have left it: the schema
/// of the migrations before time partitions (pipeline 1–3 and the domain's, by `Migrator`) on a
/// fresh database, then, server-side, `rows` processed `credits.granted` events with what they
/// did — the `processed_messages` rows (`applied`, with the topic, partition and offset each
/// record will have), one ledger row per grant and the accounts with balances equal to their
/// ledger sums. The outbox is left empty (those effects were published long ago), and so are the
/// stored positions, as after an operator's reset to the start. Then `once migrate` (timed), the
/// very records produced to a fresh topic, and `once run --until-idle` over all of them: each
/// is a redelivery of an event the old schema recorded, so nothing may be applied again.
struct UpgradeResult: Codable, Sendable {
    var rows: Int
    var accounts: Int
    var topic: String
    var group: String
    /// Making the old schema's rows (and vacuuming them), not timed against anything.
    var generateSeconds: Double
    /// `once migrate`, launch to exit.
    var migrateSeconds: Double
    var migrateSecondsPerMillionRows: Double
    var migrateOutput: String
    var produceSeconds: Double
    var runArguments: [String]
    /// `once run --until-idle 2`, launch to exit (joining and the idle end included).
    var runSeconds: Double
    /// From the first commit seen to the last: the redeliveries' own pace.
    var redeliverySeconds: Double
    var redeliveriesPerSecond: Double
    var checks: [Check]
}

enum UpgradeStep {
    /// The events' `occurred_at`: the workload's fixed instant, so that bytes repeat run to run.
    static let base: Int64 = 1_795_000_000_000

    /// Grant `i`: its account, credits, partition and offset, the same in Swift and in the SQL below.
    static func account(_ i: Int, accounts: Int) -> Int { (i * 7) % accounts }
    static func credits(_ i: Int) -> Int64 { Int64(500 + (i * 7919) % 5000) }

    static func run(
        rows: Int, topic: String, partitions: Int32, accounts: Int, context: BenchContext, log: (String) -> Void
    ) async throws -> UpgradeResult {
        let name = "once_bench_upgrade"
        let group = "bench-\(context.runID)-upgrade"
        let tenant = Workload.tenant
        let partitionCount = Int(partitions)
        log("upgrade: the schema before time partitions, \(rows) processed grants with their effects (server-side)")
        do {
            let admin = try PostgresConnection(url: context.serverURL)
            defer { admin.close() }
            try admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
            try admin.execute("CREATE DATABASE \(name)")
        }
        let database = BenchDatabase(
            name: name, url: try BenchDatabase.replacingDatabase(in: context.serverURL, with: name))
        let generated = ContinuousClock.now
        do {
            let db = try database.connect()
            defer { db.close() }
            try Migrator(migrations: Migration.pipeline.filter { $0.version < 4 } + Domain.migrations).migrate(on: db)
            let bounds: [PostgresValue] = [.text(tenant), .int(rows), .int(accounts), .int64(base)]
            try db.execute(
                """
                INSERT INTO credit_accounts (tenant_id, account_id, balance)
                SELECT $1, 'acct-' || ((i * 7) % $3), sum(500 + (i * 7919) % 5000)
                FROM generate_series(0::bigint, $2 - 1) AS i GROUP BY 2
                """, bounds)
            try db.execute(
                """
                INSERT INTO credit_ledger
                    (tenant_id, account_id, kind, business_key, credits, amount, event_id, occurred_at, recorded_at)
                SELECT $1, 'acct-' || ((i * 7) % $3), 'grant', 'upg-g' || i, c.credits, c.credits, 'upg-e' || i,
                       to_timestamp(($4 + i) / 1000.0), to_timestamp(($4 + i) / 1000.0 + 1)
                FROM generate_series(0::bigint, $2 - 1) AS i, LATERAL (SELECT 500 + (i * 7919) % 5000 AS credits) c
                """, bounds)
            try db.execute(
                """
                INSERT INTO processed_messages
                    (consumer_group, event_id, topic, partition, kafka_offset, event_type, tenant_id, outcome, processed_at)
                SELECT $1, 'upg-e' || i, $2, (i % $3)::integer, i / $3, 'credits.granted', $4, 'applied',
                       to_timestamp(($5 + i) / 1000.0 + 1)
                FROM generate_series(0::bigint, $6 - 1) AS i
                """, [.text(group), .text(topic), .int(partitionCount), .text(tenant), .int64(base), .int(rows)])
            for table in ["processed_messages", "credit_ledger", "credit_accounts"] {
                try db.execute("VACUUM (ANALYZE) \(table)")
            }
            try db.execute("CHECKPOINT")
        }
        let generateSeconds = (ContinuousClock.now - generated).seconds

        // The upgrade.
        let migrateStarted = ContinuousClock.now
        let migrate = try await context.once.run(
            ["migrate", "--database-url", database.url], logName: "upgrade-migrate")
        let migrateSeconds = (ContinuousClock.now - migrateStarted).seconds
        guard migrate.status == 0 else { throw BenchFailure("once migrate (upgrade) failed:\n\(migrate.output)") }
        log("upgrade: once migrate took \(String(format: "%.2f", migrateSeconds)) s for \(rows) processed rows")

        // The same records again, each where its processed row says it was.
        let produceStarted = ContinuousClock.now
        var expectation = Expectation()
        var misplaced = 0
        let producer = try OnceBench.bulkProducer(brokers: context.brokers)
        do {
            for start in stride(from: 0, to: rows, by: 50_000) {
                let indices = start..<min(rows, start + 50_000)
                let records = indices.map { i in
                    let logical = Workload.Logical(
                        kind: .grant, businessKey: "upg-g\(i)", account: account(i, accounts: accounts),
                        credits: credits(i), partition: Int32(i % partitionCount))
                    expectation.records += 1
                    expectation.recordsPerPartition[logical.partition, default: 0] += 1
                    expectation.balances[Workload.accountID(logical.account), default: 0] += logical.amount
                    expectation.ledgerTotal += logical.amount
                    return KafkaOutgoingRecord(
                        topic: topic, partition: logical.partition, key: Array(logical.businessKey.utf8),
                        value: Workload.envelope(
                            eventID: "upg-e\(i)", logical: logical, occurredMilliseconds: base + Int64(i)))
                }
                for (i, result) in zip(indices, try await producer.send(records)) {
                    let report = try result.get()
                    if report.partition != Int32(i % partitionCount) || report.offset != Int64(i / partitionCount) {
                        misplaced += 1
                    }
                }
            }
        } catch {
            await producer.close()
            throw error
        }
        await producer.close()
        expectation.processed = rows
        expectation.applied = rows
        let produceSeconds = (ContinuousClock.now - produceStarted).seconds
        log("upgrade: produced the \(rows) records again to \(topic) in \(String(format: "%.1f", produceSeconds)) s")

        var arguments = [
            "run", "--database-url", database.url, "--brokers", context.brokers, "--topics", topic, "--group", group,
            "--until-idle", "2", "--connections", String(context.connections), "--max-batch",
            String(context.maxBatch),
        ]
        for property in context.kafkaProperties { arguments += ["--kafka-property", property] }
        arguments += RetentionStep.runArguments
        let watch = try await CommitWatch(database: database, group: group, target: rows)
        let launched = ContinuousClock.now
        let child = try context.once.start(arguments, logName: "upgrade-run")
        log("upgrade: once run over every record: pid \(child.pid), log \(child.log.path)")
        guard let status = try await child.wait(timeout: .seconds(900)) else {
            child.signal(SIGKILL)
            await watch.stop()
            throw BenchFailure("once run (upgrade) did not finish within 900 s; log \(child.log.path)")
        }
        let runSeconds = (ContinuousClock.now - launched).seconds
        await watch.stop()
        guard status == 0 else {
            throw BenchFailure("once run (upgrade) exited with status \(status):\n\(child.output.suffix(4000))")
        }
        let seen = watch.observation
        let redeliverySeconds = Double((seen.targetSeen ?? 0) - (seen.firstSeen ?? 0)) / 1e6

        var checks = [
            Check(
                name: "migration 4 applied by once migrate", expected: 1,
                actual: try database.scalar("SELECT count(*) FROM once_schema_migrations WHERE version = 4")),
            Check(
                name: "rows kept in processed_messages_legacy", expected: Int64(rows),
                actual: try database.scalar("SELECT count(*) FROM processed_messages_legacy")),
            Check(
                name: "records produced elsewhere than their processed row says (partition, offset)", expected: 0,
                actual: Int64(misplaced)),
            Check(
                name: "rows claimed after the upgrade", expected: 0,
                actual: try database.scalar("SELECT count(*) FROM processed_messages WHERE bucket <> '-infinity'")),
        ]
        checks += try Checks.consumer(
            database, group: group, tenant: tenant, expectation: expectation, outboxRows: 0)
        return UpgradeResult(
            rows: rows, accounts: accounts, topic: topic, group: group, generateSeconds: generateSeconds,
            migrateSeconds: migrateSeconds, migrateSecondsPerMillionRows: migrateSeconds / (Double(rows) / 1e6),
            migrateOutput: migrate.output.trimmingCharacters(in: .whitespacesAndNewlines),
            produceSeconds: produceSeconds,
            runArguments: arguments, runSeconds: runSeconds, redeliverySeconds: redeliverySeconds,
            redeliveriesPerSecond: redeliverySeconds > 0 ? Double(rows) / redeliverySeconds : 0, checks: checks)
    }
}
