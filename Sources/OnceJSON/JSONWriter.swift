/// Writes compact, deterministic JSON.
///
/// The same `JSONValue` always gives the same bytes, so outbound events can be compared
/// byte-for-byte:
/// - no whitespace;
/// - object keys in ascending order of their UTF-8 bytes (which is code point order);
/// - strings escape `"` and `\` with a backslash and control characters below U+0020 as
///   `\u00XX`; everything else, including non-ASCII, is written as UTF-8;
/// - integers exactly; finite doubles in the shortest form that reads back as the same `Double`
///   (always with a `.` or an exponent, so `.number(5)` reads back as a number, not an integer);
///   a non-finite double, which JSON cannot express, as `null`.
public enum JSONWriter {
    /// The JSON text of `value` as UTF-8 bytes.
    public static func serialize(_ value: JSONValue) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(256)
        write(value, into: &output)
        return output
    }

    /// The JSON text of `value`.
    public static func serializeString(_ value: JSONValue) -> String {
        String(decoding: serialize(value), as: UTF8.self)
    }

    /// Appends the JSON text of `value` to `output`.
    public static func write(_ value: JSONValue, into output: inout [UInt8]) {
        switch value {
        case .null:
            output.append(contentsOf: "null".utf8)
        case .bool(let flag):
            output.append(contentsOf: flag ? "true".utf8 : "false".utf8)
        case .integer(let integer):
            writeInteger(integer, into: &output)
        case .number(let number):
            writeNumber(number, into: &output)
        case .string(let text):
            writeString(text, into: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                write(element, into: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            // Code point order, compared on the UTF-8 bytes (`String.<` would normalize first).
            // Sorting the keys alone and looking each value up again measured cheaper than
            // sorting (key, value) pairs, whose every move retains and releases both.
            let keys = members.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            for (index, key) in keys.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                writeString(key, into: &output)
                output.append(UInt8(ascii: ":"))
                // The key came from `members`, so the lookup cannot fail.
                write(members[key] ?? .null, into: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    /// Appends `text` as a JSON string literal, quotes included.
    public static func writeString(_ text: String, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            var plainStart = 0
            for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == 0x22 || byte == 0x5C {
                output.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[plainStart..<index]))
                plainStart = index + 1
                output.append(UInt8(ascii: "\\"))
                if byte >= 0x20 {
                    output.append(byte)  // `"` or `\`
                } else {
                    output.append(contentsOf: "u00".utf8)
                    output.append(hexDigit(byte >> 4))
                    output.append(hexDigit(byte & 0x0F))
                }
            }
            output.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[plainStart...]))
        }
        output.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? 0x30 + nibble : 0x61 + nibble - 10
    }

    private static func writeInteger(_ integer: Int64, into output: inout [UInt8]) {
        if integer < 0 { output.append(UInt8(ascii: "-")) }
        var magnitude = integer.magnitude
        // 20 digits hold UInt64.max; filled from the right.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var start = 20
            repeat {
                start -= 1
                digits[start] = 0x30 + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            output.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start...]))
        }
    }

    private static func writeNumber(_ number: Double, into output: inout [UInt8]) {
        guard number.isFinite else {
            output.append(contentsOf: "null".utf8)
            return
        }
        // Swift's description is the shortest text that round-trips, e.g. "5.0", "0.1", "1e-07",
        // "1.5e+300"; all of these are valid JSON numbers.
        output.append(contentsOf: number.description.utf8)
    }
}

// MARK: - Text

extension JSONValue: CustomStringConvertible {
    /// The compact, key-sorted JSON text of this value (see `JSONWriter`).
    public var description: String {
        JSONWriter.serializeString(self)
    }
}
