import Foundation
import OnceEnvelope
import OnceJSON
import OnceTestSupport
import Testing

/// `--log-format json`: every line a run writes is one JSON object with the standard fields.
@Suite(.timeLimit(.minutes(4)))
struct JSONLogTests {
    @Test func everyLineOfARunWithPoisonIsAJSONObject() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        _ = try await fixture.produce([fixture.grant("j1"), Array("{poison".utf8), fixture.grant("j2")])
        let result = try await OnceProcess.run(
            fixture.runArguments(["--until-idle", "2", "--log-format", "json", "--log-level", "debug"]), timeout: .seconds(120))
        #expect(result.status == 0, "\(result.output)")
        let lines = result.output.split(separator: "\n")
        #expect(lines.count > 10)
        var groups = 0
        for line in lines {
            guard case .object(let fields)? = try? JSONParser.parse(Array(line.utf8)) else {
                Issue.record("not a JSON object: \(line)")
                continue
            }
            for field in ["timestamp", "level", "message", "label", "source"] {
                #expect(fields[field]?.stringValue != nil, "\(field) missing in \(line)")
            }
            #expect(fields["timestamp"]?.stringValue.map(Timestamp.isValid) != false, "\(line)")
            if fields["once.group"] != nil { groups += 1 }
        }
        #expect(groups >= 1, "no line carries the group's metadata")
        await fixture.tearDown()
    }

    @Test func everyLineOfARunWithPoisonARebalanceAndADatabaseFaultIsAJSONObject() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        _ = try await fixture.produce([fixture.grant("k1"), Array("{poison".utf8), fixture.grant("k2")])
        let json = ["--log-format", "json", "--log-level", "debug"]
        func processed() throws -> Int64 { try fixture.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") }
        let first = try OnceProcess(fixture.runArguments(json))
        try await eventually("the first three records processed", timeout: .seconds(60)) { try processed() == 3 }

        // A rebalance: a second member takes one of the two partitions.
        let second = try OnceProcess(fixture.runArguments(json))
        try await eventually("the first member gave a partition up", timeout: .seconds(90)) {
            first.output.contains("revoked") && second.output.contains("claimed")
        }
        // A database fault: every worker session of both members is ended under them.
        try fixture.database.executeOnServer(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'once-worker-%'",
            [.text(fixture.database.name)])
        _ = try await fixture.produce([fixture.grant("k3"), fixture.grant("k4")], partition: 0)
        _ = try await fixture.produce([fixture.grant("k5"), fixture.grant("k6")], partition: 1)
        try await eventually("every record processed", timeout: .seconds(90)) { try processed() == 7 }
        second.signal(SIGTERM)
        first.signal(SIGTERM)
        #expect(try await second.waitForExit(timeout: .seconds(30)) == 0)
        #expect(try await first.waitForExit(timeout: .seconds(30)) == 0)

        var lines: [[String: JSONValue]] = []
        for line in (first.output + second.output).split(separator: "\n") {
            guard case .object(let fields)? = try? JSONParser.parse(Array(line.utf8)) else {
                Issue.record("not a JSON object: \(line)")
                continue
            }
            for field in ["timestamp", "level", "message", "label", "source"] {
                #expect(fields[field]?.stringValue != nil, "\(field) missing in \(line)")
            }
            #expect(fields["timestamp"]?.stringValue.map(Timestamp.isValid) == true, "\(line)")
            lines.append(fields)
        }
        func has(_ message: String, _ fields: [String]) -> Bool {
            lines.contains { line in
                line["message"]?.stringValue?.contains(message) == true && fields.allSatisfy { line[$0]?.stringValue != nil }
            }
        }
        #expect(has("dead-lettered", ["once.topic", "once.partition", "once.offset", "once.event_id", "once.reason"]), "the poison's line")
        #expect(has("claimed", ["once.topic", "once.partition", "once.offset", "once.generation"]), "a claim's line")
        #expect(has("revoked", ["once.partitions"]), "the rebalance's line")
        #expect(has("failed (attempt", ["once.partitions", "once.attempt"]), "the database fault's retry line")
        await fixture.tearDown()
    }
}
