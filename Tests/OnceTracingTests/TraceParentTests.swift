import OnceKafka
import OnceTracing
import Testing

/// W3C `traceparent` parsing, and what a record passes on when no tracer records spans.
@Suite struct TraceParentTests {
    static let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    @Test func parsesAndWritesBackAValidHeader() throws {
        let parent = try #require(TraceParent(Self.valid))
        #expect(parent.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(parent.parentID == "00f067aa0ba902b7")
        #expect(parent.flags == "01")
        #expect(parent.description == Self.valid)
    }

    @Test(arguments: [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  // no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  // version 00 has four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",  // not hex
    ])
    func refusesAnInvalidHeader(_ header: String) {
        #expect(TraceParent(header) == nil, "\(header)")
    }

    @Test func readsALaterVersionByItsFirstFourFields() throws {
        let parent = try #require(TraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"))
        #expect(parent.description == Self.valid)
    }

    @Test func aNewSpanKeepsTheTraceAndTheFlags() throws {
        let parent = try #require(TraceParent(Self.valid))
        let child = parent.causedByNewSpan()
        #expect(child.traceID == parent.traceID)
        #expect(child.flags == parent.flags)
        #expect(child.parentID != parent.parentID)
        #expect(TraceParent(child.description) == child)
    }

    @Test func withoutATracerARecordPassesOnItsTraceWithANewSpanID() throws {
        let record = KafkaRecord(
            topic: "t", partition: 0, offset: 7, key: nil, value: [],
            headers: [
                KafkaHeader(name: "traceparent", value: Array(Self.valid.utf8)),
                KafkaHeader(name: "tracestate", value: Array("vendor=opaque".utf8)),
            ])
        let trace = try #require(RecordTracing.propagateOnly.received(record, eventID: "e1"))
        #expect(trace.span == nil)
        let passed = try #require(trace.headers["traceparent"].flatMap(TraceParent.init))
        #expect(passed.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(passed.parentID != "00f067aa0ba902b7")
        #expect(trace.headers["tracestate"] == "vendor=opaque")
    }

    @Test func aRecordWithoutAValidTraceStartsNone() {
        let record = KafkaRecord(
            topic: "t", partition: 0, offset: 7, key: nil, value: [],
            headers: [KafkaHeader(name: "traceparent", value: Array("garbage".utf8))])
        #expect(RecordTracing.propagateOnly.received(record, eventID: nil) == nil)
        let headers = [KafkaHeader(name: "once-event-id", value: Array("x".utf8))]
        #expect(RecordTracing.propagateOnly.publishing(headers, topic: "out").headers == headers)
    }
}
