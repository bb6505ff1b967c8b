import Logging

/// Decides where newly assigned partitions start and learns of revoked ones.
///
/// Both methods are called synchronously on the consumer's own poll thread, inside a poll, before
/// librdkafka acknowledges the change; they may block (a database read, waiting for an
/// in-flight batch) but must not call back into the consumer.
public protocol KafkaRebalanceListener: Sendable {
    /// Returns the offset at which each partition starts; a partition left out starts at the
    /// group's committed offset, or by `offsetReset` when there is none.
    func partitionsAssigned(_ partitions: [TopicPartition]) -> [TopicPartition: Int64]
    /// Called before the partitions are given up (orderly revoke or loss).
    func partitionsRevoked(_ partitions: [TopicPartition])
}

/// What one poll returned: records in offset order per partition, the rebalances that happened
/// during it, and non-fatal errors (a partition's fetch error, a broker going away).
public struct KafkaPollResult: Sendable {
    public var records: [KafkaRecord] = []
    public var rebalances: [KafkaRebalanceEvent] = []
    public var errors: [KafkaError] = []
}

/// A Kafka consumer in a consumer group (cooperative-sticky assignor), or assigned by hand.
///
/// Threading: every method may be called from any task. The librdkafka handle lives on a
/// thread of its own; calls are queued to it and run one at a time, so a long `poll` delays
/// a `pause` by at most the poll's timeout. Blocking C calls never run on the cooperative pool.
///
/// Ownership: the consumer owns its handle through one `KafkaHandle`. Call `close()` to leave
/// the group; until then the consumer's thread stays alive. `close` frees the handle on that
/// thread, exactly once. Offsets are never committed automatically.
///
/// Errors: methods throw `KafkaError`; after `close`, kind `.closed`.
public final class KafkaConsumer: Sendable {
    private let handle: KafkaHandle

    /// Creates the client; it contacts the broker only on `subscribe`, `assign` or `poll`.
    /// Throws `KafkaError` with kind `.configuration` naming a rejected property.
    public init(
        configuration: KafkaConsumerConfiguration,
        rebalanceListener: (any KafkaRebalanceListener)? = nil,
        logger: Logger = Logger(label: "once.kafka.consumer")
    ) async throws {
        let client = try RDKafkaClient.consumer(
            properties: configuration.librdkafkaProperties, listener: rebalanceListener,
            statisticsHandler: configuration.statisticsHandler, logger: logger)
        handle = KafkaHandle(client, subject: "consumer", threadName: "once-kafka-consumer")
    }

    /// Joins the group for these topics; assignments arrive during later polls.
    public func subscribe(topics: [String]) async throws {
        try await handle.run { client throws(KafkaError) in try client.subscribe(topics) }
    }

    /// Assigns partitions by hand, outside any group rebalance, each starting at the given offset.
    public func assign(_ starts: [TopicPartition: Int64]) async throws {
        try await handle.run { client throws(KafkaError) in try client.assign(starts) }
    }

    /// Waits up to `timeout` for the first record, then takes whatever else is ready, up to
    /// `maxRecords`. Rebalance callbacks run inside this call. Throws only fatal errors.
    public func poll(maxRecords: Int = 500, timeout: Duration = .milliseconds(100)) async throws -> KafkaPollResult {
        try await handle.run { client throws(KafkaError) in try client.poll(maxRecords: maxRecords, timeout: timeout) }
    }

    /// Moves an assigned partition's fetch position; the next records come from `offset`.
    public func seek(_ partition: TopicPartition, to offset: Int64, timeout: Duration = .seconds(10)) async throws {
        try await handle.run { client throws(KafkaError) in try client.seek(partition, to: offset, timeout: timeout) }
    }

    /// Stops fetching these partitions until `resume`; their positions are kept.
    public func pause(_ partitions: [TopicPartition]) async throws {
        try await handle.run { client throws(KafkaError) in try client.pause(partitions, resume: false) }
    }

    public func resume(_ partitions: [TopicPartition]) async throws {
        try await handle.run { client throws(KafkaError) in try client.pause(partitions, resume: true) }
    }

    /// Commits the next offset to read for each partition to the group. With `wait` false it
    /// only sends the request: the consumer's thread is not held for the broker's answer, and a
    /// failure is not reported (a later commit carries newer offsets anyway).
    public func commit(_ nextOffsets: [TopicPartition: Int64], wait: Bool = true) async throws {
        try await handle.run { client throws(KafkaError) in try client.commit(nextOffsets, wait: wait) }
    }

    /// The group's committed next offsets (nil where none is committed).
    public func committed(_ partitions: [TopicPartition], timeout: Duration = .seconds(10)) async throws -> [TopicPartition: Int64?] {
        try await handle.run { client throws(KafkaError) in try client.committed(partitions, timeout: timeout) }
    }

    /// The partitions currently assigned to this member.
    public func assignment() async throws -> [TopicPartition] {
        try await handle.run { client throws(KafkaError) in try client.assignment() }
    }

    /// Asks the partition's leader for its watermarks.
    public func watermarks(_ partition: TopicPartition, timeout: Duration = .seconds(10)) async throws -> KafkaWatermarks {
        try await handle.run { client throws(KafkaError) in try client.queryWatermarks(partition, timeout: timeout) }
    }

    /// Leaves the group (revoking its partitions through the listener) and frees the handle.
    /// Safe to call twice.
    public func close() async {
        await handle.close { client in client.closeConsumer() }
    }
}
