internal import CRdKafka

/// librdkafka's topic-partition lists, built from and copied into Swift values.
///
/// Internal: a list built here is lent to a closure and destroyed when it returns; a list
/// librdkafka hands over is only read, and its owner destroys it.
extension Sequence where Element == TopicPartition {
    /// Lends a C partition list with these partitions (and offsets where given) to `body`;
    /// the list is destroyed when `body` returns and must not escape.
    func withPartitionList<T, E: Error>(
        offsets: [TopicPartition: Int64] = [:],
        _ body: (UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) throws(E) -> T
    ) throws(E) -> T {
        let partitions = Array(self)
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for partition in partitions {
            let element = rd_kafka_topic_partition_list_add(list, partition.topic, partition.partition)!
            if let offset = offsets[partition] {
                element.pointee.offset = offset
            }
        }
        return try body(list)
    }
}

/// One entry of a C partition list, copied out.
struct PartitionListEntry {
    var partition: TopicPartition
    var offset: Int64
    var error: rd_kafka_resp_err_t
}

/// Copies every entry of a C partition list; a missing or empty list gives none.
func partitionEntries(_ list: UnsafePointer<rd_kafka_topic_partition_list_t>?) -> [PartitionListEntry] {
    guard let list, list.pointee.cnt > 0, let elems = list.pointee.elems else { return [] }
    return (0..<Int(list.pointee.cnt)).map { index in
        let element = elems[index]
        return PartitionListEntry(
            partition: TopicPartition(String(cString: element.topic), element.partition),
            offset: element.offset,
            error: element.err
        )
    }
}

/// Writes a start offset into each entry of a C partition list that `starts` names.
func setOffsets(_ starts: [TopicPartition: Int64], in list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) {
    guard !starts.isEmpty, let list, list.pointee.cnt > 0, let elems = list.pointee.elems else { return }
    for index in 0..<Int(list.pointee.cnt) {
        let partition = TopicPartition(String(cString: elems[index].topic), elems[index].partition)
        if let start = starts[partition] { elems[index].offset = start }
    }
}

/// Throws the first per-partition error of a list that librdkafka filled in.
func throwFirstPartitionError(_ list: UnsafePointer<rd_kafka_topic_partition_list_t>) throws(KafkaError) {
    for entry in partitionEntries(list) where entry.error != RD_KAFKA_RESP_ERR_NO_ERROR {
        throw KafkaError(entry.error, topic: entry.partition.topic, partition: entry.partition.partition)
    }
}
