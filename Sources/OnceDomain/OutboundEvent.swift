import OnceEnvelope
import OnceJSON
import OnceOutbox

/// An event this service publishes (CONTRACT.md §3), built into its outbox row.
///
/// The record value is the contract's envelope, serialised with sorted keys:
///
///     {"data":{…},"event_id":"<uuid>","occurred_at":"<source event's>","tenant_id":"…","type":"…","version":1}
///
/// Everything in it is derived from the business key and the source event, never from the
/// clock or a random source, so the same effect always yields the same bytes:
/// - `event_id` is the name-based UUID (version 5, `NameBasedUUID.onceNamespace`) of
///   `"<type>/<tenant_id>/<aggregate_id>"` — unambiguous because neither a type nor a tenant id
///   contains `/`;
/// - `occurred_at` is the `occurred_at` of the source event that caused the effect.
///
/// The outbox row's business key is (tenant, type, aggregate id), so at most one event per key
/// is ever queued, however many times the source is delivered.
struct OutboundEvent {
    var type: String
    var tenantID: String
    /// The business key within the tenant: a batch id, grant id, `<batch_action_id>/<device_uid>`
    /// or request id.
    var aggregateID: String
    var topic: String
    var key: String
    /// The source event, for `occurred_at` and the tracing header.
    var source: Envelope
    /// The headers that carry the source record's trace on (`HandlerInput.traceHeaders`).
    var traceHeaders: [String: String] = [:]
    var data: [String: JSONValue]

    /// The deterministic event id of (type, tenant, aggregate).
    static func eventID(type: String, tenantID: String, aggregateID: String) -> String {
        NameBasedUUID(namespace: .onceNamespace, name: "\(type)/\(tenantID)/\(aggregateID)").description
    }

    var eventID: String { Self.eventID(type: type, tenantID: tenantID, aggregateID: aggregateID) }

    func envelope(eventID: String) -> Envelope {
        Envelope(
            eventID: eventID, type: type, version: 1, tenantID: tenantID, occurredAt: source.occurredAt, data: data)
    }

    var outboxMessage: OutboxMessage {
        let eventID = self.eventID  // a SHA-1: computed once per event
        return OutboxMessage(
            tenantID: tenantID,
            eventType: type,
            aggregateID: aggregateID,
            topic: topic,
            key: key,
            payload: JSONWriter.serialize(envelope(eventID: eventID).jsonValue),
            headers: traceHeaders.merging([
                "once-event-id": eventID,
                "once-event-type": type,
                "once-tenant-id": tenantID,
                "once-source-event-id": source.eventID,
            ]) { _, own in own })
    }
}

extension Domain {
    /// The `event_id` that the outbound event of `type` for `aggregateID` in `tenantID` carries
    /// (see CONTRACT.md §3): a name-based UUID, the same on every publication.
    public static func outboundEventID(type: String, tenantID: String, aggregateID: String) -> String {
        OutboundEvent.eventID(type: type, tenantID: tenantID, aggregateID: aggregateID)
    }
}

/// An outbound event built before its `data.balance_after` is known (the balance is read only
/// once the account is locked, right before the commit): the message with a hole where the
/// value's digits go, filled by copying bytes, so no JSON or id is computed while the lock is held.
/// The bytes are those `OutboundEvent.outboxMessage` gives with the value in place.
struct PendingBalanceEvent {
    private static let placeholder = Int64.min
    /// Inside a JSON string a quote is escaped, so `"balance_after":` marks the member itself.
    private static let member = Array("\"balance_after\":".utf8)
    private static let needle = member + Array(String(placeholder).utf8)
    private var template: OutboxMessage
    /// Where the placeholder's digits are in the template's payload.
    private var hole: Range<Int> = 0..<0
    /// Kept only if the hole was not found (a safety net): each message is then built in full.
    private var unsplit: OutboundEvent?

    init(_ event: OutboundEvent) {
        var withPlaceholder = event
        withPlaceholder.data["balance_after"] = .integer(Self.placeholder)
        template = withPlaceholder.outboxMessage
        let (member, needle) = (Self.member, Self.needle)
        let payload = template.payload ?? []
        if payload.count >= needle.count,
            let start = (0...(payload.count - needle.count)).first(where: {
                payload[$0..<($0 + needle.count)].elementsEqual(needle)
            })
        {
            hole = (start + member.count)..<(start + needle.count)
        } else {
            unsplit = event
        }
    }

    func message(balanceAfter: Int64) -> OutboxMessage {
        if var complete = unsplit {
            complete.data["balance_after"] = .integer(balanceAfter)
            return complete.outboxMessage
        }
        let payload = template.payload ?? []
        var message = template
        var filled: [UInt8] = []
        filled.reserveCapacity(payload.count)
        filled.append(contentsOf: payload[..<hole.lowerBound])
        filled.append(contentsOf: String(balanceAfter).utf8)
        filled.append(contentsOf: payload[hole.upperBound...])
        message.payload = filled
        return message
    }
}
