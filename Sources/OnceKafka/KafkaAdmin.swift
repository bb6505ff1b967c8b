internal import CRdKafka
import Logging
import OnceThreads

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
/// Thread-safety: all methods may be called from any task; the blocking requests run on the
/// admin client's own thread, one at a time. Call `close()` when done.
public final class KafkaAdmin: Sendable {
    private let confined: ThreadConfined<RDKafkaClient>

    public init(
        bootstrapServers: String,
        properties: [String: String] = [:],
        logger: Logger = Logger(label: "once.kafka.admin")
    ) async throws {
        var all = ["bootstrap.servers": bootstrapServers, "client.id": "once-admin", "log.queue": "true"]
        all.merge(properties) { _, passed in passed }
        let frozen = all
        confined = try await ThreadConfined(name: "once-kafka-admin") {
            try RDKafkaClient(type: RD_KAFKA_PRODUCER, properties: frozen, context: RDKafkaContext(logger: logger))
        }
    }

    private func withClient<T: Sendable>(_ body: @escaping @Sendable (RDKafkaClient) throws -> T) async throws -> T {
        do {
            return try await confined.withResource { client in
                defer { rd_kafka_poll(client.handle, 0) }  // serve queued log lines
                return try body(client)
            }
        } catch is ThreadConfinedError {
            throw KafkaError.closed("admin client")
        } catch is BlockingThreadError {
            throw KafkaError.closed("admin client")
        }
    }

    /// Creates the topics; with `ignoreExisting` a topic that already exists is not an error.
    public func createTopics(
        _ topics: [KafkaTopicSpecification],
        ignoreExisting: Bool = true,
        timeout: Duration = .seconds(30)
    ) async throws {
        try await withClient { client in
            var errstr = [CChar](repeating: 0, count: 512)
            var newTopics: [OpaquePointer?] = []
            defer { for topic in newTopics { rd_kafka_NewTopic_destroy(topic) } }
            for topic in topics {
                guard let newTopic = rd_kafka_NewTopic_new(topic.name, topic.partitions, topic.replicationFactor, &errstr, errstr.count) else {
                    throw KafkaError(kind: .other, message: String(cBuffer: errstr), topic: topic.name)
                }
                newTopics.append(newTopic)
            }
            let results = try client.adminRequest(RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout: timeout) { options, queue in
                rd_kafka_CreateTopics(client.handle, &newTopics, newTopics.count, options, queue)
            } results: { event in
                var count = 0
                let result = rd_kafka_event_CreateTopics_result(event)
                let items = rd_kafka_CreateTopics_result_topics(result, &count)
                return topicResults(items, count)
            }
            for item in results where item.error != RD_KAFKA_RESP_ERR_NO_ERROR {
                if ignoreExisting && item.error == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS { continue }
                throw KafkaError(item.error, message: item.message, topic: item.topic)
            }
        }
    }

    /// Deletes the topics; a topic that does not exist is not an error.
    public func deleteTopics(_ names: [String], timeout: Duration = .seconds(30)) async throws {
        try await withClient { client in
            var deleteTopics: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
            defer { for topic in deleteTopics { rd_kafka_DeleteTopic_destroy(topic) } }
            let results = try client.adminRequest(RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout: timeout) { options, queue in
                rd_kafka_DeleteTopics(client.handle, &deleteTopics, deleteTopics.count, options, queue)
            } results: { event in
                var count = 0
                let result = rd_kafka_event_DeleteTopics_result(event)
                let items = rd_kafka_DeleteTopics_result_topics(result, &count)
                return topicResults(items, count)
            }
            for item in results where item.error != RD_KAFKA_RESP_ERR_NO_ERROR {
                if item.error == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { continue }
                throw KafkaError(item.error, message: item.message, topic: item.topic)
            }
        }
    }

    /// The number of partitions of a topic; throws kind `.unknownTopicOrPartition` if it does not exist.
    public func partitionCount(topic: String, timeout: Duration = .seconds(10)) async throws -> Int32 {
        try await withClient { client in
            var metadata: UnsafePointer<rd_kafka_metadata>?
            let err = rd_kafka_metadata(client.handle, 1, nil, &metadata, timeout.timeoutMilliseconds)
            defer { if let metadata { rd_kafka_metadata_destroy(metadata) } }
            guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else { throw KafkaError(err, topic: topic) }
            for index in 0..<Int(metadata.pointee.topic_cnt) {
                let entry = metadata.pointee.topics[index]
                guard String(cString: entry.topic) == topic else { continue }
                guard entry.err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(entry.err, topic: topic) }
                return entry.partition_cnt
            }
            throw KafkaError(RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, topic: topic)
        }
    }

    /// Asks the partition's leader for its low and high watermarks.
    public func watermarks(_ partition: TopicPartition, timeout: Duration = .seconds(10)) async throws -> KafkaWatermarks {
        try await withClient { try $0.queryWatermarks(partition, timeout: timeout) }
    }

    public func close() async {
        await confined.close()
    }
}

struct TopicResult {
    var topic: String
    var error: rd_kafka_resp_err_t
    var message: String?
}

private func topicResults(_ items: UnsafeMutablePointer<OpaquePointer?>?, _ count: Int) -> [TopicResult] {
    guard let items else { return [] }
    return (0..<count).compactMap { index in
        guard let item = items[index] else { return nil }
        return TopicResult(
            topic: String(cString: rd_kafka_topic_result_name(item)),
            error: rd_kafka_topic_result_error(item),
            message: rd_kafka_topic_result_error_string(item).map { String(cString: $0) }
        )
    }
}

extension RDKafkaClient {
    /// Runs one admin request on a private queue and waits for its result event.
    func adminRequest<T>(
        _ operation: rd_kafka_admin_op_t,
        timeout: Duration,
        send: (OpaquePointer?, OpaquePointer?) -> Void,
        results: (OpaquePointer) -> T
    ) throws -> T {
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, operation)
        defer { rd_kafka_AdminOptions_destroy(options) }
        var errstr = [CChar](repeating: 0, count: 512)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeout.timeoutMilliseconds, &errstr, errstr.count)
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, timeout.timeoutMilliseconds, &errstr, errstr.count)
        send(options, queue)
        guard let event = rd_kafka_queue_poll(queue, timeout.timeoutMilliseconds + 1000) else {
            throw KafkaError(RD_KAFKA_RESP_ERR__TIMED_OUT)
        }
        defer { rd_kafka_event_destroy(event) }
        let err = rd_kafka_event_error(event)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else {
            throw KafkaError(err, message: rd_kafka_event_error_string(event).map { String(cString: $0) })
        }
        return results(event)
    }
}
