import Foundation
import OnceDomain
import OnceKafka
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// Time partitions one second wide, so that boundaries pass and partitions leave the window
/// within a test.
@Suite("Retention: claims in time partitions, pruned whole", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct RetentionTests {
    /// Now as RFC 3339 with milliseconds.
    private func now(plus seconds: Double = 0) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date().addingTimeInterval(seconds))
    }

    /// Waits until the partition interval holding `date` has ended and later partitions exist.
    private func awaitBoundary(after date: Date, _ h: Harness) async throws {
        try await eventually("the one-second partition of \(date) is behind us", timeout: .seconds(10)) {
            Date().timeIntervalSince1970 >= (date.timeIntervalSince1970.rounded(.down) + 1.05)
        }
        try TimePartitions.ensure(on: h.db)
    }

    private func claims(_ h: Harness, _ id: String) throws -> [String] {
        try h.db.query(
            """
            SELECT tableoid::regclass::text FROM processed_messages
            WHERE consumer_group = $1 AND tenant_id = $2 AND event_id = $3
            """, [.text(Harness.consumerGroup), .text(h.tenant), .text(id)]
        ).map { try $0.decode(String.self, column: 0) }
    }

    @Test("a record claimed before a partition boundary and redelivered after it: one claim, one effect")
    func boundary() async throws {
        let h = try Harness()
        try TestPartitions.repartition(h.db, width: "1 second", ahead: 30)
        let occurred = Date()
        let grant = h.event(
            "credits.granted", occurredAt: now(),
            ["grant_id": "g-edge", "account_id": "acct", "credits": 5])
        let id = try eventID(of: grant)
        #expect(try h.process(grant)[.applied] == 1)
        let first = try claims(h, id)
        #expect(first.count == 1)

        try await awaitBoundary(after: occurred, h)
        #expect(try h.process(grant)[.applied] == 0)
        #expect(try claims(h, id) == first, "the redelivery met its claim in the same partition")
        try h.checkInvariants()

        // A producer that re-emits the id with a later time puts its claim in a later
        // partition (a second claim, outcome duplicate); the grant's business key still stops
        // a second effect.
        let reemitted = h.event(
            "credits.granted", id: id, occurredAt: now(),
            ["grant_id": "g-edge", "account_id": "acct", "credits": 5])
        #expect(try h.process(reemitted)[.duplicate] == 1)
        #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
        #expect(try h.balance("acct") == 5)
        let both = try claims(h, id)
        #expect(both.count == 2 && both.contains(first[0]) && Set(both).count == 2)
        let outcomes = try h.db.query(
            "SELECT outcome FROM processed_messages WHERE tenant_id = $1 AND event_id = $2 ORDER BY processed_at",
            [.text(h.tenant), .text(id)]
        ).map { try $0.decode(String.self, column: 0) }
        #expect(outcomes == ["applied", "duplicate"])
    }

    @Test("prune drops whole partitions past the window; business keys, balances and unresolved dead letters stay")
    func prune() async throws {
        let h = try Harness()
        try TestPartitions.repartition(h.db, width: "1 second", ahead: 30)
        let started = Date()
        let events = [
            h.grant("g-1", account: "acct", credits: 100),
            h.event("batch.completed", occurredAt: now(), ["batch_id": "b-1", "account_id": "acct", "credits": 30]),
            h.event("job.requested", occurredAt: now(), [
                "request_id": "r-1", "user_id": "u", "action_code": 1, "action_name": "x", "customer_ids": ["c"],
            ]),
        ]
        let report = try h.process(events + [Array("{poison".utf8)])
        #expect(report[.applied] == 3 && report[.deadLettered] == 1)
        // A second dead letter that gets resolved, in a partition of resolved dead letters.
        try h.process(Array("{poison too".utf8))
        let resolved = try h.scalar("SELECT max(id) FROM dead_letters")
        try h.db.execute(
            """
            UPDATE dead_letters SET resolved_at = now(),
                bucket = (SELECT least(date_bin(width, now(), 'epoch'), newest) FROM once_partitioning)
            WHERE id = $1
            """, [.int64(resolved)])
        let unresolved = try h.scalar("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")
        #expect(unresolved == 1)
        // Every outbox row is published (the relay's floor is past them): their partitions may go.
        try h.db.execute("UPDATE outbox SET published_at = now()")
        try h.db.execute("UPDATE outbox_relay SET floor = (SELECT max(id) + 1 FROM outbox)")

        try await awaitBoundary(after: Date(), h)
        let cutoff = Date().addingTimeInterval(-0.01)
        let planned = try TimePartitions.prunable(before: cutoff, on: h.db)
        #expect(Set(planned.map(\.table)) == ["processed_messages", "outbox", "dead_letters"])
        #expect(!planned.contains { $0.isUnresolvedDeadLetters })
        let dropped = try TimePartitions.prune(before: cutoff, on: h.db)
        #expect(dropped.map(\.name) == planned.map(\.name))
        #expect(try h.scalar("SELECT count(*) FROM once_partitioning WHERE last_prune >= $1", [.timestamptz(cutoff)]) == 1)
        for partition in dropped {
            #expect(try h.scalar("SELECT count(*) FROM once_time_partitions WHERE partition = $1", [.text(partition.name)]) == 0)
            #expect(try h.db.query("SELECT to_regclass($1)::text", [.text(partition.name)])[0].decode(String?.self, column: 0) == nil)
        }
        #expect(try h.scalar("SELECT count(*) FROM processed_messages WHERE processed_at >= $1", [.timestamptz(started)]) == 0)
        #expect(try h.scalar("SELECT count(*) FROM outbox WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
        #expect(try h.scalar("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL") == unresolved)
        #expect(try h.scalar("SELECT count(*) FROM dead_letters WHERE id = $1", [.int64(resolved)]) == 0)

        // A replay of the pruned records: claimed anew, and every one a duplicate of its
        // business key. No second effect, no second outbound event.
        let replay = try h.process(events)
        #expect(replay[.applied] == 0 && replay[.duplicate] == 3)
        #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 2)
        #expect(try h.scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
        #expect(try h.scalar("SELECT count(*) FROM outbox WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
        #expect(try h.balance("acct") == 70)
        let audit = try CreditAudit.run(CreditAudit.Scope(consumerGroup: Harness.consumerGroup, tenantID: h.tenant), on: h.db)
        #expect(audit.isClean)
        #expect(audit.accounts.map(\.balance) == [70])
    }
}
