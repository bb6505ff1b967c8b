import Logging

/// A topic to create.
public struct KafkaTopicSpecification: Sendable, Hashable {
    public var name: String
    public var partitions: Int32
    public var replicationFactor: Int32

    public init(name: String, partitions: Int32, replicationFactor: Int32 = 1) {
        self.name = name
        self.partitions = partitions
        self.replicationFactor = replicationFactor
    }
}

/// Cluster administration: create and delete topics, read partition counts and watermarks.
///
/// Threading: all methods may be called from any task; the blocking requests run on the
/// admin client's own thread, one at a time.
///
/// Ownership: the admin client owns its handle through one `KafkaHandle`. Call `close()` when
/// done: it frees the handle on that thread, exactly once, and ends the thread.
///
/// Errors: methods throw `KafkaError`; after `close`, kind `.closed`.
public final class KafkaAdmin: Sendable {
    private let handle: KafkaHandle

    public init(
        bootstrapServers: String,
        properties: [String: String] = [:],
        logger: Logger = Logger(label: "once.kafka.admin")
    ) async throws {
        var all = ["bootstrap.servers": bootstrapServers, "client.id": "once-admin", "log.queue": "true"]
        all.merge(properties) { _, passed in passed }
        let client = try RDKafkaClient.admin(properties: all, logger: logger)
        handle = KafkaHandle(client, subject: "admin client", threadName: "once-kafka-admin")
    }

    /// Runs one request on the admin thread, then serves the log lines it queued.
    private func request<T: Sendable>(
        _ body: @escaping @Sendable (RDKafkaClient) throws(KafkaError) -> T
    ) async throws(KafkaError) -> T {
        try await handle.run { client throws(KafkaError) in
            defer { client.serveCallbacks(timeout: .zero) }
            return try body(client)
        }
    }

    /// Creates the topics; with `ignoreExisting` a topic that already exists is not an error.
    public func createTopics(
        _ topics: [KafkaTopicSpecification],
        ignoreExisting: Bool = true,
        timeout: Duration = .seconds(30)
    ) async throws {
        try await request { client throws(KafkaError) in
            try client.createTopics(topics, ignoreExisting: ignoreExisting, timeout: timeout)
        }
    }

    /// Deletes the topics; a topic that does not exist is not an error.
    public func deleteTopics(_ names: [String], timeout: Duration = .seconds(30)) async throws {
        try await request { client throws(KafkaError) in try client.deleteTopics(names, timeout: timeout) }
    }

    /// Deletes a consumer group's state on the broker; a broker refuses it (throws) while the
    /// group has members.
    public func deleteGroup(_ group: String, timeout: Duration = .seconds(10)) async throws {
        try await request { client throws(KafkaError) in try client.deleteGroup(group, timeout: timeout) }
    }

    /// The number of partitions of a topic; throws kind `.unknownTopicOrPartition` if it does not exist.
    public func partitionCount(topic: String, timeout: Duration = .seconds(10)) async throws -> Int32 {
        try await request { client throws(KafkaError) in try client.partitionCount(topic: topic, timeout: timeout) }
    }

    /// Asks the partition's leader for its low and high watermarks.
    public func watermarks(_ partition: TopicPartition, timeout: Duration = .seconds(10)) async throws -> KafkaWatermarks {
        try await request { client throws(KafkaError) in try client.queryWatermarks(partition, timeout: timeout) }
    }

    public func close() async {
        await handle.close()
    }
}
