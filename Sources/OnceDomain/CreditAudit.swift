import OnceEnvelope
import OncePostgres

/// The finance audit of the credit tables: what each account was granted and charged, its
/// balance, how many emissions were duplicates, and every anomaly, each found by one query.
///
/// What is counted:
/// - grants and charges: `credit_ledger` rows of each kind (count, and the sum of their
///   `credits`, always positive), recorded at or after `since` when it is given;
/// - `balance`: `credit_accounts.balance` now, whatever `since` says; `ledger_sum`: the sum of
///   all the account's ledger amounts, also over all time (the two must be equal);
/// - duplicates, per tenant and event type: `processed_messages` rows of the consumer group with
///   outcome `duplicate` and type `batch.completed` or `credits.granted`, processed at or after
///   `since`. Each is an emission with a new event id whose batch or grant had already been
///   posted identically. A redelivery of the same event id adds no row and is not counted;
///   `processed_messages` keeps no business key, so duplicates cannot be put on an account;
/// - conflicts: `credit_conflicts` rows (recorded at or after `since`), counted on the account
///   the ledger row belongs to (`existing_account_id`).
///
/// Anomalies (any of them makes the audit fail):
/// - `conflict`: an emission whose account or credits differ from the posting already made for
///   its batch or grant (`credit_conflicts`, recorded at or after `since`);
/// - `negative_balance`: `credit_accounts.balance < 0`, now;
/// - `balance_mismatch`: an account whose balance is not the sum of its ledger amounts (also a
///   ledger whose account row is missing), over all time;
/// - `duplicate_ledger_rows`: a (tenant, kind, business key) with more than one ledger row, over
///   all time (the unique key forbids it; the audit does not take that on trust).
///
/// Everything is read in one read-only repeatable-read transaction: one snapshot, so a running
/// consumer cannot make the figures disagree with each other.
public enum CreditAudit {
    /// What to audit.
    public struct Scope: Sendable, Hashable {
        /// Whose `processed_messages` count as duplicates.
        public var consumerGroup: String
        /// One tenant, or all of them.
        public var tenantID: String?
        /// Microseconds since the epoch; ledger rows, conflicts and duplicates before it are left
        /// out. Balances are always current.
        public var since: Int64?

        public init(consumerGroup: String, tenantID: String? = nil, since: Int64? = nil) {
            self.consumerGroup = consumerGroup
            self.tenantID = tenantID
            self.since = since
        }
    }

    /// An RFC 3339 date-time as microseconds since the epoch (for `Scope.since`), or nil when
    /// `text` is not one. The grammar is the envelope's `occurred_at`.
    public static func instant(_ text: String) -> Int64? {
        Timestamp.microsecondsSinceEpoch(text)
    }

    /// One account's figures.
    public struct Account: Sendable, Hashable {
        public var tenantID: String
        public var accountID: String
        public var grants: Int64
        public var grantedCredits: Int64
        public var charges: Int64
        public var chargedCredits: Int64
        /// `credit_accounts.balance`; 0 when a ledger has no account row (a `balance_mismatch`).
        public var balance: Int64
        /// The sum of all the account's ledger amounts.
        public var ledgerSum: Int64
        /// Conflicting emissions against this account's charges and grants.
        public var conflicts: Int64

        public init(
            tenantID: String, accountID: String, grants: Int64 = 0, grantedCredits: Int64 = 0, charges: Int64 = 0,
            chargedCredits: Int64 = 0, balance: Int64 = 0, ledgerSum: Int64 = 0, conflicts: Int64 = 0
        ) {
            self.tenantID = tenantID
            self.accountID = accountID
            self.grants = grants
            self.grantedCredits = grantedCredits
            self.charges = charges
            self.chargedCredits = chargedCredits
            self.balance = balance
            self.ledgerSum = ledgerSum
            self.conflicts = conflicts
        }
    }

    /// Figures summed over accounts (one tenant's, or all), with the duplicates that belong to
    /// tenants rather than accounts.
    public struct Summary: Sendable, Hashable {
        public var accounts: Int64 = 0
        public var grants: Int64 = 0
        public var grantedCredits: Int64 = 0
        public var charges: Int64 = 0
        public var chargedCredits: Int64 = 0
        public var balance: Int64 = 0
        /// Duplicate `batch.completed` emissions.
        public var duplicateCompletions: Int64 = 0
        /// Duplicate `credits.granted` emissions.
        public var duplicateGrants: Int64 = 0
        public var conflicts: Int64 = 0

        public init() {}

        public var duplicates: Int64 { duplicateCompletions + duplicateGrants }

        mutating func add(_ account: Account) {
            accounts += 1
            grants += account.grants
            grantedCredits += account.grantedCredits
            charges += account.charges
            chargedCredits += account.chargedCredits
            balance += account.balance
            conflicts += account.conflicts
        }

        mutating func add(_ other: Summary) {
            accounts += other.accounts
            grants += other.grants
            grantedCredits += other.grantedCredits
            charges += other.charges
            chargedCredits += other.chargedCredits
            balance += other.balance
            duplicateCompletions += other.duplicateCompletions
            duplicateGrants += other.duplicateGrants
            conflicts += other.conflicts
        }
    }

    /// An emission that disagreed with the posting its batch or grant already had.
    public struct Conflict: Sendable, Hashable {
        public var tenantID: String
        /// `charge` (a `batch.completed`) or `grant` (a `credits.granted`).
        public var kind: String
        public var businessKey: String
        public var eventID: String
        public var accountID: String
        public var credits: Int64
        public var existingEventID: String
        public var existingAccountID: String
        public var existingCredits: Int64
        /// RFC 3339, UTC.
        public var recordedAt: String

        public init(
            tenantID: String, kind: String, businessKey: String, eventID: String, accountID: String, credits: Int64,
            existingEventID: String, existingAccountID: String, existingCredits: Int64, recordedAt: String
        ) {
            self.tenantID = tenantID
            self.kind = kind
            self.businessKey = businessKey
            self.eventID = eventID
            self.accountID = accountID
            self.credits = credits
            self.existingEventID = existingEventID
            self.existingAccountID = existingAccountID
            self.existingCredits = existingCredits
            self.recordedAt = recordedAt
        }
    }

    /// One tenant's summary.
    public struct Tenant: Sendable, Hashable {
        public var tenantID: String
        public var summary: Summary

        public init(tenantID: String, summary: Summary) {
            self.tenantID = tenantID
            self.summary = summary
        }
    }

    /// Something finance must look at.
    public enum Anomaly: Sendable, Hashable {
        case conflict(Conflict)
        case negativeBalance(tenantID: String, accountID: String, balance: Int64)
        /// `balance` is nil when the ledger has rows for an account that has no account row.
        case balanceMismatch(tenantID: String, accountID: String, balance: Int64?, ledgerSum: Int64)
        case duplicateLedgerRows(tenantID: String, kind: String, businessKey: String, eventIDs: [String])

        /// The stable name scripts match on.
        public var code: String {
            switch self {
            case .conflict: return "conflict"
            case .negativeBalance: return "negative_balance"
            case .balanceMismatch: return "balance_mismatch"
            case .duplicateLedgerRows: return "duplicate_ledger_rows"
            }
        }

        public var tenantID: String {
            switch self {
            case .conflict(let conflict): return conflict.tenantID
            case .negativeBalance(let tenantID, _, _), .balanceMismatch(let tenantID, _, _, _),
                .duplicateLedgerRows(let tenantID, _, _, _):
                return tenantID
            }
        }

        /// The account it concerns: for a conflict, the account the ledger row belongs to.
        public var accountID: String? {
            switch self {
            case .conflict(let conflict): return conflict.existingAccountID
            case .negativeBalance(_, let accountID, _), .balanceMismatch(_, let accountID, _, _): return accountID
            case .duplicateLedgerRows: return nil
            }
        }

        /// One line for people, naming what disagrees with what.
        public var summary: String {
            switch self {
            case .conflict(let c):
                let event = c.kind == "charge" ? "completion of batch" : "grant"
                return "\(event) \(c.businessKey): event \(c.eventID) says \(c.accountID) \(c.credits) credits, "
                    + "the ledger has \(c.existingAccountID) \(c.existingCredits) credits from event "
                    + "\(c.existingEventID) (recorded \(c.recordedAt))"
            case .negativeBalance(_, _, let balance):
                return "balance \(balance)"
            case .balanceMismatch(_, _, let balance?, let ledgerSum):
                return "balance \(balance) but the ledger sums to \(ledgerSum) (difference \(balance - ledgerSum))"
            case .balanceMismatch(_, _, nil, let ledgerSum):
                return "no credit_accounts row, but the ledger sums to \(ledgerSum)"
            case .duplicateLedgerRows(_, let kind, let businessKey, let eventIDs):
                return "\(eventIDs.count) \(kind) rows for \(businessKey) (events \(eventIDs.joined(separator: ", ")))"
            }
        }
    }

    /// The audit's result.
    public struct Report: Sendable, Hashable {
        public var scope: Scope
        /// The snapshot's time, RFC 3339 UTC: balances are as of this instant.
        public var asOf: String
        /// `scope.since` as RFC 3339 UTC.
        public var since: String?
        /// Every account in scope, by tenant and account id.
        public var accounts: [Account]
        /// Per tenant, by tenant id: sums of its accounts, and its duplicates.
        public var tenants: [Tenant]
        public var anomalies: [Anomaly]

        /// Sums over every tenant in scope.
        public var totals: Summary {
            tenants.reduce(into: Summary()) { $0.add($1.summary) }
        }

        public var isClean: Bool { anomalies.isEmpty }

        /// The codes of the anomalies concerning one account, in report order, without repeats.
        public func anomalyCodes(tenantID: String, accountID: String) -> [String] {
            var codes: [String] = []
            for anomaly in anomalies where anomaly.tenantID == tenantID && anomaly.accountID == accountID {
                if !codes.contains(anomaly.code) { codes.append(anomaly.code) }
            }
            return codes
        }
    }

    /// Runs the audit on `db` (blocking: call it on the connection's thread).
    public static func run(_ scope: Scope, on db: PostgresConnection) throws -> Report {
        try db.transaction(isolation: .repeatableRead) { tx in
            _ = try tx.execute("SET TRANSACTION READ ONLY")
            return try read(scope, on: tx)
        }
    }

    // MARK: - The queries

    /// `$1` the tenant or NULL, `$2` since (µs) or NULL; `in_window(t)` is the window test.
    private static func window(_ column: String) -> String {
        "($2::bigint IS NULL OR \(column) >= timestamptz 'epoch' + $2::bigint * interval '1 microsecond')"
    }

    private static let tenantFilter = "($1::text IS NULL OR tenant_id = $1::text)"

    /// RFC 3339 UTC text of a `timestamptz`, to the microsecond.
    private static func utc(_ expression: String) -> String {
        "to_char((\(expression)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    }

    /// The same, to the second (for when something happened, not for comparisons).
    private static func utcSeconds(_ expression: String) -> String {
        "to_char((\(expression)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
    }

    private static func read(_ scope: Scope, on db: PostgresConnection) throws -> Report {
        let parameters: [PostgresValue] = [PostgresValue(scope.tenantID), PostgresValue(scope.since)]

        let clock = try db.query(
            "SELECT \(utcSeconds("now()")), \(utc("timestamptz 'epoch' + $1::bigint * interval '1 microsecond'"))",
            [PostgresValue(scope.since)])[0]
        let asOf = try clock.decode(String.self, column: 0)
        let since = try clock.decode(String?.self, column: 1).map(trimMicroseconds)

        // Accounts: ledger figures in the window, the ledger sum over all time, conflicts in the
        // window. A FULL JOIN so that a ledger without its account row still shows up.
        let accountRows = try db.query(
            """
            WITH ledger AS (
                SELECT tenant_id, account_id,
                       count(*) FILTER (WHERE kind = 'grant' AND \(window("recorded_at"))) AS grants,
                       coalesce(sum(credits) FILTER (WHERE kind = 'grant' AND \(window("recorded_at"))), 0) AS granted,
                       count(*) FILTER (WHERE kind = 'charge' AND \(window("recorded_at"))) AS charges,
                       coalesce(sum(credits) FILTER (WHERE kind = 'charge' AND \(window("recorded_at"))), 0) AS charged,
                       sum(amount) AS ledger_sum
                FROM credit_ledger WHERE \(tenantFilter)
                GROUP BY tenant_id, account_id
            ),
            conflicts AS (
                SELECT tenant_id, existing_account_id AS account_id, count(*) AS conflicts
                FROM credit_conflicts WHERE \(tenantFilter) AND \(window("recorded_at"))
                GROUP BY tenant_id, existing_account_id
            ),
            accounts AS (
                SELECT tenant_id, account_id, balance FROM credit_accounts WHERE \(tenantFilter)
            )
            SELECT tenant_id, account_id,
                   coalesce(l.grants, 0), coalesce(l.granted, 0)::bigint,
                   coalesce(l.charges, 0), coalesce(l.charged, 0)::bigint,
                   coalesce(a.balance, 0), coalesce(l.ledger_sum, 0)::bigint, coalesce(c.conflicts, 0)
            FROM accounts a
            FULL JOIN ledger l USING (tenant_id, account_id)
            LEFT JOIN conflicts c USING (tenant_id, account_id)
            ORDER BY tenant_id, account_id
            """,
            parameters)
        var accounts: [Account] = []
        var tenants: [String: Summary] = [:]
        for row in accountRows {
            let account = Account(
                tenantID: try row.decode(String.self, column: 0), accountID: try row.decode(String.self, column: 1),
                grants: try row.decode(Int64.self, column: 2), grantedCredits: try row.decode(Int64.self, column: 3),
                charges: try row.decode(Int64.self, column: 4), chargedCredits: try row.decode(Int64.self, column: 5),
                balance: try row.decode(Int64.self, column: 6), ledgerSum: try row.decode(Int64.self, column: 7),
                conflicts: try row.decode(Int64.self, column: 8))
            accounts.append(account)
            tenants[account.tenantID, default: Summary()].add(account)
        }

        // Duplicates: emissions of the group that found their batch or grant already posted.
        let duplicateRows = try db.query(
            """
            SELECT tenant_id, event_type, count(*) FROM processed_messages
            WHERE consumer_group = $3 AND outcome = 'duplicate' AND event_type IN ($4, $5)
              AND \(tenantFilter) AND \(window("processed_at"))
            GROUP BY tenant_id, event_type
            """,
            parameters + [
                .text(scope.consumerGroup), .text(BatchCompletedHandler.eventType),
                .text(CreditsGrantedHandler.eventType),
            ])
        for row in duplicateRows {
            let tenantID = try row.decode(String.self, column: 0)
            let count = try row.decode(Int64.self, column: 2)
            if try row.decode(String.self, column: 1) == BatchCompletedHandler.eventType {
                tenants[tenantID, default: Summary()].duplicateCompletions += count
            } else {
                tenants[tenantID, default: Summary()].duplicateGrants += count
            }
        }

        var anomalies: [Anomaly] = []

        // conflict: the domain's record of emissions that disagreed with the ledger.
        for row in try db.query(
            """
            SELECT tenant_id, kind, business_key, event_id, account_id, credits,
                   existing_event_id, existing_account_id, existing_credits, \(utcSeconds("recorded_at"))
            FROM credit_conflicts
            WHERE \(tenantFilter) AND \(window("recorded_at"))
            ORDER BY tenant_id, recorded_at, id
            """,
            parameters)
        {
            anomalies.append(
                .conflict(
                    Conflict(
                        tenantID: try row.decode(String.self, column: 0), kind: try row.decode(String.self, column: 1),
                        businessKey: try row.decode(String.self, column: 2),
                        eventID: try row.decode(String.self, column: 3),
                        accountID: try row.decode(String.self, column: 4),
                        credits: try row.decode(Int64.self, column: 5),
                        existingEventID: try row.decode(String.self, column: 6),
                        existingAccountID: try row.decode(String.self, column: 7),
                        existingCredits: try row.decode(Int64.self, column: 8),
                        recordedAt: try row.decode(String.self, column: 9))))
        }

        // negative_balance: now, whatever the window.
        for row in try db.query(
            """
            SELECT tenant_id, account_id, balance FROM credit_accounts
            WHERE balance < 0 AND \(tenantFilter)
            ORDER BY tenant_id, account_id
            """,
            [parameters[0]])
        {
            anomalies.append(
                .negativeBalance(
                    tenantID: try row.decode(String.self, column: 0), accountID: try row.decode(String.self, column: 1),
                    balance: try row.decode(Int64.self, column: 2)))
        }

        // balance_mismatch: the balance against the whole ledger.
        for row in try db.query(
            """
            SELECT tenant_id, account_id, a.balance, coalesce(l.total, 0)::bigint
            FROM (SELECT tenant_id, account_id, balance FROM credit_accounts WHERE \(tenantFilter)) a
            FULL JOIN (
                SELECT tenant_id, account_id, sum(amount) AS total FROM credit_ledger
                WHERE \(tenantFilter) GROUP BY tenant_id, account_id
            ) l USING (tenant_id, account_id)
            WHERE a.balance IS NULL OR a.balance IS DISTINCT FROM coalesce(l.total, 0)
            ORDER BY tenant_id, account_id
            """,
            [parameters[0]])
        {
            anomalies.append(
                .balanceMismatch(
                    tenantID: try row.decode(String.self, column: 0), accountID: try row.decode(String.self, column: 1),
                    balance: try row.decode(Int64?.self, column: 2), ledgerSum: try row.decode(Int64.self, column: 3)))
        }

        // duplicate_ledger_rows: a business key posted more than once.
        for row in try db.query(
            """
            SELECT tenant_id, kind, business_key, array_agg(event_id ORDER BY id)
            FROM credit_ledger WHERE \(tenantFilter)
            GROUP BY tenant_id, kind, business_key HAVING count(*) > 1
            ORDER BY tenant_id, kind, business_key
            """,
            [parameters[0]])
        {
            anomalies.append(
                .duplicateLedgerRows(
                    tenantID: try row.decode(String.self, column: 0), kind: try row.decode(String.self, column: 1),
                    businessKey: try row.decode(String.self, column: 2),
                    eventIDs: try row.decode([String].self, column: 3)))
        }

        return Report(
            scope: scope, asOf: asOf, since: since, accounts: accounts,
            tenants: tenants.map { Tenant(tenantID: $0.key, summary: $0.value) }.sorted { $0.tenantID < $1.tenantID },
            anomalies: anomalies)
    }

    /// `…:05.000000Z` → `…:05Z`; other fractions stay.
    private static func trimMicroseconds(_ text: String) -> String {
        text.hasSuffix(".000000Z") ? String(text.dropLast(8)) + "Z" : text
    }
}
