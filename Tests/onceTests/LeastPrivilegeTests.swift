import Foundation
import OncePostgres
import OnceTestSupport
import Testing

/// once as a role with only what `once grants` prints: the pipeline's whole run (a crash, its
/// redelivery, poison) with no DDL and no superuser; status and audit with the read-only
/// grants; and a missing grant or an unmigrated schema stopping `once run` at once with one line.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct LeastPrivilegeTests {
    /// A login role made for one test, dropped after it (with the database that holds its grants).
    struct Role {
        let name = TestServices.unique("once_role").replacingOccurrences(of: "-", with: "_")
        let fixture: OperatorFixture

        /// The fixture's database URL, as this role.
        var url: String {
            var components = URLComponents(string: fixture.database.url)!
            components.user = name
            return components.string!
        }

        /// The fixture's flags, connecting as this role.
        var connection: [String] {
            ["--database-url", url, "--brokers", fixture.brokers, "--group", fixture.group, "--topics", fixture.topic]
        }

        static func make(_ fixture: OperatorFixture, readOnly: Bool = false) async throws -> Role {
            let role = Role(fixture: fixture)
            try fixture.database.executeOnServer("CREATE ROLE \(role.name) LOGIN")
            let grants = try await fixture.onceOnDatabase(["grants", "--role", role.name] + (readOnly ? ["--read-only"] : []))
            try #require(grants.status == 0, "\(grants.output)")
            let statements = grants.output.split(separator: "\n").filter { $0.hasPrefix("GRANT ") }
            try #require(statements.count > 10, "\(grants.output)")
            for statement in statements { try fixture.execute(String(statement)) }
            return role
        }

        func drop() {
            try? fixture.database.executeOnServer("DROP ROLE IF EXISTS \(name)")
        }

        /// `once run` as this role, with the test broker's short group timeouts.
        func runArguments(_ extra: [String] = []) -> [String] {
            ["run"] + connection + [
                "--kafka-property", "max.poll.interval.ms=6000", "--kafka-property", "session.timeout.ms=6000",
            ] + extra
        }
    }

    @Test func theRunTimeRoleRunsThePipelineThroughACrashAndPoisonWithoutDDL() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        let role = try await Role.make(fixture)
        defer { role.drop() }
        var values = (0..<30).map { fixture.grant("p\($0)", account: "acct-\($0 % 3)") }
        values.insert(Array("{poison".utf8), at: 7)
        _ = try await fixture.produce(Array(values[..<15]), partition: 0)
        _ = try await fixture.produce(Array(values[15...]), partition: 1)

        // A member is killed part way, and a second run picks up what it left.
        let crashing = try OnceProcess(role.runArguments())
        do {
            try await eventually("some records processed", timeout: .seconds(60)) {
                try fixture.count("SELECT count(*) FROM processed_messages") > 0
            }
        } catch {
            crashing.signal(SIGKILL)
            Issue.record("once run, as the run-time role, said:\n\(crashing.output)")
            throw error
        }
        crashing.signal(SIGKILL)
        _ = try await crashing.waitForExit(timeout: .seconds(10))
        let rerun = try await OnceProcess.run(role.runArguments(["--until-idle", "2"]), timeout: .seconds(120))
        #expect(rerun.status == 0, "\(rerun.output)")
        #expect(!rerun.output.contains("permission denied"), "\(rerun.output)")

        #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 30, "each grant once")
        #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 1, "the poison, dead-lettered")
        #expect(try fixture.count("SELECT count(*) FROM outbox_publication WHERE NOT published") == 0, "everything published")
        #expect(try fixture.balancesMatchLedger())

        // The run-time role may not change the schema.
        let connection = try PostgresConnection(url: role.url)
        defer { connection.close() }
        for ddl in ["CREATE TABLE intruder (id int)", "DROP TABLE credit_ledger", "ALTER TABLE outbox ADD COLUMN x int"] {
            #expect(throws: (any Error).self, "\(ddl)") { try connection.execute(ddl) }
        }
        // The operator commands work as it too.
        for command in [["dlq", "list"], ["offsets", "show"], ["status"]] {
            let result = try await OnceProcess.run(command + role.connection, timeout: .seconds(60))
            #expect(result.status == 0, "once \(command.joined(separator: " ")):\n\(result.output)")
        }
        await fixture.tearDown()
    }

    @Test func statusAndAuditWorkWithTheReadOnlyRole() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        _ = try await fixture.produce([fixture.grant("r1"), fixture.grant("r2")])
        try await fixture.processAll()
        let reader = try await Role.make(fixture, readOnly: true)
        defer { reader.drop() }
        let status = try await OnceProcess.run(["status"] + reader.connection, timeout: .seconds(60))
        #expect(status.status == 0, "\(status.output)")
        let audit = try await OnceProcess.run(
            ["audit", "credits", "--database-url", reader.url, "--group", fixture.group], timeout: .seconds(60))
        #expect(audit.status == 0, "\(audit.output)")
        // Reading is all it may do.
        let connection = try PostgresConnection(url: reader.url)
        defer { connection.close() }
        #expect(throws: (any Error).self) { try connection.execute("DELETE FROM credit_ledger") }
        await fixture.tearDown()
    }

    @Test func aMissingGrantStopsOnceRunWithinSecondsWithOneLine() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        _ = try await fixture.produce([fixture.grant("m1")])
        let role = try await Role.make(fixture)
        defer { role.drop() }
        try fixture.execute("REVOKE INSERT ON processed_messages FROM \(role.name)")
        let started = ContinuousClock.now
        let result = try await OnceProcess.run(role.runArguments(["--until-idle", "4"]), timeout: .seconds(60))
        #expect(ContinuousClock.now - started < .seconds(10), "exited after \(ContinuousClock.now - started)")
        expectFailure(result, mentioning: "INSERT on processed_messages")
        #expect(result.output.contains("once grants --role \(role.name)"), "\(result.output)")
        await fixture.tearDown()
    }

    @Test func aGrantRevokedWhileRunningStopsTheMemberInsteadOfRetrying() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        _ = try await fixture.produce([fixture.grant("w1")])
        let role = try await Role.make(fixture)
        defer { role.drop() }
        let member = try OnceProcess(role.runArguments())
        try await eventually("the first record processed", timeout: .seconds(60)) {
            try fixture.count("SELECT count(*) FROM credit_ledger") == 1
        }
        try fixture.execute("REVOKE INSERT ON credit_ledger FROM \(role.name)")
        _ = try await fixture.produce([fixture.grant("w2")])
        let status = try await member.waitForExit(timeout: .seconds(30))
        #expect(status != nil && status != 0, "still running or exited 0:\n\(member.output)")
        let last = member.output.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.contains("permission denied for table credit_ledger"), "\(last)")
        #expect(last.contains("once grants --role"), "\(last)")
        #expect(
            member.output.components(separatedBy: "permission denied").count <= 4,
            "retried instead of stopping:\n\(member.output)")
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 1)
        await fixture.tearDown()
    }

    @Test func anUnmigratedDatabaseStopsOnceRunWithinSecondsWithOneLine() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        let empty = try fixture.emptyDatabase()
        defer { empty.drop() }
        let started = ContinuousClock.now
        let result = try await OnceProcess.run(
            ["run", "--database-url", empty.url, "--brokers", fixture.brokers, "--group", fixture.group,
             "--topics", fixture.topic, "--until-idle", "4"],
            timeout: .seconds(60))
        #expect(ContinuousClock.now - started < .seconds(10), "exited after \(ContinuousClock.now - started)")
        expectFailure(result, mentioning: "run `once migrate`")
        await fixture.tearDown()
    }
}
