import OnceEnvelope
import OnceOutbox
import OncePipeline
import OncePostgres

/// What one event asks the ledger for: `credits` on `accountID`, once per business key.
struct LedgerPosting: Sendable, Hashable {
    /// The batch id of a charge, the grant id of a grant.
    var businessKey: String
    var accountID: String
    var credits: Int64
}

/// The command of `CreditEventHandler`, whichever its event type: a charge (`batch.completed`)
/// or a grant (`credits.granted`), with the topic its outbound event goes to. Sharing it across
/// the two event types lets a partition's consecutive charges and grants reach one handler
/// call, in offset order (`CommandSharedAcrossTypes`), which posts them all with one statement.
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

/// Posts charges and grants exactly once per (tenant, kind, business key), keeping every
/// account's balance equal to the sum of its ledger amounts.
///
/// A handler call's postings (consecutive charges and grants of the batch, each partition's in
/// offset order) take two round trips when they are all new, and up to four when some business
/// keys were seen:
///
/// 1. one statement inserts the ledger rows of the first posting of each business key
///    (`ON CONFLICT DO NOTHING RETURNING`). It touches no account: other partitions'
///    transactions on the same accounts go on meanwhile;
/// 2. for the business keys whose row already existed, the standing row is read back;
/// 3. postings that disagree with the standing row (another account or amount) are recorded
///    in `credit_conflicts` for the audit;
/// 4. at the end of the transaction (`HandlerContext.atCommit`), one statement adds the
///    applied amounts to the balances (opening the accounts not there yet) and returns them,
///    and the outbound events, built beforehand but for each posting's balance right after it
///    in offset order, are queued.
///    The balance update locks each account row until the commit that follows, so concurrent
///    partitions touching one account take turns there, and only there; accounts are locked in
///    key order, so two transactions over overlapping accounts queue instead of deadlocking (a
///    deadlock that still happens is transient and retried).
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

    /// Posts the inputs; at the commit, moves the balances and queues one outbound event
    /// (`credits.charged` or `credits.granted`, with the balance right after the posting in
    /// offset order) per posting applied.
    static func apply(_ inputs: [HandlerInput<CreditPosting>], in context: HandlerContext) throws -> [EventOutcome] {
        let outcomes = try post(inputs.map { ($0.envelope, $0.command) }, on: context.connection)
        var applied: [(account: AccountKey, amount: Int64, event: PendingBalanceEvent)] = []
        for (input, outcome) in zip(inputs, outcomes) where outcome == .applied {
            let command = input.command
            let event = OutboundEvent(
                type: command.kind.postedType,
                tenantID: input.envelope.tenantID, aggregateID: command.businessKey,
                topic: command.topic, key: command.accountID, source: input.envelope, traceHeaders: input.traceHeaders,
                data: [
                    command.kind.businessKeyField: .string(command.businessKey),
                    "account_id": .string(command.accountID),
                    "credits": .integer(command.credits),
                ])
            applied.append((
                AccountKey(tenantID: input.envelope.tenantID, accountID: command.accountID),
                amount(command), PendingBalanceEvent(event)
            ))
        }
        guard !applied.isEmpty else { return outcomes }
        try context.atCommit { context in
            // 4. The balances, then the balance right after each posting, in offset order: the
            //    balance before this call's postings is the new balance less their sum.
            var running = try moveBalances(applied.map { ($0.account, $0.amount) }, on: context.connection)
            for item in applied.reversed() { running[item.account]! -= item.amount }
            var messages: [OutboxMessage] = []
            messages.reserveCapacity(applied.count)
            for item in applied {
                running[item.account]! += item.amount
                messages.append(item.event.message(balanceAfter: running[item.account]!))
            }
            try context.publish(messages)
        }
        return outcomes
    }

    /// Adds each account's amounts to its balance (locking the account rows, in key order);
    /// returns the new balances.
    private static func moveBalances(_ amounts: [(AccountKey, Int64)], on db: PostgresConnection) throws -> [AccountKey: Int64] {
        var total: [AccountKey: Int64] = [:]
        for (account, amount) in amounts { total[account, default: 0] += amount }
        let accounts = Array(total.keys)
        let rows = try db.query(
            prepared: "once_credit_balances",
            """
            INSERT INTO credit_accounts AS a (tenant_id, account_id, balance)
            SELECT tenant_id, account_id, amount FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(tenant_id, account_id, amount)
            ORDER BY tenant_id, account_id
            ON CONFLICT (tenant_id, account_id) DO UPDATE SET balance = a.balance + excluded.balance, updated_at = now()
            RETURNING tenant_id, account_id, balance
            """,
            [
                .textArray(accounts.map(\.tenantID)), .textArray(accounts.map(\.accountID)),
                .int64Array(accounts.map { total[$0]! }),
            ])
        var balances: [AccountKey: Int64] = [:]
        for row in rows {
            balances[AccountKey(tenantID: try row.decode(String.self, column: 0), accountID: try row.decode(String.self, column: 1))] =
                try row.decode(Int64.self, column: 2)
        }
        return balances
    }

    /// One outcome per posting: `applied` for the first posting of each business key the ledger
    /// did not hold, `duplicate` or `conflict` for the others.
    static func post(
        _ postings: [(envelope: Envelope, command: CreditPosting)], on db: PostgresConnection
    ) throws -> [EventOutcome] {
        // The first posting of each business key is the one that may apply.
        let byKey = FirstPerBusinessKey(postings, key: key)
        let candidates = byKey.firsts

        // 1. The ledger rows. No account is read, locked or written here: the balance
        //    statement at the commit opens the accounts that do not exist yet.
        let rows = try db.query(
            prepared: "once_credit_post",
            """
            INSERT INTO credit_ledger
                (tenant_id, kind, business_key, account_id, credits, amount, event_id, occurred_at)
            SELECT tenant_id, kind, business_key, account_id, credits, amount, event_id,
                   timestamptz 'epoch' + occurred_us * interval '1 microsecond'
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[])
                AS p(tenant_id, kind, business_key, account_id, credits, amount, event_id, occurred_us)
            ORDER BY tenant_id, kind, business_key
            ON CONFLICT (tenant_id, kind, business_key) DO NOTHING
            RETURNING tenant_id, kind, business_key
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
        for row in rows {
            guard let kind = LedgerKind(rawValue: try row.decode(String.self, column: 1)) else { continue }
            applied.insert(
                Key(tenantID: try row.decode(String.self, column: 0), kind: kind, businessKey: try row.decode(String.self, column: 2)))
        }

        // 2. The standing rows of business keys seen before this call.
        var existing: [Key: Standing] = [:]
        let seen = byKey.seenBefore(inserted: applied)
        if !seen.isEmpty {
            let held = try db.query(
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
            for row in held {
                guard let kind = LedgerKind(rawValue: try row.decode(String.self, column: 1)) else { continue }
                let key = Key(
                    tenantID: try row.decode(String.self, column: 0), kind: kind,
                    businessKey: try row.decode(String.self, column: 2))
                existing[key] = Standing(
                    accountID: try row.decode(String.self, column: 3), credits: try row.decode(Int64.self, column: 4),
                    eventID: try row.decode(String.self, column: 5))
            }
        }

        // Every posting not applied is compared with what the ledger holds for its key.
        let settled = try byKey.settle(
            inserted: applied,
            written: { index in
                Standing(
                    accountID: postings[index].command.accountID, credits: postings[index].command.credits,
                    eventID: postings[index].envelope.eventID)
            },
            existing: existing,
            same: { index, held in
                held.accountID == postings[index].command.accountID && held.credits == postings[index].command.credits
            },
            missing: { index in
                let command = postings[index].command
                return PermanentHandlerError(
                    "credit_ledger has no \(command.kind.rawValue) for business key "
                        + "\(command.businessKey) after a conflicting insert")
            })
        let conflicts = settled.conflicts

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
                    .textArray(conflicts.map(\.held.eventID)),
                    .textArray(conflicts.map(\.held.accountID)),
                    .int64Array(conflicts.map(\.held.credits)),
                ])
        }
        return settled.outcomes
    }

    private static func amount(_ command: CreditPosting) -> Int64 { command.kind.amount(command.credits) }

    private static func key(_ item: (envelope: Envelope, command: CreditPosting)) -> Key {
        Key(tenantID: item.envelope.tenantID, kind: item.command.kind, businessKey: item.command.businessKey)
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
