/// How a `KafkaConsumer` connects and behaves in its group.
///
/// The typed fields cover what `once` sets on purpose; `properties` passes any other librdkafka
/// property through (TLS, SASL, tuning) and wins over the typed fields. Offsets are never
/// committed automatically: the owner decides what is done.
public struct KafkaConsumerConfiguration: Sendable {
    public enum OffsetReset: String, Sendable {
        case earliest, latest
    }

    public var bootstrapServers: String
    public var groupID: String
    public var clientID: String = "once"
    public var sessionTimeout: Duration = .seconds(45)
    /// The longest time between two polls before the member is considered stuck; the local test
    /// broker completes rebalances only after about this long, so tests set it low.
    public var maxPollInterval: Duration = .seconds(300)
    /// Where a partition with no stored position starts.
    public var offsetReset: OffsetReset = .earliest
    public var properties: [String: String] = [:]
    /// Called with each statistics report when `statistics.interval.ms` is set, on the
    /// consumer's poll thread (keep it short).
    public var statisticsHandler: KafkaStatisticsHandler?

    public init(bootstrapServers: String, groupID: String) {
        self.bootstrapServers = bootstrapServers
        self.groupID = groupID
    }

    var librdkafkaProperties: [String: String] {
        var result: [String: String] = [
            "bootstrap.servers": bootstrapServers,
            "group.id": groupID,
            "client.id": clientID,
            "session.timeout.ms": String(sessionTimeout.milliseconds),
            "max.poll.interval.ms": String(maxPollInterval.milliseconds),
            "auto.offset.reset": offsetReset.rawValue,
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "false",
            "allow.auto.create.topics": "false",
            "partition.assignment.strategy": "cooperative-sticky",
            "log.queue": "true",
        ]
        result.merge(properties) { _, passed in passed }
        return result
    }
}

/// How a `KafkaProducer` connects and delivers.
///
/// The producer is always idempotent with `acks=all`: a retried send never duplicates or
/// reorders records within a partition. `properties` passes any other librdkafka property
/// through and wins over the typed fields.
public struct KafkaProducerConfiguration: Sendable {
    public var bootstrapServers: String
    public var clientID: String = "once"
    /// How long records wait to be batched before they are sent.
    public var linger: Duration = .milliseconds(5)
    /// How long a record may take to be delivered, retries included, before it fails.
    public var messageTimeout: Duration = .seconds(30)
    public var properties: [String: String] = [:]
    /// Called with each statistics report when `statistics.interval.ms` is set, on the
    /// producer's callback thread (keep it short).
    public var statisticsHandler: KafkaStatisticsHandler?

    public init(bootstrapServers: String) {
        self.bootstrapServers = bootstrapServers
    }

    var librdkafkaProperties: [String: String] {
        var result: [String: String] = [
            "bootstrap.servers": bootstrapServers,
            "client.id": clientID,
            "enable.idempotence": "true",
            "allow.auto.create.topics": "false",
            "acks": "all",
            "linger.ms": String(linger.milliseconds),
            "message.timeout.ms": String(messageTimeout.milliseconds),
            "log.queue": "true",
        ]
        result.merge(properties) { _, passed in passed }
        return result
    }
}

/// Receives librdkafka's statistics reports.
public typealias KafkaStatisticsHandler = @Sendable (KafkaStatistics) -> Void

extension Duration {
    /// Whole milliseconds, rounded down, as librdkafka's `*.ms` properties and timeouts take.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    var timeoutMilliseconds: Int32 {
        Int32(clamping: milliseconds)
    }
}
