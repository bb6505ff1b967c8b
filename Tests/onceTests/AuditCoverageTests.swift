import Foundation
import OnceJSON
import OnceKafka
import OncePostgres
import OnceTestSupport
import Testing

/// `once audit coverage` against partitions `once run` processed, with gaps made on purpose.
@Suite(.timeLimit(.minutes(6)), .serialized)
struct AuditCoverageTests {
    func coverage(_ fixture: OperatorFixture, _ extra: [String] = []) async throws -> (status: Int32, output: String) {
        try await fixture.once(["audit", "coverage"] + extra)
    }

    /// The report's gaps as (offset, event id, kind), in its order.
    func gaps(_ report: JSONValue) -> [(Int64?, String?, String?)] {
        jsonArray(report["gaps"]).map {
            ($0["offset"]?.int64Value, $0["event_id"]?.stringValue, $0["gap"]?.stringValue)
        }
    }

    @Test func aProcessedStreamWithRedeliveriesAndDuplicatesIsCovered() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        // Partition 0: 30 grants, 3 exact redeliveries, a producer duplicate (new id, same
        // grant) and 2 poison records; processed before partition 1 is written.
        var first = (0..<30).map { fixture.grant("g\($0)", account: "acct-\($0 % 4)") }
        first += [fixture.grant("g1", account: "acct-1"), fixture.grant("g2", account: "acct-2")]
        first.append(fixture.grant("g3", account: "acct-3"))
        first.append(
            JSONWriter.serialize(
                .object([
                    "event_id": "again-g5", "type": "credits.granted", "version": 1,
                    "tenant_id": .string(fixture.tenant), "occurred_at": "2026-11-22T10:00:00Z",
                    "data": ["grant_id": "grant-g5", "account_id": "acct-1", "credits": 10],
                ])))
        first += [Array("{not json".utf8), fixture.grant("no-credits", credits: -1)]
        try await fixture.produce(first, partition: 0, together: true)
        try await fixture.processAll()
        // Partition 1: 10 grants, a redelivery of g7 (its first copy is in partition 0) and poison.
        var second = (0..<10).map { fixture.grant("h\($0)") }
        second += [fixture.grant("g7", account: "acct-3"), Array("{not json".utf8)]
        try await fixture.produce(second, partition: 1, together: true)
        try await fixture.processAll()
        #expect(try fixture.count("SELECT count(*) FROM processed_messages") == 44)
        #expect(try fixture.count("SELECT sum(next_offset)::bigint FROM consumer_offsets") == 48)

        let json = try await coverage(fixture, ["--format", "json"])
        #expect(json.status == 0, "\(json.output)")
        let report = try operatorJSON(in: json.output)
        #expect(report["clean"] == true)
        #expect(report["consumer_group"]?.stringValue == fixture.group)
        #expect(report["gaps"] == [])
        let totals = try #require(report["totals"])
        #expect(totals["records"] == 48 && totals["covered"] == 48 && totals["gaps"] == 0)
        #expect(totals["covered_by_copy"] == 4 && totals["outside_window"] == 0 && totals["missing"] == 0)
        let partitions = jsonArray(report["partitions"])
        #expect(partitions.map { $0["partition"] } == [0, 1])
        #expect(partitions.map { $0["records"] } == [36, 12])
        #expect(partitions.map { $0["from"] } == [0, 0] && partitions.map { $0["to"] } == [35, 11])
        #expect(partitions.map { $0["covered_by_copy"] } == [3, 1])
        for p in partitions {
            let sum = ["covered", "missing", "other_record", "outside_window"].compactMap { p[$0]?.int64Value }
            #expect(sum.reduce(0, +) == p["records"]?.int64Value)
        }

        // One partition alone: g7's copy there is proven by the record its row names, in
        // partition 0, fetched from the broker.
        let alone = try await coverage(fixture, ["--topic", fixture.topic, "--partition", "1", "--format", "json"])
        #expect(alone.status == 0, "\(alone.output)")
        let one = try operatorJSON(in: alone.output)
        #expect(one["totals"]?["records"] == 12 && one["totals"]?["covered_by_copy"] == 1)
        #expect(jsonArray(one["partitions"]).count == 1)

        // Table and CSV, piped: no progress line.
        let table = try await coverage(fixture)
        #expect(table.status == 0, "\(table.output)")
        #expect(table.output.hasPrefix("Coverage · group \(fixture.group) · all partitions · window since "))
        #expect(table.output.contains("· stored positions as of "))
        #expect(
            tableRow(table.output, startingWith: [fixture.topic, "0"]) == [
                fixture.topic, "0", "0", "35", "36", "36", "3", "0", "0",
            ])
        #expect(tableRow(table.output, startingWith: ["TOTAL"]) == ["TOTAL", "48", "48", "4", "0", "0"])
        #expect(table.output.contains("Gaps: none"))
        #expect(!table.output.contains("\r"))
        let csv = try await coverage(fixture, ["--format", "csv"])
        #expect(csv.status == 0, "\(csv.output)")
        #expect(outputLines(csv.output) == ["topic,partition,offset,event_id,tenant_id,gap,detail"])
        await fixture.tearDown()
    }

    @Test func aDeletedClaimIsAMissingGapAndAMisplacedOneAnotherRecordGap() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce((0..<20).map { fixture.grant("g\($0)") }, together: true)
        try await fixture.processAll()
        try fixture.execute("DELETE FROM processed_messages WHERE event_id = 'g7'")

        let json = try await coverage(fixture, ["--format", "json"])
        #expect(json.status == 3, "\(json.output)")
        let report = try operatorJSON(in: json.output)
        #expect(report["clean"] == false)
        #expect(gaps(report).map { "\($0.0 ?? -1) \($0.1 ?? "") \($0.2 ?? "")" } == ["7 g7 missing"])
        #expect(jsonArray(report["gaps"]).first?["tenant_id"]?.stringValue == fixture.tenant)
        #expect(report["totals"]?["records"] == 20 && report["totals"]?["covered"] == 19)

        let table = try await coverage(fixture)
        #expect(table.status == 3, "\(table.output)")
        #expect(table.output.contains("Gaps: 1"))
        #expect(
            tableRow(table.output, startingWith: [fixture.topic, "0", "7"])?.prefix(6)
                == [fixture.topic, "0", "7", "g7", fixture.tenant, "missing"])
        let csv = try await coverage(fixture, ["--format", "csv"])
        #expect(csv.status == 3)
        let rows = try csvSections(csv.output).first ?? []
        #expect(rows.map { [$0["offset"], $0["event_id"], $0["gap"]] } == [["7", "g7", "missing"]])

        // A row that names another record's position: g9's claim moved onto g3's offset.
        try fixture.execute("UPDATE processed_messages SET kafka_offset = 3 WHERE event_id = 'g9'")
        let moved = try operatorJSON(in: try await coverage(fixture, ["--format", "json"]).output)
        #expect(
            gaps(moved).map { "\($0.0 ?? -1) \($0.1 ?? "") \($0.2 ?? "")" } == ["7 g7 missing", "9 g9 other_record"])

        // A window that starts after every record checks nothing.
        let later = try await coverage(fixture, ["--since", "2999-01-01T00:00:00Z", "--format", "json"])
        #expect(later.status == 0, "\(later.output)")
        let none = try operatorJSON(in: later.output)
        #expect(none["totals"]?["records"] == 0 && none["totals"]?["before_window"] == 20)

        // Once a prune has dropped claims after these records were written, a claim dated
        // before the oldest partition may have gone with it: outside the window, not a gap.
        #expect(try fixture.count("SELECT count(*) FROM once_partitioning WHERE oldest > '2026-11-23'") == 1)
        try fixture.execute("UPDATE once_partitioning SET last_prune = now()")
        let pruned = try await coverage(fixture, ["--format", "json"])
        let after = try operatorJSON(in: pruned.output)
        #expect(after["totals"]?["outside_window"] == 1 && after["totals"]?["missing"] == 0)
        #expect(pruned.status == 3 && gaps(after).count == 1, "g9's misplaced row is still a gap:\n\(pruned.output)")
        await fixture.tearDown()
    }

    @Test func aPositionMovedPastUnprocessedRecordsListsEachOfThem() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce((0..<10).map { fixture.grant("g\($0)") })
        try await fixture.processAll()
        #expect(try await coverage(fixture).status == 0)

        // 55 records nobody consumes, then the stored position skipped past them.
        let skipped = (0..<55).map { "s\($0)" }
        try await fixture.produce(skipped.map { fixture.grant($0) }, together: true)
        try fixture.execute(
            "UPDATE consumer_offsets SET next_offset = next_offset + 55 WHERE consumer_group = $1",
            [.text(fixture.group)])

        let json = try await coverage(fixture, ["--format", "json"])
        #expect(json.status == 3, "\(json.output)")
        let report = try operatorJSON(in: json.output)
        #expect(gaps(report).map(\.0) == (10..<65).map { Int64($0) })
        #expect(gaps(report).map(\.1) == skipped)
        #expect(gaps(report).allSatisfy { $0.2 == "missing" })
        #expect(report["totals"]?["records"] == 65 && report["totals"]?["missing"] == 55)

        let table = try await coverage(fixture)
        #expect(table.status == 3)
        #expect(table.output.contains("Gaps: 55"))
        #expect(tableRow(table.output, startingWith: [fixture.topic, "0", "59"]) != nil)
        #expect(tableRow(table.output, startingWith: [fixture.topic, "0", "60"]) == nil)
        #expect(table.output.contains("… and 5 more"))
        await fixture.tearDown()
    }

    @Test func killedAndRestartedMidStreamEveryRecordIsCovered() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        // 2,000 grants and 150 exact redeliveries, fed in rounds across a SIGKILL.
        var values = (0..<2_000).map { fixture.grant("g\($0)", account: "acct-\($0 % 17)") }
        values += (0..<150).map { values[$0 * 13] }
        values.shuffle()
        let all = values
        let feeding = Task {
            for (round, start) in stride(from: 0, to: all.count, by: 250).enumerated() {
                let chunk = Array(all[start..<min(start + 250, all.count)])
                try await fixture.produce(chunk, partition: Int32(round % 2), together: true)
            }
        }
        let member = try fixture.startMember()
        try await eventually("progress before the kill", timeout: .seconds(120)) {
            try fixture.count("SELECT count(*) FROM processed_messages") >= 500 || !member.process.isRunning
        }
        try #require(member.process.isRunning, "once run exited early:\n\(member.output)")
        member.signal(SIGKILL)
        try await member.waitForExit()
        try await feeding.value
        try await fixture.processAll()
        #expect(try fixture.count("SELECT sum(next_offset)::bigint FROM consumer_offsets") == 2_150)

        let json = try await coverage(fixture, ["--format", "json"])
        #expect(json.status == 0, "\(json.output)")
        let report = try operatorJSON(in: json.output)
        #expect(report["totals"]?["records"] == 2_150 && report["totals"]?["covered"] == 2_150)
        #expect(report["totals"]?["covered_by_copy"] == 150 && report["gaps"] == [])
        await fixture.tearDown()
    }

    @Test func badFlagsAndMissingServicesFailWithOneClearLine() async throws {
        let fixture = try await OperatorFixture.make()
        let noTopic = try await coverage(fixture, ["--partition", "0"])
        #expect(noTopic.status == 64)
        expectFailure(noTopic, mentioning: "--partition needs --topic", oneLine: false)
        let badTime = try await coverage(fixture, ["--since", "yesterday"])
        #expect(badTime.status == 64)
        expectFailure(badTime, mentioning: "--since", oneLine: false)
        let badFormat = try await coverage(fixture, ["--format", "xml"])
        #expect(badFormat.status == 64)

        let unknownTopic = try await coverage(fixture, ["--topic", "no-such-\(fixture.topic)"])
        expectFailure(unknownTopic, mentioning: "topic no-such-\(fixture.topic) does not exist")
        #expect(unknownTopic.status == 1)

        let bare = try await TestDatabase.create(migrations: [])
        let unmigrated = try await OnceProcess.run(
            ["audit", "coverage", "--database-url", bare.url, "--brokers", fixture.brokers], timeout: .seconds(30))
        bare.drop()
        expectFailure(unmigrated, mentioning: "run `once migrate` first")

        let database = try await OnceProcess.run(
            [
                "audit", "coverage", "--database-url", "postgresql://postgres@127.0.0.1:1/once", "--brokers",
                fixture.brokers,
            ],
            timeout: .seconds(30))
        expectFailure(database, mentioning: "cannot reach the database")

        try await fixture.produce([fixture.grant("only")])
        try await fixture.processAll()
        let broker = try await OnceProcess.run(
            [
                "audit", "coverage", "--database-url", fixture.database.url, "--group", fixture.group, "--brokers",
                "127.0.0.1:1",
            ],
            timeout: .seconds(30))
        expectFailure(broker, mentioning: "cannot reach the broker at 127.0.0.1:1")
        #expect(broker.status == 1)
        await fixture.tearDown()
    }
}
