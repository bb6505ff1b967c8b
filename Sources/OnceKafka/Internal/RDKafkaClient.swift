internal import CRdKafka

/// Owns one `rd_kafka_t` and destroys it exactly once, in `deinit`.
///
/// Internal: the only type that holds the C handle. It is not thread-safe and not `Sendable`:
/// a `KafkaHandle` owns it and touches it on one thread (see there for the one exception).
///
/// Construction takes a property map and either returns a working instance or throws
/// `KafkaError`, kind `.configuration` naming the property librdkafka rejected. The
/// configuration object is freed on every failure path; librdkafka owns it only on success.
final class RDKafkaClient {
    /// What the instance is for, which decides its librdkafka type and callbacks.
    enum Role {
        /// A group consumer: the rebalance callback is installed, and consumer polls serve
        /// the main queue (logs, errors, rebalances).
        case consumer
        /// A producer with a delivery-report callback.
        case producer
        /// A producer instance used only for admin requests and metadata.
        case admin
    }

    let handle: OpaquePointer
    /// Kept as a stored property so that the context, which callbacks reach through the
    /// handle's opaque pointer, outlives the handle: `deinit` destroys the handle first.
    let context: RDKafkaContext

    init(role: Role, properties: [String: String], context: RDKafkaContext) throws(KafkaError) {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(kind: .other, message: "rd_kafka_conf_new failed")
        }
        var errstr = [CChar](repeating: 0, count: 512)
        for (name, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, name, value, &errstr, errstr.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                throw KafkaError(
                    kind: .configuration(property: name),
                    message: "property \(name): \(String(cBuffer: errstr))"
                )
            }
        }
        context.install(on: conf)
        switch role {
        case .consumer: RebalanceHandoff.install(on: conf)
        case .producer: DeliveryReports.install(on: conf)
        case .admin: break
        }
        let type = role == .consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER
        guard let handle = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(kind: .other, message: "rd_kafka_new: \(String(cBuffer: errstr))")
        }
        self.handle = handle
        self.context = context
        // log.queue=true keeps log lines off librdkafka's threads: route them to the main
        // queue, which the owner serves from its own thread.
        rd_kafka_set_log_queue(handle, nil)
        if role == .consumer {
            // Serve the main queue (logs, errors, rebalances) from consumer polls.
            try check(rd_kafka_poll_set_consumer(handle))
        }
    }

    deinit {
        rd_kafka_destroy(handle)
    }

    /// The first fatal error raised on this instance, if any (idempotent producer fencing, …).
    func fatalError() -> KafkaError? {
        var errstr = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(handle, &errstr, errstr.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        return KafkaError(err, message: String(cBuffer: errstr), isFatal: true)
    }

    /// Serves the instance's main queue (logs, errors, delivery reports) for up to `timeout`.
    func serveCallbacks(timeout: Duration) {
        rd_kafka_poll(handle, timeout.timeoutMilliseconds)
    }

    /// Asks the partition's leader for its low and high watermarks.
    func queryWatermarks(_ partition: TopicPartition, timeout: Duration) throws(KafkaError) -> KafkaWatermarks {
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
