import Foundation
import OnceJSON
import OnceTestSupport
import Testing

/// `once replay` as an operator runs it, against a partition `once run` has processed.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct ReplayTests {
    func replay(_ fixture: OperatorFixture, _ extra: [String]) async throws -> (status: Int32, output: String) {
        try await fixture.once(["replay", "--topic", fixture.topic, "--partition", "0"] + extra)
    }

    @Test func aFullyProcessedPartitionReplaysAsDuplicatesAndChangesNothing() async throws {
        let fixture = try await OperatorFixture.make()
        // 40 grants, 3 exact redeliveries, 1 producer duplicate (new id, same grant) and 2 poison
        // records, all in one produce request: the broker under-reports the high watermark.
        var values = (0..<40).map { fixture.grant("g\($0)", account: "acct-\($0 % 4)") }
        values += [
            fixture.grant("g1", account: "acct-1"), fixture.grant("g2", account: "acct-2"),
            fixture.grant("g3", account: "acct-3"),
        ]
        values.append(
            JSONWriter.serialize(
                .object([
                    "event_id": "again-g5", "type": "credits.granted", "version": 1,
                    "tenant_id": .string(fixture.tenant),
                    "occurred_at": "2026-11-22T10:00:00Z",
                    "data": ["grant_id": "grant-g5", "account_id": "acct-1", "credits": 10],
                ])))
        values += [Array("{not json".utf8), fixture.grant("no-credits", credits: -1)]
        try await fixture.produce(values, together: true)
        try await fixture.processAll()
        #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 2)
        #expect(try fixture.count("SELECT count(*) FROM processed_messages") == 43)
        let before = try fixture.snapshot()
        let positions = try fixture.count("SELECT sum(next_offset + generation)::bigint FROM consumer_offsets")

        let json = try await replay(fixture, ["--from-offset", "0", "--format", "json"])
        #expect(json.status == 0, "\(json.output)")
        let report = try operatorJSON(in: json.output)
        #expect(report["records_read"] == .integer(46))
        #expect(report["first_offset"] == .integer(0) && report["last_offset"] == .integer(45))
        #expect(report["reached_end"] == .bool(true))
        #expect(report["outcomes"] == .object(["applied": 0, "duplicate": 46, "conflict": 0, "dead_lettered": 0]))
        #expect(report["dead_letters"] == .array([]))
        #expect(try fixture.snapshot() == before)
        #expect(try fixture.count("SELECT sum(next_offset + generation)::bigint FROM consumer_offsets") == positions)

        // Text, on a sub-range; piped, so no progress line.
        let text = try await replay(fixture, ["--from-offset", "5", "--to-offset", "9"])
        #expect(text.status == 0, "\(text.output)")
        #expect(text.output.contains("replayed \(fixture.topic)/0, offsets 5…9: 5 records read"), "\(text.output)")
        #expect(operatorRow(text.output, startingWith: ["duplicate"]) == ["duplicate", "5"], "\(text.output)")
        #expect(operatorRow(text.output, startingWith: ["applied"]) == ["applied", "0"], "\(text.output)")
        #expect(!text.output.contains("\r"))
        #expect(try fixture.snapshot() == before)
        await fixture.tearDown()
    }

    @Test func aLostEffectIsReappliedExactlyOnceAndADryRunWritesNothing() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce(
            (0..<30).map { fixture.grant("g\($0)", account: "acct-\($0 % 3)", credits: Int64(10 + $0)) })
        try await fixture.processAll()
        let intact = try fixture.snapshot()
        let ledgerIDs = try fixture.database.scalar(
            "SELECT string_agg(event_id, ',' ORDER BY event_id) FROM credit_ledger", as: String.self)

        // Lose g7's effect: its ledger row, its share of the balance and its processed_messages row.
        try fixture.execute(
            """
            WITH lost AS (DELETE FROM credit_ledger WHERE event_id = 'g7' RETURNING tenant_id, account_id, amount)
            UPDATE credit_accounts a SET balance = a.balance - lost.amount
            FROM lost WHERE a.tenant_id = lost.tenant_id AND a.account_id = lost.account_id
            """)
        try fixture.execute("DELETE FROM processed_messages WHERE event_id = 'g7'")
        #expect(try fixture.balancesMatchLedger())
        let lost = try fixture.snapshot()
        #expect(lost["ledger"] == 29 && lost["processed"] == 29 && lost["balance"] == intact["balance"]! - 17)

        // A dry run says what would happen and writes nothing.
        let dry = try await replay(fixture, ["--from-offset", "0", "--dry-run", "--format", "json"])
        #expect(dry.status == 0, "\(dry.output)")
        let wouldDo = try operatorJSON(in: dry.output)
        #expect(wouldDo["dry_run"] == .bool(true))
        #expect(wouldDo["outcomes"] == .object(["applied": 1, "duplicate": 29, "conflict": 0, "dead_lettered": 0]))
        #expect(try fixture.snapshot() == lost)
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id = 'g7'") == 0)
        let dryText = try await replay(fixture, ["--from-offset", "0", "--dry-run"])
        #expect(dryText.output.contains("dry run (rolled back, nothing written)"), "\(dryText.output)")
        #expect(operatorRow(dryText.output, startingWith: ["applied"]) == ["applied", "1"], "\(dryText.output)")
        #expect(try fixture.snapshot() == lost)

        // The replay re-applies exactly g7, and nothing else.
        let real = try await replay(fixture, ["--from-offset", "0", "--format", "json"])
        #expect(real.status == 0, "\(real.output)")
        #expect(
            try operatorJSON(in: real.output)["outcomes"]
                == .object(["applied": 1, "duplicate": 29, "conflict": 0, "dead_lettered": 0]))
        #expect(try fixture.snapshot() == intact)
        #expect(
            try fixture.database.scalar(
                "SELECT string_agg(event_id, ',' ORDER BY event_id) FROM credit_ledger", as: String.self) == ledgerIDs)
        #expect(
            try fixture.count("SELECT count(*) FROM processed_messages WHERE event_id = 'g7' AND outcome = 'applied'")
                == 1)
        #expect(try fixture.balancesMatchLedger())

        // Each replay left its progress in once_replays, where the console reads it.
        let recorded = try fixture.database.scalar(
            """
            SELECT string_agg(concat_ws(' ', dry_run, state, from_offset, next_offset, records, applied, duplicates), ',' ORDER BY id)
            FROM once_replays WHERE consumer_group = $1
            """, [.text(fixture.group)], as: String.self)
        #expect(
            recorded == "t finished 0 30 30 1 29,t finished 0 30 30 1 29,f finished 0 30 30 1 29",
            "the two dry runs, then the replay")

        // And again: nothing left to apply.
        let again = try await replay(fixture, ["--from-offset", "0", "--format", "json"])
        #expect(
            try operatorJSON(in: again.output)["outcomes"]
                == .object(["applied": 0, "duplicate": 30, "conflict": 0, "dead_lettered": 0]))
        #expect(try fixture.snapshot() == intact)
        await fixture.tearDown()
    }

    @Test func badArgumentsAndUnknownPlacesFailWithOneClearLine() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce([fixture.grant("only")])

        let noTopic = try await fixture.once(["replay", "--partition", "0", "--from-offset", "0"])
        expectFailure(noTopic, mentioning: "--topic", oneLine: false)
        let backwards = try await replay(fixture, ["--from-offset", "9", "--to-offset", "3"])
        expectFailure(backwards, mentioning: "--to-offset 3 is before --from-offset 9", oneLine: false)
        let negative = try await replay(fixture, ["--from-offset=-1"])
        expectFailure(negative, mentioning: "--from-offset must be 0 or more", oneLine: false)
        let badFormat = try await replay(fixture, ["--from-offset", "0", "--format", "xml"])
        expectFailure(badFormat, mentioning: "--format", oneLine: false)

        let unknownTopic = try await fixture.once([
            "replay", "--topic", "no-such-\(fixture.topic)", "--partition", "0", "--from-offset", "0",
        ])
        expectFailure(unknownTopic, mentioning: "topic no-such-\(fixture.topic) does not exist")
        let outOfRange = try await fixture.once([
            "replay", "--topic", fixture.topic, "--partition", "3", "--from-offset", "0",
        ])
        expectFailure(outOfRange, mentioning: "partition 3 is out of range: \(fixture.topic) has 1 partition (0…0)")
        #expect(try fixture.count("SELECT count(*) FROM processed_messages") == 0)
        await fixture.tearDown()
    }

    @Test func unreachableServicesFailWithinSeconds() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce([fixture.grant("only")])
        let arguments = ["replay", "--topic", fixture.topic, "--partition", "0", "--from-offset", "0"]

        var start = ContinuousClock.now
        let database = try await OnceProcess.run(
            arguments + ["--database-url", "postgresql://postgres@127.0.0.1:1/once", "--brokers", fixture.brokers],
            timeout: .seconds(30))
        expectFailure(database, mentioning: "cannot reach the database")
        #expect(ContinuousClock.now - start < .seconds(10))

        start = ContinuousClock.now
        let broker = try await OnceProcess.run(
            arguments + ["--database-url", fixture.database.url, "--brokers", "127.0.0.1:1"], timeout: .seconds(30))
        expectFailure(broker, mentioning: "cannot reach the broker at 127.0.0.1:1")
        #expect(ContinuousClock.now - start < .seconds(15))
        await fixture.tearDown()
    }
}
