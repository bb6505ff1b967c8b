import OnceKafka
import Synchronization

/// What a running pipeline tells its health endpoints: whether its loops are alive, and where
/// the member stands in the group.
///
/// The pipeline writes it (the poll loop after every poll and rebalance, the workers around
/// every database call); `/healthz` and `/readyz` read it. Thread-safe: a mutex around a small
/// value; every method may be called from any thread.
public final class PipelineHealth: Sendable {
    /// How long the poll loop may go without polling before the process counts as wedged.
    public static let pollPatience: Duration = .seconds(30)
    /// How long one database call of a batch may take before its thread counts as wedged.
    public static let databasePatience: Duration = .seconds(120)

    private let state = Mutex(State())

    struct State {
        var lastPoll: ContinuousClock.Instant?
        var joinedAt: ContinuousClock.Instant?
        /// nil until the first assignment since joining or since a revocation.
        var assigned: Int?
        var revokedAt: ContinuousClock.Instant?
        var callsStarted: [Int: ContinuousClock.Instant] = [:]
    }

    public init() {}

    func polled(now: ContinuousClock.Instant = .now) { state.withLock { $0.lastPoll = now } }

    func joined(now: ContinuousClock.Instant = .now) {
        state.withLock {
            $0.joinedAt = now
            $0.assigned = nil
        }
    }

    /// After a poll's rebalances: the partitions this member holds now.
    func saw(_ events: [KafkaRebalanceEvent], holding partitions: Int, now: ContinuousClock.Instant = .now) {
        guard let last = events.last else { return }
        state.withLock {
            switch last {
            case .assigned:
                $0.assigned = partitions
                $0.revokedAt = nil
            case .revoked, .lost:
                if partitions == 0 {
                    $0.assigned = nil
                    $0.revokedAt = now
                } else {
                    $0.assigned = partitions
                }
            }
        }
    }

    func callStarted(session: Int, now: ContinuousClock.Instant = .now) { state.withLock { $0.callsStarted[session] = now } }
    func callEnded(session: Int) { _ = state.withLock { $0.callsStarted.removeValue(forKey: session) } }

    /// Alive: the poll loop polled lately and no database call of a batch hangs. The line says why not.
    public func liveness(now: ContinuousClock.Instant = .now) -> (alive: Bool, line: String) {
        state.withLock { state in
            if let last = state.lastPoll, now - last > Self.pollPatience {
                return (false, "the poll loop has not polled for \(now - last)")
            }
            if let oldest = state.callsStarted.values.min(), now - oldest > Self.databasePatience {
                return (false, "a batch's database call has not returned for \(now - oldest)")
            }
            return (true, state.lastPoll == nil ? "starting" : "polling")
        }
    }

    /// The member's place in the group: ready once assigned (partitions, or none when the group
    /// has more members than partitions); not while joining or between a revocation and the
    /// next assignment. The line says which.
    public func membership(now: ContinuousClock.Instant = .now) -> (ready: Bool, line: String) {
        state.withLock { state in
            guard let joinedAt = state.joinedAt else { return (false, "not joined to the group yet") }
            if let assigned = state.assigned {
                return assigned == 0
                    ? (true, "owns no partitions (the group has as many members as partitions, or more)")
                    : (true, "owns \(assigned) partition\(assigned == 1 ? "" : "s")")
            }
            if let revokedAt = state.revokedAt {
                return (false, "rebalancing: partitions revoked \(now - revokedAt) ago, waiting for the next assignment")
            }
            return (false, "joined \(now - joinedAt) ago, waiting for an assignment")
        }
    }
}
