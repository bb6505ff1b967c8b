/// The two kinds of `credit_ledger` row, and what tells the two credit events apart.
public enum LedgerKind: String, Sendable, Hashable, CaseIterable {
    case charge
    case grant

    /// The inbound event type that posts this kind.
    public var eventType: String { facts.eventType }
    /// The outbound event type queued for each posting of this kind.
    public var postedType: String { facts.postedType }
    /// The `data` field holding the business key, in the inbound event and the outbound one.
    public var businessKeyField: String { facts.businessKeyField }
    /// The credits one event may post: a batch may charge nothing, a grant adds at least one.
    public var credits: ClosedRange<Int64> { facts.credits }

    /// The signed ledger amount for `credits`: negative for a charge.
    func amount(_ credits: Int64) -> Int64 {
        self == .charge ? -credits : credits
    }

    private var facts: (eventType: String, postedType: String, businessKeyField: String, credits: ClosedRange<Int64>) {
        switch self {
        case .charge: return ("batch.completed", "credits.charged", "batch_id", 0...1_000_000)
        case .grant: return ("credits.granted", "credits.granted", "grant_id", 1...1_000_000_000)
        }
    }
}
