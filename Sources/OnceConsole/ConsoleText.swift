import Foundation
import OnceJSON
import OnceOperations

/// How the console writes times, ages, payloads and relative durations. Pure functions.
enum ConsoleText {
    /// `2026-12-02 05:30:12Z`.
    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date).replacingOccurrences(of: "T", with: " ")
    }

    /// `4s ago`, `3m ago`, `2h ago`, `5d ago`.
    static func ago(seconds: Double) -> String {
        let whole = max(0, Int(seconds))
        switch whole {
        case ..<60: return "\(whole)s ago"
        case ..<3600: return "\(whole / 60)m ago"
        case ..<86_400: return "\(whole / 3600)h ago"
        default: return "\(whole / 86_400)d ago"
        }
    }

    /// An RFC 3339 time, or an age such as `30m`, `2h`, `1d`, `45s` before `now`; nil otherwise.
    static func instant(_ text: String, now: Date = Date()) -> Date? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let last = trimmed.last, let amount = Double(trimmed.dropLast()), amount >= 0 {
            let unit: Double? =
                switch last {
                case "s": 1
                case "m": 60
                case "h": 3600
                case "d": 86_400
                default: nil
                }
            if let unit { return now.addingTimeInterval(-amount * unit) }
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: trimmed) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: trimmed)
    }

    /// A payload for a `<pre>`: pretty JSON when it parses, else a hex dump; with a summary.
    static func payload(_ bytes: [UInt8]?) -> (summary: String, text: String) {
        guard let bytes else { return ("(no value)", "") }
        if let document = try? JSONParser.parse(bytes) {
            return ("\(bytes.count) bytes, JSON", PayloadText.prettyJSON(document))
        }
        if let text = String(validating: bytes, as: UTF8.self), !text.unicodeScalars.contains(where: { $0.value < 9 }) {
            return ("\(bytes.count) bytes, text, not JSON", text)
        }
        return ("\(bytes.count) bytes, binary", PayloadText.hexDump(bytes))
    }

    /// `text` on one line, at most `limit` characters.
    static func clipped(_ text: String, _ limit: Int) -> String {
        let flat = text.split(whereSeparator: \.isNewline).joined(separator: " ")
        return flat.count <= limit ? flat : String(flat.prefix(limit - 1)) + "…"
    }
}
