import CRdKafka

/// An error from librdkafka or from this wrapper, with the context an operator needs.
///
/// `code` is librdkafka's `rd_kafka_resp_err_t` value (negative codes are client-side,
/// positive ones come from the broker); `name` is librdkafka's name for it. `isRetriable`
/// says that the same call may succeed later (broker down, timeout, full queue); `isFatal`
/// says that the client instance is unusable and must be recreated.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, coarsely, for code that must decide what to do.
    public enum Kind: Sendable, Hashable {
        /// A configuration property was rejected; the associated value names it.
        case configuration(property: String)
        /// The topic or partition does not exist on the broker.
        case unknownTopicOrPartition
        /// A request or a message timed out.
        case timedOut
        /// The broker could not be reached or the connection failed.
        case transport
        /// The local produce queue is full; retry after delivery reports drained it.
        case queueFull
        /// The record is larger than the broker or the client accepts.
        case messageTooLarge
        /// The client was closed; no further calls are possible.
        case closed
        /// Anything else; look at `code` and `name`.
        case other
    }

    public let kind: Kind
    /// librdkafka's error code (`rd_kafka_resp_err_t`), or 0 for errors of this wrapper.
    public let code: Int32
    /// librdkafka's symbolic name of `code`, such as `_TIMED_OUT` or `UNKNOWN_TOPIC_OR_PART`.
    public let name: String
    public let message: String
    public let isRetriable: Bool
    public let isFatal: Bool
    public var topic: String?
    public var partition: Int32?
    public var offset: Int64?

    init(
        kind: Kind,
        code: Int32 = 0,
        name: String = "",
        message: String,
        isRetriable: Bool = false,
        isFatal: Bool = false,
        topic: String? = nil,
        partition: Int32? = nil,
        offset: Int64? = nil
    ) {
        self.kind = kind
        self.code = code
        self.name = name
        self.message = message
        self.isRetriable = isRetriable
        self.isFatal = isFatal
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    /// Builds an error from a librdkafka response code.
    init(
        _ err: rd_kafka_resp_err_t,
        message: String? = nil,
        isFatal: Bool = false,
        topic: String? = nil,
        partition: Int32? = nil,
        offset: Int64? = nil
    ) {
        let code = Int32(err.rawValue)
        self.init(
            kind: Self.kind(of: err),
            code: code,
            name: String(cString: rd_kafka_err2name(err)),
            message: message ?? String(cString: rd_kafka_err2str(err)),
            isRetriable: Self.isRetriable(err),
            isFatal: isFatal,
            topic: topic,
            partition: partition,
            offset: offset
        )
    }

    /// Builds an error from an `rd_kafka_error_t` and destroys it.
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

    static func closed(_ what: String) -> KafkaError {
        KafkaError(kind: .closed, message: "\(what) is closed")
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

    public var description: String {
        var text = "kafka error \(name.isEmpty ? "\(kind)" : name)"
        if let topic {
            text += " on \(topic)"
            if let partition { text += "/\(partition)" }
            if let offset { text += "@\(offset)" }
        }
        text += ": \(message)"
        if isFatal { text += " (fatal)" } else if isRetriable { text += " (retriable)" }
        return text
    }
}
