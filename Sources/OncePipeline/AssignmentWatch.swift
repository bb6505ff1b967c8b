import OnceKafka

/// Notices a member that joined the group (or had partitions revoked) and then heard no
/// assignment at all, not even an empty one, for two rebalance timeouts (`max.poll.interval.ms`,
/// at least 10 s): the group is not forming. A broker with a sound coordinator completes a
/// rebalance within one timeout; Tansu 0.6 never does once a leader has left it mid-rebalance
/// (README, "Notes on the local broker"). A plain value, driven by the poll loop.
struct AssignmentWatch {
    let patience: Duration
    private(set) var waitingSince: ContinuousClock.Instant?

    init(kafkaProperties: [String: String]) {
        let rebalanceTimeout = kafkaProperties["max.poll.interval.ms"].flatMap(Int64.init) ?? 300_000
        patience = max(.seconds(10), .milliseconds(2 * rebalanceTimeout))
    }

    /// The member subscribed, or lost partitions to a rebalance: an assignment is due.
    mutating func awaitAssignment(now: ContinuousClock.Instant = .now) {
        if waitingSince == nil { waitingSince = now }
    }

    mutating func saw(_ event: KafkaRebalanceEvent, now: ContinuousClock.Instant = .now) {
        switch event {
        case .assigned: waitingSince = nil
        case .revoked, .lost: awaitAssignment(now: now)
        }
    }

    /// True, once per period of patience, while the assignment is overdue.
    mutating func isOverdue(now: ContinuousClock.Instant = .now) -> Bool {
        guard let since = waitingSince, now - since >= patience else { return false }
        waitingSince = now
        return true
    }
}
