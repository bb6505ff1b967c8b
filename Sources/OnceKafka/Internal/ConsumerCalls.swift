internal import CRdKafka
import Logging

/// The consumer's librdkafka calls, made on the consumer's `KafkaHandle` thread only.
///
/// Each throws `KafkaError`: the call's own error code, or the first per-partition error
/// librdkafka filled into the partition list. Rebalances run inside `poll` and
/// `closeConsumer` (see `RebalanceHandoff`).
extension RDKafkaClient {
    /// A group consumer whose rebalances go to `listener` and whose logs go to `logger`.
    static func consumer(
        properties: [String: String],
        listener: (any KafkaRebalanceListener)?,
        statisticsHandler: KafkaStatisticsHandler?,
        logger: Logger
    ) throws(KafkaError) -> RDKafkaClient {
        let context = RDKafkaContext(logger: logger, rebalanceListener: listener, statisticsHandler: statisticsHandler)
        return try RDKafkaClient(role: .consumer, properties: properties, context: context)
    }

    func subscribe(_ topics: [String]) throws(KafkaError) {
        try topics.map { TopicPartition($0, RD_KAFKA_PARTITION_UA) }.withPartitionList { list throws(KafkaError) in
            try check(rd_kafka_subscribe(handle, list))
        }
    }

    func assign(_ starts: [TopicPartition: Int64]) throws(KafkaError) {
        try starts.keys.sorted().withPartitionList(offsets: starts) { list throws(KafkaError) in
            try check(rd_kafka_assign(handle, list))
        }
    }

    /// Waits up to `timeout` for a first message, then takes what is ready without waiting,
    /// up to `maxRecords`; adds the rebalances and errors the callbacks recorded meanwhile.
    /// Throws only the instance's fatal error.
    func poll(maxRecords: Int, timeout: Duration) throws(KafkaError) -> KafkaPollResult {
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
        let pending = context.take()
        result.rebalances = pending.rebalances
        result.errors += pending.errors
        if let fatal = fatalError() { throw fatal }
        return result
    }

    func seek(_ partition: TopicPartition, to offset: Int64, timeout: Duration) throws(KafkaError) {
        try [partition].withPartitionList(offsets: [partition: offset]) { list throws(KafkaError) in
            if let error = rd_kafka_seek_partitions(handle, list, timeout.timeoutMilliseconds) {
                throw KafkaError(consuming: error)
            }
            try throwFirstPartitionError(list)
        }
    }

    /// Pauses the partitions' fetching, or with `resume` restarts it.
    func pause(_ partitions: [TopicPartition], resume: Bool) throws(KafkaError) {
        try partitions.withPartitionList { list throws(KafkaError) in
            try check(resume ? rd_kafka_resume_partitions(handle, list) : rd_kafka_pause_partitions(handle, list))
            try throwFirstPartitionError(list)
        }
    }

    /// Commits next offsets; with `wait` false it only sends the request and reports nothing
    /// of the broker's answer.
    func commit(_ nextOffsets: [TopicPartition: Int64], wait: Bool) throws(KafkaError) {
        guard !nextOffsets.isEmpty else { return }
        try nextOffsets.keys.sorted().withPartitionList(offsets: nextOffsets) { list throws(KafkaError) in
            try check(rd_kafka_commit(handle, list, wait ? 0 : 1))
            if wait { try throwFirstPartitionError(list) }
        }
    }

    /// The group's committed next offsets; nil where none is committed.
    func committed(_ partitions: [TopicPartition], timeout: Duration) throws(KafkaError) -> [TopicPartition: Int64?] {
        try partitions.withPartitionList { list throws(KafkaError) in
            try check(rd_kafka_committed(handle, list, timeout.timeoutMilliseconds))
            var result: [TopicPartition: Int64?] = [:]
            for entry in partitionEntries(list) {
                result[entry.partition] = entry.offset >= 0 ? entry.offset : nil
            }
            return result
        }
    }

    func assignment() throws(KafkaError) -> [TopicPartition] {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        let err = rd_kafka_assignment(handle, &list)
        defer { if let list { rd_kafka_topic_partition_list_destroy(list) } }
        try check(err)
        return partitionEntries(list).map(\.partition).sorted()
    }

    /// Leaves the group, revoking the assignment through the listener; a failure is logged,
    /// since the instance is destroyed next either way.
    func closeConsumer() {
        let err = rd_kafka_consumer_close(handle)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            context.logger.warning("closing the consumer: \(KafkaError(err))")
        }
    }
}
