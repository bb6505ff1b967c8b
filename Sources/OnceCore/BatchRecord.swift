import OnceKafka

/// One partition's records, in offset order, as the scheduler hands them to a worker.
struct PartitionBatch: Sendable {
    var partition: TopicPartition
    var records: [KafkaRecord]

    /// The offset after the last record: the partition's stored position once this commits.
    var nextOffset: Int64 { (records.last?.offset ?? -1) + 1 }
}

/// A record after envelope and data validation: an event for a handler, or a dead letter.
enum BatchRecord: Sendable {
    case event(DecodedEvent)
    case invalid(KafkaRecord, EnvelopeError)

    /// The id recorded in `processed_messages`: the producer's event id when it is readable and
    /// valid, otherwise the record's position (`kafka:<topic>/<partition>/<offset>`).
    var eventID: String {
        switch self {
        case .event(let event): return event.envelope.eventID
        case .invalid(let record, let error):
            return error.eventID ?? "kafka:\(record.topic)/\(record.partition)/\(record.offset)"
        }
    }
}

/// Validates records against the envelope rules and each handler's `decode`; pure and cheap,
/// so it runs on the cooperative pool before a database thread is involved.
struct BatchDecoder: Sendable {
    var registry: HandlerRegistry
    var maxRecordBytes = 4 * 1024 * 1024

    func decode(_ record: KafkaRecord) -> BatchRecord {
        do {
            let envelope = try EnvelopeDecoder.decode(
                record.value, supportedVersions: registry.supportedVersions, maxBytes: maxRecordBytes)
            let entry = registry.entries[envelope.type]!
            let command = try entry.decode(envelope)
            return .event(DecodedEvent(envelope: envelope, command: command, record: record))
        } catch {
            return .invalid(record, error)
        }
    }
}
