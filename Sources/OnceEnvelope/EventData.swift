import OnceJSON

/// Typed, checked reads of an event's `data` object (or of an object nested in it).
///
/// Each read either returns a value that meets its rule or throws an `EnvelopeError` with reason
/// `invalid_data`, the envelope's event id, and a message naming the field by its path:
///
///     data.credits must be an integer from 0 to 1000000
///     data.devices must be an array of 1 to 10000 items
///     data.devices[3].device_uid is required: a string of 1 to 128 characters
///
/// String lengths count Unicode scalars (what PostgreSQL's `char_length` counts). Strings may not
/// contain U+0000, which PostgreSQL text cannot store. An integer must be written as one: `5.0`
/// and `5e0` are rejected.
public struct EventData: Sendable, Hashable {
    /// The members of the object.
    public var fields: [String: JSONValue]
    /// The event id reported in errors.
    public var eventID: String?
    /// How messages name this object: `data`, or e.g. `data.devices[3]` for a nested object.
    public var path: String

    /// The `data` of `envelope`.
    public init(_ envelope: Envelope) {
        self.init(envelope.data, eventID: envelope.eventID)
    }

    public init(_ fields: [String: JSONValue], eventID: String?, path: String = "data") {
        self.fields = fields
        self.eventID = eventID
        self.path = path
    }

    /// The raw member named `field`, if present (a JSON `null` is present).
    public subscript(field: String) -> JSONValue? {
        fields[field]
    }

    /// Whether `field` is absent or `null`.
    public func isAbsentOrNull(_ field: String) -> Bool {
        switch fields[field] {
        case nil, .null?: return true
        default: return false
        }
    }

    // MARK: Strings

    /// A required string of `length` Unicode scalars.
    public func string(_ field: String, length: ClosedRange<Int> = 1...128) throws(EnvelopeError) -> String {
        let expectation = "a string of \(Self.describe(length, unit: "character"))"
        guard let value = fields[field] else { throw missing(field, expectation) }
        return try checkedString(value, at: name(field), length: length, expectation: expectation)
    }

    /// A string of `length` Unicode scalars, or `nil` when `field` is absent or `null`.
    public func optionalString(_ field: String, length: ClosedRange<Int> = 1...128) throws(EnvelopeError) -> String? {
        if isAbsentOrNull(field) { return nil }
        return try string(field, length: length)
    }

    /// A required string that is one of `allowed`.
    public func oneOf(_ field: String, _ allowed: Set<String>) throws(EnvelopeError) -> String {
        let expectation = "one of \(allowed.sorted().joined(separator: ", "))"
        guard let value = fields[field] else { throw missing(field, expectation) }
        guard case .string(let text) = value, allowed.contains(text) else {
            throw invalid(name(field), expectation)
        }
        return text
    }

    // MARK: Integers

    /// A required integer in `range`.
    public func integer(_ field: String, in range: ClosedRange<Int64>) throws(EnvelopeError) -> Int64 {
        let expectation = "an integer from \(range.lowerBound) to \(range.upperBound)"
        guard let value = fields[field] else { throw missing(field, expectation) }
        guard case .integer(let integer) = value, range.contains(integer) else {
            throw invalid(name(field), expectation)
        }
        return integer
    }

    /// An integer in `range`, or `nil` when `field` is absent or `null`.
    public func optionalInteger(_ field: String, in range: ClosedRange<Int64>) throws(EnvelopeError) -> Int64? {
        if isAbsentOrNull(field) { return nil }
        return try integer(field, in: range)
    }

    // MARK: Arrays and objects

    /// A required array with `count` elements of any kind.
    public func array(_ field: String, count: ClosedRange<Int>) throws(EnvelopeError) -> [JSONValue] {
        try checkedArray(field, count: count, of: "item")
    }

    /// A required array with `count` elements, each a string of `elementLength` Unicode scalars.
    public func stringArray(
        _ field: String,
        count: ClosedRange<Int>,
        elementLength: ClosedRange<Int> = 1...128
    ) throws(EnvelopeError) -> [String] {
        let elements = try checkedArray(field, count: count, of: "string")
        let expectation = "a string of \(Self.describe(elementLength, unit: "character"))"
        var strings: [String] = []
        strings.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            strings.append(
                try checkedString(
                    element, at: "\(name(field))[\(index)]", length: elementLength, expectation: expectation))
        }
        return strings
    }

    /// A required array with `count` elements, each an object, read as nested `EventData` whose
    /// messages name the element (`data.devices[3].device_uid`).
    public func objectArray(_ field: String, count: ClosedRange<Int>) throws(EnvelopeError) -> [EventData] {
        let elements = try checkedArray(field, count: count, of: "object")
        var objects: [EventData] = []
        objects.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            let elementPath = "\(name(field))[\(index)]"
            guard case .object(let members) = element else { throw invalid(elementPath, "an object") }
            objects.append(EventData(members, eventID: eventID, path: elementPath))
        }
        return objects
    }

    /// A required object, read as nested `EventData` (`data.<field>.<member>` in messages).
    public func object(_ field: String) throws(EnvelopeError) -> EventData {
        guard let value = fields[field] else { throw missing(field, "an object") }
        guard case .object(let members) = value else { throw invalid(name(field), "an object") }
        return EventData(members, eventID: eventID, path: name(field))
    }

    // MARK: Errors

    /// An `invalid_data` error for this event with `message` as is, for rules the typed reads do
    /// not cover (e.g. "data.workflow_id is required for WORKFLOW_ACTION").
    public func error(_ message: String) -> EnvelopeError {
        EnvelopeError(reason: .invalidData, message: message, eventID: eventID)
    }

    /// The path of `field` in messages, e.g. `data.credits`.
    public func name(_ field: String) -> String {
        "\(path).\(field)"
    }

    private func missing(_ field: String, _ expectation: String) -> EnvelopeError {
        error("\(name(field)) is required: \(expectation)")
    }

    private func invalid(_ fieldPath: String, _ expectation: String) -> EnvelopeError {
        error("\(fieldPath) must be \(expectation)")
    }

    // MARK: Checks

    private func checkedArray(
        _ field: String,
        count: ClosedRange<Int>,
        of element: String
    ) throws(EnvelopeError) -> [JSONValue] {
        let expectation = "an array of \(Self.describe(count, unit: element))"
        guard let value = fields[field] else { throw missing(field, expectation) }
        guard case .array(let elements) = value, count.contains(elements.count) else {
            throw invalid(name(field), expectation)
        }
        return elements
    }

    private func checkedString(
        _ value: JSONValue,
        at fieldPath: String,
        length: ClosedRange<Int>,
        expectation: String
    ) throws(EnvelopeError) -> String {
        guard case .string(let text) = value else { throw invalid(fieldPath, expectation) }
        var scalars = 0
        for scalar in text.unicodeScalars {
            if scalar.value == 0 { throw error("\(fieldPath) must not contain U+0000") }
            scalars += 1
        }
        guard length.contains(scalars) else { throw invalid(fieldPath, expectation) }
        return text
    }

    /// "1 to 128 characters", "15 characters", "1 character".
    private static func describe(_ range: ClosedRange<Int>, unit: String) -> String {
        let plural = range.upperBound == 1 ? unit : unit + "s"
        if range.lowerBound == range.upperBound { return "\(range.lowerBound) \(plural)" }
        return "\(range.lowerBound) to \(range.upperBound) \(plural)"
    }
}
