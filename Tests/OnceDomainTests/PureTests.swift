import Crypto
import OnceEnvelope
import OnceJSON
import OncePostgres
import Testing

@testable import OnceDomain

@Suite("SHA-1 and name-based UUIDs")
struct NameBasedUUIDTests {
    private func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// The digest `NameBasedUUID` takes its bytes from.
    private func sha1(_ bytes: some Sequence<UInt8>) -> Insecure.SHA1Digest {
        Insecure.SHA1.hash(data: Array(bytes))
    }

    @Test("SHA-1 (swift-crypto's, as NameBasedUUID uses it) matches the FIPS 180 and common test vectors")
    func sha1Vectors() {
        #expect(hex(sha1("".utf8)) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex(sha1("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            hex(sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(
            hex(sha1("The quick brown fox jumps over the lazy dog".utf8))
                == "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12")
        // Padding edges: 55, 56 and 64 bytes.
        #expect(hex(sha1([UInt8](repeating: 0x61, count: 55))) == "c1c8bbdc22796e28c0e15163d20899b65621d65a")
        #expect(hex(sha1([UInt8](repeating: 0x61, count: 56))) == "c2db330f6083854c99d4b5bfb6e8f29f201be699")
        #expect(hex(sha1([UInt8](repeating: 0x61, count: 64))) == "0098ba824b5c16427bd7a1122a5a442a25ec644d")
        #expect(
            hex(sha1([UInt8](repeating: 0x61, count: 1_000_000))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        // Fed in pieces, the same digest.
        var hasher = Insecure.SHA1()
        let bytes = (0..<3).flatMap { _ in (0...255).map(UInt8.init) }
        for piece in stride(from: 0, to: bytes.count, by: 37) {
            hasher.update(data: Array(bytes[piece..<min(piece + 37, bytes.count)]))
        }
        #expect(hex(hasher.finalize()) == "ac2a264c8ec1f4232a40854e8239bc3a697ab1d2")
    }

    @Test("UUID v5 matches RFC 9562 / Python's uuid5 and round-trips its text")
    func uuidV5() throws {
        #expect(
            NameBasedUUID(namespace: .dnsNamespace, name: "python.org").description
                == "886313e1-3b8a-5372-9b90-0c9aee199e5d")
        #expect(
            NameBasedUUID(namespace: .dnsNamespace, name: "www.example.com").description
                == "2ed6657d-e927-568b-95e1-2665a8aea6a2")
        // Known answers from Python's uuid.uuid5: an empty name, and a non-ASCII name longer
        // than one SHA-1 block with the namespace in front.
        #expect(NameBasedUUID(namespace: .dnsNamespace, name: "").description == "4ebd0208-8328-5d69-8c44-ec50939c0967")
        #expect(
            NameBasedUUID(namespace: .onceNamespace, name: "job/zürich-tenant/" + String(repeating: "r", count: 100))
                .description == "d053baed-ba8b-515c-8071-671105398f68")
        let parsed = try #require(NameBasedUUID(parsing: "6BA7B810-9DAD-11D1-80B4-00C04FD430C8"))
        #expect(parsed == .dnsNamespace)
        #expect(NameBasedUUID(parsing: "6ba7b810-9dad-11d1-80b4-00c04fd430c") == nil)
        #expect(NameBasedUUID(parsing: "6ba7b810x9dad-11d1-80b4-00c04fd430c8") == nil)
    }

    @Test("outbound event ids and job ids are fixed functions of the business key")
    func deterministicIDs() {
        // Pinned: changing the namespace or the name layout would re-identify every event.
        #expect(
            Domain.outboundEventID(type: "credits.charged", tenantID: "acme", aggregateID: "b-1")
                == "4f92ab45-b565-5fb7-bc63-88d58e2c25f5")
        #expect(
            Domain.outboundEventID(type: "credits.granted", tenantID: "acme", aggregateID: "g-1")
                == "906ccd41-23c2-50bc-801d-8933cba62e89")
        #expect(
            Domain.outboundEventID(
                type: "batch_action.device_dispatched", tenantID: "acme", aggregateID: "ba-1/SN-0001")
                == "9990f45f-2901-56e6-861d-c14adceb53f1")
        #expect(
            Domain.outboundEventID(type: "job.created", tenantID: "acme", aggregateID: "r-1")
                == "0a1b1ab5-7313-58b0-9f62-82c234950e24")
        #expect(JobRequestedHandler.jobID(tenantID: "acme", requestID: "r-1") == "651f6e90-b8c4-5c46-a7d2-c175b60cf02a")
        // Another tenant, another id.
        #expect(
            Domain.outboundEventID(type: "credits.charged", tenantID: "other", aggregateID: "b-1")
                != Domain.outboundEventID(type: "credits.charged", tenantID: "acme", aggregateID: "b-1"))
    }
}

@Suite("Timestamps, device uids, decoding")
struct DomainLogicTests {
    @Test("RFC 3339 text becomes exact microseconds, offsets beyond PostgreSQL's range included")
    func timestamps() {
        #expect(Timestamp.microsecondsSinceEpoch("2026-11-22T10:00:00Z") == 1_795_341_600_000_000)
        #expect(Timestamp.microsecondsSinceEpoch("2024-02-29T12:30:00.123456-05:30") == 1_709_229_600_123_456)
        #expect(Timestamp.microsecondsSinceEpoch("2024-02-29t12:30:00.1234564-05:30") == 1_709_229_600_123_456)
        #expect(Timestamp.microsecondsSinceEpoch("2024-02-29T12:30:00.1234565-05:30") == 1_709_229_600_123_457)
        #expect(Timestamp.microsecondsSinceEpoch("0001-01-01T00:00:00+01:00") == -62_135_600_400_000_000)
        #expect(Timestamp.microsecondsSinceEpoch("2016-12-31T23:59:60Z") == 1_483_228_800_000_000)
        #expect(Timestamp.microsecondsSinceEpoch("9999-12-31T23:59:59.999999+23:59") == 253_402_214_459_999_999)
        for bad in [
            "", "2026-11-22", "2026-11-22 10:00:00Z", "2026-02-29T10:00:00Z", "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00", "2026-11-22T10:00:00+24:00", "2026-11-22T10:00:00.Z", "0000-01-01T00:00:00Z",
            "2026-11-22T10:00:00.1234567890Z", "2026-11-22T10:00:00Zjunk",
        ] {
            #expect(Timestamp.microsecondsSinceEpoch(bad) == nil, "\(bad)")
        }
    }

    @Test("device uid rule 1: 15 digits or 4 to 64 of [A-Za-z0-9-]")
    func deviceUIDs() {
        for good in ["490154203237518", "SN-0001", "abcd", String(repeating: "x", count: 64), "12345678901234", "----"]
        {
            #expect(DeviceUID.isValid(good), "\(good)")
        }
        for bad in ["", "abc", String(repeating: "x", count: 65), "SN_0001", "SN 0001", "ÄBCD", "sn/0001", "١٢٣٤"] {
            #expect(!DeviceUID.isValid(bad), "\(bad)")
        }
    }

    @Test("the first item of each business key applies; the others are duplicate or conflict against its row")
    func firstPerBusinessKey() throws {
        struct PermanentMissing: Error { var index: Int }
        // Items as (key, value); a row records a value, and an item is the same when the values match.
        let items: [(key: String, value: Int)] = [
            ("a", 1), ("b", 2), ("a", 1), ("c", 3), ("b", 9), ("a", 5), ("d", 4), ("c", 3),
        ]
        let byKey = FirstPerBusinessKey(items) { $0.key }
        #expect(byKey.keys == ["a", "b", "a", "c", "b", "a", "d", "c"])
        #expect(byKey.firsts == [0, 1, 3, 6])
        // The insert wrote rows for a and d; b and c stood already (c differently from item 3).
        #expect(byKey.seenBefore(inserted: ["a", "d"]) == ["b", "c"])
        let settled = try byKey.settle(
            inserted: ["a", "d"], written: { items[$0].value }, existing: ["b": 2, "c": 7],
            same: { items[$0].value == $1 }, missing: { PermanentMissing(index: $0) })
        #expect(
            settled.outcomes == [.applied, .duplicate, .duplicate, .conflict, .conflict, .conflict, .applied, .conflict])
        #expect(settled.applied == [0, 6])
        #expect(settled.conflicts.map(\.index) == [3, 4, 5, 7])
        #expect(settled.conflicts.map(\.held) == [7, 2, 1, 7])
        // A key with no row at all, written or read back, is an error, not an outcome.
        #expect(throws: PermanentMissing.self) {
            try byKey.settle(
                inserted: ["a"], written: { items[$0].value }, existing: ["b": 2], same: { items[$0].value == $1 },
                missing: { PermanentMissing(index: $0) })
        }
    }

    @Test("one credit handler, two event types: each keeps its types, business-key field and credits range")
    func creditEventTypes() {
        #expect(BatchCompletedHandler.eventType == "batch.completed")
        #expect(BatchCompletedHandler.chargedType == "credits.charged")
        #expect(BatchCompletedHandler.maxCredits == 1_000_000)
        #expect(LedgerKind.charge.businessKeyField == "batch_id")
        #expect(LedgerKind.charge.credits == 0...1_000_000)
        #expect(CreditsGrantedHandler.eventType == "credits.granted")
        #expect(CreditsGrantedHandler.grantedType == "credits.granted")
        #expect(CreditsGrantedHandler.maxCredits == 1_000_000_000)
        #expect(LedgerKind.grant.businessKeyField == "grant_id")
        #expect(LedgerKind.grant.credits == 1...1_000_000_000)
        #expect(Domain.eventTypes == ["batch.completed", "credits.granted", "batch_action.requested", "job.requested"])
    }

    @Test("a batch action of 10,000 devices is classified by one statement with one array")
    func oneStatementPerEvent() throws {
        let handler = BatchActionRequestedHandler()
        let envelope = Envelope(
            eventID: "e-1", type: BatchActionRequestedHandler.eventType, version: 1, tenantID: "acme",
            occurredAt: "2026-11-22T10:00:00Z",
            data: [
                "batch_action_id": "ba-1", "action": "LOCK", "service_type_id": .null,
                "devices": .array((0..<10_000).map { .object(["device_uid": .string("SN-\($0)")]) }),
            ])
        let command = try handler.decode(envelope)
        #expect(command.deviceUIDs.count == 10_000)
        let statement = BatchActionRequestedHandler.classification(of: envelope, command)
        // The uids travel as one parameter; no statement text depends on the device count.
        let arrays = statement.parameters.compactMap { value -> Int? in
            if case .textArray(let items) = value { return items.count }
            return nil
        }
        #expect(arrays == [10_000, 1])  // the uids, the allowed states of LOCK
        #expect(statement.sql == BatchActionRequestedHandler.classifySQL)
        #expect(statement.sql.contains("unnest($4::text[])"))
    }

    @Test("decode collapses repeated uids, keeps their first order, and names broken fields")
    func decodeBatchAction() throws {
        let handler = BatchActionRequestedHandler()
        func envelope(_ data: [String: JSONValue]) -> Envelope {
            Envelope(
                eventID: "e-1", type: BatchActionRequestedHandler.eventType, version: 1, tenantID: "acme",
                occurredAt: "2026-11-22T10:00:00Z", data: data)
        }
        let devices: JSONValue = .array(
            ["B-0001", "A-0001", "B-0001", ""].map { .object(["device_uid": .string($0)]) })
        let command = try handler.decode(envelope(["batch_action_id": "ba", "action": "REGISTER", "devices": devices]))
        #expect(command.deviceUIDs == ["B-0001", "A-0001", ""])
        #expect(command.serviceTypeID == nil && command.workflowID == nil)

        func message(_ data: [String: JSONValue]) -> String? {
            do {
                _ = try handler.decode(envelope(data))
                return nil
            } catch {
                #expect(error.reason == .invalidData)
                return error.message
            }
        }
        #expect(
            message(["batch_action_id": "ba", "action": "EXPLODE", "devices": devices])?.hasPrefix("data.action")
                == true)
        #expect(
            message(["batch_action_id": "ba", "action": "WORKFLOW_ACTION", "devices": devices])
                == "data.workflow_id is required for WORKFLOW_ACTION: a string of 1 to 128 characters")
        #expect(
            message(["batch_action_id": "ba", "action": "LOCK", "service_type_id": "7", "devices": devices])?
                .hasPrefix("data.service_type_id") == true)
        #expect(
            message(["batch_action_id": "ba", "action": "LOCK", "devices": .array([.object(["device_uid": 5])])])?
                .hasPrefix("data.devices[0].device_uid") == true)
        #expect(
            message(["batch_action_id": "ba", "action": "LOCK", "devices": .array([])])?.hasPrefix("data.devices")
                == true)
        #expect(message(["action": "LOCK", "devices": devices])?.hasPrefix("data.batch_action_id") == true)
    }
}

@Suite("Outbound events built before their balance is known")
struct PendingBalanceEventTests {
    func event(account: String) -> OutboundEvent {
        let source = Envelope(
            eventID: "e-1", type: BatchCompletedHandler.eventType, version: 1, tenantID: "acme",
            occurredAt: "2026-11-22T10:00:00.123Z", data: [:])
        return OutboundEvent(
            type: BatchCompletedHandler.chargedType, tenantID: "acme", aggregateID: "b-1", topic: "credit-ledger",
            key: account, source: source,
            data: ["batch_id": "b-1", "account_id": .string(account), "credits": 40])
    }

    @Test("filling the hole gives the bytes of the event built whole, whatever the balance and the strings")
    func sameBytesAsBuiltWhole() {
        // An account id that spells the member inside a string must not be mistaken for it.
        for account in ["acc-1", "\"balance_after\":-9223372036854775808", "ü-\u{1}"] {
            let pending = PendingBalanceEvent(event(account: account))
            for balance: Int64 in [0, -40, 7, 1_000_000_000_000, .min, .max] {
                var whole = event(account: account)
                whole.data["balance_after"] = .integer(balance)
                #expect(pending.message(balanceAfter: balance) == whole.outboxMessage, "\(account) \(balance)")
            }
        }
    }
}
