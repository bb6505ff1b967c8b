import ArgumentParser
import Logging
import OnceDomain
import OnceJSON
import OncePostgres

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Audit the effects finance relies on, and that every record was processed.",
        subcommands: [AuditCredits.self, AuditCoverage.self])
}

/// How `once audit credits` prints its report.
enum AuditFormat: String, ExpressibleByArgument, CaseIterable {
    case table
    case json
    case csv
}

struct AuditCredits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credits",
        abstract: "Grants, charges, balances and duplicates per tenant and account, and every anomaly.",
        discussion: """
            What is counted, per tenant and account:
              grants, granted_credits   ledger rows of kind grant: count, sum of credits
              charges, charged_credits  ledger rows of kind charge: count, sum of credits
              balance                   credit_accounts.balance, always current
              ledger_sum                sum of all the account's ledger amounts
              conflicts                 conflicting emissions for the account's batches
                                        and grants (credit_conflicts)
            and per tenant:
              duplicate_completions     processed_messages rows of the group (--group)
              duplicate_grants          with outcome duplicate, of type batch.completed
                                        or credits.granted: emissions under a new event
                                        id of a batch or grant already posted the same
                                        way. A redelivered event id leaves no row and
                                        is not counted. processed_messages keeps no
                                        business key, so these are not per account.
                                        They cover the retention window only: older
                                        claims are pruned (the ledger is never).

            Anomalies, each found by its own query:
              conflict               a completion or grant whose account or credits
                                     differ from the posting already made for its
                                     batch or grant (credit_conflicts)
              negative_balance       credit_accounts.balance < 0
              balance_mismatch       balance <> the sum of the account's ledger rows
              duplicate_ledger_rows  more than one ledger row for one tenant, kind
                                     and business key

            --since TIME counts only ledger rows and conflicts recorded, and
            duplicates processed, at or after TIME (RFC 3339). Balances, ledger
            sums, negative balances, mismatches and duplicate ledger rows are
            over everything, as of now. Every account in scope is listed.

            Formats:
              table  accounts; per-tenant subtotals and a TOTAL line; then
                     "Anomalies: none" or one line per anomaly
              json   one object: as_of, consumer_group, tenant_id, since,
                     accounts, tenants, anomalies, totals, clean
              csv    three sections, each a header row and its rows, separated
                     by an empty line: accounts (its anomalies column joins the
                     account's anomaly codes with ';'), tenants, anomalies

            Exit status: 0 no anomaly; 3 one or more anomalies; 1 an error
            (database unreachable, schema missing); 64 a usage error.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Only this tenant.")
    var tenant: String?

    @Option(help: "Count only what was recorded at or after this RFC 3339 time (balances stay current).")
    var since: String?

    @Option(help: "table, json or csv.")
    var format: AuditFormat = .table

    func validate() throws {
        if let tenant, !Self.isTenantID(tenant) {
            throw ValidationError("--tenant: `\(tenant)` is not a tenant id (1 to 64 of A-Z a-z 0-9 . _ -)")
        }
        if let since, CreditAudit.instant(since) == nil {
            throw ValidationError("--since: `\(since)` is not an RFC 3339 time such as 2026-11-22T00:00:00Z")
        }
    }

    static func isTenantID(_ text: String) -> Bool {
        (1...64).contains(text.utf8.count)
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                    return true
                default:
                    return false
                }
            }
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.makeLogger()
        let url = try settings.requireDatabaseURL()
        let scope = CreditAudit.Scope(
            consumerGroup: settings.consumerGroup, tenantID: tenant, since: since.flatMap(CreditAudit.instant))

        let client = try await connectDatabase(url, logger: logger)
        let report: CreditAudit.Report
        do {
            report = try await client.withConnection { db in try CreditAudit.run(scope, on: db) }
        } catch {
            await client.close()
            throw CommandFailure(describeQueryFailure(error, doing: "the audit"))
        }
        await client.close()

        switch format {
        case .table: print(Self.table(report).joined(separator: "\n"))
        case .json: print(JSONWriter.serializeString(Self.json(report)))
        case .csv: print(Self.csv(report).joined(separator: "\n"))
        }
        if !report.isClean { throw ExitCode(3) }
    }

    // MARK: - Table

    static func table(_ report: CreditAudit.Report) -> [String] {
        let scope = report.scope
        var lines = [
            "Credit audit · group \(scope.consumerGroup) · "
                + (scope.tenantID.map { "tenant \($0)" } ?? "all tenants") + " · "
                + (report.since.map { "since \($0)" } ?? "all time") + " · balances as of \(report.asOf)",
            "",
        ]

        if report.accounts.isEmpty {
            lines.append("Accounts: none")
        } else {
            var accounts = ReportTable([
                ("TENANT", .left), ("ACCOUNT", .left), ("GRANTS", .right), ("GRANTED", .right), ("CHARGES", .right),
                ("CHARGED", .right), ("BALANCE", .right), ("CONFLICTS", .right), ("ANOMALIES", .left),
            ])
            for account in report.accounts {
                accounts.append([
                    account.tenantID, account.accountID, "\(account.grants)", "\(account.grantedCredits)",
                    "\(account.charges)", "\(account.chargedCredits)", "\(account.balance)", "\(account.conflicts)",
                    report.anomalyCodes(tenantID: account.tenantID, accountID: account.accountID).joined(
                        separator: ", "),
                ])
            }
            lines.append("Accounts")
            lines += accounts.lines(indent: 2)
        }

        lines.append("")
        var tenants = ReportTable([
            ("TENANT", .left), ("ACCOUNTS", .right), ("GRANTS", .right), ("GRANTED", .right), ("CHARGES", .right),
            ("CHARGED", .right), ("BALANCE", .right), ("DUP COMPLETIONS", .right), ("DUP GRANTS", .right),
            ("CONFLICTS", .right),
        ])
        func cells(_ name: String, _ s: CreditAudit.Summary) -> [String] {
            [
                name, "\(s.accounts)", "\(s.grants)", "\(s.grantedCredits)", "\(s.charges)", "\(s.chargedCredits)",
                "\(s.balance)", "\(s.duplicateCompletions)", "\(s.duplicateGrants)", "\(s.conflicts)",
            ]
        }
        for tenant in report.tenants { tenants.append(cells(tenant.tenantID, tenant.summary)) }
        tenants.appendRule()
        tenants.append(cells("TOTAL", report.totals))
        lines.append("Tenants")
        lines += tenants.lines(indent: 2)
        lines.append("  DUP columns count processed_messages, which keeps the retention window only; the ledger is never pruned.")

        lines.append("")
        if report.anomalies.isEmpty {
            lines.append("Anomalies: none")
        } else {
            lines.append("Anomalies: \(report.anomalies.count)")
            var list = ReportTable([("ANOMALY", .left), ("WHERE", .left), ("WHAT", .left)])
            for anomaly in report.anomalies {
                list.append([anomaly.code, "\(anomaly.tenantID)/\(anomaly.accountID ?? "-")", anomaly.summary])
            }
            lines += list.lines(indent: 2)
        }
        if report.since != nil {
            lines.append("")
            lines.append("Grants, charges, duplicates and conflicts: those since \(report.since!).")
            lines.append("Balances, and the anomalies other than conflicts: over everything, as of \(report.asOf).")
        }
        return lines
    }

    // MARK: - JSON

    static func json(_ report: CreditAudit.Report) -> JSONValue {
        func figures(_ s: CreditAudit.Summary) -> [String: JSONValue] {
            [
                "accounts": .integer(s.accounts), "grants": .integer(s.grants),
                "granted_credits": .integer(s.grantedCredits), "charges": .integer(s.charges),
                "charged_credits": .integer(s.chargedCredits), "balance": .integer(s.balance),
                "duplicate_completions": .integer(s.duplicateCompletions),
                "duplicate_grants": .integer(s.duplicateGrants), "conflicts": .integer(s.conflicts),
            ]
        }
        let accounts: [JSONValue] = report.accounts.map { a in
            .object([
                "tenant_id": .string(a.tenantID), "account_id": .string(a.accountID), "grants": .integer(a.grants),
                "granted_credits": .integer(a.grantedCredits), "charges": .integer(a.charges),
                "charged_credits": .integer(a.chargedCredits), "balance": .integer(a.balance),
                "ledger_sum": .integer(a.ledgerSum), "conflicts": .integer(a.conflicts),
                "anomalies": .array(
                    report.anomalyCodes(tenantID: a.tenantID, accountID: a.accountID).map(JSONValue.string)),
            ])
        }
        let tenants: [JSONValue] = report.tenants.map { tenant in
            var object = figures(tenant.summary)
            object["tenant_id"] = .string(tenant.tenantID)
            return .object(object)
        }
        var totals = figures(report.totals)
        totals["anomalies"] = .integer(Int64(report.anomalies.count))
        return .object([
            "as_of": .string(report.asOf),
            "consumer_group": .string(report.scope.consumerGroup),
            "tenant_id": report.scope.tenantID.map(JSONValue.string) ?? .null,
            "since": report.since.map(JSONValue.string) ?? .null,
            "accounts": .array(accounts),
            "tenants": .array(tenants),
            "anomalies": .array(report.anomalies.map(json)),
            "totals": .object(totals),
            "clean": .bool(report.isClean),
        ])
    }

    static func json(_ anomaly: CreditAudit.Anomaly) -> JSONValue {
        var object: [String: JSONValue] = [
            "kind": .string(anomaly.code), "tenant_id": .string(anomaly.tenantID),
            "account_id": anomaly.accountID.map(JSONValue.string) ?? .null, "summary": .string(anomaly.summary),
        ]
        switch anomaly {
        case .conflict(let c):
            object["ledger_kind"] = .string(c.kind)
            object["business_key"] = .string(c.businessKey)
            object["event_id"] = .string(c.eventID)
            object["event_account_id"] = .string(c.accountID)
            object["event_credits"] = .integer(c.credits)
            object["ledger_event_id"] = .string(c.existingEventID)
            object["ledger_account_id"] = .string(c.existingAccountID)
            object["ledger_credits"] = .integer(c.existingCredits)
            object["recorded_at"] = .string(c.recordedAt)
        case .negativeBalance(_, _, let balance):
            object["balance"] = .integer(balance)
        case .balanceMismatch(_, _, let balance, let ledgerSum):
            object["balance"] = balance.map(JSONValue.integer) ?? .null
            object["ledger_sum"] = .integer(ledgerSum)
        case .duplicateLedgerRows(_, let kind, let businessKey, let eventIDs):
            object["ledger_kind"] = .string(kind)
            object["business_key"] = .string(businessKey)
            object["event_ids"] = .array(eventIDs.map(JSONValue.string))
        }
        return .object(object)
    }

    // MARK: - CSV

    static func csv(_ report: CreditAudit.Report) -> [String] {
        var lines = [
            CSVText.line([
                "tenant_id", "account_id", "grants", "granted_credits", "charges", "charged_credits", "balance",
                "ledger_sum", "conflicts", "anomalies",
            ])
        ]
        for a in report.accounts {
            lines.append(
                CSVText.line([
                    a.tenantID, a.accountID, "\(a.grants)", "\(a.grantedCredits)", "\(a.charges)",
                    "\(a.chargedCredits)", "\(a.balance)", "\(a.ledgerSum)", "\(a.conflicts)",
                    report.anomalyCodes(tenantID: a.tenantID, accountID: a.accountID).joined(separator: ";"),
                ]))
        }
        lines.append("")
        lines.append(
            CSVText.line([
                "tenant_id", "accounts", "grants", "granted_credits", "charges", "charged_credits", "balance",
                "duplicate_completions", "duplicate_grants", "conflicts",
            ]))
        for tenant in report.tenants {
            let s = tenant.summary
            lines.append(
                CSVText.line([
                    tenant.tenantID, "\(s.accounts)", "\(s.grants)", "\(s.grantedCredits)", "\(s.charges)",
                    "\(s.chargedCredits)", "\(s.balance)", "\(s.duplicateCompletions)", "\(s.duplicateGrants)",
                    "\(s.conflicts)",
                ]))
        }
        lines.append("")
        lines.append(
            CSVText.line(["anomaly", "tenant_id", "account_id", "ledger_kind", "business_key", "event_id", "summary"]))
        for anomaly in report.anomalies {
            var kind = ""
            var businessKey = ""
            var eventID = ""
            switch anomaly {
            case .conflict(let c): (kind, businessKey, eventID) = (c.kind, c.businessKey, c.eventID)
            case .duplicateLedgerRows(_, let k, let key, let ids):
                (kind, businessKey, eventID) = (k, key, ids.joined(separator: ";"))
            case .negativeBalance, .balanceMismatch: break
            }
            lines.append(
                CSVText.line([
                    anomaly.code, anomaly.tenantID, anomaly.accountID ?? "", kind, businessKey, eventID,
                    anomaly.summary,
                ]))
        }
        return lines
    }
}

/// One line for a query that failed after the session opened; a missing table means the schema
/// was never migrated.
func describeQueryFailure(_ error: any Error, doing what: String) -> String {
    oneLine(describeQueryFailureText(error, doing: what))
}

private func describeQueryFailureText(_ error: any Error, doing what: String) -> String {
    if let error = error as? PostgresError {
        if error.sqlState == "42P01" {
            return "\(what) failed: the database has no once schema (\(error.message)); run `once migrate` first"
        }
        if error.kind == .connectionLost || error.kind == .connectFailed {
            return "cannot reach the database: \(error)"
        }
    }
    return "\(what) failed: \(error)"
}
