import OnceCore
import OncePostgres

/// The two kinds of `credit_ledger` row.
enum LedgerKind: String, Sendable {
    case charge
    case grant

    /// The signed ledger amount for `credits`.
    func amount(_ credits: Int64) -> Int64 {
        self == .charge ? -credits : credits
    }
}

/// What one event asks the ledger for: `credits` on `accountID`, once per business key.
struct LedgerPosting: Sendable, Hashable {
    /// The batch id of a charge, the grant id of a grant.
    var businessKey: String
    var accountID: String
    var credits: Int64
}

/// What became of one posting.
struct LedgerResult: Sendable, Hashable {
    var outcome: EventOutcome
    /// The account's balance right after this posting; set when it was applied.
    var balanceAfter: Int64?
}

/// Posts charges and grants exactly once per (tenant, kind, business key), keeping every
/// account's balance equal to the sum of its ledger amounts.
///
/// A handler call's postings (one partition's events of one type, in offset order) take one
/// round trip when they are all new, and at most three when some business keys were seen:
///
/// 1. one statement inserts the ledger rows of the first posting of each business key
///    (`ON CONFLICT DO NOTHING RETURNING`) and, from exactly the rows inserted, creates or
///    updates the accounts by the sum of their amounts, returning the new balances. The upsert
///    locks each account row and adds to its latest balance, so concurrent partitions
///    touching one account serialise instead of losing an update; ledger keys and accounts are
///    locked in key order, so two transactions over overlapping keys queue instead of
///    deadlocking (a deadlock that still happens across calls is transient and retried).
/// 2. for the business keys whose row already existed, the standing row is read back;
/// 3. postings that disagree with the standing row (another account or amount) are recorded
///    in `credit_conflicts` for the audit.
///
/// Each other posting of a business key is then `duplicate` when it matches the standing row,
/// `conflict` when it does not; neither writes to the ledger.
enum CreditLedger {
    private struct Key: Hashable {
        var tenantID: String
        var businessKey: String
    }

    private struct AccountKey: Hashable {
        var tenantID: String
        var accountID: String
    }

    /// The row the ledger holds for a business key.
    private struct Standing {
        var accountID: String
        var credits: Int64
        var eventID: String
    }

    static func post(
        _ postings: [(envelope: Envelope, posting: LedgerPosting)], kind: LedgerKind, on db: PostgresConnection
    ) throws -> [LedgerResult] {
        // The first posting of each business key is the one that may apply.
        var firstIndex: [Key: Int] = [:]
        for (index, item) in postings.enumerated() {
            let key = Key(tenantID: item.envelope.tenantID, businessKey: item.posting.businessKey)
            if firstIndex[key] == nil { firstIndex[key] = index }
        }
        let candidates = postings.indices.filter { firstIndex[key(postings[$0])] == $0 }

        // 1. Ledger rows and balances, in one statement.
        let rows = try db.query(
            """
            WITH posting AS (
                SELECT * FROM unnest(
                    $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])
                    AS p(tenant_id, business_key, account_id, credits, amount, event_id, occurred_us)
            ),
            posted AS (
                INSERT INTO credit_ledger
                    (tenant_id, kind, business_key, account_id, credits, amount, event_id, occurred_at)
                SELECT tenant_id, $1, business_key, account_id, credits, amount, event_id,
                       timestamptz 'epoch' + occurred_us * interval '1 microsecond'
                FROM posting
                ORDER BY tenant_id, business_key
                ON CONFLICT (tenant_id, kind, business_key) DO NOTHING
                RETURNING tenant_id, business_key, account_id, amount
            ),
            account AS (
                INSERT INTO credit_accounts AS a (tenant_id, account_id, balance)
                SELECT tenant_id, account_id, sum(amount) FROM posted
                GROUP BY tenant_id, account_id
                ORDER BY tenant_id, account_id
                ON CONFLICT (tenant_id, account_id)
                    DO UPDATE SET balance = a.balance + excluded.balance, updated_at = now()
                RETURNING tenant_id, account_id, balance
            )
            SELECT posted.tenant_id, posted.business_key, account.account_id, account.balance
            FROM posted JOIN account USING (tenant_id, account_id)
            """,
            [
                .text(kind.rawValue),
                .textArray(candidates.map { postings[$0].envelope.tenantID }),
                .textArray(candidates.map { postings[$0].posting.businessKey }),
                .textArray(candidates.map { postings[$0].posting.accountID }),
                .int64Array(candidates.map { postings[$0].posting.credits }),
                .int64Array(candidates.map { kind.amount(postings[$0].posting.credits) }),
                .textArray(candidates.map { postings[$0].envelope.eventID }),
                .int64Array(try candidates.map { try occurredMicroseconds(postings[$0].envelope) }),
            ])
        var applied = Set<Key>()
        var finalBalance: [AccountKey: Int64] = [:]
        for row in rows {
            let tenantID = try row.decode(String.self, column: 0)
            applied.insert(Key(tenantID: tenantID, businessKey: try row.decode(String.self, column: 1)))
            finalBalance[AccountKey(tenantID: tenantID, accountID: try row.decode(String.self, column: 2))] =
                try row.decode(Int64.self, column: 3)
        }

        // Balance after each applied posting, in offset order: the balance before this call's
        // postings is the new balance less their sum.
        var running = finalBalance
        for index in candidates.reversed() where applied.contains(key(postings[index])) {
            let account = accountKey(postings[index])
            running[account]! -= kind.amount(postings[index].posting.credits)
        }
        var results = [LedgerResult](repeating: LedgerResult(outcome: .duplicate), count: postings.count)
        var standing: [Key: Standing] = [:]
        for index in candidates where applied.contains(key(postings[index])) {
            let (envelope, posting) = postings[index]
            let account = accountKey(postings[index])
            running[account]! += kind.amount(posting.credits)
            results[index] = LedgerResult(outcome: .applied, balanceAfter: running[account]!)
            standing[key(postings[index])] = Standing(
                accountID: posting.accountID, credits: posting.credits, eventID: envelope.eventID)
        }

        // 2. The standing rows of business keys seen before this call.
        let seen = candidates.map { key(postings[$0]) }.filter { !applied.contains($0) }
        if !seen.isEmpty {
            let existing = try db.query(
                """
                SELECT l.tenant_id, l.business_key, l.account_id, l.credits, l.event_id
                FROM credit_ledger l
                JOIN unnest($2::text[], $3::text[]) AS k(tenant_id, business_key) USING (tenant_id, business_key)
                WHERE l.kind = $1
                """,
                [.text(kind.rawValue), .textArray(seen.map(\.tenantID)), .textArray(seen.map(\.businessKey))])
            for row in existing {
                let key = Key(
                    tenantID: try row.decode(String.self, column: 0),
                    businessKey: try row.decode(String.self, column: 1))
                standing[key] = Standing(
                    accountID: try row.decode(String.self, column: 2), credits: try row.decode(Int64.self, column: 3),
                    eventID: try row.decode(String.self, column: 4))
            }
        }

        // Every posting not applied is compared with what the ledger holds for its key.
        var conflicts: [(index: Int, standing: Standing)] = []
        for index in postings.indices where results[index].outcome != .applied {
            guard let held = standing[key(postings[index])] else {
                throw PermanentHandlerError(
                    "credit_ledger has no \(kind.rawValue) for business key "
                        + "\(postings[index].posting.businessKey) after a conflicting insert"
                )
            }
            let posting = postings[index].posting
            if held.accountID == posting.accountID && held.credits == posting.credits {
                results[index] = LedgerResult(outcome: .duplicate)
            } else {
                results[index] = LedgerResult(outcome: .conflict)
                conflicts.append((index, held))
            }
        }

        // 3. Conflicts, kept for the audit (once per emission).
        if !conflicts.isEmpty {
            try db.execute(
                """
                INSERT INTO credit_conflicts
                    (tenant_id, kind, business_key, event_id, account_id, credits,
                     existing_event_id, existing_account_id, existing_credits)
                SELECT c.tenant_id, $1, c.business_key, c.event_id, c.account_id, c.credits,
                       c.existing_event_id, c.existing_account_id, c.existing_credits
                FROM unnest(
                    $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[])
                    AS c(tenant_id, business_key, event_id, account_id, credits,
                         existing_event_id, existing_account_id, existing_credits)
                ON CONFLICT (tenant_id, kind, business_key, event_id) DO NOTHING
                """,
                [
                    .text(kind.rawValue),
                    .textArray(conflicts.map { postings[$0.index].envelope.tenantID }),
                    .textArray(conflicts.map { postings[$0.index].posting.businessKey }),
                    .textArray(conflicts.map { postings[$0.index].envelope.eventID }),
                    .textArray(conflicts.map { postings[$0.index].posting.accountID }),
                    .int64Array(conflicts.map { postings[$0.index].posting.credits }),
                    .textArray(conflicts.map(\.standing.eventID)),
                    .textArray(conflicts.map(\.standing.accountID)),
                    .int64Array(conflicts.map(\.standing.credits)),
                ])
        }
        return results
    }

    private static func key(_ item: (envelope: Envelope, posting: LedgerPosting)) -> Key {
        Key(tenantID: item.envelope.tenantID, businessKey: item.posting.businessKey)
    }

    private static func accountKey(_ item: (envelope: Envelope, posting: LedgerPosting)) -> AccountKey {
        AccountKey(tenantID: item.envelope.tenantID, accountID: item.posting.accountID)
    }
}

/// The source event's `occurred_at` as microseconds since the epoch, for a `timestamptz` column.
func occurredMicroseconds(_ envelope: Envelope) throws -> Int64 {
    // The envelope decoder has checked the grammar already; this only fails if the two disagree.
    guard let micros = Timestamp.microsecondsSinceEpoch(envelope.occurredAt) else {
        throw PermanentHandlerError("occurred_at \(envelope.occurredAt) is not an RFC 3339 timestamp")
    }
    return micros
}
