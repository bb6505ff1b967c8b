import Foundation
import Logging
import OnceEnvelope
import OnceJSON
import OnceKafka
import OnceOutbox
import OncePipeline
import OncePostgres
import OnceSchema
import ServiceLifecycle

/// Topics of their own for one test: input, output and dead letters.
public struct TestTopics: Sendable {
    public let input: String
    public let output: String
    public let deadLetters: String
    let admin: KafkaAdmin

    public static func create(partitions: Int32 = 2) async throws -> TestTopics {
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

    public func delete() async {
        try? await admin.deleteTopics([input, output, deadLetters])
        await admin.close()
    }
}

/// The test event type: `test.effect` v1 with `data.key` (the business key) and an optional
/// `data.fail` that makes the handler reject the event for good.
extension HandlerRegistry {
    /// A registry of `TestEffectHandler` alone, its outbound events on `outputTopic`.
    public static func testEffects(outputTopic: String = "out") -> HandlerRegistry {
        var registry = HandlerRegistry()
        registry.register(TestEffectHandler(outputTopic: outputTopic))
        return registry
    }
}

public struct TestEffectHandler: EventHandler {
    public struct Command: Sendable {
        var key: String
        var fail: Bool
    }

    public static let eventType = "test.effect"
    let outputTopic: String

    public init(outputTopic: String) {
        self.outputTopic = outputTopic
    }

    public static let migrations = [
        Migration(version: 9000, name: "test effects", statements: [
            """
            CREATE TABLE test_effects (
                tenant_id text NOT NULL, key text NOT NULL, event_id text NOT NULL,
                PRIMARY KEY (tenant_id, key))
            """
        ])
    ]

    public func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let data = EventData(envelope)
        let fail: Bool
        if case .bool(let value)? = data["fail"] { fail = value } else { fail = false }
        return Command(key: try data.string("key"), fail: fail)
    }

    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
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

public enum TestEvents {
    public static func effect(id: String, key: String, tenant: String = "acme", fail: Bool = false) -> [UInt8] {
        var data: [String: JSONValue] = ["key": .string(key)]
        if fail { data["fail"] = .bool(true) }
        return JSONWriter.serialize(.object([
            "event_id": .string(id), "type": .string("test.effect"), "version": .integer(1),
            "tenant_id": .string(tenant), "occurred_at": .string("2026-11-22T10:00:00Z"), "data": .object(data),
        ]))
    }
}

/// Runs a pipeline and a relay in this process, in one `ServiceGroup`, until `stop`.
public final class RunningPipeline: Sendable {
    public let pipeline: ConsumerPipeline
    public let relay: OutboxRelay
    let group: ServiceGroup
    let task: Task<Void, any Error>

    public init(database: TestDatabase, topics: TestTopics, group: String, untilIdle: Duration? = nil, connections: Int = 2) throws {
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
        let pipeline = ConsumerPipeline(configuration: configuration, registry: registry, untilIdle: untilIdle, logger: logger)
        let relay = OutboxRelay(databaseURL: database.url, brokers: configuration.brokers, logger: logger)
        self.pipeline = pipeline
        self.relay = relay
        // The relay goes on after a pipeline run with `untilIdle` returns, until `stop`.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: pipeline, successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: relay, failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                logger: logger))
        self.group = group
        task = Task { try await group.run() }
    }

    /// A graceful shutdown of both, as SIGTERM gives `once run`; returns when both ended.
    public func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }
}

/// One service run in its own `ServiceGroup` (no signals), until `stop`.
public final class RunningService: Sendable {
    let group: ServiceGroup
    let task: Task<Void, any Error>

    public init(_ service: any Service) {
        let group = ServiceGroup(services: [service], logger: Logger(label: "test.service"))
        self.group = group
        task = Task { try await group.run() }
    }

    /// A graceful shutdown; returns when the service ended (rethrowing its error).
    public func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }
}
