import Foundation
import OnceKafka
import OncePostgres

/// Where an operator moves a partition's stored position to.
public enum OffsetTarget: Sendable, Hashable {
    case offset(Int64)
    /// The first offset still stored on the broker.
    case earliest
    /// The end of the log: everything in it now is skipped.
    case latest
    /// The first offset whose record was stamped at or after this time (ms since the epoch);
    /// the end of the log when there is none.
    case time(milliseconds: Int64)

    /// The offset on the broker, checked to lie within the partition's log.
    public func resolve(with reader: PartitionReader) async throws -> Int64 {
        let marks = try await reader.watermarks()
        switch self {
        case .earliest:
            return marks.low
        case .latest:
            return try await reader.end()
        case .time(let milliseconds):
            return try await reader.firstOffset(atOrAfter: milliseconds)
        case .offset(let offset):
            guard offset >= marks.low else {
                throw OffsetOutOfRange(
                    "offset \(offset) is before the first offset still stored in \(reader.partition) (\(marks.low))")
            }
            if offset <= marks.high { return offset }
            let end = try await reader.end()
            guard offset <= end else {
                throw OffsetOutOfRange("offset \(offset) is past the end of \(reader.partition) (\(end))")
            }
            return offset
        }
    }
}

/// The requested offset lies outside the partition's log.
public struct OffsetOutOfRange: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
