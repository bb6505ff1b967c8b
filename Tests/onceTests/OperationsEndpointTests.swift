import Foundation
import OnceServer
import OnceTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `once run`'s HTTP endpoint, scraped while it runs: the counters agree with the database, the
/// exposition passes Prometheus's own `promtool check metrics`, and readiness follows the
/// database while liveness does not.
@Suite(.timeLimit(.minutes(4)), .serialized)
struct OperationsEndpointTests {
    /// The port `once run` logged for its endpoint (it was given port 0).
    private func port(of member: OnceProcess) async throws -> Int {
        var found: Int?
        try await eventually("the HTTP endpoint's address in the log", timeout: .seconds(60)) {
            let line = member.output.split(separator: "\n").first { $0.contains("/readyz on ") }
            found = line.flatMap { $0.split(separator: ":").last }.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            return found != nil
        }
        return try #require(found)
    }

    private func get(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        let url = try #require(URL(string: "http://127.0.0.1:\(port)\(path)"))
        let (data, response) = try await URLSession.shared.data(from: url)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// The sum of a metric's samples whose labels contain `matching` (e.g. `outcome="applied"`).
    private func sum(_ metric: String, _ matching: String = "", in text: String) -> Double {
        text.split(separator: "\n")
            .filter { $0.hasPrefix(metric + "{") || $0.hasPrefix(metric + " ") }
            .filter { matching.isEmpty || $0.contains(matching) }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            .reduce(0, +)
    }

    private func promtool(_ text: String) throws -> (status: Int32, output: String) {
        let path = try #require(
            ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) },
            "promtool not found: deploy/local/bootstrap installs Debian's prometheus package")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["check", "metrics"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try input.fileHandleForWriting.close()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: printed, as: UTF8.self))
    }

    @Test func metricsAgreeWithTheDatabaseAndPassPromtool() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        var values = (0..<40).map { fixture.grant("g\($0)", account: "acct-\($0 % 3)") }
        values += (0..<5).map { fixture.grant("g\($0)", account: "acct-\($0 % 3)") }  // producer duplicates, new ids
        values.append(Array("{not json".utf8))
        values.append(Array(#"{"event_id":"x1","type":"nope","version":1}"#.utf8))
        _ = try await fixture.produce(values)
        let member = try fixture.startMember()
        let port = try await port(of: member)
        try await eventually("every record processed") {
            try fixture.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") == Int64(values.count)
        }

        var text = ""
        try await eventually("the counters caught up with the database") {
            text = try await get(port, "/metrics").body
            return sum("once_events_total", in: text) == Double(try fixture.count("SELECT count(*) FROM processed_messages"))
        }
        for outcome in ["applied", "duplicate", "conflict", "dead_lettered"] {
            #expect(
                sum("once_events_total", "outcome=\"\(outcome)\"", in: text)
                    == Double(try fixture.count("SELECT count(*) FROM processed_messages WHERE outcome = $1", [.text(outcome)])),
                "\(outcome)")
        }
        #expect(sum("once_dead_letters_total", in: text) == Double(try fixture.count("SELECT count(*) FROM dead_letters")))
        #expect(sum("once_dead_letters_total", "reason=\"invalid_json\"", in: text) == 1)
        #expect(sum("once_assigned_partitions", in: text) == 2)
        #expect(sum("once_batch_duration_seconds_count", in: text) > 0)
        #expect(sum("once_batch_duration_seconds_sum", in: text) > 0, "batch durations are recorded")
        #expect(text.contains("# HELP once_events_total "))
        let checked = try promtool(text)
        #expect(checked.status == 0, "promtool check metrics:\n\(checked.output)")

        member.signal(SIGTERM)
        #expect(try await member.waitForExit(timeout: .seconds(30)) == 0, "\(member.output)")
        await fixture.tearDown()
    }

    @Test func readinessFollowsTheDatabaseAndLivenessDoesNot() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        _ = try await fixture.produce([fixture.grant("r1")])
        let member = try fixture.startMember()
        let port = try await port(of: member)
        try await eventually("ready") { try await get(port, "/readyz").status == 200 }
        #expect(try await get(port, "/readyz").body.contains("owns 1 partition"))

        // The database refuses new sessions and the endpoint's own is ended.
        let name = fixture.database.name
        try fixture.database.executeOnServer("ALTER DATABASE \(name) ALLOW_CONNECTIONS false")
        try fixture.database.executeOnServer(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'once-http' AND datname = $1",
            [.text(name)])
        try await eventually("not ready", timeout: .seconds(10)) { try await get(port, "/readyz").status == 503 }
        let notReady = try await get(port, "/readyz").body
        #expect(notReady.hasPrefix("not ready: the database does not answer"), "\(notReady)")
        #expect(try await get(port, "/healthz").status == 200)

        try fixture.database.executeOnServer("ALTER DATABASE \(name) ALLOW_CONNECTIONS true")
        try await eventually("ready again", timeout: .seconds(15)) { try await get(port, "/readyz").status == 200 }
        #expect(try await get(port, "/healthz").status == 200)

        member.signal(SIGTERM)
        #expect(try await member.waitForExit(timeout: .seconds(30)) == 0, "\(member.output)")
        await fixture.tearDown()
    }
}

/// The README's table of metrics is the catalog's, and the catalog names what the code exports.
@Suite struct MetricCatalogTests {
    @Test func theReadmeListsTheCatalog() throws {
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md"),
            encoding: .utf8)
        #expect(readme.contains(MetricCatalog.markdownTable), "README.md's metric table differs from MetricCatalog.markdownTable")
    }

    @Test func namesFollowPrometheusConventions() {
        for entry in MetricCatalog.entries {
            #expect(entry.name.hasPrefix("once_"))
            #expect(entry.type != "counter" || entry.name.hasSuffix("_total"), "\(entry.name)")
            #expect(!entry.name.contains("milliseconds"), "\(entry.name): base units")
        }
    }
}
