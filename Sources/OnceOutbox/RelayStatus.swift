import Metrics
import Synchronization

/// Where the outbox relay of this process stands, for `/readyz` and `/metrics`: active (it holds
/// the relay lock and publishes), standing by (another process's relay is active), or failing
/// (its last round failed, and it is retrying). Thread-safe; the relay writes, anyone reads.
public final class RelayStatus: Sendable {
    public enum Role: String, Sendable {
        case starting
        case active
        case standby = "standing by"
    }

    private let state = Mutex<(role: Role, failure: String?)>((.starting, nil))
    private let activeGauge = Gauge(label: "once_relay_active")

    public init() {}

    public var role: Role { state.withLock { $0.role } }
    /// The last round's error while the relay retries; nil once a round succeeds.
    public var failure: String? { state.withLock { $0.failure } }

    func became(_ role: Role) {
        state.withLock { $0 = (role, nil) }
        activeGauge.record(role == .active ? 1 : 0)
    }

    func failed(_ error: any Error) {
        state.withLock { $0.failure = "\(error)" }
    }

    func succeeded() {
        state.withLock { $0.failure = nil }
    }
}
