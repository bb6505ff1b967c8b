import OnceEnvelope
import OncePipeline

/// The two credit events, `batch.completed` v1 (a charge) and `credits.granted` v1 (a grant):
/// each posts its credits exactly once per (tenant, business key), the business key being the
/// event's `batch_id` or `grant_id`.
///
/// The first event of a business key writes one `credit_ledger` row of its kind (`charge`,
/// amount `-credits`; `grant`, amount `credits`), moves the account's balance by that amount
/// (creating the account if needed; a charge may take it below zero) and queues the outbound
/// event (`credits.charged` or `credits.granted`) on the ledger topic. Every later event of the
/// business key, whether in the same handler call or long after, writes nothing: it is
/// `duplicate` when its account and credits match the posting, `conflict` (listed in
/// `credit_conflicts`) when they do not.
///
/// Both event types decode to one command, `CreditPosting`, so that a partition's consecutive
/// charges and grants reach one handler call and are posted together, in offset order
/// (`CreditLedger`). `Event` says which of the two event types an instance takes.
public struct CreditEventHandler<Event: CreditEvent>: EventHandler {
    public typealias Command = CreditPosting

    public static var eventType: String { Event.kind.eventType }
    /// The outbound event type.
    public static var postedType: String { Event.kind.postedType }
    /// The most one event may post.
    public static var maxCredits: Int64 { Event.kind.credits.upperBound }

    /// Where the outbound event goes.
    public var topic: String

    public init(topic: String = DomainTopics().creditLedger) {
        self.topic = topic
    }

    public func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let kind = Event.kind
        let data = EventData(envelope)
        let posting = LedgerPosting(
            businessKey: try data.string(kind.businessKeyField, length: 1...128),
            accountID: try data.string("account_id", length: 1...128),
            credits: try data.integer("credits", in: kind.credits))
        return CreditPosting(kind: kind, posting: posting, topic: topic)
    }

    /// Posts the run's charges and grants, in offset order, whichever event type it began with.
    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        try CreditLedger.apply(inputs, in: context)
    }
}

/// Names the event type a `CreditEventHandler` takes, by the kind of ledger row it posts.
public protocol CreditEvent: Sendable {
    static var kind: LedgerKind { get }
}

/// `batch.completed`: charges a batch's credits.
public enum BatchCompleted: CreditEvent {
    public static var kind: LedgerKind { .charge }
}

/// `credits.granted`: grants credits to an account.
public enum CreditsGranted: CreditEvent {
    public static var kind: LedgerKind { .grant }
}

/// `batch.completed` v1: charges the batch's credits once per (tenant, `batch_id`).
public typealias BatchCompletedHandler = CreditEventHandler<BatchCompleted>
/// `credits.granted` v1: adds credits once per (tenant, `grant_id`).
public typealias CreditsGrantedHandler = CreditEventHandler<CreditsGranted>

extension CreditEventHandler where Event == BatchCompleted {
    /// `credits.charged`, the outbound event of a charge.
    public static var chargedType: String { postedType }
}

extension CreditEventHandler where Event == CreditsGranted {
    /// `credits.granted`, the outbound event of a grant (the inbound name, on the ledger topic).
    public static var grantedType: String { postedType }
}
