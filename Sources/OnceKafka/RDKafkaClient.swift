internal import CRdKafka
import Logging
import Synchronization

/// What librdkafka's callbacks report, kept until Swift drains it.
///
/// Callbacks run on whichever thread serves the client's queue (the consumer's or producer's
/// own thread); they only append here under the mutex, and the owner takes the lists later.
final class RDKafkaContext: Sendable {
    let logger: Logger
    let rebalanceListener: (any KafkaRebalanceListener)?
    private let pending = Mutex<Pending>(Pending())

    struct Pending {
        var rebalances: [KafkaRebalanceEvent] = []
        var errors: [KafkaError] = []
    }

    init(logger: Logger, rebalanceListener: (any KafkaRebalanceListener)? = nil) {
        self.logger = logger
        self.rebalanceListener = rebalanceListener
    }

    func record(_ event: KafkaRebalanceEvent) {
        pending.withLock { $0.rebalances.append(event) }
    }

    func record(_ error: KafkaError) {
        pending.withLock { $0.errors.append(error) }
    }

    func take() -> Pending {
        pending.withLock { pending in
            defer { pending = Pending() }
            return pending
        }
    }
}

/// Owns one `rd_kafka_t` and destroys it exactly once, in `deinit`.
///
/// Internal: the only type that holds the C handle. Construction takes a property map and
/// either returns a working client or throws with the property librdkafka rejected (the
/// `rd_kafka_conf_t` is freed on every failure path; librdkafka owns it only on success).
final class RDKafkaClient {
    let handle: OpaquePointer
    /// Kept as a stored property so that the context, which callbacks reach through the
    /// handle's opaque pointer, outlives the handle: `deinit` destroys the handle first.
    let context: RDKafkaContext

    init(
        type: rd_kafka_type_t,
        properties: [String: String],
        context: RDKafkaContext,
        configure: (OpaquePointer) -> Void = { _ in }
    ) throws(KafkaError) {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(kind: .other, message: "rd_kafka_conf_new failed")
        }
        var errstr = [CChar](repeating: 0, count: 512)
        for (name, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, name, value, &errstr, errstr.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                throw KafkaError(
                    kind: .configuration(property: name),
                    message: "property \(name): \(String(cBuffer: errstr))"
                )
            }
        }
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(context).toOpaque())
        rd_kafka_conf_set_log_cb(conf, onceKafkaLog)
        rd_kafka_conf_set_error_cb(conf, onceKafkaError)
        configure(conf)
        guard let handle = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(kind: .other, message: "rd_kafka_new: \(String(cBuffer: errstr))")
        }
        self.handle = handle
        self.context = context
        // log.queue=true keeps log lines off librdkafka's threads: route them to the main
        // queue, which the owner serves from its own thread.
        rd_kafka_set_log_queue(handle, nil)
    }

    deinit {
        rd_kafka_destroy(handle)
    }

    /// The first fatal error raised on this instance, if any (idempotent producer fencing, …).
    func fatalError() -> KafkaError? {
        var errstr = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(handle, &errstr, errstr.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        return KafkaError(err, message: String(cBuffer: errstr), isFatal: true)
    }
}

// MARK: - Callbacks (called on the thread that serves the client's queue)

private func onceKafkaContext(_ rk: OpaquePointer?) -> RDKafkaContext? {
    guard let rk, let opaque = rd_kafka_opaque(rk) else { return nil }
    return Unmanaged<RDKafkaContext>.fromOpaque(opaque).takeUnretainedValue()
}

private func onceKafkaLog(_ rk: OpaquePointer?, _ level: Int32, _ facility: UnsafePointer<CChar>?, _ line: UnsafePointer<CChar>?) {
    guard let context = onceKafkaContext(rk) else { return }
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

private func onceKafkaError(_ rk: OpaquePointer?, _ err: Int32, _ reason: UnsafePointer<CChar>?, _ opaque: UnsafeMutableRawPointer?) {
    guard let context = onceKafkaContext(rk) else { return }
    let code = rd_kafka_resp_err_t(rawValue: err)
    let message = reason.map { String(cString: $0) }
    let error = KafkaError(code, message: message, isFatal: code == RD_KAFKA_RESP_ERR__FATAL)
    context.logger.warning("librdkafka: \(error)")
    context.record(error)
}
