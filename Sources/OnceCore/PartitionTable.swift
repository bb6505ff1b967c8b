import Foundation
import OnceKafka

/// The pipeline's state, one slot per assigned partition: its claim, its buffered records,
/// whether a batch is in flight, whether it is paused; plus the pool of free database sessions.
///
/// A lock-guarded state machine: each event (records polled, a claim done, a batch finished,
/// partitions revoked) updates the slots and returns what to do next, which the caller does
/// outside the lock. Consumer operations (pause, resume, seek, commit) are queued here and
/// run by the poll loop between polls, so that a seek can never interleave with the handling
/// of records polled before it. Any thread may call it; `revoke` blocks (on the consumer's
/// thread) until the revoked partitions have no batch in flight.
final class PartitionTable: @unchecked Sendable {
    // @unchecked Sendable: every stored property below is read and written only while holding
    // `condition`, except the immutable limits.
    private let condition = NSCondition()
    private var slots: [TopicPartition: Slot] = [:]
    private var freeConnections: [Int]
    private var waiting: [TopicPartition] = []
    private var consumerActions = ConsumerActions()
    private var lastActivity = ContinuousClock.now
    private var everAssigned = false

    let maxBatch: Int
    let pauseAbove: Int

    struct Slot {
        /// nil while the partition is being claimed (or re-read after a fence).
        var fence: PartitionFence?
        var buffer: [KafkaRecord] = []
        var inFlight = false
        var paused = false
        /// Set when this member lost the partition in the database to another owner: it holds
        /// the partition in Kafka but must not process it until the group revokes it.
        var disowned = false
        /// A seek is queued: records polled before it runs are from the old position.
        var awaitingSeek = false
    }

    /// Consumer operations for the poll loop to run before its next poll.
    struct ConsumerActions {
        var pause: Set<TopicPartition> = []
        var resume: Set<TopicPartition> = []
        var seek: [TopicPartition: Int64] = [:]
        var commit: [TopicPartition: Int64] = [:]
        var isEmpty: Bool { pause.isEmpty && resume.isEmpty && seek.isEmpty && commit.isEmpty }
    }

    /// Work to start on a database session: one transaction over the batches of one or more
    /// partitions, `maxBatch` records at most in all (a partition whose buffer holds more gives
    /// the first of them; the rest waits for the batch to end).
    struct Dispatch: Sendable {
        var parts: [Part]
        var connection: Int

        struct Part: Sendable {
            var batch: PartitionBatch
            var fence: PartitionFence
        }
    }

    /// How a batch ended.
    enum BatchEnd {
        case committed(nextOffset: Int64)
        /// The stored position changed under it (another owner, or an operator reset).
        case fenced
        /// Given up because the partition was revoked.
        case abandoned
    }

    init(connections: Int, maxBatch: Int, pauseAbove: Int) {
        freeConnections = Array(0..<connections)
        self.maxBatch = maxBatch
        self.pauseAbove = pauseAbove
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return body()
    }

    /// New partitions: paused until claimed in the database. Returns the partitions to claim.
    func assigned(_ partitions: [TopicPartition]) -> [TopicPartition] {
        locked {
            everAssigned = true
            lastActivity = .now
            var toClaim: [TopicPartition] = []
            for partition in partitions where slots[partition] == nil {
                slots[partition] = Slot(paused: true)
                consumerActions.pause.insert(partition)
                consumerActions.resume.remove(partition)
                toClaim.append(partition)
            }
            return toClaim
        }
    }

    /// The claim is recorded: start fetching at the stored position (the earliest offset when
    /// none is stored).
    func claimed(_ partition: TopicPartition, fence: PartitionFence) {
        locked { claimedLocked(partition, fence: fence) }
    }

    private func claimedLocked(_ partition: TopicPartition, fence: PartitionFence) {
        guard slots[partition] != nil else { return }
        slots[partition]!.fence = fence
        slots[partition]!.buffer = []
        slots[partition]!.paused = false
        slots[partition]!.awaitingSeek = true
        consumerActions.seek[partition] = fence.nextOffset ?? KafkaOffset.beginning
        consumerActions.pause.remove(partition)
        consumerActions.resume.insert(partition)
    }

    /// The database says another member owns the partition now: stop working on it.
    func disowned(_ partition: TopicPartition) {
        locked { disownedLocked(partition) }
    }

    private func disownedLocked(_ partition: TopicPartition) {
        guard slots[partition] != nil else { return }
        slots[partition]!.disowned = true
        slots[partition]!.buffer = []
        slots[partition]!.paused = true
        consumerActions.pause.insert(partition)
    }

    /// Partitions taken away: drop their records and wait (up to `timeout`) until their
    /// in-flight batches are over, so that the next owner starts after them.
    func revoke(_ partitions: [TopicPartition], timeout: Duration) {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        for partition in partitions {
            slots[partition]?.buffer = []
            slots[partition]?.fence = nil
        }
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds))
        while partitions.contains(where: { slots[$0]?.inFlight == true }) {
            if !condition.wait(until: deadline) { break }
        }
        for partition in partitions {
            slots[partition] = nil
            consumerActions.pause.remove(partition)
            consumerActions.resume.remove(partition)
            consumerActions.seek[partition] = nil
            consumerActions.commit[partition] = nil
        }
        waiting.removeAll { partitions.contains($0) }
    }

    /// Buffers polled records of claimed partitions (others are dropped: they will be fetched
    /// again from the claimed position) and returns the batches to start.
    func ingest(_ records: [KafkaRecord]) -> [Dispatch] {
        locked {
            if !records.isEmpty { lastActivity = .now }
            for record in records {
                let partition = record.topicPartition
                // Test the slot without keeping a copy of it: a copy would share the buffer's
                // storage and make the append below copy the whole buffer, for every record.
                guard slots[partition].map({ $0.fence != nil && !$0.disowned && !$0.awaitingSeek }) == true else { continue }
                slots[partition]!.buffer.append(record)
                if slots[partition]!.buffer.count > pauseAbove && !slots[partition]!.paused {
                    slots[partition]!.paused = true
                    consumerActions.pause.insert(partition)
                    consumerActions.resume.remove(partition)
                }
            }
            return dispatchLocked()
        }
    }

    /// A dispatch ended (`ends` tells how, part by part); frees its session, moves its
    /// partitions on and returns batches to start.
    func finished(_ dispatch: Dispatch, _ ends: [BatchEnd]) -> [Dispatch] {
        locked {
            lastActivity = .now
            freeConnections.append(dispatch.connection)
            for (part, end) in zip(dispatch.parts, ends) {
                let partition = part.batch.partition
                guard slots[partition] != nil else { continue }
                slots[partition]!.inFlight = false
                switch end {
                case .committed(let next):
                    if slots[partition]!.fence?.generation == part.fence.generation {
                        slots[partition]!.fence?.nextOffset = next
                    }
                    consumerActions.commit[partition] = next
                case .fenced:
                    slots[partition]!.fence = nil
                    slots[partition]!.buffer = []
                case .abandoned:
                    break
                }
            }
            let started = dispatchLocked()
            for part in dispatch.parts {
                let partition = part.batch.partition
                if let slot = slots[partition], slot.paused, slot.fence != nil, !slot.disowned, slot.buffer.count <= pauseAbove / 2 {
                    slots[partition]!.paused = false
                    consumerActions.resume.insert(partition)
                    consumerActions.pause.remove(partition)
                }
            }
            return started
        }
    }

    private func dispatchLocked() -> [Dispatch] {
        for (partition, slot) in slots where !slot.buffer.isEmpty && !slot.inFlight && !waiting.contains(partition) {
            waiting.append(partition)
        }
        // The waiting partitions are shared out among the free sessions, each taking its share
        // in turn, as many records as `maxBatch` allows: under a light load one transaction (and
        // one commit) serves several partitions, and every free session still gets work.
        var started: [Dispatch] = []
        while !waiting.isEmpty, !freeConnections.isEmpty {
            var parts: [Dispatch.Part] = []
            var room = maxBatch
            let share = (waiting.count + freeConnections.count - 1) / freeConnections.count
            while room > 0, parts.count < share, let partition = waiting.first {
                waiting.removeFirst()
                guard let fence = slots[partition].flatMap({ $0.inFlight || $0.buffer.isEmpty || $0.disowned ? nil : $0.fence })
                else { continue }
                let count = min(room, slots[partition]!.buffer.count)
                let records = Array(slots[partition]!.buffer.prefix(count))
                slots[partition]!.buffer.removeFirst(count)
                slots[partition]!.inFlight = true
                parts.append(Dispatch.Part(batch: PartitionBatch(partition: partition, records: records), fence: fence))
                room -= count
            }
            guard !parts.isEmpty else { break }
            started.append(Dispatch(parts: parts, connection: freeConnections.removeLast()))
        }
        return started
    }

    /// Claimed partitions with no batch in flight, and the generation each is held under:
    /// what the periodic reset check compares with the database.
    func idleClaims() -> [TopicPartition: Int64] {
        locked {
            var claims: [TopicPartition: Int64] = [:]
            for (partition, slot) in slots where !slot.inFlight && !slot.disowned {
                if let generation = slot.fence?.generation { claims[partition] = generation }
            }
            return claims
        }
    }

    /// The reset check found `partition`, held under `generation`, claimed anew in the database:
    /// by an operator's reset (`owned`: the owner is still this member), whose position is
    /// adopted, or by another member, for which the partition is given up. Does nothing, and
    /// returns false, when the partition moved on meanwhile (a batch in flight is fenced and
    /// reloads by itself).
    func claimChanged(
        _ partition: TopicPartition, heldUnder generation: Int64, to fence: PartitionFence, owned: Bool
    ) -> Bool {
        locked {
            guard let slot = slots[partition], slot.fence?.generation == generation, !slot.inFlight, !slot.disowned
            else { return false }
            lastActivity = .now
            if owned { claimedLocked(partition, fence: fence) } else { disownedLocked(partition) }
            return true
        }
    }

    /// A batch of the partition failed and will be retried: stop fetching the partition until a
    /// batch of it commits again (`finished` resumes it).
    func retrying(_ partition: TopicPartition) {
        locked {
            guard let slot = slots[partition], !slot.paused else { return }
            slots[partition]!.paused = true
            consumerActions.pause.insert(partition)
            consumerActions.resume.remove(partition)
        }
    }

    /// Whether the partition is still this member's to work on under `fence`.
    func holds(_ partition: TopicPartition, generation: Int64) -> Bool {
        locked { slots[partition]?.fence?.generation == generation && slots[partition]?.disowned == false }
    }

    /// Takes the queued consumer operations.
    func takeConsumerActions() -> ConsumerActions {
        locked {
            defer { consumerActions = ConsumerActions() }
            return consumerActions
        }
    }

    /// Puts back operations that could not run (for example a commit while the broker is away).
    func requeueCommits(_ commits: [TopicPartition: Int64]) {
        locked {
            for (partition, offset) in commits where slots[partition] != nil {
                consumerActions.commit[partition] = max(offset, consumerActions.commit[partition] ?? offset)
            }
        }
    }

    /// The seeks ran: records polled from now on come from the new positions.
    func seeksDone(_ partitions: some Sequence<TopicPartition>) {
        locked {
            for partition in partitions { slots[partition]?.awaitingSeek = false }
        }
    }

    /// Queues a seek again after it failed.
    func retrySeek(_ partition: TopicPartition, _ offset: Int64) {
        locked {
            if slots[partition] != nil, consumerActions.seek[partition] == nil { consumerActions.seek[partition] = offset }
        }
    }

    var hasBatchInFlight: Bool { locked { slots.values.contains(where: \.inFlight) } }

    /// Caught up: partitions assigned and claimed, nothing buffered or in flight; with the time
    /// since the last record or batch. nil before the first assignment (joining does not count).
    func quietSince() -> ContinuousClock.Instant? {
        locked {
            guard everAssigned else { return nil }
            let busy = slots.values.contains { ($0.fence == nil && !$0.disowned) || !$0.buffer.isEmpty || $0.inFlight }
            return busy ? nil : lastActivity
        }
    }

    var assignedPartitions: [TopicPartition] { locked { slots.keys.sorted() } }
}

/// librdkafka's logical offsets.
enum KafkaOffset {
    static let beginning: Int64 = -2
}
