/// Why a byte sequence is not a JSON document, and where the parser noticed.
///
/// `offset` is the zero-based byte offset into the input; `description` reads like
/// `invalid JSON at byte 17: expected ',' or '}'` and is what operators see in a dead letter.
public struct JSONParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The broken rule. The raw value is the short human-readable reason.
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        case emptyInput = "empty input"
        case unexpectedEnd = "unexpected end of input"
        case expectedValue = "expected a value"
        case expectedKey = "expected a string key"
        case expectedColon = "expected ':'"
        case expectedCommaOrEndOfArray = "expected ',' or ']'"
        case expectedCommaOrEndOfObject = "expected ',' or '}'"
        case trailingData = "unexpected data after the JSON value"
        case invalidLiteral = "invalid literal"
        case invalidNumber = "invalid number"
        case numberOutOfRange = "number out of range"
        case unterminatedString = "unterminated string"
        case controlCharacterInString = "unescaped control character in string"
        case invalidEscape = "invalid escape sequence"
        case invalidUnicodeEscape = "invalid \\u escape"
        case unpairedSurrogate = "unpaired UTF-16 surrogate in \\u escape"
        case invalidUTF8 = "invalid UTF-8"
        case tooDeep = "nesting too deep"
    }

    /// Zero-based byte offset into the input where the problem was found.
    public var offset: Int
    /// The broken rule.
    public var reason: Reason

    public init(offset: Int, reason: Reason) {
        self.offset = offset
        self.reason = reason
    }

    public var description: String {
        "invalid JSON at byte \(offset): \(reason.rawValue)"
    }
}

/// A strict RFC 8259 parser.
///
/// Exactly one value, optionally surrounded by whitespace. Strings must be valid UTF-8 without raw
/// control characters; every escape is decoded, `\u` surrogate pairs are combined and unpaired
/// surrogates rejected. Numbers follow the grammar (no leading zeros, no `+`, no `NaN`); numbers
/// that overflow a `Double` are rejected. Nesting deeper than `maximumDepth` arrays and objects is
/// rejected. When an object repeats a key, the last value wins.
///
/// The parser walks a contiguous buffer with a byte cursor; strings without escapes are built
/// straight from the input bytes.
public enum JSONParser {
    /// The deepest nesting of arrays and objects accepted.
    public static let maximumDepth = 512

    /// Parses one JSON document.
    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        let result = bytes.withContiguousStorageIfAvailable { buffer in
            parseResult(UnsafeRawBufferPointer(buffer))
        }
        switch result ?? ContiguousArray(bytes).withUnsafeBytes({ parseResult($0) }) {
        case .success(let value): return value
        case .failure(let error): throw error
        }
    }

    /// Parses one JSON document from raw memory, e.g. a Kafka message payload that has not been
    /// copied yet. The buffer is only read during the call.
    public static func parse(_ buffer: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        try parseResult(buffer).get()
    }

    /// Parses the UTF-8 text of `text`.
    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var text = text
        return try text.withUTF8 { parseResult(UnsafeRawBufferPointer($0)) }.get()
    }

    // `withContiguousStorageIfAvailable` rethrows untyped errors, so the work inside it reports
    // through a `Result` to keep the public signature's typed throw.
    private static func parseResult(_ buffer: UnsafeRawBufferPointer) -> Result<JSONValue, JSONParseError> {
        var cursor = JSONCursor(buffer)
        do throws(JSONParseError) {
            return .success(try cursor.parseDocument())
        } catch {
            return .failure(error)
        }
    }
}

// MARK: - Cursor

private enum ASCII {
    static let tab: UInt8 = 0x09
    static let newline: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D
    static let space: UInt8 = 0x20
    static let quote: UInt8 = 0x22
    static let plus: UInt8 = 0x2B
    static let comma: UInt8 = 0x2C
    static let minus: UInt8 = 0x2D
    static let period: UInt8 = 0x2E
    static let slash: UInt8 = 0x2F
    static let zero: UInt8 = 0x30
    static let nine: UInt8 = 0x39
    static let colon: UInt8 = 0x3A
    static let upperE: UInt8 = 0x45
    static let openBracket: UInt8 = 0x5B
    static let backslash: UInt8 = 0x5C
    static let closeBracket: UInt8 = 0x5D
    static let lowerA: UInt8 = 0x61
    static let lowerB: UInt8 = 0x62
    static let lowerE: UInt8 = 0x65
    static let lowerF: UInt8 = 0x66
    static let lowerN: UInt8 = 0x6E
    static let lowerR: UInt8 = 0x72
    static let lowerT: UInt8 = 0x74
    static let lowerU: UInt8 = 0x75
    static let openBrace: UInt8 = 0x7B
    static let closeBrace: UInt8 = 0x7D
}

/// The parser state: a read position over borrowed bytes, the nesting depth, and buffers reused
/// during one `parse` call: a scratch buffer for strings that contain escapes, and stacks that
/// collect the members of the open objects and the elements of the open arrays, so that each
/// container is allocated once at its final size instead of growing (and rehashing) as it fills.
private struct JSONCursor {
    let bytes: UnsafeRawBufferPointer
    let end: Int
    var position = 0
    var depth = 0
    var scratch: [UInt8] = []
    var pendingMembers: [(key: String, value: JSONValue)] = []
    var pendingElements: [JSONValue] = []

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        self.end = bytes.count
    }

    @inline(__always)
    func fail(_ reason: JSONParseError.Reason, at offset: Int) -> JSONParseError {
        JSONParseError(offset: offset, reason: reason)
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while position < end {
            switch bytes[position] {
            case ASCII.space, ASCII.newline, ASCII.carriageReturn, ASCII.tab:
                position += 1
            default:
                return
            }
        }
    }

    mutating func parseDocument() throws(JSONParseError) -> JSONValue {
        skipWhitespace()
        guard position < end else { throw fail(.emptyInput, at: position) }
        let value = try parseValue()
        skipWhitespace()
        guard position == end else { throw fail(.trailingData, at: position) }
        return value
    }

    /// Parses a value starting at the current position (whitespace already skipped).
    mutating func parseValue() throws(JSONParseError) -> JSONValue {
        guard position < end else { throw fail(.unexpectedEnd, at: position) }
        switch bytes[position] {
        case ASCII.quote:
            return .string(try parseString())
        case ASCII.openBrace:
            return try parseObject()
        case ASCII.openBracket:
            return try parseArray()
        case ASCII.minus, ASCII.zero...ASCII.nine:
            return try parseNumber()
        case ASCII.lowerT:
            try expectLiteral("true")
            return .bool(true)
        case ASCII.lowerF:
            try expectLiteral("false")
            return .bool(false)
        case ASCII.lowerN:
            try expectLiteral("null")
            return .null
        default:
            throw fail(.expectedValue, at: position)
        }
    }

    mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let start = position
        let count = literal.utf8CodeUnitCount
        guard end - position >= count else { throw fail(.invalidLiteral, at: start) }
        let expected = literal.utf8Start
        for i in 0..<count where bytes[position + i] != expected[i] {
            throw fail(.invalidLiteral, at: start)
        }
        position += count
    }

    // MARK: Containers

    mutating func enterContainer() throws(JSONParseError) {
        depth += 1
        guard depth <= JSONParser.maximumDepth else { throw fail(.tooDeep, at: position) }
        position += 1  // the opening bracket or brace
    }

    mutating func parseArray() throws(JSONParseError) -> JSONValue {
        try enterContainer()
        defer { depth -= 1 }
        skipWhitespace()
        if position < end, bytes[position] == ASCII.closeBracket {
            position += 1
            return .array([])
        }
        let first = pendingElements.count
        defer { pendingElements.removeSubrange(first...) }
        while true {
            skipWhitespace()
            let element = try parseValue()
            pendingElements.append(element)
            skipWhitespace()
            guard position < end else { throw fail(.unexpectedEnd, at: position) }
            switch bytes[position] {
            case ASCII.comma:
                position += 1
            case ASCII.closeBracket:
                position += 1
                return .array(Array(pendingElements[first...]))
            default:
                throw fail(.expectedCommaOrEndOfArray, at: position)
            }
        }
    }

    mutating func parseObject() throws(JSONParseError) -> JSONValue {
        try enterContainer()
        defer { depth -= 1 }
        skipWhitespace()
        if position < end, bytes[position] == ASCII.closeBrace {
            position += 1
            return .object([:])
        }
        let first = pendingMembers.count
        defer { pendingMembers.removeSubrange(first...) }
        while true {
            skipWhitespace()
            guard position < end else { throw fail(.unexpectedEnd, at: position) }
            guard bytes[position] == ASCII.quote else { throw fail(.expectedKey, at: position) }
            let key = try parseString()
            skipWhitespace()
            guard position < end else { throw fail(.unexpectedEnd, at: position) }
            guard bytes[position] == ASCII.colon else { throw fail(.expectedColon, at: position) }
            position += 1
            skipWhitespace()
            let value = try parseValue()
            pendingMembers.append((key, value))
            skipWhitespace()
            guard position < end else { throw fail(.unexpectedEnd, at: position) }
            switch bytes[position] {
            case ASCII.comma:
                position += 1
            case ASCII.closeBrace:
                position += 1
                var members = [String: JSONValue](minimumCapacity: pendingMembers.count - first)
                for (key, value) in pendingMembers[first...] {
                    members[key] = value  // a repeated key: the last value wins
                }
                return .object(members)
            default:
                throw fail(.expectedCommaOrEndOfObject, at: position)
            }
        }
    }

    // MARK: Numbers

    @inline(__always)
    func isDigit(at index: Int) -> Bool {
        index < end && (ASCII.zero...ASCII.nine).contains(bytes[index])
    }

    mutating func skipDigits() {
        while isDigit(at: position) { position += 1 }
    }

    mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = position
        let negative = bytes[position] == ASCII.minus
        if negative { position += 1 }

        let integerStart = position
        guard isDigit(at: position) else { throw fail(.invalidNumber, at: start) }
        if bytes[position] == ASCII.zero {
            position += 1
            // RFC 8259: no leading zeros.
            if isDigit(at: position) { throw fail(.invalidNumber, at: start) }
        } else {
            skipDigits()
        }
        let integerEnd = position

        var isInteger = true
        if position < end, bytes[position] == ASCII.period {
            isInteger = false
            position += 1
            guard isDigit(at: position) else { throw fail(.invalidNumber, at: start) }
            skipDigits()
        }
        if position < end, bytes[position] == ASCII.lowerE || bytes[position] == ASCII.upperE {
            isInteger = false
            position += 1
            if position < end, bytes[position] == ASCII.plus || bytes[position] == ASCII.minus {
                position += 1
            }
            guard isDigit(at: position) else { throw fail(.invalidNumber, at: start) }
            skipDigits()
        }

        if isInteger, let value = integerValue(digits: integerStart..<integerEnd, negative: negative) {
            return .integer(value)
        }
        // The grammar is checked above; the standard library does the correctly rounded decimal
        // conversion. The text is at most a few dozen bytes in practice (a small string).
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { throw fail(.numberOutOfRange, at: start) }
        return .number(value)
    }

    /// The digits as an `Int64`, or `nil` when the value does not fit. Accumulates towards the
    /// sign so that `Int64.min` is reachable.
    func integerValue(digits: Range<Int>, negative: Bool) -> Int64? {
        var value: Int64 = 0
        if digits.count <= 18 {
            // At most 999_999_999_999_999_999: cannot overflow.
            for index in digits {
                let digit = Int64(bytes[index] &- ASCII.zero)
                value = negative ? value &* 10 &- digit : value &* 10 &+ digit
            }
            return value
        }
        for index in digits {
            let digit = Int64(bytes[index] &- ASCII.zero)
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) =
                negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            if overflow1 || overflow2 { return nil }
            value = next
        }
        return value
    }

    // MARK: Strings

    /// Parses a string starting at its opening quote and leaves the position after the closing one.
    mutating func parseString() throws(JSONParseError) -> String {
        let open = position
        position += 1
        let start = position
        // Fast path: no escapes, so the string is the input bytes themselves. Plain ASCII is
        // skipped eight bytes at a time; any word that may hold a byte needing attention falls
        // through to the byte loop.
        while end - position >= 8 {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self))
            if Self.mayNeedAttention(word) { break }
            position += 8
        }
        while position < end {
            let byte = bytes[position]
            if byte == ASCII.quote {
                let text = String(
                    decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
                position += 1
                return text
            }
            if byte == ASCII.backslash {
                return try parseEscapedString(open: open, start: start)
            }
            if byte < ASCII.space {
                throw fail(.controlCharacterInString, at: position)
            }
            if byte < 0x80 {
                position += 1
            } else {
                position += try validateUTF8Sequence(at: position)
            }
        }
        throw fail(.unterminatedString, at: open)
    }

    /// Whether any byte of `word` may be a quote, a backslash, a control character or non-ASCII.
    /// Never misses one; may report a false positive, which only costs the byte loop.
    @inline(__always)
    static func mayNeedAttention(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highBits: UInt64 = 0x8080_8080_8080_8080
        // A byte of `x` is zero iff its high bit is set in (x - 0x01…) & ~x (up to borrows).
        func hasZeroByte(_ x: UInt64) -> UInt64 { (x &- ones) & ~x & highBits }
        let quote = hasZeroByte(word ^ (ones &* 0x22))
        let backslash = hasZeroByte(word ^ (ones &* 0x5C))
        let control = (word &- ones &* 0x20) & ~word & highBits
        let nonASCII = word & highBits
        return quote | backslash | control | nonASCII != 0
    }

    /// The slow path: the bytes from `start` up to the current position (a backslash) are plain,
    /// the rest is decoded into the scratch buffer.
    mutating func parseEscapedString(open: Int, start: Int) throws(JSONParseError) -> String {
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: bytes[start..<position])
        while position < end {
            let byte = bytes[position]
            if byte == ASCII.quote {
                position += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if byte == ASCII.backslash {
                try decodeEscape()
            } else if byte < ASCII.space {
                throw fail(.controlCharacterInString, at: position)
            } else if byte < 0x80 {
                scratch.append(byte)
                position += 1
            } else {
                let length = try validateUTF8Sequence(at: position)
                scratch.append(contentsOf: bytes[position..<position + length])
                position += length
            }
        }
        throw fail(.unterminatedString, at: open)
    }

    /// Decodes the escape at the current position (a backslash) into the scratch buffer.
    mutating func decodeEscape() throws(JSONParseError) {
        let escapeStart = position
        position += 1
        guard position < end else { throw fail(.unterminatedString, at: escapeStart) }
        let decoded: UInt8
        switch bytes[position] {
        case ASCII.quote: decoded = ASCII.quote
        case ASCII.backslash: decoded = ASCII.backslash
        case ASCII.slash: decoded = ASCII.slash
        case ASCII.lowerB: decoded = 0x08
        case ASCII.lowerF: decoded = 0x0C
        case ASCII.lowerN: decoded = ASCII.newline
        case ASCII.lowerR: decoded = ASCII.carriageReturn
        case ASCII.lowerT: decoded = ASCII.tab
        case ASCII.lowerU:
            position += 1
            try decodeUnicodeEscape(escapeStart: escapeStart)
            return
        default:
            throw fail(.invalidEscape, at: escapeStart)
        }
        scratch.append(decoded)
        position += 1
    }

    /// Decodes `XXXX` (after `\u`), combining a following `\uXXXX` low surrogate when needed.
    mutating func decodeUnicodeEscape(escapeStart: Int) throws(JSONParseError) {
        let unit = try readHex4(escapeStart: escapeStart)
        let scalar: UInt32
        switch unit {
        case 0xD800...0xDBFF:
            // A high surrogate must be followed immediately by an escaped low surrogate.
            guard end - position >= 2, bytes[position] == ASCII.backslash, bytes[position + 1] == ASCII.lowerU
            else { throw fail(.unpairedSurrogate, at: escapeStart) }
            let lowStart = position
            position += 2
            let low = try readHex4(escapeStart: lowStart)
            guard (0xDC00...0xDFFF).contains(low) else { throw fail(.unpairedSurrogate, at: escapeStart) }
            scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        case 0xDC00...0xDFFF:
            throw fail(.unpairedSurrogate, at: escapeStart)
        default:
            scalar = unit
        }
        appendUTF8(scalar)
    }

    mutating func readHex4(escapeStart: Int) throws(JSONParseError) -> UInt32 {
        guard end - position >= 4 else { throw fail(.invalidUnicodeEscape, at: escapeStart) }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case 0x30...0x39: digit = byte &- 0x30
            case 0x41...0x46: digit = byte &- 0x41 &+ 10
            case 0x61...0x66: digit = byte &- 0x61 &+ 10
            default: throw fail(.invalidUnicodeEscape, at: escapeStart)
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    mutating func appendUTF8(_ scalar: UInt32) {
        switch scalar {
        case 0..<0x80:
            scratch.append(UInt8(scalar))
        case 0x80..<0x800:
            scratch.append(UInt8(0xC0 | scalar >> 6))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            scratch.append(UInt8(0xE0 | scalar >> 12))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        default:
            scratch.append(UInt8(0xF0 | scalar >> 18))
            scratch.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            scratch.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Checks the multi-byte UTF-8 sequence starting at `index` (whose first byte is ≥ 0x80)
    /// against the well-formed byte sequences of the Unicode standard (no overlong forms, no
    /// surrogates, nothing above U+10FFFF) and returns its length.
    func validateUTF8Sequence(at index: Int) throws(JSONParseError) -> Int {
        let lead = bytes[index]
        let length: Int
        var secondRange: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            secondRange = 0xA0...0xBF
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            secondRange = 0x80...0x9F
        case 0xF0:
            length = 4
            secondRange = 0x90...0xBF
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            secondRange = 0x80...0x8F
        default: throw fail(.invalidUTF8, at: index)
        }
        guard end - index >= length, secondRange.contains(bytes[index + 1]) else {
            throw fail(.invalidUTF8, at: index)
        }
        for continuation in (index + 2)..<(index + length) where bytes[continuation] & 0xC0 != 0x80 {
            throw fail(.invalidUTF8, at: index)
        }
        return length
    }
}
