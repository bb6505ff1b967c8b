/// Capped exponential backoff with full jitter: attempt n waits a random time up to
/// min(cap, base × 2ⁿ). A value type; the caller keeps the attempt count.
///
/// `sleep(attempt:)` is the one way this project waits before retrying: it throws
/// `CancellationError` as soon as the waiting task is cancelled, so that a shutdown reaches a
/// retry loop instead of being swallowed by it.
public struct Backoff: Sendable {
    public var base: Duration
    public var cap: Duration

    public init(base: Duration = .milliseconds(50), cap: Duration = .seconds(5)) {
        self.base = base
        self.cap = cap
    }

    public func delay(attempt: Int) -> Duration {
        let ceiling = min(cap, base * (1 << min(attempt, 20)))
        let milliseconds = max(1, ceiling.components.seconds * 1000 + ceiling.components.attoseconds / 1_000_000_000_000_000)
        return .milliseconds(Int64.random(in: milliseconds / 2...milliseconds))
    }

    /// Waits before attempt `attempt`; throws `CancellationError` when the task is cancelled.
    public func sleep(attempt: Int) async throws {
        try await Task.sleep(for: delay(attempt: attempt))
    }
}
