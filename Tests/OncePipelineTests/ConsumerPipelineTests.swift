import Foundation
import OnceKafka
import OnceOutbox
import OncePostgres
import OnceTestSupport
import Testing

@testable import OnceJSON
@testable import OnceSchema

@Suite(.timeLimit(.minutes(5)), .serialized)
struct ConsumerPipelineTests {
    /// Produces `test.effect` events; returns them as sent.
    private func produce(_ values: [(key: String?, value: [UInt8])], to topic: String, partition: Int32? = nil) async throws {
        let producer = try KafkaProducer(configuration: {
            var configuration = KafkaProducerConfiguration(bootstrapServers: try TestServices.brokers())
            configuration.properties["message.max.bytes"] = "6000000"
            return configuration
        }())
        let results = try await producer.send(values.map {
            KafkaOutgoingRecord(topic: topic, partition: partition, key: $0.key.map { Array($0.utf8) }, value: $0.value)
        })
        for result in results { _ = try result.get() }
        await producer.close()
    }

    @Test func eachEventTakesEffectOnceAndReconsumingFromTheStartChangesNothing() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let topics = try await TestTopics.create(partitions: 2)
        let group = TestServices.unique("group")

        // 300 events, 100 of them exact redeliveries (same id) and 50 producer duplicates (new id, same key).
        var values: [(key: String?, value: [UInt8])] = []
        for index in 0..<300 { values.append((key: "k\(index)", value: TestEvents.effect(id: "e\(index)", key: "k\(index)"))) }
        for index in 0..<100 { values.append((key: "k\(index)", value: TestEvents.effect(id: "e\(index)", key: "k\(index)"))) }
        for index in 0..<50 { values.append((key: "k\(index)", value: TestEvents.effect(id: "dup\(index)", key: "k\(index)"))) }
        try await produce(values, to: topics.input)

        let first = try RunningPipeline(database: database, topics: topics, group: group)
        try await eventually("450 records processed") {
            try database.scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets", as: Int64.self) == 450
        }
        try await first.stop()

        #expect(try database.scalar("SELECT count(*) FROM test_effects", as: Int64.self) == 300)
        #expect(try database.scalar("SELECT count(*) FROM processed_messages", as: Int64.self) == 350)
        #expect(try database.scalar("SELECT count(*) FROM processed_messages WHERE outcome = 'duplicate'", as: Int64.self) == 50)
        #expect(try database.scalar("SELECT count(*) FROM dead_letters", as: Int64.self) == 0)

        // Seek back to the start: forget the stored positions and consume everything again.
        try database.connect().execute("UPDATE consumer_offsets SET next_offset = NULL, generation = generation + 1")
        let effectsBefore = try database.scalar("SELECT string_agg(event_id, ',' ORDER BY key) FROM test_effects", as: String.self)
        let second = try RunningPipeline(database: database, topics: topics, group: group)
        try await eventually("the replay to reach the end again") {
            try database.scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets", as: Int64.self) == 450
        }
        try await second.stop()
        #expect(try database.scalar("SELECT count(*) FROM test_effects", as: Int64.self) == 300)
        #expect(try database.scalar("SELECT string_agg(event_id, ',' ORDER BY key) FROM test_effects", as: String.self) == effectsBefore)
        #expect(try database.scalar("SELECT count(*) FROM processed_messages", as: Int64.self) == 350)
        #expect(try database.scalar("SELECT count(*) FROM (SELECT event_id FROM processed_messages GROUP BY event_id HAVING count(*) > 1) d", as: Int64.self) == 0)

        // Every outbox row was published exactly once under normal running.
        #expect(try database.scalar("SELECT count(*) FROM outbox_publication WHERE NOT published", as: Int64.self) == 0)
        let published = try await consumeAll(topics.output, count: 300)
        #expect(published.count == 300)
        #expect(Set(published.compactMap(\.key)).count == 300)
        await topics.delete()
    }

    @Test func poisonRecordsAreDeadLetteredAndThePartitionMovesOn() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let topics = try await TestTopics.create(partitions: 1)
        let group = TestServices.unique("group")

        func envelope(_ fields: [String: JSONValue]) -> [UInt8] { JSONWriter.serialize(.object(fields)) }
        let base: [String: JSONValue] = [
            "event_id": .string("x"), "type": .string("test.effect"), "version": .integer(1),
            "tenant_id": .string("acme"), "occurred_at": .string("2026-11-22T10:00:00Z"), "data": .object(["key": .string("p")]),
        ]
        var unknownType = base
        unknownType["event_id"] = .string("bad-type")
        unknownType["type"] = .string("no.such.type")
        var badVersion = base
        badVersion["event_id"] = .string("bad-version")
        badVersion["version"] = .integer(2)
        var missingID = base
        missingID["event_id"] = nil
        var huge = base
        huge["event_id"] = .string("huge")
        huge["data"] = .object(["key": .string("huge"), "padding": .string(String(repeating: "x", count: 5 * 1024 * 1024))])
        let poison: [(key: String?, value: [UInt8])] = [
            (key: "a", value: TestEvents.effect(id: "before", key: "before")),
            (key: "b", value: Array("{not json".utf8)),
            (key: "c", value: envelope(missingID)),
            (key: "d", value: envelope(unknownType)),
            (key: "e", value: envelope(badVersion)),
            (key: "f", value: envelope(huge)),
            (key: "g", value: TestEvents.effect(id: "rejected", key: "rejected", fail: true)),
            (key: "h", value: TestEvents.effect(id: "after-1", key: "after-1")),
            (key: "i", value: TestEvents.effect(id: "after-2", key: "after-2")),
        ]
        try await produce(poison, to: topics.input, partition: 0)

        let running = try RunningPipeline(database: database, topics: topics, group: group)
        try await eventually("all 9 records processed") {
            try database.scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets", as: Int64.self) == 9
        }
        try await eventually("the dead letters published") {
            try database.scalar("SELECT count(*) FROM outbox_publication WHERE NOT published", as: Int64.self) == 0
        }
        try await running.stop()

        let connection = try database.connect()
        defer { connection.close() }
        let letters = try connection.query("SELECT kafka_offset, reason_code, event_id, length(payload) FROM dead_letters ORDER BY kafka_offset").map {
            (try $0.decode(Int64.self, column: 0), try $0.decode(String.self, column: 1), try $0.decode(String.self, column: 2), try $0.decode(Int.self, column: 3))
        }
        #expect(letters.map(\.0) == [1, 2, 3, 4, 5, 6])
        #expect(letters.map(\.1) == ["invalid_json", "missing_event_id", "unknown_type", "unsupported_version", "too_large", "handler_failed"])
        #expect(letters[0].2 == "kafka:\(topics.input)/0/1")
        #expect(letters[2].2 == "bad-type")
        #expect(letters[4].3 > 5 * 1024 * 1024)  // the original bytes are kept
        #expect(try connection.query("SELECT key FROM test_effects ORDER BY key").map { try $0.decode(String.self, column: 0) } == ["after-1", "after-2", "before"])
        #expect(try connection.query("SELECT count(*) FROM processed_messages WHERE outcome = 'dead_lettered'")[0].decode(Int.self, column: 0) == 6)

        let onTopic = try await consumeAll(topics.deadLetters, count: 6)
        #expect(onTopic.count == 6)
        let reasons = onTopic.compactMap { record in record.headers.first { $0.name == "once-reason" }?.value.map { String(decoding: $0, as: UTF8.self) } }
        #expect(Set(reasons) == ["invalid_json", "missing_event_id", "unknown_type", "unsupported_version", "too_large", "handler_failed"])
        #expect(onTopic.first { $0.headers.contains(KafkaHeader(name: "once-reason", string: "invalid_json")) }?.value == Array("{not json".utf8))
        let tooLarge = onTopic.first { $0.headers.contains(KafkaHeader(name: "once-reason", string: "too_large")) }
        #expect(tooLarge?.value == nil)
        #expect(tooLarge?.headers.contains { $0.name == "once-payload-bytes" } == true)
        await topics.delete()
    }

    /// A handler's outbound event whose business key the outbox holds already (a handler whose
    /// own key failed to stop a second effect) fails its record instead of vanishing: the record
    /// is dead-lettered with the SQLSTATE, its effect rolled back, and the others apply.
    @Test func anOutboundEventWhoseKeyIsTakenDeadLettersItsRecord() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let topics = try await TestTopics.create(partitions: 1)
        let group = TestServices.unique("group")
        let connection = try database.connect()
        defer { connection.close() }
        try OutboxWriter().insert(
            [OutboxMessage(tenantID: "acme", eventType: "test.effected", aggregateID: "taken", topic: topics.output, key: "taken", payload: nil)],
            on: connection)
        try await produce(
            ["before", "taken", "after"].map { (key: $0, value: TestEvents.effect(id: "id-\($0)", key: $0)) },
            to: topics.input, partition: 0)

        let running = try RunningPipeline(database: database, topics: topics, group: group)
        try await eventually("all 3 records processed") {
            try database.scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets", as: Int64.self) == 3
        }
        try await running.stop()

        #expect(try connection.query("SELECT key FROM test_effects ORDER BY key").map { try $0.decode(String.self, column: 0) } == ["after", "before"])
        let letters = try connection.query("SELECT event_id, reason_code, error FROM dead_letters").map {
            [try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1), try $0.decode(String.self, column: 2)]
        }
        #expect(letters.count == 1)
        #expect(letters.first?[0] == "id-taken")
        #expect(letters.first?[1] == "handler_failed")
        #expect(letters.first?[2].contains("23505") == true)
        #expect(try connection.query("SELECT event_id, outcome FROM processed_messages ORDER BY kafka_offset").map {
            [try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1)]
        } == [["id-before", "applied"], ["id-taken", "dead_lettered"], ["id-after", "applied"]])
        #expect(try database.scalar("SELECT count(*) FROM outbox WHERE event_type = 'test.effected'", as: Int64.self) == 3)
        await topics.delete()
    }

    @Test func terminatedDatabaseSessionsAreRetriedWithoutLossOrDoubleOrDeadLetters() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let topics = try await TestTopics.create(partitions: 2)
        let group = TestServices.unique("group")
        let running = try RunningPipeline(database: database, topics: topics, group: group)

        // Feed events in rounds and terminate every pipeline session between rounds.
        let killer = try database.connect()
        defer { killer.close() }
        var terminated = 0
        for round in 0..<5 {
            try await produce((0..<200).map { (key: "r\(round)-\($0)", value: TestEvents.effect(id: "r\(round)-\($0)", key: "r\(round)-\($0)")) }, to: topics.input)
            try await eventually("round \(round) under way") {
                try database.scalar("SELECT count(*) FROM test_effects", as: Int64.self) > Int64(round * 200)
            }
            terminated += try killer.query(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'once-%') t",
                [.text(database.name)])[0].decode(Int.self, column: 0)
        }
        try await eventually("all 1000 effects") {
            try database.scalar("SELECT count(*) FROM test_effects", as: Int64.self) == 1000
        }
        try await eventually("the stored positions at the end") {
            try database.scalar("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets", as: Int64.self) == 1000
        }
        try await running.stop()
        #expect(terminated >= 5)
        #expect(try database.scalar("SELECT count(*) FROM processed_messages", as: Int64.self) == 1000)
        #expect(try database.scalar("SELECT count(*) FROM dead_letters", as: Int64.self) == 0)
        await topics.delete()
    }
}
