import OnceKafka
import Testing

@testable import OncePipeline

/// The scheduler's state machine as a plain value: feed events, check what it asks for.
@Suite struct PartitionTableTests {
    let p0 = TopicPartition("in", 0)
    let p1 = TopicPartition("in", 1)

    /// A table whose partitions are assigned, claimed at offset 0 under `generations` and sought.
    func claimedTable(
        connections: Int, maxBatch: Int, pauseAbove: Int = 100, _ generations: [TopicPartition: Int64]
    ) -> PartitionTable {
        let table = PartitionTable(connections: connections, maxBatch: maxBatch, pauseAbove: pauseAbove)
        let partitions = generations.keys.sorted { $0.partition < $1.partition }
        _ = table.assigned(partitions)
        for partition in partitions {
            table.claimed(partition, fence: PartitionFence(generation: generations[partition]!, nextOffset: 0))
        }
        table.seeksDone(partitions)
        return table
    }

    func records(_ partition: TopicPartition, _ offsets: Range<Int64>) -> [KafkaRecord] {
        offsets.map { KafkaRecord(topic: partition.topic, partition: partition.partition, offset: $0, key: nil, value: []) }
    }

    @Test func assignedPartitionsArePausedUntilClaimedThenSeekAndResume() {
        let table = PartitionTable(connections: 2, maxBatch: 10, pauseAbove: 100)
        #expect(table.assigned([p0, p1]) == [p0, p1])
        var actions = table.takeConsumerActions()
        #expect(actions.pause == [p0, p1])
        // Records before the claim are dropped: they will be fetched again from the claimed position.
        #expect(table.ingest(records(p0, 0..<5)).isEmpty)

        table.claimed(p0, fence: PartitionFence(generation: 3, nextOffset: 42))
        table.claimed(p1, fence: PartitionFence(generation: 1, nextOffset: nil))
        actions = table.takeConsumerActions()
        #expect(actions.seek == [p0: 42, p1: KafkaOffset.beginning])
        #expect(actions.resume == [p0, p1])
        // Until the seek has run, polled records are from the old position.
        #expect(table.ingest(records(p0, 0..<5)).isEmpty)
        table.seeksDone([p0, p1])
        let started = table.ingest(records(p0, 42..<47))
        #expect(started.count == 1)
        #expect(started.first?.fence == PartitionFence(generation: 3, nextOffset: 42))
        #expect(started.first?.batch.records.map(\.offset) == Array(42..<47))
    }

    @Test func onePartitionHasOneBatchInFlightAndBatchesAreBounded() {
        let table = PartitionTable(connections: 2, maxBatch: 10, pauseAbove: 100)
        _ = table.assigned([p0])
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p0])
        let first = table.ingest(records(p0, 0..<25))
        #expect(first.map(\.batch.records.count) == [10])
        #expect(table.ingest(records(p0, 25..<30)).isEmpty)  // still in flight
        let next = table.finished(first[0], [.committed(nextOffset: 10)])
        #expect(next.map(\.batch.records.first?.offset) == [10])
        #expect(next.first?.fence.nextOffset == 10)
        #expect(table.takeConsumerActions().commit == [p0: 10])
    }

    @Test func aSessionTakesTheWaitingPartitionsUpToTheBatchSize() {
        let table = claimedTable(connections: 1, maxBatch: 4, [p0: 1, p1: 7])
        // One transaction for both partitions: all 3 records of the first in line, one of the other.
        let started = table.ingest(records(p0, 0..<3) + records(p1, 0..<3))
        #expect(started.count == 1)
        let parts = started[0].parts
        #expect(Set(parts.map(\.batch.partition)) == [p0, p1])
        #expect(parts.map(\.batch.records.count) == [3, 1])
        #expect(parts.allSatisfy { $0.fence.generation == ($0.batch.partition == p0 ? 1 : 7) })
        #expect(parts.allSatisfy { part in part.batch.records.allSatisfy { $0.topicPartition == part.batch.partition } })
        // Both are in flight: new records wait.
        #expect(table.ingest(records(parts[0].batch.partition, 3..<4)).isEmpty)
        let next = table.finished(started[0], parts.map { .committed(nextOffset: $0.batch.nextOffset) })
        #expect(table.takeConsumerActions().commit == [parts[0].batch.partition: 3, parts[1].batch.partition: 1])
        #expect(next.count == 1)
        let rest = Dictionary(uniqueKeysWithValues: next[0].parts.map { ($0.batch.partition, $0.batch.records.map(\.offset)) })
        #expect(rest == [parts[0].batch.partition: [3], parts[1].batch.partition: [1, 2]])
    }

    @Test func waitingPartitionsAreSharedOutAmongTheFreeSessions() {
        let p2 = TopicPartition("in", 2)
        // Six records fill three transactions of a quarter batch (2): two free sessions, both at work.
        let table = claimedTable(connections: 2, maxBatch: 8, [p0: 1, p1: 1, p2: 1])
        let started = table.ingest(records(p0, 0..<2) + records(p1, 0..<2) + records(p2, 0..<2))
        #expect(started.map(\.parts.count).sorted() == [1, 2])
        #expect(Set(started.map(\.connection)) == [0, 1])
        #expect(Set(started.flatMap { $0.parts.map(\.batch.partition) }) == [p0, p1, p2])
    }

    @Test func fewRecordsMakeOneTransactionWhateverTheFreeSessions() {
        let p2 = TopicPartition("in", 2)
        // Six records, under a quarter batch (25): one transaction for the three partitions,
        // the other session left free for what comes next.
        let table = claimedTable(connections: 2, maxBatch: 100, [p0: 1, p1: 1, p2: 1])
        let started = table.ingest(records(p0, 0..<2) + records(p1, 0..<2) + records(p2, 0..<2))
        #expect(started.count == 1)
        #expect(Set(started[0].parts.map(\.batch.partition)) == [p0, p1, p2])
        #expect(started[0].parts.map(\.batch.records.count) == [2, 2, 2])
        // Their partitions are in flight: a record of one waits; so the free session stays free.
        #expect(table.ingest(records(p1, 2..<3)).isEmpty)
        // A record of a partition not in flight goes at once to the free session.
        let p3 = TopicPartition("in", 3)
        _ = table.assigned([p3])
        table.claimed(p3, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p3])
        let next = table.ingest(records(p3, 0..<1))
        #expect(next.map(\.parts.count) == [1])
        #expect(next.first?.connection != started[0].connection)
    }

    @Test func aFencedPartDropsOnlyItsOwnPartition() {
        let table = claimedTable(connections: 1, maxBatch: 10, [p0: 1, p1: 1])
        let started = table.ingest(records(p0, 0..<3) + records(p1, 0..<3))
        #expect(started.count == 1 && started[0].parts.count == 2)
        let ends: [PartitionTable.BatchEnd] = started[0].parts.map { $0.batch.partition == p0 ? .fenced : .committed(nextOffset: 3) }
        #expect(table.finished(started[0], ends).isEmpty)
        #expect(!table.holds(p0, generation: 1))
        #expect(table.holds(p1, generation: 1))
        #expect(table.ingest(records(p1, 3..<5)).first?.parts.map(\.batch.partition) == [p1])
    }

    @Test func aFullBufferPausesThePartitionAndDrainingResumesIt() {
        let table = PartitionTable(connections: 1, maxBatch: 50, pauseAbove: 100)
        _ = table.assigned([p0])
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p0])
        _ = table.takeConsumerActions()
        var batch = table.ingest(records(p0, 0..<160))[0]
        #expect(table.takeConsumerActions().pause == [p0])
        batch = table.finished(batch, [.committed(nextOffset: 50)])[0]
        #expect(table.takeConsumerActions().resume.isEmpty)  // 60 left: above half
        _ = table.finished(batch, [.committed(nextOffset: 100)])
        #expect(table.takeConsumerActions().resume == [p0])
    }

    @Test func aRetriedBatchPausesItsPartitionUntilItCommits() {
        let table = PartitionTable(connections: 1, maxBatch: 10, pauseAbove: 100)
        _ = table.assigned([p0])
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p0])
        _ = table.takeConsumerActions()
        let batch = table.ingest(records(p0, 0..<5))[0]
        table.retrying(p0)
        #expect(table.takeConsumerActions().pause == [p0])
        _ = table.finished(batch, [.committed(nextOffset: 5)])
        #expect(table.takeConsumerActions().resume == [p0])
    }

    @Test func aFencedBatchDropsTheBufferAndWaitsForTheNewPosition() {
        let table = PartitionTable(connections: 1, maxBatch: 10, pauseAbove: 100)
        _ = table.assigned([p0])
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p0])
        let batch = table.ingest(records(p0, 0..<20))[0]
        #expect(table.finished(batch, [.fenced]).isEmpty)
        #expect(table.ingest(records(p0, 20..<25)).isEmpty)
        #expect(table.quietSince() == nil)  // the partition waits for its position
        table.claimed(p0, fence: PartitionFence(generation: 2, nextOffset: 5))
        #expect(table.takeConsumerActions().seek == [p0: 5])
        table.seeksDone([p0])
        #expect(table.ingest(records(p0, 5..<8)).first?.fence.generation == 2)
    }

    @Test func revokedPartitionsAreForgottenAndDisownedOnesStopped() {
        let table = PartitionTable(connections: 2, maxBatch: 10, pauseAbove: 100)
        _ = table.assigned([p0, p1])
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.claimed(p1, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p0, p1])
        table.revoke([p0], timeout: .seconds(1))
        #expect(table.assignedPartitions == [p1])
        #expect(table.ingest(records(p0, 0..<3)).isEmpty)
        table.disowned(p1)
        #expect(table.ingest(records(p1, 0..<3)).isEmpty)
        #expect(!table.holds(p1, generation: 1))
    }

    @Test func quietOnlyAfterAnAssignmentWithNothingPending() {
        let table = PartitionTable(connections: 1, maxBatch: 10, pauseAbove: 100)
        #expect(table.quietSince() == nil)
        _ = table.assigned([p0])
        #expect(table.quietSince() == nil)
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        table.seeksDone([p0])
        #expect(table.quietSince() != nil)
        let batch = table.ingest(records(p0, 0..<3))[0]
        #expect(table.quietSince() == nil)
        _ = table.finished(batch, [.committed(nextOffset: 3)])
        #expect(table.quietSince() != nil)
    }
}

@Suite struct QuietClockTests {
    let p0 = TopicPartition("in", 0)

    /// A claim that takes longer than `--until-idle` (a slow database at start) must not make a
    /// member quiet before it has fetched from its new position.
    @Test func theQuietClockStartsAfterTheClaimAndItsSeek() {
        let table = PartitionTable(connections: 1, maxBatch: 10, pauseAbove: 100)
        _ = table.assigned([p0])
        let claimedAt = ContinuousClock.now
        table.claimed(p0, fence: PartitionFence(generation: 1, nextOffset: 0))
        #expect(table.quietSince() == nil, "a seek still to run is not quiet")
        table.seeksDone([p0])
        #expect((table.quietSince() ?? claimedAt) >= claimedAt)
        #expect(table.quietSince() != nil)
    }
}

extension PartitionTable.Dispatch {
    /// The only part of a dispatch that holds one partition's batch.
    var batch: PartitionBatch { parts.count == 1 ? parts[0].batch : PartitionBatch(partition: TopicPartition("several", -1), records: []) }
    var fence: PartitionFence { parts[0].fence }
}
