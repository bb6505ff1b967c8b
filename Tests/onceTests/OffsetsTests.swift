import Foundation
import OnceJSON
import OnceTestSupport
import Testing

/// `once offsets show` and `once offsets reset`, with and without members running.
@Suite(.timeLimit(.minutes(6)), .serialized)
struct OffsetsTests {
    /// `once offsets reset --topic T:P TARGET --execute --format json`: the one partition's
    /// row of the executed plan.
    func reset(_ fixture: OperatorFixture, partition: Int32, _ target: [String]) async throws -> JSONValue {
        let plan = try await self.plan(fixture, ["--topic", "\(fixture.topic):\(partition)"] + target, execute: true)
        #expect(plan["executed"] == true)
        return try #require(plan["partitions"]?[0])
    }

    /// `once offsets reset ARGUMENTS --format json` (with `--execute` when asked), parsed.
    func plan(_ fixture: OperatorFixture, _ arguments: [String], execute: Bool = false) async throws -> JSONValue {
        let result = try await fixture.once(
            ["offsets", "reset", "--format", "json"] + arguments + (execute ? ["--execute"] : []))
        try #require(result.status == 0, "\(result.output)")
        return try operatorJSON(in: result.output)
    }

    /// Every stored position of the fixture's group: partition, next offset, generation, owner.
    func positions(_ fixture: OperatorFixture) throws -> [[String]] {
        let db = try fixture.database.connect()
        defer { db.close() }
        return try db.query(
                """
                SELECT partition::text, coalesce(next_offset::text, '-'), generation::text, coalesce(owner, '-')
                FROM consumer_offsets WHERE consumer_group = $1 ORDER BY topic, partition
                """, [.text(fixture.group)]
            ).map { row in try (0..<4).map { try row.decode(String.self, column: $0) } }
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

    @Test func showDescribesThePositionsAndEveryResetOptionPlansThenExecutes() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        try await fixture.produce((0..<5).map { fixture.grant("early\($0)") }, partition: 0)
        try await Task.sleep(for: .milliseconds(1500))
        let middle = Date()
        try await Task.sleep(for: .milliseconds(2500))
        try await fixture.produce((0..<5).map { fixture.grant("late\($0)") }, partition: 0)
        try await fixture.produce((0..<7).map { fixture.grant("other\($0)") }, partition: 1, together: true)
        try await fixture.processAll()

        // show: kafka-consumer-groups --describe's columns, lag against the broker's end.
        let shown = try await fixture.once(["offsets", "show", "--format", "json"])
        #expect(shown.status == 0, "\(shown.output)")
        let document = try operatorJSON(in: shown.output)
        #expect(document["consumer_group"] == .string(fixture.group))
        let partitions = try #require(document["partitions"]?.arrayValue, "\(shown.output)")
        #expect(partitions.map { $0["partition"] } == [.integer(0), .integer(1)])
        #expect(partitions.map { $0["next_offset"] } == [.integer(10), .integer(7)])
        #expect(partitions[0]["log_end_offset"] == 10 && partitions[0]["lag"] == 0)
        #expect(partitions.allSatisfy { $0["owner"]?.stringValue != nil && $0["generation"]?.int64Value ?? 0 >= 1 })
        let table = try await fixture.once(["offsets", "show"])
        #expect(table.status == 0)
        #expect(
            table.output.contains("GROUP") && table.output.contains("CURRENT-OFFSET")
                && table.output.contains("LOG-END-OFFSET") && table.output.contains("LAG"), "\(table.output)")
        let owner = try #require(partitions[0]["owner"]?.stringValue)
        #expect(operatorRow(table.output, startingWith: [fixture.group, fixture.topic, "0", "10", "10", "0", owner]) != nil, "\(table.output)")
        #expect(operatorRow(table.output, startingWith: [fixture.group, fixture.topic, "1", "7"]) != nil, "\(table.output)")
        // Seven records in one produce request: Tansu reports the end as 1, below the position.
        #expect(table.output.contains("below the stored position on \(fixture.topic)/1:"), "\(table.output)")
        #expect(!table.output.contains("\(fixture.topic)/0,"), "partition 0's end is exact")

        // Without --execute, a plan: the numbers, and nothing changed.
        let untouched = try positions(fixture)
        let rewind = try await plan(fixture, ["--topic", "\(fixture.topic):0", "--to-offset", "3"])
        #expect(rewind["executed"] == false)
        let row = try #require(rewind["partitions"]?[0])
        #expect(row["current_offset"] == 10 && row["new_offset"] == 3 && row["change"] == -7)
        #expect(row["already_processed"] == 7, "offsets 3…9 were all applied: re-reading them changes nothing")
        #expect(row["log_start_offset"] == 0 && row["log_end_offset"] == 10 && row["owner"] == .string(owner))
        let text = try await fixture.once(["offsets", "reset", "--topic", "\(fixture.topic):0", "--to-offset", "3"])
        #expect(operatorRow(text.output, startingWith: [fixture.group, fixture.topic, "0", "10", "3", "re-read", "7", "7"]) != nil, "\(text.output)")
        #expect(text.output.contains("Plan only: nothing was changed"), "\(text.output)")
        #expect(try positions(fixture) == untouched, "a plan changes nothing")

        // Each target, executed on partition 0 (generation + 1 each time, the owner kept).
        let generation = try #require(Int64(untouched[0][2]))
        let rewound = try await reset(fixture, partition: 0, ["--to-offset", "3"])
        #expect(rewound["new_offset"] == 3 && rewound["generation_before"] == .integer(generation))
        #expect(rewound["generation"] == .integer(generation + 1))
        #expect(try positions(fixture)[0] == ["0", "3", "\(generation + 1)", owner])
        let latest = try await reset(fixture, partition: 0, ["--to-latest"])
        #expect(latest["new_offset"] == 10 && latest["change"] == 7 && latest["already_processed"] == 7)
        #expect(try await reset(fixture, partition: 0, ["--to-earliest"])["new_offset"] == 0)
        let time = ISO8601DateFormatter().string(from: middle)
        #expect(try await reset(fixture, partition: 0, ["--to-datetime", time])["new_offset"] == 5)
        #expect(try await reset(fixture, partition: 0, ["--to-datetime", "2099-01-01T00:00:00Z"])["new_offset"] == 10)
        let back = try await reset(fixture, partition: 0, ["--shift-by", "-4"])
        #expect(back["current_offset"] == 10 && back["new_offset"] == 6 && back["change"] == -4 && back["already_processed"] == 4)
        #expect(try await reset(fixture, partition: 0, ["--shift-by", "3"])["new_offset"] == 9)
        #expect(try await reset(fixture, partition: 0, ["--shift-by", "100"])["new_offset"] == 10, "kept within the log")
        #expect(try await reset(fixture, partition: 0, ["--shift-by=-100"])["new_offset"] == 0, "kept within the log")
        // By duration: the first record at or after that long ago, which lies between the two halves.
        let since = Date().timeIntervalSince(middle)
        #expect(try await reset(fixture, partition: 0, ["--by-duration", String(format: "PT%.3fS", since)])["new_offset"] == 5)
        #expect(try await reset(fixture, partition: 0, ["--by-duration", "P1D"])["new_offset"] == 0)
        #expect(try positions(fixture)[0][2] == "\(generation + 11)", "eleven executions, one bump each")
        // Seven records sent in one request: the end is found past the broker's reported watermark.
        #expect(try await reset(fixture, partition: 1, ["--to-latest"])["new_offset"] == 7)

        // Scopes: a topic's partitions from the broker, a list, every topic of the group; one
        // execution bumps each partition's generation once.
        let before = try positions(fixture)
        let whole = try await plan(fixture, ["--topic", fixture.topic, "--to-earliest"])
        #expect(whole["partitions"]?.arrayValue?.map { $0["partition"] } == [0, 1])
        #expect(whole["partitions"]?[1]?["change"] == -7 && whole["partitions"]?[1]?["already_processed"] == 7)
        let listed = try await plan(fixture, ["--topic", "\(fixture.topic):1", "--to-earliest"])
        #expect(listed["partitions"]?.arrayValue?.map { $0["partition"] } == [1])
        #expect(try positions(fixture) == before)
        let everything = try await plan(fixture, ["--all-topics", "--to-earliest"], execute: true)
        #expect(everything["partitions"]?.arrayValue?.count == 2)
        let after = try positions(fixture)
        #expect(after.map { $0[1] } == ["0", "0"])
        #expect(zip(before, after).allSatisfy { Int64($0[2])! + 1 == Int64($1[2])! }, "\(before) → \(after)")

        // A group with no row yet gets one, owned by nobody until a member claims it.
        let fresh = try await OnceProcess.run(
            [
                "offsets", "reset", "--topic", "\(fixture.topic):1", "--to-offset", "2", "--execute", "--database-url",
                fixture.database.url, "--brokers", fixture.brokers, "--group", "\(fixture.group)-new",
            ])
        #expect(fresh.status == 0, "\(fresh.output)")
        #expect(operatorRow(fresh.output, startingWith: ["\(fixture.group)-new", fixture.topic, "1", "-", "2"]) != nil, "\(fresh.output)")
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
            try #require(zero["generation"]?.int64Value),
            try #require(ten["generation"]?.int64Value)
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
        #expect(moved["current_offset"] == 20 && moved["change"] == 10 && moved["already_processed"] == 0)
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
            try await fixture.once(["offsets", "reset", "--to-latest"]), mentioning: "give --topic (one or more) or --all-topics",
            oneLine: false)
        expectFailure(
            try await fixture.once(["offsets", "reset", "--to-latest", "--topic", "\(fixture.topic):x"]),
            mentioning: "is not TOPIC or TOPIC:P,P", oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-datetime", "yesterday"]), mentioning: "not an RFC 3339 time",
            oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--by-duration", "30 minutes"]), mentioning: "not an ISO 8601 duration",
            oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-offset=-2"]), mentioning: "--to-offset must be 0 or more",
            oneLine: false)
        expectFailure(
            try await fixture.once(["offsets", "show", "--format", "csv"]), mentioning: "--format", oneLine: false)
        expectFailure(
            try await fixture.once(base + ["--to-offset", "4", "--execute"]),
            mentioning: "offset 4 is past the end of \(fixture.topic)/0 (3)")
        expectFailure(
            try await fixture.once(["offsets", "reset", "--topic", "nope-\(fixture.topic)", "--to-earliest"]),
            mentioning: "topic nope-\(fixture.topic) does not exist")
        expectFailure(
            try await fixture.once(["offsets", "reset", "--topic", "\(fixture.topic):1", "--to-earliest", "--execute"]),
            mentioning: "topic \(fixture.topic) has 1 partition; there is no partition 1")
        expectFailure(
            try await fixture.once(["offsets", "reset", "--all-topics", "--to-earliest"]),
            mentioning: "group \(fixture.group) has no stored positions")
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
            base + ["--to-offset", "1", "--execute", "--database-url", fixture.database.url, "--brokers", "127.0.0.1:1"])
        expectFailure(resetNoBroker, mentioning: "cannot reach the broker at 127.0.0.1:1")
        #expect(ContinuousClock.now - start < .seconds(15))
        await fixture.tearDown()
    }
}
