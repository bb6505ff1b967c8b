import Foundation
import OnceEnvelope
import OnceJSON
import OnceTestSupport
import Testing

/// `--log-format json`: every line a run writes is one JSON object with the standard fields.
@Suite(.timeLimit(.minutes(3)))
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
}
