import Foundation
import Logging
import OnceKafka
import OncePostgres
import Synchronization

/// `once run`'s engine: consumes the group, batches each partition's records and commits every
/// batch through `BatchTransaction` on a pool of database sessions.
///
/// Lifecycle: `run` joins the group and returns after `stop()` (in-flight batches commit, Kafka
/// offsets are committed, the group is left) or, with `untilIdle`, once the pipeline has been
/// caught up for that long. Thread-safety: `stop()` may be called from anywhere; `run` once.
/// Blocking work happens on the consumer's and the sessions' own threads.
/// Errors: `run` throws only when it cannot start (bad configuration, no database at start-up);
/// later failures (database or broker away) are retried with backoff and logged.
public final class ConsumerPipeline: Sendable {
    public let configuration: PipelineConfiguration
    /// How often idle partitions are checked for an operator's reset (`once offsets reset`).
    static let resetCheckInterval: Duration = .seconds(1)
    private let registry: HandlerRegistry
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)

    public init(configuration: PipelineConfiguration, registry: HandlerRegistry, logger: Logger = Logger(label: "once.pipeline")) {
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
    }

    /// Asks `run` to finish gracefully.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
    }

    /// Processes until `stop()`, or until caught up for `untilIdle` (`isQuiet` must also hold,
    /// for example "the outbox is published").
    public func run(untilIdle: Duration? = nil, isQuiet: @escaping @Sendable () async -> Bool = { true }) async throws {
        let config = configuration
        let sessions = try await (0..<config.connections).asyncMap { index in
            try await PostgresClient.connect(
                configuration: PostgresConfiguration(
                    url: config.databaseURL, applicationName: "once-worker-\(index)",
                    // Short set-based statements: compiling one costs more than it could save.
                    settings: ["jit": "off"]),
                logger: logger, threadName: "once-db-\(index)")
        }
        let control = try await PostgresClient.connect(
            configuration: PostgresConfiguration(url: config.databaseURL, applicationName: "once-control"), logger: logger)
        let table = PartitionTable(connections: config.connections, maxBatch: config.maxBatchRecords, pauseAbove: config.maxBufferedRecordsPerPartition)
        let consumer = try await KafkaConsumer(
            configuration: consumerConfiguration(), rebalanceListener: RevokeListener(table: table, logger: logger), logger: logger)
        let claims = PartitionClaims(group: config.consumerGroup, owner: config.memberID, control: control, table: table, logger: logger)
        let worker = BatchWorker(
            table: table, sessions: sessions, claims: claims, logger: logger, backoff: Backoff(cap: config.maxRetryDelay),
            decoder: BatchDecoder(registry: registry, maxRecordBytes: config.maxRecordBytes),
            transaction: BatchTransaction(group: config.consumerGroup, registry: registry, deadLetterTopic: config.deadLetterTopic))

        defer { logger.info("pipeline stopped") }
        try await consumer.subscribe(topics: config.topics)
        logger.info("joined", metadata: ["once.group": "\(config.consumerGroup)", "once.topics": "\(config.topics)"])

        // An operator's reset of an idle partition fences no batch: look for one every second.
        let resetCheck = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.resetCheckInterval)
                if Task.isCancelled { break }
                await claims.checkForResets()
            }
        }
        defer { resetCheck.cancel() }

        var lastKafkaCommit = ContinuousClock.now
        while !stopping.load(ordering: .relaxed) {
            let polled: KafkaPollResult
            do {
                polled = try await consumer.poll(maxRecords: config.maxBatchRecords, timeout: .milliseconds(20))
            } catch {
                logger.error("consumer failed: \(error)")
                throw error
            }
            for event in polled.rebalances {
                if case .assigned(let partitions) = event {
                    let toClaim = table.assigned(partitions)
                    if !toClaim.isEmpty { Task { await claims.claim(toClaim) } }
                }
            }
            for error in polled.errors { logger.warning("kafka: \(error)") }
            for dispatch in table.ingest(polled.records) { worker.start(dispatch) }

            var actions = table.takeConsumerActions()
            if config.commitToKafka == false || ContinuousClock.now - lastKafkaCommit < .seconds(1) {
                table.requeueCommits(actions.commit)
                actions.commit = [:]
            }
            // The Kafka commit is a courtesy to tools reading the group's offsets (the database
            // holds the positions): the poll loop does not wait for the broker's answer.
            try await perform(actions, on: consumer, table: table, waitForCommit: false)
            if !actions.commit.isEmpty { lastKafkaCommit = .now }

            if let untilIdle, let quiet = table.quietSince(), ContinuousClock.now - quiet >= untilIdle, await isQuiet() {
                logger.info("caught up for \(untilIdle); stopping")
                break
            }
        }

        resetCheck.cancel()
        await resetCheck.value

        // Graceful stop: let in-flight batches commit, record positions in Kafka, leave the group.
        let deadline = ContinuousClock.now + .seconds(30)
        while table.hasBatchInFlight && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if table.hasBatchInFlight {
            logger.warning("batches still in flight after 30 s; leaving anyway (the fence keeps them harmless)")
        }
        var last = table.takeConsumerActions()
        last.pause = []
        last.resume = []
        last.seek = [:]
        if !config.commitToKafka { last.commit = [:] }
        try? await perform(last, on: consumer, table: table, waitForCommit: true)
        await consumer.close()
        for session in sessions { await session.close() }
        await control.close()
    }

    private func perform(
        _ actions: PartitionTable.ConsumerActions, on consumer: KafkaConsumer, table: PartitionTable, waitForCommit: Bool
    ) async throws {
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
        consumer.properties = configuration.kafkaProperties
        return consumer
    }
}

/// Runs batches on the database sessions, retrying transient failures with backoff.
struct BatchWorker: Sendable {
    let table: PartitionTable
    let sessions: [PostgresClient]
    let claims: PartitionClaims
    let logger: Logger
    let backoff: Backoff
    let decoder: BatchDecoder
    let transaction: BatchTransaction

    func start(_ dispatch: PartitionTable.Dispatch) {
        Task { await process(dispatch) }
    }

    private func process(_ dispatch: PartitionTable.Dispatch) async {
        var parts = dispatch.parts.map { part in
            BatchPart(batch: part.batch, records: part.batch.records.map(decoder.decode), fence: part.fence)
        }
        let transaction = self.transaction
        var attempt = 0
        var ends = [PartitionTable.BatchEnd](repeating: .abandoned, count: parts.count)
        var fencedPartitions: [TopicPartition] = []
        func index(of partition: TopicPartition) -> Int {
            dispatch.parts.firstIndex { $0.batch.partition == partition }!
        }
        while true {
            // Only the partitions this member still holds (a rebalance may take some away).
            parts.removeAll { !table.holds($0.batch.partition, generation: $0.fence!.generation) }
            guard !parts.isEmpty else { break }
            do {
                let work = parts
                _ = try await sessions[dispatch.connection].withConnection { db in
                    try transaction.commit(work, on: db)
                }
                for part in parts {
                    ends[index(of: part.batch.partition)] = .committed(nextOffset: part.batch.nextOffset)
                    logger.debug(
                        "batch committed",
                        metadata: [
                            "once.partition": "\(part.batch.partition)", "once.records": "\(part.batch.records.count)",
                            "once.next_offset": "\(part.batch.nextOffset)",
                        ])
                }
                break
            } catch let fenced as BatchFenced {
                // Nothing was written: that partition re-reads its position, the others go again.
                logger.notice("\(fenced); re-reading its position")
                ends[index(of: fenced.partition)] = .fenced
                fencedPartitions.append(fenced.partition)
                parts.removeAll { $0.batch.partition == fenced.partition }
            } catch {
                attempt += 1
                if attempt == 1 { for part in parts { table.retrying(part.batch.partition) } }
                let delay = backoff.delay(attempt: attempt)
                let level: Logger.Level = (error as? PostgresError)?.isTransient == true ? .warning : .error
                let names = parts.map { "\($0.batch.partition)" }.joined(separator: ", ")
                logger.log(level: level, "batch on \(names) failed (attempt \(attempt)), retrying in \(delay): \(error)")
                try? await Task.sleep(for: delay)
            }
        }
        for next in table.finished(dispatch, ends) { start(next) }
        for partition in fencedPartitions { await claims.reload(partition) }
    }
}

/// Claims assigned partitions in `consumer_offsets` (bumping their generation) and re-reads
/// fenced ones; retries while the database is away.
struct PartitionClaims: Sendable {
    let group: String
    let owner: String
    let control: PostgresClient
    let table: PartitionTable
    let logger: Logger

    func claim(_ partitions: [TopicPartition]) async {
        var attempt = 0
        while true {
            do {
                let (group, owner) = (self.group, self.owner)
                let fences = try await control.withConnection { db in
                    try db.query(
                        """
                        INSERT INTO consumer_offsets AS o (consumer_group, topic, partition, next_offset, generation, owner)
                        SELECT $1, c.topic, c.partition, NULL, 1, $2
                        FROM unnest($3::text[], $4::bigint[]) AS c(topic, partition)
                        ON CONFLICT (consumer_group, topic, partition)
                        DO UPDATE SET generation = o.generation + 1, owner = EXCLUDED.owner, updated_at = now()
                        RETURNING topic, partition, next_offset, generation
                        """,
                        [.text(group), .text(owner), .textArray(partitions.map(\.topic)), .int64Array(partitions.map { Int64($0.partition) })]
                    ).map { row in
                        (TopicPartition(try row.decode(String.self, column: 0), try row.decode(Int32.self, column: 1)),
                         PartitionFence(generation: try row.decode(Int64.self, column: 3), nextOffset: try row.decode(Int64?.self, column: 2)))
                    }
                }
                for (partition, fence) in fences {
                    logger.info("claimed \(partition) at \(fence.nextOffset.map(String.init) ?? "earliest"), generation \(fence.generation)")
                    table.claimed(partition, fence: fence)
                }
                return
            } catch {
                attempt += 1
                logger.warning("claiming \(partitions) failed (attempt \(attempt)): \(error)")
                try? await Task.sleep(for: Backoff().delay(attempt: attempt))
            }
        }
    }
}

extension PartitionClaims {
    /// After a fence: if this member still owns the partition (an operator reset it), adopt the
    /// new generation and position; otherwise stop working on it until the group revokes it.
    func reload(_ partition: TopicPartition) async {
        var attempt = 0
        while true {
            do {
                let group = self.group
                let row = try await control.withConnection { db in
                    try db.query(
                        "SELECT next_offset, generation, owner FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
                        [.text(group), .text(partition.topic), .int32(partition.partition)]
                    ).first.map { row in
                        (PartitionFence(generation: try row.decode(Int64.self, column: 1), nextOffset: try row.decode(Int64?.self, column: 0)),
                         try row.decode(String?.self, column: 2))
                    }
                }
                if let (fence, rowOwner) = row, rowOwner == owner {
                    logReset(partition, fence)
                    table.claimed(partition, fence: fence)
                } else {
                    logTakeover(partition, by: row?.1)
                    table.disowned(partition)
                }
                return
            } catch {
                attempt += 1
                logger.warning("re-reading \(partition) failed (attempt \(attempt)): \(error)")
                try? await Task.sleep(for: Backoff().delay(attempt: attempt))
            }
        }
    }
}

extension PartitionClaims {
    /// The periodic reset check: one query for the idle partitions this member holds. A
    /// partition whose generation moved on while it was idle was reset by an operator (the
    /// owner is still this member: adopt the new position, dropping buffered records and
    /// seeking) or claimed by another member (give it up, as a fenced batch would). Busy
    /// partitions are left to the fence. Failures are left for the next check.
    func checkForResets() async {
        let held = table.idleClaims()
        guard !held.isEmpty else { return }
        let group = self.group
        let partitions = held.keys.sorted()
        let rows: [(TopicPartition, PartitionFence, String?)]
        do {
            rows = try await control.withConnection { db in
                try db.query(
                    """
                    SELECT o.topic, o.partition, o.next_offset, o.generation, o.owner
                    FROM consumer_offsets o
                    JOIN unnest($2::text[], $3::bigint[]) AS h(topic, partition)
                        ON o.topic = h.topic AND o.partition = h.partition
                    WHERE o.consumer_group = $1
                    """,
                    [.text(group), .textArray(partitions.map(\.topic)),
                     .int64Array(partitions.map { Int64($0.partition) })]
                ).map { row in
                    let fence = PartitionFence(
                        generation: try row.decode(Int64.self, column: 3), nextOffset: try row.decode(Int64?.self, column: 2))
                    return (TopicPartition(try row.decode(String.self, column: 0), try row.decode(Int32.self, column: 1)),
                            fence, try row.decode(String?.self, column: 4))
                }
            }
        } catch {
            logger.debug("checking for offset resets failed: \(error)")
            return
        }
        for (partition, fence, rowOwner) in rows {
            guard let generation = held[partition], fence.generation != generation else { continue }
            let owned = rowOwner == owner
            guard table.claimChanged(partition, heldUnder: generation, to: fence, owned: owned) else { continue }
            if owned { logReset(partition, fence) } else { logTakeover(partition, by: rowOwner) }
        }
    }

    private func logReset(_ partition: TopicPartition, _ fence: PartitionFence) {
        let position = fence.nextOffset.map(String.init) ?? "earliest"
        logger.notice("\(partition) was reset to \(position) (generation \(fence.generation))")
    }

    private func logTakeover(_ partition: TopicPartition, by other: String?) {
        logger.notice("\(partition) is owned by \(other ?? "nobody") now; waiting for the group to revoke it")
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
        logger.info("revoked \(partitions)")
        table.revoke(partitions, timeout: .seconds(30))
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
