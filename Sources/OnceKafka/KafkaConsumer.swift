internal import CRdKafka
import Logging
import OnceThreads

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
/// Thread-safety: every method may be called from any task. The librdkafka handle lives on a
/// thread of its own; calls are queued to it and run one at a time, so a long `poll` delays
/// a `pause` by at most the poll's timeout. Blocking C calls never run on the cooperative pool.
/// Offsets are never committed automatically. Call `close()` to leave the group; until then the
/// consumer's thread stays alive.
public final class KafkaConsumer: Sendable {
    private let confined: ThreadConfined<ConsumerHandle>

    /// Creates the client; it contacts the broker only on `subscribe`, `assign` or `poll`.
    /// Throws `KafkaError` with kind `.configuration` naming a rejected property.
    public init(
        configuration: KafkaConsumerConfiguration,
        rebalanceListener: (any KafkaRebalanceListener)? = nil,
        logger: Logger = Logger(label: "once.kafka.consumer")
    ) async throws {
        let properties = configuration.librdkafkaProperties
        confined = try await ThreadConfined(name: "once-kafka-consumer") {
            try ConsumerHandle(properties: properties, listener: rebalanceListener, logger: logger)
        }
    }

    private func withHandle<T: Sendable>(_ body: @escaping @Sendable (ConsumerHandle) throws -> T) async throws -> T {
        do {
            return try await confined.withResource(body)
        } catch is ThreadConfinedError {
            throw KafkaError.closed("consumer")
        } catch is BlockingThreadError {
            throw KafkaError.closed("consumer")
        }
    }

    /// Joins the group for these topics; assignments arrive during later polls.
    public func subscribe(topics: [String]) async throws {
        try await withHandle { try $0.subscribe(topics) }
    }

    /// Assigns partitions by hand, outside any group rebalance, each starting at the given offset.
    public func assign(_ starts: [TopicPartition: Int64]) async throws {
        try await withHandle { try $0.assign(starts) }
    }

    /// Waits up to `timeout` for the first record, then takes whatever else is ready, up to
    /// `maxRecords`. Rebalance callbacks run inside this call. Throws only fatal errors.
    public func poll(maxRecords: Int = 500, timeout: Duration = .milliseconds(100)) async throws -> KafkaPollResult {
        try await withHandle { try $0.poll(maxRecords: maxRecords, timeout: timeout) }
    }

    /// Moves an assigned partition's fetch position; the next records come from `offset`.
    public func seek(_ partition: TopicPartition, to offset: Int64, timeout: Duration = .seconds(10)) async throws {
        try await withHandle { try $0.seek(partition, to: offset, timeout: timeout) }
    }

    /// Stops fetching these partitions until `resume`; their positions are kept.
    public func pause(_ partitions: [TopicPartition]) async throws {
        try await withHandle { try $0.pause(partitions, resume: false) }
    }

    public func resume(_ partitions: [TopicPartition]) async throws {
        try await withHandle { try $0.pause(partitions, resume: true) }
    }

    /// Commits the next offset to read for each partition to the group. With `wait` false it
    /// only sends the request: the consumer's thread is not held for the broker's answer, and a
    /// failure is not reported (a later commit carries newer offsets anyway).
    public func commit(_ nextOffsets: [TopicPartition: Int64], wait: Bool = true) async throws {
        try await withHandle { try $0.commit(nextOffsets, wait: wait) }
    }

    /// The group's committed next offsets (nil where none is committed).
    public func committed(_ partitions: [TopicPartition], timeout: Duration = .seconds(10)) async throws -> [TopicPartition: Int64?] {
        try await withHandle { try $0.committed(partitions, timeout: timeout) }
    }

    /// The partitions currently assigned to this member.
    public func assignment() async throws -> [TopicPartition] {
        try await withHandle { try $0.assignment() }
    }

    /// Asks the partition's leader for its watermarks.
    public func watermarks(_ partition: TopicPartition, timeout: Duration = .seconds(10)) async throws -> KafkaWatermarks {
        try await withHandle { try $0.client.queryWatermarks(partition, timeout: timeout) }
    }

    /// Leaves the group (revoking its partitions through the listener) and frees the handle.
    /// Safe to call twice.
    public func close() async {
        await confined.close { handle in handle.close() }
    }
}

/// The consumer's C handle and the operations on it; lives on the consumer's thread only.
final class ConsumerHandle {
    let client: RDKafkaClient
    private var isClosed = false

    init(properties: [String: String], listener: (any KafkaRebalanceListener)?, logger: Logger) throws {
        let context = RDKafkaContext(logger: logger, rebalanceListener: listener)
        client = try RDKafkaClient(type: RD_KAFKA_CONSUMER, properties: properties, context: context) { conf in
            rd_kafka_conf_set_rebalance_cb(conf, onceKafkaRebalance)
        }
        // Serve the main queue (logs, errors, rebalances) from consumer polls.
        let err = rd_kafka_poll_set_consumer(client.handle)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
    }

    private var handle: OpaquePointer { client.handle }

    func subscribe(_ topics: [String]) throws {
        try topics.map { TopicPartition($0, RD_KAFKA_PARTITION_UA) }.withPartitionList { list in
            let err = rd_kafka_subscribe(handle, list)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
        }
    }

    func assign(_ starts: [TopicPartition: Int64]) throws {
        try starts.keys.sorted().withPartitionList(offsets: starts) { list in
            let err = rd_kafka_assign(handle, list)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
        }
    }

    func poll(maxRecords: Int, timeout: Duration) throws -> KafkaPollResult {
        var result = KafkaPollResult()
        var wait = timeout.timeoutMilliseconds
        while result.records.count < maxRecords, let message = rd_kafka_consumer_poll(handle, wait) {
            wait = 0
            defer { rd_kafka_message_destroy(message) }
            if message.pointee.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                result.records.append(KafkaRecord(copying: message))
            } else {
                result.errors.append(KafkaError(message: message))
            }
        }
        let pending = client.context.take()
        result.rebalances = pending.rebalances
        result.errors += pending.errors
        if let fatal = client.fatalError() { throw fatal }
        return result
    }

    func seek(_ partition: TopicPartition, to offset: Int64, timeout: Duration) throws {
        try [partition].withPartitionList(offsets: [partition: offset]) { list in
            if let error = rd_kafka_seek_partitions(handle, list, timeout.timeoutMilliseconds) {
                throw KafkaError(consuming: error)
            }
            try throwFirstPartitionError(list)
        }
    }

    func pause(_ partitions: [TopicPartition], resume: Bool) throws {
        try partitions.withPartitionList { list in
            let err = resume ? rd_kafka_resume_partitions(handle, list) : rd_kafka_pause_partitions(handle, list)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
            try throwFirstPartitionError(list)
        }
    }

    func commit(_ nextOffsets: [TopicPartition: Int64], wait: Bool) throws {
        guard !nextOffsets.isEmpty else { return }
        try nextOffsets.keys.sorted().withPartitionList(offsets: nextOffsets) { list in
            let err = rd_kafka_commit(handle, list, wait ? 0 : 1)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
            if wait { try throwFirstPartitionError(list) }
        }
    }

    func committed(_ partitions: [TopicPartition], timeout: Duration) throws -> [TopicPartition: Int64?] {
        try partitions.withPartitionList { list in
            let err = rd_kafka_committed(handle, list, timeout.timeoutMilliseconds)
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
            var result: [TopicPartition: Int64?] = [:]
            for entry in partitionEntries(list) {
                result[entry.partition] = entry.offset >= 0 ? entry.offset : nil
            }
            return result
        }
    }

    func assignment() throws -> [TopicPartition] {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        let err = rd_kafka_assignment(handle, &list)
        defer { if let list { rd_kafka_topic_partition_list_destroy(list) } }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
        return partitionEntries(list).map(\.partition).sorted()
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        let err = rd_kafka_consumer_close(handle)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            client.context.logger.warning("closing the consumer: \(KafkaError(err))")
        }
    }
}

extension RDKafkaClient {
    func queryWatermarks(_ partition: TopicPartition, timeout: Duration) throws -> KafkaWatermarks {
        var low: Int64 = 0
        var high: Int64 = 0
        let err = rd_kafka_query_watermark_offsets(
            handle, partition.topic, partition.partition, &low, &high, timeout.timeoutMilliseconds)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(err, topic: partition.topic, partition: partition.partition)
        }
        return KafkaWatermarks(low: low, high: high)
    }
}

/// librdkafka's rebalance callback, run inside `rd_kafka_consumer_poll` or
/// `rd_kafka_consumer_close` on the consumer's own thread.
private func onceKafkaRebalance(
    _ rk: OpaquePointer?,
    _ err: rd_kafka_resp_err_t,
    _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let rk, let opaque else { return }
    let context = Unmanaged<RDKafkaContext>.fromOpaque(opaque).takeUnretainedValue()
    let partitions = partitionEntries(list).map(\.partition)
    let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"

    switch err {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        let starts = context.rebalanceListener?.partitionsAssigned(partitions) ?? [:]
        if let list, list.pointee.cnt > 0, let elems = list.pointee.elems {
            for index in 0..<Int(list.pointee.cnt) {
                let partition = TopicPartition(String(cString: elems[index].topic), elems[index].partition)
                if let start = starts[partition] { elems[index].offset = start }
            }
        }
        if cooperative {
            if let error = rd_kafka_incremental_assign(rk, list) {
                context.record(KafkaError(consuming: error))
            }
        } else {
            rd_kafka_assign(rk, list)
        }
        context.record(.assigned(partitions))
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        context.rebalanceListener?.partitionsRevoked(partitions)
        let lost = rd_kafka_assignment_lost(rk) != 0
        if cooperative {
            if let error = rd_kafka_incremental_unassign(rk, list) {
                context.record(KafkaError(consuming: error))
            }
        } else {
            rd_kafka_assign(rk, nil)
        }
        context.record(lost ? .lost(partitions) : .revoked(partitions))
    default:
        context.record(KafkaError(err))
        rd_kafka_assign(rk, nil)
    }
}
