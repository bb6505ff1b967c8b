import OnceEnvelope
import OnceKafka
import Testing

@testable import OncePipeline

/// The dead-letter topic's record carries the source record's headers (a `traceparent`, so
/// that a trace goes on through the dead letter) beside the `once-*` ones.
@Suite struct DeadLetterHeadersTests {
    @Test func sourceHeadersTravelAndOnceHeadersWin() throws {
        let record = KafkaRecord(
            topic: "in", partition: 3, offset: 42, key: nil, value: Array("{bad".utf8),
            headers: [
                KafkaHeader(name: "traceparent", value: Array("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".utf8)),
                KafkaHeader(name: "once-reason", value: Array("forged".utf8)),
                KafkaHeader(name: "no-value", value: nil),
            ])
        let letter = try #require(DeadLetter(invalid: BatchDecoder(registry: HandlerRegistry()).decode(record)))
        let message = letter.outboxMessage(consumerGroup: "g", topic: "dlq")
        #expect(message.headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        #expect(message.headers["once-reason"] == "invalid_json")
        #expect(message.headers["once-source-offset"] == "42")
        #expect(message.headers["no-value"] == nil)
        #expect(letter.headersJSON.contains("no-value"), "dead_letters.headers keeps every header")
    }
}
