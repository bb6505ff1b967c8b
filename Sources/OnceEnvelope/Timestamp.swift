import Foundation

/// The one RFC 3339 parser of this project: `date-time` text checked and turned into an exact
/// instant, so that the database never parses producer text itself (PostgreSQL rejects some
/// valid RFC 3339 offsets, beyond ±15:59, and a cast failing inside a handler would
/// dead-letter a valid event). The envelope's `occurred_at`, the importer's dates and the
/// operator commands' `--since`/`--to-datetime` all go through it. Pure functions, any thread.
///
/// The grammar (RFC 3339 §5.6), with range checks:
///
///     date-time = full-date ("T" / "t") full-time
///     full-date = YYYY "-" MM "-" DD          year 0001-9999, month 01-12, day valid for the month
///     full-time = hh ":" mm ":" ss ["." 1*9DIGIT] ("Z" / "z" / ("+" / "-") hh ":" mm)
///                 hour 00-23, minute 00-59, second 00-60 (leap second), offset hour 00-23
///
/// Two choices narrow the RFC: year 0000 is rejected (PostgreSQL has no year zero), and the
/// fraction has at most 9 digits (nanoseconds). Second 60 counts as the next minute's first
/// second, as PostgreSQL does.
public enum Timestamp {
    /// Whether `text` is an RFC 3339 `date-time` as described above.
    public static func isValid(_ text: String) -> Bool {
        microsecondsSinceEpoch(text) != nil
    }

    /// The instant `text` names (to the microsecond), or nil when it is not RFC 3339.
    public static func date(_ text: String) -> Date? {
        microsecondsSinceEpoch(text).map { Date(timeIntervalSince1970: Double($0) / 1_000_000) }
    }

    /// Microseconds since 1970-01-01T00:00:00Z (fractions below a microsecond rounded half up),
    /// or nil when `text` is not an RFC 3339 date-time.
    public static func microsecondsSinceEpoch(_ text: String) -> Int64? {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 20, utf8.count <= 35 else { return nil }

        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= utf8.count else { return nil }
            var value: Int64 = 0
            for index in range {
                let digit = utf8[index] &- UInt8(ascii: "0")
                guard digit <= 9 else { return nil }
                value = value * 10 + Int64(digit)
            }
            return value
        }
        func byte(_ index: Int, is first: Character, or second: Character? = nil) -> Bool {
            guard index < utf8.count else { return false }
            return utf8[index] == first.asciiValue || (second != nil && utf8[index] == second!.asciiValue)
        }

        guard let year = number(0..<4), byte(4, is: "-"), let month = number(5..<7), byte(7, is: "-"),
            let day = number(8..<10), byte(10, is: "T", or: "t"),
            let hour = number(11..<13), byte(13, is: ":"), let minute = number(14..<16), byte(16, is: ":"),
            let second = number(17..<19)
        else { return nil }
        guard year >= 1, (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year),
            hour <= 23, minute <= 59, second <= 60
        else { return nil }

        var index = 19
        var micros: Int64 = 0
        if byte(index, is: ".") {
            index += 1
            let start = index
            while index < utf8.count, utf8[index] &- UInt8(ascii: "0") <= 9 { index += 1 }
            let digits = index - start
            guard (1...9).contains(digits) else { return nil }
            for position in 0..<6 {
                micros = micros * 10 + (position < digits ? Int64(utf8[start + position] - UInt8(ascii: "0")) : 0)
            }
            if digits > 6, utf8[start + 6] >= UInt8(ascii: "5") { micros += 1 }
        }

        var offsetSeconds: Int64 = 0
        if byte(index, is: "Z", or: "z") {
            guard index + 1 == utf8.count else { return nil }
        } else {
            guard byte(index, is: "+", or: "-"), let offsetHour = number(index + 1..<index + 3),
                byte(index + 3, is: ":"),
                let offsetMinute = number(index + 4..<index + 6), index + 6 == utf8.count,
                offsetHour <= 23, offsetMinute <= 59
            else { return nil }
            offsetSeconds = (offsetHour * 3600 + offsetMinute * 60) * (utf8[index] == UInt8(ascii: "-") ? -1 : 1)
        }

        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        return seconds * 1_000_000 + micros
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
