import Foundation
import OnceOutbox
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
    func get(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        let url = try #require(URL(string: "http://127.0.0.1:\(port)\(path)"))
        let (data, response) = try await URLSession.shared.data(from: url)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// The sum of a metric's samples whose labels contain `matching` (e.g. `outcome="applied"`).
    func sum(_ metric: String, _ matching: String = "", in text: String) -> Double {
        text.split(separator: "\n")
            .filter { $0.hasPrefix(metric + "{") || $0.hasPrefix(metric + " ") }
            .filter { matching.isEmpty || $0.contains(matching) }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            .reduce(0, +)
    }

    func promtool(_ text: String) throws -> (status: Int32, output: String) {
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
        let port = try await httpPort(of: member)
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
        let port = try await httpPort(of: member)
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

extension OperationsEndpointTests {
    /// Statistics every half second, so that the lag and librdkafka gauges move within a test.
    static let fastStatistics = ["--kafka-property", "statistics.interval.ms=500"]

    @Test func lagFollowsTheStoredPositionAndTheBrokersEnd() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        _ = try await fixture.produce([fixture.grant("l0")])
        let member = try OnceProcess(fixture.runArguments(Self.fastStatistics))
        let port = try await httpPort(of: member)
        let series = "once_consumer_lag_records{topic=\"\(fixture.topic)\",partition=\"0\"}"
        func lag() async throws -> Double? {
            let text = try await get(port, "/metrics").body
            return text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
        }
        try await eventually("the first record processed, lag 0", timeout: .seconds(60)) {
            let processed = try fixture.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") == 1
            let current = try await lag()
            return processed && current == 0
        }

        // The next batch waits on a lock, so the stored position stays while the end moves on
        // (one produce request per record keeps the local broker's high watermark exact).
        let blocker = try fixture.database.connect()
        _ = try blocker.execute("BEGIN")
        _ = try blocker.execute("LOCK TABLE credit_accounts IN ACCESS EXCLUSIVE MODE")
        _ = try await fixture.produce([fixture.grant("l1"), fixture.grant("l2"), fixture.grant("l3")])
        try await eventually("lag 3 while the batch waits", timeout: .seconds(60)) { try await lag() == 3 }
        _ = try blocker.execute("ROLLBACK")
        blocker.close()
        try await eventually("lag 0 once it commits", timeout: .seconds(60)) { try await lag() == 0 }

        let text = try await get(port, "/metrics").body
        #expect(sum("once_kafka_broker_rtt_seconds", "client=\"consumer\"", in: text) > 0, "the consumer's round trips")
        #expect(sum("once_kafka_broker_rtt_seconds", "client=\"producer\"", in: text) > 0, "the relay's round trips")
        #expect(text.contains("once_kafka_queue_messages{client=\"consumer\"}"))
        #expect(text.contains("# TYPE once_kafka_errors_total counter") || !text.contains("once_kafka_errors_total"))
        let checked = try promtool(text)
        #expect(checked.status == 0, "promtool check metrics:\n\(checked.output)")
        member.signal(SIGTERM)
        #expect(try await member.waitForExit(timeout: .seconds(30)) == 0, "\(member.output)")
        await fixture.tearDown()
    }

    @Test func theBacklogCountsWhatWaitsForTheRelay() async throws {
        let fixture = try await OperatorFixture.make(partitions: 1)
        // Another session holds the relay's lock: the member's relay stands by, rows wait.
        let holder = try fixture.database.connect()
        _ = try holder.query("SELECT pg_advisory_lock($1)", [.int64(OutboxRelay.advisoryLockKey)])
        _ = try await fixture.produce((0..<4).map { fixture.grant("b\($0)") })
        let member = try fixture.startMember()
        let port = try await httpPort(of: member)
        try await eventually("four outbox rows written", timeout: .seconds(60)) {
            try fixture.count("SELECT count(*) FROM outbox WHERE tenant_id = $1", [.text(fixture.tenant)]) == 4
        }
        var text = try await get(port, "/metrics").body
        #expect(sum("once_relay_active", in: text) == 0)
        #expect(sum("once_outbox_backlog_rows", in: text) == 0, "a relay standing by reports no backlog")

        // The lock is released: the relay takes over, counts the four, publishes them.
        holder.close()
        var seen: Set<Double> = []
        try await eventually("the backlog reported, then published away", timeout: .seconds(60)) {
            text = try await get(port, "/metrics").body
            if sum("once_relay_active", in: text) == 1 { seen.insert(sum("once_outbox_backlog_rows", in: text)) }
            return seen.contains(4) && seen.contains(0)
        }
        member.signal(SIGTERM)
        #expect(try await member.waitForExit(timeout: .seconds(30)) == 0, "\(member.output)")
        await fixture.tearDown()
    }

    @Test func duringARebalanceReadinessReportsTheMembersState() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        let first = try fixture.startMember()
        let firstPort = try await httpPort(of: first)
        try await eventually("the first member owns both partitions", timeout: .seconds(60)) {
            try await get(firstPort, "/readyz").body.contains("owns 2 partitions")
        }
        let second = try fixture.startMember()
        let secondPort = try await httpPort(of: second)
        // Joining: not ready, and the line says it is waiting for its place in the group.
        let joining = try await get(secondPort, "/readyz")
        #expect(joining.status == 503, "\(joining.body)")
        #expect(
            joining.body.contains("waiting for an assignment") || joining.body.contains("not joined to the group yet"),
            "\(joining.body)")
        try await eventually("each member owns one partition", timeout: .seconds(90)) {
            let (a, b) = (try await get(firstPort, "/readyz"), try await get(secondPort, "/readyz"))
            return a.status == 200 && b.status == 200 && a.body.contains("owns 1 partition") && b.body.contains("owns 1 partition")
        }
        second.signal(SIGTERM)
        #expect(try await second.waitForExit(timeout: .seconds(30)) == 0, "\(second.output)")
        try await eventually("the first member owns both again", timeout: .seconds(90)) {
            try await get(firstPort, "/readyz").body.contains("owns 2 partitions")
        }
        first.signal(SIGTERM)
        #expect(try await first.waitForExit(timeout: .seconds(30)) == 0, "\(first.output)")
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
