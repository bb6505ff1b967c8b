import Foundation
import OnceJSON

/// How an operator sees a record's bytes, in the command line and the console alike: JSON
/// indented with its keys in order, a `hexdump -C` style dump, plain hex. Pure functions.
public enum PayloadText {
    /// JSON indented by two spaces, keys in order.
    public static func prettyJSON(_ value: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .array(let items) where !items.isEmpty:
            return "[\n" + items.map { inner + prettyJSON($0, indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let members) where !members.isEmpty:
            let lines = members.keys.sorted().map { key in
                inner + JSONWriter.serializeString(.string(key)) + ": " + prettyJSON(members[key]!, indent: inner)
            }
            return "{\n" + lines.joined(separator: ",\n") + "\n\(indent)}"
        default:
            return JSONWriter.serializeString(value)
        }
    }

    /// `hexdump -C` style: offset, 16 bytes in hex, the printable ones as text.
    public static func hexDump(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: bytes.count, by: 16).map { start in
            let chunk = bytes[start..<min(start + 16, bytes.count)]
            var hex = chunk.enumerated().map { index, byte in (index == 8 ? " " : "") + hexByte(byte) }.joined(
                separator: " ")
            hex += String(repeating: " ", count: max(0, 49 - hex.count))
            let text = String(chunk.map { (0x20..<0x7f).contains($0) ? Character(UnicodeScalar($0)) : "." })
            return String(format: "%08x", start) + "  " + hex + " |" + text + "|"
        }.joined(separator: "\n")
    }

    /// Lower-case hex, two digits a byte.
    public static func hex(_ bytes: [UInt8]) -> String { bytes.map(hexByte).joined() }

    private static func hexByte(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]])
    }
}
