import Foundation
import OnceKafka
import OncePostgres
import OnceSchema
import Testing

/// Services for pipeline tests: the local database and broker from the environment that
/// `deploy/local/services` writes. A missing setting fails the test; nothing here passes
/// without the real services.
public enum TestServices {
    public static func databaseURL() throws -> String {
        try #require(ProcessInfo.processInfo.environment["ONCE_DATABASE_URL"], "ONCE_DATABASE_URL is not set: run the tests through deploy/local/test")
    }

    public static func brokers() throws -> String {
        try #require(ProcessInfo.processInfo.environment["ONCE_KAFKA_BROKERS"], "ONCE_KAFKA_BROKERS is not set: run the tests through deploy/local/test")
    }

    public static func unique(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }

    /// The TLS instances that `deploy/local/services up --tls` starts (and `deploy/local/test`
    /// asks for).
    public static func tls() throws -> TLSServices {
        let environment = ProcessInfo.processInfo.environment
        func setting(_ name: String) throws -> String {
            try #require(environment[name], "\(name) is not set: run the tests through deploy/local/test (or deploy/local/services up --tls)")
        }
        return TLSServices(
            databaseURL: try setting("ONCE_TLS_DATABASE_URL"), brokers: try setting("ONCE_TLS_KAFKA_BROKERS"),
            caFile: try setting("ONCE_TLS_CA"), clientCertificate: try setting("ONCE_TLS_CLIENT_CERT"),
            clientKey: try setting("ONCE_TLS_CLIENT_KEY"), otherCAFile: try setting("ONCE_TLS_OTHER_CA"))
    }
}

/// A database server that takes TLS connections only, with a client certificate, and a broker
/// reached through TLS that asks for one too; both certificates come from `caFile`'s CA, and
/// `otherCAFile` is a CA that neither comes from.
public struct TLSServices: Sendable {
    /// A libpq URL of the server's `once` database: `sslmode=verify-full`, the CA, the client
    /// certificate and key.
    public var databaseURL: String
    public var brokers: String
    public var caFile: String
    public var clientCertificate: String
    public var clientKey: String
    public var otherCAFile: String

    /// The librdkafka properties of a client of the TLS broker that trusts `caFile` (or `ca`).
    public func kafkaProperties(ca: String? = nil) -> [String: String] {
        [
            "security.protocol": "ssl", "ssl.ca.location": ca ?? caFile,
            "ssl.certificate.location": clientCertificate, "ssl.key.location": clientKey,
        ]
    }
}

/// A database of its own for one test, migrated, dropped by `drop()`.
public struct TestDatabase: Sendable {
    public let name: String
    public let url: String
    private let serverURL: String

    /// On `serverURL`'s server (default: `ONCE_DATABASE_URL`'s), reached with its parameters.
    public static func create(migrations: [Migration], serverURL: String? = nil) async throws -> TestDatabase {
        let serverURL = try serverURL ?? TestServices.databaseURL()
        let name = "once_test_\(UUID().uuidString.prefix(8).lowercased())"
        let admin = try PostgresConnection(url: serverURL)
        try admin.execute("CREATE DATABASE \(name)")
        admin.close()
        let url = try replacingDatabase(in: serverURL, with: name)
        let connection = try PostgresConnection(url: url)
        try Migrator(migrations: migrations).migrate(on: connection)
        connection.close()
        return TestDatabase(name: name, url: url, serverURL: serverURL)
    }

    public func connect() throws -> PostgresConnection { try PostgresConnection(url: url) }

    /// Runs one query on a short-lived session and decodes the first column of the first row.
    public func scalar<T: PostgresDecodable & Sendable>(_ sql: String, _ parameters: [PostgresValue] = [], as type: T.Type = T.self) throws -> T {
        let connection = try connect()
        defer { connection.close() }
        return try connection.query(sql, parameters)[0].decode(T.self, column: 0)
    }

    /// Runs `sql` on a short-lived session of the server's maintenance database (not this one):
    /// for statements about this database itself, such as `ALTER DATABASE`.
    public func executeOnServer(_ sql: String, _ parameters: [PostgresValue] = []) throws {
        let admin = try PostgresConnection(url: serverURL)
        defer { admin.close() }
        _ = try admin.query(sql, parameters)
    }

    public func drop() {
        guard let admin = try? PostgresConnection(url: serverURL) else { return }
        _ = try? admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        admin.close()
    }

    private static func replacingDatabase(in url: String, with name: String) throws -> String {
        var components = try #require(URLComponents(string: url), "ONCE_DATABASE_URL must be a URL")
        components.path = "/\(name)"
        return try #require(components.string)
    }
}

/// Polls `condition` every 50 ms until it holds, or fails after `timeout`.
public func eventually(
    _ what: String, timeout: Duration = .seconds(90), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw ConditionTimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// Reads every record of a topic from the beginning until `count` arrived (or `timeout`).
public func consumeAll(_ topic: String, partitions: Int32 = 1, count: Int, timeout: Duration = .seconds(60)) async throws -> [KafkaRecord] {
    var configuration = KafkaConsumerConfiguration(bootstrapServers: try TestServices.brokers(), groupID: TestServices.unique("reader"))
    configuration.maxPollInterval = .seconds(6)
    configuration.sessionTimeout = .seconds(6)
    let consumer = try await KafkaConsumer(configuration: configuration)
    try await consumer.assign(Dictionary(uniqueKeysWithValues: (0..<partitions).map { (TopicPartition(topic, $0), Int64(-2)) }))
    var records: [KafkaRecord] = []
    let deadline = ContinuousClock.now + timeout
    while records.count < count && ContinuousClock.now < deadline {
        records += try await consumer.poll(maxRecords: 1000, timeout: .milliseconds(100)).records
    }
    await consumer.close()
    return records
}

public struct ConditionTimedOut: Error, CustomStringConvertible {
    public var what: String
    public var description: String { "timed out waiting for \(what)" }
}

extension ConditionTimedOut {
    public init(_ what: String) { self.what = what }
}
