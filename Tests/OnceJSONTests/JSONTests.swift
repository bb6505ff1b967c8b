import Testing

@testable import OnceJSON

@Suite("JSON")
struct JSONTests {
    private func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try JSONParser.parse(Array(text.utf8))
    }

    private func parseError(_ bytes: [UInt8]) -> JSONParseError? {
        do throws(JSONParseError) {
            _ = try JSONParser.parse(bytes)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Valid documents

    @Test(
        "valid documents round-trip through parse, serialize, parse",
        arguments: [
            "null", "true", "false", "0", "-0", "42", "-17", "0.5", "-0.0", "1e3", "1E-3", "2.5e+10", "123.456e-7",
            "\"\"", "\"hello\"", "\"h\u{E9}llo \u{1F600}\"", "[]", "{}", "[1,\"two\",3.0,null,true,false,[],{}]",
            "{\"a\":{\"b\":{\"c\":[1,[2,[3]]]}}}",
            " \t\r\n {\"event_id\" : \"x\", \"n\" : [ 1 , 2 ] } \n",
            "1.7976931348623157e308", "5e-324", "0.1", "100000000000000000000",
        ])
    func roundTrip(text: String) throws {
        let first = try parse(text)
        let bytes = JSONWriter.serialize(first)
        let second = try JSONParser.parse(bytes)
        #expect(first == second)
        #expect(JSONWriter.serialize(second) == bytes)
    }

    @Test func parsesEveryKind() throws {
        let value = try parse(
            #"{"n":null,"t":true,"f":false,"i":-12,"d":2.5,"s":"x","a":[1,2],"o":{"k":"v"}}"#)
        #expect(value["n"] == .null)
        #expect(value["t"]?.boolValue == true)
        #expect(value["f"]?.boolValue == false)
        #expect(value["i"]?.int64Value == -12)
        #expect(value["d"]?.doubleValue == 2.5)
        #expect(value["d"]?.int64Value == nil)
        #expect(value["s"]?.stringValue == "x")
        #expect(value["a"]?[1] == .integer(2))
        #expect(value["a"]?[2] == nil)
        #expect(value["o"]?["k"] == "v")
        #expect(value["missing"] == nil)
    }

    @Test func integersAndNumbersStayDistinct() throws {
        #expect(try parse("5") == .integer(5))
        #expect(try parse("5.0") == .number(5))
        #expect(try parse("5e0") == .number(5))
        #expect(try parse("-0") == .integer(0))
        #expect(try parse("0") == .integer(0))
        #expect(JSONWriter.serializeString(.number(5)) == "5.0")
        #expect(try parse(JSONWriter.serializeString(.number(5))) == .number(5))
    }

    @Test func int64Edges() throws {
        #expect(try parse("9223372036854775807") == .integer(.max))
        #expect(try parse("-9223372036854775808") == .integer(.min))
        #expect(try parse("9223372036854775808") == .number(9_223_372_036_854_775_808.0))
        #expect(try parse("-9223372036854775809") == .number(-9_223_372_036_854_775_809.0))
        #expect(try parse("999999999999999999") == .integer(999_999_999_999_999_999))
        #expect(try parse("-999999999999999999") == .integer(-999_999_999_999_999_999))
        #expect(JSONWriter.serializeString(.integer(.max)) == "9223372036854775807")
        #expect(JSONWriter.serializeString(.integer(.min)) == "-9223372036854775808")
        #expect(JSONWriter.serializeString(.integer(0)) == "0")
    }

    @Test func doublesRoundTripExactly() throws {
        let values: [Double] = [0.1, 1.0 / 3.0, -2.2250738585072014e-308, 1e21, 1e-7, 123_456_789.123_456_78, -0.0]
        for value in values {
            let text = JSONWriter.serializeString(.number(value))
            guard case .number(let back) = try parse(text) else {
                Issue.record("\(text) did not parse as a number")
                continue
            }
            #expect(back.bitPattern == value.bitPattern, "\(text)")
        }
        #expect(JSONWriter.serializeString(.number(.infinity)) == "null")
        #expect(JSONWriter.serializeString(.number(.nan)) == "null")
    }

    // MARK: Strings

    @Test func decodesEscapes() throws {
        #expect(try parse(#""a\"b\\c\/d\be\ff\ng\rh\ti""#) == .string("a\"b\\c/d\u{08}e\u{0C}f\ng\rh\ti"))
        #expect(try parse(#""\u0041\u00e9\u20AC\u0000""#) == .string("A\u{E9}\u{20AC}\u{0}"))
        #expect(try parse(#""\ud83d\ude00""#) == .string("\u{1F600}"))
        #expect(try parse(#""x\uD834\uDD1Ey""#) == .string("x\u{1D11E}y"))
        #expect(try parse("\"pre \u{E9}\\n post \u{1F600}\"") == .string("pre \u{E9}\n post \u{1F600}"))
    }

    /// The string scanner skips plain ASCII a word at a time; a byte that needs attention must be
    /// found wherever it sits in the word.
    @Test func specialBytesAtEveryPosition() throws {
        let plain = Array(" !#[]~\u{7F}az".utf8)
        func filler(_ count: Int, from offset: Int) -> [UInt8] {
            (0..<count).map { plain[($0 + offset) % plain.count] }
        }
        let specials: [(raw: String, decoded: String)] = [
            (#"\""#, "\""), (#"\\"#, "\\"), (#"\n"#, "\n"), (#"\u0001"#, "\u{1}"), ("\u{E9}", "\u{E9}"),
            ("\u{20AC}", "\u{20AC}"), ("\u{1F600}", "\u{1F600}"),
        ]
        for length in 0..<20 {
            for position in 0...length {
                let prefix = filler(position, from: length)
                let suffix = filler(length - position, from: position)
                for special in specials {
                    let input = [0x22] + prefix + Array(special.raw.utf8) + suffix + [0x22]
                    let expected =
                        String(decoding: prefix, as: UTF8.self) + special.decoded
                        + String(decoding: suffix, as: UTF8.self)
                    #expect(try JSONParser.parse(input) == .string(expected))
                }
            }
        }
        for length in 1..<20 {
            for position in 0..<length {
                var input = [0x22] + filler(length, from: position) + [0x22]
                input[1 + position] = 0x1F
                #expect(parseError(input) == JSONParseError(offset: 1 + position, reason: .controlCharacterInString))
                input[1 + position] = 0xFF
                #expect(parseError(input) == JSONParseError(offset: 1 + position, reason: .invalidUTF8))
            }
        }
    }

    @Test func keepsRawUTF8() throws {
        let text = "\u{E9}\u{4E2D}\u{1F600}"
        #expect(try parse("\"\(text)\"") == .string(text))
        #expect(JSONWriter.serialize(.string(text)) == Array("\"\(text)\"".utf8))
    }

    @Test func serializerEscapes() {
        let value = JSONValue.string("q\"b\\s/\n\t\u{01}\u{1F}\u{7F}\u{E9}")
        #expect(JSONWriter.serializeString(value) == #""q\"b\\s/\u000a\u0009\u0001\u001f"# + "\u{7F}\u{E9}\"")
    }

    @Test func serializerSortsKeysByCodePoint() {
        let value: JSONValue = [
            "b": 1, "a": ["z": true, "y": .null], "B": "x", "\u{E9}": 2, "aa": [3, 2.5], "": "empty",
        ]
        #expect(
            JSONWriter.serializeString(value)
                == #"{"":"empty","B":"x","a":{"y":null,"z":true},"aa":[3,2.5],"b":1,"é":2}"#)
        #expect(value.description == JSONWriter.serializeString(value))
    }

    @Test func serializationIsDeterministic() throws {
        var members: [String: JSONValue] = [:]
        for index in 0..<200 { members["key\(index)"] = .integer(Int64(index)) }
        let first = JSONWriter.serialize(.object(members))
        let rebuilt = try JSONParser.parse(first)
        #expect(JSONWriter.serialize(rebuilt) == first)
    }

    @Test func duplicateKeysLastWins() throws {
        #expect(try parse(#"{"a":1,"b":2,"a":3}"#) == ["a": 3, "b": 2])
    }

    @Test func acceptsOtherInputShapes() throws {
        let text = #"{"k":[1,"\u00e9"]}"#
        let expected: JSONValue = ["k": [1, "\u{E9}"]]
        #expect(try JSONParser.parse(text) == expected)
        #expect(try JSONParser.parse(Array(text.utf8)[...]) == expected)
        #expect(try JSONParser.parse(ContiguousArray(text.utf8)) == expected)
        #expect(try JSONParser.parse(text.utf8) == expected)
        let bytes = Array(text.utf8)
        #expect(try bytes.withUnsafeBytes { try JSONParser.parse($0) } == expected)
        // A collection without contiguous storage goes through a copy.
        #expect(try JSONParser.parse(AnyCollection(bytes)) == expected)
    }

    @Test func deepButAllowedNesting() throws {
        let depth = JSONParser.maximumDepth
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        var value = try parse(text)
        var levels = 0
        while case .array(let inner) = value, let first = inner.first {
            value = first
            levels += 1
        }
        #expect(levels == depth - 1)
    }

    // MARK: Invalid documents

    struct Invalid: Sendable, CustomTestStringConvertible {
        var name: String
        var bytes: [UInt8]
        var reason: JSONParseError.Reason
        var offset: Int

        init(_ name: String, _ text: String, _ reason: JSONParseError.Reason, at offset: Int) {
            self.init(name, Array(text.utf8), reason, at: offset)
        }

        init(_ name: String, _ bytes: [UInt8], _ reason: JSONParseError.Reason, at offset: Int) {
            self.name = name
            self.bytes = bytes
            self.reason = reason
            self.offset = offset
        }

        var testDescription: String { name }
    }

    static let invalidInputs: [Invalid] = [
        Invalid("empty input", "", .emptyInput, at: 0),
        Invalid("only whitespace", " \n\t ", .emptyInput, at: 4),
        Invalid("trailing comma in array", "[1,2,]", .expectedValue, at: 5),
        Invalid("trailing comma in object", #"{"a":1,}"#, .expectedKey, at: 7),
        Invalid("leading zero", "012", .invalidNumber, at: 0),
        Invalid("negative leading zero", "[-01]", .invalidNumber, at: 1),
        Invalid("plus sign", "+1", .expectedValue, at: 0),
        Invalid("bare minus", "-", .invalidNumber, at: 0),
        Invalid("missing fraction digits", "1.", .invalidNumber, at: 0),
        Invalid("missing exponent digits", "1e+", .invalidNumber, at: 0),
        Invalid("leading dot", ".5", .expectedValue, at: 0),
        Invalid("NaN", "NaN", .expectedValue, at: 0),
        Invalid("Infinity", "-Infinity", .invalidNumber, at: 0),
        Invalid("overflowing double", "1e400", .numberOutOfRange, at: 0),
        Invalid("hex escape", #""\x41""#, .invalidEscape, at: 1),
        Invalid("short unicode escape", #""\u12""#, .invalidUnicodeEscape, at: 1),
        Invalid("bad hex in unicode escape", #""\u12G4""#, .invalidUnicodeEscape, at: 1),
        Invalid("lone high surrogate", #""\ud83d""#, .unpairedSurrogate, at: 1),
        Invalid("high surrogate then text", #""\ud83dx""#, .unpairedSurrogate, at: 1),
        Invalid("high surrogate then non-surrogate", #""\ud83d\u0041""#, .unpairedSurrogate, at: 1),
        Invalid("lone low surrogate", #""ab\ude00""#, .unpairedSurrogate, at: 3),
        Invalid("invalid UTF-8 continuation", [0x22, 0x61, 0xC3, 0x28, 0x22], .invalidUTF8, at: 2),
        Invalid("overlong UTF-8", [0x22, 0xC0, 0xAF, 0x22], .invalidUTF8, at: 1),
        Invalid("UTF-8 surrogate", [0x22, 0xED, 0xA0, 0x80, 0x22], .invalidUTF8, at: 1),
        Invalid("UTF-8 above U+10FFFF", [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], .invalidUTF8, at: 1),
        Invalid("truncated UTF-8", [0x22, 0xE2, 0x82], .invalidUTF8, at: 1),
        Invalid("stray continuation byte", [0x22, 0x80, 0x22], .invalidUTF8, at: 1),
        Invalid("invalid UTF-8 after an escape", [0x22, 0x5C, 0x6E, 0xFF, 0x22], .invalidUTF8, at: 3),
        Invalid("non-ASCII outside a string", [0x5B, 0xC3, 0xA9, 0x5D], .expectedValue, at: 1),
        Invalid("byte order mark", [0xEF, 0xBB, 0xBF, 0x31], .expectedValue, at: 0),
        Invalid("raw newline in string", "\"a\nb\"", .controlCharacterInString, at: 2),
        Invalid("raw tab in string after escape", "\"\\n\t\"", .controlCharacterInString, at: 3),
        Invalid("raw NUL in string", "\"\u{0}\"", .controlCharacterInString, at: 1),
        Invalid("unterminated string", #"{"a":"bc"#, .unterminatedString, at: 5),
        Invalid("unterminated escaped string", #""a\n"#, .unterminatedString, at: 0),
        Invalid("backslash at end", #""a\"#, .unterminatedString, at: 2),
        Invalid("trailing garbage", "{} x", .trailingData, at: 3),
        Invalid("two values", "1 2", .trailingData, at: 2),
        Invalid("number then letters", "12abc", .trailingData, at: 2),
        Invalid("unterminated array", "[1, 2", .unexpectedEnd, at: 5),
        Invalid("unterminated object", #"{"a":1"#, .unexpectedEnd, at: 6),
        Invalid("missing colon", #"{"a" 1}"#, .expectedColon, at: 5),
        Invalid("missing comma", "[1 2]", .expectedCommaOrEndOfArray, at: 3),
        Invalid("missing comma in object", #"{"a":1 "b":2}"#, .expectedCommaOrEndOfObject, at: 7),
        Invalid("unquoted key", "{a:1}", .expectedKey, at: 1),
        Invalid("single quotes", "['a']", .expectedValue, at: 1),
        Invalid("misspelled literal", "tru", .invalidLiteral, at: 0),
        Invalid("wrong literal", "nul1", .invalidLiteral, at: 0),
        Invalid("capitalised literal", "True", .expectedValue, at: 0),
        Invalid("comment", "[1] // no", .trailingData, at: 4),
        Invalid(
            "depth bomb",
            String(repeating: "[", count: JSONParser.maximumDepth + 1)
                + String(repeating: "]", count: JSONParser.maximumDepth + 1),
            .tooDeep, at: JSONParser.maximumDepth),
        Invalid(
            "deep objects", String(repeating: #"{"a":"#, count: 100_000), .tooDeep, at: 5 * JSONParser.maximumDepth),
    ]

    @Test("invalid inputs are rejected", arguments: invalidInputs)
    func rejects(input: Invalid) {
        let error = parseError(input.bytes)
        #expect(error == JSONParseError(offset: input.offset, reason: input.reason))
    }

    @Test func errorDescriptionNamesOffsetAndReason() {
        let error = parseError(Array("[1,]".utf8))
        #expect(error?.description == "invalid JSON at byte 3: expected a value")
    }
}
