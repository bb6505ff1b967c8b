import Metrics
import OnceKafka
import Synchronization

/// `once_consumer_lag_records{topic,partition}`: for each partition this member holds, the
/// records between its stored position and the broker's end, as the consumer's statistics last
/// reported the end (a partition never committed here counts from the broker's first offset).
/// A partition's series is removed when the member gives it up. Any thread.
final class ConsumerLag: Sendable {
    private struct Entry {
        var position: Int64?
        var offsets: KafkaStatistics.PartitionOffsets?
        let gauge: Gauge
    }

    private let entries = Mutex<[TopicPartition: Entry]>([:])

    /// The member claimed `partition` at `position` (nil: from the earliest record).
    func claimed(_ partition: TopicPartition, at position: Int64?) {
        update(partition) { $0.position = position }
    }

    /// A batch committed: `partition`'s stored position is now `position`.
    func committed(_ partition: TopicPartition, at position: Int64) {
        update(partition) { $0.position = position }
    }

    /// The consumer's statistics arrived: the broker's offsets of the partitions it fetches.
    func reported(_ offsets: [TopicPartition: KafkaStatistics.PartitionOffsets]) {
        entries.withLock { entries in
            for (partition, offsets) in offsets where entries[partition] != nil {
                entries[partition]!.offsets = offsets
                Self.report(entries[partition]!)
            }
        }
    }

    /// The member no longer holds `partitions`.
    func forget(_ partitions: [TopicPartition]) {
        let gone = entries.withLock { entries in partitions.compactMap { entries.removeValue(forKey: $0)?.gauge } }
        for gauge in gone { gauge.destroy() }
    }

    private func update(_ partition: TopicPartition, _ change: (inout Entry) -> Void) {
        entries.withLock { entries in
            var entry = entries[partition] ?? Entry(
                gauge: Gauge(label: "once_consumer_lag_records", dimensions: [
                    ("topic", partition.topic), ("partition", String(partition.partition)),
                ]))
            change(&entry)
            entries[partition] = entry
            Self.report(entry)
        }
    }

    private static func report(_ entry: Entry) {
        guard let offsets = entry.offsets, let from = entry.position ?? offsets.low else { return }
        entry.gauge.record(max(0, offsets.end - from))
    }
}
