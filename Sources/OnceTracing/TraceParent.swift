/// A W3C Trace Context `traceparent` value (`00-<trace id>-<parent id>-<flags>`), parsed
/// strictly: lowercase hex, neither id all zeros, version `ff` refused, a later version read
/// by its first four fields (as the recommendation asks) and written back as version `00`.
/// A pure value, any thread.
public struct TraceParent: Sendable, Hashable, CustomStringConvertible {
    public static let headerName = "traceparent"
    /// The vendor state that travels beside it, passed on unchanged.
    public static let stateHeaderName = "tracestate"

    /// 32 lowercase hex digits.
    public let traceID: String
    /// 16 lowercase hex digits: the span that caused the record carrying it.
    public let parentID: String
    /// 2 lowercase hex digits; bit 0 is "sampled".
    public let flags: String

    /// The header's value, or nil when it is not a valid `traceparent`.
    public init?(_ header: String) {
        let fields = header.split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count >= 4,
            Self.isHex(fields[0], count: 2), fields[0] != "ff",
            Self.isHex(fields[1], count: 32), Self.isHex(fields[2], count: 16), Self.isHex(fields[3], count: 2),
            fields[0] != "00" || fields.count == 4,
            !fields[1].allSatisfy({ $0 == "0" }), !fields[2].allSatisfy({ $0 == "0" })
        else { return nil }
        traceID = String(fields[1])
        parentID = String(fields[2])
        flags = String(fields[3])
    }

    /// The same trace, caused by span `spanID` (16 hex digits, not all zeros).
    public func caused(by spanID: String) -> TraceParent {
        TraceParent(traceID: traceID, parentID: spanID, flags: flags)
    }

    /// The same trace, caused by a new random span id: what a record passes on when no tracer
    /// records its span.
    public func causedByNewSpan() -> TraceParent {
        var generator = SystemRandomNumberGenerator()
        return caused(by: Self.hex(UInt64.random(in: 1...UInt64.max, using: &generator)))
    }

    public var description: String { "00-\(traceID)-\(parentID)-\(flags)" }

    private init(traceID: String, parentID: String, flags: String) {
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    private static func isHex(_ text: Substring, count: Int) -> Bool {
        text.utf8.count == count && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
