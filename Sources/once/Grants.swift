import ArgumentParser
import OnceDomain
import OncePostgres
import OnceSchema

struct Grants: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the GRANTs a role needs to run once (or only to read: status, audit).",
        discussion: """
            once migrate runs as the schema's owner; every other command can run as a role with
            only the privileges printed here, on once's own tables, sequences and functions: no
            DDL, no superuser. Apply them as the owner, e.g.

                once grants --role once_app | psql "$OWNER_URL" -v ON_ERROR_STOP=1

            --read-only prints what status and audit need (SELECT). A run-time role leaves
            pruning to `once prune` run as the owner; time partitions ahead of need are made
            through once_ensure_partitions, which runs with the owner's rights.
            """)

    @OptionGroup var connection: DatabaseOptions

    @Option(help: "The role to grant to.")
    var role: String

    @Flag(help: "Only what reading needs (once status, once audit).")
    var readOnly = false

    func validate() throws {
        guard !role.isEmpty else { throw ValidationError("--role: give the role's name") }
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.makeLogger()
        let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
        let (role, readOnly) = (self.role, self.readOnly)
        let needed = Self.runTime
        let statements: [String]
        do {
            statements = try await database.withConnection { db in
                try (readOnly ? needed.readOnly : needed).grantStatements(role: role, readOnly: readOnly, on: db)
            }
            await database.close()
        } catch {
            await database.close()
            throw CommandFailure(oneLine("cannot read the schema: \(error)"))
        }
        for statement in statements { print(statement + ";") }
    }

    /// What every command but `migrate` needs: the pipeline's tables and the domain's.
    static let runTime = Privileges.pipeline.adding(Domain.privileges)
}

/// Fails with one line when the role lacks a privilege that once run needs (`once grants`).
func checkPrivileges(_ session: PostgresSession) async throws {
    let missing = try await session.withConnection { db in try Grants.runTime.missing(on: db) }
    guard !missing.isEmpty else { return }
    let role = try await session.withConnection { db in try db.query("SELECT current_user")[0].decode(String.self, column: 0) }
    let listed = missing.prefix(3).joined(separator: ", ") + (missing.count > 3 ? " (and \(missing.count - 3) more)" : "")
    throw CommandFailure(
        "role \(role) lacks \(listed): as the schema's owner, apply what `once grants --role \(role)` prints (or run `once migrate` first if the tables are missing)")
}
