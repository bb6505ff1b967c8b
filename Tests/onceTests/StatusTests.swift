import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

@Suite("once status: merging the database and the broker")
struct StatusReportTests {
    @Test("lag is high - next (never below 0), high - low when nothing is stored, unknown without the broker")
    func lag() {
        #expect(StatusReport.Partition(topic: "t", partition: 0, nextOffset: 4, highWatermark: 5).lag == 1)
        #expect(StatusReport.Partition(topic: "t", partition: 0, lowWatermark: 2, highWatermark: 5).lag == 3)
        #expect(StatusReport.Partition(topic: "t", partition: 0, nextOffset: 9, highWatermark: 5).lag == 0)  // an under-reported end
        #expect(StatusReport.Partition(topic: "t", partition: 0, nextOffset: 4).lag == nil)
    }

    @Test("the broker's partitions are added to the stored ones, with their watermarks; notes carry over")
    func merge() {
        var report = StatusReport(
            consumerGroup: "g", asOf: "2026-11-22T10:00:00Z",
            partitions: [
                StatusReport.Partition(
                    topic: "a", partition: 1, isStored: true, nextOffset: 7, owner: "m", generation: 2),
                StatusReport.Partition(topic: "gone", partition: 0, isStored: true, nextOffset: 3),
            ])
        report.merge(
            StatusReport.BrokerView(
                partitionCounts: ["a": 2],
                watermarks: [
                    TopicPartition("a", 0): .init(low: 0, high: 4), TopicPartition("a", 1): .init(low: 0, high: 10),
                ],
                notes: ["topic gone does not exist on the broker at b:1"]))
        #expect(
            report.partitions.map(\.topicPartition) == [
                TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("gone", 0),
            ])
        #expect(report.partitions.map(\.lag) == [4, 3, nil])
        #expect(report.partitions[0].isStored == false && report.partitions[1].owner == "m")
        #expect(report.totalLag == 7)
        #expect(!report.isComplete)
    }
}

@Suite(.timeLimit(.minutes(4)))
struct StatusTests {
    /// A topic of two partitions with records produced one per request (so Tansu's high watermark
    /// is exact), a stored position for partition 0 only, and outcomes, outbox rows and a dead
    /// letter from processing partition 0's first four records.
    struct Setup {
        let database: TestDatabase
        let admin: KafkaAdmin
        let topic = TestServices.unique("status")
        let group = TestServices.unique("group")

        static func make() async throws -> Setup {
            let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
            let setup = Setup(
                database: database, admin: try await KafkaAdmin(bootstrapServers: try TestServices.brokers()))
            try await setup.admin.createTopics([KafkaTopicSpecification(name: setup.topic, partitions: 2)])
            let tenant = TestServices.unique("t")
            func grant(_ id: String, _ grantID: String) -> [UInt8] {
                CreditFixture.envelope(
                    id: id, type: "credits.granted", tenant: tenant,
                    ["grant_id": .string(grantID), "account_id": "acc-1", "credits": 10])
            }
            let partition0: [[UInt8]] = [
                grant("e1", "g-1"), grant("e2", "g-2"), grant("e3", "g-1"), Array("not json".utf8), grant("e5", "g-5"),
            ]
            let partition1: [[UInt8]] = [grant("e6", "g-6"), grant("e7", "g-7")]
            let producer = try KafkaProducer(
                configuration: KafkaProducerConfiguration(bootstrapServers: try TestServices.brokers()))
            for (partition, values) in [(Int32(0), partition0), (1, partition1)] {
                for value in values {  // one record per produce request
                    _ = try await producer.send(
                        KafkaOutgoingRecord(topic: setup.topic, partition: partition, value: value))
                }
            }
            await producer.close()

            var registry = HandlerRegistry()
            Domain.register(into: &registry)
            let connection = try database.connect()
            defer { connection.close() }
            let records = partition0.prefix(4).enumerated().map { offset, value in
                KafkaRecord(topic: setup.topic, partition: 0, offset: Int64(offset), key: nil, value: value)
            }
            let processed = try RecordProcessor(consumerGroup: setup.group, registry: registry).process(
                records, on: connection)
            #expect(processed[.applied] == 2 && processed[.duplicate] == 1 && processed[.deadLettered] == 1)
            _ = try connection.execute(
                """
                INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, generation, owner)
                VALUES ($1, $2, 0, 4, 5, 'member-a')
                """, [.text(setup.group), .text(setup.topic)])
            return setup
        }

        /// Runs `body` with a new setup, and removes the topic and the database whatever happens.
        static func with(_ body: (Setup) async throws -> Void) async throws {
            let setup = try await make()
            do {
                try await body(setup)
            } catch {
                await setup.tearDown()
                throw error
            }
            await setup.tearDown()
        }

        func tearDown() async {
            try? await admin.deleteTopics([topic])
            await admin.close()
            database.drop()
        }

        func arguments(brokers: String? = nil) throws -> [String] {
            [
                "status", "--database-url", database.url, "--brokers", try brokers ?? TestServices.brokers(),
                "--topics", topic, "--group", group,
            ]
        }
    }

    @Test func showsStoredOffsetsLagOutcomesOutboxAndDeadLetters() async throws {
        try await Setup.with { setup in
            let unpublished = try setup.database.scalar(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL", as: Int64.self)
            #expect(unpublished == 3)  // two credits.granted, one dead-letter record

            let json = try await OnceProcess.run(try setup.arguments() + ["--format", "json"])
            #expect(json.status == 0, "\(json.output)")
            let report = try jsonObject(in: json.output)
            #expect(report["consumer_group"]?.stringValue == setup.group)
            let partitions = try #require(report["partitions"]?.arrayValue)
            #expect(partitions.count == 2)
            #expect(partitions[0]["partition"] == 0 && partitions[0]["stored"] == true)
            #expect(
                partitions[0]["next_offset"] == 4 && partitions[0]["high_watermark"] == 5 && partitions[0]["lag"] == 1)
            #expect(partitions[0]["owner"] == "member-a" && partitions[0]["generation"] == 5)
            #expect(
                partitions[1]["partition"] == 1 && partitions[1]["stored"] == false
                    && partitions[1]["next_offset"] == .null)
            #expect(partitions[1]["high_watermark"] == 2 && partitions[1]["lag"] == 2)
            #expect(report["total_lag"] == 3)
            #expect(report["outcomes"] == ["applied": 2, "duplicate": 1, "conflict": 0, "dead_lettered": 1])
            #expect(report["outbox"]?["unpublished"] == 3)
            #expect((report["outbox"]?["oldest_age_seconds"]?.doubleValue ?? -1) >= 0)
            #expect(report["dead_letters"]?["unresolved"] == 1 && report["dead_letters"]?["by_reason"] == ["invalid_json": 1])
            let reason = report["dead_letters"]?["reasons"]?[0]
            #expect(reason?["reason"] == "invalid_json" && reason?["count"] == 1)
            #expect(reason?["last_hour"] == 1 && reason?["last_day"] == 1)
            #expect(report["broker"]?["complete"] == true)

            let table = try await OnceProcess.run(try setup.arguments())
            #expect(table.status == 0, "\(table.output)")
            // TOPIC PARTITION NEXT HIGH LAG OWNER GEN UPDATED
            #expect(
                tableRow(table.output, startingWith: [setup.topic, "0"])?.prefix(7) == [
                    setup.topic, "0", "4", "5", "1", "member-a", "5",
                ])
            #expect(
                tableRow(table.output, startingWith: [setup.topic, "1"])?.prefix(5) == [
                    setup.topic, "1", "-", "2", "2",
                ])
            #expect(table.output.contains("Total lag: 3"))
            #expect(tableRow(table.output, startingWith: ["applied"]) == ["applied", "2"])
            #expect(tableRow(table.output, startingWith: ["dead_lettered"]) == ["dead_lettered", "1"])
            #expect(table.output.contains("Outbox: 3 unpublished"))
            #expect(table.output.contains("Dead letters: 1 unresolved"))
            // REASON COUNT LAST-HOUR LAST-DAY OLDEST
            #expect(tableRow(table.output, startingWith: ["invalid_json"])?.prefix(4) == ["invalid_json", "1", "1", "1"])
            #expect(
                !table.output.contains("Tansu"),
                "the watermarks are exact here (one record per produce request): no footnote about them")
        }
    }

    @Test func anUnreachableBrokerStillPrintsTheDatabasePartAndExitsNonZero() async throws {
        try await Setup.with { setup in
            let start = ContinuousClock.now
            let result = try await OnceProcess.run(try setup.arguments(brokers: "127.0.0.1:1"), timeout: .seconds(60))
            #expect(ContinuousClock.now - start < .seconds(20))
            #expect(result.status == 2, "\(result.output)")
            #expect(
                tableRow(result.output, startingWith: [setup.topic, "0"])?.prefix(7) == [
                    setup.topic, "0", "4", "?", "?", "member-a", "5",
                ])
            #expect(tableRow(result.output, startingWith: ["applied"]) == ["applied", "2"])
            #expect(result.output.contains("Outbox: 3 unpublished"))
            let notes = result.output.split(separator: "\n").filter { $0.contains("127.0.0.1:1 is unreachable") }
            #expect(notes.count == 1, "\(result.output)")

            let json = try await OnceProcess.run(try setup.arguments(brokers: "127.0.0.1:1") + ["--format", "json"])
            #expect(json.status == 2)
            let report = try jsonObject(in: json.output)
            #expect(report["broker"]?["complete"] == false && report["total_lag"] == .null)
            #expect(report["partitions"]?[0]?["next_offset"] == 4 && report["partitions"]?[0]?["lag"] == .null)

            // A topic the broker does not have is a note too.
            let missing = try await OnceProcess.run(
                [
                    "status", "--database-url", setup.database.url, "--brokers", try TestServices.brokers(), "--group",
                    setup.group,
                    "--topics", "no-such-topic-\(UUID().uuidString.prefix(6))",
                ])
            #expect(missing.status == 2)
            #expect(missing.output.contains("does not exist on the broker"))
        }
    }

    @Test func watchRefreshesUntilInterrupted() async throws {
        try await Setup.with { setup in
            let watching = try OnceProcess(try setup.arguments() + ["--format", "json", "--watch", "0.3"])
            try await eventually("three reports", timeout: .seconds(30)) {
                watching.output.split(separator: "\n").filter { $0.hasPrefix("{") }.count >= 3
            }
            watching.signal(SIGINT)
            #expect(try await watching.waitForExit(timeout: .seconds(10)) != nil)
            for line in watching.output.split(separator: "\n") where line.hasPrefix("{") {
                #expect(try JSONParser.parse(String(line))["total_lag"] == 3)
            }

            let table = try OnceProcess(try setup.arguments() + ["--watch", "0.3"])
            try await eventually("two tables", timeout: .seconds(30)) {
                table.output.components(separatedBy: "Status · group").count >= 3
            }
            table.signal(SIGINT)
            #expect(try await table.waitForExit(timeout: .seconds(10)) != nil)
            #expect(!table.output.contains("\u{1B}["), "no terminal control codes when piped")
        }
    }

    @Test func badArgumentsAndAnUnreachableDatabaseFailWithOneLine() async throws {
        for (arguments, message) in [(["--watch", "0"], "--watch"), (["--format", "csv"], "--format")] {
            let result = try await OnceProcess.run(
                ["status", "--database-url", "postgresql://x/y", "--brokers", "b:1"] + arguments)
            #expect(result.status == 64, "\(arguments): \(result.output)")
            #expect(result.output.contains(message))
        }
        let noBroker = try await OnceProcess.run(
            ["status", "--database-url", "postgresql://x/y"], environment: ["ONCE_KAFKA_BROKERS": ""])
        #expect(noBroker.status == 1 && noBroker.output.contains("no broker"), "\(noBroker.output)")

        let start = ContinuousClock.now
        let unreachable = try await OnceProcess.run(
            [
                "status", "--database-url", "postgresql://postgres@127.0.0.1:1/once", "--brokers",
                try TestServices.brokers(),
            ],
            timeout: .seconds(30))
        #expect(ContinuousClock.now - start < .seconds(15))
        #expect(unreachable.status == 1)
        #expect(unreachable.output.contains("cannot reach the database"))
        #expect(unreachable.output.split(separator: "\n").count == 1, "\(unreachable.output)")
    }

    @Test func theWatermarkFootnoteAppearsOnlyWhereTheBrokerUnderReportsItsEnd() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        // Partition 0: one record per produce request (exact); partition 1: five in one request,
        // for which Tansu reports the end as the first offset + 1.
        try await fixture.produce((0..<3).map { fixture.grant("one\($0)") }, partition: 0)
        try await fixture.produce((0..<5).map { fixture.grant("five\($0)") }, partition: 1, together: true)
        try await fixture.processAll()
        let status = try await fixture.once(["status"])
        #expect(
            status.output.contains("high watermark below the stored position on 1 partition(s) (\(fixture.topic)/1)"),
            "\(status.output)")
        #expect(!status.output.contains("\(fixture.topic)/0)"), "partition 0's end is exact")
        await fixture.tearDown()
    }
}
