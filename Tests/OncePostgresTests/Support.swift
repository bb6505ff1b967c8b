import Foundation
import Testing

@testable import OncePostgres

/// The database the integration tests use. Missing configuration is a test failure, not a skip:
/// these tests prove nothing without a server.
func databaseURL() throws -> String {
    try #require(
        ProcessInfo.processInfo.environment["ONCE_DATABASE_URL"],
        "ONCE_DATABASE_URL is not set; start PostgreSQL (deploy/local) and export its URL"
    )
}

func connect() throws -> PostgresConnection {
    try PostgresConnection(url: try databaseURL())
}

/// A table name nobody else uses, for one test.
func uniqueName(_ prefix: String) -> String {
    prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
}

/// Runs `body` and returns the `PostgresError` it throws; records an issue if it throws
/// nothing or something else.
func postgresError(
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> PostgresError? {
    do {
        try body()
        Issue.record("expected a PostgresError, but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as PostgresError {
        return error
    } catch {
        Issue.record("expected a PostgresError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

func count(_ connection: PostgresConnection, _ table: String) throws -> Int64 {
    try #require(connection.query("SELECT count(*) FROM \(table)").first).decode(Int64.self, column: 0)
}

struct Boom: Error {}
