import Foundation
import OnceDomain
import OnceKafka
import OnceSchema
import OnceTestSupport
import Testing

/// `once run` over TLS to both services: the TLS instances of `deploy/local/services up --tls`
/// (a database server that refuses unencrypted sessions and wants a client certificate, and a
/// broker behind a TLS endpoint that wants one too). A stream goes through with every effect
/// once; a server it must not trust, or a name its certificate does not carry, stops it within
/// seconds with one line that says which side failed.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct TransportSecurityTests {
    /// How long a refused connection may take to be reported.
    static let failureDeadline: Duration = .seconds(10)

    /// `url` with `host` in place of its host, and `parameters` set (nil removes one).
    static func databaseURL(_ url: String, host: String? = nil, _ parameters: [String: String?] = [:]) throws -> String {
        var components = try #require(URLComponents(string: url))
        if let host { components.host = host }
        var items = components.queryItems ?? []
        for (name, value) in parameters.sorted(by: { $0.key < $1.key }) {
            items.removeAll { $0.name == name }
            if let value { items.append(URLQueryItem(name: name, value: value)) }
        }
        components.queryItems = items
        return try #require(components.string)
    }

    /// The flags that point `once` at the TLS broker, trusting `ca`.
    static func brokerFlags(_ tls: TLSServices, ca: String? = nil) -> [String] {
        ["--brokers", tls.brokers]
            + tls.kafkaProperties(ca: ca).sorted { $0.key < $1.key }.flatMap { ["--kafka-property", "\($0.key)=\($0.value)"] }
    }

    typealias TimedResult = (status: Int32, output: String, elapsed: Duration, start: Duration)

    /// Runs `once ARGUMENTS` to its end and measures how long it took; beside it, at the same
    /// moment, a `once` that stops at its flags: how long starting and ending the binary takes
    /// under the machine's load of the moment (seconds when the whole suite runs on two cores).
    static func timedRun(_ arguments: [String]) async throws -> TimedResult {
        func timed(_ arguments: [String]) async throws -> (status: Int32, output: String, elapsed: Duration) {
            let start = ContinuousClock.now
            let result = try await OnceProcess.run(arguments, timeout: .seconds(60))
            return (result.status, result.output, ContinuousClock.now - start)
        }
        async let baseline = timed(["run", "--connections", "0", "--database-url", "x", "--brokers", "y"])
        let result = try await timed(arguments)
        return (result.status, result.output, result.elapsed, try await baseline.elapsed)
    }

    /// A refused start: non-zero, one line naming `side`, within `failureDeadline` of what the
    /// binary's start and exit took meanwhile.
    static func expectRefused(_ result: TimedResult, naming side: String, sourceLocation: SourceLocation = #_sourceLocation) {
        expectFailure((result.status, result.output), mentioning: side, sourceLocation: sourceLocation)
        #expect(
            result.elapsed - result.start < failureDeadline,
            "took \(result.elapsed) to fail (a bare start took \(result.start)):\n\(result.output)",
            sourceLocation: sourceLocation)
    }

    @Test func aStreamOverTLSHasEveryEffectOnce() async throws {
        let tls = try TestServices.tls()
        let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations, serverURL: tls.databaseURL)
        let admin: KafkaAdmin
        do {
            admin = try await KafkaAdmin(bootstrapServers: tls.brokers, properties: tls.kafkaProperties())
        } catch {
            database.drop()
            throw error
        }
        let fixture = OperatorFixture(database: database, admin: admin, brokers: tls.brokers)
        do {
            try await admin.createTopics([KafkaTopicSpecification(name: fixture.topic, partitions: 2)])
            // 40 grants, then 10 of them again (a redelivery: same event ids), all over TLS.
            var configuration = KafkaProducerConfiguration(bootstrapServers: tls.brokers)
            configuration.properties = tls.kafkaProperties()
            let producer = try KafkaProducer(configuration: configuration)
            let ids = (0..<40).map { "tls-\($0)" }
            for id in ids + ids.prefix(10) {
                _ = try await producer.send(
                    KafkaOutgoingRecord(topic: fixture.topic, key: Array(id.utf8), value: fixture.grant(id, account: "acct-\(id)")))
            }
            await producer.close()

            let arguments =
                ["run", "--database-url", database.url] + Self.brokerFlags(tls) + [
                    "--group", fixture.group, "--topics", fixture.topic,
                    "--kafka-property", "max.poll.interval.ms=6000", "--kafka-property", "session.timeout.ms=6000",
                    "--until-idle", "2",
                ]
            let first = try await OnceProcess.run(arguments, timeout: .seconds(120))
            try #require(first.status == 0, "once run over TLS failed:\n\(first.output)")
            // One claim per event id: the redelivered ten add none.
            #expect(try fixture.count("SELECT count(*) FROM processed_messages") == 40)
            #expect(try fixture.count("SELECT count(*) FROM processed_messages WHERE outcome = 'applied'") == 40)
            #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 40)
            #expect(try fixture.count("SELECT count(DISTINCT account_id) FROM credit_ledger") == 40)
            #expect(try fixture.count("SELECT coalesce(sum(balance), 0)::bigint FROM credit_accounts") == 400)
            #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 0)
            // The relay published every outbox row to the TLS broker.
            #expect(try fixture.count("SELECT count(*) FROM outbox") > 0)
            #expect(try fixture.count("SELECT count(*) FROM outbox_publication WHERE NOT published") == 0)
            #expect(try fixture.balancesMatchLedger())

            // A second run over the same stream changes nothing.
            let before = try fixture.snapshot()
            let second = try await OnceProcess.run(arguments, timeout: .seconds(120))
            try #require(second.status == 0, "the second once run over TLS failed:\n\(second.output)")
            #expect(try fixture.snapshot() == before)
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    @Test func aDatabaseServerFromAnotherCAIsRefused() async throws {
        let tls = try TestServices.tls()
        let url = try Self.databaseURL(tls.databaseURL, ["sslrootcert": tls.otherCAFile])
        let result = try await Self.timedRun(["run", "--database-url", url] + Self.brokerFlags(tls))
        Self.expectRefused(result, naming: "database")
        #expect(result.output.contains("certificate verify failed"), "\(result.output)")
    }

    @Test func aDatabaseCertificateForAnotherNameIsRefused() async throws {
        let tls = try TestServices.tls()
        // The server at 127.0.0.1, asked for under a name its certificate does not carry.
        let url = try Self.databaseURL(tls.databaseURL, host: "db.wrong-name.invalid", ["hostaddr": "127.0.0.1"])
        let result = try await Self.timedRun(["run", "--database-url", url] + Self.brokerFlags(tls))
        Self.expectRefused(result, naming: "database")
        #expect(result.output.contains("does not match host name"), "\(result.output)")
    }

    /// The TLS server's own database, migrated, so that `once run` gets as far as the broker.
    private static func migratedDatabase(_ tls: TLSServices) async throws -> String {
        let migrated = try await OnceProcess.run(["migrate", "--database-url", tls.databaseURL], timeout: .seconds(60))
        try #require(migrated.status == 0, "\(migrated.output)")
        return tls.databaseURL
    }

    @Test func aBrokerFromAnotherCAIsRefused() async throws {
        let tls = try TestServices.tls()
        _ = try await Self.migratedDatabase(tls)
        let result = try await Self.timedRun(
            ["run", "--database-url", tls.databaseURL] + Self.brokerFlags(tls, ca: tls.otherCAFile))
        Self.expectRefused(result, naming: "broker")
    }

    @Test func thePlaintextProtocolToTheTLSBrokerIsRefused() async throws {
        let tls = try TestServices.tls()
        _ = try await Self.migratedDatabase(tls)
        let result = try await Self.timedRun(["run", "--database-url", tls.databaseURL, "--brokers", tls.brokers])
        Self.expectRefused(result, naming: "broker")
    }
}
