import CoreMetrics
import Prometheus

/// Every metric `once run` exports, with its help text: the one list the `# HELP` lines and
/// the README's table come from (`MetricCatalog.markdownTable`).
public enum MetricCatalog {
    public struct Entry: Sendable {
        public var name: String
        public var type: String
        public var labels: String
        public var help: String
    }

    public static let entries: [Entry] = [
        Entry(name: "once_events_total", type: "counter", labels: "topic, type, outcome",
              help: "Records whose event id was claimed, by input topic, event type and outcome (as in processed_messages)."),
        Entry(name: "once_records_already_processed_total", type: "counter", labels: "",
              help: "Records skipped because their event id was already claimed (redeliveries, replays)."),
        Entry(name: "once_dead_letters_total", type: "counter", labels: "reason",
              help: "Records dead-lettered, by reason code."),
        Entry(name: "once_batch_records", type: "histogram", labels: "",
              help: "Records per committed batch transaction."),
        Entry(name: "once_batch_duration_seconds", type: "histogram", labels: "",
              help: "Duration of committed batch transactions, from the first statement to the commit."),
        Entry(name: "once_batch_retries_total", type: "counter", labels: "reason",
              help: "Batch transactions that failed and were retried, by reason (transient, other)."),
        Entry(name: "once_batches_fenced_total", type: "counter", labels: "",
              help: "Batches refused by the fence: their partition was claimed by another member or reset."),
        Entry(name: "once_rebalances_total", type: "counter", labels: "kind",
              help: "Rebalance events this member heard, by kind (assigned, revoked, lost)."),
        Entry(name: "once_assigned_partitions", type: "gauge", labels: "",
              help: "Partitions this member holds."),
        Entry(name: "once_consumer_lag_records", type: "gauge", labels: "topic, partition",
              help: "Records between this member's stored position and the broker's end, per partition it holds (the end as the consumer's statistics last reported it)."),
        Entry(name: "once_outbox_published_total", type: "counter", labels: "",
              help: "Outbox rows published and acknowledged by the broker."),
        Entry(name: "once_outbox_publish_failures_total", type: "counter", labels: "",
              help: "Publish rounds in which the broker refused or did not acknowledge a row."),
        Entry(name: "once_outbox_publish_seconds", type: "histogram", labels: "",
              help: "Time from handing a round of outbox rows to the producer to their acknowledgements."),
        Entry(name: "once_relay_active", type: "gauge", labels: "",
              help: "1 while this process's relay holds the relay lock and publishes, 0 while it stands by."),
        Entry(name: "once_outbox_backlog_rows", type: "gauge", labels: "",
              help: "Outbox rows waiting to be published, counted every 5 s by the active relay (0 on a member standing by)."),
        Entry(name: "once_kafka_broker_rtt_seconds", type: "gauge", labels: "client, broker",
              help: "librdkafka's average request round-trip time to each broker, for the consumer and the relay's producer."),
        Entry(name: "once_kafka_queue_messages", type: "gauge", labels: "client",
              help: "Messages waiting in librdkafka's queues (the producer's queue; the consumer's fetch queues and replies)."),
        Entry(name: "once_kafka_errors_total", type: "counter", labels: "client",
              help: "Transmit and receive errors librdkafka counted on its broker connections."),
    ]

    static let help: [String: String] = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.help) })

    /// The README's table of metrics.
    public static var markdownTable: String {
        (["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
            + entries.map { "| `\($0.name)` | \($0.type) | \($0.labels) | \($0.help) |" })
            .joined(separator: "\n")
    }
}

/// swift-metrics to a Prometheus registry, as `PrometheusMetricsFactory` does, but with each
/// metric's help text from `MetricCatalog`, so that the exposition carries `# HELP` lines.
struct CatalogMetricsFactory: MetricsFactory {
    let inner: PrometheusMetricsFactory
    var registry: PrometheusCollectorRegistry { inner.registry }

    /// The metric's full name (the label) with its help text.
    private func described(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricCatalog.help[label] ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: described(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: described(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: described(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: described(label), labels: dimensions,
            buckets: inner.valueHistogramBuckets[label] ?? inner.defaultValueHistogramBuckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: described(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: described(label), labels: dimensions,
            buckets: inner.durationHistogramBuckets[label] ?? inner.defaultDurationHistogramBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { inner.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { inner.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { inner.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { inner.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { inner.destroyTimer(handler) }
}
