import OncePostgres
import Testing

@Suite(.timeLimit(.minutes(2)))
struct TransactionTests {
    /// A transaction whose body throws leaves no trace.
    @Test func rollbackLeavesNoTrace() throws {
        let connection = try connect()
        let table = uniqueName("tx")
        try connection.execute("CREATE TABLE \(table) (id int PRIMARY KEY)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }

        #expect(throws: Boom.self) {
            try connection.transaction { tx in
                try tx.execute("INSERT INTO \(table) VALUES (1)")
                #expect(try count(tx, table) == 1)
                throw Boom()
            }
        }
        #expect(try count(connection, table) == 0)

        // A failing statement rolls back the statements before it too.
        let error = postgresError {
            try connection.transaction(isolation: .serializable) { tx in
                try tx.execute("INSERT INTO \(table) VALUES (2)")
                try tx.execute("INSERT INTO \(table) VALUES (2)")
            }
        }
        #expect(error?.kind == .uniqueViolation)
        #expect(try count(connection, table) == 0)

        // Committed work stays, and the value comes back.
        let value = try connection.transaction(isolation: .repeatableRead) { tx in
            try tx.execute("INSERT INTO \(table) VALUES (3)")
        }
        #expect(value == 1)
        #expect(try count(connection, table) == 1)
    }

    /// A failure swallowed inside the body still fails the transaction at COMMIT.
    @Test func swallowedFailureFailsTheCommit() throws {
        let connection = try connect()
        let table = uniqueName("tx_swallow")
        try connection.execute("CREATE TABLE \(table) (id int PRIMARY KEY)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }
        let error = postgresError {
            try connection.transaction { tx in
                try tx.execute("INSERT INTO \(table) VALUES (1)")
                _ = try? tx.query("SELECT 1 / 0")
            }
        }
        #expect(error?.sqlState == "25P02")
        #expect(try count(connection, table) == 0)
        #expect(throws: PostgresError.self) {
            try connection.transaction { tx in try tx.transaction { _ in } }
        }
    }

    /// Rolling back to a savepoint undoes only the savepoint's work; the outer work commits.
    @Test func savepointRollbackKeepsOuterWork() throws {
        let connection = try connect()
        let table = uniqueName("sp")
        try connection.execute("CREATE TABLE \(table) (id int PRIMARY KEY)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }

        try connection.transaction { tx in
            try tx.execute("INSERT INTO \(table) VALUES (1)")
            do {
                try tx.savepoint("first attempt") { sp in
                    try sp.execute("INSERT INTO \(table) VALUES (2)")
                    throw Boom()
                }
                Issue.record("the savepoint body's error was not rethrown")
            } catch is Boom {}
            // A server error inside a savepoint does not abort the outer transaction.
            let duplicate = postgresError {
                _ = try tx.savepoint("first attempt") { sp in try sp.execute("INSERT INTO \(table) VALUES (1)") }
            }
            #expect(duplicate?.kind == .uniqueViolation)
            let kept = try tx.savepoint("kept") { sp in try sp.execute("INSERT INTO \(table) VALUES (3)") }
            #expect(kept == 1)
        }
        let ids = try connection.query("SELECT id FROM \(table) ORDER BY id").map { try $0.decode(Int.self, column: 0) }
        #expect(ids == [1, 3])
    }
}
