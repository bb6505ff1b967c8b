import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OncePipeline
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// Builds the credit tables through the real pipeline transaction (`RecordProcessor` with the
/// domain's handlers), as `once run` would, for one consumer group.
struct CreditFixture {
    let database: TestDatabase
    let group = TestServices.unique("group")
    let tenant = TestServices.unique("t")
    private let processor: RecordProcessor
    private let topic = "fixture-events"
    private var nextOffset: Int64 = 0

    init(database: TestDatabase) {
        self.database = database
        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        processor = RecordProcessor(consumerGroup: group, registry: registry)
    }

    static func envelope(id: String, type: String, tenant: String, _ data: [String: JSONValue]) -> [UInt8] {
        JSONWriter.serialize(
            .object([
                "event_id": .string(id), "type": .string(type), "version": 1, "tenant_id": .string(tenant),
                "occurred_at": "2026-11-22T10:00:00Z", "data": .object(data),
            ]))
    }

    func grant(
        _ grantID: String, account: String, credits: Int64, id: String = UUID().uuidString, tenant: String? = nil
    )
        -> [UInt8]
    {
        Self.envelope(
            id: id, type: "credits.granted", tenant: tenant ?? self.tenant,
            ["grant_id": .string(grantID), "account_id": .string(account), "credits": .integer(credits)])
    }

    func completion(_ batchID: String, account: String, credits: Int64, id: String = UUID().uuidString) -> [UInt8] {
        Self.envelope(
            id: id, type: "batch.completed", tenant: tenant,
            ["batch_id": .string(batchID), "account_id": .string(account), "credits": .integer(credits)])
    }

    /// Processes `values` as the next records of one partition, in one transaction.
    @discardableResult
    mutating func process(_ values: [[UInt8]], partition: Int32 = 0) throws -> ProcessReport {
        let records = values.map { value in
            defer { nextOffset += 1 }
            return KafkaRecord(topic: topic, partition: partition, offset: nextOffset, key: nil, value: value)
        }
        let connection = try database.connect()
        defer { connection.close() }
        return try processor.process(records, on: connection)
    }

    func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws {
        let connection = try database.connect()
        defer { connection.close() }
        _ = try connection.execute(sql, parameters)
    }

    /// `once audit credits` on this database and group, with `extra` arguments.
    func audit(_ extra: [String] = []) async throws -> (status: Int32, output: String) {
        try await OnceProcess.run(
            ["audit", "credits", "--database-url", database.url, "--group", group] + extra, timeout: .seconds(60))
    }
}

/// The one JSON object a command printed (log lines, if any, are other lines).
func jsonObject(in output: String) throws -> JSONValue {
    let line = try #require(output.split(separator: "\n").first { $0.hasPrefix("{") }, "no JSON in:\n\(output)")
    return try JSONParser.parse(String(line))
}

/// The sections of `once audit credits --format csv`: each a list of records keyed by its header.
func csvSections(_ output: String) throws -> [[[String: String]]] {
    var sections: [[[String: String]]] = []
    for block in output.components(separatedBy: "\n\n") {
        let lines = block.split(separator: "\n").map(String.init)
        guard let header = lines.first else { continue }
        let names = try csvFields(header)
        sections.append(
            try lines.dropFirst().map { line in
                let fields = try csvFields(line)
                try #require(fields.count == names.count, "\(line) has \(fields.count) fields, not \(names.count)")
                return Dictionary(uniqueKeysWithValues: zip(names, fields))
            })
    }
    return sections
}

/// One CSV line's fields (RFC 4180 quoting; no line breaks inside fields in these tests).
func csvFields(_ line: String) throws -> [String] {
    var fields: [String] = []
    var field = ""
    var quoted = false
    var characters = Array(line)[...]
    while let character = characters.popFirst() {
        if quoted {
            if character == "\"" {
                if characters.first == "\"" {
                    field.append("\"")
                    characters.removeFirst()
                } else {
                    quoted = false
                }
            } else {
                field.append(character)
            }
        } else if character == "\"" && field.isEmpty {
            quoted = true
        } else if character == "," {
            fields.append(field)
            field = ""
        } else {
            field.append(character)
        }
    }
    try #require(!quoted, "unterminated quote in \(line)")
    fields.append(field)
    return fields
}

/// The whitespace-separated cells of the table line that starts with `prefix` (after indentation).
func tableRow(_ output: String, startingWith prefix: [String]) -> [String]? {
    output.split(separator: "\n").lazy
        .map { $0.split(separator: " ").map(String.init) }
        .first { Array($0.prefix(prefix.count)) == prefix }
}

@Suite(.timeLimit(.minutes(3)))
struct AuditTests {
    /// Grants, charges, a duplicate completion, a duplicate grant and a redelivery, in two tenants.
    static func cleanFixture() async throws -> CreditFixture {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
        var fixture = CreditFixture(database: database)
        let duplicate = fixture.completion("b-1", account: "acc-1", credits: 40)
        try fixture.process([
            fixture.grant("g-1", account: "acc-1", credits: 100),
            fixture.grant("g-2", account: "acc-1", credits: 50),
            fixture.grant("g-3", account: "acc-2", credits: 30),
            fixture.completion("b-1", account: "acc-1", credits: 40),
            fixture.completion("b-2", account: "acc-2", credits: 30),
            fixture.completion("b-3", account: "acc-1", credits: 25),
        ])
        #expect(try fixture.process([duplicate])[.duplicate] == 1)
        #expect(try fixture.process([duplicate])[.duplicate] == 1)  // a redelivery: not a duplicate emission
        #expect(try fixture.process([fixture.grant("g-3", account: "acc-2", credits: 30)])[.duplicate] == 1)
        try fixture.process([fixture.grant("g-1", account: "acc-7", credits: 5, tenant: fixture.tenant + "-b")])
        return fixture
    }

    @Test func cleanLedgerPrintsTheFiguresAndExitsZero() async throws {
        let fixture = try await Self.cleanFixture()
        defer { fixture.database.drop() }
        let t = fixture.tenant

        let table = try await fixture.audit()
        #expect(table.status == 0, "\(table.output)")
        #expect(tableRow(table.output, startingWith: [t, "acc-1"]) == [t, "acc-1", "2", "150", "2", "65", "85", "0"])
        #expect(tableRow(table.output, startingWith: [t, "acc-2"]) == [t, "acc-2", "1", "30", "1", "30", "0", "0"])
        #expect(
            tableRow(table.output, startingWith: [t + "-b", "acc-7"]) == [
                t + "-b", "acc-7", "1", "5", "0", "0", "5", "0",
            ])
        // Tenant lines: accounts, grants, granted, charges, charged, balance, dup completions, dup grants, conflicts.
        #expect(
            tableRow(table.output, startingWith: [t, "2"]) == [t, "2", "3", "180", "3", "95", "85", "1", "1", "0"])
        #expect(
            tableRow(table.output, startingWith: ["TOTAL"]) == [
                "TOTAL", "3", "4", "185", "3", "95", "90", "1", "1", "0",
            ])
        #expect(table.output.contains("Anomalies: none"))
        #expect(table.output.contains("group \(fixture.group)"))

        let json = try await fixture.audit(["--format", "json", "--tenant", t])
        #expect(json.status == 0, "\(json.output)")
        let report = try jsonObject(in: json.output)
        #expect(report["clean"] == true)
        #expect(report["tenant_id"]?.stringValue == t)
        #expect(report["anomalies"] == [])
        let accounts = try #require(report["accounts"]?.arrayValue)
        #expect(accounts.map { $0["account_id"]?.stringValue } == ["acc-1", "acc-2"])
        #expect(accounts[0]["grants"] == 2 && accounts[0]["granted_credits"] == 150)
        #expect(accounts[0]["charges"] == 2 && accounts[0]["charged_credits"] == 65)
        #expect(accounts[0]["balance"] == 85 && accounts[0]["ledger_sum"] == 85 && accounts[0]["anomalies"] == [])
        #expect(accounts[1]["balance"] == 0)
        let totals = try #require(report["totals"])
        #expect(totals["accounts"] == 2 && totals["balance"] == 85 && totals["anomalies"] == 0)
        #expect(totals["duplicate_completions"] == 1 && totals["duplicate_grants"] == 1)
        #expect(report["tenants"]?[0]?["duplicate_completions"] == 1)

        let csv = try await fixture.audit(["--format", "csv"])
        #expect(csv.status == 0, "\(csv.output)")
        let sections = try csvSections(csv.output)
        #expect(sections.count == 3)
        let rows = sections[0]
        #expect(rows.count == 3)
        #expect(
            rows.first == [
                "tenant_id": t, "account_id": "acc-1", "grants": "2", "granted_credits": "150", "charges": "2",
                "charged_credits": "65", "balance": "85", "ledger_sum": "85", "conflicts": "0", "anomalies": "",
            ])
        #expect(sections[1].first?["duplicate_completions"] == "1" && sections[1].first?["duplicate_grants"] == "1")
        #expect(sections[2].isEmpty)

        // Another group's view: the same ledger, none of this group's duplicates.
        let otherGroup = try await OnceProcess.run(
            ["audit", "credits", "--database-url", fixture.database.url, "--group", "someone-else", "--format", "json"])
        #expect(try jsonObject(in: otherGroup.output)["totals"]?["duplicate_completions"] == 0)
    }

    @Test func sinceLeavesOutOlderRowsButKeepsCurrentBalances() async throws {
        let fixture = try await Self.cleanFixture()
        defer { fixture.database.drop() }
        try fixture.execute(
            "UPDATE credit_ledger SET recorded_at = now() - interval '3 days' WHERE kind = 'grant'")
        let json = try await fixture.audit([
            "--format", "json", "--tenant", fixture.tenant, "--since", "2000-01-01T00:00:00Z",
        ])
        #expect(try jsonObject(in: json.output)["totals"]?["grants"] == 3)
        let since = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-86_400))
        let recent = try await fixture.audit(["--format", "json", "--tenant", fixture.tenant, "--since", since])
        #expect(recent.status == 0, "\(recent.output)")
        let report = try jsonObject(in: recent.output)
        #expect(report["since"]?.stringValue == since)
        #expect(report["totals"]?["grants"] == 0 && report["totals"]?["granted_credits"] == 0)
        #expect(report["totals"]?["charges"] == 3 && report["totals"]?["balance"] == 85)
    }

    @Test func anomaliesAreEachReportedAndExitThree() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
        defer { database.drop() }
        var fixture = CreditFixture(database: database)
        let t = fixture.tenant
        try fixture.process([
            fixture.grant("g-1", account: "acc-1", credits: 100),
            fixture.completion("b-1", account: "acc-1", credits: 40),
            fixture.grant("g-2", account: "acc-2", credits: 10),
            fixture.completion("b-3", account: "acc-3", credits: 30),  // nothing granted: balance -30
        ])
        let conflicting = fixture.completion("b-1", account: "acc-1", credits: 41, id: "ev-conflict")
        #expect(try fixture.process([conflicting])[.conflict] == 1)

        // By hand: a balance that no longer matches its ledger, a conflict record, and (with the
        // unique key dropped) a second ledger row for grant g-2.
        try fixture.execute(
            "UPDATE credit_accounts SET balance = 1000 WHERE tenant_id = $1 AND account_id = 'acc-2'", [.text(t)])
        try fixture.execute(
            """
            INSERT INTO credit_conflicts (tenant_id, kind, business_key, event_id, account_id, credits,
                                          existing_event_id, existing_account_id, existing_credits)
            SELECT tenant_id, kind, business_key, 'ev-by-hand', 'acc-9', 7, event_id, account_id, credits
            FROM credit_ledger WHERE tenant_id = $1 AND kind = 'grant' AND business_key = 'g-1'
            """, [.text(t)])
        try fixture.execute(
            """
            DO $$
            DECLARE c record;
            BEGIN
                FOR c IN SELECT conname FROM pg_constraint
                         WHERE conrelid = 'credit_ledger'::regclass AND contype = 'u' LOOP
                    EXECUTE format('ALTER TABLE credit_ledger DROP CONSTRAINT %I', c.conname);
                END LOOP;
            END $$
            """)
        try fixture.execute(
            """
            INSERT INTO credit_ledger
                (tenant_id, account_id, kind, business_key, credits, amount, event_id, occurred_at)
            VALUES ($1, 'acc-2', 'grant', 'g-2', 10, 10, 'ev-second-row', now())
            """, [.text(t)])

        let table = try await fixture.audit()
        #expect(table.status == 3, "\(table.output)")
        #expect(table.output.contains("Anomalies: 5"))
        for line in [
            ["conflict", "\(t)/acc-1", "completion", "of", "batch", "b-1:", "event", "ev-conflict"],
            ["conflict", "\(t)/acc-1", "grant", "g-1:", "event", "ev-by-hand", "says", "acc-9", "7", "credits,"],
            ["negative_balance", "\(t)/acc-3", "balance", "-30"],
            ["balance_mismatch", "\(t)/acc-2", "balance", "1000", "but", "the", "ledger", "sums", "to", "20"],
            ["duplicate_ledger_rows", "\(t)/-", "2", "grant", "rows", "for", "g-2"],
        ] {
            #expect(tableRow(table.output, startingWith: line) != nil, "\(line) in\n\(table.output)")
        }
        #expect(tableRow(table.output, startingWith: [t, "acc-1"])?.last == "conflict")
        #expect(tableRow(table.output, startingWith: [t, "acc-2"])?.last == "balance_mismatch")
        #expect(tableRow(table.output, startingWith: [t, "acc-3"])?.last == "negative_balance")

        let json = try await fixture.audit(["--format", "json"])
        #expect(json.status == 3)
        let report = try jsonObject(in: json.output)
        #expect(report["clean"] == false && report["totals"]?["anomalies"] == 5)
        let anomalies = try #require(report["anomalies"]?.arrayValue)
        #expect(
            anomalies.compactMap { $0["kind"]?.stringValue }
                == ["conflict", "conflict", "negative_balance", "balance_mismatch", "duplicate_ledger_rows"])
        let handled = try #require(anomalies.first { $0["event_id"]?.stringValue == "ev-conflict" })
        #expect(handled["event_credits"] == 41 && handled["ledger_credits"] == 40 && handled["business_key"] == "b-1")
        #expect(handled["ledger_kind"] == "charge" && handled["ledger_account_id"] == "acc-1")
        #expect(anomalies[3]["balance"] == 1000 && anomalies[3]["ledger_sum"] == 20)
        #expect(anomalies[4]["event_ids"]?.arrayValue?.count == 2)
        #expect(report["accounts"]?[0]?["conflicts"] == 2)

        let csv = try await fixture.audit(["--format", "csv"])
        #expect(csv.status == 3)
        let sections = try csvSections(csv.output)
        #expect(sections[0].first { $0["account_id"] == "acc-1" }?["anomalies"] == "conflict")
        #expect(
            sections[2].map { $0["anomaly"] } == [
                "conflict", "conflict", "negative_balance", "balance_mismatch", "duplicate_ledger_rows",
            ])
        #expect(sections[2].last?["event_id"]?.hasSuffix(";ev-second-row") == true)
        #expect(sections[2][0]["summary"]?.contains(",") == true)  // quoted, yet parsed back whole

        // One tenant at a time: the other tenant's anomalies do not count.
        let other = try await fixture.audit(["--tenant", t + "-nobody"])
        #expect(other.status == 0, "\(other.output)")
        #expect(other.output.contains("Accounts: none"))
    }

    @Test func badArgumentsAndUnreachableServicesFailWithOneLine() async throws {
        for (arguments, message) in [
            (["--since", "yesterday"], "--since"),
            (["--format", "xml"], "--format"),
            (["--tenant", "two words"], "--tenant"),
            (["--frobnicate"], "frobnicate"),
        ] {
            let result = try await OnceProcess.run(
                ["audit", "credits", "--database-url", "postgresql://x/y"] + arguments)
            #expect(result.status == 64, "\(arguments): \(result.output)")
            #expect(result.output.contains(message), "\(arguments): \(result.output)")
        }
        let noDatabase = try await OnceProcess.run(["audit", "credits"], environment: ["ONCE_DATABASE_URL": ""])
        #expect(noDatabase.status == 1 && noDatabase.output.contains("no database"), "\(noDatabase.output)")

        let start = ContinuousClock.now
        let unreachable = try await OnceProcess.run(
            ["audit", "credits", "--database-url", "postgresql://postgres@127.0.0.1:1/once"], timeout: .seconds(30))
        #expect(ContinuousClock.now - start < .seconds(15))
        #expect(unreachable.status == 1)
        #expect(unreachable.output.contains("cannot reach the database"))
        #expect(unreachable.output.split(separator: "\n").count == 1, "\(unreachable.output)")

        let unmigrated = try await TestDatabase.create(migrations: [])
        defer { unmigrated.drop() }
        let noSchema = try await OnceProcess.run(["audit", "credits", "--database-url", unmigrated.url])
        #expect(noSchema.status == 1)
        #expect(noSchema.output.contains("once migrate"), "\(noSchema.output)")
    }
}
