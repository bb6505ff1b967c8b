internal import CRdKafka
import Logging
import OnceThreads
import Synchronization

/// An idempotent Kafka producer (`enable.idempotence=true`, `acks=all`) whose sends can be
/// awaited until the broker acknowledged them.
///
/// Thread-safety: all methods may be called from any task. Enqueueing a record never blocks
/// (librdkafka's produce call is non-blocking); delivery reports are served by a thread of the
/// producer's own. Call `close()` to flush and stop that thread; the handle is destroyed when the
/// last reference to the producer goes away, with nothing left in flight.
public final class KafkaProducer: Sendable {
    private let client: UnsafeTransfer<RDKafkaClient>
    private let thread: BlockingThread
    private let state = Mutex<State>(.running)

    private enum State {
        case running, closing, closed
    }

    /// Creates the client and starts serving delivery reports. Throws `KafkaError` with kind
    /// `.configuration` naming a rejected property.
    public init(configuration: KafkaProducerConfiguration, logger: Logger = Logger(label: "once.kafka.producer")) throws {
        let context = RDKafkaContext(logger: logger)
        let client = try RDKafkaClient(type: RD_KAFKA_PRODUCER, properties: configuration.librdkafkaProperties, context: context) { conf in
            rd_kafka_conf_set_dr_msg_cb(conf, onceKafkaDelivery)
        }
        self.client = UnsafeTransfer(client)
        self.thread = BlockingThread(name: "once-kafka-producer")
        servePolls()
    }

    /// Serves delivery reports and logs in short slices, so that other jobs (flush, close) can
    /// run on the same thread in between.
    private func servePolls() {
        thread.execute { [self] in
            guard state.withLock({ $0 == .running }) else { return }
            rd_kafka_poll(client.value.handle, 50)
            servePolls()
        }
    }

    /// Sends one record and waits for the broker's acknowledgement.
    public func send(_ record: KafkaOutgoingRecord) async throws -> KafkaDeliveryReport {
        try await send([record])[0].get()
    }

    /// Sends the records in order and waits until each one is acknowledged or has failed.
    /// Records for the same partition keep their order. Throws only if the producer is closed.
    public func send(_ records: [KafkaOutgoingRecord]) async throws -> [Result<KafkaDeliveryReport, KafkaError>] {
        guard !records.isEmpty else { return [] }
        guard state.withLock({ $0 == .running }) else { throw KafkaError.closed("producer") }
        let batch = DeliveryBatch(count: records.count)
        for (index, record) in records.enumerated() {
            let ticket = Unmanaged.passRetained(DeliveryTicket(batch: batch, index: index))
            while true {
                guard let error = client.value.produce(record, opaque: ticket.toOpaque()) else { break }
                if error.kind == .queueFull {
                    // Backoff while the delivery thread drains the local queue.
                    try? await Task.sleep(for: .milliseconds(5))
                    continue
                }
                ticket.release()
                batch.complete(index, .failure(error))
                break
            }
        }
        return await batch.results()
    }

    /// Waits until every enqueued record is delivered or failed, up to `timeout`.
    public func flush(timeout: Duration = .seconds(30)) async throws {
        let client = self.client
        let err = try await thread.run { rd_kafka_flush(client.value.handle, timeout.timeoutMilliseconds) }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(err) }
    }

    /// Flushes, stops the delivery thread and destroys the handle. Safe to call twice.
    public func close(timeout: Duration = .seconds(30)) async {
        let shouldClose = state.withLock { state in
            guard state == .running else { return false }
            state = .closing
            return true
        }
        guard shouldClose else { return }
        let client = self.client
        _ = try? await thread.run { rd_kafka_flush(client.value.handle, timeout.timeoutMilliseconds) }
        state.withLock { $0 = .closed }
        thread.shutdown()
    }
}

/// Carries a non-Sendable reference across isolation domains.
/// @unchecked Sendable: used only for `RDKafkaClient` in `KafkaProducer`, whose `rd_kafka_t`
/// librdkafka documents as safe to use from several threads for produce, poll and flush; the
/// Swift object itself is immutable after init.
struct UnsafeTransfer<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Collects the delivery results of one `send` call and wakes the sender when all are in.
final class DeliveryBatch: Sendable {
    private struct State {
        var results: [Result<KafkaDeliveryReport, KafkaError>?]
        var remaining: Int
        var waiter: CheckedContinuation<[Result<KafkaDeliveryReport, KafkaError>], Never>?
    }

    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(results: Array(repeating: nil, count: count), remaining: count, waiter: nil))
    }

    func complete(_ index: Int, _ result: Result<KafkaDeliveryReport, KafkaError>) {
        let finished: (CheckedContinuation<[Result<KafkaDeliveryReport, KafkaError>], Never>, [Result<KafkaDeliveryReport, KafkaError>])? =
            state.withLock { state in
                state.results[index] = result
                state.remaining -= 1
                guard state.remaining == 0, let waiter = state.waiter else { return nil }
                state.waiter = nil
                return (waiter, state.results.map { $0! })
            }
        if let (waiter, results) = finished { waiter.resume(returning: results) }
    }

    func results() async -> [Result<KafkaDeliveryReport, KafkaError>] {
        await withCheckedContinuation { continuation in
            let ready: [Result<KafkaDeliveryReport, KafkaError>]? = state.withLock { state in
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

extension RDKafkaClient {
    /// Enqueues one record (payloads are copied); returns the error when librdkafka refused it.
    func produce(_ record: KafkaOutgoingRecord, opaque: UnsafeMutableRawPointer) -> KafkaError? {
        func withBytes<T>(_ bytes: [UInt8]?, _ body: (UnsafeMutableRawPointer?, Int) -> T) -> T {
            guard let bytes else { return body(nil, 0) }
            if bytes.isEmpty {
                // An empty value is not a null one: lend a valid pointer with a zero length.
                var placeholder: UInt8 = 0
                return withUnsafeMutableBytes(of: &placeholder) { body($0.baseAddress, 0) }
            }
            var copy = bytes
            return copy.withUnsafeMutableBytes { body($0.baseAddress, $0.count) }
        }
        return record.topic.withCString { topic in
            withBytes(record.key) { key, keyCount in
                withBytes(record.value) { value, valueCount in
                    var fields: [rd_kafka_vu_t] = []
                    func field(_ type: rd_kafka_vtype_t, _ set: (inout rd_kafka_vu_t) -> Void) {
                        var vu = rd_kafka_vu_t()
                        vu.vtype = type
                        set(&vu)
                        fields.append(vu)
                    }
                    field(RD_KAFKA_VTYPE_TOPIC) { $0.u.cstr = topic }
                    if let partition = record.partition {
                        field(RD_KAFKA_VTYPE_PARTITION) { $0.u.i32 = partition }
                    }
                    if let key { field(RD_KAFKA_VTYPE_KEY) { $0.u.mem = .init(ptr: key, size: keyCount) } }
                    if let value { field(RD_KAFKA_VTYPE_VALUE) { $0.u.mem = .init(ptr: value, size: valueCount) } }
                    field(RD_KAFKA_VTYPE_MSGFLAGS) { $0.u.i = RD_KAFKA_MSG_F_COPY }
                    field(RD_KAFKA_VTYPE_OPAQUE) { $0.u.ptr = opaque }
                    var headers: OpaquePointer?
                    if !record.headers.isEmpty {
                        let cHeaders = rd_kafka_headers_new(record.headers.count)!
                        for header in record.headers {
                            if let bytes = header.value {
                                _ = bytes.withUnsafeBytes { rd_kafka_header_add(cHeaders, header.name, -1, $0.baseAddress, $0.count) }
                            } else {
                                rd_kafka_header_add(cHeaders, header.name, -1, nil, 0)
                            }
                        }
                        headers = cHeaders
                        field(RD_KAFKA_VTYPE_HEADERS) { $0.u.headers = cHeaders }
                    }
                    guard let error = rd_kafka_produceva(handle, &fields, fields.count) else { return nil }
                    // librdkafka takes the headers only when the produce call succeeds.
                    if let headers { rd_kafka_headers_destroy(headers) }
                    var failure = KafkaError(consuming: error)
                    failure.topic = record.topic
                    failure.partition = record.partition
                    return failure
                }
            }
        }
    }
}

/// librdkafka's delivery callback, run inside `rd_kafka_poll` on the producer's thread.
private func onceKafkaDelivery(
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
