internal import CRdKafka

/// A consumed librdkafka message, copied out into Swift values.
///
/// Internal: both initialisers only read the message; its owner (the consumer poll) destroys it.
extension KafkaRecord {
    /// Copies the message's topic, position, key, value, headers and timestamp out of
    /// librdkafka's buffers.
    init(copying message: UnsafeMutablePointer<rd_kafka_message_t>) {
        let m = message.pointee
        func bytes(_ pointer: UnsafeMutableRawPointer?, _ count: Int) -> [UInt8]? {
            guard let pointer else { return nil }
            return Array(UnsafeRawBufferPointer(start: pointer, count: count))
        }
        var headers: [KafkaHeader] = []
        var cHeaders: OpaquePointer?
        if rd_kafka_message_headers(message, &cHeaders) == RD_KAFKA_RESP_ERR_NO_ERROR, let cHeaders {
            var index = 0
            var name: UnsafePointer<CChar>?
            var value: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(cHeaders, index, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                let headerValue = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }
                headers.append(KafkaHeader(name: name.map { String(cString: $0) } ?? "", value: headerValue))
                index += 1
            }
        }
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &timestampType)
        self.init(
            topic: String(cString: rd_kafka_topic_name(m.rkt)),
            partition: m.partition,
            offset: m.offset,
            key: bytes(m.key, m.key_len),
            value: bytes(m.payload, m.len),
            headers: headers,
            timestampMilliseconds: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp
        )
    }
}

extension KafkaError {
    /// The error a consumed message carries instead of a payload.
    init(message: UnsafeMutablePointer<rd_kafka_message_t>) {
        let m = message.pointee
        let text = rd_kafka_message_errstr(message).map { String(cString: $0) }
        self.init(
            m.err,
            message: text,
            topic: m.rkt.map { String(cString: rd_kafka_topic_name($0)) },
            partition: m.partition,
            offset: m.offset
        )
    }
}
