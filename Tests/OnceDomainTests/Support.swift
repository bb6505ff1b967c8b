import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OncePipeline
import OncePostgres
import OnceSchema
import Testing

// MARK: - A fresh database per suite

/// The server the integration tests use. Missing configuration fails the suite: these tests
/// prove nothing without a server, so they never skip.
struct MissingDatabaseURL: Error, CustomStringConvertible {
    var description: String {
        "ONCE_DATABASE_URL is not set; start PostgreSQL (deploy/local) and export its URL, "
            + "e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    }
}

enum TestDatabase {
    /// The URL of the current suite's own database, set by the `.freshDatabase` trait.
    @TaskLocal static var url: String?

    static func serverURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["ONCE_DATABASE_URL"], !url.isEmpty else {
            throw MissingDatabaseURL()
        }
        return url
    }

    /// A connection to the suite's database.
    static func connect() throws -> PostgresConnection {
        let url = try #require(url, "the suite needs the .freshDatabase trait")
        return try PostgresConnection(url: url)
    }

    /// `serverURL` pointing at database `name`: the path of a URL replaced, or `dbname` appended
    /// to a conninfo string (the last keyword wins).
    static func url(_ serverURL: String, database name: String) -> String {
        guard let schemeEnd = serverURL.range(of: "://") else { return serverURL + " dbname=\(name)" }
        let rest = serverURL[schemeEnd.upperBound...]
        let queryStart = rest.firstIndex(of: "?") ?? rest.endIndex
        let authorityEnd = rest[..<queryStart].firstIndex(of: "/") ?? queryStart
        return String(serverURL[..<authorityEnd]) + "/" + name + String(rest[queryStart...])
    }
}

/// Creates a database for the suite, migrates it (`Migration.pipeline + Domain.migrations`),
/// runs the suite against it and drops it.
struct FreshDatabaseTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let serverURL = try TestDatabase.serverURL()
        let name = "once_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(20)
        let url = TestDatabase.url(serverURL, database: name)
        try Self.create(name, on: serverURL, migrating: url)
        defer { Self.drop(name, on: serverURL) }
        try await TestDatabase.$url.withValue(url) {
            try await function()
        }
    }

    private static func create(_ name: String, on serverURL: String, migrating url: String) throws {
        let admin = try PostgresConnection(url: serverURL)
        try admin.execute("CREATE DATABASE \(name)")
        let db = try PostgresConnection(url: url)
        try Migrator(migrations: Migration.pipeline + Domain.migrations).migrate(on: db)
        // A second run finds everything applied.
        #expect(try Migrator(migrations: Migration.pipeline + Domain.migrations).migrate(on: db).isEmpty)
    }

    private static func drop(_ name: String, on serverURL: String) {
        do {
            let admin = try PostgresConnection(url: serverURL)
            try admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        } catch {
            Issue.record("could not drop test database \(name): \(error)")
        }
    }
}

extension Trait where Self == FreshDatabaseTrait {
    /// The suite runs against a database of its own, created and migrated for it.
    static var freshDatabase: Self { FreshDatabaseTrait() }
}

// MARK: - Events through the real pipeline

/// Builds events, feeds them through `RecordProcessor` (the batch transaction `once run` uses)
/// and checks the invariants finance relies on.
final class Harness {
    static let consumerGroup = "once-domain-test"
    static let registry: HandlerRegistry = {
        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        return registry
    }()

    let db: PostgresConnection
    let processor = RecordProcessor(consumerGroup: Harness.consumerGroup, registry: Harness.registry)
    /// A tenant of this test alone.
    let tenant: String
    /// A partition of this test alone, so dead-letter positions never collide between tests.
    let partition = Int32.random(in: 0..<1_000_000)
    private var nextOffset: Int64 = 0

    init() throws {
        db = try TestDatabase.connect()
        tenant = "t-" + UUID().uuidString.lowercased().prefix(8)
    }

    /// Processes `values` as consecutive records of one partition, in one transaction.
    @discardableResult
    func process(_ values: [[UInt8]], topic: String = "test-events") throws -> ProcessReport {
        let records = values.map { value in
            defer { nextOffset += 1 }
            return KafkaRecord(topic: topic, partition: partition, offset: nextOffset, key: nil, value: value)
        }
        return try processor.process(records, on: db)
    }

    @discardableResult
    func process(_ value: [UInt8]) throws -> ProcessReport {
        try process([value])
    }

    /// A record value: the contract's envelope around `data`.
    func event(
        _ type: String, id: String = newEventID(), tenant: String? = nil, occurredAt: String = "2026-11-22T10:00:00Z",
        _ data: [String: JSONValue]
    ) -> [UInt8] {
        JSONWriter.serialize(
            .object([
                "event_id": .string(id),
                "type": .string(type),
                "version": 1,
                "tenant_id": .string(tenant ?? self.tenant),
                "occurred_at": .string(occurredAt),
                "data": .object(data),
            ]))
    }

    func completion(batch: String, account: String, credits: Int64, id: String = newEventID(), tenant: String? = nil)
        -> [UInt8]
    {
        event(
            "batch.completed", id: id, tenant: tenant,
            ["batch_id": .string(batch), "account_id": .string(account), "credits": .integer(credits)])
    }

    func grant(_ grantID: String, account: String, credits: Int64, id: String = newEventID(), tenant: String? = nil)
        -> [UInt8]
    {
        event(
            "credits.granted", id: id, tenant: tenant,
            ["grant_id": .string(grantID), "account_id": .string(account), "credits": .integer(credits)])
    }

    func batchAction(
        _ batchActionID: String, action: DeviceAction, devices: [String], serviceTypeID: Int64? = nil,
        workflowID: String? = nil, id: String = newEventID(), tenant: String? = nil
    ) -> [UInt8] {
        event(
            "batch_action.requested", id: id, tenant: tenant,
            [
                "batch_action_id": .string(batchActionID),
                "action": .string(action.rawValue),
                "service_type_id": serviceTypeID.map(JSONValue.integer) ?? .null,
                "workflow_id": workflowID.map(JSONValue.string) ?? .null,
                "devices": .array(devices.map { .object(["device_uid": .string($0)]) }),
            ])
    }

    func jobRequest(
        _ requestID: String, user: String = "u-1", actionCode: Int64 = 7, actionName: String = "export",
        customers: [String] = ["c-1", "c-2"], id: String = newEventID(), tenant: String? = nil
    ) -> [UInt8] {
        event(
            "job.requested", id: id, tenant: tenant,
            [
                "request_id": .string(requestID),
                "user_id": .string(user),
                "action_code": .integer(actionCode),
                "action_name": .string(actionName),
                "customer_ids": .array(customers.map(JSONValue.string)),
            ])
    }

    /// Registers devices for this test's tenant (through the importer's upsert).
    func registerDevices(_ devices: [DeviceRecord]) throws {
        _ = try DeviceImporter().upsert(devices, on: db)
    }

    // MARK: Reading back

    /// One integer from the first row.
    func scalar(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int64 {
        try #require(db.query(sql, parameters).first).decode(Int64.self, column: 0)
    }

    /// The outcome `processed_messages` recorded for an event id (of this test's tenant unless
    /// another is named).
    func outcome(of eventID: String, tenant: String? = nil) throws -> String? {
        try db.query(
            "SELECT outcome FROM processed_messages WHERE consumer_group = $1 AND tenant_id = $2 AND event_id = $3",
            [.text(Self.consumerGroup), .text(tenant ?? self.tenant), .text(eventID)]
        ).first?.decode(String.self, column: 0)
    }

    func balance(_ account: String) throws -> Int64? {
        try db.query(
            "SELECT balance FROM credit_accounts WHERE tenant_id = $1 AND account_id = $2",
            [.text(tenant), .text(account)]
        ).first?.decode(Int64.self, column: 0)
    }

    /// The outbox payloads of `type` for this tenant, by aggregate id.
    func outbox(_ type: String) throws -> [String: JSONValue] {
        var payloads: [String: JSONValue] = [:]
        for row in try db.query(
            "SELECT aggregate_id, payload FROM outbox WHERE tenant_id = $1 AND event_type = $2",
            [.text(tenant), .text(type)])
        {
            payloads[try row.decode(String.self, column: 0)] = try JSONParser.parse(
                try row.decode([UInt8].self, column: 1))
        }
        return payloads
    }

    /// The dead letter of an event id: (reason_code, error).
    func deadLetter(_ eventID: String) throws -> (reason: String, error: String)? {
        guard
            let row = try db.query(
                "SELECT reason_code, error FROM dead_letters WHERE consumer_group = $1 AND event_id = $2",
                [.text(Self.consumerGroup), .text(eventID)]
            ).first
        else { return nil }
        return (try row.decode(String.self, column: 0), try row.decode(String.self, column: 1))
    }

    /// (device_uid → outcome or error code) of a batch action.
    func deviceResults(_ batchActionID: String) throws -> [String: String] {
        var results: [String: String] = [:]
        for row in try db.query(
            """
            SELECT device_uid, coalesce(error_code, outcome) FROM batch_action_devices
            WHERE tenant_id = $1 AND batch_action_id = $2
            """, [.text(tenant), .text(batchActionID)])
        {
            results[try row.decode(String.self, column: 0)] = try row.decode(String.self, column: 1)
        }
        return results
    }

    // MARK: Invariants

    /// What finance and operators rely on (CONTRACT.md §2), over the whole database; every test
    /// ends with it (`withHarness`).
    func checkInvariants(sourceLocation: SourceLocation = #_sourceLocation) throws {
        func none(_ what: Comment, _ sql: String) throws {
            let rows = try db.query(sql)
            let shown = try rows.prefix(5).map { row in
                try (0..<row.columns.count).map { try row.decode(String?.self, column: $0) ?? "NULL" }.joined(
                    separator: " ")
            }
            #expect(rows.isEmpty, "\(what): \(shown)", sourceLocation: sourceLocation)
        }
        try none(
            "every account's balance equals the sum of its ledger amounts",
            """
            SELECT a.tenant_id, a.account_id, a.balance::text, coalesce(sum(l.amount), 0)::text
            FROM credit_accounts a LEFT JOIN credit_ledger l USING (tenant_id, account_id)
            GROUP BY a.tenant_id, a.account_id, a.balance
            HAVING a.balance <> coalesce(sum(l.amount), 0)
            """)
        try none(
            "no business key has two ledger rows",
            "SELECT tenant_id, kind, business_key FROM credit_ledger GROUP BY 1, 2, 3 HAVING count(*) > 1")
        try none(
            "every ledger row has exactly its one outbound event",
            """
            SELECT l.tenant_id, l.kind, l.business_key FROM credit_ledger l
            WHERE (SELECT count(*) FROM outbox o
                   WHERE o.tenant_id = l.tenant_id AND o.aggregate_id = l.business_key
                     AND o.event_type = CASE l.kind WHEN 'charge' THEN 'credits.charged'
                                                    ELSE 'credits.granted' END) <> 1
            """)
        try none(
            "no device has two rows in one batch action",
            """
            SELECT tenant_id, batch_action_id, device_uid FROM batch_action_devices
            GROUP BY 1, 2, 3 HAVING count(*) > 1
            """

        )
        try none(
            "every SUCCESS device, and only those, has its dispatch event",
            """
            SELECT b.tenant_id, b.batch_action_id, b.device_uid FROM batch_action_devices b
            FULL JOIN (SELECT * FROM outbox WHERE event_type = 'batch_action.device_dispatched') o
                ON o.tenant_id = b.tenant_id AND o.aggregate_id = b.batch_action_id || '/' || b.device_uid
            WHERE (b.outcome = 'SUCCESS') IS DISTINCT FROM (o.id IS NOT NULL)
            """)
        try none(
            "every job has exactly one job.created, and no job.created lacks its job",
            """
            SELECT j.tenant_id, j.request_id FROM jobs j
            FULL JOIN (SELECT * FROM outbox WHERE event_type = 'job.created') o
                ON o.tenant_id = j.tenant_id AND o.aggregate_id = j.request_id
            WHERE j.request_id IS NULL OR o.id IS NULL
            """)
        try none(
            "no event id is processed twice in a tenant",
            "SELECT consumer_group, tenant_id, event_id FROM processed_messages GROUP BY 1, 2, 3 HAVING count(*) > 1")
    }
}

/// Runs `body` with a harness on the suite's database, then checks the invariants.
func withHarness(sourceLocation: SourceLocation = #_sourceLocation, _ body: (Harness) throws -> Void) throws {
    let harness = try Harness()
    try body(harness)
    try harness.checkInvariants(sourceLocation: sourceLocation)
}

func newEventID() -> String {
    "ev-" + UUID().uuidString.lowercased()
}

/// The event id inside a record value built by `Harness.event`.
func eventID(of value: [UInt8]) throws -> String {
    try #require(try JSONParser.parse(value)["event_id"]?.stringValue)
}
