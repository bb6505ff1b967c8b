import Logging
import OnceBackoff
import OnceKafka
import OncePostgres
import ServiceLifecycle

/// `once run`'s engine, as a `Service`: consumes the group, batches each partition's records
/// and commits every batch through `BatchTransaction` on a pool of database sessions.
///
/// Lifecycle: `run` joins the group and returns on graceful shutdown (in-flight batches commit,
/// Kafka offsets are committed, the group is left) or, with `untilIdle`, once the pipeline has
/// been caught up for that long. Every task it starts is a child of `run` (the batches, the
/// claims, the reset check), so none outlives it; cancellation ends the retry loops at once and
/// `run` still leaves the group. Blocking work happens on the consumer's and the sessions' own
/// threads. Errors: `run` throws only when it cannot start (bad configuration, no database at
/// start-up) or the consumer fails; later failures (database or broker away) are retried with
/// backoff and logged.
public final class ConsumerPipeline: Service, Sendable {
    public let configuration: PipelineConfiguration
    /// How often idle partitions are checked for an operator's reset (`once offsets reset`).
    static let resetCheckInterval: Duration = .seconds(1)
    private let processor: RecordProcessor
    private let untilIdle: Duration?
    private let isQuiet: @Sendable () async -> Bool
    private let logger: Logger
    private let metrics = PipelineMetrics()
    /// Where the member stands, for `/healthz` and `/readyz`.
    public let health: PipelineHealth

    /// With `untilIdle`, `run` returns once caught up for that long and `isQuiet` holds (for
    /// example "the outbox is published").
    public init(
        configuration: PipelineConfiguration, registry: HandlerRegistry, untilIdle: Duration? = nil,
        isQuiet: @escaping @Sendable () async -> Bool = { true }, health: PipelineHealth = PipelineHealth(),
        logger: Logger = Logger(label: "once.pipeline")
    ) {
        self.health = health
        self.configuration = configuration
        self.processor = RecordProcessor(
            consumerGroup: configuration.consumerGroup, registry: registry, deadLetterTopic: configuration.deadLetterTopic,
            maxRecordBytes: configuration.maxRecordBytes, tracing: configuration.tracing)
        self.untilIdle = untilIdle
        self.isQuiet = isQuiet
        self.logger = logger
    }

    public func run() async throws {
        let config = configuration
        let logger = self.logger
        let table = PartitionTable(connections: config.connections, maxBatch: config.maxBatchRecords, pauseAbove: config.maxBufferedRecordsPerPartition)
        // What `run` owns, opened in turn: the worker sessions, then the control session, then
        // the consumer; whatever was opened is closed when the next fails.
        var opened: [PostgresSession] = []
        let consumer: KafkaConsumer
        do {
            for index in 0..<config.connections {
                opened.append(try await PostgresSession.connect(
                    configuration: PostgresConfiguration(
                        url: config.databaseURL, applicationName: "once-worker-\(index)",
                        // Short set-based statements: compiling one costs more than it could save.
                        settings: ["jit": "off"]),
                    logger: logger, threadName: "once-db-\(index)"))
            }
            opened.append(try await PostgresSession.connect(
                configuration: PostgresConfiguration(url: config.databaseURL, applicationName: "once-control"), logger: logger))
            consumer = try await KafkaConsumer(
                configuration: consumerConfiguration(), rebalanceListener: RevokeListener(table: table, logger: logger), logger: logger)
        } catch {
            for session in opened { await session.close() }
            throw error
        }
        let control = opened.removeLast()
        let sessions = opened
        let claims = PartitionClaims(
            positions: StoredPositions(consumerGroup: config.consumerGroup), owner: config.memberID, control: control, table: table,
            lag: metrics.lag, logger: logger)
        let worker = BatchWorker(
            table: table, sessions: sessions, claims: claims, logger: logger, backoff: Backoff(cap: config.maxRetryDelay),
            processor: processor, health: health, metrics: metrics)
        defer { logger.info("pipeline stopped") }

        let failure: (any Error)?
        do {
            try await consumer.subscribe(topics: config.topics)
            health.joined()
            logger.info("joined", metadata: ["once.group": "\(config.consumerGroup)", "once.topics": "\(config.topics)"])
            try await withThrowingTaskGroup(of: Void.self) { background in
                // An operator's reset of an idle partition fences no batch: look for one every second.
                background.addTask {
                    while true {
                        try await Task.sleep(for: Self.resetCheckInterval)
                        await claims.checkForResets()
                    }
                }
                defer { background.cancelAll() }
                // The batches and claims: this group ends only when the last of them has, so
                // leaving it is the graceful stop's "let in-flight batches commit".
                try await withThrowingDiscardingTaskGroup { work in
                    // Once the loop ends no batch starts: those in flight finish, buffered
                    // records wait for the partition's next owner.
                    defer { table.drain() }
                    try await poll(consumer, table: table, claims: claims, worker: worker, work: &work)
                }
            }
            failure = nil
        } catch is CancellationError {
            failure = nil
        } catch {
            failure = error
        }

        // Record positions in Kafka and leave the group, also after a cancellation.
        var last = table.takeConsumerActions()
        last.pause = []
        last.resume = []
        last.seek = [:]
        if !config.commitToKafka { last.commit = [:] }
        await perform(last, on: consumer, table: table, waitForCommit: true)
        await consumer.close()
        for session in sessions { await session.close() }
        await control.close()
        if let failure { throw failure }
    }

    /// The poll loop: until graceful shutdown, cancellation or (`untilIdle`) caught up.
    private func poll(
        _ consumer: KafkaConsumer, table: PartitionTable, claims: PartitionClaims, worker: BatchWorker,
        work: inout ThrowingDiscardingTaskGroup<any Error>
    ) async throws {
        let config = configuration
        var lastKafkaCommit = ContinuousClock.now
        var assignment = AssignmentWatch(kafkaProperties: config.kafkaProperties)
        assignment.awaitAssignment()
        // The work group is cancelled when one of its tasks fails for good (a missing privilege,
        // an unmigrated schema): the loop ends, and the group rethrows that failure.
        while !Task.isShuttingDownGracefully && !Task.isCancelled && !work.isCancelled {
            let polled: KafkaPollResult
            do {
                polled = try await consumer.poll(maxRecords: config.maxBatchRecords, timeout: .milliseconds(20))
            } catch {
                logger.error("consumer failed: \(error)")
                throw error
            }
            health.polled()
            for event in polled.rebalances {
                assignment.saw(event)
                switch event {
                case .revoked(let partitions), .lost(let partitions): metrics.lag.forget(partitions)
                case .assigned: break
                }
                if case .assigned(let partitions) = event {
                    let toClaim = table.assigned(partitions)
                    if !toClaim.isEmpty { work.addTask { try await claims.claim(toClaim) } }
                }
            }
            if !polled.rebalances.isEmpty {
                let held = table.assignedPartitions.count
                health.saw(polled.rebalances, holding: held)
                metrics.assigned(held)
                for event in polled.rebalances { metrics.rebalance(event) }
            }
            if assignment.isOverdue() {
                let waited = assignment.patience
                work.addTask { await self.recoverUnformedGroup(after: waited, logger: self.logger) }
            }
            for error in polled.errors { logger.warning("kafka: \(error)") }
            for dispatch in table.ingest(polled.records) { work.addTask { try await worker.run(dispatch) } }

            var actions = table.takeConsumerActions()
            if config.commitToKafka == false || ContinuousClock.now - lastKafkaCommit < .seconds(1) {
                table.requeueCommits(actions.commit)
                actions.commit = [:]
            }
            // The Kafka commit is a courtesy to tools reading the group's offsets (the database
            // holds the positions): the poll loop does not wait for the broker's answer.
            await perform(actions, on: consumer, table: table, waitForCommit: false)
            if !actions.commit.isEmpty { lastKafkaCommit = .now }

            if let untilIdle, let quiet = table.quietSince(), ContinuousClock.now - quiet >= untilIdle,
                await reachedTheEnd(of: table.storedPositions, on: consumer), await isQuiet()
            {
                logger.info("caught up for \(untilIdle); stopping")
                return
            }
        }
    }

    /// Whether every claimed partition's stored position is at the broker's end of its log, as
    /// the broker reports it: quiet alone is not enough when the broker is slow to answer a
    /// fetch (a loaded machine), or a partition's records have not come yet.
    private func reachedTheEnd(of positions: [TopicPartition: Int64?], on consumer: KafkaConsumer) async -> Bool {
        for (partition, next) in positions {
            guard let marks = try? await consumer.watermarks(partition, timeout: .seconds(2)) else { return false }
            if (next ?? marks.low) < marks.high { return false }
        }
        return true
    }

    private func perform(
        _ actions: PartitionTable.ConsumerActions, on consumer: KafkaConsumer, table: PartitionTable, waitForCommit: Bool
    ) async {
        guard !actions.isEmpty else { return }
        if !actions.pause.isEmpty { try? await consumer.pause(Array(actions.pause)) }
        for (partition, offset) in actions.seek {
            do {
                try await consumer.seek(partition, to: offset)
                table.seeksDone([partition])
            } catch {
                logger.warning("seek \(partition) to \(offset) failed, trying again: \(error)")
                table.retrySeek(partition, offset)
            }
        }
        if !actions.resume.isEmpty { try? await consumer.resume(Array(actions.resume)) }
        if !actions.commit.isEmpty {
            do {
                try await consumer.commit(actions.commit, wait: waitForCommit)
            } catch {
                logger.debug("kafka commit deferred: \(error)")
                table.requeueCommits(actions.commit)
            }
        }
    }

    private func consumerConfiguration() -> KafkaConsumerConfiguration {
        var consumer = KafkaConsumerConfiguration(bootstrapServers: configuration.brokers, groupID: configuration.consumerGroup)
        consumer.clientID = "once-\(configuration.memberID)"
        // Statistics every 5 s feed the lag and librdkafka gauges (a passed property wins).
        consumer.properties = ["statistics.interval.ms": "5000"].merging(configuration.kafkaProperties) { _, passed in passed }
        let metrics = self.metrics
        consumer.statisticsHandler = { statistics in
            metrics.consumerStatistics.record(statistics)
            metrics.lag.reported(statistics.partitions)
        }
        return consumer
    }
}

extension ConsumerPipeline {
    /// The one line an operator needs, and the repair: the group's state on the broker is
    /// deleted, so that the next join forms it afresh. A broker that counts the group's
    /// members refuses that while any is joined (Kafka does: `GROUP_NOT_EMPTY`), and nothing
    /// changes; the positions are in the database either way.
    func recoverUnformedGroup(after waited: Duration, logger: Logger) async {
        let config = configuration
        logger.warning(
            "no partition assigned \(waited) after joining group \(config.consumerGroup): the broker is likely naming a member that has left as the group's leader (Tansu 0.6 after members stopped together); deleting the group's broker state so that it forms again (positions stay in the database)")
        do {
            let admin = try await KafkaAdmin(bootstrapServers: config.brokers, properties: config.kafkaProperties, logger: logger)
            do {
                try await admin.deleteGroup(config.consumerGroup)
                await admin.close()
            } catch {
                await admin.close()
                throw error
            }
            logger.notice("group \(config.consumerGroup) deleted on the broker; joining again")
        } catch {
            logger.warning("deleting group \(config.consumerGroup) on the broker failed: \(error)")
        }
    }
}

/// Hears revocations on the consumer's thread and holds them until in-flight batches end.
struct RevokeListener: KafkaRebalanceListener {
    let table: PartitionTable
    let logger: Logger

    func partitionsAssigned(_ partitions: [TopicPartition]) -> [TopicPartition: Int64] {
        // Start positions come from the database claim, which seeks once it is done.
        [:]
    }

    func partitionsRevoked(_ partitions: [TopicPartition]) {
        logger.info("revoked \(partitions)", metadata: ["once.partitions": "\(partitions.map(\.description).joined(separator: ", "))"])
        table.revoke(partitions, timeout: .seconds(30))
    }
}

extension ConsumerPipeline: CustomStringConvertible {
    /// What the service group's logs name it by: the group and topics, never the database URL
    /// or the Kafka properties (they may hold secrets).
    public var description: String {
        "ConsumerPipeline(group: \(configuration.consumerGroup), topics: \(configuration.topics.joined(separator: ",")))"
    }
}
