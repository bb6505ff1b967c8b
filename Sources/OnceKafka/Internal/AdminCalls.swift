internal import CRdKafka
import Logging

/// The admin client's librdkafka calls, made on the admin's `KafkaHandle` thread only.
///
/// Each request blocks until the broker answers or `timeout` passes and throws `KafkaError`:
/// the request's own error, or the first per-topic error the caller does not accept.
extension RDKafkaClient {
    /// A producer instance used only for admin requests and metadata.
    static func admin(properties: [String: String], logger: Logger) throws(KafkaError) -> RDKafkaClient {
        try RDKafkaClient(role: .admin, properties: properties, context: RDKafkaContext(logger: logger))
    }

    /// Creates the topics; with `ignoreExisting` a topic that already exists is not an error.
    func createTopics(_ topics: [KafkaTopicSpecification], ignoreExisting: Bool, timeout: Duration) throws(KafkaError) {
        var errstr = [CChar](repeating: 0, count: 512)
        var newTopics: [OpaquePointer?] = []
        defer { for topic in newTopics { rd_kafka_NewTopic_destroy(topic) } }
        for topic in topics {
            guard let newTopic = rd_kafka_NewTopic_new(topic.name, topic.partitions, topic.replicationFactor, &errstr, errstr.count) else {
                throw KafkaError(kind: .other, message: String(cBuffer: errstr), topic: topic.name)
            }
            newTopics.append(newTopic)
        }
        let results = try adminRequest(RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout: timeout) { options, queue in
            rd_kafka_CreateTopics(handle, &newTopics, newTopics.count, options, queue)
        } results: { event in
            var count = 0
            let result = rd_kafka_event_CreateTopics_result(event)
            return topicResults(rd_kafka_CreateTopics_result_topics(result, &count), count)
        }
        for item in results where item.error != RD_KAFKA_RESP_ERR_NO_ERROR {
            if ignoreExisting && item.error == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS { continue }
            throw KafkaError(item.error, message: item.message, topic: item.topic)
        }
    }

    /// Deletes the topics; a topic that does not exist is not an error.
    func deleteTopics(_ names: [String], timeout: Duration) throws(KafkaError) {
        var deleteTopics: [OpaquePointer?] = names.map { rd_kafka_DeleteTopic_new($0) }
        defer { for topic in deleteTopics { rd_kafka_DeleteTopic_destroy(topic) } }
        let results = try adminRequest(RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout: timeout) { options, queue in
            rd_kafka_DeleteTopics(handle, &deleteTopics, deleteTopics.count, options, queue)
        } results: { event in
            var count = 0
            let result = rd_kafka_event_DeleteTopics_result(event)
            return topicResults(rd_kafka_DeleteTopics_result_topics(result, &count), count)
        }
        for item in results where item.error != RD_KAFKA_RESP_ERR_NO_ERROR {
            if item.error == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART { continue }
            throw KafkaError(item.error, message: item.message, topic: item.topic)
        }
    }

    /// Deletes a consumer group's state on the broker (its members, generation, leader and
    /// committed offsets); a broker refuses it while the group has members (kind
    /// `.other`, the broker's `GROUP_NOT_EMPTY` in the message).
    func deleteGroup(_ group: String, timeout: Duration) throws(KafkaError) {
        var groups: [OpaquePointer?] = [rd_kafka_DeleteGroup_new(group)]
        defer { for item in groups { rd_kafka_DeleteGroup_destroy(item) } }
        let outcome: (rd_kafka_resp_err_t, String?)? = try adminRequest(RD_KAFKA_ADMIN_OP_DELETEGROUPS, timeout: timeout) { options, queue in
            rd_kafka_DeleteGroups(handle, &groups, groups.count, options, queue)
        } results: { event in
            var count = 0
            let result = rd_kafka_event_DeleteGroups_result(event)
            guard let items = rd_kafka_DeleteGroups_result_groups(result, &count), count > 0, let item = items[0],
                let error = rd_kafka_group_result_error(item)
            else { return nil }
            return (rd_kafka_error_code(error), rd_kafka_error_string(error).map { String(cString: $0) })
        }
        if let (code, message) = outcome, code != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(code, message: message)
        }
    }

    /// The number of partitions of a topic, from the cluster's metadata; throws kind
    /// `.unknownTopicOrPartition` if it does not exist.
    func partitionCount(topic: String, timeout: Duration) throws(KafkaError) -> Int32 {
        var metadata: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 1, nil, &metadata, timeout.timeoutMilliseconds)
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

    /// Runs one admin request on a private queue and waits for its result event.
    private func adminRequest<T>(
        _ operation: rd_kafka_admin_op_t,
        timeout: Duration,
        send: (OpaquePointer?, OpaquePointer?) -> Void,
        results: (OpaquePointer) -> T
    ) throws(KafkaError) -> T {
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

/// One topic's outcome in an admin result, copied out.
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
