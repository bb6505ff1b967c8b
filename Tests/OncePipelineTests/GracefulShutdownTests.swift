import Logging
import OnceEnvelope
import OnceKafka
import OncePipeline
import OncePostgres
import OnceSchema
import OnceTestSupport
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

/// The pipeline's lifecycle driven as `ServiceGroup` drives it: a graceful shutdown that
/// arrives while batches are in flight lets them commit, and `run` returns with nothing of
/// the pipeline left running.
@Suite(.timeLimit(.minutes(3)))
struct GracefulShutdownTests {
    /// `TestEffectHandler`, holding every batch open in the database for a moment.
    struct SlowEffectHandler: EventHandler {
        static let eventType = TestEffectHandler.eventType
        let inner: TestEffectHandler

        func decode(_ envelope: Envelope) throws(EnvelopeError) -> TestEffectHandler.Command {
            try inner.decode(envelope)
        }

        func apply(_ inputs: [HandlerInput<TestEffectHandler.Command>], in context: HandlerContext) throws -> [EventOutcome] {
            try context.connection.execute("SELECT pg_sleep(0.4)")
            return try inner.apply(inputs, in: context)
        }
    }

    @Test func batchesInFlightCommitAndNoTaskOutlivesRun() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let topics = try await TestTopics.create(partitions: 4)
        defer { Task { await topics.delete() } }

        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: try TestServices.brokers()))
        let results = try await producer.send((0..<400).map { index in
            KafkaOutgoingRecord(
                topic: topics.input, key: Array("k\(index)".utf8), value: TestEvents.effect(id: "e\(index)", key: "k\(index)"))
        })
        for result in results { _ = try result.get() }
        await producer.close()

        var configuration = PipelineConfiguration(databaseURL: database.url, brokers: try TestServices.brokers())
        configuration.consumerGroup = TestServices.unique("group")
        configuration.topics = [topics.input]
        configuration.deadLetterTopic = topics.deadLetters
        configuration.connections = 2
        // Small batches, so that many are still to come when the shutdown arrives.
        configuration.maxBatchRecords = 10
        configuration.kafkaProperties = ["session.timeout.ms": "6000"]
        var registry = HandlerRegistry()
        registry.register(SlowEffectHandler(inner: TestEffectHandler(outputTopic: topics.output)))
        var logger = Logger(label: "test.pipeline")
        logger.logLevel = .warning
        let pipeline = ConsumerPipeline(configuration: configuration, registry: registry, logger: logger)

        let sessions = """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name IN ('once-worker-0', 'once-worker-1', 'once-control')
            """
        let inFlight = """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name LIKE 'once-worker-%' AND query LIKE '%pg_sleep%'
              AND state = 'active'
            """
        let stored = "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets"

        var storedAtShutdown: Int64 = 0
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await pipeline.run() }
                // Both sessions are in the middle of a batch transaction: shut down now.
                try await eventually("two batches in flight") { try database.scalar(inFlight, as: Int64.self) == 2 }
                storedAtShutdown = try database.scalar(stored, as: Int64.self)
                trigger.triggerGracefulShutdown()
                // `run` returns: the group's only child ends.
                try await group.waitForAll()
            }
        }

        // The batches in flight when the shutdown came committed: the positions moved past
        // where they stood then, and every claimed record's effect and position agree.
        let storedAfter = try database.scalar(stored, as: Int64.self)
        #expect(storedAfter > storedAtShutdown)
        #expect(storedAfter < 400, "the shutdown stopped the pipeline before the end of the stream")
        #expect(try database.scalar("SELECT count(*) FROM processed_messages", as: Int64.self) == storedAfter)
        #expect(try database.scalar("SELECT count(*) FROM test_effects", as: Int64.self) == storedAfter)
        // Nothing of the pipeline outlived `run`: its database sessions are closed (a task
        // still working would hold one), and none is left inside a transaction.
        #expect(try database.scalar(sessions, as: Int64.self) == 0)
    }
}
