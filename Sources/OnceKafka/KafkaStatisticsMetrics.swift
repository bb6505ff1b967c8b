import Metrics
import Synchronization

/// Reports a client's statistics through swift-metrics (no-ops until a backend is
/// bootstrapped): `once_kafka_broker_rtt_seconds{client,broker}`,
/// `once_kafka_queue_messages{client}` and `once_kafka_errors_total{client}` (librdkafka's
/// cumulative error counts turned into increments). One per client; `record` may be called
/// from any thread.
public final class KafkaStatisticsMetrics: Sendable {
    private let client: String
    private let queued: Gauge
    private let errors: Counter
    private let errorsSeen = Mutex<[String: Int64]>([:])

    /// `client` labels the series: `consumer` or `producer`.
    public init(client: String) {
        self.client = client
        queued = Gauge(label: "once_kafka_queue_messages", dimensions: [("client", client)])
        errors = Counter(label: "once_kafka_errors_total", dimensions: [("client", client)])
    }

    public func record(_ statistics: KafkaStatistics) {
        queued.record(statistics.queuedMessages)
        var newErrors: Int64 = 0
        errorsSeen.withLock { seen in
            for broker in statistics.brokers {
                // A count that went down belongs to a new connection's instance: count it whole.
                let before = seen[broker.name] ?? 0
                newErrors += broker.errors >= before ? broker.errors - before : broker.errors
                seen[broker.name] = broker.errors
            }
        }
        if newErrors > 0 { errors.increment(by: newErrors) }
        for broker in statistics.brokers {
            guard let rtt = broker.averageRoundTripSeconds else { continue }
            Gauge(label: "once_kafka_broker_rtt_seconds", dimensions: [("client", client), ("broker", broker.name)])
                .record(rtt)
        }
    }
}
