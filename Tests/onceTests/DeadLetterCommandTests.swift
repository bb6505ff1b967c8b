import Foundation
import OnceTestSupport
import Testing

/// `once dlq list | show | retry` on dead letters that `once run` wrote.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct DeadLetterCommandTests {
    /// Two good grants and three poison records: a grant with negative credits (invalid_data,
    /// its event id readable), a value that is not JSON and one that is not even text
    /// (invalid_json, identified by position).
    struct Poisoned {
        let fixture: OperatorFixture
        let ids: (badCredits: Int64, notJSON: Int64, binary: Int64)

        static func make() async throws -> Poisoned {
            let fixture = try await OperatorFixture.make()
            try await fixture.produce([
                fixture.grant("good-1"), fixture.grant("bad-credits", credits: -5), Array("{not json".utf8),
                [
                    0x00, 0xff, 0x10, 0x41, 0x42, 0x7f, 0x80, 0x0a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
                    0x4b, 0x4c,
                ],
                fixture.grant("good-2"),
            ])
            try await fixture.processAll()
            func id(_ offset: Int64) throws -> Int64 {
                try fixture.count("SELECT id FROM dead_letters WHERE kafka_offset = $1", [.int64(offset)])
            }
            return Poisoned(fixture: fixture, ids: (try id(1), try id(2), try id(3)))
        }
    }

    func dlq(_ fixture: OperatorFixture, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await fixture.once(["dlq"] + arguments)
    }

    @Test func onAnUnmigratedDatabaseListSaysToMigrateInOneLine() async throws {
        let fixture = try await OperatorFixture.make()
        let empty = try fixture.emptyDatabase()
        defer { empty.drop() }
        let result = try await OnceProcess.run(["dlq", "list", "--database-url", empty.url])
        expectFailure(result, mentioning: "run `once migrate`")
        await fixture.tearDown()
    }

    @Test func listAndShowGiveTheReasonThePositionAndThePayload() async throws {
        let poisoned = try await Poisoned.make()
        let fixture = poisoned.fixture

        let list = try await dlq(fixture, ["list", "--format", "json"])
        #expect(list.status == 0, "\(list.output)")
        guard case .array(let letters)? = try operatorJSON(in: list.output)["dead_letters"] else {
            Issue.record("no dead_letters in \(list.output)")
            return
        }
        #expect(
            letters.map { $0["id"] }
                == [poisoned.ids.badCredits, poisoned.ids.notJSON, poisoned.ids.binary].map { .integer($0) })
        #expect(letters.map { $0["reason_code"] } == ["invalid_data", "invalid_json", "invalid_json"])
        #expect(letters.map { $0["offset"] } == [1, 2, 3])
        #expect(letters[0]["event_id"] == "bad-credits")
        #expect(letters[1]["event_id"] == .string("kafka:\(fixture.topic)/0/2"))
        #expect(
            letters.allSatisfy {
                $0["topic"] == .string(fixture.topic) && $0["partition"] == 0 && $0["created_at"] != nil
            })
        #expect(letters[0]["error"]?.stringValue?.contains("credits") == true)

        let table = try await dlq(fixture, ["list"])
        #expect(table.status == 0)
        let row = try #require(
            operatorRow(table.output, startingWith: [String(poisoned.ids.badCredits)]), "\(table.output)")
        #expect(
            row.contains("\(fixture.topic)/0@1") && row.contains("bad-credits") && row.contains("invalid_data"),
            "\(table.output)")

        // JSON payloads pretty-printed, other bytes as a hex dump; the JSON form keeps both.
        let json = try await dlq(fixture, ["show", String(poisoned.ids.badCredits)])
        #expect(json.status == 0, "\(json.output)")
        for expected in [
            "reason          invalid_data", "source          \(fixture.topic)/0 offset 1",
            "event id        bad-credits",
            "payload (", "bytes, JSON)", "\n{\n  \"data\": {\n    \"account_id\": \"acct\",\n    \"credits\": -5,",
        ] {
            #expect(json.output.contains(expected), "`\(expected)` in:\n\(json.output)")
        }
        let binary = try await dlq(fixture, ["show", String(poisoned.ids.binary)])
        #expect(binary.output.contains("payload (18 bytes, not JSON)"), "\(binary.output)")
        #expect(
            binary.output.contains("00000000  00 ff 10 41 42 7f 80 0a  43 44 45 46 47 48 49 4a  |...AB...CDEFGHIJ|"),
            "\(binary.output)")
        #expect(binary.output.contains("00000010  4b 4c "), "\(binary.output)")
        let shownJSON = try operatorJSON(
            in: try await dlq(fixture, ["show", String(poisoned.ids.badCredits), "--format", "json"]).output)
        #expect(shownJSON["payload_json"]?["data"]?["credits"] == .integer(-5))
        #expect(shownJSON["resolved_at"] == .null && shownJSON["retries"] == 0)
        let shownBinary = try operatorJSON(
            in: try await dlq(fixture, ["show", String(poisoned.ids.binary), "--format", "json"]).output)
        #expect(shownBinary["payload_hex"] == "00ff1041427f800a434445464748494a4b4c")
        await fixture.tearDown()
    }

    @Test func retryAfterAFixResolvesAndARetryThatFailsAgainStaysUnresolved() async throws {
        let poisoned = try await Poisoned.make()
        let fixture = poisoned.fixture
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 2)

        // The fix: the producer's bad field corrected in the stored bytes.
        try fixture.execute(
            "UPDATE dead_letters SET payload = $2 WHERE id = $1",
            [.int64(poisoned.ids.badCredits), .bytea(fixture.grant("bad-credits", credits: 5))])
        let fixed = try await dlq(fixture, ["retry", String(poisoned.ids.badCredits)])
        #expect(fixed.status == 0, "\(fixed.output)")
        #expect(
            fixed.output.contains("dead letter \(poisoned.ids.badCredits): applied, resolved (retries 1)"),
            "\(fixed.output)")
        #expect(
            try fixture.count(
                "SELECT count(*) FROM dead_letters WHERE id = $1 AND resolved_at IS NOT NULL AND retries = 1",
                [.int64(poisoned.ids.badCredits)]) == 1)
        #expect(
            try fixture.count(
                "SELECT count(*) FROM processed_messages WHERE event_id = 'bad-credits' AND outcome = 'applied'") == 1)
        #expect(
            try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id = 'bad-credits' AND amount = 5") == 1)
        #expect(try fixture.count("SELECT count(*) FROM dead_letters WHERE kafka_offset = 1") == 1)
        #expect(try fixture.balancesMatchLedger())
        let again = try await dlq(fixture, ["retry", String(poisoned.ids.badCredits)])
        #expect(again.status == 0 && again.output.contains("already resolved"), "\(again.output)")

        // Not fixed: it fails again, keeps its row (updated), and the exit status says so.
        let unfixed = try await dlq(fixture, ["retry", String(poisoned.ids.notJSON)])
        #expect(unfixed.status == 3, "\(unfixed.output)")
        #expect(
            unfixed.output.contains("dead letter \(poisoned.ids.notJSON): failed again, invalid_json"),
            "\(unfixed.output)")
        #expect(unfixed.output.contains("still unresolved (retries 1)"), "\(unfixed.output)")
        #expect(
            try fixture.count(
                """
                SELECT count(*) FROM dead_letters
                WHERE kafka_offset = 2 AND resolved_at IS NULL AND retries = 1 AND reason_code = 'invalid_json'
                """
            ) == 1)
        #expect(try fixture.count("SELECT count(*) FROM processed_messages WHERE outcome = 'dead_lettered'") == 2)

        // --all takes the unresolved ones, oldest first.
        let all = try await dlq(fixture, ["retry", "--all", "--format", "json"])
        #expect(all.status == 3, "\(all.output)")
        let results = try operatorJSON(in: all.output)
        #expect(results["resolved"] == 0 && results["unresolved"] == 2)
        guard case .array(let items)? = results["results"] else {
            Issue.record("no results: \(all.output)")
            return
        }
        #expect(items.map { $0["id"] } == [.integer(poisoned.ids.notJSON), .integer(poisoned.ids.binary)])
        #expect(items.map { $0["status"] } == ["failed_again", "failed_again"])
        #expect(items.map { $0["retries"] } == [2, 1])
        #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 3)
        #expect(try fixture.count("SELECT count(*) FROM processed_messages") == 5)

        let unresolved = try operatorJSON(in: try await dlq(fixture, ["list", "--format", "json"]).output)
        #expect(jsonArray(unresolved["dead_letters"]).count == 2)
        let everything = try await dlq(fixture, ["list", "--all"])
        #expect(
            operatorRow(everything.output, startingWith: [String(poisoned.ids.badCredits)])?.count ?? 0 >= 8,
            "\(everything.output)")

        // A replay afterwards finds every record processed: the fixed one applied once, the
        // others still dead letters, and no new dead letter.
        let replay = try await fixture.once([
            "replay", "--topic", fixture.topic, "--partition", "0", "--from-offset", "0", "--format", "json",
        ])
        #expect(
            try operatorJSON(in: replay.output)["outcomes"]
                == .object(["applied": 0, "duplicate": 5, "conflict": 0, "dead_lettered": 0]))
        #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 3)
        #expect(try fixture.count("SELECT count(*) FROM credit_ledger") == 3)
        await fixture.tearDown()
    }

    @Test func aFixThatChangesTheEventIDKeepsTheOriginalClaim() async throws {
        let poisoned = try await Poisoned.make()
        let fixture = poisoned.fixture
        // The record that was not JSON, replaced by a valid grant with an id of its own.
        try fixture.execute(
            "UPDATE dead_letters SET payload = $2 WHERE id = $1",
            [.int64(poisoned.ids.notJSON), .bytea(fixture.grant("rewritten"))])
        let fixed = try await dlq(fixture, ["retry", String(poisoned.ids.notJSON), "--format", "json"])
        #expect(fixed.status == 0, "\(fixed.output)")
        #expect(try operatorJSON(in: fixed.output)["results"]?[0]?["outcome"] == "applied")
        #expect(
            try fixture.count(
                "SELECT count(*) FROM processed_messages WHERE event_id = 'rewritten' AND outcome = 'applied'") == 1)
        // The original record still counts as processed (dead-lettered), so replaying it adds nothing.
        #expect(
            try fixture.count(
                "SELECT count(*) FROM processed_messages WHERE event_id = $1 AND outcome = 'dead_lettered'",
                [.text("kafka:\(fixture.topic)/0/2")]) == 1)
        let replay = try await fixture.once([
            "replay", "--topic", fixture.topic, "--partition", "0", "--from-offset", "2", "--to-offset", "2",
            "--format", "json",
        ])
        #expect(try operatorJSON(in: replay.output)["outcomes"]?["duplicate"] == 1)
        #expect(try fixture.count("SELECT count(*) FROM dead_letters") == 3)
        await fixture.tearDown()
    }

    @Test func badArgumentsMissingLettersAndAnUnreachableDatabaseFailWithOneClearLine() async throws {
        let poisoned = try await Poisoned.make()
        let fixture = poisoned.fixture

        expectFailure(try await dlq(fixture, ["retry"]), mentioning: "give one of: a dead letter id, --all, --reason CODE", oneLine: false)
        expectFailure(
            try await dlq(fixture, ["retry", "1", "--all"]), mentioning: "give one of: a dead letter id, --all, --reason CODE",
            oneLine: false)
        expectFailure(try await dlq(fixture, ["show", "twelve"]), mentioning: "twelve", oneLine: false)
        expectFailure(
            try await dlq(fixture, ["list", "--limit", "0"]), mentioning: "--limit must be 1 or more", oneLine: false)
        expectFailure(try await dlq(fixture, ["show", "987654"]), mentioning: "there is no dead letter 987654")
        expectFailure(try await dlq(fixture, ["retry", "987654"]), mentioning: "there is no dead letter 987654")
        let otherGroup = try await OnceProcess.run(
            [
                "dlq", "retry", String(poisoned.ids.notJSON), "--database-url", fixture.database.url, "--group",
                "someone-else",
            ])
        expectFailure(otherGroup, mentioning: "belongs to group \(fixture.group); pass --group \(fixture.group)")
        #expect(try fixture.count("SELECT coalesce(sum(retries), 0)::bigint FROM dead_letters") == 0)

        let start = ContinuousClock.now
        for command in [["list"], ["show", "1"], ["retry", "--all"]] {
            let result = try await OnceProcess.run(
                ["dlq"] + command + ["--database-url", "postgresql://postgres@127.0.0.1:1/once"])
            expectFailure(result, mentioning: "cannot reach the database")
        }
        #expect(ContinuousClock.now - start < .seconds(15))
        await fixture.tearDown()
    }
}
