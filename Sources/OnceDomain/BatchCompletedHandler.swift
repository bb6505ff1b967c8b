import OnceCore

/// `batch.completed` v1: charge the batch's credits exactly once per (tenant, `batch_id`).
///
/// The first completion of a batch writes one `credit_ledger` row of kind `charge` and amount
/// `-credits`, lowers the account's balance (creating the account if needed; it may go below
/// zero) and queues `credits.charged`. Every later completion of the batch, whether in the
/// same handler call or long after, writes nothing: it is `duplicate` when its account and
/// credits match the charge, `conflict` (listed in `credit_conflicts`) when they do not.
public struct BatchCompletedHandler: EventHandler {
    public struct Command: Sendable, Hashable {
        public var batchID: String
        public var accountID: String
        public var credits: Int64

        public init(batchID: String, accountID: String, credits: Int64) {
            self.batchID = batchID
            self.accountID = accountID
            self.credits = credits
        }
    }

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
        return Command(
            batchID: try data.string("batch_id", length: 1...128),
            accountID: try data.string("account_id", length: 1...128),
            credits: try data.integer("credits", in: 0...Self.maxCredits))
    }

    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        let results = try CreditLedger.post(
            inputs.map { input in
                (
                    input.envelope,
                    LedgerPosting(
                        businessKey: input.command.batchID, accountID: input.command.accountID,
                        credits: input.command.credits)
                )
            },
            kind: .charge, on: context.connection)

        var messages: [OutboxMessage] = []
        for (input, result) in zip(inputs, results) {
            guard result.outcome == .applied, let balanceAfter = result.balanceAfter else { continue }
            let command = input.command
            messages.append(
                OutboundEvent(
                    type: Self.chargedType, tenantID: input.envelope.tenantID, aggregateID: command.batchID,
                    topic: topic, key: command.accountID, source: input.envelope,
                    data: [
                        "batch_id": .string(command.batchID),
                        "account_id": .string(command.accountID),
                        "credits": .integer(command.credits),
                        "balance_after": .integer(balanceAfter),
                    ]
                ).outboxMessage)
        }
        try context.publish(messages)
        return results.map(\.outcome)
    }
}
