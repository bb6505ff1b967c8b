import Foundation
import Logging
import OnceKafka
import OncePostgres
import Testing

@testable import OnceCore

/// Services for pipeline tests: the local database and broker from the environment that
/// `deploy/local/services` writes. A missing setting fails the test; nothing here passes
/// without the real services.
enum TestServices {
    static func databaseURL() throws -> String {
        try #require(ProcessInfo.processInfo.environment["ONCE_DATABASE_URL"], "ONCE_DATABASE_URL is not set: run the tests through deploy/local/test")
    }

    static func brokers() throws -> String {
        try #require(ProcessInfo.processInfo.environment["ONCE_KAFKA_BROKERS"], "ONCE_KAFKA_BROKERS is not set: run the tests through deploy/local/test")
    }

    static func unique(_ prefix: String) -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }
}

/// A database of its own for one test, migrated, dropped by `drop()`.
struct TestDatabase {
    let name: String
    let url: String
    private let serverURL: String

    static func create(migrations: [Migration] = Migration.pipeline + TestEffectHandler.migrations) async throws -> TestDatabase {
        let serverURL = try TestServices.databaseURL()
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

    func connect() throws -> PostgresConnection { try PostgresConnection(url: url) }

    /// Runs one query on a short-lived session and decodes the first column of the first row.
    func scalar<T: PostgresDecodable & Sendable>(_ sql: String, _ parameters: [PostgresValue] = [], as type: T.Type = T.self) throws -> T {
        let connection = try connect()
        defer { connection.close() }
        return try connection.query(sql, parameters)[0].decode(T.self, column: 0)
    }

    func drop() {
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

/// Topics of their own for one test: input, output and dead letters.
struct TestTopics {
    let input: String
    let output: String
    let deadLetters: String
    let admin: KafkaAdmin

    static func create(partitions: Int32 = 2) async throws -> TestTopics {
        let admin = try await KafkaAdmin(bootstrapServers: try TestServices.brokers())
        let topics = TestTopics(
            input: TestServices.unique("in"), output: TestServices.unique("out"), deadLetters: TestServices.unique("dlq"), admin: admin)
        try await admin.createTopics([
            KafkaTopicSpecification(name: topics.input, partitions: partitions),
            KafkaTopicSpecification(name: topics.output, partitions: 1),
            KafkaTopicSpecification(name: topics.deadLetters, partitions: 1),
        ])
        return topics
    }

    func delete() async {
        try? await admin.deleteTopics([input, output, deadLetters])
        await admin.close()
    }
}

/// The test event type: `test.effect` v1 with `data.key` (the business key) and an optional
/// `data.fail` that makes the handler reject the event for good.
struct TestEffectHandler: EventHandler {
    struct Command: Sendable {
        var key: String
        var fail: Bool
    }

    static let eventType = "test.effect"
    let outputTopic: String

    static let migrations = [
        Migration(version: 9000, name: "test effects", statements: [
            """
            CREATE TABLE test_effects (
                tenant_id text NOT NULL, key text NOT NULL, event_id text NOT NULL,
                PRIMARY KEY (tenant_id, key))
            """
        ])
    ]

    func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let data = EventData(envelope)
        let fail: Bool
        if case .bool(let value)? = data["fail"] { fail = value } else { fail = false }
        return Command(key: try data.string("key"), fail: fail)
    }

    func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        if let failing = inputs.first(where: \.command.fail) {
            throw PermanentHandlerError("test handler rejects \(failing.envelope.eventID)")
        }
        let inserted = Set(try context.connection.query(
            """
            INSERT INTO test_effects (tenant_id, key, event_id)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
            ON CONFLICT DO NOTHING RETURNING event_id
            """,
            [.textArray(inputs.map(\.envelope.tenantID)), .textArray(inputs.map(\.command.key)), .textArray(inputs.map(\.envelope.eventID))]
        ).map { try $0.decode(String.self, column: 0) })
        try context.publish(inputs.filter { inserted.contains($0.envelope.eventID) }.map { input in
            OutboxMessage(
                tenantID: input.envelope.tenantID, eventType: "test.effected", aggregateID: input.command.key,
                topic: outputTopic, key: input.command.key,
                payload: JSONWriter.serialize(.object(["event_id": .string("out-\(input.command.key)"), "key": .string(input.command.key)])))
        })
        return inputs.map { inserted.contains($0.envelope.eventID) ? .applied : .duplicate }
    }
}

enum TestEvents {
    static func effect(id: String, key: String, tenant: String = "acme", fail: Bool = false) -> [UInt8] {
        var data: [String: JSONValue] = ["key": .string(key)]
        if fail { data["fail"] = .bool(true) }
        return JSONWriter.serialize(.object([
            "event_id": .string(id), "type": .string("test.effect"), "version": .integer(1),
            "tenant_id": .string(tenant), "occurred_at": .string("2026-11-22T10:00:00Z"), "data": .object(data),
        ]))
    }
}

/// Runs a pipeline and a relay in this process until `stop`.
final class RunningPipeline: Sendable {
    let pipeline: ConsumerPipeline
    let relay: OutboxRelay
    let tasks: [Task<Void, any Error>]

    init(database: TestDatabase, topics: TestTopics, group: String, untilIdle: Duration? = nil, connections: Int = 2) throws {
        var configuration = PipelineConfiguration(databaseURL: database.url, brokers: try TestServices.brokers())
        configuration.consumerGroup = group
        configuration.topics = [topics.input]
        configuration.deadLetterTopic = topics.deadLetters
        configuration.connections = connections
        configuration.maxRetryDelay = .milliseconds(500)
        configuration.kafkaProperties = ["max.poll.interval.ms": "6000", "session.timeout.ms": "6000"]
        var registry = HandlerRegistry()
        registry.register(TestEffectHandler(outputTopic: topics.output))
        var logger = Logger(label: "test.pipeline")
        logger.logLevel = .warning
        let pipeline = ConsumerPipeline(configuration: configuration, registry: registry, logger: logger)
        let relay = OutboxRelay(databaseURL: database.url, brokers: configuration.brokers, logger: logger)
        self.pipeline = pipeline
        self.relay = relay
        tasks = [
            Task { try await pipeline.run(untilIdle: untilIdle) },
            Task { try await relay.run() },
        ]
    }

    func stop() async throws {
        pipeline.stop()
        relay.stop()
        for task in tasks { try await task.value }
    }
}

/// Polls `condition` every 50 ms until it holds, or fails after `timeout`.
func eventually(
    _ what: String, timeout: Duration = .seconds(90), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw ConditionTimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// Reads every record of a topic from the beginning until `count` arrived (or `timeout`).
func consumeAll(_ topic: String, partitions: Int32 = 1, count: Int, timeout: Duration = .seconds(60)) async throws -> [KafkaRecord] {
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

struct ConditionTimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}
