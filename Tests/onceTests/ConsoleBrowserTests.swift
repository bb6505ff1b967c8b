import Foundation
import OnceJSON
import OnceTestSupport
import Testing

/// The console in a real headless Chromium, served by `once run` while events flow: every page
/// shows what the database and the broker hold; a dead letter is retried and another discarded
/// through the pages; an offset-reset plan is made and executed. With
/// `ONCE_CONSOLE_SCREENSHOTS=DIR` each page's screenshot is written to `DIR/NAME.png`
/// (docs/console holds the committed ones).
@Suite(.timeLimit(.minutes(5)), .serialized)
struct ConsoleBrowserTests {
    static let token = "browser-test-token"
    static let script = "<script>alert(1)</script>"

    func step(_ text: String) {
        FileHandle.standardError.write(Data("console browser test: \(text)\n".utf8))
    }

    func save(_ name: String, _ browser: WebDriver) async throws {
        guard let directory = ProcessInfo.processInfo.environment["ONCE_CONSOLE_SCREENSHOTS"], !directory.isEmpty else {
            return
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let png = try await browser.fullPageScreenshot()
        try png.write(to: URL(fileURLWithPath: directory).appendingPathComponent("\(name).png"))
    }

    /// A grant of `credits` under `grantID`, with its own event id.
    func grant(_ fixture: OperatorFixture, event: String, grantID: String, credits: Int64) -> [UInt8] {
        JSONWriter.serialize(
            .object([
                "event_id": .string(event), "type": .string("credits.granted"), "version": .integer(1),
                "tenant_id": .string(fixture.tenant), "occurred_at": .string("2026-11-22T10:00:00Z"),
                "data": .object([
                    "grant_id": .string(grantID), "account_id": .string("acct-browser"), "credits": .integer(credits),
                ]),
            ]))
    }

    @Test(.enabled(if: WebDriver.isInstalled, "needs Debian's chromium and chromium-driver (deploy/local/bootstrap)"))
    func everyPageRetryDiscardAndAnOffsetResetInChromium() async throws {
        let fixture = try await OperatorFixture.make(partitions: 2)
        // Partition 0: grants, a grant with negative credits, a script tag, a conflicting grant.
        try await fixture.produce(
            (0..<12).map { fixture.grant("seed-\($0)", account: "acct-\($0 % 3)") }
                + [fixture.grant("bad-credits", credits: -5), Array(Self.script.utf8)]
                + [grant(fixture, event: "conflict-1", grantID: "grant-seed-0", credits: 999)])
        // Partition 1: five grants, left alone by the flow below (the reset moves it).
        try await fixture.produce((0..<5).map { fixture.grant("p1-\($0)") }, partition: 1)
        let member = try OnceProcess(fixture.runArguments(), environment: ["ONCE_CONSOLE_TOKEN": Self.token])
        let port = try await httpPort(of: member)
        let base = "http://127.0.0.1:\(port)"

        // Events flow to partition 0 for the whole test.
        let flow = Task {
            var index = 0
            while !Task.isCancelled {
                _ = try? await fixture.produce([fixture.grant("flow-\(index)", account: "acct-flow")])
                index += 1
                try? await Task.sleep(for: .milliseconds(300))
            }
        }
        defer { flow.cancel() }
        try await eventually("the seed processed", timeout: .seconds(90)) {
            try fixture.count("SELECT count(*) FROM dead_letters") == 2
                && fixture.count(
                    "SELECT coalesce(max(next_offset), 0) FROM consumer_offsets WHERE partition = 1") == 5
        }
        let badCredits = try fixture.deadLetterID(offset: 12)
        let scriptLetter = try fixture.deadLetterID(offset: 13)
        // A replay of partition 1 for the replay page (all duplicates of what is processed).
        let replay = try await fixture.once(["replay", "--topic", fixture.topic, "--partition", "1", "--from-offset", "0"])
        #expect(replay.status == 0, "\(replay.output)")

        let browser = try await WebDriver()
        do {
            // Overview: the fixture's partitions with their owner and generation.
            step("navigate " + "/console")
            try await browser.navigate(base + "/console")
            let partitions = try await browser.text("#partitions")
            #expect(partitions.contains(fixture.topic), "\(partitions)")
            #expect(try await browser.findAll("#partitions tbody tr").count == 2)
            #expect(Int(try await browser.text("#total-lag")) != nil, "the broker's lag is known")
            try await save("overview", browser)

            // Throughput: bars for this hour's minutes.
            step("navigate " + "/console/throughput")
            try await browser.navigate(base + "/console/throughput")
            #expect(try await browser.findAll("#throughput-chart rect").count > 0)
            #expect(try await browser.text("main").contains("applied"))
            try await save("throughput", browser)

            step("navigate " + "/console/outcomes")

            try await browser.navigate(base + "/console/outcomes")
            let outcomes = try await browser.text("#outcomes")
            #expect(outcomes.contains("applied") && outcomes.contains("dead_lettered"), "\(outcomes)")
            #expect(try await browser.text("#by-type").contains("credits.granted"))
            try await save("outcomes", browser)

            step("navigate " + "/console/audit")

            try await browser.navigate(base + "/console/audit")
            let anomalies = try await browser.text("#anomalies")
            #expect(anomalies.contains("conflict"), "\(anomalies)")
            #expect(try await browser.text("#accounts").contains("acct-flow"))
            try await save("audit", browser)

            step("navigate " + "/console/replays")

            try await browser.navigate(base + "/console/replays")
            let replays = try await browser.text("#replays")
            #expect(replays.contains("\(fixture.topic)[1]") || replays.contains("\(fixture.topic)/1"), "\(replays)")
            #expect(replays.contains("finished"), "\(replays)")
            try await save("replays", browser)

            // Log in: the header names the operator.
            step("navigate " + "/console/login")
            try await browser.navigate(base + "/console/login")
            try await browser.type("#token", Self.token)
            try await browser.type("#operator", "browser-test")
            try await browser.click("#login-submit")
            try await eventually("logged in", timeout: .seconds(20)) {
                (try? await browser.text("header .who"))?.contains("operator browser-test") == true
            }

            // Retry a dead letter after a fix: resolved, applied once.
            try fixture.execute(
                "UPDATE dead_letters SET payload = $2 WHERE id = $1",
                [.int64(badCredits), .bytea(fixture.grant("bad-credits", credits: 5))])
            step("navigate " + "/console/dead-letters")
            try await browser.navigate(base + "/console/dead-letters")
            #expect(try await browser.text("#dead-letters").contains("invalid_data"))
            try await save("dead-letters", browser)
            try await browser.click("a[href=\"/console/dead-letters/\(badCredits)\"]")
            try await eventually("the dead letter's page", timeout: .seconds(20)) {
                (try? await browser.find("#retry")) != nil
            }
            try await browser.click("#retry")
            try await eventually("the retry's notice", timeout: .seconds(20)) {
                (try? await browser.text("#notice"))?.contains("Retried") == true
            }
            #expect(
                try fixture.count(
                    "SELECT count(*) FROM dead_letters WHERE id = $1 AND resolved_at IS NOT NULL", [.int64(badCredits)]) == 1)
            #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id = 'bad-credits' AND amount = 5") == 1)
            #expect(
                try fixture.count(
                    "SELECT count(*) FROM processed_messages WHERE event_id = 'bad-credits' AND outcome = 'applied'") == 1)

            // The script tag is text, and never runs; discard it with a note.
            step("navigate to the script dead letter")
            try await browser.navigate(base + "/console/dead-letters/\(scriptLetter)")
            #expect(try await browser.text("#payload") == Self.script)
            #expect(try await !browser.hasAlert())
            try await save("dead-letter", browser)
            let note = "not an event: a test's <b>script</b>"
            try await browser.type("#note", note)
            try await browser.click("#discard")
            try await eventually("discarded", timeout: .seconds(20)) {
                (try? await browser.text("#state")) == "discarded"
            }
            #expect(try await browser.text("#dl-note") == note)
            #expect(
                try fixture.count(
                    "SELECT count(*) FROM dead_letters WHERE id = $1 AND resolved_at IS NOT NULL AND resolution = 'discarded' AND resolution_note = $2",
                    [.int64(scriptLetter), .text(note)]) == 1)

            // Plan a reset of partition 1 to offset 2, then execute it.
            let generation = try fixture.count(
                "SELECT generation FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = 1",
                [.text(fixture.group), .text(fixture.topic)])
            step("navigate " + "/console/offsets")
            try await browser.navigate(base + "/console/offsets")
            try await browser.type("#scope", "\(fixture.topic):1")
            try await browser.select("#target", value: "offset")
            try await browser.type("#value", "2")
            try await browser.click("#plan")
            try await eventually("the plan", timeout: .seconds(30)) { (try? await browser.find("#plan-table")) != nil }
            let cells = try await browser.findAll("#plan-table tbody tr td")
            #expect(cells.count == 9)
            let row = try await browser.text("#plan-table tbody tr")
            #expect(row.contains(" 5 ") && row.contains(" 2 ") && row.contains("-3"), "\(row)")
            try await save("offsets", browser)
            try await browser.click("#execute")
            try await eventually("executed", timeout: .seconds(20)) {
                (try? await browser.text("#executed"))?.contains(fixture.topic) == true
            }
            #expect(
                try fixture.count(
                    "SELECT generation FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = 1",
                    [.text(fixture.group), .text(fixture.topic)]) == generation + 1)
            // The member re-reads 2…4 and is back at 5, with no second effect.
            try await eventually("partition 1 caught up again", timeout: .seconds(60)) {
                try fixture.count(
                    "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = 1",
                    [.text(fixture.group), .text(fixture.topic)]) == 5
            }
            #expect(try fixture.count("SELECT count(*) FROM credit_ledger WHERE event_id LIKE 'p1-%'") == 5)
            #expect(try fixture.balancesMatchLedger())
        } catch {
            await browser.quit()
            throw error
        }
        await browser.quit()
        flow.cancel()
        member.signal(SIGTERM)
        #expect(try await member.waitForExit(timeout: .seconds(30)) == 0, "\(member.output)")
        await fixture.tearDown()
    }
}
