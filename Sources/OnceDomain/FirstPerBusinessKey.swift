import OncePipeline

/// A handler call's items grouped by business key, for the handlers that act once per key
/// (`CreditLedger`, `JobRequestedHandler`), and what became of each item.
///
/// Of the items sharing a key, only the first, in offset order, may apply: it is the one whose
/// row the handler tries to insert. Every other item of the key (and a first item whose insert
/// found a row already there) is compared with the row that then stands, whether this call or
/// an earlier one wrote it, and is `duplicate` when it asks for the same thing, `conflict` when
/// it does not. The type only sorts and compares; the handler reads and writes the rows.
struct FirstPerBusinessKey<Key: Hashable> {
    /// Each item's key, by the item's index.
    let keys: [Key]
    /// The index of the first item of each key, ascending: the items that may apply.
    let firsts: [Int]

    /// Groups `items`, whose order is offset order, by `key`.
    init<Item>(_ items: [Item], key: (Item) -> Key) {
        let keys = items.map(key)
        var firstIndex: [Key: Int] = [:]
        for (index, key) in keys.enumerated() where firstIndex[key] == nil {
            firstIndex[key] = index
        }
        self.keys = keys
        firsts = keys.indices.filter { firstIndex[keys[$0]] == $0 }
    }

    /// The keys of the first items whose insert found a row already there: those not in
    /// `inserted`, the keys the insert returned. In the order of `firsts`.
    func seenBefore(inserted: Set<Key>) -> [Key] {
        firsts.map { keys[$0] }.filter { !inserted.contains($0) }
    }

    /// What became of the items of one call, by index.
    struct Settlement<Row> {
        /// One per item: `applied`, `duplicate` or `conflict`.
        var outcomes: [EventOutcome]
        /// The items that were `conflict`, ascending, each with the row it disagrees with.
        var conflicts: [(index: Int, held: Row)]

        /// The items that were `applied`, ascending.
        var applied: [Int] { outcomes.indices.filter { outcomes[$0] == .applied } }
    }

    /// Settles every item once the first items' inserts have run.
    ///
    /// - Parameters:
    ///   - inserted: the keys whose row the insert wrote; their first items are `applied`.
    ///   - written: the row the first item at an index wrote.
    ///   - existing: the rows read back for `seenBefore(inserted:)`.
    ///   - same: whether the item at an index asks for what a row records.
    ///   - missing: the error for an item whose key has no row at all (one that vanished
    ///     between the insert and the read).
    func settle<Row>(
        inserted: Set<Key>, written: (Int) -> Row, existing: [Key: Row], same: (Int, Row) -> Bool,
        missing: (Int) -> any Error
    ) throws -> Settlement<Row> {
        var standing = existing
        var outcomes = [EventOutcome](repeating: .duplicate, count: keys.count)
        for index in firsts where inserted.contains(keys[index]) {
            outcomes[index] = .applied
            standing[keys[index]] = written(index)
        }
        var conflicts: [(index: Int, held: Row)] = []
        for index in keys.indices where outcomes[index] != .applied {
            guard let held = standing[keys[index]] else { throw missing(index) }
            if !same(index, held) {
                outcomes[index] = .conflict
                conflicts.append((index, held))
            }
        }
        return Settlement(outcomes: outcomes, conflicts: conflicts)
    }
}
