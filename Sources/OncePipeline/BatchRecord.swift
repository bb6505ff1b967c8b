import Foundation
import OnceEnvelope
import OnceKafka
import OnceTracing

/// One partition's records, in offset order, as the scheduler hands them to a worker.
package struct PartitionBatch: Sendable {
    package var partition: TopicPartition
    package var records: [KafkaRecord]

    package init(partition: TopicPartition, records: [KafkaRecord]) {
        self.partition = partition
        self.records = records
    }

    /// The offset after the last record: the partition's stored position once this commits.
    package var nextOffset: Int64 { (records.last?.offset ?? -1) + 1 }
}

/// A record after envelope and data validation: an event for a handler, or a dead letter.
package enum BatchRecord: Sendable {
    case event(DecodedEvent)
    case invalid(KafkaRecord, EnvelopeError)

    /// The id recorded in `processed_messages`: the producer's event id when it is readable and
    /// valid, otherwise the record's position (`kafka:<topic>/<partition>/<offset>`).
    package var eventID: String {
        switch self {
        case .event(let event): return event.envelope.eventID
        case .invalid(let record, let error):
            return error.eventID ?? "kafka:\(record.topic)/\(record.partition)/\(record.offset)"
        }
    }

    /// The tenant the claim is recorded under: the event's, or for a rejected record the one it
    /// names when that is readable, else `ClaimKey.unknownTenant`.
    package var claimTenant: String {
        switch self {
        case .event(let event): return event.envelope.tenantID
        case .invalid(_, let error): return error.tenantID ?? ClaimKey.unknownTenant
        }
    }

    /// The claim's dedup key within its consumer group.
    package var claimKey: ClaimKey { ClaimKey(tenantID: claimTenant, eventID: eventID) }

    /// The time that places the claim in its time partition, in microseconds since the epoch:
    /// the record's `occurred_at` when readable, else the broker's timestamp, else now. Every
    /// copy of a record carries the same bytes and every delivery of one offset the same
    /// timestamp, so copies meet in one partition.
    package var claimTimeMicroseconds: Int64 {
        let occurredAt: String?
        switch self {
        case .event(let event): occurredAt = event.envelope.occurredAt
        case .invalid(_, let error): occurredAt = error.occurredAt
        }
        if let occurredAt, let micros = Timestamp.microsecondsSinceEpoch(occurredAt) { return micros }
        if let millis = record.timestampMilliseconds, millis > 0 { return millis * 1000 }
        return Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
    }
}

/// What `processed_messages` deduplicates on within a consumer group: the tenant and the
/// producer's event id (ids are unique only within a tenant, CONTRACT.md §2).
public struct ClaimKey: Sendable, Hashable, CustomStringConvertible {
    public var tenantID: String
    public var eventID: String

    public init(tenantID: String, eventID: String) {
        self.tenantID = tenantID
        self.eventID = eventID
    }

    /// The tenant of a rejected record that names no valid one. No valid tenant id can be
    /// `?` (tenant ids are `[A-Za-z0-9._-]`), and such records are identified by their position
    /// anyway when their event id is unreadable too.
    public static let unknownTenant = "?"

    public var description: String { "\(tenantID)/\(eventID)" }
}

/// Validates records against the envelope rules and each handler's `decode`; pure and cheap,
/// so it runs on the cooperative pool before a database thread is involved.
package struct BatchDecoder: Sendable {
    package var registry: HandlerRegistry
    package var maxRecordBytes: Int
    package var tracing: RecordTracing

    package init(
        registry: HandlerRegistry, maxRecordBytes: Int = PipelineDefaults.maxRecordBytes,
        tracing: RecordTracing = .propagateOnly
    ) {
        self.registry = registry
        self.maxRecordBytes = maxRecordBytes
        self.tracing = tracing
    }

    package func decode(_ record: KafkaRecord) -> BatchRecord {
        do {
            let envelope = try EnvelopeDecoder.decode(
                record.value, supportedVersions: registry.supportedVersions, maxBytes: maxRecordBytes)
            let entry = registry.entries[envelope.type]!
            do throws(EnvelopeError) {
                let command = try entry.decode(envelope)
                let trace = record.headers.isEmpty ? nil : tracing.received(record, eventID: envelope.eventID)
                return .event(DecodedEvent(envelope: envelope, command: command, record: record, trace: trace))
            } catch {
                var error = error
                error.tenantID = envelope.tenantID
                error.occurredAt = envelope.occurredAt
                return .invalid(record, error)
            }
        } catch {
            return .invalid(record, error)
        }
    }
}

extension DecodedEvent {
    /// The event's dedup key: its tenant and its producer's id.
    package var claimKey: ClaimKey { ClaimKey(tenantID: envelope.tenantID, eventID: envelope.eventID) }
}

extension BatchRecord {
    package var record: KafkaRecord {
        switch self {
        case .event(let event): return event.record
        case .invalid(let record, _): return record
        }
    }

    package var offset: Int64 { record.offset }
    var topic: String { record.topic }
    var partition: Int32 { record.partition }

    var eventType: String? {
        switch self {
        case .event(let event): return event.envelope.type
        case .invalid: return nil
        }
    }

    var tenantID: String? {
        switch self {
        case .event(let event): return event.envelope.tenantID
        case .invalid: return nil
        }
    }

    /// The event, when it carries a trace.
    var tracedEvent: DecodedEvent? {
        if case .event(let event) = self, event.trace != nil { return event }
        return nil
    }

    var provisionalOutcome: EventOutcome {
        switch self {
        case .event: return .applied
        case .invalid: return .deadLettered
        }
    }
}

extension Array where Element == BatchRecord {
    /// Consecutive valid events of one type (or sharing one `CommandSharedAcrossTypes` command
    /// type), in offset order: each run is one handler call.
    func eventRuns() -> [[DecodedEvent]] {
        var runs: [[DecodedEvent]] = []
        for case .event(let event) in self {
            if let last = runs.last?.last, last.sharesRun(with: event) {
                runs[runs.count - 1].append(event)
            } else {
                runs.append([event])
            }
        }
        return runs
    }
}

/// A handler command that events of several types share, so that consecutive events of those
/// types make one run, applied in one handler call in offset order (by the handler of the
/// run's first event) instead of one call per type. Every handler whose `Command` is such a
/// type must apply any event carrying it, whatever its envelope type.
///
/// The credit handlers use it: a partition's interleaved charges and grants are posted by one
/// statement, which locks accounts in one order (two statements per transaction could
/// deadlock with another partition's) and costs one round trip instead of one per run.
public protocol CommandSharedAcrossTypes: Sendable {}

extension DecodedEvent {
    func sharesRun(with next: DecodedEvent) -> Bool {
        if envelope.type == next.envelope.type { return true }
        return command is any CommandSharedAcrossTypes
            && ObjectIdentifier(type(of: command)) == ObjectIdentifier(type(of: next.command))
    }
}
