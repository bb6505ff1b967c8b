import OnceEnvelope
import OncePipeline


/// `batch.completed` v1: charge the batch's credits exactly once per (tenant, `batch_id`).
///
/// The first completion of a batch writes one `credit_ledger` row of kind `charge` and amount
/// `-credits`, lowers the account's balance (creating the account if needed; it may go below
/// zero) and queues `credits.charged`. Every later completion of the batch, whether in the
/// same handler call or long after, writes nothing: it is `duplicate` when its account and
/// credits match the charge, `conflict` (listed in `credit_conflicts`) when they do not.
public struct BatchCompletedHandler: EventHandler {
    /// A charge; shared with `credits.granted` so that both post in one call (`CreditLedger`).
    public typealias Command = CreditPosting

    public static let eventType = "batch.completed"
    /// The outbound event type.
    public static let chargedType = "credits.charged"
    /// The most one batch may charge.
    public static let maxCredits: Int64 = 1_000_000

    /// Where `credits.charged` goes.
    public var topic: String

    public init(topic: String = DomainTopics().creditLedger) {
        self.topic = topic
    }

    public func decode(_ envelope: Envelope) throws(EnvelopeError) -> Command {
        let data = EventData(envelope)
        let posting = LedgerPosting(
            businessKey: try data.string("batch_id", length: 1...128),
            accountID: try data.string("account_id", length: 1...128),
            credits: try data.integer("credits", in: 0...Self.maxCredits))
        return CreditPosting(kind: .charge, posting: posting, topic: topic)
    }

    /// Posts the run's charges (and any grants among them, in offset order).
    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        try CreditLedger.apply(inputs, in: context)
    }
}
