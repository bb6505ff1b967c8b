import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// `once prune`, `once status`'s retention section and `once run`'s own pruning, against
/// one-second partitions.
@Suite(.timeLimit(.minutes(3)))
struct PruneCommandTests {
    /// A fixture whose log tables have one-second partitions, with `grants` processed.
    private func fixture(grants: Int) async throws -> OperatorFixture {
        let fixture = try await OperatorFixture.make()
        let db = try fixture.database.connect()
        try TestPartitions.repartition(db, width: "1 second", ahead: 40)
        db.close()
        try await fixture.produce((0..<grants).map { fixture.grant("g-\($0)") })
        try await fixture.processAll()
        return fixture
    }

    private func json(_ output: String) throws -> JSONValue {
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
        return try JSONParser.parse(Array(line.utf8))
    }

    @Test func badWindowsSayWhatIsWrong() async throws {
        let prune = try await OnceProcess.run(["prune", "--older-than", "soon", "--database-url", "x"])
        #expect(prune.status == 64 && prune.output.contains("--older-than") && prune.output.contains("7d"), "\(prune.output)")
        let run = try await OnceProcess.run(["run", "--retention", "3 weeks", "--database-url", "x", "--brokers", "y"])
        #expect(run.status != 0 && run.output.contains("--retention") && run.output.contains("never"), "\(run.output)")
        let environment = try await OnceProcess.run(["prune", "--database-url", "x"], environment: ["ONCE_RETENTION": "P1X"])
        #expect(environment.status != 0 && environment.output.contains("ONCE_RETENTION"), "\(environment.output)")
    }

    @Test func pruneListsThenDropsWhatIsPastTheWindow() async throws {
        let fixture = try await fixture(grants: 5)
        defer { Task { await fixture.tearDown() } }
        let claimed = try fixture.database.scalar(
            "SELECT min(tableoid::regclass::text) FROM processed_messages WHERE consumer_group = $1",
            [.text(fixture.group)], as: String.self)
        try await eventually("the claims' partition is past", timeout: .seconds(10)) {
            try fixture.database.scalar(
                "SELECT upper < date_bin(interval '1 second', now(), 'epoch') FROM once_time_partitions WHERE partition = $1",
                [.text(claimed)], as: Bool.self)
        }
        // The relay published everything (processAll waits for it), so outbox partitions may go too.
        let plan = try json(try await fixture.onceOnDatabase(["prune", "--older-than", "0s", "--dry-run", "--format", "json"]).output)
        let planned = plan["partitions"]?.arrayValue?.compactMap { $0["partition"]?.stringValue } ?? []
        #expect(planned.contains(claimed))
        #expect(try fixture.database.scalar("SELECT count(*) FROM processed_messages", as: Int64.self) == 5, "a dry run drops nothing")

        let pruned = try await fixture.onceOnDatabase(["prune", "--older-than", "0s"])
        #expect(pruned.status == 0, "\(pruned.output)")
        #expect(pruned.output.contains("dropped") && pruned.output.contains(claimed), "\(pruned.output)")
        #expect(try fixture.database.scalar("SELECT count(*) FROM processed_messages", as: Int64.self) == 0)
        #expect(try fixture.database.scalar("SELECT count(*) FROM credit_ledger", as: Int64.self) == 5)

        let status = try await fixture.once(["status", "--format", "json", "--retention", "1s"])
        let retention = try #require(try json(status.output)["retention"], "\(status.output)")
        #expect(retention["window"]?.stringValue == "1s")
        #expect(retention["partition_width_seconds"] == .integer(1))
        let names = retention["partitions"]?.arrayValue?.compactMap { $0["partition"]?.stringValue } ?? []
        #expect(!names.contains(claimed) && names.contains("dead_letters_unresolved"))
        #expect(retention["next_prune"]?["partition"]?.stringValue != nil)
        let table = try await fixture.once(["status", "--retention", "1s"])
        #expect(table.output.contains("Retention: 1s · partitions of 1s"), "\(table.output)")
    }

    @Test func runPrunesOnItsOwnSchedule() async throws {
        let fixture = try await fixture(grants: 3)
        defer { Task { await fixture.tearDown() } }
        let claimed = try fixture.database.scalar(
            "SELECT min(tableoid::regclass::text) FROM processed_messages WHERE consumer_group = $1",
            [.text(fixture.group)], as: String.self)
        // A member that keeps one second: it drops the claims' partition within seconds.
        let member = try OnceProcess(fixture.runArguments(["--retention", "1s"]))
        defer { member.signal(SIGKILL) }
        try await eventually("once run pruned \(claimed)", timeout: .seconds(40)) {
            try fixture.database.scalar("SELECT to_regclass($1) IS NULL", [.text(claimed)], as: Bool.self)
        }
        member.signal(SIGTERM)
        #expect(try await member.waitForExit(timeout: .seconds(20)) == 0)
        #expect(try fixture.database.scalar("SELECT count(*) FROM credit_ledger", as: Int64.self) == 3)
    }
}
