import Foundation
import Testing

@testable import OncePostgres

/// Pure formatting and parsing, no server.
@Suite struct TextFormatTests {
    @Test func binaryArraysCarryLengthsAndNulls() throws {
        var buffer: [UInt8] = []
        PostgresBinaryArray.append(["ab", nil], elementOID: PostgresTypeOID.text, to: &buffer) { element, buffer in
            buffer.append(contentsOf: element.utf8)
        }
        #expect(buffer == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 97, 98, 255, 255, 255, 255])
        var empty: [UInt8] = []
        PostgresBinaryArray.append([Int64?](), elementOID: PostgresTypeOID.int8, to: &empty) { _, _ in }
        #expect(empty == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20])
    }

    @Test func arrayOutputParses() throws {
        let text = Array(#"[0:2]={plain,"with space","q\"b\\",NULL,"NULL",""}"#.utf8)
        let elements = try PostgresTextFormat.parseArray(text[...]).map {
            $0.map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(elements == ["plain", "with space", "q\"b\\", nil, "NULL", ""])
        #expect(try PostgresTextFormat.parseArray(Array("{}".utf8)[...]).isEmpty)
        #expect(throws: PostgresValueFormatError.self) {
            try PostgresTextFormat.parseArray(Array("{{1},{2}}".utf8)[...])
        }
        #expect(throws: PostgresValueFormatError.self) { try PostgresTextFormat.parseArray(Array("{\"open".utf8)[...]) }
    }

    @Test func integersParseAtTheLimitsAndRejectOverflow() {
        func parse(_ text: String) -> Int64? { PostgresTextFormat.parseInteger(Array(text.utf8)[...]) }
        #expect(parse("-9223372036854775808") == .min)
        #expect(parse("9223372036854775807") == .max)
        #expect(parse("9223372036854775808") == nil)
        #expect(parse("-") == nil)
        #expect(parse("12a") == nil)
        #expect(parse("") == nil)
    }

    @Test func timestampsFormatAndParse() throws {
        let date = Date(timeIntervalSince1970: 1_700_000_000.123456)
        let text = try PostgresTextFormat.timestamp(date, parameterIndex: 0)
        #expect(text == "2023-11-14 22:13:20.123456+00")
        let parsed = try #require(PostgresTextFormat.parseTimestamp(Array(text.utf8)[...]))
        #expect(abs(parsed.timeIntervalSince1970 - date.timeIntervalSince1970) < 1e-6)

        let before1970 = Date(timeIntervalSince1970: -1.5)
        #expect(try PostgresTextFormat.timestamp(before1970, parameterIndex: 0) == "1969-12-31 23:59:58.500000+00")
        let bc = Date(timeIntervalSince1970: -62_167_219_200)  // 0000-01-01, i.e. 1 BC
        #expect(try PostgresTextFormat.timestamp(bc, parameterIndex: 0) == "0001-01-01 00:00:00.000000+00 BC")
        let bcParsed = PostgresTextFormat.parseTimestamp(Array("0001-01-01 00:00:00+00 BC".utf8)[...])
        #expect(bcParsed == bc)

        let offset = PostgresTextFormat.parseTimestamp(Array("2024-02-29 12:00:00.5+05:30".utf8)[...])
        #expect(offset == Date(timeIntervalSince1970: 1_709_188_200.5))
        #expect(
            PostgresTextFormat.parseTimestamp(Array("2024-02-29".utf8)[...])
                == Date(timeIntervalSince1970: 1_709_164_800))
        #expect(PostgresTextFormat.parseTimestamp(Array("infinity".utf8)[...]) == nil)
    }

    @Test func byteaHexParses() throws {
        #expect(try PostgresTextFormat.parseByteaHex(Array("\\x00ff7Fa0".utf8)[...]) == [0, 255, 127, 160])
        #expect(try PostgresTextFormat.parseByteaHex(Array("\\x".utf8)[...]) == [])
        #expect(throws: PostgresValueFormatError.self) { try PostgresTextFormat.parseByteaHex(Array("abc".utf8)[...]) }
        // Every byte value, from a slice that does not start at 0; and a bad digit anywhere.
        let all = (0...255).map { UInt8($0) }
        let hex = Array("--\\x".utf8) + all.flatMap { Array(String(format: "%02x", $0).utf8) }
        #expect(try PostgresTextFormat.parseByteaHex(hex[2...]) == all)
        for bad in ["\\x0g", "\\xg0", "\\x00:0", "\\x/0", "\\x0G"] {
            #expect(throws: PostgresValueFormatError.self) { try PostgresTextFormat.parseByteaHex(Array(bad.utf8)[...]) }
        }
    }

    @Test func nulInTextIsRejectedBeforeSending() {
        #expect(throws: PostgresError.self) { try PQParameters([.text("a\u{0}b")]) }
    }

    @Test func errorDescriptionsKeepValuesOut() {
        let unique = PostgresError(
            kind: .uniqueViolation, sqlState: "23505",
            message: "duplicate key value violates unique constraint \"t_pkey\"",
            detail: "Key (id)=(secret) already exists.", constraintName: "t_pkey")
        #expect(!unique.description.contains("secret"))
        #expect(unique.debugDescription.contains("secret"))
        let data = PostgresError(
            kind: .other, sqlState: "22P02", message: "invalid input syntax for type bigint: \"secret\"")
        #expect(!data.description.contains("secret"))
        #expect(PostgresError.kind(forSQLState: "08006") == .connectionLost)
        #expect(PostgresError.kind(forSQLState: "57P01") == .connectionLost)
        #expect(PostgresError.kind(forSQLState: "40P01") == .deadlock)
        #expect(PostgresError.kind(forSQLState: "40001").description == "serializationFailure")
        #expect(PostgresError(kind: .deadlock, message: "").isTransient)
        #expect(!PostgresError(kind: .uniqueViolation, message: "").isTransient)
    }
}
