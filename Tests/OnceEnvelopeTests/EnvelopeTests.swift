import Testing

@testable import OnceEnvelope
@testable import OnceJSON

@Suite("Envelope")
struct EnvelopeTests {
    static let versions: [String: Set<Int>] = [
        "batch.completed": [1],
        "credits.granted": [1],
        "batch_action.requested": [1],
        "job.requested": [1],
    ]

    static let validEventID = "5d0c7c1e-8a57-4a5e-9f43-6f1d3b1a0c11"

    /// A valid `batch.completed` envelope as a mutable object.
    static func baseFields() -> [String: JSONValue] {
        [
            "event_id": .string(validEventID),
            "type": "batch.completed",
            "version": 1,
            "tenant_id": "acme",
            "occurred_at": "2026-11-22T10:00:00Z",
            "data": ["batch_id": "b-1", "account_id": "acc-1", "credits": 5],
        ]
    }

    static func bytes(_ fields: [String: JSONValue]) -> [UInt8] {
        JSONWriter.serialize(.object(fields))
    }

    static func decode(_ value: [UInt8]?, maxBytes: Int = EnvelopeDecoder.defaultMaxBytes) -> Result<
        Envelope, EnvelopeError
    > {
        do throws(EnvelopeError) {
            return .success(try EnvelopeDecoder.decode(value, supportedVersions: versions, maxBytes: maxBytes))
        } catch {
            return .failure(error)
        }
    }

    static func decodeError(_ value: [UInt8]?, maxBytes: Int = EnvelopeDecoder.defaultMaxBytes) -> EnvelopeError? {
        if case .failure(let error) = decode(value, maxBytes: maxBytes) { return error }
        return nil
    }

    static func decodeError(_ change: (inout [String: JSONValue]) -> Void) -> EnvelopeError? {
        var fields = baseFields()
        change(&fields)
        return decodeError(bytes(fields))
    }

    static func decodeError(_ text: String) -> EnvelopeError? {
        decodeError(Array(text.utf8))
    }

    // MARK: Valid envelopes

    static let validRecords: [String] = [
        #"""
        {"event_id":"5d0c7c1e-8a57-4a5e-9f43-6f1d3b1a0c11","type":"batch.completed","version":1,
         "tenant_id":"acme","occurred_at":"2026-11-22T10:00:00Z",
         "data":{"batch_id":"b-1","account_id":"acc-1","credits":250}}
        """#,
        #"""
        {"event_id":"grant:2026:17","type":"credits.granted","version":1,"tenant_id":"acme.eu_1",
         "occurred_at":"2026-11-22T10:00:00.123+01:00",
         "data":{"grant_id":"g-17","account_id":"acc-1","credits":1000000000}}
        """#,
        #"""
        {"event_id":"ba-1.chunk-2","type":"batch_action.requested","version":1,"tenant_id":"t-9",
         "occurred_at":"2026-02-28t23:59:59.999999z",
         "data":{"batch_action_id":"ba-1","action":"WORKFLOW_ACTION","service_type_id":null,
                 "workflow_id":"wf-3","devices":[{"device_uid":"356938035643809"},{"device_uid":"SER-0001"}]}}
        """#,
        #"""
        {"event_id":"req_42","type":"job.requested","version":1,"tenant_id":"acme",
         "occurred_at":"2026-11-22T10:00:00-05:30",
         "data":{"request_id":"r-42","user_id":"u-7","action_code":3,"action_name":"Export",
                 "customer_ids":["c1","c2","c3"]}}
        """#,
    ]

    @Test("a valid envelope of each type decodes", arguments: validRecords)
    func decodesValid(record: String) throws {
        let envelope = try EnvelopeDecoder.decode(Array(record.utf8), supportedVersions: Self.versions)
        let document = try JSONParser.parse(record)
        #expect(envelope.eventID == document["event_id"]?.stringValue)
        #expect(envelope.type == document["type"]?.stringValue)
        #expect(envelope.version == 1)
        #expect(envelope.tenantID == document["tenant_id"]?.stringValue)
        #expect(envelope.occurredAt == document["occurred_at"]?.stringValue)
        #expect(.object(envelope.data) == document["data"])
        #expect(envelope.jsonValue == document)
    }

    @Test func decodesFields() throws {
        let envelope = try EnvelopeDecoder.decode(Self.bytes(Self.baseFields()), supportedVersions: Self.versions)
        #expect(
            envelope
                == Envelope(
                    eventID: Self.validEventID, type: "batch.completed", version: 1, tenantID: "acme",
                    occurredAt: "2026-11-22T10:00:00Z",
                    data: ["batch_id": "b-1", "account_id": "acc-1", "credits": 5]))
    }

    @Test func extraFieldsAreIgnored() throws {
        var fields = Self.baseFields()
        fields["trace_id"] = "abc"
        fields["meta"] = ["nested": [1, 2, 3]]
        fields["version_note"] = .null
        let envelope = try EnvelopeDecoder.decode(Self.bytes(fields), supportedVersions: Self.versions)
        #expect(envelope.eventID == Self.validEventID)
        #expect(envelope.data["credits"] == 5)
    }

    @Test func reasonCodesMatchTheContract() {
        #expect(
            DeadLetterReason.allCases.map(\.rawValue) == [
                "invalid_json", "missing_event_id", "invalid_event_id", "unknown_type", "unsupported_version",
                "invalid_tenant", "invalid_data", "too_large", "handler_failed",
            ])
    }

    // MARK: One test per reason code

    @Test func tooLarge() {
        let error = Self.decodeError(Self.bytes(Self.baseFields()), maxBytes: 10)
        #expect(error?.reason == .tooLarge)
        #expect(error?.eventID == nil)
    }

    @Test func tooLargeAtTheDefaultLimit() throws {
        // Exactly 4 MiB of valid JSON (padded with an ignored field) decodes; one byte more does not,
        // and is rejected before parsing (the oversized value need not even be JSON).
        let limit = 4 * 1024 * 1024
        var fields = Self.baseFields()
        fields["padding"] = ""
        let overhead = Self.bytes(fields).count
        fields["padding"] = .string(String(repeating: "x", count: limit - overhead))
        let exact = Self.bytes(fields)
        #expect(exact.count == limit)
        #expect(throws: Never.self) { try EnvelopeDecoder.decode(exact, supportedVersions: Self.versions) }

        fields["padding"] = .string(String(repeating: "x", count: limit - overhead + 1))
        let over = Self.bytes(fields)
        #expect(over.count == limit + 1)
        let error = Self.decodeError(over)
        #expect(error?.reason == .tooLarge)
        #expect(error?.eventID == nil)
        #expect(Self.decodeError([UInt8](repeating: 0xFF, count: limit + 1))?.reason == .tooLarge)
    }

    @Test(
        "invalid_json: absent value, unparseable or not an object",
        arguments: [
            nil, [], Array("{".utf8), Array("not json".utf8), [0x7B, 0xFF, 0x7D], Array("[]".utf8),
            Array("\"text\"".utf8), Array("42".utf8), Array("null".utf8),
            Array(#"{"event_id":"e1","type":"batch.completed"} trailing"#.utf8),
        ] as [[UInt8]?])
    func invalidJSON(value: [UInt8]?) {
        let error = Self.decodeError(value)
        #expect(error?.reason == .invalidJSON)
        #expect(error?.eventID == nil)
    }

    @Test func invalidJSONMessageCarriesTheOffset() {
        #expect(Self.decodeError("{\"a\":}")?.message == "invalid JSON at byte 5: expected a value")
        #expect(Self.decodeError("[1]")?.message == "record value must be a JSON object, not an array")
        #expect(Self.decodeError(nil)?.message == "record has no value")
    }

    @Test func missingEventID() {
        for change: (inout [String: JSONValue]) -> Void in [
            { $0["event_id"] = nil }, { $0["event_id"] = .null },
        ] {
            let error = Self.decodeError(change)
            #expect(error?.reason == .missingEventID)
            #expect(error?.eventID == nil)
        }
    }

    @Test(
        "invalid_event_id",
        arguments: [
            "", String(repeating: "a", count: 129), "has space", "slash/", "h\u{E9}", "a+b", "emoji\u{1F600}",
            "new\nline",
        ] as [String])
    func invalidEventIDString(eventID: String) {
        let error = Self.decodeError { $0["event_id"] = .string(eventID) }
        #expect(error?.reason == .invalidEventID)
        #expect(error?.eventID == nil)
        #expect(error?.message == "event_id must be 1..128 characters of [A-Za-z0-9._:-]")
    }

    @Test(arguments: [.integer(42), .number(1.5), .bool(true), ["x"], ["id": "x"]] as [JSONValue])
    func invalidEventIDKind(eventID: JSONValue) {
        let error = Self.decodeError { $0["event_id"] = eventID }
        #expect(error?.reason == .invalidEventID)
        #expect(error?.eventID == nil)
    }

    @Test func eventIDEdges() throws {
        for eventID in ["a", String(repeating: "Z", count: 128), "kafka:topic.0.1", "A.b_c:d-9"] {
            var fields = Self.baseFields()
            fields["event_id"] = .string(eventID)
            let envelope = try EnvelopeDecoder.decode(Self.bytes(fields), supportedVersions: Self.versions)
            #expect(envelope.eventID == eventID)
        }
    }

    @Test(arguments: [nil, .null, "batch.complete", "BATCH.COMPLETED", "", .integer(1)] as [JSONValue?])
    func unknownType(type: JSONValue?) {
        let error = Self.decodeError { $0["type"] = type }
        #expect(error?.reason == .unknownType)
        #expect(error?.eventID == Self.validEventID)
    }

    @Test func unknownTypeMessage() {
        #expect(
            Self.decodeError { $0["type"] = "batch.complete" }?.message
                == #"type "batch.complete" is not one of batch.completed, batch_action.requested, credits.granted, "#
                + "job.requested")
        let long = String(repeating: "t", count: 1000)
        let message = Self.decodeError { $0["type"] = .string(long) }?.message ?? ""
        #expect(message.count < 200)
    }

    @Test(
        arguments: [nil, .null, .integer(2), .integer(0), .integer(-1), .number(1.0), "1", .bool(true)] as [JSONValue?])
    func unsupportedVersion(version: JSONValue?) {
        let error = Self.decodeError { $0["version"] = version }
        #expect(error?.reason == .unsupportedVersion)
        #expect(error?.eventID == Self.validEventID)
    }

    @Test func versionIsCheckedPerType() throws {
        let versions: [String: Set<Int>] = ["batch.completed": [1], "job.requested": [1, 2]]
        var fields = Self.baseFields()
        fields["version"] = 2
        #expect(throws: EnvelopeError.self) {
            try EnvelopeDecoder.decode(Self.bytes(fields), supportedVersions: versions)
        }
        fields["type"] = "job.requested"
        #expect(try EnvelopeDecoder.decode(Self.bytes(fields), supportedVersions: versions).version == 2)
    }

    @Test(
        arguments: [
            nil, .null, "", .string(String(repeating: "t", count: 65)), "acme:eu", "acme/eu", "ac me", "\u{E9}",
            .integer(7),
        ] as [JSONValue?])
    func invalidTenant(tenant: JSONValue?) {
        let error = Self.decodeError { $0["tenant_id"] = tenant }
        #expect(error?.reason == .invalidTenant)
        #expect(error?.eventID == Self.validEventID)
    }

    @Test func tenantEdges() throws {
        for tenant in ["a", String(repeating: "T", count: 64), "acme.eu_1-x"] {
            var fields = Self.baseFields()
            fields["tenant_id"] = .string(tenant)
            let envelope = try EnvelopeDecoder.decode(Self.bytes(fields), supportedVersions: Self.versions)
            #expect(envelope.tenantID == tenant)
        }
    }

    @Test(arguments: [nil, .null, .integer(1_700_000_000), "yesterday", "2026-11-22"] as [JSONValue?])
    func invalidOccurredAt(occurredAt: JSONValue?) {
        let error = Self.decodeError { $0["occurred_at"] = occurredAt }
        #expect(error?.reason == .invalidData)
        #expect(error?.eventID == Self.validEventID)
        #expect(error?.message.hasPrefix("occurred_at ") == true)
    }

    @Test(arguments: [nil, .null, "{}", .integer(1), [], [["batch_id": "b"]]] as [JSONValue?])
    func invalidData(data: JSONValue?) {
        let error = Self.decodeError { $0["data"] = data }
        #expect(error?.reason == .invalidData)
        #expect(error?.eventID == Self.validEventID)
        #expect(error?.message == "data must be a JSON object")
    }

    @Test func emptyDataObjectIsAnObject() throws {
        var fields = Self.baseFields()
        fields["data"] = [:]
        #expect(try EnvelopeDecoder.decode(Self.bytes(fields), supportedVersions: Self.versions).data.isEmpty)
    }

    @Test func handlerFailedIsAReasonForHandlers() {
        let error = EnvelopeError(reason: .handlerFailed, message: "device registry rejected it", eventID: "e1")
        #expect(error.description == "handler_failed: device registry rejected it")
        #expect(DeadLetterReason(rawValue: "handler_failed") == .handlerFailed)
    }

    // MARK: Rule order

    @Test func ruleOrder() {
        // Each row breaks several rules; the first in the contract's order wins.
        let cases: [(DeadLetterReason, (inout [String: JSONValue]) -> Void)] = [
            (
                .missingEventID,
                {
                    $0["event_id"] = nil
                    $0["type"] = "nope"
                    $0["data"] = nil
                }
            ),
            (
                .invalidEventID,
                {
                    $0["event_id"] = "bad id"
                    $0["type"] = "nope"
                }
            ),
            (
                .invalidEventID,
                {
                    $0["event_id"] = 7
                    $0["version"] = 9
                    $0["tenant_id"] = nil
                }
            ),
            (
                .unknownType,
                {
                    $0["type"] = "nope"
                    $0["version"] = 9
                }
            ),
            (
                .unsupportedVersion,
                {
                    $0["version"] = 9
                    $0["tenant_id"] = "no/pe"
                }
            ),
            (
                .invalidTenant,
                {
                    $0["tenant_id"] = "no/pe"
                    $0["occurred_at"] = "never"
                }
            ),
            (
                .invalidData,
                {
                    $0["occurred_at"] = "never"
                    $0["data"] = nil
                }
            ),
        ]
        for (expected, change) in cases {
            #expect(Self.decodeError(change)?.reason == expected)
        }
        // Size is checked before anything else, JSON before the fields.
        #expect(Self.decodeError(Array("{\"event_id\":1}".utf8), maxBytes: 5)?.reason == .tooLarge)
        #expect(Self.decodeError { $0["occurred_at"] = "never" }?.message.hasPrefix("occurred_at") == true)
    }

    // MARK: occurred_at grammar

    @Test(
        "valid RFC 3339 timestamps",
        arguments: [
            "2026-11-22T10:00:00Z", "2026-11-22t10:00:00z", "2026-11-22T10:00:00.1Z", "2026-11-22T10:00:00.123456789Z",
            "2026-11-22T10:00:00+00:00", "2026-11-22T10:00:00-23:59", "2024-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
            "2016-12-31T23:59:60Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999+14:00", "2026-04-30T12:30:45Z",
        ])
    func validTimestamps(text: String) {
        #expect(Timestamp.isValid(text))
    }

    @Test(
        "invalid RFC 3339 timestamps",
        arguments: [
            "", "2026-11-22", "2026-11-22T10:00Z", "2026-11-22T10:00:00", "2026-11-22 10:00:00Z",
            "2026-11-22T10:00:00.Z", "2026-11-22T10:00:00.1234567890Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
            "2026-11-00T00:00:00Z", "2026-11-31T00:00:00Z", "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z", "2026-11-22T10:60:00Z", "2026-11-22T10:00:61Z", "2026-11-22T10:00:00+24:00",
            "2026-11-22T10:00:00+01:60", "2026-11-22T10:00:00+0100", "2026-11-22T10:00:00+01", "0000-01-01T00:00:00Z",
            "26-11-22T10:00:00Z", "2026-1-22T10:00:00Z", "2026-11-22T10:00:00ZZ", "2026-11-22T10:00:00Z ",
            " 2026-11-22T10:00:00Z", "2026-11-22T10:00:00UTC", "2026/11/22T10:00:00Z", "２０２６-11-22T10:00:00Z",
            "2026-11-22T1a:00:00Z", "2026-11-22T10:00:00,5Z", "+2026-11-22T10:00:00Z",
        ])
    func invalidTimestamps(text: String) {
        #expect(!Timestamp.isValid(text))
        let error = Self.decodeError { $0["occurred_at"] = .string(text) }
        #expect(error?.reason == .invalidData)
    }

    // MARK: EventData

    static func envelope(type: String, data: JSONValue) throws -> Envelope {
        var fields = baseFields()
        fields["type"] = .string(type)
        fields["data"] = data
        return try EnvelopeDecoder.decode(bytes(fields), supportedVersions: versions)
    }

    static func dataError(_ data: JSONValue, _ read: (EventData) throws(EnvelopeError) -> Void) throws -> EnvelopeError?
    {
        let envelope = try envelope(type: "batch.completed", data: data)
        do throws(EnvelopeError) {
            try read(EventData(envelope))
            return nil
        } catch {
            return error
        }
    }

    @Test func negativeCreditsNameTheField() throws {
        let error = try Self.dataError(["batch_id": "b", "account_id": "a", "credits": -5]) {
            data throws(EnvelopeError) in
            _ = try data.integer("credits", in: 0...1_000_000)
        }
        #expect(error?.reason == .invalidData)
        #expect(error?.eventID == Self.validEventID)
        #expect(error?.message == "data.credits must be an integer from 0 to 1000000")
    }

    @Test(arguments: [.number(5.5), .number(5.0), "5", .null, .bool(true)] as [JSONValue])
    func nonIntegersAreRejected(credits: JSONValue) throws {
        let error = try Self.dataError(["credits": credits]) { data throws(EnvelopeError) in
            _ = try data.integer("credits", in: 0...1_000_000)
        }
        #expect(error?.message == "data.credits must be an integer from 0 to 1000000")
    }

    @Test func integerReads() throws {
        let envelope = try Self.envelope(
            type: "batch.completed", data: ["credits": 1_000_000, "service_type_id": .null, "code": 3])
        let data = EventData(envelope)
        #expect(try data.integer("credits", in: 0...1_000_000) == 1_000_000)
        #expect(try data.optionalInteger("service_type_id", in: .min ... .max) == nil)
        #expect(try data.optionalInteger("absent", in: .min ... .max) == nil)
        #expect(try data.optionalInteger("code", in: 0...10) == 3)
        #expect(throws: EnvelopeError.self) { try data.integer("credits", in: 1...999_999) }
        #expect(throws: EnvelopeError.self) { try data.optionalInteger("code", in: 4...10) }
        let missing = try Self.dataError([:]) { data throws(EnvelopeError) in
            _ = try data.integer("credits", in: 0...1_000_000)
        }
        #expect(missing?.message == "data.credits is required: an integer from 0 to 1000000")
    }

    @Test func tooManyDevicesNameTheField() throws {
        let devices = JSONValue.array(Array(repeating: ["device_uid": "SER-0001"], count: 10_001))
        let error = try Self.dataError(["devices": devices]) { data throws(EnvelopeError) in
            _ = try data.objectArray("devices", count: 1...10_000)
        }
        #expect(error?.reason == .invalidData)
        #expect(error?.message == "data.devices must be an array of 1 to 10000 objects")
        let empty = try Self.dataError(["devices": []]) { data throws(EnvelopeError) in
            _ = try data.objectArray("devices", count: 1...10_000)
        }
        #expect(empty?.message == "data.devices must be an array of 1 to 10000 objects")
    }

    @Test func nestedDeviceFieldsNameTheElement() throws {
        let devices: JSONValue = [["device_uid": "A-1"], ["device_uid": "B-2"], ["device_uid": "C-3"], ["uid": "x"]]
        let envelope = try Self.envelope(type: "batch_action.requested", data: ["devices": devices])
        let objects = try EventData(envelope).objectArray("devices", count: 1...10_000)
        #expect(objects.count == 4)
        #expect(try objects[0].string("device_uid") == "A-1")
        #expect(objects[3].path == "data.devices[3]")
        #expect(objects[3].eventID == Self.validEventID)
        #expect(throws: EnvelopeError.self) { try objects[3].string("device_uid") }
        do throws(EnvelopeError) {
            _ = try objects[3].string("device_uid")
        } catch {
            #expect(error.message == "data.devices[3].device_uid is required: a string of 1 to 128 characters")
        }
        let notObject = try Self.dataError(["devices": [["device_uid": "A-1"], "B-2"]]) { data throws(EnvelopeError) in
            _ = try data.objectArray("devices", count: 1...10_000)
        }
        #expect(notObject?.message == "data.devices[1] must be an object")
    }

    @Test func missingCustomerIDsNameTheField() throws {
        let error = try Self.dataError(["request_id": "r", "user_id": "u"]) { data throws(EnvelopeError) in
            _ = try data.stringArray("customer_ids", count: 1...1000)
        }
        #expect(error?.reason == .invalidData)
        #expect(error?.eventID == Self.validEventID)
        #expect(error?.message == "data.customer_ids is required: an array of 1 to 1000 strings")
    }

    @Test func stringArrayChecksEveryElement() throws {
        let read: (EventData) throws(EnvelopeError) -> Void = { data throws(EnvelopeError) in
            _ = try data.stringArray("customer_ids", count: 1...1000)
        }
        #expect(
            try Self.dataError(["customer_ids": ["c1", 2]], read)?.message
                == "data.customer_ids[1] must be a string of 1 to 128 characters")
        #expect(
            try Self.dataError(["customer_ids": ["c1", ""]], read)?.message
                == "data.customer_ids[1] must be a string of 1 to 128 characters")
        #expect(
            try Self.dataError(["customer_ids": "c1"], read)?.message
                == "data.customer_ids must be an array of 1 to 1000 strings")
        let many = JSONValue.array(Array(repeating: "c", count: 1001))
        #expect(
            try Self.dataError(["customer_ids": many], read)?.message
                == "data.customer_ids must be an array of 1 to 1000 strings")
        let envelope = try Self.envelope(type: "job.requested", data: ["customer_ids": ["c1", "c\u{E9}"]])
        #expect(try EventData(envelope).stringArray("customer_ids", count: 1...1000) == ["c1", "c\u{E9}"])
    }

    @Test func stringReads() throws {
        let long = String(repeating: "\u{E9}", count: 128)
        let envelope = try Self.envelope(
            type: "batch.completed",
            data: ["batch_id": "b-1", "long": .string(long), "workflow_id": .null, "nul": "a\u{0}b", "n": 5])
        let data = EventData(envelope)
        #expect(try data.string("batch_id") == "b-1")
        #expect(try data.string("long") == long)  // 128 characters, 256 bytes
        #expect(throws: EnvelopeError.self) { try data.string("long", length: 1...127) }
        #expect(try data.optionalString("workflow_id") == nil)
        #expect(try data.optionalString("absent") == nil)
        #expect(try data.optionalString("batch_id") == "b-1")
        let nul = try Self.dataError(["nul": "a\u{0}b"]) { data throws(EnvelopeError) in _ = try data.string("nul") }
        #expect(nul?.message == "data.nul must not contain U+0000")
        let number = try Self.dataError(["n": 5]) { data throws(EnvelopeError) in _ = try data.string("n") }
        #expect(number?.message == "data.n must be a string of 1 to 128 characters")
        let exact = try Self.dataError(["n": "12"]) { data throws(EnvelopeError) in
            _ = try data.string("n", length: 15...15)
        }
        #expect(exact?.message == "data.n must be a string of 15 characters")
    }

    @Test func oneOfListsTheChoices() throws {
        let actions: Set<String> = ["REGISTER", "DEREGISTER", "LOCK", "UNLOCK", "WORKFLOW_ACTION", "EXIT_WORKFLOW"]
        let envelope = try Self.envelope(type: "batch_action.requested", data: ["action": "LOCK"])
        #expect(try EventData(envelope).oneOf("action", actions) == "LOCK")
        let error = try Self.dataError(["action": "lock"]) { data throws(EnvelopeError) in
            _ = try data.oneOf("action", actions)
        }
        #expect(
            error?.message
                == "data.action must be one of DEREGISTER, EXIT_WORKFLOW, LOCK, REGISTER, UNLOCK, WORKFLOW_ACTION")
    }

    @Test func arrayAndObjectReads() throws {
        let envelope = try Self.envelope(
            type: "batch.completed", data: ["items": [1, "two", .null], "meta": ["source": "api"]])
        let data = EventData(envelope)
        #expect(try data.array("items", count: 1...3) == [1, "two", .null])
        #expect(throws: EnvelopeError.self) { try data.array("items", count: 1...2) }
        #expect(try data.object("meta").string("source") == "api")
        #expect(try data.object("meta").path == "data.meta")
        #expect(data.error("data.workflow_id is required for WORKFLOW_ACTION").reason == .invalidData)
        #expect(data.error("x").eventID == Self.validEventID)
    }
}
