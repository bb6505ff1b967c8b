import OnceCore

/// `credits.granted` v1: add credits exactly once per (tenant, `grant_id`).
///
/// The first grant writes one `credit_ledger` row of kind `grant` and amount `credits`, raises
/// the account's balance (creating the account if needed) and queues `credits.granted`. A
/// repeated grant id writes nothing: `duplicate` when account and credits match, `conflict`
/// (listed in `credit_conflicts`) when they do not.
public struct CreditsGrantedHandler: EventHandler {
    public struct Command: Sendable, Hashable {
        public var grantID: String
        public var accountID: String
        public var credits: Int64

        public init(grantID: String, accountID: String, credits: Int64) {
            self.grantID = grantID
            self.accountID = accountID
            self.credits = credits
        }
    }

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
        return Command(
            grantID: try data.string("grant_id", length: 1...128),
            accountID: try data.string("account_id", length: 1...128),
            credits: try data.integer("credits", in: 1...Self.maxCredits))
    }

    public func apply(_ inputs: [HandlerInput<Command>], in context: HandlerContext) throws -> [EventOutcome] {
        let results = try CreditLedger.post(
            inputs.map { input in
                (
                    input.envelope,
                    LedgerPosting(
                        businessKey: input.command.grantID, accountID: input.command.accountID,
                        credits: input.command.credits)
                )
            },
            kind: .grant, on: context.connection)

        var messages: [OutboxMessage] = []
        for (input, result) in zip(inputs, results) {
            guard result.outcome == .applied, let balanceAfter = result.balanceAfter else { continue }
            let command = input.command
            messages.append(
                OutboundEvent(
                    type: Self.grantedType, tenantID: input.envelope.tenantID, aggregateID: command.grantID,
                    topic: topic, key: command.accountID, source: input.envelope,
                    data: [
                        "grant_id": .string(command.grantID),
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
