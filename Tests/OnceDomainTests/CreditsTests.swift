import Dispatch
import OnceDomain
import OnceJSON
import OnceKafka
import OncePipeline
import OncePostgres
import Synchronization
import Testing

@Suite("Credits: completions and grants", .freshDatabase, .serialized, .timeLimit(.minutes(3)))
struct CreditsTests {
    @Test("a completion charges once: one ledger row of -credits, balance lowered, credits.charged out")
    func oneCharge() throws {
        try withHarness { h in
            let value = h.completion(batch: "b-1", account: "acc-1", credits: 40)
            let report = try h.process(value)
            #expect(report[.applied] == 1)
            #expect(try h.balance("acc-1") == -40)

            let ledger = try #require(
                h.db.query(
                    "SELECT kind, business_key, amount, credits, event_id FROM credit_ledger WHERE tenant_id = $1",
                    [.text(h.tenant)]
                ).first)
            #expect(try ledger.decode(String.self, column: 0) == "charge")
            #expect(try ledger.decode(String.self, column: 1) == "b-1")
            #expect(try ledger.decode(Int64.self, column: 2) == -40)
            #expect(try ledger.decode(Int64.self, column: 3) == 40)
            #expect(try ledger.decode(String.self, column: 4) == eventID(of: value))

            // The outbound event: CONTRACT §3, byte for byte.
            let row = try #require(
                h.db.query(
                    """
                    SELECT topic, message_key, payload, (SELECT h->>'value' FROM jsonb_array_elements(headers) h WHERE h->>'name' = 'once-event-id') FROM outbox
                    WHERE tenant_id = $1 AND event_type = 'credits.charged'
                    """,
                    [.text(h.tenant)]
                ).first)
            #expect(try row.decode(String.self, column: 0) == "credit-ledger")
            #expect(try row.decode(String.self, column: 1) == "acc-1")
            let expectedID = Domain.outboundEventID(type: "credits.charged", tenantID: h.tenant, aggregateID: "b-1")
            let expected: JSONValue = [
                "event_id": .string(expectedID), "type": "credits.charged", "version": 1,
                "tenant_id": .string(h.tenant), "occurred_at": "2026-11-22T10:00:00Z",
                "data": ["batch_id": "b-1", "account_id": "acc-1", "credits": 40, "balance_after": -40],
            ]
            #expect(try row.decode([UInt8].self, column: 2) == JSONWriter.serialize(expected))
            #expect(try row.decode(String.self, column: 3) == expectedID)
        }
    }

    @Test("a second completion of the batch with a new event id is a duplicate and charges nothing")
    func secondCompletionDuplicate() throws {
        try withHarness { h in
            try h.process(h.completion(batch: "b-1", account: "acc-1", credits: 40))
            let again = h.completion(batch: "b-1", account: "acc-1", credits: 40)
            let report = try h.process(again)
            #expect(report[.duplicate] == 1 && report[.applied] == 0)
            #expect(try h.outcome(of: eventID(of: again)) == "duplicate")
            #expect(try h.balance("acc-1") == -40)
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
            #expect(try h.scalar("SELECT count(*) FROM credit_conflicts WHERE tenant_id = $1", [.text(h.tenant)]) == 0)
            // The same record delivered again is stopped by its event id.
            #expect(try h.process(again)[.duplicate] == 1)
        }
    }

    @Test("a second completion with other credits or another account is a conflict, recorded, not charged")
    func secondCompletionConflict() throws {
        try withHarness { h in
            let first = h.completion(batch: "b-1", account: "acc-1", credits: 40)
            try h.process(first)
            let moreCredits = h.completion(batch: "b-1", account: "acc-1", credits: 41)
            let otherAccount = h.completion(batch: "b-1", account: "acc-2", credits: 40)
            let report = try h.process([moreCredits, otherAccount])
            #expect(report[.conflict] == 2)
            #expect(try h.outcome(of: eventID(of: moreCredits)) == "conflict")
            #expect(try h.outcome(of: eventID(of: otherAccount)) == "conflict")
            #expect(try h.balance("acc-1") == -40)
            #expect(try h.balance("acc-2") == nil)  // no charge, so no account either
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 1)

            let conflicts = try h.db.query(
                """
                SELECT event_id, account_id, credits, existing_event_id, existing_account_id, existing_credits
                FROM credit_conflicts WHERE tenant_id = $1 AND kind = 'charge' AND business_key = 'b-1'
                ORDER BY credits, account_id
                """, [.text(h.tenant)])
            #expect(conflicts.count == 2)
            let row = try #require(conflicts.first)
            #expect(try row.decode(String.self, column: 0) == eventID(of: otherAccount))
            #expect(try row.decode(String.self, column: 1) == "acc-2")
            #expect(try row.decode(String.self, column: 3) == eventID(of: first))
            #expect(try row.decode(String.self, column: 4) == "acc-1")
            #expect(try row.decode(Int64.self, column: 5) == 40)
            #expect(try conflicts[1].decode(Int64.self, column: 2) == 41)
        }
    }

    @Test("the same batch twice in one handler call: the first applies, the later ones are duplicate or conflict")
    func sameBatchTwiceInOneCall() throws {
        try withHarness { h in
            let first = h.completion(batch: "b-1", account: "acc-1", credits: 10)
            let same = h.completion(batch: "b-1", account: "acc-1", credits: 10)
            let other = h.completion(batch: "b-2", account: "acc-1", credits: 5)
            let different = h.completion(batch: "b-1", account: "acc-1", credits: 11)
            let report = try h.process([first, same, other, different])
            #expect(report[.applied] == 2 && report[.duplicate] == 1 && report[.conflict] == 1)
            #expect(try h.outcome(of: eventID(of: first)) == "applied")
            #expect(try h.outcome(of: eventID(of: same)) == "duplicate")
            #expect(try h.outcome(of: eventID(of: other)) == "applied")
            #expect(try h.outcome(of: eventID(of: different)) == "conflict")
            #expect(try h.balance("acc-1") == -15)
            // balance_after follows offset order within the call.
            let charged = try h.outbox("credits.charged")
            #expect(charged["b-1"]?["data"]?["balance_after"] == -10)
            #expect(charged["b-2"]?["data"]?["balance_after"] == -15)
            #expect(try h.scalar("SELECT count(*) FROM credit_conflicts WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
        }
    }

    @Test("83 completions of one batch, in one call, across calls and redelivered: one charge")
    func eightyThreeCompletions() throws {
        try withHarness { h in
            let values = (0..<83).map { _ in h.completion(batch: "b-83", account: "acc-1", credits: 7) }
            var counts: [EventOutcome: Int] = [:]
            for chunk in [values[0..<40], values[40..<41], values[41..<83]] {
                for (outcome, count) in try h.process(Array(chunk)).counts { counts[outcome, default: 0] += count }
            }
            #expect(counts[.applied] == 1)
            #expect(counts[.duplicate] == 82)
            // A replay of all of them changes nothing.
            #expect(try h.process(values)[.duplicate] == 83)
            #expect(try h.balance("acc-1") == -7)
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 1)
            #expect(try h.outbox("credits.charged").count == 1)
            #expect(
                try h.scalar(
                    "SELECT count(*) FROM processed_messages WHERE tenant_id = $1 AND event_type = 'batch.completed'",
                    [.text(h.tenant)]) == 83)
        }
    }

    @Test("charges may take a balance below zero; zero-credit batches still charge once")
    func negativeAndZero() throws {
        try withHarness { h in
            try h.process([
                h.grant("g-1", account: "acc-1", credits: 100),
                h.completion(batch: "b-1", account: "acc-1", credits: 1_000_000),
                h.completion(batch: "b-0", account: "acc-1", credits: 0),
            ])
            #expect(try h.balance("acc-1") == 100 - 1_000_000)
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 3)
            #expect(try h.outbox("credits.charged")["b-0"]?["data"]?["balance_after"] == .integer(100 - 1_000_000))
        }
    }

    @Test("the same batch id in two tenants is two charges")
    func tenantsAreSeparate() throws {
        try withHarness { h in
            let otherTenant = h.tenant + "-b"
            try h.process([
                h.completion(batch: "b-1", account: "acc-1", credits: 3),
                h.completion(batch: "b-1", account: "acc-1", credits: 3, tenant: otherTenant),
            ])
            #expect(try h.balance("acc-1") == -3)
            #expect(
                try h.scalar(
                    "SELECT balance FROM credit_accounts WHERE tenant_id = $1 AND account_id = 'acc-1'",
                    [.text(otherTenant)])
                    == -3)
        }
    }

    @Test("grants: one grant row per grant id, balance raised, credits.granted out; repeats duplicate or conflict")
    func grants() throws {
        try withHarness { h in
            let first = h.grant("g-1", account: "acc-1", credits: 500)
            let repeated = h.grant("g-1", account: "acc-1", credits: 500)
            let report = try h.process([first, repeated, h.completion(batch: "b-1", account: "acc-1", credits: 120)])
            #expect(report[.applied] == 2 && report[.duplicate] == 1)
            #expect(try h.balance("acc-1") == 380)

            let later = h.grant("g-1", account: "acc-1", credits: 500)
            let changed = h.grant("g-1", account: "acc-1", credits: 900)
            let second = h.grant("g-2", account: "acc-1", credits: 20)
            let next = try h.process([later, changed, second])
            #expect(next[.duplicate] == 1 && next[.conflict] == 1 && next[.applied] == 1)
            #expect(try h.outcome(of: eventID(of: changed)) == "conflict")
            #expect(try h.balance("acc-1") == 400)
            #expect(
                try h.scalar(
                    "SELECT count(*) FROM credit_ledger WHERE tenant_id = $1 AND kind = 'grant'", [.text(h.tenant)])
                    == 2)
            #expect(
                try h.scalar(
                    """
                    SELECT count(*) FROM credit_conflicts
                    WHERE tenant_id = $1 AND kind = 'grant' AND business_key = 'g-1' AND credits = 900
                    """,
                    [.text(h.tenant)]) == 1)

            let granted = try h.outbox("credits.granted")
            #expect(granted.count == 2)
            let expected: JSONValue = [
                "event_id": .string(
                    Domain.outboundEventID(type: "credits.granted", tenantID: h.tenant, aggregateID: "g-2")),
                "type": "credits.granted", "version": 1, "tenant_id": .string(h.tenant),
                "occurred_at": "2026-11-22T10:00:00Z",
                "data": ["grant_id": "g-2", "account_id": "acc-1", "credits": 20, "balance_after": 400],
            ]
            #expect(granted["g-2"] == expected)
            #expect(granted["g-1"]?["data"]?["balance_after"] == 500)
        }
    }

    @Test("a grant id and a batch id that are equal do not collide")
    func kindsAreSeparateKeys() throws {
        try withHarness { h in
            try h.process([
                h.grant("k-1", account: "acc-1", credits: 10), h.completion(batch: "k-1", account: "acc-1", credits: 4),
            ])
            #expect(try h.balance("acc-1") == 6)
        }
    }

    @Test("many accounts and batches in one call keep every balance equal to its ledger")
    func manyAccounts() throws {
        try withHarness { h in
            var values: [[UInt8]] = []
            for index in 0..<300 {
                let account = "acc-\(index % 7)"
                values.append(h.completion(batch: "b-\(index % 250)", account: account, credits: Int64(index % 13)))
                if index % 5 == 0 { values.append(h.grant("g-\(index)", account: account, credits: 50)) }
            }
            let report = try h.process(values)
            #expect(report[.applied] == 250 + 60)
            #expect(report[.duplicate] + report[.conflict] == 50)
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 310)
        }
    }

    @Test("a rebuilt ledger republishes the charge with the same event id and the same bytes")
    func republishIsByteIdentical() throws {
        try withHarness { h in
            func payload() throws -> [UInt8] {
                try #require(
                    h.db.query(
                        "SELECT payload FROM outbox WHERE tenant_id = $1 AND event_type = 'credits.charged'",
                        [.text(h.tenant)]
                    ).first
                ).decode([UInt8].self, column: 0)
            }
            try h.process(h.completion(batch: "b-1", account: "acc-1", credits: 5))
            let first = try payload()
            // Throw the effects away, as a database rebuilt by a replay would not have them, and
            // let another emission of the same completion apply.
            for table in ["outbox", "credit_ledger", "credit_accounts"] {
                try h.db.execute("DELETE FROM \(table) WHERE tenant_id = $1", [.text(h.tenant)])
            }
            #expect(try h.process(h.completion(batch: "b-1", account: "acc-1", credits: 5))[.applied] == 1)
            let second = try payload()
            #expect(first == second)
            #expect(
                try JSONParser.parse(first)["event_id"]?.stringValue
                    == Domain.outboundEventID(type: "credits.charged", tenantID: h.tenant, aggregateID: "b-1"))
        }
    }

    @Test("two partitions charging the same batches and accounts at once: each batch once, balances exact")
    func concurrentPartitions() throws {
        try withHarness { h in
            let url = try #require(TestDatabase.url)
            // Worker 0 completes b-0…b-49; worker 1 completes the same batches in reverse order,
            // plus batches of its own, all on the same five accounts.
            let shared = (0..<50).map { i in (batch: "b-\(i)", account: "acc-\(i % 5)", credits: Int64(i)) }
            let own = (0..<50).map { i in (batch: "c-\(i)", account: "acc-\(i % 5)", credits: Int64(100 + i)) }
            let work: [[[UInt8]]] = [
                shared.map { h.completion(batch: $0.batch, account: $0.account, credits: $0.credits) },
                (shared.reversed() + own).map {
                    h.completion(batch: $0.batch, account: $0.account, credits: $0.credits)
                },
            ]
            let totals = Mutex<[EventOutcome: Int]>([:])
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: work.count) { worker in
                do {
                    let db = try PostgresConnection(url: url)
                    let processor = RecordProcessor(consumerGroup: Harness.consumerGroup, registry: Harness.registry)
                    for (chunkIndex, start) in stride(from: 0, to: work[worker].count, by: 10).enumerated() {
                        let records = work[worker][start..<min(start + 10, work[worker].count)].enumerated().map {
                            KafkaRecord(
                                topic: "concurrent", partition: Int32(worker),
                                offset: Int64(chunkIndex * 10 + $0.offset),
                                key: nil, value: $0.element)
                        }
                        // As the pipeline does: a transient failure (a deadlock) retries the batch.
                        var attempt = 0
                        while true {
                            do {
                                let report = try processor.process(records, on: db)
                                totals.withLock {
                                    for (outcome, count) in report.counts { $0[outcome, default: 0] += count }
                                }
                                break
                            } catch let error as PostgresError where error.isTransient && attempt < 20 {
                                attempt += 1
                            }
                        }
                    }
                } catch {
                    failures.withLock { $0.append("worker \(worker): \(error)") }
                }
            }
            #expect(failures.withLock { $0 } == [])
            let counts = totals.withLock { $0 }
            #expect(counts[.applied] == 100)
            #expect(counts[.duplicate] == 50)
            #expect(try h.scalar("SELECT count(*) FROM credit_ledger WHERE tenant_id = $1", [.text(h.tenant)]) == 100)
            for account in 0..<5 {
                let expected = (shared + own).filter { $0.account == "acc-\(account)" }.reduce(0) { $0 - $1.credits }
                #expect(try h.balance("acc-\(account)") == expected)
            }
        }
    }
}
