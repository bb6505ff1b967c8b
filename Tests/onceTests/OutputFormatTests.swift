import Foundation
import OnceDomain
import OnceJSON
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

/// `--format json` of `once migrate`, `once devices import` and `once produce`: one object on
/// stdout with what the text line says; failures stay one line on stderr.
@Suite(.timeLimit(.minutes(4)))
struct OutputFormatTests {
    /// The migrations of this once, by version.
    static let migrations = (Migration.pipeline + Domain.migrations).sorted { $0.version < $1.version }

    /// Runs a command that should print one JSON object and nothing else.
    func report(_ run: () async throws -> (status: Int32, output: String)) async throws -> JSONValue {
        let result = try await run()
        try #require(result.status == 0, "\(result.output)")
        #expect(outputLines(result.output).count == 1, "expected one JSON line:\n\(result.output)")
        return try operatorJSON(in: result.output)
    }

    func versions(_ value: JSONValue?) -> [Int64?] {
        jsonArray(value).map { $0["version"]?.int64Value }
    }

    @Test func migrateNamesTheMigrationsItAppliedAndTheSchemaVersionBeforeAndAfter() async throws {
        let fixture = try await OperatorFixture.make()
        let latest = Int64(try #require(Self.migrations.last).version)

        // A database with no schema: everything is applied, there was no version before.
        let fresh = try fixture.emptyDatabase()
        defer { fresh.drop() }
        let created = try await report {
            try await OnceProcess.run(["migrate", "--format", "json", "--database-url", fresh.url])
        }
        #expect(versions(created["applied"]) == Self.migrations.map { Int64($0.version) })
        #expect(jsonArray(created["applied"]).map { $0["name"]?.stringValue } == Self.migrations.map(\.name))
        #expect(created["schema_version_before"]?.isNull == true)
        #expect(created["schema_version_after"]?.int64Value == latest)
        #expect(created["up_to_date"]?.boolValue == false)

        // A schema an older once left (the pipeline's tables only): the domain's migrations follow.
        let older = try fixture.emptyDatabase()
        defer { older.drop() }
        let connection = try PostgresConnection(url: older.url)
        try Migrator(migrations: Migration.pipeline).migrate(on: connection)
        connection.close()
        let upgraded = try await report {
            try await OnceProcess.run(["migrate", "--format", "json", "--database-url", older.url])
        }
        #expect(versions(upgraded["applied"]) == Domain.migrations.map { Int64($0.version) }.sorted())
        #expect(
            upgraded["schema_version_before"]?.int64Value
                == Int64(try #require(Migration.pipeline.map(\.version).max())))
        #expect(upgraded["schema_version_after"]?.int64Value == latest)

        // Up to date: nothing applied, the same version before and after; the text is as it was.
        let again = try await report { try await fixture.onceOnDatabase(["migrate", "--format", "json"]) }
        #expect(jsonArray(again["applied"]).isEmpty)
        #expect(again["schema_version_before"]?.int64Value == latest)
        #expect(again["schema_version_after"]?.int64Value == latest)
        #expect(again["up_to_date"]?.boolValue == true)
        let text = try await fixture.onceOnDatabase(["migrate"])
        #expect(text.status == 0)
        #expect(outputLines(text.output) == ["schema is up to date"])
        await fixture.tearDown()
    }

    @Test func devicesImportReportsTheCountsOfItsTextLine() async throws {
        let fixture = try await OperatorFixture.make()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(
            "\(TestServices.unique("devices")).csv")
        defer { try? FileManager.default.removeItem(at: file) }
        func write(_ rows: [String]) throws {
            let lines = ["tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at"] + rows
            try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        }
        func importFile(_ format: [String] = ["--format", "json"]) async throws -> (status: Int32, output: String) {
            try await fixture.onceOnDatabase(["devices", "import", file.path] + format)
        }

        try write(["acme,356938000000000,IDLE,6,,", "acme,356938000000001,ACTIVE,,wf-1,"])
        let first = try await report { try await importFile() }
        #expect(first["file"]?.stringValue == file.path)
        #expect(first["rows"]?.int64Value == 2)
        #expect(first["inserted"]?.int64Value == 2)
        #expect(first["updated"]?.int64Value == 0)
        #expect(first["unchanged"]?.int64Value == 0)

        // One device changed, one as it was, one new.
        try write([
            "acme,356938000000000,LOCKED,6,,", "acme,356938000000001,ACTIVE,,wf-1,", "acme,356938000000002,IDLE,,,",
        ])
        let second = try await report { try await importFile() }
        #expect(second["rows"]?.int64Value == 3)
        #expect(second["inserted"]?.int64Value == 1)
        #expect(second["updated"]?.int64Value == 1)
        #expect(second["unchanged"]?.int64Value == 1)
        #expect(try fixture.count("SELECT count(*) FROM devices") == 3)

        let text = try await importFile([])
        #expect(outputLines(text.output) == ["devices: 3 rows, 0 inserted, 0 updated, 3 unchanged"])

        // A bad row fails the file as before: one line naming it, no JSON, nothing written.
        try write(["acme,356938000000003,IDLE,,,", "acme,356938000000004,SLEEPING,,,"])
        let bad = try await importFile()
        expectFailure(bad, mentioning: "line 3: state")
        #expect(!bad.output.contains("{"), "\(bad.output)")
        #expect(try fixture.count("SELECT count(*) FROM devices") == 3)
        await fixture.tearDown()
    }

    @Test func produceReportsWhereTheRecordsWent() async throws {
        let fixture = try await OperatorFixture.make()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(
            "\(TestServices.unique("events")).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        let lines = (0..<3).map { String(decoding: fixture.grant("g\($0)"), as: UTF8.self) } + ["not json"]
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)

        let produced = try await report {
            try await fixture.once([
                "produce", file.path, "--topic", fixture.topic, "--repeat", "2", "--format", "json",
            ])
        }
        #expect(produced["files"]?.int64Value == 1)
        #expect(produced["repeat"]?.int64Value == 2)
        #expect(produced["produced"]?.int64Value == 8)
        #expect(produced["failed"]?.int64Value == 0)
        #expect(jsonArray(produced["failures"]).isEmpty)
        let partitions = jsonArray(produced["partitions"])
        try #require(partitions.count == 1, "\(produced)")
        #expect(partitions[0]["topic"]?.stringValue == fixture.topic)
        #expect(partitions[0]["partition"]?.int64Value == 0)
        #expect(partitions[0]["records"]?.int64Value == 8)
        #expect(partitions[0]["first_offset"]?.int64Value == 0)
        #expect(partitions[0]["last_offset"]?.int64Value == 7)

        let text = try await fixture.once(["produce", file.path, "--topic", fixture.topic])
        #expect(text.status == 0)
        #expect(outputLines(text.output) == ["produced 4 records from 1 file(s)"])

        // A file that cannot be read fails as before, without JSON.
        let missing = "/nonexistent/\(TestServices.unique("events")).jsonl"
        let failed = try await fixture.once(["produce", missing, "--topic", fixture.topic, "--format", "json"])
        expectFailure(failed, mentioning: "cannot read \(missing)")
        #expect(!failed.output.contains("{"), "\(failed.output)")
        await fixture.tearDown()
    }
}
