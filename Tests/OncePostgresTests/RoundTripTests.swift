import Foundation
import OncePostgres
import Testing

@Suite(.timeLimit(.minutes(2)))
struct RoundTripTests {
    static let awkward = "quote\" back\\slash, comma {brace} 'single' tab\tnewline\n"
    static let unicode = "héllo wörld ∑ 日本語 🎉👨‍👩‍👧"

    /// Every parameter type goes in as a bound parameter and comes out decoded unchanged.
    @Test func everyTypeRoundTrips() throws {
        let connection = try connect()
        let table = uniqueName("roundtrip")
        try connection.execute(
            """
            CREATE TABLE \(table) (
                n int PRIMARY KEY, t text, i4 int4, i8 int8, b bool, d float8, by bytea,
                ts timestamptz, ta text[], ia int8[], j jsonb)
            """)
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }
        let insert =
            "INSERT INTO \(table) (n, t, i4, i8, b, d, by, ts, ta, ia, j) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"

        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &+ $0 >> 8) }
        #expect(Set(bytes).count == 256)
        let when = Date(timeIntervalSince1970: 1_700_000_000.123456)
        let texts: [String?] = [
            "a", "", "NULL", nil, "q\"uote", "back\\slash", "comma,", "{brace}", " spaced ", Self.unicode,
        ]
        let longs: [Int64?] = [.min, 0, nil, .max]
        let json = #"{"a": [1, "x\"y"], "b": null, "emoji": "🎉"}"#

        try connection.execute(
            insert,
            [
                .int32(1), .text(Self.awkward), .int32(.min), .int64(.min), .bool(true), .double(.pi),
                .bytea(bytes), .timestamptz(when), .textArray(texts), .int64Array(longs), .jsonb(json),
            ])
        try connection.execute(
            insert,
            [
                .int32(2), .text(""), .int32(.max), .int64(.max), .bool(false), .double(-.infinity),
                .bytea([]), .timestamptz(Date(timeIntervalSince1970: -1.5)), .textArray([]), .int64Array([]),
                .jsonb("[]"),
            ])
        try connection.execute(
            insert,
            [
                .int32(3), .text(Self.unicode), .int32(7), .int(42), PostgresValue(nil as Bool?), .double(1e-300),
                .bytea([0]), .null, .textArray([""]), .int64Array([nil]), .jsonb("\"🎉\""),
            ])
        // Row 4: NULL in every column.
        try connection.execute(insert, [.int32(4)] + Array(repeating: PostgresValue.null, count: 10))

        let rows = try connection.query("SELECT t, i4, i8, b, d, by, ts, ta, ia, j FROM \(table) ORDER BY n")
        #expect(rows.count == 4)
        #expect(rows.columns.map(\.name) == ["t", "i4", "i8", "b", "d", "by", "ts", "ta", "ia", "j"])

        let first = rows[0]
        #expect(try first.decode(String.self, column: "t") == Self.awkward)
        #expect(try first.decode(Int32.self, column: "i4") == .min)
        #expect(try first.decode(Int64.self, column: "i8") == .min)
        #expect(try first.decode(Int.self, column: "i8") == Int(Int64.min))
        #expect(try first.decode(Bool.self, column: "b") == true)
        #expect(try first.decode(Double.self, column: "d") == .pi)
        #expect(try first.decode([UInt8].self, column: "by") == bytes)
        let decodedWhen = try first.decode(Date.self, column: "ts")
        #expect(abs(decodedWhen.timeIntervalSince1970 - when.timeIntervalSince1970) < 1e-6)
        #expect(try first.decode([String?].self, column: "ta") == texts)
        #expect(try first.decode([Int64?].self, column: "ia") == longs)
        #expect(try first.decode(String.self, column: "j") == json)

        let second = rows[1]
        #expect(try second.decode(String.self, column: 0) == "")
        #expect(try second.decode(Int32.self, column: 1) == .max)
        #expect(try second.decode(Int64.self, column: 2) == .max)
        #expect(try second.decode(Bool.self, column: 3) == false)
        #expect(try second.decode(Double.self, column: 4) == -.infinity)
        #expect(try second.decode([UInt8].self, column: 5) == [])
        #expect(try second.decode(Date.self, column: 6) == Date(timeIntervalSince1970: -1.5))
        #expect(try second.decode([String].self, column: 7) == [])
        #expect(try second.decode([Int64].self, column: 8) == [])
        #expect(try second.decode(String.self, column: 9) == "[]")

        let third = rows[2]
        #expect(try third.decode(String.self, column: 0) == Self.unicode)
        #expect(try third.decode(Int32.self, column: 1) == 7)
        #expect(try third.decode(Int64?.self, column: 2) == 42)
        #expect(try third.decode(Bool?.self, column: 3) == nil)
        #expect(try third.decode(Double.self, column: 4) == 1e-300)
        #expect(try third.decode([UInt8].self, column: 5) == [0])
        #expect(try third.decode([String].self, column: 7) == [""])
        #expect(try third.decode([Int64?].self, column: 8) == [nil])
        #expect(throws: PostgresDecodingError.self) { try third.decode([Int64].self, column: 8) }
        #expect(try third.decode(String.self, column: 9) == "\"🎉\"")

        // NULL in every column: nil for Optionals, a decoding error naming the column otherwise.
        let nulls = rows[3]
        #expect(try nulls.decode(String?.self, column: "t") == nil)
        #expect(try nulls.decode(Int32?.self, column: "i4") == nil)
        #expect(try nulls.decode(Int64?.self, column: "i8") == nil)
        #expect(try nulls.decode(Int?.self, column: "i8") == nil)
        #expect(try nulls.decode(Bool?.self, column: "b") == nil)
        #expect(try nulls.decode(Double?.self, column: "d") == nil)
        #expect(try nulls.decode([UInt8]?.self, column: "by") == nil)
        #expect(try nulls.decode(Date?.self, column: "ts") == nil)
        #expect(try nulls.decode([String]?.self, column: "ta") == nil)
        #expect(try nulls.decode([Int64]?.self, column: "ia") == nil)
        #expect(try nulls.decode(String?.self, column: "j") == nil)
        #expect(nulls.isNull(column: 0))
        do {
            _ = try nulls.decode(Int64.self, column: "i8")
            Issue.record("decoding NULL as Int64 did not throw")
        } catch let error as PostgresDecodingError {
            #expect(error.column == "i8")
            #expect(error.columnIndex == 2)
            #expect(error.reason == .unexpectedNull)
            #expect(error.description.contains("i8"))
        }
        #expect(throws: PostgresDecodingError.self) { try nulls.decode(String.self, column: "missing") }
        #expect(throws: PostgresDecodingError.self) { try first.decode([UInt8].self, column: "t") }
        #expect(throws: PostgresDecodingError.self) { try first.decode(Int64.self, column: "t") }
    }

    /// The server sees the values we mean, not just values that happen to round-trip.
    @Test func serverInterpretsParametersAsIntended() throws {
        let connection = try connect()
        let row = try #require(
            connection.query(
                """
                SELECT $1::timestamptz = '2023-11-14 22:13:20.123456+00'::timestamptz,
                       array_length($2::text[], 1), $2[3] = 'NULL', $2[4] IS NULL, $2[2] = '', $2[5] = $3,
                       $4::int8[] = ARRAY[-9223372036854775808, NULL, 9223372036854775807]::int8[] IS NOT FALSE,
                       length($5::bytea), get_byte($5, 255), $6::jsonb ->> 'k', $7::text
                """,
                [
                    .timestamptz(Date(timeIntervalSince1970: 1_700_000_000.123456)),
                    .textArray(["a", "", "NULL", nil, Self.awkward]), .text(Self.awkward),
                    .int64Array([.min, nil, .max]), .bytea((0...255).map { UInt8($0) }),
                    .jsonb(#"{"k": "v 🎉"}"#), .null,
                ]
            ).first)
        #expect(try row.decode(Bool.self, column: 0))
        #expect(try row.decode(Int.self, column: 1) == 5)
        #expect(try row.decode(Bool.self, column: 2))
        #expect(try row.decode(Bool.self, column: 3))
        #expect(try row.decode(Bool.self, column: 4))
        #expect(try row.decode(Bool.self, column: 5))
        #expect(try row.decode(Bool.self, column: 6))
        #expect(try row.decode(Int.self, column: 7) == 256)
        #expect(try row.decode(Int.self, column: 8) == 255)
        #expect(try row.decode(String.self, column: 9) == "v 🎉")
        #expect(try row.decode(String?.self, column: 10) == nil)
    }

    /// Prepared statements bind the same way; execute returns affected rows.
    @Test func preparedStatementsAndAffectedRows() throws {
        let connection = try connect()
        let table = uniqueName("prepared")
        try connection.execute("CREATE TABLE \(table) (id bigint PRIMARY KEY, name text)")
        defer { _ = try? connection.execute("DROP TABLE IF EXISTS \(table)") }
        try connection.prepare(name: "ins_\(table)", sql: "INSERT INTO \(table) VALUES ($1, $2)")
        for id in 1...3 {
            #expect(try connection.executePrepared(name: "ins_\(table)", [.int(id), .text("n\(id)")]) == 1)
        }
        // Preparing the same name again with the same SQL is harmless; new SQL replaces it.
        try connection.prepare(name: "ins_\(table)", sql: "INSERT INTO \(table) VALUES ($1, $2)")
        try connection.prepare(name: "ins_\(table)", sql: "SELECT name FROM \(table) WHERE id = $1")
        let name = try connection.queryPrepared(name: "ins_\(table)", [.int(2)]).first?.decode(String.self, column: 0)
        #expect(name == "n2")
        #expect(try connection.execute("UPDATE \(table) SET name = name || '!'") == 3)
        #expect(try connection.execute("DELETE FROM \(table) WHERE id > $1", [.int(1)]) == 2)
        try connection.deallocate(name: "ins_\(table)")
        #expect(throws: PostgresError.self) { try connection.queryPrepared(name: "ins_\(table)", [.int(1)]) }
    }

    /// Every session runs with the settings the decoders rely on; the URL overrides defaults.
    @Test func sessionSettingsAndURLOverrides() throws {
        let url = try databaseURL()
        let connection = try connect()
        let settings = try #require(
            connection.query(
                """
                SELECT current_setting('TimeZone'), current_setting('DateStyle'), current_setting('bytea_output'),
                       current_setting('client_encoding'), current_setting('application_name')
                """
            ).first)
        #expect(try settings.decode(String.self, column: 0) == "UTC")
        #expect(try settings.decode(String.self, column: 1) == "ISO, MDY")
        #expect(try settings.decode(String.self, column: 2) == "hex")
        #expect(try settings.decode(String.self, column: 3) == "UTF8")
        #expect(try settings.decode(String.self, column: 4) == "once")

        let custom =
            url.contains("://")
            ? url + (url.contains("?") ? "&" : "?") + "application_name=custom_app"
            : url + " application_name=custom_app"
        let overridden = try PostgresConnection(url: custom)
        let name = try overridden.query("SELECT current_setting('application_name')").first?.decode(
            String.self, column: 0)
        #expect(name == "custom_app")
        let names = try overridden.query("SELECT unnest($1::text[]) AS name", [.textArray(["x", "y"])])
            .map { try $0.decode(String.self, column: "name") }
        #expect(names == ["x", "y"])
    }
}
