import Foundation
import OncePipeline

/// Events processed per minute over the last hour, by outcome, laid out as a stacked bar chart
/// for an SVG drawn on the server. A value type built from counts; pure geometry, no I/O.
public struct ThroughputChart: Sendable, Hashable {
    /// `processed_messages` rows of one minute and outcome.
    public struct Sample: Sendable, Hashable {
        /// The minute's start, seconds since the epoch.
        public var minute: Int64
        public var outcome: EventOutcome
        public var count: Int64

        public init(minute: Int64, outcome: EventOutcome, count: Int64) {
            self.minute = minute
            self.outcome = outcome
            self.count = count
        }
    }

    /// One outcome's part of one minute's bar.
    public struct Bar: Sendable, Hashable {
        public var x: Double
        public var y: Double
        public var width: Double
        public var height: Double
        public var outcome: EventOutcome
        public var count: Int64
        /// The minute's start, seconds since the epoch.
        public var minute: Int64
    }

    /// A labelled line across the plot (y axis) or below it (x axis).
    public struct Tick: Sendable, Hashable {
        public var position: Double
        public var label: String
    }

    public static let width = 720.0
    public static let height = 240.0
    static let left = 52.0
    static let right = 24.0
    static let top = 10.0
    static let bottom = 26.0
    public static let minutes = 60

    public var bars: [Bar] = []
    public var yTicks: [Tick] = []
    public var xTicks: [Tick] = []
    /// Events per outcome over the hour, every outcome present.
    public var totals: [EventOutcome: Int64] = [:]
    /// The busiest minute's count (the scale's top is at least this).
    public var peak: Int64 = 0
    public var scaleTop: Int64 = 1

    public static var plotLeft: Double { left }
    public static var plotRight: Double { width - right }
    public static var plotTop: Double { top }
    public static var plotBottom: Double { height - bottom }

    /// The chart of the 60 whole minutes that end with the one holding `now` (seconds since
    /// the epoch); samples outside them are left out.
    public init(samples: [Sample], now: Int64) {
        let last = now - ((now % 60) + 60) % 60
        let first = last - Int64(Self.minutes - 1) * 60
        var perMinute: [Int64: [EventOutcome: Int64]] = [:]
        totals = Dictionary(uniqueKeysWithValues: EventOutcome.allCases.map { ($0, Int64(0)) })
        for sample in samples where sample.minute >= first && sample.minute <= last && sample.count > 0 {
            perMinute[sample.minute, default: [:]][sample.outcome, default: 0] += sample.count
            totals[sample.outcome, default: 0] += sample.count
        }
        peak = perMinute.values.map { $0.values.reduce(0, +) }.max() ?? 0
        scaleTop = Self.niceCeiling(max(peak, 1))

        let plotWidth = Self.plotRight - Self.plotLeft
        let plotHeight = Self.plotBottom - Self.plotTop
        let slot = plotWidth / Double(Self.minutes)
        for index in 0..<Self.minutes {
            let minute = first + Int64(index) * 60
            guard let counts = perMinute[minute] else { continue }
            var base = Self.plotBottom
            for outcome in EventOutcome.allCases {
                guard let count = counts[outcome], count > 0 else { continue }
                let height = plotHeight * Double(count) / Double(scaleTop)
                base -= height
                bars.append(
                    Bar(
                        x: Self.round(Self.plotLeft + Double(index) * slot + 1), y: Self.round(base),
                        width: Self.round(max(slot - 2, 1)), height: Self.round(height), outcome: outcome, count: count,
                        minute: minute))
            }
        }
        yTicks = (0...4).map { step in
            let value = scaleTop * Int64(step) / 4
            return Tick(position: Self.round(Self.plotBottom - plotHeight * Double(step) / 4), label: "\(value)")
        }
        xTicks = stride(from: 0, through: Self.minutes, by: 10).map { index in
            let minute = first + Int64(index) * 60
            return Tick(position: Self.round(Self.plotLeft + Double(index) * slot), label: Self.clock(minute))
        }
    }

    /// The smallest of 1, 2, 5 × 10ⁿ that is at least `value`.
    static func niceCeiling(_ value: Int64) -> Int64 {
        var magnitude: Int64 = 1
        while true {
            for step in [1, 2, 5] as [Int64] where step * magnitude >= value { return step * magnitude }
            magnitude *= 10
        }
    }

    /// `HH:MM` in UTC.
    static func clock(_ seconds: Int64) -> String {
        let minutes = ((seconds / 60) % 1440 + 1440) % 1440
        let hh = minutes / 60
        let mm = minutes % 60
        return (hh < 10 ? "0" : "") + "\(hh):" + (mm < 10 ? "0" : "") + "\(mm)"
    }

    static func round(_ value: Double) -> Double { (value * 10).rounded() / 10 }
}
