internal import CRdKafka
import Synchronization

/// How librdkafka's delivery reports reach the `send` that enqueued the records.
///
/// Each enqueued record carries a retained `DeliveryTicket` as its opaque. librdkafka calls
/// the callback installed here on the producer's thread, inside a delivery-report poll or a
/// flush, once per record; the callback takes the ticket back (releasing it) and completes the
/// ticket's entry of its `DeliveryBatch`.
enum DeliveryReports {
    /// Routes the delivery reports of the instance made from `conf` here.
    static func install(on conf: OpaquePointer) {
        rd_kafka_conf_set_dr_msg_cb(conf, onDelivery)
    }
}

/// Collects the delivery results of one `send` call and wakes the sender when all are in.
///
/// Thread-safe: entries are completed from the producer's thread (or by the sender for records
/// librdkafka refused) and awaited by one task.
final class DeliveryBatch: Sendable {
    typealias Results = [Result<KafkaDeliveryReport, KafkaError>]

    private struct State {
        var results: [Result<KafkaDeliveryReport, KafkaError>?]
        var remaining: Int
        var waiter: CheckedContinuation<Results, Never>?
    }

    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count, waiter: nil))
    }

    /// Records entry `index`'s outcome; each entry is completed exactly once.
    func complete(_ index: Int, _ result: Result<KafkaDeliveryReport, KafkaError>) {
        let finished: (CheckedContinuation<Results, Never>, Results)? = state.withLock { state in
            state.results[index] = result
            state.remaining -= 1
            guard state.remaining == 0, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return (waiter, state.results.map { $0! })
        }
        if let (waiter, results) = finished { waiter.resume(returning: results) }
    }

    /// Every entry's outcome, in entry order, once all are complete.
    func results() async -> Results {
        await withCheckedContinuation { continuation in
            let ready: Results? = state.withLock { state in
                guard state.remaining == 0 else {
                    state.waiter = continuation
                    return nil
                }
                return state.results.map { $0! }
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// One record's place in a `DeliveryBatch`; passed retained to librdkafka as the message's
/// opaque and released by the delivery callback (or by the sender when enqueueing failed).
final class DeliveryTicket: Sendable {
    let batch: DeliveryBatch
    let index: Int
    init(batch: DeliveryBatch, index: Int) {
        self.batch = batch
        self.index = index
    }
}

/// librdkafka's delivery callback, run on the producer's thread.
private func onDelivery(
    _ rk: OpaquePointer?,
    _ message: UnsafePointer<rd_kafka_message_t>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let message, let ticketPointer = message.pointee._private else { return }
    let ticket = Unmanaged<DeliveryTicket>.fromOpaque(ticketPointer).takeRetainedValue()
    let m = message.pointee
    let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
    if m.err == RD_KAFKA_RESP_ERR_NO_ERROR {
        ticket.batch.complete(ticket.index, .success(KafkaDeliveryReport(topic: topic, partition: m.partition, offset: m.offset)))
    } else {
        let text = rd_kafka_err2str(m.err).map { String(cString: $0) }
        ticket.batch.complete(ticket.index, .failure(KafkaError(m.err, message: text, topic: topic, partition: m.partition)))
    }
}
