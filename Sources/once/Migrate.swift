import ArgumentParser
import Logging
import OnceDomain
import OnceJSON
import OncePostgres
import OnceSchema

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the schema; safe to run twice and from two processes at once.")

    typealias Format = TextOrJSON

    @OptionGroup var connection: DatabaseOptions

    @Option(help: "text or json.")
    var format: Format = .text

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.makeLogger()
        let url = try settings.requireDatabaseURL()
        let client = try await connectDatabase(url, logger: logger)
        let report: MigrationReport
        do {
            report = try await client.withConnection { db in
                let applied = try Migrator(migrations: Migration.pipeline + Domain.migrations).migrate(on: db)
                return try MigrationReport(applied: applied, on: db)
            }
            await client.close()
        } catch {
            await client.close()
            throw error
        }
        switch format {
        case .json: print(JSONWriter.serializeString(report.json))
        case .text: print(report.text)
        }
    }
}

/// What one `once migrate` did: the migrations it applied, and the schema's version (its
/// highest migration) before and after; nil before means there was no schema.
struct MigrationReport: Sendable {
    struct Applied: Sendable {
        var version: Int
        var name: String
    }

    var applied: [Applied]
    var versionBefore: Int?
    var versionAfter: Int?

    /// Reads the migrations the database records, right after `Migrator.migrate` returned
    /// `applied`: the ones recorded but not applied now were there before.
    init(applied: [Int], on db: PostgresConnection) throws {
        let recorded = try db.query("SELECT version, name FROM once_schema_migrations ORDER BY version").map {
            Applied(version: try $0.decode(Int.self, column: 0), name: try $0.decode(String.self, column: 1))
        }
        let now = Set(applied)
        self.applied = recorded.filter { now.contains($0.version) }
        versionBefore = recorded.filter { !now.contains($0.version) }.map(\.version).max()
        versionAfter = recorded.map(\.version).max()
    }

    var text: String {
        applied.isEmpty
            ? "schema is up to date"
            : "applied migrations \(applied.map { String($0.version) }.joined(separator: ", "))"
    }

    var json: JSONValue {
        .object([
            "applied": .array(
                applied.map { .object(["version": .integer(Int64($0.version)), "name": .string($0.name)]) }),
            "schema_version_before": versionBefore.map { .integer(Int64($0)) } ?? .null,
            "schema_version_after": versionAfter.map { .integer(Int64($0)) } ?? .null,
            "up_to_date": .bool(applied.isEmpty),
        ])
    }
}

/// Opens a database session or fails with one clear line (within the connect timeout).
func connectDatabase(_ url: String, logger: Logger) async throws -> PostgresSession {
    do {
        return try await PostgresSession.connect(
            configuration: PostgresConfiguration(url: url, connectTimeout: .seconds(5)), logger: logger)
    } catch {
        throw CommandFailure(oneLine("cannot reach the database: \(error)"))
    }
}

/// Creates the time partitions a command is about to write to (a no-op when they exist), or
/// fails with one line when the schema predates them.
func ensurePartitions(_ client: PostgresSession) async throws {
    do {
        try await client.withConnection { db in try TimePartitions.ensure(on: db) }
    } catch let error as PostgresError where error.sqlState == "42P01" || error.sqlState == "42883" {
        throw CommandFailure(oneLine("the database schema is older than this once (\(error.message)); run `once migrate` first"))
    } catch {
        throw CommandFailure(oneLine("cannot prepare the time partitions: \(error)"))
    }
}

/// Fails with one line when the schema is not migrated, or by an older once: before anything
/// is read or written, instead of at the first statement that names a missing object. A role
/// that may not read the migrations table is left to `checkPrivileges`, which names it.
func checkSchema(_ session: PostgresSession) async throws {
    let known = Set((Migration.pipeline + Domain.migrations).map(\.version))
    let applied: Set<Int>
    do {
        applied = try await session.withConnection { db in
            Set(try db.query("SELECT version FROM once_schema_migrations").map { try $0.decode(Int.self, column: 0) })
        }
    } catch let error as PostgresError where error.kind == .schemaMismatch {
        throw CommandFailure("the database is not migrated (there is no once_schema_migrations): run `once migrate` as the schema's owner")
    } catch let error as PostgresError where error.kind == .insufficientPrivilege {
        return
    }
    let missing = known.subtracting(applied).sorted()
    guard missing.isEmpty else {
        throw CommandFailure(
            "the schema lacks migration\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) of this once: run `once migrate` as the schema's owner")
    }
}
