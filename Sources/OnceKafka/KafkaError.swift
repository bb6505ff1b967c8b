/// An error from librdkafka or from this wrapper, with the context an operator needs.
///
/// `code` is librdkafka's response error code (negative codes are client-side,
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
    /// librdkafka's response error code, or 0 for errors of this wrapper.
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

    static func closed(_ what: String) -> KafkaError {
        KafkaError(kind: .closed, message: "\(what) is closed")
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
