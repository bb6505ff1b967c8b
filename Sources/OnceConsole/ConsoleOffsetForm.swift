import Foundation

/// Reads the offset planner's form: the scope (`all`, or `TOPIC` / `TOPIC:0,2` items separated
/// by blanks or `;`), and the target's value (an offset, an RFC 3339 time, ±N, or a duration
/// such as `PT30M`, `30m`, `2h`, `1d`). Pure functions; a bad field is a `ConsoleFormError`
/// naming it.
enum ConsoleOffsetForm {
    /// The topics and partitions named; empty for `all` (or nothing).
    static func items(_ text: String) throws -> [(topic: String, partitions: [Int32]?)] {
        let words = text.split { $0 == ";" || $0.isWhitespace }.map(String.init)
        if words.isEmpty || words == ["all"] || words == ["--all-topics"] { return [] }
        return try words.map { word in
            let parts = word.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let topic = String(parts[0])
            guard Self.isTopicName(topic) else { throw ConsoleFormError("scope: “\(word)” does not start with a topic name") }
            guard parts.count == 2 else { return (topic, nil) }
            var partitions: [Int32] = []
            for item in parts[1].split(separator: ",", omittingEmptySubsequences: false) {
                guard let partition = Int32(item), partition >= 0 else {
                    throw ConsoleFormError("scope: “\(word)”: “\(item)” is not a partition number")
                }
                partitions.append(partition)
            }
            return (topic, partitions)
        }
    }

    /// Kafka's topic names: 1 to 249 of `A-Z a-z 0-9 . _ -`.
    static func isTopicName(_ text: String) -> Bool {
        (1...249).contains(text.utf8.count)
            && text.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "._-".unicodeScalars.contains($0) }
    }

    static func integer(_ text: String, field: String) throws -> Int64 {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let value = Int64(trimmed.hasPrefix("+") ? String(trimmed.dropFirst()) : trimmed) else {
            throw ConsoleFormError("\(field): “\(text)” is not a whole number")
        }
        return value
    }

    /// Milliseconds since the epoch of an RFC 3339 time.
    static func milliseconds(_ text: String) throws -> Int64 {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var date = formatter.date(from: trimmed)
        if date == nil {
            formatter.formatOptions = [.withInternetDateTime]
            date = formatter.date(from: trimmed)
        }
        guard let date else { throw ConsoleFormError("date-time: “\(text)” is not an RFC 3339 time such as 2026-12-02T05:00:00Z") }
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// `PT30M`, `P1DT2H`, `PT1.5S`, or `30m`, `2h`, `1d`, `45s`.
    static func duration(_ text: String) throws -> Duration {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let failure = ConsoleFormError("duration: “\(text)” is not a duration such as PT30M, P1D, 30m or 2h")
        if let last = trimmed.last, "smhd".contains(last), let amount = Double(trimmed.dropLast()), amount >= 0 {
            let unit: Double = last == "s" ? 1 : last == "m" ? 60 : last == "h" ? 3600 : 86_400
            return .milliseconds(Int64((amount * unit * 1000).rounded()))
        }
        let upper = trimmed.uppercased()
        guard upper.hasPrefix("P"), upper.count > 1 else { throw failure }
        var seconds = 0.0
        var number = ""
        var inTime = false
        var any = false
        for character in upper.dropFirst() {
            if character == "T" {
                guard !inTime, number.isEmpty else { throw failure }
                inTime = true
                continue
            }
            if character.isNumber || character == "." || character == "," {
                number.append(character == "," ? "." : character)
                continue
            }
            guard let value = Double(number) else { throw failure }
            number = ""
            any = true
            switch (character, inTime) {
            case ("W", false): seconds += value * 7 * 86_400
            case ("D", false): seconds += value * 86_400
            case ("H", true): seconds += value * 3600
            case ("M", true): seconds += value * 60
            case ("S", true): seconds += value
            default: throw failure
            }
        }
        guard any, number.isEmpty else { throw failure }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    /// One plan row as one form value: its fields joined by `|`,
    /// each part percent-encoded; `current` empty for "nothing stored".
    static func encodeFields(_ fields: [String]) -> String {
        fields.map(ConsoleForm.encode).joined(separator: "|")
    }

    static func decodeFields(_ value: String, count: Int) throws -> [String] {
        let parts = value.split(separator: "|", omittingEmptySubsequences: false).map { ConsoleForm.decode($0) }
        guard parts.count == count else { throw ConsoleFormError("a plan row is malformed; plan again") }
        return parts
    }
}

/// A form field the console cannot read; the description names it and says what it expects.
struct ConsoleFormError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
