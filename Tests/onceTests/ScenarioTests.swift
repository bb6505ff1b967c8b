import Foundation
import OnceDomain
import OnceKafka
import OnceSchema
import OnceTestSupport
import Testing

/// The fixtures of `Fixtures/README.md`, end to end: `once devices import`, `once produce`,
/// `once run --until-idle` against the real broker and database; then the same files again.
@Suite(.timeLimit(.minutes(6)), .serialized)
struct ScenarioTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Stage: Sendable {
        let database: TestDatabase
        let topic: String
        let group: String
        let admin: KafkaAdmin

        static func make() async throws -> Stage {
            let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
            let admin = try await KafkaAdmin(bootstrapServers: try TestServices.brokers())
            let topic = TestServices.unique("fixtures")
            try await admin.createTopics([KafkaTopicSpecification(name: topic, partitions: 4)])
            let stage = Stage(database: database, topic: topic, group: TestServices.unique("group"), admin: admin)
            let imported = try await OnceProcess.run(["devices", "import", fixtures.appendingPathComponent("devices.csv").path, "--database-url", database.url])
            #expect(imported.status == 0, "\(imported.output)")
            return stage
        }

        func produce(_ files: [String], repeat times: Int = 1) async throws {
            let result = try await OnceProcess.run(
                ["produce", "--brokers", try TestServices.brokers(), "--topic", topic, "--repeat", String(times)]
                    + files.map { fixtures.appendingPathComponent($0).path })
            #expect(result.status == 0, "\(result.output)")
        }

        func consume() async throws {
            let result = try await OnceProcess.run(
                ["run", "--database-url", database.url, "--brokers", try TestServices.brokers(), "--topics", topic, "--group", group,
                 "--until-idle", "2", "--kafka-property", "max.poll.interval.ms=6000", "--kafka-property", "session.timeout.ms=6000"],
                timeout: .seconds(180))
            #expect(result.status == 0, "\(result.output)")
        }

        func count(_ sql: String) throws -> Int64 {
            try database.scalar(sql, as: Int64.self)
        }

        /// Every effect and outbound event, to compare before and after a replay.
        func snapshot() throws -> [Int64] {
            try ["processed_messages", "credit_ledger", "credit_conflicts", "batch_action_devices", "jobs", "outbox", "dead_letters"].map {
                try count("SELECT count(*) FROM \($0)")
            } + [try count("SELECT coalesce(sum(balance), 0)::bigint FROM credit_accounts")]
        }

        /// Replays the files and checks that nothing changed, except that records without a
        /// readable event id (`anonymous`) are new records at new positions, dead-lettered again.
        func replayChangesNothing(_ files: [String], repeat times: Int = 1, anonymous: Int64 = 0) async throws {
            var expected = try snapshot()
            expected[0] += anonymous  // processed_messages, under their new synthetic ids
            expected[5] += anonymous  // outbox: their records on the dead-letter topic
            expected[6] += anonymous  // dead_letters
            try await produce(files, repeat: times)
            try await consume()
            #expect(try snapshot() == expected)
        }

        func checkInvariants() throws {
            #expect(try count("""
                SELECT count(*) FROM credit_accounts a WHERE balance <> (SELECT coalesce(sum(amount), 0) FROM credit_ledger l
                WHERE l.tenant_id = a.tenant_id AND l.account_id = a.account_id)
                """) == 0)
            #expect(try count("SELECT count(*) FROM (SELECT 1 FROM credit_ledger GROUP BY tenant_id, kind, business_key HAVING count(*) > 1) d") == 0)
            #expect(try count("SELECT count(*) FROM outbox_publication WHERE NOT published") == 0)
        }

        func tearDown() async {
            try? await admin.deleteTopics([topic])
            await admin.close()
            database.drop()
        }
    }

    @Test func scenario1TenThousandDevicesOfTheWrongServiceType() async throws {
        let stage = try await Stage.make()
        try await stage.produce(["scenario-1-wrong-service-type.jsonl"])
        try await stage.consume()
        #expect(try stage.count("SELECT count(*) FROM batch_action_devices WHERE batch_action_id = 'ba-wst'") == 10_000)
        #expect(try stage.count("SELECT count(*) FROM batch_action_devices WHERE outcome = 'FAIL' AND error_code = 'WRONG_SERVICE_TYPE'") == 10_000)
        #expect(try stage.count("SELECT count(*) FROM outbox WHERE event_type = 'batch_action.device_dispatched'") == 0)
        try await stage.replayChangesNothing(["scenario-1-wrong-service-type.jsonl"])
        try stage.checkInvariants()
        await stage.tearDown()
    }

    @Test func scenario2ARunawayCompletionLoopChargesEachBatchOnce() async throws {
        let stage = try await Stage.make()
        try await stage.produce(["scenario-2-completion-loop.jsonl"])
        try await stage.consume()
        #expect(try stage.count("SELECT count(*) FROM credit_ledger WHERE kind = 'charge'") == 25)
        #expect(try stage.count("SELECT count(*) FROM outbox WHERE event_type = 'credits.charged'") == 25)
        #expect(try stage.count("SELECT count(*) FROM processed_messages WHERE event_type = 'batch.completed' AND outcome = 'duplicate'") == 94)
        let balances = try stage.database.connect().query("SELECT account_id, balance FROM credit_accounts ORDER BY account_id").map {
            "\(try $0.decode(String.self, column: 0))=\(try $0.decode(Int64.self, column: 1))"
        }
        #expect(balances == ["acct-loop-1=99000", "acct-loop-2=99460", "acct-loop-3=99400", "acct-loop-4=99350", "acct-loop-5=99300"])
        try await stage.replayChangesNothing(["scenario-2-completion-loop.jsonl"])
        try stage.checkInvariants()
        await stage.tearDown()
    }

    @Test func scenario3ADoubleEmittedClickCreatesOneJob() async throws {
        let stage = try await Stage.make()
        try await stage.produce(["scenario-3-double-click.jsonl"])
        try await stage.consume()
        #expect(try stage.count("SELECT count(*) FROM jobs WHERE request_id = 'req-click'") == 1)
        #expect(try stage.count("SELECT count(*) FROM outbox WHERE event_type = 'job.created'") == 1)
        #expect(try stage.count("SELECT count(*) FROM processed_messages WHERE outcome = 'duplicate'") == 1)
        try await stage.replayChangesNothing(["scenario-3-double-click.jsonl"])
        try stage.checkInvariants()
        await stage.tearDown()
    }

    @Test func scenario4AThousandEventsDelivered44TimesTakeEffectOnce() async throws {
        let stage = try await Stage.make()
        try await stage.produce(["scenario-4-44-loaders.jsonl"], repeat: 44)
        try await stage.consume()
        #expect(try stage.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") == 44_000)
        #expect(try stage.count("SELECT count(*) FROM credit_ledger") == 1_000)
        #expect(try stage.count("SELECT count(*) FROM outbox WHERE event_type = 'credits.granted'") == 1_000)
        #expect(try stage.count("SELECT count(*) FROM processed_messages") == 1_000)
        try await stage.replayChangesNothing(["scenario-4-44-loaders.jsonl"])
        try stage.checkInvariants()
        await stage.tearDown()
    }

    @Test func theBasicFilesBehaveAsDocumented() async throws {
        let stage = try await Stage.make()
        let files = ["valid.jsonl", "redeliveries.jsonl", "producer-duplicates.jsonl", "conflicts.jsonl", "poison.jsonl"]
        for file in files { try await stage.produce([file]) }
        try await stage.consume()
        let connection = try stage.database.connect()
        defer { connection.close() }
        let outcomes = Dictionary(uniqueKeysWithValues: try connection.query("SELECT outcome, count(*) FROM processed_messages GROUP BY outcome").map {
            (try $0.decode(String.self, column: 0), try $0.decode(Int.self, column: 1))
        })
        #expect(outcomes == ["applied": 6, "duplicate": 5, "conflict": 1, "dead_lettered": 9])
        let balances = try connection.query("SELECT account_id, balance FROM credit_accounts ORDER BY account_id").map {
            "\(try $0.decode(String.self, column: 0))=\(try $0.decode(Int64.self, column: 1))"
        }
        #expect(balances == ["acct-1=4880", "acct-2=4920"])
        let devices = try connection.query("SELECT device_uid, outcome, coalesce(error_code, '') FROM batch_action_devices ORDER BY device_uid").map {
            "\(try $0.decode(String.self, column: 0)) \(try $0.decode(String.self, column: 1)) \(try $0.decode(String.self, column: 2))"
        }
        #expect(devices == [
            "SN-ACTIVE-0001 SUCCESS ", "SN-GLOBEX-0001 FAIL DEVICE_NOT_FOUND", "SN-GONE-0001 FAIL DEVICE_NOT_FOUND",
            "SN-LOCKED-0001 FAIL WRONG_STATE", "bad uid! FAIL INVALID_DEVICE_UID",
        ])
        #expect(try stage.count("SELECT count(*) FROM outbox WHERE event_type = 'batch_action.device_dispatched'") == 1)
        #expect(try stage.count("SELECT count(*) FROM jobs") == 1)
        // Poison comes from one file into one partition: its dead letters are in offset order.
        let reasons = try connection.query("SELECT reason_code, error FROM dead_letters ORDER BY kafka_offset").map {
            (try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1))
        }
        #expect(reasons.map(\.0).sorted() == [
            "invalid_data", "invalid_data", "invalid_data", "invalid_event_id", "invalid_json", "invalid_tenant",
            "missing_event_id", "unknown_type", "unsupported_version",
        ])
        let invalidData = reasons.filter { $0.0 == "invalid_data" }.map(\.1)
        #expect(invalidData.contains { $0.contains("data.credits") })
        #expect(invalidData.contains { $0.contains("data.devices") })
        #expect(invalidData.contains { $0.contains("data.customer_ids") })
        // Invalid JSON, a missing id and an invalid id leave nothing to recognise a repeat by.
        try await stage.replayChangesNothing(files, anonymous: 3)
        #expect(try stage.count("SELECT count(*) FROM processed_messages WHERE event_id NOT LIKE 'kafka:%' AND outcome = 'dead_lettered'") == 6)
        try stage.checkInvariants()
        await stage.tearDown()
    }
}
