import Foundation

/// A statement parameter, always sent bound (never spliced into SQL) with an explicit type OID.
///
/// Scalars travel in PostgreSQL's text format, `bytea` and arrays in binary format. `.null` has no
/// type of its own: the server takes the parameter's type from the statement. Text values must
/// not contain NUL characters (PostgreSQL text cannot hold them); such a parameter makes the call
/// throw `PostgresError` of kind `.invalidUse` before anything is sent.
public enum PostgresValue: Sendable, Hashable {
    case null
    case text(String)
    case int32(Int32)
    case int64(Int64)
    case bool(Bool)
    case double(Double)
    /// Sent in binary format.
    case bytea([UInt8])
    /// Sent as UTC with microsecond precision (sub-microsecond parts are rounded).
    case timestamptz(Date)
    /// A one-dimensional `text[]`; nil elements are SQL NULL.
    case textArray([String?])
    /// A one-dimensional `bigint[]`; nil elements are SQL NULL.
    case int64Array([Int64?])
    /// A JSON document in text form, typed `jsonb`.
    case jsonb(String)

    /// An `Int` sent as `bigint`.
    public static func int(_ value: Int) -> PostgresValue { .int64(Int64(value)) }

    /// The type OID sent for this value (0 lets the server infer it).
    public var typeOID: UInt32 {
        switch self {
        case .null: return 0
        case .text: return PostgresTypeOID.text
        case .int32: return PostgresTypeOID.int4
        case .int64: return PostgresTypeOID.int8
        case .bool: return PostgresTypeOID.bool
        case .double: return PostgresTypeOID.float8
        case .bytea: return PostgresTypeOID.bytea
        case .timestamptz: return PostgresTypeOID.timestamptz
        case .textArray: return PostgresTypeOID.textArray
        case .int64Array: return PostgresTypeOID.int8Array
        case .jsonb: return PostgresTypeOID.jsonb
        }
    }
}

extension PostgresValue {
    public init(_ value: String?) { self = value.map { .text($0) } ?? .null }
    public init(_ value: Int?) { self = value.map { .int64(Int64($0)) } ?? .null }
    public init(_ value: Int64?) { self = value.map { .int64($0) } ?? .null }
    public init(_ value: Int32?) { self = value.map { .int32($0) } ?? .null }
    public init(_ value: Bool?) { self = value.map { .bool($0) } ?? .null }
    public init(_ value: Double?) { self = value.map { .double($0) } ?? .null }
    public init(_ value: [UInt8]?) { self = value.map { .bytea($0) } ?? .null }
    public init(_ value: Date?) { self = value.map { .timestamptz($0) } ?? .null }
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int64(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
}

/// Type OIDs of the built-in types this module sends or checks.
public enum PostgresTypeOID {
    public static let bool: UInt32 = 16
    public static let bytea: UInt32 = 17
    public static let int8: UInt32 = 20
    public static let int2: UInt32 = 21
    public static let int4: UInt32 = 23
    public static let text: UInt32 = 25
    public static let float8: UInt32 = 701
    public static let textArray: UInt32 = 1009
    public static let int8Array: UInt32 = 1016
    public static let timestamp: UInt32 = 1114
    public static let timestamptz: UInt32 = 1184
    public static let jsonb: UInt32 = 3802
}

// MARK: - Text encodings

extension PostgresValue {
    /// Appends the wire form of a non-NULL value to `buffer` and returns (format, length);
    /// returns nil for `.null`. Text forms are followed by a NUL terminator that is not counted.
    func encode(into buffer: inout [UInt8], parameterIndex: Int) throws -> (format: Int32, length: Int)? {
        switch self {
        case .null:
            return nil
        case .bytea(let bytes):
            buffer.append(contentsOf: bytes)
            buffer.append(0)  // keeps the pointer non-NULL for an empty value
            return (1, bytes.count)
        case .text(let string), .jsonb(let string):
            return try appendText(string, to: &buffer, parameterIndex: parameterIndex)
        case .int32(let value):
            return try appendText(String(value), to: &buffer, parameterIndex: parameterIndex)
        case .int64(let value):
            return try appendText(String(value), to: &buffer, parameterIndex: parameterIndex)
        case .bool(let value):
            return try appendText(value ? "t" : "f", to: &buffer, parameterIndex: parameterIndex)
        case .double(let value):
            return try appendText(PostgresTextFormat.double(value), to: &buffer, parameterIndex: parameterIndex)
        case .timestamptz(let date):
            let text = try PostgresTextFormat.timestamp(date, parameterIndex: parameterIndex)
            return try appendText(text, to: &buffer, parameterIndex: parameterIndex)
        case .textArray(let elements):
            let start = buffer.count
            try PostgresBinaryArray.append(elements, elementOID: PostgresTypeOID.text, to: &buffer) { element, buffer in
                let from = buffer.count
                buffer.append(contentsOf: element.utf8)
                if buffer[from...].contains(0) {
                    throw PostgresError.invalidUse("parameter $\(parameterIndex + 1) contains a NUL character")
                }
            }
            return (1, buffer.count - start)
        case .int64Array(let elements):
            let start = buffer.count
            PostgresBinaryArray.append(elements, elementOID: PostgresTypeOID.int8, to: &buffer) { element, buffer in
                PostgresBinaryArray.appendBigEndian(UInt64(bitPattern: element), to: &buffer)
            }
            return (1, buffer.count - start)
        }
    }

    private func appendText(
        _ string: String,
        to buffer: inout [UInt8],
        parameterIndex: Int
    ) throws -> (format: Int32, length: Int) {
        let start = buffer.count
        buffer.append(contentsOf: string.utf8)
        let length = buffer.count - start
        if buffer[start...].contains(0) {
            throw PostgresError.invalidUse("parameter $\(parameterIndex + 1) contains a NUL character")
        }
        buffer.append(0)
        return (0, length)
    }
}

/// PostgreSQL's binary format of a one-dimensional array (`array_recv`): the server reads each
/// element by its length, with nothing to unquote or unescape.
enum PostgresBinaryArray {
    static func append<Element>(
        _ elements: [Element?], elementOID: UInt32, to buffer: inout [UInt8],
        element appendElement: (Element, inout [UInt8]) throws -> Void
    ) rethrows {
        let empty = elements.isEmpty
        appendBigEndian(UInt32(empty ? 0 : 1), to: &buffer)  // dimensions
        appendBigEndian(UInt32(elements.contains { $0 == nil } ? 1 : 0), to: &buffer)  // has NULLs
        appendBigEndian(elementOID, to: &buffer)
        guard !empty else { return }
        appendBigEndian(UInt32(elements.count), to: &buffer)
        appendBigEndian(UInt32(1), to: &buffer)  // lower bound
        for element in elements {
            guard let element else {
                appendBigEndian(UInt32(bitPattern: -1), to: &buffer)
                continue
            }
            let lengthAt = buffer.count
            appendBigEndian(UInt32(0), to: &buffer)
            try appendElement(element, &buffer)
            let length = UInt32(buffer.count - lengthAt - 4)
            for shift in 0..<4 { buffer[lengthAt + shift] = UInt8(truncatingIfNeeded: length >> (24 - 8 * shift)) }
        }
    }

    static func appendBigEndian<Integer: FixedWidthInteger & UnsignedInteger>(_ value: Integer, to buffer: inout [UInt8]) {
        let bytes = Integer.bitWidth / 8
        for shift in stride(from: bytes - 1, through: 0, by: -1) {
            buffer.append(UInt8(truncatingIfNeeded: value >> (8 * shift)))
        }
    }
}

/// Formatting and parsing of PostgreSQL's text representations (pure functions, no libpq).
enum PostgresTextFormat {
    static func double(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == .infinity { return "Infinity" }
        if value == -.infinity { return "-Infinity" }
        return String(value)  // shortest representation that round-trips
    }

    // MARK: Timestamps

    /// `YYYY-MM-DD HH:MM:SS.ffffff+00` (with ` BC` for years before 1), microseconds, UTC.
    static func timestamp(_ date: Date, parameterIndex: Int) throws -> String {
        let seconds = date.timeIntervalSince1970
        // PostgreSQL's range ends in 294276 AD; anything beyond ±9e12 s is out of it anyway.
        guard seconds.isFinite, abs(seconds) < 9e12 else {
            throw PostgresError.invalidUse("parameter $\(parameterIndex + 1) is a date outside PostgreSQL's range")
        }
        let micros = Int64((seconds * 1_000_000).rounded())
        let microsPerDay: Int64 = 86_400_000_000
        let days = micros >= 0 ? micros / microsPerDay : -((-micros + microsPerDay - 1) / microsPerDay)
        let inDay = micros - days * microsPerDay
        let (year, month, day) = civilDate(fromDaysSinceEpoch: days)
        let second = inDay / 1_000_000
        let fraction = inDay % 1_000_000
        let bc = year <= 0
        let shownYear = bc ? 1 - year : year
        var text = pad(shownYear, 4) + "-" + pad(month, 2) + "-" + pad(day, 2)
        text += " " + pad(second / 3600, 2) + ":" + pad(second / 60 % 60, 2) + ":" + pad(second % 60, 2)
        text += "." + pad(fraction, 6) + "+00"
        if bc { text += " BC" }
        return text
    }

    /// Parses PostgreSQL's ISO output of `timestamptz`, `timestamp` (taken as UTC) or `date`:
    /// `YYYY-MM-DD[ HH:MM:SS[.f…]][±HH[:MM[:SS]]][ BC]`.
    static func parseTimestamp(_ bytes: ArraySlice<UInt8>) -> Date? {
        var scanner = ByteScanner(bytes)
        guard var year = scanner.number(), scanner.take(UInt8(ascii: "-")),
            let month = scanner.number(digits: 2), scanner.take(UInt8(ascii: "-")),
            let day = scanner.number(digits: 2)
        else { return nil }
        var secondsOfDay: Int64 = 0
        var micros: Int64 = 0
        let beforeTime = scanner
        if scanner.take(UInt8(ascii: " ")), let hour = scanner.number(digits: 2) {
            guard scanner.take(UInt8(ascii: ":")), let minute = scanner.number(digits: 2),
                scanner.take(UInt8(ascii: ":")), let second = scanner.number(digits: 2)
            else { return nil }
            secondsOfDay = hour * 3600 + minute * 60 + second
            if scanner.take(UInt8(ascii: ".")) {
                var scale: Int64 = 100_000
                var any = false
                while let digit = scanner.digit() {
                    any = true
                    micros += digit * scale
                    scale /= 10
                }
                guard any else { return nil }
            }
            if let sign = scanner.peek(), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                scanner.advance()
                guard let offsetHours = scanner.number(digits: 2) else { return nil }
                var offset = offsetHours * 3600
                if scanner.take(UInt8(ascii: ":")) {
                    guard let minutes = scanner.number(digits: 2) else { return nil }
                    offset += minutes * 60
                    if scanner.take(UInt8(ascii: ":")) {
                        guard let seconds = scanner.number(digits: 2) else { return nil }
                        offset += seconds
                    }
                }
                secondsOfDay -= sign == UInt8(ascii: "+") ? offset : -offset
            }
        } else {
            scanner = beforeTime
        }
        if scanner.take(UInt8(ascii: " ")) {
            guard scanner.take(UInt8(ascii: "B")), scanner.take(UInt8(ascii: "C")) else { return nil }
            year = 1 - year
        }
        guard scanner.atEnd, (1...12).contains(month), (1...31).contains(day) else { return nil }
        let days = daysSinceEpoch(year: year, month: month, day: day)
        let seconds = Double(days * 86_400 + secondsOfDay)
        return Date(timeIntervalSince1970: seconds + Double(micros) / 1_000_000)
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func daysSinceEpoch(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (year 0 is 1 BC).
    static func civilDate(fromDaysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    // MARK: Arrays

    /// Parses the text output of a one-dimensional array into its elements' text (nil for NULL).
    /// Accepts the `[lower:upper]=` prefix PostgreSQL writes for arrays not starting at 1.
    static func parseArray(_ bytes: ArraySlice<UInt8>) throws -> [ArraySlice<UInt8>?] {
        var index = bytes.startIndex
        if index < bytes.endIndex, bytes[index] == UInt8(ascii: "[") {
            guard let equals = bytes.firstIndex(of: UInt8(ascii: "=")) else {
                throw PostgresValueFormatError("malformed array bounds")
            }
            index = equals + 1
        }
        guard index < bytes.endIndex, bytes[index] == UInt8(ascii: "{"),
            bytes.last == UInt8(ascii: "}")
        else {
            throw PostgresValueFormatError("not an array literal")
        }
        index += 1
        let end = bytes.endIndex - 1
        var elements: [ArraySlice<UInt8>?] = []
        if index == end { return elements }
        while true {
            guard index < end else { throw PostgresValueFormatError("malformed array literal") }
            var element: [UInt8] = []
            var quoted = false
            if bytes[index] == UInt8(ascii: "{") {
                throw PostgresValueFormatError("multidimensional arrays are not supported")
            }
            if bytes[index] == UInt8(ascii: "\"") {
                quoted = true
                index += 1
                while true {
                    guard index < end else { throw PostgresValueFormatError("unterminated quoted array element") }
                    let byte = bytes[index]
                    if byte == UInt8(ascii: "\"") {
                        index += 1
                        break
                    }
                    if byte == UInt8(ascii: "\\") {
                        index += 1
                        guard index < end else { throw PostgresValueFormatError("dangling escape in array") }
                    }
                    element.append(bytes[index])
                    index += 1
                }
            } else {
                while index < end, bytes[index] != UInt8(ascii: ",") {
                    if bytes[index] == UInt8(ascii: "\\") {
                        index += 1
                        guard index < end else { throw PostgresValueFormatError("dangling escape in array") }
                    }
                    element.append(bytes[index])
                    index += 1
                }
            }
            let isNull =
                !quoted && element.count == 4 && String(decoding: element, as: UTF8.self).uppercased() == "NULL"
            elements.append(isNull ? nil : element[...])
            if index == end { return elements }
            guard bytes[index] == UInt8(ascii: ",") else { throw PostgresValueFormatError("malformed array literal") }
            index += 1
        }
    }

    // MARK: bytea

    /// Parses bytea's hex output `\x0a1b…`.
    static func parseByteaHex(_ bytes: ArraySlice<UInt8>) throws -> [UInt8] {
        guard bytes.count >= 2, bytes.first == UInt8(ascii: "\\"),
            bytes[bytes.startIndex + 1] == UInt8(ascii: "x"), bytes.count % 2 == 0
        else {
            throw PostgresValueFormatError("bytea is not in hex output format")
        }
        // Digits are looked up in a table: the relay decodes every payload it reads this way.
        let count = (bytes.count - 2) / 2
        var valid = true
        let result = bytes.withUnsafeBufferPointer { text in
            [UInt8](unsafeUninitializedCapacity: count) { output, initialized in
                var invalid: UInt8 = 0
                for index in 0..<count {
                    let high = hexDigits[Int(text[2 + 2 * index])]
                    let low = hexDigits[Int(text[3 + 2 * index])]
                    invalid |= high | low
                    output[index] = high << 4 | low
                }
                valid = invalid & 0x80 == 0
                initialized = count
            }
        }
        guard valid else { throw PostgresValueFormatError("bytea has a non-hex digit") }
        return result
    }

    /// Each byte's value as a hex digit, or 0x80 when it is not one.
    private static let hexDigits: [UInt8] = (0...255).map { byte in
        switch UInt8(byte) {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt8(byte) - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt8(byte) - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt8(byte) - UInt8(ascii: "A") + 10
        default: return 0x80
        }
    }

    // MARK: Integers

    /// Parses an optionally signed decimal integer, rejecting overflow.
    static func parseInteger(_ bytes: ArraySlice<UInt8>) -> Int64? {
        var index = bytes.startIndex
        guard index < bytes.endIndex else { return nil }
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative || bytes[index] == UInt8(ascii: "+") { index += 1 }
        guard index < bytes.endIndex else { return nil }
        var value: Int64 = 0
        while index < bytes.endIndex {
            let byte = bytes[index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let digit = Int64(byte - UInt8(ascii: "0"))
            // Accumulate negatively so that Int64.min parses.
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = times10.subtractingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        if negative { return value }
        return value == .min ? nil : -value
    }
}

/// A cursor over ASCII bytes for the small parsers above.
struct ByteScanner {
    private let bytes: ArraySlice<UInt8>
    private var index: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    var atEnd: Bool { index == bytes.endIndex }

    func peek() -> UInt8? { atEnd ? nil : bytes[index] }

    mutating func advance() { index += 1 }

    mutating func take(_ byte: UInt8) -> Bool {
        guard peek() == byte else { return false }
        index += 1
        return true
    }

    mutating func digit() -> Int64? {
        guard let byte = peek(), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
        index += 1
        return Int64(byte - UInt8(ascii: "0"))
    }

    /// Exactly `digits` digits, or (when nil) one or more, up to 9.
    mutating func number(digits: Int? = nil) -> Int64? {
        var value: Int64 = 0
        var count = 0
        let limit = digits ?? 9
        while count < limit, let digit = digit() {
            value = value * 10 + digit
            count += 1
        }
        if let digits { return count == digits ? value : nil }
        return count > 0 ? value : nil
    }
}
