internal import CRdKafka
import Logging

/// The producer's librdkafka calls.
///
/// `produce` is thread-safe and never blocks: `KafkaProducer` makes it on the sending task's
/// thread (through `KafkaHandle.runOnCallingThread`). `flush` blocks and runs on the
/// producer's `KafkaHandle` thread, like the delivery-report polls.
extension RDKafkaClient {
    /// An idempotent producer whose delivery reports complete `DeliveryBatch`es.
    static func producer(
        properties: [String: String], statisticsHandler: KafkaStatisticsHandler?, logger: Logger
    ) throws(KafkaError) -> RDKafkaClient {
        try RDKafkaClient(
            role: .producer, properties: properties,
            context: RDKafkaContext(logger: logger, statisticsHandler: statisticsHandler))
    }

    /// Enqueues one record (key, value and headers are copied) whose delivery report completes
    /// entry `index` of `batch`. Returns the error when librdkafka refused the record; the batch
    /// then hears nothing of it from librdkafka.
    func produce(_ record: KafkaOutgoingRecord, reportingTo batch: DeliveryBatch, index: Int) -> KafkaError? {
        let ticket = Unmanaged.passRetained(DeliveryTicket(batch: batch, index: index))
        guard let refusal = produce(record, opaque: ticket.toOpaque()) else { return nil }
        ticket.release()
        return refusal
    }

    private func produce(_ record: KafkaOutgoingRecord, opaque: UnsafeMutableRawPointer) -> KafkaError? {
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

    /// Waits up to `timeout` until every enqueued record is delivered or failed, serving the
    /// delivery reports meanwhile.
    func flush(timeout: Duration) throws(KafkaError) {
        try check(rd_kafka_flush(handle, timeout.timeoutMilliseconds))
    }
}
