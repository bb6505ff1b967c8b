import Foundation
import OnceKafka
import OncePipeline
import OncePostgres

/// The database's own ceiling for the workload: the rows a correct run writes (processed ids,
/// ledger rows, account balances, outbox rows, stored positions), written by the server alone
/// with `INSERT … SELECT` over `generate_series`, in transactions of `chunk` records, split
/// over `connections` sessions running in parallel. No Kafka, no client-side work: an upper
/// bound for any consumer of this schema on this machine.
///
/// Each session works on accounts of its own (even and odd), so the sessions never wait for
/// each other's row locks; a consumer's partitions share accounts and may. The outbox payload
/// is JSON of the shape and size `once` writes.
struct CeilingResult: Codable, Sendable {
    var connections: Int
    var chunk: Int
    var transactions: Int
    var records: Int
    var processedRows: Int
    var ledgerRows: Int
    var outboxRows: Int
    var seconds: Double
    var eventsPerSecond: Double
    /// CPU of the bench's sessions (the client), of the PostgreSQL cluster and of the broker
    /// (idle here) while the sessions wrote.
    var cpu: CPUUsage?
    var checks: [Check]
}

enum CeilingStep {
    static func run(
        expectation: Expectation, accounts: Int, chunk: Int, connections: Int, context: BenchContext
    ) async throws -> CeilingResult {
        let database = try await BenchDatabase.fresh(
            "once_bench_ceiling", serverURL: context.serverURL, once: context.once)
        let records = expectation.records
        let processed = expectation.processed
        let ledger = expectation.applied
        let chunks = (records + chunk - 1) / chunk
        let accountsPerSession = max(1, accounts / connections)
        do {
            let db = try database.connect()
            defer { db.close() }
            // The positions, one partition per session, claimed and moved by once's own statements.
            _ = try Chunk.positions.claim(
                (0..<connections).map { TopicPartition("ceiling", Int32($0)) }, owner: "ceiling", on: db)
        }
        let sessions = try await (0..<connections).asyncMap { index in
            try await PostgresSession.connect(
                configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-ceiling-\(index)"),
                threadName: "once-bench-ceiling-\(index)")
        }
        let cpuBefore = context.cpu.sample()
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (session, client) in sessions.enumerated() {
                group.addTask {
                    var fence = PartitionFence(generation: 1, nextOffset: nil)
                    for index in stride(from: session, to: chunks, by: connections) {
                        let work = Chunk(
                            session: session, accountsPerSession: accountsPerSession,
                            records: Int64(min(records, (index + 1) * chunk) - index * chunk),
                            processed: Int64(index * processed / chunks)..<Int64((index + 1) * processed / chunks),
                            ledger: Int64(index * ledger / chunks)..<Int64((index + 1) * ledger / chunks))
                        let before = fence
                        fence = try await client.withConnection { db in try work.write(on: db, after: before) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let seconds = (ContinuousClock.now - started).seconds
        let cpu = CPUProbe.usage(
            from: cpuBefore, to: context.cpu.sample(), client: .bench, clientName: "the bench's sessions",
            records: records)
        for client in sessions { await client.close() }

        let db = try database.connect()
        defer { db.close() }
        func count(_ sql: String) throws -> Int64 { try db.query(sql)[0].decode(Int64?.self, column: 0) ?? 0 }
        let checks = [
            Check(
                name: "processed_messages rows", expected: Int64(processed),
                actual: try count("SELECT count(*) FROM processed_messages")),
            Check(
                name: "ledger rows", expected: Int64(ledger), actual: try count("SELECT count(*) FROM credit_ledger")),
            Check(name: "outbox rows", expected: Int64(ledger), actual: try count("SELECT count(*) FROM outbox")),
            Check(
                name: "accounts whose balance differs from their ledger sum", expected: 0,
                actual: try count(
                    """
                    SELECT count(*) FROM credit_accounts a
                    FULL JOIN (SELECT tenant_id, account_id, sum(amount)::bigint AS total FROM credit_ledger GROUP BY 1, 2) l
                        USING (tenant_id, account_id)
                    WHERE a.balance IS DISTINCT FROM coalesce(l.total, 0)
                    """)),
            Check(
                name: "records below the stored positions", expected: Int64(records),
                actual: try Chunk.positions.recordsBelow(on: db)),
        ]
        return CeilingResult(
            connections: connections, chunk: chunk, transactions: chunks, records: records, processedRows: processed,
            ledgerRows: ledger, outboxRows: ledger, seconds: seconds, eventsPerSecond: Double(records) / seconds,
            cpu: cpu, checks: checks)
    }

    /// One transaction's share: `records` records of which the `processed` range gets
    /// `processed_messages` rows and the `ledger` range ledger, balance and outbox rows.
    struct Chunk: Sendable {
        var session: Int
        var accountsPerSession: Int
        var records: Int64
        var processed: Range<Int64>
        var ledger: Range<Int64>

        static let positions = StoredPositions(consumerGroup: "ceiling")

        /// Writes the chunk's rows in one transaction; returns the session's position after it.
        func write(on db: PostgresConnection, after fence: PartitionFence) throws -> PartitionFence {
            let ledgerBounds: [PostgresValue] = [
                .int64(ledger.lowerBound), .int64(ledger.upperBound - 1), .int(session), .int(accountsPerSession),
            ]
            let next = PartitionFence(generation: fence.generation, nextOffset: (fence.nextOffset ?? 0) + records)
            try db.transaction { tx in
                try Self.positions.advance(
                    TopicPartition("ceiling", Int32(session)), under: fence, to: next.nextOffset!, on: tx)
                try tx.execute(
                    """
                    INSERT INTO processed_messages
                        (consumer_group, event_id, topic, partition, kafka_offset, event_type, tenant_id, outcome, bucket)
                    SELECT 'ceiling', 'ceiling-e' || i, 'ceiling', $3, i,
                           CASE WHEN i % 4 = 3 THEN 'credits.granted' ELSE 'batch.completed' END, 'bench',
                           CASE WHEN i % 5 = 4 THEN 'duplicate' ELSE 'applied' END, w.bucket
                    FROM generate_series($1::bigint, $2::bigint) AS i,
                         (SELECT least(date_bin(width, now(), 'epoch'), newest) AS bucket FROM once_partitioning) AS w
                    """, [.int64(processed.lowerBound), .int64(processed.upperBound - 1), .int(session)])
                // The balances, by the sum of the chunk's amounts (opening the accounts, as once's balance statement does).
                try tx.execute(
                    """
                    INSERT INTO credit_accounts AS a (tenant_id, account_id, balance)
                    SELECT 'bench', 'acct-' || ((j % $4) * 2 + $3),
                           sum(CASE WHEN j % 4 = 3 THEN (j % 5000) + 500 ELSE -((j % 500) + 1) END)
                    FROM generate_series($1::bigint, $2::bigint) AS j
                    GROUP BY 2 ORDER BY 2
                    ON CONFLICT (tenant_id, account_id) DO UPDATE SET balance = a.balance + excluded.balance, updated_at = now()
                    """, ledgerBounds)
                try tx.execute(
                    """
                    INSERT INTO credit_ledger (tenant_id, kind, business_key, account_id, credits, amount, event_id, occurred_at)
                    SELECT 'bench', k.kind, k.kind || '-' || j, 'acct-' || ((j % $4) * 2 + $3), k.credits,
                           CASE k.kind WHEN 'grant' THEN k.credits ELSE -k.credits END, 'ceiling-e' || j, now()
                    FROM generate_series($1::bigint, $2::bigint) AS j,
                         LATERAL (SELECT CASE WHEN j % 4 = 3 THEN 'grant' ELSE 'charge' END AS kind,
                                         CASE WHEN j % 4 = 3 THEN (j % 5000) + 500 ELSE (j % 500) + 1 END AS credits) AS k
                    """, ledgerBounds)
                try tx.execute(
                    """
                    INSERT INTO outbox (bucket, tenant_id, event_type, aggregate_id, topic, message_key, payload, headers)
                    SELECT (SELECT least(date_bin(width, now(), 'epoch'), newest) FROM once_partitioning),
                           'bench', k.type, k.key, 'credit-ledger', k.account,
                           convert_to(json_build_object(
                               'event_id', k.uuid, 'type', k.type, 'version', 1, 'tenant_id', 'bench',
                               'occurred_at', '2026-11-18T10:13:20.000Z',
                               'data', json_build_object(
                                   CASE WHEN j % 4 = 3 THEN 'grant_id' ELSE 'batch_id' END, k.key, 'account_id', k.account,
                                   'credits', (j % 500) + 1, 'balance_after', j))::text, 'UTF8'),
                           jsonb_build_object('once-event-id', k.uuid, 'once-event-type', k.type, 'once-tenant-id', 'bench',
                                              'once-source-event-id', 'ceiling-e' || j)
                    FROM generate_series($1::bigint, $2::bigint) AS j,
                         LATERAL (SELECT CASE WHEN j % 4 = 3 THEN 'credits.granted' ELSE 'credits.charged' END AS type,
                                         CASE WHEN j % 4 = 3 THEN 'grant-' ELSE 'charge-' END || j AS key,
                                         'acct-' || ((j % $4) * 2 + $3) AS account,
                                         md5(j::text)::uuid::text AS uuid) AS k
                    """, ledgerBounds)
            }
            return next
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
