import ArgumentParser
import Logging
import OnceCore
import OnceDomain
import OnceKafka
import OncePostgres
import ServiceLifecycle

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the consumer group and process until SIGTERM or SIGINT.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Stop once caught up (nothing to consume, outbox published) for this many seconds.")
    var untilIdle: Double?

    @Option(help: "Database sessions working on batches at once.")
    var connections: Int = 4

    @Option(help: "The most records in one batch transaction.")
    var maxBatch: Int = 2000

    @Option(help: "Keep processed ids, published outbox rows and resolved dead letters this long, then drop their partitions: 7d, 36h, P7D, never (env ONCE_RETENTION; default 7d).")
    var retention: String?

    func validate() throws {
        if let untilIdle, untilIdle < 0 { throw ValidationError("--until-idle must be zero or more seconds") }
        guard (1...64).contains(connections) else { throw ValidationError("--connections must be from 1 to 64") }
        guard (1...100_000).contains(maxBatch) else { throw ValidationError("--max-batch must be from 1 to 100000") }
    }

    func run() async throws {
        let settings = try connection.settings(retention: retention)
        let logger = try connection.makeLogger()
        var configuration = PipelineConfiguration(databaseURL: try settings.requireDatabaseURL(), brokers: try settings.requireBrokers())
        configuration.consumerGroup = settings.groupID
        configuration.topics = settings.topics
        configuration.kafkaProperties = settings.kafkaProperties
        configuration.connections = connections
        configuration.maxBatchRecords = maxBatch

        // Fail fast, with one line, when a service is unreachable or a topic is missing.
        let control = try await connectDatabase(configuration.databaseURL, logger: logger)
        try await checkTopics(configuration, logger: logger)
        // The partitions this run writes to, before anything is written.
        try await ensurePartitions(control)

        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        let pipeline = ConsumerPipeline(configuration: configuration, registry: registry, logger: logger)
        let relay = OutboxRelay(
            databaseURL: configuration.databaseURL, brokers: configuration.brokers,
            kafkaProperties: configuration.kafkaProperties, logger: Logger(label: "once.relay"))
        let outboxPublished: @Sendable () async -> Bool = {
            (try? await control.withConnection { db in
                try db.query("SELECT NOT EXISTS (SELECT 1 FROM \(OutboxRelay.unpublishedRows))")[0].decode(Bool.self, column: 0)
            }) ?? false
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(
                        service: PipelineService(pipeline: pipeline, untilIdle: untilIdle.map { .milliseconds(Int64($0 * 1000)) }, isQuiet: outboxPublished),
                        successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: RelayService(relay: relay), failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(
                        service: MaintenanceService(
                            maintenance: PartitionMaintenance(
                                databaseURL: configuration.databaseURL, retention: settings.retention,
                                logger: Logger(label: "once.retention"))),
                        failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        await control.close()
    }

    private func checkTopics(_ configuration: PipelineConfiguration, logger: Logger) async throws {
        let admin = try await KafkaAdmin(bootstrapServers: configuration.brokers, properties: configuration.kafkaProperties, logger: logger)
        defer { Task { await admin.close() } }
        // The input topics, and those the relay publishes to: a missing one would stall the outbox.
        let outputs = DomainTopics()
        let needed = configuration.topics + [configuration.deadLetterTopic, outputs.creditLedger, outputs.deviceDispatch, outputs.jobsCreated]
        for topic in needed {
            do {
                _ = try await admin.partitionCount(topic: topic, timeout: .seconds(5))
            } catch let error as KafkaError where error.kind == .unknownTopicOrPartition {
                throw CommandFailure("topic \(topic) does not exist on \(configuration.brokers)")
            } catch {
                throw CommandFailure("cannot reach the broker at \(configuration.brokers): \(error)")
            }
        }
    }
}

/// The pipeline as a service: a graceful shutdown lets in-flight batches commit.
struct PipelineService: Service {
    let pipeline: ConsumerPipeline
    let untilIdle: Duration?
    let isQuiet: @Sendable () async -> Bool

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await pipeline.run(untilIdle: untilIdle, isQuiet: isQuiet)
        } onGracefulShutdown: {
            pipeline.stop()
        }
    }
}

/// Partitions created ahead and pruned past the window, as a service.
struct MaintenanceService: Service {
    let maintenance: PartitionMaintenance

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await maintenance.run()
        } onGracefulShutdown: {
            maintenance.stop()
        }
    }
}

/// The outbox relay as a service.
struct RelayService: Service {
    let relay: OutboxRelay

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await relay.run()
        } onGracefulShutdown: {
            relay.stop()
        }
    }
}
