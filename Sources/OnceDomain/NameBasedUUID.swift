import Crypto

/// Name-based UUIDs, version 5 (RFC 9562 §5.5): the SHA-1 of a namespace UUID followed by a
/// name, with the version and variant bits set. The same namespace and name always give the
/// same UUID, which is what makes outbound event ids and job ids reproducible.
///
/// SHA-1 is broken for collision resistance, and nothing here relies on it for security: the
/// UUIDs are identifiers that downstream consumers deduplicate on, derived from keys this
/// service chose. RFC 9562 names SHA-1 for version 5; swift-crypto's `Insecure.SHA1` computes it.
public struct NameBasedUUID: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes, in network order.
    public let bytes: [UInt8]

    /// The namespace of everything `once` derives: outbound event ids and job ids.
    /// A fixed random UUID; changing it would change every derived id.
    public static let onceNamespace = NameBasedUUID(parsing: "d1b0be73-2f50-417d-bfcb-67201fd6b823")!

    /// RFC 9562's namespace for domain names, for test vectors.
    public static let dnsNamespace = NameBasedUUID(parsing: "6ba7b810-9dad-11d1-80b4-00c04fd430c8")!

    /// The version-5 UUID of `name` (its UTF-8 bytes) in `namespace`.
    public init(namespace: NameBasedUUID, name: String) {
        var hasher = Insecure.SHA1()
        hasher.update(data: namespace.bytes)
        hasher.update(data: Array(name.utf8))
        var digest = Array(hasher.finalize().prefix(16))
        digest[6] = (digest[6] & 0x0F) | 0x50  // version 5
        digest[8] = (digest[8] & 0x3F) | 0x80  // variant 10xx (RFC 9562)
        bytes = digest
    }

    /// Reads the canonical 8-4-4-4-12 hexadecimal form (either case); nil if `text` is not one.
    public init?(parsing text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 36 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var index = 0
        while index < 36 {
            if [8, 13, 18, 23].contains(index) {
                guard utf8[index] == UInt8(ascii: "-") else { return nil }
                index += 1
                continue
            }
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// The canonical lower-case form, e.g. `886313e1-3b8a-5372-9b90-0c9aee199e5d`.
    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if [4, 6, 8, 10].contains(index) { text.append(UInt8(ascii: "-")) }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func nibble(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
