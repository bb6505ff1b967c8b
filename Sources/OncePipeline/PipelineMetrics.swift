import Metrics
import OnceKafka

/// What the pipeline counts, through swift-metrics: no-ops until a backend is bootstrapped (as
/// `once run` does for its `/metrics` endpoint). Names follow Prometheus conventions (base
/// units, `_total` counters, `_seconds` histograms) and labels stay few: outcome, event type,
/// topic, reason; never an event id or a tenant. A `Sendable` value; every method may be
/// called from any task.
struct PipelineMetrics: Sendable {
    /// Histogram buckets of records per batch transaction.
    static let batchSizeBuckets: [Double] = [1, 10, 50, 100, 250, 500, 1000, 2000, 5000]

    private let batchRecords = Recorder(label: "once_batch_records", aggregate: true)
    private let batchDuration = Metrics.Timer(label: "once_batch_duration_seconds")
    private let fenced = Counter(label: "once_batches_fenced_total")
    private let skipped = Counter(label: "once_records_already_processed_total")
    private let assignedGauge = Gauge(label: "once_assigned_partitions")
    /// `once_consumer_lag_records`, per held partition.
    let lag = ConsumerLag()
    /// librdkafka's statistics of the consumer.
    let consumerStatistics = KafkaStatisticsMetrics(client: "consumer")

    /// One committed batch transaction: its records' outcomes by topic and type, the records
    /// skipped as already processed, the dead letters by reason, its size and duration.
    func committed(_ summary: BatchSummary, records: Int, duration: Duration) {
        for (key, count) in summary.outcomeCounts {
            Counter(label: "once_events_total", dimensions: [("topic", key.topic), ("type", key.type), ("outcome", key.outcome.rawValue)])
                .increment(by: count)
        }
        if summary.duplicates > 0 { skipped.increment(by: summary.duplicates) }
        for letter in summary.deadLetters {
            Counter(label: "once_dead_letters_total", dimensions: [("reason", letter.reason.rawValue)]).increment()
        }
        batchRecords.record(records)
        batchDuration.record(duration: duration)
    }

    /// A batch transaction failed and will be tried again.
    func retried(transient: Bool) {
        Counter(label: "once_batch_retries_total", dimensions: [("reason", transient ? "transient" : "other")]).increment()
    }

    func fencedBatch() { fenced.increment() }

    func rebalance(_ event: KafkaRebalanceEvent) {
        let kind: String
        switch event {
        case .assigned: kind = "assigned"
        case .revoked: kind = "revoked"
        case .lost: kind = "lost"
        }
        Counter(label: "once_rebalances_total", dimensions: [("kind", kind)]).increment()
    }

    func assigned(_ count: Int) { assignedGauge.record(count) }
}
