import Foundation
import OnceJSON
import OnceTestSupport
import Testing

/// `once offsets show` and `once offsets reset`, with and without members running.
@Suite(.timeLimit(.minutes(6)), .serialized)
struct OffsetsTests {
    func reset(_ fixture: OperatorFixture, partition: Int32, _ target: [String]) async throws -> JSONValue {
        let result = try await fixture.once(
            ["offsets", "reset", "--topic", fixture.topic, "--partition", String(partition), "--format", "json"]
                + target)
        try #require(result.status == 0, "\(result.output)")
        return try operatorJSON(in: result.output)
    }

    /// next_offset, generation and owner of one partition.
    func stored(_ fixture: OperatorFixture, _ partition: Int32) throws -> (
        next: Int64?, generation: Int64, owner: String?
    ) {
        let connection = try fixture.database.connect()
        defer { connection.close() }
        let row = try #require(
            try connection.query(
                """
                SELECT next_offset, generation, owner FROM consumer_offsets
                WHERE consumer_group = $1 AND topic = $2 AND partition = $3
                """,
                [.text(fixture.group), .text(fixture.topic), .int32(partition)]
            ).first)
        return (
            try row.decode(Int64?.self, column: 0), try row.decode(Int64.self, column: 1),
            try row.decode(String?.self, column: 2)
        )
    }

    @Test func showListsThePositionsAndResetMovesOneToEachKindOfTarget() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        try await fixture.produce((0..<5).map { fixture.grant("early\($0)") }, partition: 0)
        try await Task.sleep(for: .milliseconds(1500))
        let middle = Date()
        try await Task.sleep(for: .milliseconds(500))
        try await fixture.produce((0..<5).map { fixture.grant("late\($0)") }, partition: 0)
        try await fixture.produce((0..<7).map { fixture.grant("other\($0)") }, partition: 1, together: true)
        try await fixture.processAll()

        let shown = try await fixture.once(["offsets", "show", "--format", "json"])
        #expect(shown.status == 0, "\(shown.output)")
        let document = try operatorJSON(in: shown.output)
        #expect(document["consumer_group"] == .string(fixture.group))
        guard case .array(let partitions)? = document["partitions"] else {
            Issue.record("no partitions: \(shown.output)")
            return
        }
        #expect(partitions.map { $0["partition"] } == [.integer(0), .integer(1)])
        #expect(partitions.map { $0["next_offset"] } == [.integer(10), .integer(7)])
        #expect(partitions.allSatisfy { $0["owner"]?.stringValue != nil && $0["generation"]?.int64Value ?? 0 >= 1 })
        let table = try await fixture.once(["offsets", "show"])
        #expect(table.status == 0)
        #expect(operatorRow(table.output, startingWith: [fixture.topic, "1", "7"]) != nil, "\(table.output)")

        let before = try stored(fixture, 0)
        let rewound = try await reset(fixture, partition: 0, ["--to-offset", "3"])
        #expect(rewound["before"]?["next_offset"] == .integer(10))
        #expect(rewound["after"]?["next_offset"] == .integer(3))
        #expect(rewound["after"]?["generation"] == .integer(before.generation + 1))
        #expect(rewound["after"]?["owner"] == before.owner.map { .string($0) })
        #expect(try stored(fixture, 0).next == 3)
        #expect(try await reset(fixture, partition: 0, ["--to-latest"])["after"]?["next_offset"] == .integer(10))
        #expect(try await reset(fixture, partition: 0, ["--to-earliest"])["after"]?["next_offset"] == .integer(0))
        let time = ISO8601DateFormatter().string(from: middle)
        #expect(try await reset(fixture, partition: 0, ["--to-time", time])["after"]?["next_offset"] == .integer(5))
        #expect(
            try await reset(fixture, partition: 0, ["--to-time", "2099-01-01T00:00:00Z"])["after"]?["next_offset"]
                == .integer(10))
        #expect(try stored(fixture, 0).generation == before.generation + 5)
        // Seven records sent in one request: the end is found past the broker's reported watermark.
        #expect(try await reset(fixture, partition: 1, ["--to-latest"])["after"]?["next_offset"] == .integer(7))

        // A group with no row yet gets one, owned by nobody until a member claims it.
        let fresh = try await OnceProcess.run(
            [
                "offsets", "reset", "--topic", fixture.topic, "--partition", "1", "--to-offset", "2", "--database-url",
                fixture.database.url,
                "--brokers", fixture.brokers, "--group", "\(fixture.group)-new",
            ])
        #expect(fresh.status == 0, "\(fresh.output)")
        #expect(fresh.output.contains("(nothing stored) → 2"), "\(fresh.output)")
        #expect(
            try fixture.count(
                """
                SELECT count(*) FROM consumer_offsets
                WHERE consumer_group = $1 AND owner IS NULL AND next_offset = 2 AND generation = 1
                """,
                [.text("\(fixture.group)-new")]) == 1)
        await fixture.tearDown()
    }

    @Test func aRewindWhileTwoMembersRunIsReReadWithoutRestartAndAppliesNothingNew() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        try await fixture.produce((0..<50).map { fixture.grant("a\($0)", account: "acct-\($0 % 5)") }, partition: 0)
        try await fixture.produce((0..<50).map { fixture.grant("b\($0)", account: "acct-\($0 % 5)") }, partition: 1)
        let first = try fixture.startMember()
        try await eventually("the first member processes everything", timeout: .seconds(60)) {
            try fixture.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") == 100
        }
        let second = try fixture.startMember()
        try await eventually("each member owns a partition", timeout: .seconds(120)) {
            try fixture.count("SELECT count(DISTINCT owner) FROM consumer_offsets") == 2
                && fixture.count(
                    "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE next_offset IS NOT NULL")
                    == 100
        }
        let settled = try fixture.snapshot()
        let owners = (try stored(fixture, 0).owner, try stored(fixture, 1).owner)
        #expect(owners.0 != owners.1)

        // Rewind both partitions (one per member) while they run.
        let resetAt = ContinuousClock.now
        let zero = try await reset(fixture, partition: 0, ["--to-offset", "0"])
        let ten = try await reset(fixture, partition: 1, ["--to-offset", "10"])
        let generations = (
            try #require(zero["after"]?["generation"]?.int64Value),
            try #require(ten["after"]?["generation"]?.int64Value)
        )
        try await eventually("both members re-read their range up to the end", timeout: .seconds(30)) {
            let p0 = try stored(fixture, 0)
            let p1 = try stored(fixture, 1)
            return p0.next == 50 && p1.next == 50
        }
        let honouredIn = ContinuousClock.now - resetAt
        #expect(honouredIn < .seconds(15), "the reset took \(honouredIn) to be honoured")
        // Honoured under the reset's own generation: adopted in place, not by a restart or re-claim.
        #expect(try stored(fixture, 0).generation == generations.0)
        #expect(try stored(fixture, 1).generation == generations.1)
        #expect((try stored(fixture, 0).owner, try stored(fixture, 1).owner) == owners)
        #expect(first.process.isRunning && second.process.isRunning)
        #expect(try fixture.snapshot() == settled)  // re-read, nothing new applied or claimed
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 100)
        #expect(try fixture.balancesMatchLedger())

        first.signal(SIGTERM)
        second.signal(SIGTERM)
        #expect(try await first.waitForExit(timeout: .seconds(30)) == 0)
        #expect(try await second.waitForExit(timeout: .seconds(30)) == 0)
        let logs = first.output + second.output
        #expect(logs.contains("\(fixture.topic)/0 was reset to 0 (generation \(generations.0))"), "\(logs)")
        #expect(logs.contains("\(fixture.topic)/1 was reset to 10 (generation \(generations.1))"), "\(logs)")
        await fixture.tearDown()
    }

    @Test func aResetForwardSkipsTheRangeWhichThenHasNoEffect() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce((0..<20).map { fixture.grant("kept\($0)") })
        try await fixture.processAll()
        let skipped = try await fixture.produce((0..<10).map { fixture.grant("skipped\($0)") })
        try await fixture.produce((0..<5).map { fixture.grant("after\($0)") })
        #expect(skipped == Array(20..<30))

        let moved = try await reset(fixture, partition: 0, ["--to-offset", "30"])
        #expect(moved["before"]?["next_offset"] == .integer(20))
        try await fixture.processAll()
        #expect(try stored(fixture, 0).next == 35)
        #expect(try fixture.count("SELECT count(*) FROM processed_messages WHERE event_id LIKE 'skipped%'") == 0)
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id LIKE 'skipped%'") == 0)
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id LIKE 'after%'") == 5)
        #expect(try fixture.count("SELECT balance FROM credit_accounts") == 25 * 10)
        #expect(try fixture.balancesMatchLedger())
        await fixture.tearDown()
    }

    @Test func badArgumentsUnknownPlacesAndUnreachableServicesFailWithOneClearLine() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce((0..<3).map { fixture.grant("x\($0)") })
        let base = ["offsets", "reset", "--topic", fixture.topic, "--partition", "0"]

        expectFailure(try await fixture.once(base), mentioning: "give exactly one of", oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-offset", "1", "--to-latest"]), mentioning: "give exactly one of",
            oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-time", "yesterday"]), mentioning: "not an RFC 3339 time",
            oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-offset=-2"]), mentioning: "--to-offset must be 0 or more",
            oneLine: false)
        expectFailure(
            try await fixture.once(["offsets", "show", "--format", "csv"]), mentioning: "--format", oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-offset", "4"]),
            mentioning: "offset 4 is past the end of \(fixture.topic)/0 (3)")
        expectFailure(
            try await fixture.once([
                "offsets", "reset", "--topic", "nope-\(fixture.topic)", "--partition", "0", "--to-earliest",
            ]),
            mentioning: "topic nope-\(fixture.topic) does not exist")
        expectFailure(
            try await fixture.once(["offsets", "reset", "--topic", fixture.topic, "--partition", "1", "--to-earliest"]),
            mentioning: "partition 1 is out of range")
        #expect(try fixture.count("SELECT count(*) FROM consumer_offsets") == 0)

        var start = ContinuousClock.now
        let showNoDatabase = try await OnceProcess.run([
            "offsets", "show", "--database-url", "postgresql://postgres@127.0.0.1:1/once",
        ])
        expectFailure(showNoDatabase, mentioning: "cannot reach the database")
        let resetNoDatabase = try await OnceProcess.run(
            base + [
                "--to-offset", "1", "--database-url", "postgresql://postgres@127.0.0.1:1/once", "--brokers",
                fixture.brokers,
            ])
        expectFailure(resetNoDatabase, mentioning: "cannot reach the database")
        #expect(ContinuousClock.now - start < .seconds(15))
        start = ContinuousClock.now
        let resetNoBroker = try await OnceProcess.run(
            base + ["--to-offset", "1", "--database-url", fixture.database.url, "--brokers", "127.0.0.1:1"])
        expectFailure(resetNoBroker, mentioning: "cannot reach the broker at 127.0.0.1:1")
        #expect(ContinuousClock.now - start < .seconds(15))
        await fixture.tearDown()
    }
}
