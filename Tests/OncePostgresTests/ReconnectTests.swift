import OncePostgres
import Testing

@Suite(.timeLimit(.minutes(2)))
struct ReconnectTests {
    /// Terminates `pid` from `killer` and waits (server-side, up to 10 s) until it is gone.
    func terminate(_ pid: Int32, from killer: PostgresConnection) throws {
        let done = try #require(
            killer.query("SELECT pg_terminate_backend($1, 10000)", [.int32(pid)]).first
        ).decode(Bool.self, column: 0)
        try #require(done)
    }

    /// After the server drops the session, the next call throws a transient connectionLost and
    /// the call after that runs on a new session, with prepared statements and LISTENs restored.
    @Test func terminatedBackendReconnectsOnTheNextCall() throws {
        let connection = try connect()
        let killer = try connect()
        let table = uniqueName("reconnect")
        try connection.execute("CREATE TABLE \(table) (id int)")
        defer { _ = try? killer.execute("DROP TABLE IF EXISTS \(table)") }
        try connection.prepare(name: "count_\(table)", sql: "SELECT count(*) FROM \(table)")
        let channel = uniqueName("reconnect")
        try connection.listen(channel: channel)

        let firstPID = try #require(connection.backendPID)
        try terminate(firstPID, from: killer)

        let lost = try #require(postgresError { try connection.query("SELECT 1") })
        #expect(lost.kind == .connectionLost)
        #expect(lost.isTransient)
        #expect(connection.backendPID == nil)

        let secondPID = try #require(
            connection.query("SELECT pg_backend_pid()").first
        ).decode(Int32.self, column: 0)
        #expect(secondPID != firstPID)
        #expect(connection.backendPID == secondPID)
        #expect(connection.reconnectCount == 1)
        #expect(try connection.queryPrepared(name: "count_\(table)").first?.decode(Int.self, column: 0) == 0)

        try killer.notify(channel: channel, payload: "after reconnect")
        var payloads: [String] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while payloads.isEmpty, ContinuousClock.now < deadline {
            payloads += try connection.waitForNotifications(timeout: .seconds(10)).map(\.payload)
        }
        #expect(payloads == ["after reconnect"])

        // Loss noticed while waiting for notifications, too.
        try terminate(secondPID, from: killer)
        #expect(
            postgresError { _ = try connection.waitForNotifications(timeout: .seconds(10)) }?.kind == .connectionLost)
        #expect(try connection.query("SELECT 1").count == 1)
        #expect(connection.reconnectCount == 2)
    }

    /// Configured server settings and statements run with `query(prepared:)` hold in every
    /// session, the ones opened by a reconnect included.
    @Test func settingsAndCachedStatementsSurviveAReconnect() throws {
        let connection = try PostgresConnection(
            configuration: PostgresConfiguration(url: try databaseURL(), settings: ["work_mem": "7MB", "jit": "off"]))
        let killer = try connect()
        func settings() throws -> [String] {
            try connection.query(prepared: "once_test_settings", "SELECT current_setting($1), current_setting($2)", ["work_mem", "jit"])
                .map { [try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1)] }[0]
        }
        #expect(try settings() == ["7MB", "off"])
        #expect(try settings() == ["7MB", "off"])
        try terminate(try #require(connection.backendPID), from: killer)
        #expect(postgresError { try connection.query("SELECT 1") }?.kind == .connectionLost)
        #expect(try settings() == ["7MB", "off"])
        #expect(connection.reconnectCount == 1)
    }

    /// A session lost inside a transaction does not reconnect half-way: the transaction fails
    /// as a whole, and the connection reconnects after it.
    @Test func lossInsideTransactionFailsTheWholeTransaction() throws {
        let connection = try connect()
        let killer = try connect()
        let table = uniqueName("reconnect_tx")
        try killer.execute("CREATE TABLE \(table) (id int)")
        defer { _ = try? killer.execute("DROP TABLE IF EXISTS \(table)") }

        let error = postgresError {
            try connection.transaction { tx in
                try tx.execute("INSERT INTO \(table) VALUES (1)")
                try terminate(try #require(tx.backendPID), from: killer)
                let first = postgresError { try tx.execute("INSERT INTO \(table) VALUES (2)") }
                #expect(first?.kind == .connectionLost)
                // Swallowing the error does not let later statements run outside the transaction.
                let second = postgresError { try tx.execute("INSERT INTO \(table) VALUES (3)") }
                #expect(second?.kind == .connectionLost)
            }
        }
        #expect(error?.kind == .connectionLost)
        #expect(try count(connection, table) == 0)
    }

    /// The same through the async client: the connection lives on its own thread.
    @Test func clientReconnectsAfterTermination() async throws {
        let url = try databaseURL()
        let client = try await PostgresSession.connect(url: url)
        let killer = try await PostgresSession.connect(url: url)
        let firstPID = try #require(await client.withConnection { $0.backendPID })
        let done = try await killer.withConnection { connection in
            try connection.query("SELECT pg_terminate_backend($1, 10000)", [.int32(firstPID)]).first?.decode(
                Bool.self, column: 0)
        }
        try #require(done == true)

        do {
            _ = try await client.withConnection { try $0.query("SELECT 1").count }
            Issue.record("the call after termination succeeded")
        } catch let error as PostgresError {
            #expect(error.kind == .connectionLost)
            #expect(error.isTransient)
        }
        let secondPID = try await client.withConnection { connection in
            try connection.query("SELECT pg_backend_pid()").first?.decode(Int32.self, column: 0)
        }
        #expect(secondPID != nil)
        #expect(secondPID != firstPID)

        await client.close()
        await killer.close()
        await client.close()  // idempotent
        await #expect(throws: (any Error).self) { try await client.withConnection { $0.backendPID } }
    }
}
