import OnceJSON

/// Why a record was dead-lettered. The raw values are the contract's `dead_letters.reason_code`s.
public enum DeadLetterReason: String, Sendable, Hashable, CaseIterable {
    case invalidJSON = "invalid_json"
    case missingEventID = "missing_event_id"
    case invalidEventID = "invalid_event_id"
    case unknownType = "unknown_type"
    case unsupportedVersion = "unsupported_version"
    case invalidTenant = "invalid_tenant"
    case invalidData = "invalid_data"
    case tooLarge = "too_large"
    case handlerFailed = "handler_failed"
}

/// One inbound event, checked against the envelope rules of the contract (§1).
///
/// Every field has passed its rule: `eventID` is 1...128 characters of `[A-Za-z0-9._:-]`, `type`
/// and `version` are a supported pair, `tenantID` is 1...64 characters of `[A-Za-z0-9._-]`, and
/// `occurredAt` is an RFC 3339 timestamp, kept exactly as the producer wrote it. `data` is the
/// type's payload object, not yet checked; handlers read it through `EventData`, which reports a
/// broken field as `invalid_data`. Fields of the record beyond these six are ignored.
public struct Envelope: Sendable, Hashable {
    /// The producer's id for this emission.
    public var eventID: String
    /// The event type, e.g. `batch.completed`.
    public var type: String
    /// The schema version of `type`.
    public var version: Int
    /// The tenant the event belongs to.
    public var tenantID: String
    /// When the event happened, as RFC 3339 text.
    public var occurredAt: String
    /// The type-specific payload.
    public var data: [String: JSONValue]

    public init(
        eventID: String,
        type: String,
        version: Int,
        tenantID: String,
        occurredAt: String,
        data: [String: JSONValue]
    ) {
        self.eventID = eventID
        self.type = type
        self.version = version
        self.tenantID = tenantID
        self.occurredAt = occurredAt
        self.data = data
    }

    /// The envelope as a JSON object with the contract's field names, e.g. for an outbound event
    /// (`JSONWriter.serialize(envelope.jsonValue)`).
    public var jsonValue: JSONValue {
        .object([
            "event_id": .string(eventID),
            "type": .string(type),
            "version": .integer(Int64(version)),
            "tenant_id": .string(tenantID),
            "occurred_at": .string(occurredAt),
            "data": .object(data),
        ])
    }
}

/// Why a record cannot be processed, ever: it goes to the dead letters with `reason`.
///
/// `message` names the broken field (`data.credits must be an integer from 0 to 1000000`).
/// `eventID` is set only when the record's `event_id` was readable and valid, so the pipeline can
/// record it; otherwise the pipeline identifies the record by its synthetic id.
public struct EnvelopeError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: DeadLetterReason
    public var message: String
    public var eventID: String?
    /// The record's `tenant_id` and `occurred_at` where they are readable and valid, whatever
    /// rule the record broke: the claim of a rejected record is keyed by its tenant and put in
    /// its time partition like any other.
    public var tenantID: String?
    public var occurredAt: String?

    public init(
        reason: DeadLetterReason, message: String, eventID: String? = nil, tenantID: String? = nil,
        occurredAt: String? = nil
    ) {
        self.reason = reason
        self.message = message
        self.eventID = eventID
        self.tenantID = tenantID
        self.occurredAt = occurredAt
    }

    public var description: String {
        "\(reason.rawValue): \(message)"
    }
}

/// Turns a record value into an `Envelope`, or says which rule it breaks.
public enum EnvelopeDecoder {
    /// The largest record value accepted by default: 4 MiB.
    public static let defaultMaxBytes = 4 * 1024 * 1024

    /// The longest `event_id`.
    public static let maxEventIDLength = 128
    /// The longest `tenant_id`.
    public static let maxTenantIDLength = 64

    /// Decodes and checks a record value.
    ///
    /// The rules are checked in this order and the first broken one decides the reason:
    /// size (`too_large`, before parsing), JSON object (`invalid_json`), `event_id`
    /// (`missing_event_id` when absent or null, `invalid_event_id`), `type` (`unknown_type`),
    /// `version` (`unsupported_version`), `tenant_id` (`invalid_tenant`), `occurred_at` and then
    /// `data` (`invalid_data`).
    ///
    /// - Parameters:
    ///   - value: The record value; `nil` for a record without one.
    ///   - supportedVersions: Each known event type with the versions this consumer handles.
    ///   - maxBytes: The largest value accepted.
    public static func decode(
        _ value: [UInt8]?,
        supportedVersions: [String: Set<Int>],
        maxBytes: Int = defaultMaxBytes
    ) throws(EnvelopeError) -> Envelope {
        if let value, value.count > maxBytes {
            throw EnvelopeError(
                reason: .tooLarge, message: "record value is \(value.count) bytes; the limit is \(maxBytes)")
        }
        guard let value else {
            throw EnvelopeError(reason: .invalidJSON, message: "record has no value")
        }
        let document: JSONValue
        do throws(JSONParseError) {
            document = try JSONParser.parse(value)
        } catch {
            throw EnvelopeError(reason: .invalidJSON, message: error.description)
        }
        guard case .object(let fields) = document else {
            throw EnvelopeError(
                reason: .invalidJSON, message: "record value must be a JSON object, not \(document.kindDescription)")
        }
        // Read ahead of their turn, so that an error about an earlier field still names them.
        var readableTenant: String?
        if case .string(let text)? = fields["tenant_id"], isValidTenantID(text) { readableTenant = text }
        var readableTime: String?
        if case .string(let text)? = fields["occurred_at"], Timestamp.isValid(text) { readableTime = text }
        func rejected(_ reason: DeadLetterReason, _ message: String, eventID: String? = nil) -> EnvelopeError {
            EnvelopeError(reason: reason, message: message, eventID: eventID, tenantID: readableTenant, occurredAt: readableTime)
        }

        // event_id
        let eventID: String
        switch fields["event_id"] {
        case nil, .null?:
            throw rejected(.missingEventID, "event_id is missing")
        case .string(let text)? where isValidEventID(text):
            eventID = text
        default:
            throw rejected(
                .invalidEventID, "event_id must be 1..\(maxEventIDLength) characters of [A-Za-z0-9._:-]")
        }

        // type
        guard case .string(let type)? = fields["type"] else {
            throw rejected(
                .unknownType, "type must be a string, one of \(knownTypes(supportedVersions))",
                eventID: eventID)
        }
        guard let versions = supportedVersions[type] else {
            throw rejected(
                .unknownType, "type \(quoted(type)) is not one of \(knownTypes(supportedVersions))",
                eventID: eventID)
        }

        // version
        let supported = { versions.sorted().map(String.init).joined(separator: ", ") }
        guard case .integer(let rawVersion)? = fields["version"], let version = Int(exactly: rawVersion) else {
            throw rejected(
                .unsupportedVersion, "version must be an integer; \(type) supports \(supported())",
                eventID: eventID)
        }
        guard versions.contains(version) else {
            throw rejected(
                .unsupportedVersion, "version \(version) of \(type) is not supported; supported: \(supported())",
                eventID: eventID)
        }

        // tenant_id
        guard case .string(let tenantID)? = fields["tenant_id"], isValidTenantID(tenantID) else {
            throw rejected(
                .invalidTenant, "tenant_id must be 1..\(maxTenantIDLength) characters of [A-Za-z0-9._-]",
                eventID: eventID)
        }

        // occurred_at
        guard case .string(let occurredAt)? = fields["occurred_at"], Timestamp.isValid(occurredAt) else {
            throw rejected(
                .invalidData, "occurred_at must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z",
                eventID: eventID)
        }

        // data
        guard case .object(let data)? = fields["data"] else {
            throw rejected(.invalidData, "data must be a JSON object", eventID: eventID)
        }

        return Envelope(
            eventID: eventID, type: type, version: version, tenantID: tenantID, occurredAt: occurredAt, data: data)
    }

    /// Whether `text` is 1...128 characters of `[A-Za-z0-9._:-]`.
    public static func isValidEventID(_ text: String) -> Bool {
        isASCIIIdentifier(text, maxLength: maxEventIDLength, allowColon: true)
    }

    /// Whether `text` is 1...64 characters of `[A-Za-z0-9._-]`.
    public static func isValidTenantID(_ text: String) -> Bool {
        isASCIIIdentifier(text, maxLength: maxTenantIDLength, allowColon: false)
    }

    private static func isASCIIIdentifier(_ text: String, maxLength: Int, allowColon: Bool) -> Bool {
        let utf8 = text.utf8
        // Every allowed character is one byte, so the byte count is the character count.
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                return true
            case UInt8(ascii: ":"):
                return allowColon
            default:
                return false
            }
        }
    }

    private static func knownTypes(_ supportedVersions: [String: Set<Int>]) -> String {
        supportedVersions.keys.sorted().joined(separator: ", ")
    }

    /// `text` as a JSON string literal, cut to 64 characters so a hostile value cannot flood the
    /// dead-letter message.
    private static func quoted(_ text: String) -> String {
        let limit = 64
        let unicodeScalars = text.unicodeScalars
        guard unicodeScalars.count > limit else { return JSONWriter.serializeString(.string(text)) }
        let prefix = String(String.UnicodeScalarView(unicodeScalars.prefix(limit)))
        return JSONWriter.serializeString(.string(prefix)) + "…"
    }
}
