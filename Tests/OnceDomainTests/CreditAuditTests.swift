import Foundation
import OnceDomain
import OncePostgres
import Testing

private typealias Account = CreditAudit.Account

/// The audit of one harness's tenant, as `once audit credits --tenant` runs it.
private func audit(_ h: Harness, since: Int64? = nil, tenant: String?? = .none) throws -> CreditAudit.Report {
    let scope = CreditAudit.Scope(
        consumerGroup: Harness.consumerGroup, tenantID: tenant ?? h.tenant, since: since)
    return try CreditAudit.run(scope, on: h.db)
}

/// Microseconds since the epoch, `seconds` from now.
private func microsecondsFromNow(_ seconds: Double) -> Int64 {
    Int64((Date().timeIntervalSince1970 + seconds) * 1_000_000)
}

@Suite("Credit audit: clean ledgers", .freshDatabase, .timeLimit(.minutes(3)))
struct CreditAuditCleanTests {
    @Test("grants, charges, balances per account; duplicates per tenant; redeliveries not counted; no anomaly")
    func cleanFigures() throws {
        try withHarness { h in
            let duplicateCompletion = h.completion(batch: "b-1", account: "acc-1", credits: 40)
            try h.process([
                h.grant("g-1", account: "acc-1", credits: 100),
                h.grant("g-2", account: "acc-1", credits: 50),
                h.grant("g-3", account: "acc-2", credits: 10),
                h.completion(batch: "b-1", account: "acc-1", credits: 40),
                h.completion(batch: "b-2", account: "acc-1", credits: 25),
                h.completion(batch: "b-3", account: "acc-2", credits: 10),
            ])
            #expect(try h.process(duplicateCompletion)[.duplicate] == 1)  // a new event id for b-1
            #expect(try h.process(duplicateCompletion)[.duplicate] == 1)  // the same id again: a redelivery
            #expect(try h.process(h.grant("g-1", account: "acc-1", credits: 100))[.duplicate] == 1)

            let report = try audit(h)
            #expect(report.isClean, "\(report.anomalies)")
            #expect(
                report.accounts == [
                    Account(
                        tenantID: h.tenant, accountID: "acc-1", grants: 2, grantedCredits: 150, charges: 2,
                        chargedCredits: 65, balance: 85, ledgerSum: 85),
                    Account(
                        tenantID: h.tenant, accountID: "acc-2", grants: 1, grantedCredits: 10, charges: 1,
                        chargedCredits: 10, balance: 0, ledgerSum: 0),
                ])
            var expected = CreditAudit.Summary()
            expected.accounts = 2
            expected.grants = 3
            expected.grantedCredits = 160
            expected.charges = 3
            expected.chargedCredits = 75
            expected.balance = 85
            expected.duplicateCompletions = 1  // the redelivery left no row
            expected.duplicateGrants = 1
            #expect(report.tenants.map(\.tenantID) == [h.tenant])
            #expect(report.tenants.first?.summary == expected)
            #expect(report.totals == expected)
            #expect(report.since == nil)
        }
    }

    @Test("--since counts ledger rows and duplicates recorded since then; balances stay current")
    func sinceWindow() throws {
        try withHarness { h in
            try h.process([
                h.grant("g-old", account: "acc-1", credits: 100),
                h.completion(batch: "b-old", account: "acc-1", credits: 30),
            ])
            let oldDuplicate = h.completion(batch: "b-old", account: "acc-1", credits: 30)
            try h.process(oldDuplicate)
            // Two days ago, by hand (recorded_at and processed_at are the server's clock).
            try h.db.execute(
                "UPDATE credit_ledger SET recorded_at = now() - interval '2 days' WHERE tenant_id = $1",
                [.text(h.tenant)])
            try h.db.execute(
                "UPDATE processed_messages SET processed_at = now() - interval '2 days' WHERE event_id = $1",
                [.text(try eventID(of: oldDuplicate))])
            try h.process([
                h.completion(batch: "b-new", account: "acc-1", credits: 5),
                h.completion(batch: "b-old", account: "acc-1", credits: 30),  // a recent duplicate
            ])

            let report = try audit(h, since: microsecondsFromNow(-86_400))
            #expect(report.isClean)
            #expect(
                report.accounts == [
                    Account(
                        tenantID: h.tenant, accountID: "acc-1", grants: 0, grantedCredits: 0, charges: 1,
                        chargedCredits: 5, balance: 65, ledgerSum: 65)
                ])
            #expect(report.tenants.first?.summary.duplicateCompletions == 1)
            #expect(report.since?.hasSuffix("Z") == true)

            // A window that starts in the future: nothing happened in it, the balance is still now's.
            let future = try audit(h, since: microsecondsFromNow(3600))
            #expect(
                future.accounts == [Account(tenantID: h.tenant, accountID: "acc-1", balance: 65, ledgerSum: 65)])
            #expect(future.totals.duplicates == 0)

            let whole = try audit(h)
            #expect(whole.accounts.first?.charges == 2)
            #expect(whole.accounts.first?.grants == 1)
            #expect(whole.totals.duplicateCompletions == 2)
        }
    }

    @Test("a tenant's audit holds only its accounts; without a tenant every tenant is listed")
    func tenantScope() throws {
        try withHarness { h in
            let other = h.tenant + "-other"
            try h.process([
                h.grant("g-1", account: "acc-1", credits: 10),
                h.completion(batch: "b-1", account: "acc-9", credits: 0, tenant: other),
            ])
            let mine = try audit(h)
            #expect(mine.accounts.map(\.accountID) == ["acc-1"])
            let all = try audit(h, tenant: .some(nil))
            #expect(Set(all.tenants.map(\.tenantID)).isSuperset(of: [h.tenant, other]))
            #expect(all.accounts.contains { $0.tenantID == other && $0.accountID == "acc-9" && $0.charges == 1 })
        }
    }
}

/// Anomalies made by the handlers or by hand. No invariant check here: breaking them is the point.
@Suite("Credit audit: anomalies", .freshDatabase, .timeLimit(.minutes(3)))
struct CreditAuditAnomalyTests {
    @Test("a conflicting completion is listed with both sides, and counted on the charged account")
    func conflicts() throws {
        let h = try Harness()
        try h.process(h.grant("g-1", account: "acc-1", credits: 100))
        let first = h.completion(batch: "b-1", account: "acc-1", credits: 40)
        try h.process(first)
        let moreCredits = h.completion(batch: "b-1", account: "acc-1", credits: 41)
        let otherAccount = h.completion(batch: "b-1", account: "acc-2", credits: 40)
        #expect(try h.process([moreCredits, otherAccount])[.conflict] == 2)

        let report = try audit(h)
        #expect(!report.isClean)
        let conflicts = report.anomalies.compactMap { anomaly -> CreditAudit.Conflict? in
            if case .conflict(let conflict) = anomaly { return conflict } else { return nil }
        }
        #expect(report.anomalies.count == 2)
        #expect(Set(conflicts.map(\.eventID)) == [try eventID(of: moreCredits), try eventID(of: otherAccount)])
        for conflict in conflicts {
            #expect(conflict.kind == "charge" && conflict.businessKey == "b-1")
            #expect(conflict.existingEventID == (try eventID(of: first)))
            #expect(conflict.existingAccountID == "acc-1" && conflict.existingCredits == 40)
        }
        #expect(conflicts.contains { $0.accountID == "acc-1" && $0.credits == 41 })
        #expect(conflicts.contains { $0.accountID == "acc-2" && $0.credits == 40 })
        #expect(report.accounts.map(\.conflicts) == [2])  // acc-2 was never charged: no account
        #expect(report.anomalyCodes(tenantID: h.tenant, accountID: "acc-1") == ["conflict"])
        #expect(report.totals.conflicts == 2)
        #expect(report.anomalies.allSatisfy { $0.summary.contains("b-1") })

        // Conflicts are windowed like the ledger.
        #expect(try audit(h, since: microsecondsFromNow(3600)).isClean)
    }

    @Test("a charge beyond the balance is a negative balance, now and whatever the window")
    func negativeBalance() throws {
        let h = try Harness()
        try h.process(h.completion(batch: "b-1", account: "acc-1", credits: 30))
        let expected = CreditAudit.Anomaly.negativeBalance(tenantID: h.tenant, accountID: "acc-1", balance: -30)
        #expect(try audit(h).anomalies == [expected])
        #expect(try audit(h, since: microsecondsFromNow(3600)).anomalies == [expected])
    }

    @Test("a balance changed by hand no longer matches the ledger")
    func balanceMismatch() throws {
        let h = try Harness()
        try h.process([
            h.grant("g-1", account: "acc-1", credits: 100), h.completion(batch: "b-1", account: "acc-1", credits: 40),
        ])
        try h.db.execute(
            "UPDATE credit_accounts SET balance = 999 WHERE tenant_id = $1 AND account_id = 'acc-1'", [.text(h.tenant)])
        let report = try audit(h)
        #expect(
            report.anomalies == [
                .balanceMismatch(tenantID: h.tenant, accountID: "acc-1", balance: 999, ledgerSum: 60)
            ])
        #expect(report.accounts.first?.balance == 999 && report.accounts.first?.ledgerSum == 60)
        #expect(report.anomalies.first?.summary == "balance 999 but the ledger sums to 60 (difference 939)")
    }
}

/// With the ledger's unique key and foreign key dropped, what they normally forbid is found.
@Suite("Credit audit: a ledger without its constraints", .freshDatabase, .timeLimit(.minutes(3)))
struct CreditAuditUnconstrainedTests {
    @Test("two ledger rows for one business key, and a ledger without its account row")
    func duplicateLedgerRows() throws {
        let h = try Harness()
        let grant = h.grant("g-1", account: "acc-1", credits: 100)
        try h.process(grant)
        try h.db.execute(
            """
            DO $$
            DECLARE c record;
            BEGIN
                FOR c IN SELECT conname FROM pg_constraint
                         WHERE conrelid = 'credit_ledger'::regclass AND contype IN ('u', 'f') LOOP
                    EXECUTE format('ALTER TABLE credit_ledger DROP CONSTRAINT %I', c.conname);
                END LOOP;
            END $$
            """)
        try h.db.execute(
            """
            INSERT INTO credit_ledger
                (tenant_id, account_id, kind, business_key, credits, amount, event_id, occurred_at)
            VALUES ($1, 'acc-1', 'grant', 'g-1', 100, 100, 'ev-by-hand', now()),
                   ($1, 'ghost', 'charge', 'b-9', 5, -5, 'ev-ghost', now()),
                   ($1, 'zero', 'grant', 'g-0', 0, 0, 'ev-zero', now())
            """, [.text(h.tenant)])

        let report = try audit(h)
        #expect(
            report.anomalies == [
                .balanceMismatch(tenantID: h.tenant, accountID: "acc-1", balance: 100, ledgerSum: 200),
                .balanceMismatch(tenantID: h.tenant, accountID: "ghost", balance: nil, ledgerSum: -5),
                // A ledger without its account is found even when its rows sum to nothing.
                .balanceMismatch(tenantID: h.tenant, accountID: "zero", balance: nil, ledgerSum: 0),
                .duplicateLedgerRows(
                    tenantID: h.tenant, kind: "grant", businessKey: "g-1",
                    eventIDs: [try eventID(of: grant), "ev-by-hand"]),
            ])
        #expect(report.accounts.map(\.accountID) == ["acc-1", "ghost", "zero"])
        #expect(report.accounts[1].balance == 0 && report.accounts[1].charges == 1)
        #expect(report.anomalies.map(\.code) == ["balance_mismatch", "balance_mismatch", "balance_mismatch", "duplicate_ledger_rows"])
    }
}

@Suite("Credit audit: values")
struct CreditAuditValueTests {
    @Test("--since takes RFC 3339 date-times, offsets included, and nothing else")
    func instants() {
        #expect(CreditAudit.instant("1970-01-01T00:00:01Z") == 1_000_000)
        #expect(CreditAudit.instant("1970-01-01T01:00:00+01:00") == 0)
        #expect(CreditAudit.instant("2026-11-22T10:00:00.5Z") == CreditAudit.instant("2026-11-22T10:00:00Z")! + 500_000)
        for text in ["yesterday", "2026-11-22", "2026-11-22 10:00:00", "2026-13-01T00:00:00Z", ""] {
            #expect(CreditAudit.instant(text) == nil, "\(text)")
        }
    }

    @Test("anomaly codes, accounts and summaries")
    func anomalies() {
        let conflict = CreditAudit.Anomaly.conflict(
            CreditAudit.Conflict(
                tenantID: "t", kind: "grant", businessKey: "g-1", eventID: "e2", accountID: "a-2", credits: 5,
                existingEventID: "e1", existingAccountID: "a-1", existingCredits: 7, recordedAt: "2026-11-22T10:00:00Z")
        )
        #expect(conflict.code == "conflict" && conflict.accountID == "a-1")
        #expect(
            conflict.summary
                == "grant g-1: event e2 says a-2 5 credits, the ledger has a-1 7 credits from event e1 "
                + "(recorded 2026-11-22T10:00:00Z)")
        let rows = CreditAudit.Anomaly.duplicateLedgerRows(
            tenantID: "t", kind: "charge", businessKey: "b", eventIDs: ["x", "y"])
        #expect(rows.code == "duplicate_ledger_rows" && rows.accountID == nil)
        #expect(rows.summary == "2 charge rows for b (events x, y)")
        #expect(
            CreditAudit.Anomaly.negativeBalance(tenantID: "t", accountID: "a", balance: -1).code == "negative_balance")
        let missing = CreditAudit.Anomaly.balanceMismatch(tenantID: "t", accountID: "a", balance: nil, ledgerSum: 3)
        #expect(missing.summary == "no credit_accounts row, but the ledger sums to 3")
    }
}
