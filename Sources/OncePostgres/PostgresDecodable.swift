import Foundation

/// A Swift type that can be read from a result column in PostgreSQL's text output format.
///
/// Conformances parse the bytes of one non-NULL value and throw `PostgresValueFormatError`
/// when they do not parse; `PostgresRow.decode` adds the column to the error. `decodeNull()`
/// decides what SQL NULL becomes: by default an error, for `Optional` nil. `decodeArray`
/// reads a one-dimensional array column and is overridden only where an array type has a
/// format of its own (`[UInt8]` is `bytea`).
public protocol PostgresDecodable {
    /// Decodes a non-NULL value; `typeOID` is the column's type, or 0 for an array element.
    static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Self
    /// The value for SQL NULL.
    static func decodeNull() throws -> Self
    /// Decodes a whole array value of this element type.
    static func decodeArray(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> [Self]
}

extension PostgresDecodable {
    public static func decodeNull() throws -> Self {
        throw PostgresValueFormatError(.unexpectedNull)
    }

    public static func decodeArray(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> [Self] {
        try PostgresTextFormat.parseArray(bytes).enumerated().map { index, element in
            guard let element else {
                do {
                    return try decodeNull()
                } catch let error as PostgresValueFormatError where error.reason == .unexpectedNull {
                    throw PostgresValueFormatError("element \(index + 1) is NULL; decode an array of Optionals")
                }
            }
            return try decode(postgresText: element, typeOID: 0)
        }
    }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Wrapped? {
        try Wrapped.decode(postgresText: bytes, typeOID: typeOID)
    }

    public static func decodeNull() throws -> Wrapped? { nil }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> [Element] {
        try Element.decodeArray(postgresText: bytes, typeOID: typeOID)
    }
}

extension String: PostgresDecodable {
    /// Any column's text representation.
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}

extension Int64: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Int64 {
        guard let value = PostgresTextFormat.parseInteger(bytes) else {
            throw PostgresValueFormatError("not an integer in Int64's range")
        }
        return value
    }
}

extension Int32: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Int32 {
        guard let wide = PostgresTextFormat.parseInteger(bytes), let value = Int32(exactly: wide) else {
            throw PostgresValueFormatError("not an integer in Int32's range")
        }
        return value
    }
}

extension Int: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Int {
        guard let wide = PostgresTextFormat.parseInteger(bytes), let value = Int(exactly: wide) else {
            throw PostgresValueFormatError("not an integer in Int's range")
        }
        return value
    }
}

extension UInt8: PostgresDecodable {
    /// A small integer in 0...255.
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> UInt8 {
        guard let wide = PostgresTextFormat.parseInteger(bytes), let value = UInt8(exactly: wide) else {
            throw PostgresValueFormatError("not an integer in 0...255")
        }
        return value
    }

    /// `[UInt8]` reads a `bytea` column (hex output format), not an array of integers.
    public static func decodeArray(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> [UInt8] {
        guard typeOID == PostgresTypeOID.bytea else {
            throw PostgresValueFormatError(.typeMismatch(typeOID: typeOID))
        }
        return try PostgresTextFormat.parseByteaHex(bytes)
    }
}

extension Bool: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Bool {
        switch bytes.first {
        case UInt8(ascii: "t") where bytes.count == 1: return true
        case UInt8(ascii: "f") where bytes.count == 1: return false
        default: throw PostgresValueFormatError("not a boolean (t or f)")
        }
    }
}

extension Double: PostgresDecodable {
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Double {
        guard let value = Double(String(decoding: bytes, as: UTF8.self)) else {
            throw PostgresValueFormatError("not a floating-point number")
        }
        return value
    }
}

extension Date: PostgresDecodable {
    /// `timestamptz`, `timestamp` (taken as UTC) or `date`, in the ISO output the connection sets.
    public static func decode(postgresText bytes: ArraySlice<UInt8>, typeOID: UInt32) throws -> Date {
        guard let date = PostgresTextFormat.parseTimestamp(bytes) else {
            throw PostgresValueFormatError("not an ISO timestamp (infinity is not representable)")
        }
        return date
    }
}
