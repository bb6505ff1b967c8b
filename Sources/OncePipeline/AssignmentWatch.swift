import Logging
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

extension ConsumerPipeline {
    /// The one line an operator needs, and the repair: the group's state on the broker is
    /// deleted, so that the next join forms it afresh. A broker that counts the group's
    /// members refuses that while any is joined (Kafka does: `GROUP_NOT_EMPTY`), and nothing
    /// changes; the positions are in the database either way.
    func recoverUnformedGroup(after waited: Duration, logger: Logger) async {
        let config = configuration
        logger.warning(
            "no partition assigned \(waited) after joining group \(config.consumerGroup): the broker is likely naming a member that has left as the group's leader (Tansu 0.6 after members stopped together); deleting the group's broker state so that it forms again (positions stay in the database)")
        do {
            let admin = try await KafkaAdmin(bootstrapServers: config.brokers, properties: config.kafkaProperties, logger: logger)
            do {
                try await admin.deleteGroup(config.consumerGroup)
                await admin.close()
            } catch {
                await admin.close()
                throw error
            }
            logger.notice("group \(config.consumerGroup) deleted on the broker; joining again")
        } catch {
            logger.warning("deleting group \(config.consumerGroup) on the broker failed: \(error)")
        }
    }
}
