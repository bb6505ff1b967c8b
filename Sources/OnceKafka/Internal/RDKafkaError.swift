internal import CRdKafka

/// How librdkafka's error codes and error objects become `KafkaError`s.
///
/// Internal: the only place that reads librdkafka's error names, messages and flags, and that
/// decides which codes are retriable and which `Kind` they fall under.
extension KafkaError {
    /// Builds an error from a librdkafka response code; `message` defaults to librdkafka's text
    /// for the code.
    init(
        _ err: rd_kafka_resp_err_t,
        message: String? = nil,
        isFatal: Bool = false,
        topic: String? = nil,
        partition: Int32? = nil,
        offset: Int64? = nil
    ) {
        self.init(
            kind: Self.kind(of: err),
            code: Int32(err.rawValue),
            name: String(cString: rd_kafka_err2name(err)),
            message: message ?? String(cString: rd_kafka_err2str(err)),
            isRetriable: Self.isRetriable(err),
            isFatal: isFatal,
            topic: topic,
            partition: partition,
            offset: offset
        )
    }

    /// Builds an error from a librdkafka error object and destroys the object.
    init(consuming error: OpaquePointer) {
        defer { rd_kafka_error_destroy(error) }
        let err = rd_kafka_error_code(error)
        self.init(
            kind: Self.kind(of: err),
            code: Int32(err.rawValue),
            name: String(cString: rd_kafka_error_name(error)),
            message: String(cString: rd_kafka_error_string(error)),
            isRetriable: rd_kafka_error_is_retriable(error) != 0 || Self.isRetriable(err),
            isFatal: rd_kafka_error_is_fatal(error) != 0
        )
    }

    private static func kind(of err: rd_kafka_resp_err_t) -> Kind {
        switch err {
        case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
            RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
            return .unknownTopicOrPartition
        case RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
            return .timedOut
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__RESOLVE,
            RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
            return .transport
        case RD_KAFKA_RESP_ERR__QUEUE_FULL:
            return .queueFull
        case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
            return .messageTooLarge
        case RD_KAFKA_RESP_ERR__DESTROY:
            return .closed
        default:
            return .other
        }
    }

    private static func isRetriable(_ err: rd_kafka_resp_err_t) -> Bool {
        switch err {
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__RESOLVE,
            RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE, RD_KAFKA_RESP_ERR__QUEUE_FULL, RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
            return true
        default:
            return false
        }
    }
}

/// Fails with librdkafka's error for `err` unless it reports success.
func check(_ err: rd_kafka_resp_err_t) throws(KafkaError) {
    guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
}

extension String {
    /// The text of a NUL-terminated C buffer that librdkafka filled in (an `errstr`).
    init(cBuffer buffer: [CChar]) {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self.init(decoding: bytes, as: UTF8.self)
    }
}
