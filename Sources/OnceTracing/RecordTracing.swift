import OnceKafka
import Tracing

/// How `once` carries a consumed record's trace onto what the record causes, and which spans
/// it records on the way (poll → batch transaction → publish).
///
/// Without a tracer (the default: nothing is exported) a record carrying a valid `traceparent`
/// passes on the same trace id and flags with a new span id, and its `tracestate` unchanged;
/// no span is recorded. With a tracer (swift-otel's, when `once run` is given an OTLP
/// endpoint) each such record gets a consumer span `process <topic>` from its poll to its
/// commit, child of the record's context, whose id is what the record passes on; each batch
/// transaction holding traced records gets a span linked to theirs; and the relay records a
/// producer span `publish <topic>` per traced row, whose context the output record carries.
/// Records without a trace context start no trace. A `Sendable` value; any thread.
public struct RecordTracing: Sendable {
    /// Propagation only; no span is recorded.
    public static let propagateOnly = RecordTracing(tracer: nil)

    let tracer: (any Tracer)?

    public init(tracer: (any Tracer)?) {
        self.tracer = tracer
    }

    /// Whether spans are recorded (a tracer was given).
    public var recordsSpans: Bool { tracer != nil }

    /// The trace a consumed record carries, continued: nil when it carries no valid
    /// `traceparent`. Starts its `process` span when a tracer records spans.
    public func received(_ record: KafkaRecord, eventID: String?) -> RecordTrace? {
        guard let parent = record.headerText(TraceParent.headerName).flatMap(TraceParent.init) else { return nil }
        let state = record.headerText(TraceParent.stateHeaderName)
        guard let tracer else {
            var headers = [TraceParent.headerName: parent.causedByNewSpan().description]
            headers[TraceParent.stateHeaderName] = state
            return RecordTrace(headers: headers, span: nil)
        }
        var context = InstrumentationContext.topLevel
        tracer.extract(record.headers, into: &context, using: KafkaHeaderExtractor())
        let span = tracer.startSpan("process \(record.topic)", context: context, ofKind: .consumer)
        span.attributes["messaging.system"] = "kafka"
        span.attributes["messaging.operation.type"] = "process"
        span.attributes["messaging.destination.name"] = record.topic
        span.attributes["messaging.destination.partition.id"] = "\(record.partition)"
        span.attributes["messaging.kafka.offset"] = record.offset
        if let eventID { span.attributes["messaging.message.id"] = eventID }
        var headers: [String: String] = [:]
        tracer.inject(span.context, into: &headers, using: HeaderDictionaryInjector())
        if headers[TraceParent.headerName] == nil {
            // A tracer that does not write W3C headers: propagate as without one.
            headers[TraceParent.headerName] = parent.causedByNewSpan().description
            headers[TraceParent.stateHeaderName] = state
        }
        return RecordTrace(headers: headers, span: span)
    }

    /// Starts the span of a batch transaction over `traces` (the traced records among its
    /// events), linked to each record's span; nil when no span is recorded.
    public func transactionSpan(over traces: [RecordTrace], records: Int) -> (any Span)? {
        guard let tracer else { return nil }
        let spans = traces.compactMap(\.span)
        guard let first = spans.first else { return nil }
        let span = tracer.startSpan("once batch transaction", context: first.context, ofKind: .internal)
        span.attributes["db.system.name"] = "postgresql"
        span.attributes["once.batch.records"] = records
        for other in spans { span.addLink(SpanLink(context: other.context, attributes: [:])) }
        return span
    }

    /// The headers an outbox row is published with, and the `publish` span to end on its
    /// delivery: the stored headers unchanged when no span is recorded or the row carries no
    /// trace; otherwise with the trace headers replaced by the publish span's.
    public func publishing(_ headers: [KafkaHeader], topic: String) -> (headers: [KafkaHeader], span: (any Span)?) {
        guard let tracer, headers.text(TraceParent.headerName).flatMap(TraceParent.init) != nil
        else { return (headers, nil) }
        var context = InstrumentationContext.topLevel
        tracer.extract(headers, into: &context, using: KafkaHeaderExtractor())
        let span = tracer.startSpan("publish \(topic)", context: context, ofKind: .producer)
        span.attributes["messaging.system"] = "kafka"
        span.attributes["messaging.operation.type"] = "send"
        span.attributes["messaging.destination.name"] = topic
        var trace: [String: String] = [:]
        tracer.inject(span.context, into: &trace, using: HeaderDictionaryInjector())
        guard !trace.isEmpty else { return (headers, span) }
        let kept = headers.filter { trace[$0.name] == nil }
        return (kept + trace.keys.sorted().map { KafkaHeader(name: $0, value: Array(trace[$0]!.utf8)) }, span)
    }
}

/// The trace of one consumed record: the headers that carry it onto the records the event
/// causes, and its `process` span when one is recorded (ended by `finish`). Immutable; a span
/// is safe to end from any thread, once.
public struct RecordTrace: Sendable {
    /// `traceparent` (and `tracestate` when the record had one) for the records it causes.
    public let headers: [String: String]
    public let span: (any Span)?

    /// Ends the record's span after its transaction committed, with what the event did.
    public func finish(outcome: String) {
        guard let span else { return }
        span.attributes["once.outcome"] = outcome
        span.end()
    }
}

extension Array where Element == KafkaHeader {
    /// The last value of header `name` as UTF-8 text (a repeated name: the last one wins).
    fileprivate func text(_ name: String) -> String? {
        last(where: { $0.name == name })?.value.map { String(decoding: $0, as: UTF8.self) }
    }
}

extension KafkaRecord {
    fileprivate func headerText(_ name: String) -> String? { headers.text(name) }
}

/// Reads trace headers from a record's headers (W3C names are lowercase).
struct KafkaHeaderExtractor: Extractor {
    func extract(key: String, from carrier: [KafkaHeader]) -> String? {
        carrier.text(key.lowercased())
    }
}

/// Writes trace headers into a name → value dictionary.
struct HeaderDictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}
