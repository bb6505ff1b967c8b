/// Capped exponential backoff with full jitter: attempt n waits a random time up to
/// min(cap, base × 2ⁿ). A value type; the caller keeps the attempt count.
struct Backoff: Sendable {
    var base: Duration = .milliseconds(50)
    var cap: Duration = .seconds(5)

    func delay(attempt: Int) -> Duration {
        let ceiling = min(cap, base * (1 << min(attempt, 20)))
        let milliseconds = max(1, ceiling.components.seconds * 1000 + ceiling.components.attoseconds / 1_000_000_000_000_000)
        return .milliseconds(Int64.random(in: milliseconds / 2...milliseconds))
    }
}
