import Foundation
import OnceKafka

/// The pipeline's scheduling state, one slot per assigned partition: its claim, its buffered
/// records, whether a batch is in flight, whether it is paused; plus the pool of free database
/// sessions.
///
/// A plain value and a state machine: each event (records polled, a claim done, a batch
/// finished, partitions revoked) updates the slots and returns what to do next, which the
/// caller does. Consumer operations (pause, resume, seek, commit) are queued here and run by
/// the poll loop between polls, so that a seek can never interleave with the handling of
/// records polled before it. `PartitionTable` shares one between threads.
struct PartitionSchedule {
    private var slots: [TopicPartition: Slot] = [:]
    private var freeConnections: [Int]
    private var waiting: [TopicPartition] = []
    private var consumerActions = ConsumerActions()
    private var lastActivity = ContinuousClock.now
    private var everAssigned = false
    /// Set when the pipeline stops: no batch starts any more.
    private var draining = false

    let maxBatch: Int
    let pauseAbove: Int
    /// Up to this many waiting records make one transaction, not one per free session: a
    /// quarter of `maxBatch`.
    let splitAbove: Int

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
        splitAbove = max(1, maxBatch / 4)
    }


    /// New partitions: paused until claimed in the database. Returns the partitions to claim.
    mutating func assigned(_ partitions: [TopicPartition]) -> [TopicPartition] {
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

    /// The claim is recorded: start fetching at the stored position (the earliest offset when
    /// none is stored).
    mutating func claim(_ partition: TopicPartition, fence: PartitionFence) {
        guard slots[partition] != nil else { return }
        slots[partition]!.fence = fence
        slots[partition]!.buffer = []
        slots[partition]!.paused = false
        slots[partition]!.awaitingSeek = true
        lastActivity = .now
        consumerActions.seek[partition] = fence.nextOffset ?? KafkaOffset.beginning
        consumerActions.pause.remove(partition)
        consumerActions.resume.insert(partition)
    }

    /// The database says another member owns the partition now: stop working on it.
    mutating func disown(_ partition: TopicPartition) {
        guard slots[partition] != nil else { return }
        slots[partition]!.disowned = true
        slots[partition]!.buffer = []
        slots[partition]!.paused = true
        consumerActions.pause.insert(partition)
    }

    /// Partitions taken away: their records are dropped; `PartitionTable.revoke` waits for
    /// their batches in flight (`hasBatchInFlight(in:)`) before `forget`ting them.
    mutating func revoking(_ partitions: [TopicPartition]) {
        for partition in partitions {
            slots[partition]?.buffer = []
            slots[partition]?.fence = nil
        }
    }

    func hasBatchInFlight(in partitions: [TopicPartition]) -> Bool {
        partitions.contains { slots[$0]?.inFlight == true }
    }

    /// The revoked partitions are gone: so are their slots and queued operations.
    mutating func forget(_ partitions: [TopicPartition]) {
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
    mutating func ingest(_ records: [KafkaRecord]) -> [Dispatch] {
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
        return startWaiting()
    }

    /// A dispatch ended (`ends` tells how, part by part); frees its session, moves its
    /// partitions on and returns batches to start.
    mutating func finished(_ dispatch: Dispatch, _ ends: [BatchEnd]) -> [Dispatch] {
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
        let started = startWaiting()
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

    /// The pipeline is stopping: batches in flight finish, no other starts.
    mutating func drain() {
        draining = true
    }

    private mutating func startWaiting() -> [Dispatch] {
        guard !draining else { return [] }
        for (partition, slot) in slots where !slot.buffer.isEmpty && !slot.inFlight && !waiting.contains(partition) {
            waiting.append(partition)
        }
        // The waiting partitions are shared out among as many free sessions as their records
        // fill (`splitAbove` records each), each taking its share in turn, as many records as
        // `maxBatch` allows. Under a light load one transaction (and one commit) serves every
        // waiting partition: its fixed cost (round trips, a commit flush) is paid once, not by
        // each session. Under a heavy load every free session gets work.
        var started: [Dispatch] = []
        var pending = waiting.reduce(0) { sum, partition in
            readyFence(partition) == nil ? sum : sum + slots[partition]!.buffer.count
        }
        while !waiting.isEmpty, !freeConnections.isEmpty {
            var parts: [Dispatch.Part] = []
            var room = maxBatch
            let sessions = min(freeConnections.count, max(1, (pending + splitAbove - 1) / splitAbove))
            let share = (waiting.count + sessions - 1) / sessions
            while room > 0, parts.count < share, let partition = waiting.first {
                waiting.removeFirst()
                guard let fence = readyFence(partition) else { continue }
                let count = min(room, slots[partition]!.buffer.count)
                let records = Array(slots[partition]!.buffer.prefix(count))
                slots[partition]!.buffer.removeFirst(count)
                slots[partition]!.inFlight = true
                parts.append(Dispatch.Part(batch: PartitionBatch(partition: partition, records: records), fence: fence))
                room -= count
                pending -= count
            }
            guard !parts.isEmpty else { break }
            started.append(Dispatch(parts: parts, connection: freeConnections.removeLast()))
        }
        return started
    }

    /// The fence a batch of `partition` would start under; nil when none can start now (a batch
    /// in flight, nothing buffered, disowned, or not claimed).
    private func readyFence(_ partition: TopicPartition) -> PartitionFence? {
        slots[partition].flatMap { $0.inFlight || $0.buffer.isEmpty || $0.disowned ? nil : $0.fence }
    }

    /// Claimed partitions with no batch in flight, and the generation each is held under:
    /// what the periodic reset check compares with the database.
    func idleClaims() -> [TopicPartition: Int64] {
        var claims: [TopicPartition: Int64] = [:]
        for (partition, slot) in slots where !slot.inFlight && !slot.disowned {
            if let generation = slot.fence?.generation { claims[partition] = generation }
        }
        return claims
    }

    /// The reset check found `partition`, held under `generation`, claimed anew in the database:
    /// by an operator's reset (`owned`: the owner is still this member), whose position is
    /// adopted, or by another member, for which the partition is given up. Does nothing, and
    /// returns false, when the partition moved on meanwhile (a batch in flight is fenced and
    /// reloads by itself).
    mutating func claimChanged(
        _ partition: TopicPartition, heldUnder generation: Int64, to fence: PartitionFence, owned: Bool
    ) -> Bool {
        guard let slot = slots[partition], slot.fence?.generation == generation, !slot.inFlight, !slot.disowned
        else { return false }
        lastActivity = .now
        if owned { claim(partition, fence: fence) } else { disown(partition) }
        return true
    }

    /// A batch of the partition failed and will be retried: stop fetching the partition until a
    /// batch of it commits again (`finished` resumes it).
    mutating func retrying(_ partition: TopicPartition) {
        guard let slot = slots[partition], !slot.paused else { return }
        slots[partition]!.paused = true
        consumerActions.pause.insert(partition)
        consumerActions.resume.remove(partition)
    }

    /// Whether the partition is still this member's to work on under `fence`.
    func holds(_ partition: TopicPartition, generation: Int64) -> Bool {
        slots[partition]?.fence?.generation == generation && slots[partition]?.disowned == false
    }

    /// Takes the queued consumer operations.
    mutating func takeConsumerActions() -> ConsumerActions {
        defer { consumerActions = ConsumerActions() }
        return consumerActions
    }

    /// Puts back operations that could not run (for example a commit while the broker is away).
    mutating func requeueCommits(_ commits: [TopicPartition: Int64]) {
        for (partition, offset) in commits where slots[partition] != nil {
            consumerActions.commit[partition] = max(offset, consumerActions.commit[partition] ?? offset)
        }
    }

    /// The seeks ran: records polled from now on come from the new positions.
    mutating func seeksDone(_ partitions: some Sequence<TopicPartition>) {
        for partition in partitions { slots[partition]?.awaitingSeek = false }
        // The fetch from the new position starts now: the quiet clock with it.
        lastActivity = .now
    }

    /// Queues a seek again after it failed.
    mutating func retrySeek(_ partition: TopicPartition, _ offset: Int64) {
        if slots[partition] != nil, consumerActions.seek[partition] == nil { consumerActions.seek[partition] = offset }
    }


    /// Caught up: partitions assigned and claimed, nothing buffered or in flight; with the time
    /// since the last record or batch. nil before the first assignment (joining does not count).
    func quietSince() -> ContinuousClock.Instant? {
        guard everAssigned else { return nil }
        let busy = slots.values.contains {
            ($0.fence == nil && !$0.disowned) || $0.awaitingSeek || !$0.buffer.isEmpty || $0.inFlight
        }
        return busy ? nil : lastActivity
    }

    var assignedPartitions: [TopicPartition] { slots.keys.sorted() }

    /// Each claimed partition's stored next offset (nil: nothing stored yet).
    var storedPositions: [TopicPartition: Int64?] {
        slots.compactMapValues { slot in slot.fence.map { $0.nextOffset } }
    }
}

/// `PartitionSchedule` shared by the poll loop, the batch workers, the claims and the
/// consumer's rebalance callback: a thin lock around the value, plus the one wait the schedule
/// cannot do itself. Any thread may call it; `revoke` blocks (on the consumer's thread) until
/// the revoked partitions have no batch in flight.
final class PartitionTable: @unchecked Sendable {
    // @unchecked Sendable: `schedule` is read and written only while holding `condition`.
    private let condition = NSCondition()
    private var schedule: PartitionSchedule

    typealias Dispatch = PartitionSchedule.Dispatch
    typealias BatchEnd = PartitionSchedule.BatchEnd
    typealias ConsumerActions = PartitionSchedule.ConsumerActions

    init(connections: Int, maxBatch: Int, pauseAbove: Int) {
        schedule = PartitionSchedule(connections: connections, maxBatch: maxBatch, pauseAbove: pauseAbove)
    }

    private func locked<T>(_ body: (inout PartitionSchedule) -> T) -> T {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return body(&schedule)
    }

    func assigned(_ partitions: [TopicPartition]) -> [TopicPartition] { locked { $0.assigned(partitions) } }
    func claimed(_ partition: TopicPartition, fence: PartitionFence) { locked { $0.claim(partition, fence: fence) } }
    func disowned(_ partition: TopicPartition) { locked { $0.disown(partition) } }
    func ingest(_ records: [KafkaRecord]) -> [Dispatch] { locked { $0.ingest(records) } }
    func finished(_ dispatch: Dispatch, _ ends: [BatchEnd]) -> [Dispatch] {
        locked { $0.finished(dispatch, ends) }
    }
    func idleClaims() -> [TopicPartition: Int64] { locked { $0.idleClaims() } }
    func claimChanged(_ partition: TopicPartition, heldUnder generation: Int64, to fence: PartitionFence, owned: Bool) -> Bool {
        locked { $0.claimChanged(partition, heldUnder: generation, to: fence, owned: owned) }
    }
    func retrying(_ partition: TopicPartition) { locked { $0.retrying(partition) } }
    func drain() { locked { $0.drain() } }
    func holds(_ partition: TopicPartition, generation: Int64) -> Bool { locked { $0.holds(partition, generation: generation) } }
    func takeConsumerActions() -> ConsumerActions { locked { $0.takeConsumerActions() } }
    func requeueCommits(_ commits: [TopicPartition: Int64]) { locked { $0.requeueCommits(commits) } }
    func seeksDone(_ partitions: some Sequence<TopicPartition>) { locked { $0.seeksDone(partitions) } }
    func retrySeek(_ partition: TopicPartition, _ offset: Int64) { locked { $0.retrySeek(partition, offset) } }
    func quietSince() -> ContinuousClock.Instant? { locked { $0.quietSince() } }
    var assignedPartitions: [TopicPartition] { locked { $0.assignedPartitions } }
    var storedPositions: [TopicPartition: Int64?] { locked { $0.storedPositions } }

    /// Partitions taken away: drop their records and wait (up to `timeout`) until their
    /// in-flight batches are over, so that the next owner starts after them.
    func revoke(_ partitions: [TopicPartition], timeout: Duration) {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        schedule.revoking(partitions)
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds))
        while schedule.hasBatchInFlight(in: partitions) {
            if !condition.wait(until: deadline) { break }
        }
        schedule.forget(partitions)
    }
}

/// librdkafka's logical offsets.
enum KafkaOffset {
    static let beginning: Int64 = -2
}
