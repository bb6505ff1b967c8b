import OnceJSON

/// The part of librdkafka's statistics (`statistics.interval.ms`) that `once` reports: per
/// broker round-trip time and errors, how many messages wait in the client's queues, and each
/// fetched partition's end offset. Parsed from the JSON librdkafka emits; a pure value.
public struct KafkaStatistics: Sendable, Hashable {
    public struct Broker: Sendable, Hashable {
        /// `host:port`, as the client names the broker.
        public var name: String
        /// Average round-trip time of requests over the last interval; nil before any sample.
        public var averageRoundTripSeconds: Double?
        /// Transmission and receive errors since the client started (cumulative).
        public var errors: Int64
    }

    /// `consumer` or `producer`, as librdkafka reports the instance's type.
    public var clientType: String
    /// Messages waiting in the client: the producer's queue, the consumer's fetch queues and
    /// replies not yet served.
    public var queuedMessages: Int64
    /// The brokers the client is connected to by id (bootstrap, logical and internal entries left out).
    public var brokers: [Broker]
    /// Each fetched partition's offsets. Consumers only.
    public var partitions: [TopicPartition: PartitionOffsets]

    public struct PartitionOffsets: Sendable, Hashable {
        /// The first offset the broker still has; nil when not known yet.
        public var low: Int64?
        /// The partition's end: its last stable offset, or its high watermark when the broker
        /// reports no stable one.
        public var end: Int64
    }

    /// The statistics in `json`; nil when it is not librdkafka's statistics object.
    public init?(json: [UInt8]) {
        guard case .object(let top)? = try? JSONParser.parse(json), let type = top["type"]?.stringValue else { return nil }
        clientType = type
        var queued = (top["msg_cnt"]?.int64Value ?? 0) + (top["replyq"]?.int64Value ?? 0)
        brokers = (top["brokers"]?.objectValue ?? [:]).values.compactMap { broker in
            // Bootstrap entries have no id yet; logical ones (the group coordinator) and the
            // internal one repeat a real broker or none.
            guard let id = broker["nodeid"]?.int64Value, id >= 0,
                broker["source"]?.stringValue != "logical", broker["source"]?.stringValue != "internal"
            else { return nil }
            let name = broker["name"]?.stringValue.map(Self.address) ?? "\(id)"
            let average = broker["rtt"]?["avg"]?.doubleValue ?? 0
            return Broker(
                name: name, averageRoundTripSeconds: average > 0 ? average / 1_000_000 : nil,
                errors: (broker["txerrs"]?.int64Value ?? 0) + (broker["rxerrs"]?.int64Value ?? 0))
        }.sorted { $0.name < $1.name }
        var offsets: [TopicPartition: PartitionOffsets] = [:]
        for (topic, stats) in top["topics"]?.objectValue ?? [:] {
            for (key, partition) in stats["partitions"]?.objectValue ?? [:] {
                guard let number = Int32(key), number >= 0 else { continue }  // -1: the unassigned queue
                queued += partition["fetchq_cnt"]?.int64Value ?? 0
                let stable = partition["ls_offset"]?.int64Value ?? -1
                let high = partition["hi_offset"]?.int64Value ?? -1
                let end = stable >= 0 ? stable : high
                let low = partition["lo_offset"]?.int64Value ?? -1
                if end >= 0, type == "consumer" {
                    offsets[TopicPartition(topic, number)] = PartitionOffsets(low: low >= 0 ? low : nil, end: end)
                }
            }
        }
        queuedMessages = queued
        partitions = offsets
    }

    /// `host:port/id` → `host:port`.
    private static func address(_ name: String) -> String {
        name.split(separator: "/").first.map(String.init) ?? name
    }
}
