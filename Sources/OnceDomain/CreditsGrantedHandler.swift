import OnceEnvelope
import OncePipeline


/// `credits.granted` v1: add credits exactly once per (tenant, `grant_id`).
///
/// The first grant writes one `credit_ledger` row of kind `grant` and amount `credits`, raises
/// the account's balance (creating the account if needed) and queues `credits.granted`. A
/// repeated grant id writes nothing: `duplicate` when account and credits match, `conflict`
/// (listed in `credit_conflicts`) when they do not.
public struct CreditsGrantedHandler: EventHandler {
    /// A grant; shared with `batch.completed` so that both post in one call (`CreditLedger`).
    public typealias Command = CreditPosting

    public static let eventType = "credits.granted"
    /// The outbound event type (the same name as the inbound one, on the ledger topic).
    public static let grantedType = "credits.granted"
    /// The most one grant may add.
    public static let maxCredits: Int64 = 1_000_000_000

    /// Where the outbound `credits.granted` goes.
    public var topic: String

    public init(topic: String = DomainTopics().creditLedger) {
        self.topic = topic
    }

    public func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let data = EventData(envelope)
        let posting = LedgerPosting(
            businessKey: try data.string("grant_id", length: 1...128),
            accountID: try data.string("account_id", length: 1...128),
            credits: try data.integer("credits", in: 1...Self.maxCredits))
        return CreditPosting(kind: .grant, posting: posting, topic: topic)
    }

    /// Posts the run's grants (and any charges among them, in offset order).
    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        try CreditLedger.apply(inputs, in: context)
    }
}
