import Foundation
import Hummingbird
import OnceDomain
import OnceJSON
import OnceKafka
import OnceTestSupport
import Synchronization
import Testing

/// W3C trace context through `once run`: a `traceparent` on an input record reaches the outbox
/// row and the output record with the same trace id and a new span id; with an OTLP endpoint,
/// the spans (process → batch transaction, publish) arrive at a real OTLP/HTTP receiver and
/// chain up with those headers.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct TraceContextTests {
    static func hex(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 1...255)) }.joined()
    }

    let traceID = Self.hex(16)
    let parentID = Self.hex(8)
    var traceparent: String { "00-\(traceID)-\(parentID)-01" }

    private func traced(_ fixture: OperatorFixture, _ id: String) -> KafkaOutgoingRecord {
        KafkaOutgoingRecord(
            topic: fixture.topic, partition: 0, value: fixture.grant(id),
            headers: [KafkaHeader(name: "traceparent", string: traceparent), KafkaHeader(name: "tracestate", string: "acme=7")])
    }

    /// Where the credit ledger's output topic ends now, per partition.
    private func ledgerEnds(_ fixture: OperatorFixture) async throws -> [TopicPartition: Int64] {
        let topic = DomainTopics().creditLedger
        let count = try await fixture.admin.partitionCount(topic: topic, timeout: .seconds(10))
        let consumer = try await KafkaConsumer(
            configuration: KafkaConsumerConfiguration(bootstrapServers: fixture.brokers, groupID: TestServices.unique("ends")))
        var ends: [TopicPartition: Int64] = [:]
        for partition in 0..<count {
            let tp = TopicPartition(topic, partition)
            ends[tp] = try await consumer.watermarks(tp).high
        }
        await consumer.close()
        return ends
    }

    /// The ledger topic's records from `starts` that this fixture's tenant caused, by source event id.
    private func ledgerRecords(
        _ fixture: OperatorFixture, from starts: [TopicPartition: Int64], expecting count: Int
    ) async throws -> [String: KafkaRecord] {
        let consumer = try await KafkaConsumer(
            configuration: KafkaConsumerConfiguration(bootstrapServers: fixture.brokers, groupID: TestServices.unique("read")))
        try await consumer.assign(starts)
        var found: [String: KafkaRecord] = [:]
        try await eventually("\(count) output records of tenant \(fixture.tenant)", timeout: .seconds(60)) {
            for record in try await consumer.poll(timeout: .milliseconds(200)).records
            where record.header("once-tenant-id") == fixture.tenant {
                found[record.header("once-source-event-id") ?? "?"] = record
            }
            return found.count >= count
        }
        await consumer.close()
        return found
    }

    /// The trace headers stored on the tenant's outbox rows, by aggregate (grant) id.
    private func outboxTraceparents(_ fixture: OperatorFixture) throws -> [String: [String: String]] {
        let connection = try fixture.database.connect()
        defer { connection.close() }
        var result: [String: [String: String]] = [:]
        for row in try connection.query("SELECT aggregate_id, headers::text FROM outbox WHERE tenant_id = $1", [.text(fixture.tenant)]) {
            var headers: [String: String] = [:]
            for item in jsonArray(try JSONParser.parse(try row.decode(String.self, column: 1))) {
                if let name = item["name"]?.stringValue, let value = item["value"]?.stringValue { headers[name] = value }
            }
            result[try row.decode(String.self, column: 0)] = headers
        }
        return result
    }

    @Test func aTraceparentReachesTheOutboxRowAndTheOutputRecordWithANewSpanID() async throws {
        let fixture = try await OperatorFixture.make()
        let starts = try await ledgerEnds(fixture)
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: fixture.brokers))
        _ = try await producer.send(traced(fixture, "t1"))
        _ = try await producer.send(KafkaOutgoingRecord(topic: fixture.topic, partition: 0, value: fixture.grant("t2")))
        await producer.close()
        try await fixture.processAll()

        let stored = try outboxTraceparents(fixture)
        let row = try #require(stored["grant-t1"]?["traceparent"], "\(stored)")
        let parts = row.split(separator: "-").map(String.init)
        #expect(parts.count == 4 && parts[1] == traceID && parts[2] != parentID && parts[3] == "01", "\(row)")
        #expect(stored["grant-t1"]?["tracestate"] == "acme=7")
        #expect(stored["grant-t2"]?["traceparent"] == nil, "an untraced record starts no trace")

        let published = try await ledgerRecords(fixture, from: starts, expecting: 2)
        #expect(published["t1"]?.header("traceparent") == row, "the output record carries the stored trace context")
        #expect(published["t1"]?.header("tracestate") == "acme=7")
        #expect(published["t2"]?.header("traceparent") == nil)
        await fixture.tearDown()
    }

    @Test func withAnOTLPEndpointTheSpansArriveAndChainUp() async throws {
        let collector = try await OTLPReceiver.start()
        let fixture = try await OperatorFixture.make()
        let starts = try await ledgerEnds(fixture)
        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: fixture.brokers))
        _ = try await producer.send(traced(fixture, "s1"))
        await producer.close()
        let result = try await OnceProcess.run(
            fixture.runArguments(["--until-idle", "2", "--otlp-endpoint", "http://127.0.0.1:\(collector.port)/v1/traces"]),
            environment: ["OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_BSP_SCHEDULE_DELAY": "200"],
            timeout: .seconds(120))
        try #require(result.status == 0, "\(result.output)")

        var spans: [OTLPReceiver.Span] = []
        try await eventually("the process and publish spans of trace \(traceID)", timeout: .seconds(30)) {
            spans = collector.spans().filter { $0.traceID == traceID }
            return spans.contains { $0.name.hasPrefix("publish ") } && spans.contains { $0.name.hasPrefix("process ") }
        }
        let process = try #require(spans.first { $0.name == "process \(fixture.topic)" }, "\(spans)")
        #expect(process.parentID == parentID, "the process span is the input record's child")
        let transaction = try #require(spans.first { $0.name == "once batch transaction" }, "\(spans)")
        #expect(transaction.links.contains(process.spanID), "the batch transaction links the record's span")
        let publish = try #require(spans.first { $0.name == "publish \(DomainTopics().creditLedger)" }, "\(spans)")
        #expect(publish.parentID == process.spanID, "the publish span continues the processing")

        let stored = try outboxTraceparents(fixture)["grant-s1"]?["traceparent"]
        #expect(stored == "00-\(traceID)-\(process.spanID)-01", "the outbox row carries the process span")
        let published = try await ledgerRecords(fixture, from: starts, expecting: 1)
        let header = try #require(published["s1"]?.header("traceparent"))
        #expect(header.hasPrefix("00-\(traceID)-\(publish.spanID)-"), "the output record carries the publish span: \(header)")
        await fixture.tearDown()
        await collector.stop()
    }
}

extension KafkaRecord {
    /// The last value of header `name` as text.
    func header(_ name: String) -> String? {
        headers.last { $0.name == name }?.value.map { String(decoding: $0, as: UTF8.self) }
    }
}

/// A real OTLP/HTTP (JSON) trace receiver on a free loopback port, keeping every span it is sent.
final class OTLPReceiver: Sendable {
    struct Span: Sendable, CustomStringConvertible {
        var name: String
        var traceID: String
        var spanID: String
        var parentID: String
        var links: [String]
        var description: String { "\(name) \(traceID)/\(spanID) ← \(parentID)" }
    }

    let port: Int
    private let task: Task<Void, any Error>
    private let store: SpanStore

    private init(port: Int, task: Task<Void, any Error>, store: SpanStore) {
        self.port = port
        self.task = task
        self.store = store
    }

    func spans() -> [Span] { store.spans.withLock { $0 } }

    static func start() async throws -> OTLPReceiver {
        let store = SpanStore()
        let router = Router()
        router.post("v1/traces") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 16 << 20)
            store.add(Array(buffer: body))
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                continuation.yield(channel.localAddress?.port ?? 0)
                continuation.finish()
            })
        let task = Task { try await application.run() }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        return OTLPReceiver(port: port, task: task, store: store)
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// The spans an `OTLPReceiver` was sent (OTLP/JSON; ids as hex, or base64 as some encoders write them).
final class SpanStore: Sendable {
    let spans = Mutex<[OTLPReceiver.Span]>([])

    func add(_ body: [UInt8]) {
        guard let request = try? JSONParser.parse(body) else { return }
        var found: [OTLPReceiver.Span] = []
        for resource in jsonArray(request["resourceSpans"]) {
            for scope in jsonArray(resource["scopeSpans"]) {
                for span in jsonArray(scope["spans"]) {
                    found.append(OTLPReceiver.Span(
                        name: span["name"]?.stringValue ?? "",
                        traceID: Self.id(span["traceId"]), spanID: Self.id(span["spanId"]),
                        parentID: Self.id(span["parentSpanId"]),
                        links: jsonArray(span["links"]).map { Self.id($0["spanId"]) }))
                }
            }
        }
        spans.withLock { $0 += found }
    }

    private static func id(_ value: JSONValue?) -> String {
        guard let text = value?.stringValue, !text.isEmpty else { return "" }
        if text.count % 2 == 0, text.allSatisfy(\.isHexDigit) { return text.lowercased() }
        guard let data = Data(base64Encoded: text) else { return text }
        return data.map { String(format: "%02x", $0) }.joined()
    }
}
