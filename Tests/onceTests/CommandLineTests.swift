import Foundation
import OnceDomain
import OnceSchema
import OnceTestSupport
import Testing

@Suite(.timeLimit(.minutes(3)))
struct CommandLineTests {
    @Test func migrateIsSafeTwiceAndFromTwoProcessesAtOnce() async throws {
        let database = try await TestDatabase.create(migrations: [])
        defer { database.drop() }
        let environment = ["ONCE_DATABASE_URL": database.url]
        async let first = OnceProcess.run(["migrate"], environment: environment)
        async let second = OnceProcess.run(["migrate"], environment: environment)
        let (a, b) = try await (first, second)
        #expect(a.status == 0, "\(a.output)")
        #expect(b.status == 0, "\(b.output)")
        #expect([a.output, b.output].filter { $0.contains("applied migrations") }.count == 1)
        let again = try await OnceProcess.run(["migrate"], environment: environment)
        #expect(again.status == 0)
        #expect(again.output.contains("schema is up to date"))
        let versions = try database.scalar("SELECT count(*) FROM once_schema_migrations", as: Int64.self)
        #expect(versions == Int64(Migration.pipeline.count + Domain.migrations.count))
    }

    @Test func badArgumentsSayWhatIsWrong() async throws {
        let missing = try await OnceProcess.run(["run"], environment: ["ONCE_DATABASE_URL": "", "ONCE_KAFKA_BROKERS": ""])
        #expect(missing.status != 0)
        #expect(missing.output.contains("no database"))
        let badFlag = try await OnceProcess.run(["run", "--connections", "0", "--database-url", "x", "--brokers", "y"])
        #expect(badFlag.status != 0)
        #expect(badFlag.output.contains("--connections"))
        let badProperty = try await OnceProcess.run(["run", "--kafka-property", "novalue", "--database-url", "x", "--brokers", "y"])
        #expect(badProperty.status != 0)
        #expect(badProperty.output.contains("name=value"))
        let unknown = try await OnceProcess.run(["frobnicate"])
        #expect(unknown.status != 0)
    }

    @Test func unreachableServicesFailWithinSecondsWithOneLine() async throws {
        let start = ContinuousClock.now
        let database = try await OnceProcess.run(["migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/once"], timeout: .seconds(30))
        #expect(database.status != 0)
        #expect(database.output.contains("cannot reach the database"))
        let db = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
        defer { db.drop() }
        let broker = try await OnceProcess.run(
            ["run", "--database-url", db.url, "--brokers", "127.0.0.1:1"], timeout: .seconds(30))
        #expect(broker.status != 0)
        #expect(broker.output.contains("cannot reach the broker"))
        let topic = try await OnceProcess.run(
            ["run", "--database-url", db.url, "--brokers", try TestServices.brokers(), "--topics", "no-such-topic-\(UUID().uuidString.prefix(6))"],
            timeout: .seconds(30))
        #expect(topic.status != 0)
        #expect(topic.output.contains("does not exist"))
        #expect(ContinuousClock.now - start < .seconds(60))
    }
}

/// Each command's help lists the flags it uses: the broker's only where a broker is talked to.
@Suite struct HelpTests {
    @Test(arguments: [["migrate"], ["devices", "import"], ["grants"], ["prune"]])
    func databaseOnlyCommandsListNoBrokerFlags(_ command: [String]) async throws {
        let help = try await OnceProcess.run(command + ["--help"], timeout: .seconds(30))
        #expect(help.status == 0)
        #expect(help.output.contains("--database-url"), "\(help.output)")
        for flag in ["--brokers", "--kafka-property", "--topics"] {
            #expect(!help.output.contains(flag), "once \(command.joined(separator: " ")) --help lists \(flag)")
        }
    }

    @Test func runListsThem() async throws {
        let help = try await OnceProcess.run(["run", "--help"], timeout: .seconds(30))
        for flag in ["--database-url", "--brokers", "--kafka-property", "--kafka-properties-file", "--database-url-file"] {
            #expect(help.output.contains(flag), "\(flag)")
        }
    }
}

/// A file that cannot be read is named with the OS's reason, in one line.
@Suite struct UnreadableFileTests {
    @Test func aMissingFileGivesTheOSsReason() async throws {
        let missing = "/nonexistent/devices-\(TestServices.unique("f")).csv"
        let imported = try await OnceProcess.run(
            ["devices", "import", missing, "--database-url", try TestServices.databaseURL()], timeout: .seconds(30))
        expectFailure(imported, mentioning: "cannot read \(missing): No such file or directory")
        let produced = try await OnceProcess.run(
            ["produce", missing, "--brokers", try TestServices.brokers()], timeout: .seconds(30))
        expectFailure(produced, mentioning: "cannot read \(missing): No such file or directory")
    }
}
