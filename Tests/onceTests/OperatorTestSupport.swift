import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// A database, a topic, a group and a tenant of their own for the operator commands' tests
/// (replay, offsets, dlq), with `once` run as a child process against them.
struct OperatorFixture: Sendable {
    let database: TestDatabase
    let admin: KafkaAdmin
    let brokers: String
    let topic = TestServices.unique("ops")
    let group = TestServices.unique("group")
    let tenant = TestServices.unique("t")

    static func make(partitions: Int32 = 1) async throws -> OperatorFixture {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
        let brokers = try TestServices.brokers()
        let fixture = OperatorFixture(
            database: database, admin: try await KafkaAdmin(bootstrapServers: brokers), brokers: brokers)
        try await fixture.admin.createTopics([KafkaTopicSpecification(name: fixture.topic, partitions: partitions)])
        return fixture
    }

    func tearDown() async {
        try? await admin.deleteTopics([topic])
        await admin.close()
        database.drop()
    }

    /// The flags that point a command at this fixture.
    var connection: [String] {
        ["--database-url", database.url, "--brokers", brokers, "--group", group, "--topics", topic]
    }

    /// `once ARGUMENTS` of a command that takes the database alone (prune, grants, migrate).
    func onceOnDatabase(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String) {
        try await OnceProcess.run(arguments + ["--database-url", database.url], timeout: timeout)
    }

    /// `once ARGUMENTS` against this fixture, to its end.
    func once(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String) {
        try await OnceProcess.run(arguments + connection, timeout: timeout)
    }

    /// `once run` with the test broker's short group timeouts.
    func runArguments(_ extra: [String] = []) -> [String] {
        ["run"] + connection + [
            "--kafka-property", "max.poll.interval.ms=6000", "--kafka-property", "session.timeout.ms=6000",
        ] + extra
    }

    func startMember() throws -> OnceProcess { try OnceProcess(runArguments()) }

    /// Runs `once run --until-idle 2` to the end: everything produced so far is processed.
    func processAll() async throws {
        let result = try await OnceProcess.run(runArguments(["--until-idle", "2"]), timeout: .seconds(120))
        try #require(result.status == 0, "once run failed:\n\(result.output)")
    }

    /// Produces values to one partition, one produce request each (so that Tansu's high
    /// watermark stays exact), or with `together` in one request (so that it reports the first
    /// record's offset + 1); returns their offsets.
    @discardableResult
    func produce(_ values: [[UInt8]], partition: Int32 = 0, together: Bool = false) async throws -> [Int64] {
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: brokers))
        var offsets: [Int64] = []
        let records = values.map { KafkaOutgoingRecord(topic: topic, partition: partition, value: $0) }
        if together {
            for result in try await producer.send(records) { offsets.append(try result.get().offset) }
        } else {
            for record in records { offsets.append(try await producer.send(record).offset) }
        }
        await producer.close()
        return offsets
    }

    func grant(_ id: String, account: String = "acct", credits: Int64 = 10) -> [UInt8] {
        JSONWriter.serialize(
            .object([
                "event_id": .string(id), "type": .string("credits.granted"), "version": .integer(1),
                "tenant_id": .string(tenant),
                "occurred_at": .string("2026-11-22T10:00:00Z"),
                "data": .object([
                    "grant_id": .string("grant-\(id)"), "account_id": .string(account), "credits": .integer(credits),
                ]),
            ]))
    }

    func count(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int64 {
        try database.scalar(sql, parameters, as: Int64.self)
    }

    func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws {
        let connection = try database.connect()
        defer { connection.close() }
        _ = try connection.execute(sql, parameters)
    }

    /// What the pipeline has written, as counts and sums: equal snapshots mean nothing was
    /// applied, claimed, dead-lettered or queued in between.
    func snapshot() throws -> [String: Int64] {
        [
            "processed": try count("SELECT count(*) FROM processed_messages"),
            "processed_applied": try count("SELECT count(*) FROM processed_messages WHERE outcome = 'applied'"),
            "ledger": try count("SELECT count(*) FROM credit_ledger"),
            "balance": try count("SELECT coalesce(sum(balance), 0)::bigint FROM credit_accounts"),
            "outbox": try count("SELECT count(*) FROM outbox"),
            "dead_letters": try count("SELECT count(*) FROM dead_letters"),
            "dead_letter_retries": try count("SELECT coalesce(sum(retries), 0)::bigint FROM dead_letters"),
            "conflicts": try count("SELECT count(*) FROM credit_conflicts"),
        ]
    }

    /// Every account's balance is the sum of its ledger amounts.
    func balancesMatchLedger() throws -> Bool {
        try count(
            """
            SELECT count(*) FROM credit_accounts a
            WHERE balance <> (SELECT coalesce(sum(amount), 0) FROM credit_ledger l
                              WHERE l.tenant_id = a.tenant_id AND l.account_id = a.account_id)
            """) == 0
    }
}

extension OperatorFixture {
    /// A database with no schema on the fixture's server, and how to drop it.
    func emptyDatabase() throws -> (url: String, drop: @Sendable () -> Void) {
        let name = TestServices.unique("once_empty").replacingOccurrences(of: "-", with: "_")
        try database.executeOnServer("CREATE DATABASE \(name)")
        let database = self.database
        var components = try #require(URLComponents(string: database.url))
        components.path = "/\(name)"
        return (try #require(components.string), { try? database.executeOnServer("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") })
    }
}

/// The port a member logged for its HTTP endpoint (tests give it port 0), in either log format.
func httpPort(of member: OnceProcess) async throws -> Int {
    var found: Int?
    try await eventually("the HTTP endpoint's address in the log", timeout: .seconds(60)) {
        found = member.output.firstMatch(of: /readyz on 127\.0\.0\.1:([0-9]+)/).flatMap { Int($0.1) }
        return found != nil
    }
    return try #require(found)
}

/// The JSON object a command printed on a line of its own (log lines, if any, are others).
func operatorJSON(in output: String) throws -> JSONValue {
    let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") }, "no JSON in:\n\(output)")
    return try JSONParser.parse(String(line))
}

/// The output's lines, empty ones left out.
func outputLines(_ output: String) -> [String] {
    output.split(separator: "\n").map(String.init)
}

/// Checks a failed command: non-zero status, a message containing `text`, and — for failures
/// that are not usage errors — that message alone, on one line.
func expectFailure(
    _ result: (status: Int32, output: String), mentioning text: String, oneLine: Bool = true,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(result.status != 0, "expected a failure:\n\(result.output)", sourceLocation: sourceLocation)
    #expect(result.output.contains(text), "expected `\(text)` in:\n\(result.output)", sourceLocation: sourceLocation)
    if oneLine {
        #expect(
            outputLines(result.output).count == 1, "expected one line:\n\(result.output)",
            sourceLocation: sourceLocation)
    }
}

/// The whitespace-separated cells of the first output line whose cells start with `prefix`.
func operatorRow(_ output: String, startingWith prefix: [String]) -> [String]? {
    output.split(separator: "\n").lazy
        .map { $0.split(separator: " ").map(String.init) }
        .first { Array($0.prefix(prefix.count)) == prefix }
}

/// The elements of a JSON array (none for anything else).
func jsonArray(_ value: JSONValue?) -> [JSONValue] {
    if case .array(let elements)? = value { return elements }
    return []
}
