internal import CRdKafka
import Logging
import Synchronization

/// What librdkafka's callbacks report, kept until Swift drains it.
///
/// One context belongs to one `RDKafkaClient`, which registers it as the instance's opaque and
/// keeps it alive for as long as the instance exists. Callbacks run on whichever thread serves
/// the instance's queue (its `KafkaHandle`'s thread); they only log, call the rebalance
/// listener, and append here under the mutex; the owner takes the lists after each poll.
final class RDKafkaContext: Sendable {
    let logger: Logger
    let rebalanceListener: (any KafkaRebalanceListener)?
    /// Called with each statistics report (`statistics.interval.ms`), on the serving thread.
    let statisticsHandler: KafkaStatisticsHandler?
    private let pending = Mutex<Pending>(Pending())

    struct Pending {
        var rebalances: [KafkaRebalanceEvent] = []
        var errors: [KafkaError] = []
    }

    init(
        logger: Logger, rebalanceListener: (any KafkaRebalanceListener)? = nil,
        statisticsHandler: KafkaStatisticsHandler? = nil
    ) {
        self.logger = logger
        self.rebalanceListener = rebalanceListener
        self.statisticsHandler = statisticsHandler
    }

    func record(_ event: KafkaRebalanceEvent) {
        pending.withLock { $0.rebalances.append(event) }
    }

    func record(_ error: KafkaError) {
        pending.withLock { $0.errors.append(error) }
    }

    /// Everything recorded since the last call.
    func take() -> Pending {
        pending.withLock { pending in
            defer { pending = Pending() }
            return pending
        }
    }

    /// Makes this context the configuration's opaque and routes its log lines and errors here.
    /// The caller keeps the context alive for as long as the instance made from `conf` exists.
    func install(on conf: OpaquePointer) {
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(self).toOpaque())
        rd_kafka_conf_set_log_cb(conf, onLog)
        rd_kafka_conf_set_error_cb(conf, onError)
        if statisticsHandler != nil { rd_kafka_conf_set_stats_cb(conf, onStatistics) }
    }

    /// The context an instance was configured with, from inside one of its callbacks.
    static func of(_ rk: OpaquePointer?) -> RDKafkaContext? {
        guard let rk, let opaque = rd_kafka_opaque(rk) else { return nil }
        return Unmanaged<RDKafkaContext>.fromOpaque(opaque).takeUnretainedValue()
    }
}

// MARK: - Callbacks (called on the thread that serves the instance's queue)

private func onLog(_ rk: OpaquePointer?, _ level: Int32, _ facility: UnsafePointer<CChar>?, _ line: UnsafePointer<CChar>?) {
    guard let context = RDKafkaContext.of(rk) else { return }
    let swiftLevel: Logger.Level
    switch level {
    case ...3: swiftLevel = .error
    case 4: swiftLevel = .warning
    case 5: swiftLevel = .notice
    case 6: swiftLevel = .info
    default: swiftLevel = .debug
    }
    let facilityText = facility.map { String(cString: $0) } ?? "-"
    context.logger.log(
        level: swiftLevel,
        "\(line.map { String(cString: $0) } ?? "")",
        metadata: ["rdkafka.facility": "\(facilityText)"]
    )
}

private func onError(_ rk: OpaquePointer?, _ err: Int32, _ reason: UnsafePointer<CChar>?, _ opaque: UnsafeMutableRawPointer?) {
    guard let context = RDKafkaContext.of(rk) else { return }
    let code = rd_kafka_resp_err_t(rawValue: err)
    let message = reason.map { String(cString: $0) }
    let error = KafkaError(code, message: message, isFatal: code == RD_KAFKA_RESP_ERR__FATAL)
    context.logger.warning("librdkafka: \(error)")
    context.record(error)
}

private func onStatistics(
    _ rk: OpaquePointer?, _ json: UnsafeMutablePointer<CChar>?, _ length: Int, _ opaque: UnsafeMutableRawPointer?
) -> Int32 {
    guard let context = RDKafkaContext.of(rk), let handler = context.statisticsHandler, let json else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: json, count: length)
    if let statistics = KafkaStatistics(json: Array(bytes)) { handler(statistics) }
    return 0  // librdkafka frees the JSON
}
