import Foundation
import OncePostgres
import Testing

/// `PostgresError.classification`, the one table retry loops go by: one SQLSTATE of each class,
/// what it means for a retry, and the remedy of those that retrying cannot mend.
@Suite struct FailureClassificationTests {
    @Test(arguments: [
        ("40001", PostgresError.Kind.serializationFailure), ("40P01", .deadlock), ("08006", .connectionLost),
        ("57P01", .connectionLost), ("53300", .unavailable), ("55P03", .unavailable), ("25006", .unavailable),
        ("58030", .unavailable),
    ])
    func transientConditionsAreRetried(_ sqlState: String, _ kind: PostgresError.Kind) {
        let error = PostgresError(kind: PostgresError.kind(forSQLState: sqlState), sqlState: sqlState, message: "m")
        #expect(error.kind == kind)
        #expect(error.isTransient)
        #expect(error.remedy == nil)
    }

    @Test(arguments: [
        ("42501", PostgresError.Kind.insufficientPrivilege, "once grants"), ("42P01", .schemaMismatch, "once migrate"),
        ("42703", .schemaMismatch, "once migrate"), ("42883", .schemaMismatch, "once migrate"),
        ("3F000", .schemaMismatch, "once migrate"), ("28P01", .authenticationFailed, "password"),
        ("28000", .authenticationFailed, "password"), ("3D000", .unknownDatabase, "database name"),
    ])
    func setUpMistakesStopWithTheirRemedy(_ sqlState: String, _ kind: PostgresError.Kind, _ fix: String) {
        let error = PostgresError(kind: PostgresError.kind(forSQLState: sqlState), sqlState: sqlState, message: "m")
        #expect(error.kind == kind)
        #expect(!error.isTransient)
        #expect(error.remedy?.contains(fix) == true)
        #expect(error.description.contains(fix), "the one line carries the remedy: \(error)")
    }

    @Test(arguments: ["23505", "22P02", "23503", "57014", "XX000"])
    func everythingElseIsNeitherTransientNorASetUpMistake(_ sqlState: String) {
        let error = PostgresError(kind: PostgresError.kind(forSQLState: sqlState), sqlState: sqlState, message: "m")
        #expect(!error.isTransient)
        #expect(error.remedy == nil)
    }

    @Test func aRefusedConnectIsReadFromTheServersMessage() {
        #expect(PostgresError.kind(forConnectFailure: #"FATAL:  password authentication failed for user "app""#) == .authenticationFailed)
        #expect(PostgresError.kind(forConnectFailure: #"FATAL:  role "nobody" does not exist"#) == .authenticationFailed)
        #expect(PostgresError.kind(forConnectFailure: #"FATAL:  database "nope" does not exist"#) == .unknownDatabase)
        #expect(PostgresError.kind(forConnectFailure: "Connection refused\n\tIs the server running") == .connectFailed)
    }

    @Test func aConnectToAMissingDatabaseIsNamedSo() throws {
        let url = try databaseURL()
        var components = try #require(URLComponents(string: url))
        components.path = "/once_no_such_database"
        do {
            _ = try PostgresConnection(url: try #require(components.string))
            Issue.record("connected to a database that does not exist")
        } catch let error as PostgresError {
            #expect(error.kind == .unknownDatabase, "\(error)")
            #expect(error.description.contains("check the database name"))
        }
    }
}
