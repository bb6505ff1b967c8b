import Foundation
import Logging
import OnceKafka
import OncePostgres
import OnceTestSupport
import Testing

@testable import OnceCore

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

