import Foundation
import OncePostgres
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite(.timeLimit(.minutes(2)))
struct ErrorTests {
    /// A duplicate key is a typed, classified error whose description does not carry the key.
    @Test func duplicateInsertIsUniqueViolation() throws {
        let connection = try connect()
        let table = uniqueName("dup")
        try connection.execute("CREATE TABLE \(table) (event_id text PRIMARY KEY)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }
        let secret = "evt-secret-4711-\(UUID().uuidString)"
        try connection.execute("INSERT INTO \(table) VALUES ($1)", [.text(secret)])

        let error = try #require(
            postgresError { try connection.execute("INSERT INTO \(table) VALUES ($1)", [.text(secret)]) })
        #expect(error.kind == .uniqueViolation)
        #expect(error.sqlState == "23505")
        #expect(!error.isTransient)
        #expect(error.constraintName == "\(table)_pkey")
        #expect(error.tableName == table)
        #expect(!error.description.contains(secret))
        #expect(!String(describing: error).contains(secret))
        #expect(error.description.contains("23505"))
        #expect(error.detail?.contains(secret) == true)
        #expect(error.debugDescription.contains(secret))

        // The connection is fine afterwards.
        #expect(try count(connection, table) == 1)
    }

    @Test func otherErrorsAreClassified() throws {
        let connection = try connect()
        let syntax = postgresError { try connection.query("SELEKT 1") }
        #expect(syntax?.kind == .other)
        #expect(syntax?.sqlState == "42601")
        let badInput = postgresError { try connection.query("SELECT $1::bigint", [.text("not-a-number-secret")]) }
        #expect(badInput?.sqlState == "22P02")
        #expect(badInput?.description.contains("not-a-number-secret") == false)
        let canceled = postgresError {
            try connection.transaction { tx in
                try tx.execute("SET LOCAL statement_timeout = '50ms'")
                try tx.query("SELECT pg_sleep(5)")
            }
        }
        #expect(canceled?.kind == .queryCanceled)
        #expect(canceled?.sqlState == "57014")
        let nul = postgresError { try connection.query("SELECT $1::text", [.text("a\u{0}b")]) }
        #expect(nul?.kind == .invalidUse)
        #expect(try connection.query("SELECT 1").count == 1)
    }

    /// Nothing listens on port 1: connecting fails at once with a typed error.
    @Test func unreachableServerFailsPromptly() throws {
        let started = ContinuousClock.now
        let error = postgresError {
            _ = try PostgresConnection(url: "postgresql://once:hunter2-secret@127.0.0.1:1/postgres?connect_timeout=2")
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(error?.kind == .connectFailed)
        #expect(error?.isTransient == true)
        #expect(error?.description.contains("127.0.0.1") == true)
        #expect(error?.description.contains("hunter2-secret") == false)
        #expect(error?.debugDescription.contains("hunter2-secret") == false)
    }

    /// A server that accepts TCP but never answers: connect_timeout ends the attempt.
    @Test func silentServerTimesOut() throws {
        let listener = try SilentListener()
        defer { listener.close() }
        let started = ContinuousClock.now
        let error = postgresError {
            _ = try PostgresConnection(
                configuration: PostgresConfiguration(
                    url: "postgresql://postgres@127.0.0.1:\(listener.port)/postgres", connectTimeout: .seconds(2)))
        }
        let elapsed = ContinuousClock.now - started
        #expect(error?.kind == .connectFailed)
        #expect(elapsed >= .seconds(1))
        #expect(elapsed < .seconds(10))
    }

    @Test func clientConnectFailureIsTyped() async throws {
        do {
            _ = try await PostgresSession.connect(url: "postgresql://postgres@127.0.0.1:1/postgres")
            Issue.record("connecting to port 1 succeeded")
        } catch let error as PostgresError {
            #expect(error.kind == .connectFailed)
        }
    }
}

/// A TCP socket on 127.0.0.1 that listens but never accepts: the kernel completes the handshake
/// and the client then waits for a server greeting that never comes.
final class SilentListener {
    let descriptor: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Boom() }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) }
        }
        guard bound == 0, listen(fd, 8) == 0 else {
            _ = Glibc.close(fd)
            throw Boom()
        }
        var length = size
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        descriptor = fd
        port = UInt16(bigEndian: address.sin_port)
    }

    func close() { _ = Glibc.close(descriptor) }
}
