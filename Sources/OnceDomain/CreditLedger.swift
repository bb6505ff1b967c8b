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

/// The command of both credit handlers: a charge (`batch.completed`) or a grant
/// (`credits.granted`), with the topic its outbound event goes to. Sharing it across the two
/// event types lets a partition's consecutive charges and grants reach one handler call, in
/// offset order (`CommandSharedAcrossTypes`), which posts them all with one statement.
public struct CreditPosting: CommandSharedAcrossTypes, Hashable {
    var kind: LedgerKind
    var posting: LedgerPosting
    /// Where the outbound `credits.charged` or `credits.granted` goes.
    var topic: String

    /// The batch id of a charge, the grant id of a grant.
    public var businessKey: String { posting.businessKey }
    public var accountID: String { posting.accountID }
    public var credits: Int64 { posting.credits }
    public var isCharge: Bool { kind == .charge }
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
/// A handler call's postings (one partition's consecutive charges and grants, in offset order)
/// take one round trip when they are all new, and at most three when some business keys were
/// seen:
///
/// 1. one statement inserts the ledger rows of the first posting of each business key
///    (`ON CONFLICT DO NOTHING RETURNING`) and, from exactly the rows inserted, creates or
///    updates the accounts by the sum of their amounts, returning the new balances. The upsert
///    locks each account row and adds to its latest balance, so concurrent partitions
///    touching one account serialise instead of losing an update; ledger keys and accounts are
///    locked in key order, so two transactions over overlapping keys queue instead of
///    deadlocking (a deadlock that still happens across calls, when other event types split a
///    partition's credits into several calls, is transient and retried).
/// 2. for the business keys whose row already existed, the standing row is read back;
/// 3. postings that disagree with the standing row (another account or amount) are recorded
///    in `credit_conflicts` for the audit.
///
/// Each other posting of a business key is then `duplicate` when it matches the standing row,
/// `conflict` when it does not; neither writes to the ledger.
enum CreditLedger {
    private struct Key: Hashable {
        var tenantID: String
        var kind: LedgerKind
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

    /// Posts the inputs and queues one outbound event (`credits.charged` or `credits.granted`,
    /// with the balance right after the posting in offset order) per posting applied.
    static func apply(_ inputs: [HandlerInput<CreditPosting>], in context: HandlerContext) throws -> [EventOutcome] {
        let results = try post(inputs.map { ($0.envelope, $0.command) }, on: context.connection)
        var messages: [OutboxMessage] = []
        for (input, result) in zip(inputs, results) {
            guard result.outcome == .applied, let balanceAfter = result.balanceAfter else { continue }
            let command = input.command
            let charge = command.kind == .charge
            messages.append(
                OutboundEvent(
                    type: charge ? BatchCompletedHandler.chargedType : CreditsGrantedHandler.grantedType,
                    tenantID: input.envelope.tenantID, aggregateID: command.businessKey,
                    topic: command.topic, key: command.accountID, source: input.envelope,
                    data: [
                        charge ? "batch_id" : "grant_id": .string(command.businessKey),
                        "account_id": .string(command.accountID),
                        "credits": .integer(command.credits),
                        "balance_after": .integer(balanceAfter),
                    ]
                ).outboxMessage)
        }
        try context.publish(messages)
        return results.map(\.outcome)
    }

    static func post(
        _ postings: [(envelope: Envelope, command: CreditPosting)], on db: PostgresConnection
    ) throws -> [LedgerResult] {
        // The first posting of each business key is the one that may apply.
        var firstIndex: [Key: Int] = [:]
        for (index, item) in postings.enumerated() where firstIndex[key(item)] == nil {
            firstIndex[key(item)] = index
        }
        let candidates = postings.indices.filter { firstIndex[key(postings[$0])] == $0 }

        // 1. Ledger rows and balances, in one statement.
        let rows = try db.query(
            prepared: "once_credit_post",
            """
            WITH posting AS (
                SELECT * FROM unnest(
                    $1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])
                    AS p(tenant_id, kind, business_key, account_id, credits, amount, event_id, occurred_us)
            ),
            posted AS (
                INSERT INTO credit_ledger
                    (tenant_id, kind, business_key, account_id, credits, amount, event_id, occurred_at)
                SELECT tenant_id, kind, business_key, account_id, credits, amount, event_id,
                       timestamptz 'epoch' + occurred_us * interval '1 microsecond'
                FROM posting
                ORDER BY tenant_id, kind, business_key
                ON CONFLICT (tenant_id, kind, business_key) DO NOTHING
                RETURNING tenant_id, kind, business_key, account_id, amount
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
            SELECT posted.tenant_id, posted.kind, posted.business_key, account.account_id, account.balance
            FROM posted JOIN account USING (tenant_id, account_id)
            """,
            [
                .textArray(candidates.map { postings[$0].envelope.tenantID }),
                .textArray(candidates.map { postings[$0].command.kind.rawValue }),
                .textArray(candidates.map { postings[$0].command.businessKey }),
                .textArray(candidates.map { postings[$0].command.accountID }),
                .int64Array(candidates.map { postings[$0].command.credits }),
                .int64Array(candidates.map { amount(postings[$0].command) }),
                .textArray(candidates.map { postings[$0].envelope.eventID }),
                .int64Array(try candidates.map { try occurredMicroseconds(postings[$0].envelope) }),
            ])
        var applied = Set<Key>()
        var finalBalance: [AccountKey: Int64] = [:]
        for row in rows {
            let tenantID = try row.decode(String.self, column: 0)
            guard let kind = LedgerKind(rawValue: try row.decode(String.self, column: 1)) else { continue }
            applied.insert(Key(tenantID: tenantID, kind: kind, businessKey: try row.decode(String.self, column: 2)))
            finalBalance[AccountKey(tenantID: tenantID, accountID: try row.decode(String.self, column: 3))] =
                try row.decode(Int64.self, column: 4)
        }

        // Balance after each applied posting, in offset order: the balance before this call's
        // postings is the new balance less their sum.
        var running = finalBalance
        for index in candidates.reversed() where applied.contains(key(postings[index])) {
            running[accountKey(postings[index])]! -= amount(postings[index].command)
        }
        var results = [LedgerResult](repeating: LedgerResult(outcome: .duplicate), count: postings.count)
        var standing: [Key: Standing] = [:]
        for index in candidates where applied.contains(key(postings[index])) {
            let (envelope, command) = postings[index]
            let account = accountKey(postings[index])
            running[account]! += amount(command)
            results[index] = LedgerResult(outcome: .applied, balanceAfter: running[account]!)
            standing[key(postings[index])] = Standing(
                accountID: command.accountID, credits: command.credits, eventID: envelope.eventID)
        }

        // 2. The standing rows of business keys seen before this call.
        let seen = candidates.map { key(postings[$0]) }.filter { !applied.contains($0) }
        if !seen.isEmpty {
            let existing = try db.query(
                prepared: "once_credit_standing",
                """
                SELECT l.tenant_id, l.kind, l.business_key, l.account_id, l.credits, l.event_id
                FROM credit_ledger l
                JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, kind, business_key)
                    USING (tenant_id, kind, business_key)
                """,
                [
                    .textArray(seen.map(\.tenantID)), .textArray(seen.map(\.kind.rawValue)),
                    .textArray(seen.map(\.businessKey)),
                ])
            for row in existing {
                guard let kind = LedgerKind(rawValue: try row.decode(String.self, column: 1)) else { continue }
                let key = Key(
                    tenantID: try row.decode(String.self, column: 0), kind: kind,
                    businessKey: try row.decode(String.self, column: 2))
                standing[key] = Standing(
                    accountID: try row.decode(String.self, column: 3), credits: try row.decode(Int64.self, column: 4),
                    eventID: try row.decode(String.self, column: 5))
            }
        }

        // Every posting not applied is compared with what the ledger holds for its key.
        var conflicts: [(index: Int, standing: Standing)] = []
        for index in postings.indices where results[index].outcome != .applied {
            let command = postings[index].command
            guard let held = standing[key(postings[index])] else {
                throw PermanentHandlerError(
                    "credit_ledger has no \(command.kind.rawValue) for business key "
                        + "\(command.businessKey) after a conflicting insert"
                )
            }
            if held.accountID == command.accountID && held.credits == command.credits {
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
                SELECT c.tenant_id, c.kind, c.business_key, c.event_id, c.account_id, c.credits,
                       c.existing_event_id, c.existing_account_id, c.existing_credits
                FROM unnest(
                    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
                    $9::bigint[])
                    AS c(tenant_id, kind, business_key, event_id, account_id, credits,
                         existing_event_id, existing_account_id, existing_credits)
                ON CONFLICT (tenant_id, kind, business_key, event_id) DO NOTHING
                """,
                [
                    .textArray(conflicts.map { postings[$0.index].envelope.tenantID }),
                    .textArray(conflicts.map { postings[$0.index].command.kind.rawValue }),
                    .textArray(conflicts.map { postings[$0.index].command.businessKey }),
                    .textArray(conflicts.map { postings[$0.index].envelope.eventID }),
                    .textArray(conflicts.map { postings[$0.index].command.accountID }),
                    .int64Array(conflicts.map { postings[$0.index].command.credits }),
                    .textArray(conflicts.map(\.standing.eventID)),
                    .textArray(conflicts.map(\.standing.accountID)),
                    .int64Array(conflicts.map(\.standing.credits)),
                ])
        }
        return results
    }

    private static func amount(_ command: CreditPosting) -> Int64 { command.kind.amount(command.credits) }

    private static func key(_ item: (envelope: Envelope, command: CreditPosting)) -> Key {
        Key(tenantID: item.envelope.tenantID, kind: item.command.kind, businessKey: item.command.businessKey)
    }

    private static func accountKey(_ item: (envelope: Envelope, command: CreditPosting)) -> AccountKey {
        AccountKey(tenantID: item.envelope.tenantID, accountID: item.command.accountID)
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
