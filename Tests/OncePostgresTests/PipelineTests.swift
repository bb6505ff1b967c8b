import OncePostgres
import Testing

@Suite(.timeLimit(.minutes(2)))
struct PipelineTests {
    /// 1,000 inserts go out with one sync and all land.
    @Test func thousandInsertsWithOneSync() throws {
        let connection = try connect()
        let table = uniqueName("pipe")
        try connection.execute("CREATE TABLE \(table) (id bigint PRIMARY KEY, label text)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }

        let results = try connection.pipeline { pipeline in
            for id in 0..<1000 {
                try pipeline.query("INSERT INTO \(table) VALUES ($1, $2)", [.int(id), .text("row \(id), \"quoted\"")])
            }
            #expect(pipeline.count == 1000)
        }
        #expect(results.count == 1000)
        #expect(results.allSatisfy { $0.affectedRows == 1 })
        #expect(try count(connection, table) == 1000)

        // Prepared statements and queries returning rows mix in one pipeline.
        try connection.prepare(name: "ins_\(table)", sql: "INSERT INTO \(table) VALUES ($1, $2) RETURNING id")
        let mixed = try connection.pipeline { pipeline in
            for id in 1000..<2000 {
                try pipeline.queryPrepared(name: "ins_\(table)", [.int(id), .text("p")])
            }
            try pipeline.query("SELECT count(*) FROM \(table)")
        }
        #expect(mixed.count == 1001)
        #expect(try mixed[999].first?.decode(Int.self, column: 0) == 1999)
        #expect(try mixed[1000].first?.decode(Int64.self, column: 0) == 2000)
        #expect(try connection.pipeline { _ in }.isEmpty)
    }

    /// A failing statement is reported with its index; the pipeline's implicit transaction rolls
    /// back; the connection is out of pipeline mode and usable, also for another pipeline.
    @Test func errorMidPipelineIsReportedAndConnectionStaysUsable() throws {
        let connection = try connect()
        let table = uniqueName("pipe_err")
        try connection.execute("CREATE TABLE \(table) (id bigint PRIMARY KEY)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }
        try connection.execute("INSERT INTO \(table) VALUES (5)")

        let error = try #require(
            postgresError {
                _ = try connection.pipeline { pipeline in
                    for id in 0..<10 { try pipeline.query("INSERT INTO \(table) VALUES ($1)", [.int(id)]) }
                }
            })
        #expect(error.kind == .uniqueViolation)
        #expect(error.statementIndex == 5)
        #expect(error.description.contains("statement 5"))
        #expect(try count(connection, table) == 1)

        #expect(try connection.query("SELECT 1").count == 1)
        let again = try connection.pipeline { pipeline in
            for id in 10..<20 { try pipeline.query("INSERT INTO \(table) VALUES ($1)", [.int(id)]) }
        }
        #expect(again.count == 10)
        #expect(try count(connection, table) == 11)

        // Errors in the first and the last statement, and encoding errors while building.
        #expect(postgresError { _ = try connection.pipeline { try $0.query("SELEKT") } }?.statementIndex == 0)
        let last = postgresError {
            _ = try connection.pipeline { pipeline in
                try pipeline.query("SELECT 1")
                try pipeline.query("SELECT 1 / 0")
            }
        }
        #expect(last?.statementIndex == 1)
        #expect(last?.sqlState == "22012")
        let encoding = postgresError {
            _ = try connection.pipeline { pipeline in
                try pipeline.query("SELECT 1")
                try pipeline.query("SELECT $1", [.text("\u{0}")])
            }
        }
        #expect(encoding?.kind == .invalidUse)
        #expect(encoding?.statementIndex == 1)

        // Inside an explicit transaction, a failed pipeline aborts it and transaction() rolls back.
        #expect(throws: PostgresError.self) {
            try connection.transaction { tx in
                _ = try tx.pipeline { pipeline in
                    try pipeline.query("INSERT INTO \(table) VALUES (100)")
                    try pipeline.query("INSERT INTO \(table) VALUES (5)")
                }
            }
        }
        #expect(try count(connection, table) == 11)
    }

    /// Large parameters and large results in flight at once: the non-blocking flush reads
    /// results while sending, so neither side blocks on full socket buffers.
    @Test func largeTrafficBothWaysDoesNotDeadlock() throws {
        let connection = try connect()
        let payload = String(repeating: "0123456789abcdef", count: 8 * 1024)  // 128 KiB
        let statements = 256  // 32 MiB each way
        let results = try connection.pipeline { pipeline in
            for index in 0..<statements {
                try pipeline.query("SELECT $1::text || $2::text", [.text(payload), .text(String(index))])
            }
        }
        #expect(results.count == statements)
        for (index, result) in results.enumerated() {
            let text = try #require(result.first).decode(String.self, column: 0)
            #expect(text.utf8.count == payload.utf8.count + String(index).utf8.count)
            #expect(text.hasSuffix(String(index)))
        }
    }
}
