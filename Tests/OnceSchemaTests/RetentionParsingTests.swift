import Foundation
import OnceSchema
import Testing

@Suite struct RetentionParsingTests {
    static let cases: [(String, Int64)] = [
        ("7d", 7 * 86_400), ("36h", 36 * 3600), ("90m", 5400), ("30s", 30), ("2w", 14 * 86_400),
        ("P7D", 7 * 86_400), ("PT12H", 12 * 3600), ("P1DT6H", 30 * 3600), ("pt30m", 1800), ("0s", 0),
    ]

    @Test(arguments: cases)
    func windows(_ text: String, _ seconds: Int64) throws {
        let retention = try #require(Retention(text))
        #expect(retention.window == .seconds(seconds))
    }

    @Test(arguments: ["", "7", "d", "7 days", "-1d", "P", "PT", "P1H", "PT1D", "P1M", "1.5h", "3 weeks", "P1X"])
    func rejected(_ text: String) {
        #expect(Retention(text) == nil)
    }

    @Test func neverKeepsEverything() throws {
        #expect(Retention("never") == .never && Retention("NEVER") == .never)
        #expect(Retention.never.cutoff() == nil)
        #expect(Retention.default.description == "7d")
        #expect(Retention(window: .seconds(5400)).description == "90m")
        #expect(Retention(window: .seconds(61)).description == "61s")
        let now = Date(timeIntervalSince1970: 1_000_000)
        #expect(Retention.default.cutoff(now: now) == Date(timeIntervalSince1970: 1_000_000 - 7 * 86_400))
    }
}
