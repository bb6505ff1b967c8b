import ArgumentParser
import Foundation
import Logging
import OnceConsole
import OnceDomain
import OnceKafka
import OnceOutbox
import OncePipeline
import OncePostgres
import OnceSchema
import OnceServer
import OnceTracing
import OTel
import ServiceLifecycle
import Tracing

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the consumer group and process until SIGTERM or SIGINT.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Stop once caught up (nothing to consume, outbox published) for this many seconds.")
    var untilIdle: Double?

    @Option(help: "Database sessions working on batches at once.")
    var connections: Int = 4

    @Option(help: "The most records in one batch transaction.")
    var maxBatch: Int = PipelineDefaults.maxBatchRecords

    @Option(help: "Keep processed ids, published outbox rows and resolved dead letters this long, then drop their partitions: 7d, 36h, P7D, never (env ONCE_RETENTION; default 7d).")
    var retention: String?

    @Option(help: "Serve /metrics, /healthz and /readyz on ADDRESS:PORT, or `off` (env ONCE_HTTP; default 127.0.0.1:9464; port 0 takes a free one).")
    var http: String?

    @Option(help: "Record spans and export them over OTLP/HTTP to this URL, e.g. http://127.0.0.1:4318/v1/traces (or set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; the other OTEL_* variables apply). Without one no span is recorded; trace context is carried on either way.")
    var otlpEndpoint: String?

    @Flag(name: .customLong("console"), inversion: .prefixedNo, help: "Serve the operator console under /console on the --http address (read-only unless ONCE_CONSOLE_TOKEN is set; not served on a non-loopback address without a token).")
    var serveConsole = true

    /// Where spans go, when anywhere: the flag, or the standard environment variables.
    func spanExport() -> (endpoint: String?, enabled: Bool) {
        let environment = ProcessInfo.processInfo.environment
        if let otlpEndpoint { return (otlpEndpoint, true) }
        let configured = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].contains {
            !(environment[$0] ?? "").isEmpty
        }
        return (nil, configured && environment["OTEL_TRACES_EXPORTER"] != "none" && environment["OTEL_SDK_DISABLED"] != "true")
    }

    /// The HTTP endpoint's address; nil when it is off.
    func httpAddress() throws -> OperationsServer.Address? {
        let text = http ?? ProcessInfo.processInfo.environment["ONCE_HTTP"] ?? OperationsServer.Address.default.description
        if text == "off" { return nil }
        guard let address = OperationsServer.Address(text) else {
            throw ValidationError("--http: `\(text)` is not ADDRESS:PORT (e.g. 127.0.0.1:9464, 0.0.0.0:9464, [::1]:9464) or off")
        }
        return address
    }

    func validate() throws {
        _ = try httpAddress()
        if let otlpEndpoint, !(otlpEndpoint.hasPrefix("http://") || otlpEndpoint.hasPrefix("https://")) {
            throw ValidationError("--otlp-endpoint: `\(otlpEndpoint)` is not an http:// or https:// URL")
        }
        if let untilIdle, untilIdle < 0 { throw ValidationError("--until-idle must be zero or more seconds") }
        guard (1...64).contains(connections) else { throw ValidationError("--connections must be from 1 to 64") }
        guard (1...100_000).contains(maxBatch) else { throw ValidationError("--max-batch must be from 1 to 100000") }
    }

    func run() async throws {
        MallocSettings.apply()
        let settings = try connection.settings(retention: retention)
        let logger = try connection.makeLogger()
        let http = try httpAddress()
        // Before any metric exists: swift-metrics binds each one to the backend of its creation.
        let metrics = http.map { _ in OperationsServer.bootstrapMetrics() }
        var configuration = PipelineConfiguration(databaseURL: try settings.requireDatabaseURL(), brokers: try settings.requireBrokers())
        configuration.consumerGroup = settings.consumerGroup
        configuration.topics = settings.topics
        configuration.kafkaProperties = settings.kafkaProperties
        configuration.connections = connections
        configuration.maxBatchRecords = maxBatch
        let spans = try spanExporter(logger: logger)
        configuration.tracing = RecordTracing(tracer: spans?.tracer)

        // Fail fast, with one line, when a service is unreachable or a topic is missing.
        let control = try await connectDatabase(configuration.databaseURL, logger: logger)
        try await checkSchema(control)
        try await checkPrivileges(control)
        try await checkTopics(configuration, logger: logger)
        // The partitions this run writes to, before anything is written.
        try await ensurePartitions(control)

        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        let relay = OutboxRelay(
            databaseURL: configuration.databaseURL, brokers: configuration.brokers,
            kafkaProperties: configuration.kafkaProperties, tracing: configuration.tracing, logger: Logger(label: "once.relay"))
        let outboxPublished: @Sendable () async -> Bool = {
            (try? await control.withConnection { db in
                try db.query("SELECT NOT EXISTS (SELECT 1 FROM \(OutboxRelay.unpublishedRows))")[0].decode(Bool.self, column: 0)
            }) ?? false
        }
        let pipeline = ConsumerPipeline(
            configuration: configuration, registry: registry, untilIdle: untilIdle.map { .milliseconds(Int64($0 * 1000)) },
            isQuiet: outboxPublished, logger: logger)
        let maintenance = PartitionMaintenance(
            databaseURL: configuration.databaseURL, retention: settings.retention, logger: Logger(label: "once.retention"))
        // The HTTP endpoint, first in the group so that it stops last: readiness says "not
        // ready" while the others shut down.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // The span exporter stops after everything else, flushing the last spans.
        if let spans { services.append(.init(service: spans.service)) }
        let console = try await startConsole(http: http, configuration: configuration, logger: logger)
        if let http, let metrics {
            let server = OperationsServer(
                address: http, registry: metrics, health: pipeline.health, relay: relay.status,
                databaseURL: configuration.databaseURL, logger: Logger(label: "once.http"),
                routes: console.map { console in [{ router in console.addRoutes(to: router) }] } ?? [])
            services.append(.init(service: server, failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        // One lifecycle for all: SIGTERM or SIGINT (or the pipeline caught up, with
        // --until-idle) shuts them down gracefully; whatever still runs 30 s later is cancelled
        // (a batch in flight is then abandoned, harmless behind its fence). In reverse order:
        // the pipeline first (it leaves the group at once, so members stopped together leave
        // together), the relay after it.
        var lifecycle = ServiceGroupConfiguration(
                services: services + [
                    .init(service: maintenance, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: relay, failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: pipeline, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger)
        lifecycle.maximumGracefulShutdownDuration = .seconds(30)
        let group = ServiceGroup(configuration: lifecycle)
        do {
            try await group.run()
        } catch {
            await console?.close()
            throw error
        }
        await console?.close()
        await control.close()
    }

    /// The console for the HTTP endpoint, unless it is off or the address is not loopback and
    /// no operator token is set (then one warning says so and the rest serves as before).
    private func startConsole(http: OperationsServer.Address?, configuration: PipelineConfiguration, logger: Logger)
        async throws -> Console?
    {
        guard serveConsole, let http else { return nil }
        let token = ProcessInfo.processInfo.environment[ConsoleConfiguration.tokenVariable]
        if let refusal = ConsoleListenPolicy.refusal(host: http.host, token: token) {
            logger.warning("console not served: \(refusal)")
            return nil
        }
        do {
            return try await Console.connect(
                configuration: ConsoleConfiguration(
                    consumerGroup: configuration.consumerGroup, topics: configuration.topics,
                    brokers: configuration.brokers, kafkaProperties: configuration.kafkaProperties, token: token,
                    deadLetterTopic: configuration.deadLetterTopic),
                databaseURL: configuration.databaseURL, logger: Logger(label: "once.console"))
        } catch {
            throw CommandFailure(oneLine("\(error)"))
        }
    }

    /// swift-otel's tracer and its export service, when spans are to be exported; nothing else
    /// of OpenTelemetry (logs and metrics have their own outputs).
    private func spanExporter(logger: Logger) throws -> (tracer: any Tracer, service: any Service)? {
        let export = spanExport()
        guard export.enabled else { return nil }
        var otel = OTel.Configuration.default
        otel.serviceName = "once"
        otel.logs.enabled = false
        otel.metrics.enabled = false
        otel.diagnosticLogger = .custom(Logger(label: "once.otel"))
        if let endpoint = export.endpoint { otel.traces.otlpExporter.endpoint = endpoint }
        let backend = try OTel.makeTracingBackend(configuration: otel)
        logger.info("recording spans", metadata: ["once.otlp_endpoint": "\(export.endpoint ?? "from OTEL_* environment")"])
        return (backend.factory, backend.service)
    }

    private func checkTopics(_ configuration: PipelineConfiguration, logger: Logger) async throws {
        // librdkafka's lines about a failed connection are kept for the one line below.
        let log = BrokerCheckLog(forward: logger)
        let admin = try await KafkaAdmin(bootstrapServers: configuration.brokers, properties: configuration.kafkaProperties, logger: log.logger)
        // The input topics, and those the relay publishes to: a missing one would stall the outbox.
        let outputs = DomainTopics()
        let needed = configuration.topics + [configuration.deadLetterTopic, outputs.creditLedger, outputs.deviceDispatch, outputs.jobsCreated]
        for topic in needed {
            do {
                _ = try await admin.partitionCount(topic: topic, timeout: .seconds(5))
            } catch let error as KafkaError where error.kind == .unknownTopicOrPartition {
                await admin.close()
                throw CommandFailure("topic \(topic) does not exist on \(configuration.brokers)")
            } catch {
                await admin.close()
                throw CommandFailure(oneLine("cannot reach the broker at \(configuration.brokers): \(log.reason ?? "\(error)")"))
            }
        }
        await admin.close()
    }
}
