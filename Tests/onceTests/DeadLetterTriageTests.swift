import Foundation
import OnceJSON
import OnceTestSupport
import Testing

/// Dead-letter triage after an incident: filter the queue, retry one reason's letters after the
/// cause is fixed, discard the rest with a note.
@Suite(.timeLimit(.minutes(4)))
struct DeadLetterTriageTests {
    /// Frozen accounts refuse every ledger row (a database rule standing in for a bug that a
    /// fix later removes): their grants are dead-lettered as `handler_failed`.
    static let freeze = [
        """
        CREATE FUNCTION test_refuse_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.account_id LIKE 'frozen%' THEN RAISE EXCEPTION 'account % is frozen', NEW.account_id; END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER test_refuse_frozen BEFORE INSERT ON credit_ledger FOR EACH ROW EXECUTE FUNCTION test_refuse_frozen()",
    ]

    func dlq(_ fixture: OperatorFixture, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await fixture.once(["dlq"] + arguments)
    }

    func listed(_ fixture: OperatorFixture, _ arguments: [String]) async throws -> [JSONValue] {
        let result = try await dlq(fixture, ["list", "--format", "json"] + arguments)
        try #require(result.status == 0, "\(result.output)")
        return try operatorJSON(in: result.output)["dead_letters"]?.arrayValue ?? []
    }

    @Test func filterRetryOneReasonAfterTheFixAndDiscardTheRestWithANote() async throws {
        let fixture = try await OperatorFixture.make()
        for statement in Self.freeze { try fixture.execute(statement) }
        try await fixture.produce([
            fixture.grant("good-1"), fixture.grant("frozen-1", account: "frozen-a"), Array("{not json".utf8),
            fixture.grant("frozen-2", account: "frozen-b"), fixture.grant("good-2"),
        ])
        try await fixture.processAll()

        // Filters: by reason, by source topic, by time (RFC 3339 or a duration before now).
        let failed = try await listed(fixture, ["--reason", "handler_failed"])
        #expect(failed.map { $0["event_id"] } == ["frozen-1", "frozen-2"])
        #expect(failed.allSatisfy { $0["error"]?.stringValue?.contains("is frozen") ?? false })
        #expect(try await listed(fixture, ["--reason", "invalid_json"]).map { $0["offset"] } == [2])
        #expect(try await listed(fixture, ["--topic", fixture.topic]).count == 3)
        #expect(try await listed(fixture, ["--topic", "other-\(fixture.topic)"]).isEmpty)
        #expect(try await listed(fixture, ["--since", "PT1H"]).count == 3)
        #expect(try await listed(fixture, ["--since", "2099-01-01T00:00:00Z"]).isEmpty)
        #expect(try await listed(fixture, ["--reason", "handler_failed", "--since", "P1D"]).count == 2)
        let none = try await dlq(fixture, ["list", "--reason", "unknown_type"])
        #expect(none.output.contains("no unresolved dead letters matching the filter"), "\(none.output)")

        // Before the fix, retrying the reason fails again and changes nothing else.
        let early = try await dlq(fixture, ["retry", "--reason", "handler_failed"])
        #expect(early.status == 3, "\(early.output)")
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE account_id LIKE 'frozen%'") == 0)

        // The fix, then every letter of that reason retried: each applies once; the other reason's
        // letter is not touched.
        try fixture.execute("DROP TRIGGER test_refuse_frozen ON credit_ledger")
        let retried = try await dlq(fixture, ["retry", "--reason", "handler_failed", "--by", "oncall-bob", "--format", "json"])
        #expect(retried.status == 0, "\(retried.output)")
        let results = try operatorJSON(in: retried.output)
        #expect(results["resolved"] == 2 && results["unresolved"] == 0)
        #expect(results["results"]?.arrayValue?.map { $0["outcome"] } == ["applied", "applied"])
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id IN ('frozen-1', 'frozen-2')") == 2)
        #expect(
            try fixture.count(
                """
                SELECT count(*) FROM dead_letters
                WHERE reason_code = 'handler_failed' AND resolution = 'retried' AND resolved_by = 'oncall-bob'
                  AND resolved_at IS NOT NULL
                """) == 2)
        #expect(
            try fixture.count("SELECT retries FROM dead_letters WHERE reason_code = 'invalid_json'") == 0,
            "the other reason's letter was left alone")
        let again = try await dlq(fixture, ["retry", "--reason", "handler_failed"])
        #expect(again.status == 0 && again.output.contains("no unresolved dead letters with reason handler_failed"), "\(again.output)")
        // Applied once: a replay of the partition adds nothing.
        let replay = try await fixture.once(["replay", "--topic", fixture.topic, "--partition", "0", "--from-offset", "0", "--format", "json"])
        #expect(try operatorJSON(in: replay.output)["outcomes"]?["applied"] == 0, "\(replay.output)")
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 4)
        #expect(try fixture.balancesMatchLedger())

        // Discard the garbage with a note: resolved, who and why kept, the row still there.
        let garbage = try #require(try await listed(fixture, []).first?["id"]?.int64Value)
        expectFailure(try await dlq(fixture, ["discard", String(garbage)]), mentioning: "--note", oneLine: false)
        expectFailure(
            try await dlq(fixture, ["discard", String(garbage), "--note", "  "]), mentioning: "--note is empty",
            oneLine: false)
        let discarded = try await dlq(fixture, ["discard", String(garbage), "--note", "a test producer's garbage", "--by", "alice"])
        #expect(discarded.status == 0, "\(discarded.output)")
        #expect(discarded.output.contains("discarded 1 dead letter (\(garbage)) as alice: a test producer's garbage"))
        #expect(
            try fixture.count(
                """
                SELECT count(*) FROM dead_letters
                WHERE id = $1 AND resolution = 'discarded' AND resolved_by = 'alice'
                  AND resolution_note = 'a test producer''s garbage' AND resolved_at IS NOT NULL AND payload IS NOT NULL
                """, [.int64(garbage)]) == 1)
        #expect(try await listed(fixture, []).isEmpty, "nothing unresolved is left")
        let everything = try await listed(fixture, ["--all"])
        #expect(everything.compactMap { $0["resolution"]?.stringValue }.sorted() == ["discarded", "retried", "retried"])
        let shown = try await dlq(fixture, ["show", String(garbage)])
        #expect(shown.output.contains("resolution      discarded") && shown.output.contains("note            a test producer's garbage"), "\(shown.output)")
        expectFailure(
            try await dlq(fixture, ["discard", String(garbage), "--note", "twice"]),
            mentioning: "dead letter \(garbage) is already resolved")
        expectFailure(try await dlq(fixture, ["discard", "987654", "--note", "x"]), mentioning: "there is no dead letter 987654")
        // Its record never applies: a retry finds it resolved, a replay finds it processed.
        let late = try await dlq(fixture, ["retry", String(garbage)])
        #expect(late.output.contains("already resolved"), "\(late.output)")
        #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 3)
        await fixture.tearDown()
    }

    @Test func discardByReasonTakesEveryUnresolvedLetterOfThatReasonInOneGo() async throws {
        let fixture = try await OperatorFixture.make()
        try await fixture.produce([Array("{x".utf8), fixture.grant("ok"), Array("[1".utf8), fixture.grant("bad", credits: -1)])
        try await fixture.processAll()
        let result = try await dlq(fixture, ["discard", "--reason", "invalid_json", "--note", "replayed by mistake", "--format", "json"])
        #expect(result.status == 0, "\(result.output)")
        let document = try operatorJSON(in: result.output)
        #expect(document["discarded"]?.arrayValue?.count == 2 && document["note"] == "replayed by mistake")
        #expect(try await listed(fixture, []).map { $0["reason_code"] } == ["invalid_data"])
        #expect(
            try fixture.count("SELECT count(*) FROM dead_letters WHERE resolution = 'discarded' AND resolved_by IS NOT NULL") == 2)
        let nothing = try await dlq(fixture, ["discard", "--reason", "invalid_json", "--note", "again"])
        #expect(nothing.status == 0 && nothing.output.contains("no unresolved dead letters with reason invalid_json"))
        await fixture.tearDown()
    }
}
