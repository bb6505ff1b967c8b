import Foundation
import OncePipeline
import Testing

@testable import OnceConsole

/// Form and query parsing, the planner's fields, the chart's geometry, and the templates.
@Suite struct ConsoleFormTests {
    @Test func formFieldsDecode() {
        let form = ConsoleForm(encoded: "note=needs+a%20fix%3A+%3Cb%3E&row=a&row=b&empty=&bad=%zz&csrf=ab")
        #expect(form["note"] == "needs a fix: <b>")
        #expect(form.values("row") == ["a", "b"])
        #expect(form["empty"] == "")
        #expect(form.text("empty") == nil)
        #expect(form["bad"] == "%zz")
        #expect(form["missing"] == nil)
        #expect(ConsoleForm.decode(Substring(ConsoleForm.encode("a|b c/é&"))) == "a|b c/é&")
        #expect(ConsoleForm(encoded: "x=%E2%82%AC")["x"] == "€")
    }

    @Test func plannerScopes() throws {
        #expect(try ConsoleOffsetForm.items("all").isEmpty)
        #expect(try ConsoleOffsetForm.items("  ").isEmpty)
        let items = try ConsoleOffsetForm.items("orders  payments:0,2; jobs.v1")
        #expect(items.map(\.topic) == ["orders", "payments", "jobs.v1"])
        #expect(items.map(\.partitions) == [nil, [0, 2], nil])
        #expect(throws: ConsoleFormError.self) { try ConsoleOffsetForm.items("orders:x") }
        #expect(throws: ConsoleFormError.self) { try ConsoleOffsetForm.items("orders:-1") }
        #expect(throws: ConsoleFormError.self) { try ConsoleOffsetForm.items("bad/topic") }
    }

    @Test func plannerValues() throws {
        #expect(try ConsoleOffsetForm.duration("PT30M") == .seconds(1800))
        #expect(try ConsoleOffsetForm.duration("P1DT2H") == .seconds(93_600))
        #expect(try ConsoleOffsetForm.duration("PT1.5S") == .milliseconds(1500))
        #expect(try ConsoleOffsetForm.duration("2h") == .seconds(7200))
        #expect(try ConsoleOffsetForm.duration("45s") == .seconds(45))
        for bad in ["", "P", "PT", "30", "PT5X", "P5H", "soon"] {
            #expect(throws: ConsoleFormError.self, "\(bad)") { try ConsoleOffsetForm.duration(bad) }
        }
        #expect(try ConsoleOffsetForm.milliseconds("2026-12-02T05:00:00Z") == 1_796_187_600_000)
        #expect(try ConsoleOffsetForm.milliseconds("2026-12-02T05:00:00.250Z") == 1_796_187_600_250)
        #expect(throws: ConsoleFormError.self) { try ConsoleOffsetForm.milliseconds("yesterday") }
        #expect(try ConsoleOffsetForm.integer("+5", field: "shift") == 5)
        #expect(try ConsoleOffsetForm.integer("-12", field: "shift") == -12)
        #expect(throws: ConsoleFormError.self) { try ConsoleOffsetForm.integer("1e3", field: "offset") }
        let fields = ["orders", "3", "", "17", "-2", "0", "0", "40", "member a|b"]
        #expect(try ConsoleOffsetForm.decodeFields(ConsoleOffsetForm.encodeFields(fields), count: 9) == fields)
        #expect(throws: ConsoleFormError.self) { try ConsoleOffsetForm.decodeFields("a|b", count: 9) }
    }

    @Test func agesAndTimes() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(ConsoleText.instant("30m", now: now) == now.addingTimeInterval(-1800))
        #expect(ConsoleText.instant("1d", now: now) == now.addingTimeInterval(-86_400))
        #expect(ConsoleText.instant("2026-12-02T05:00:00Z")?.timeIntervalSince1970 == 1_796_187_600)
        #expect(ConsoleText.instant("later") == nil)
        #expect(ConsoleText.ago(seconds: 4) == "4s ago")
        #expect(ConsoleText.ago(seconds: 7300) == "2h ago")
    }

    @Test func payloadsArePrettyJSONTextOrHex() {
        let json = ConsoleText.payload(Array(#"{"b":1,"a":"<x>"}"#.utf8))
        #expect(json.summary.hasSuffix("JSON"))
        #expect(json.text == "{\n  \"a\": \"<x>\",\n  \"b\": 1\n}")
        let text = ConsoleText.payload(Array("<script>alert(1)</script>".utf8))
        #expect(text.text == "<script>alert(1)</script>")
        let binary = ConsoleText.payload([0, 1, 2, 0x41])
        #expect(binary.text.hasPrefix("00000000  00 01 02 41"))
        #expect(binary.text.hasSuffix("|...A|"))
        #expect(ConsoleText.payload(nil).summary == "(no value)")
    }

    @Test func chartStacksMinutesByOutcome() {
        let now: Int64 = 1_800_000_030  // 30 s into a minute
        let minute = now - 30
        let chart = ThroughputChart(
            samples: [
                .init(minute: minute, outcome: .applied, count: 30),
                .init(minute: minute, outcome: .deadLettered, count: 10),
                .init(minute: minute - 600, outcome: .duplicate, count: 5),
                .init(minute: minute - 3600, outcome: .applied, count: 999),  // an hour ago: outside
            ], now: now)
        #expect(chart.peak == 40)
        #expect(chart.scaleTop == 50)
        #expect(chart.totals[.applied] == 30)
        #expect(chart.totals[.conflict] == 0)
        #expect(chart.bars.count == 3)
        let last = chart.bars.filter { $0.minute == minute }
        #expect(last.map(\.outcome) == [.applied, .deadLettered])
        // Stacked: the dead-lettered part sits on top of the applied part, the sum 40/50 of the plot.
        let plot = ThroughputChart.plotBottom - ThroughputChart.plotTop
        #expect(abs(last[0].height - plot * 30 / 50) < 0.2)
        #expect(abs((last[1].y + last[1].height) - last[0].y) < 0.2)
        #expect(last.allSatisfy { $0.x > ThroughputChart.plotRight - 20 })
        #expect(chart.yTicks.map(\.label) == ["0", "12", "25", "37", "50"])
        #expect(chart.xTicks.count == 7)
        #expect(ThroughputChart.niceCeiling(1) == 1)
        #expect(ThroughputChart.niceCeiling(101) == 200)
        #expect(ThroughputChart.niceCeiling(4999) == 5000)
        #expect(ThroughputChart.clock(1_800_000_000) == "08:00")
        #expect(ThroughputChart(samples: [], now: now).bars.isEmpty)
    }

    @Test func templatesEscapeEverythingTheyWrite() throws {
        for (name, text) in ConsoleTemplates.all {
            #expect(!text.contains("{{{"), "\(name) writes unescaped data")
            #expect(!text.contains("{{&"), "\(name) writes unescaped data")
            #expect(ConsoleTemplates.library.getTemplate(named: name) != nil, "\(name)")
        }
        let html = try #require(
            ConsoleTemplates.library.render(
                ["title": "t", "heading": "<script>alert(1)</script>", "text": "\"quoted\" & 'single'",
                 "actionsEnabled": false, "nav": [] as [Any]],
                withTemplate: "message"))
        #expect(!html.contains("<script>"))
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(html.contains("&quot;quoted&quot; &amp; &#39;single&#39;"))
        #expect(html.contains("ONCE_CONSOLE_TOKEN"), "a read-only console says how to enable actions")
    }
}
