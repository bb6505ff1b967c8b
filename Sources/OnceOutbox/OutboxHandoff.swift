import OnceKafka
import Synchronization

/// The outbox rows this process's transactions have just committed, kept in memory for this
/// process's relay: it then reads only their ids back, not their payloads and headers.
///
/// The database stays the only judge of which rows exist and in what order they go out: the
/// relay looks up an id here only after its read found that id committed, and reads every id
/// it does not find here from the table. An id is never reused, so what is kept under it is
/// what was written under it; rows rolled back after they were handed over (a savepoint, a
/// transaction that failed at commit) are never asked for, and are dropped with the rest once
/// the relay's floor passes them. Rows are taken only while the relay is active, and up to
/// `capacityBytes` of payloads and headers: past that, rows are left to the table. Any thread.
public final class OutboxHandoff: Sendable {
    private let state = Mutex(State())
    /// Bytes of payloads and headers kept at most.
    public let capacityBytes: Int

    private struct State {
        var accepting = false
        var rows: [Int64: KafkaOutgoingRecord] = [:]
        var bytes = 0
        var sweptAt: ContinuousClock.Instant?
    }

    /// How often `forget` looks through what is kept, at most: rows are taken as they are
    /// published, so what it drops is only the few ids that never committed.
    static let sweepInterval: Duration = .seconds(1)

    public init(capacityBytes: Int = 8 << 20) {
        self.capacityBytes = capacityBytes
    }

    /// Rows a transaction wrote, with their ids; call it after that transaction committed.
    package func committed(_ rows: [OutboxRow]) {
        guard !rows.isEmpty else { return }
        state.withLock { state in
            guard state.accepting else { return }
            for row in rows {
                let size = row.record.byteCount
                guard state.bytes + size <= capacityBytes else { return }
                if state.rows.updateValue(row.record, forKey: row.id) == nil { state.bytes += size }
            }
        }
    }

    /// Removes and returns the rows kept under `ids` (those it has).
    func take(_ ids: [Int64]) -> [Int64: KafkaOutgoingRecord] {
        state.withLock { state in
            var found: [Int64: KafkaOutgoingRecord] = [:]
            found.reserveCapacity(ids.count)
            for id in ids {
                if let record = state.rows.removeValue(forKey: id) {
                    state.bytes -= record.byteCount
                    found[id] = record
                }
            }
            return found
        }
    }

    /// Drops the rows below `floor` (published, or never committed), if it has not looked
    /// within `sweepInterval` of `now`.
    func forget(below floor: Int64, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            guard !state.rows.isEmpty, state.sweptAt.map({ now - $0 >= Self.sweepInterval }) ?? true else { return }
            state.sweptAt = now
            for (id, record) in state.rows where id < floor {
                state.rows[id] = nil
                state.bytes -= record.byteCount
            }
        }
    }

    /// Starts (the relay became active) or stops (it stands by, or stopped) taking rows;
    /// stopping drops what is kept.
    func accept(_ accepting: Bool) {
        state.withLock { state in
            state.accepting = accepting
            if !accepting {
                state.rows = [:]
                state.bytes = 0
            }
        }
    }

    /// How many rows are kept now.
    var count: Int { state.withLock { $0.rows.count } }
}

extension KafkaOutgoingRecord {
    /// What a kept row costs, roughly: its payload, key and headers.
    fileprivate var byteCount: Int {
        (value?.count ?? 0) + (key?.count ?? 0) + topic.utf8.count
            + headers.reduce(0) { $0 + $1.name.utf8.count + ($1.value?.count ?? 0) } + 64
    }
}
