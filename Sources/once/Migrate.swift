import ArgumentParser
import Logging
import OnceDomain
import OncePostgres
import OnceSchema

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the schema; safe to run twice and from two processes at once.")

    @OptionGroup var connection: DatabaseOptions

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.makeLogger()
        let url = try settings.requireDatabaseURL()
        let client = try await connectDatabase(url, logger: logger)
        let applied: [Int]
        do {
            applied = try await client.withConnection { db in
                try Migrator(migrations: Migration.pipeline + Domain.migrations).migrate(on: db)
            }
            await client.close()
        } catch {
            await client.close()
            throw error
        }
        print(applied.isEmpty ? "schema is up to date" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
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
