import Foundation
import OnceKafka
import OncePostgres
import OnceSchema
import OnceTestSupport
import Testing

@testable import OncePipeline

/// How a running member meets an operator's reset: the scheduler's side as a plain value.
@Suite struct ResetDetectionTests {
    let p0 = TopicPartition("in", 0)
    let p1 = TopicPartition("in", 1)

    func records(_ partition: TopicPartition, _ offsets: Range<Int64>) -> [KafkaRecord] {
        offsets.map {
            KafkaRecord(topic: partition.topic, partition: partition.partition, offset: $0, key: nil, value: [])
        }
    }

    func table() -> PartitionTable {
        let table = PartitionTable(connections: 2, maxBatch: 10, pauseAbove: 100)
        _ = table.assigned([p0, p1])
        table.claimed(p0, fence: PartitionFence(generation: 3, nextOffset: 40))
        table.claimed(p1, fence: PartitionFence(generation: 5, nextOffset: 7))
        table.seeksDone([p0, p1])
        _ = table.takeConsumerActions()
        return table
    }

    @Test func onlyClaimedPartitionsWithoutABatchInFlightAreChecked() {
        let table = table()
        #expect(table.idleClaims() == [p0: 3, p1: 5])
        let started = table.ingest(records(p0, 40..<45))
        #expect(started.count == 1)
        #expect(table.idleClaims() == [p1: 5])
        _ = table.finished(started[0], [.committed(nextOffset: 45)])
        #expect(table.idleClaims() == [p0: 3, p1: 5])
        table.disowned(p1)
        #expect(table.idleClaims() == [p0: 3])
    }

    @Test func aResetOfAnIdlePartitionIsAdoptedBufferDroppedAndFetchMovedBack() {
        let table = table()
        #expect(table.claimChanged(p0, heldUnder: 3, to: PartitionFence(generation: 4, nextOffset: 10), owned: true))
        let actions = table.takeConsumerActions()
        #expect(actions.seek == [p0: 10])
        // Records polled before the seek ran are from the old position.
        #expect(table.ingest(records(p0, 45..<48)).isEmpty)
        table.seeksDone([p0])
        let started = table.ingest(records(p0, 10..<13))
        #expect(started.first?.fence == PartitionFence(generation: 4, nextOffset: 10))
        #expect(started.first?.batch.records.first?.offset == 10)
        #expect(table.holds(p0, generation: 4) && !table.holds(p0, generation: 3))
    }

    @Test func aPartitionThatMovedOnMeanwhileIsLeftToTheFence() {
        let table = table()
        let started = table.ingest(records(p0, 40..<42))
        // A batch in flight: it will be fenced and reload by itself.
        #expect(!table.claimChanged(p0, heldUnder: 3, to: PartitionFence(generation: 4, nextOffset: 0), owned: true))
        #expect(table.takeConsumerActions().seek.isEmpty)
        _ = table.finished(started[0], [.fenced])
        // Re-claimed under another generation than the one the check saw: nothing to do.
        table.claimed(p0, fence: PartitionFence(generation: 6, nextOffset: 0))
        #expect(!table.claimChanged(p0, heldUnder: 3, to: PartitionFence(generation: 4, nextOffset: 0), owned: true))
        #expect(table.holds(p0, generation: 6))
    }

    @Test func aPartitionClaimedByAnotherMemberIsGivenUp() {
        let table = table()
        #expect(table.claimChanged(p1, heldUnder: 5, to: PartitionFence(generation: 6, nextOffset: 7), owned: false))
        #expect(table.takeConsumerActions().pause == [p1])
        #expect(table.ingest(records(p1, 7..<9)).isEmpty)
        #expect(!table.holds(p1, generation: 5))
        #expect(table.idleClaims() == [p0: 3])
    }
}

/// The database side: a reset bumps the generation, keeps the owner, and a member still
/// working under the old claim cannot commit over it.
@Suite(.timeLimit(.minutes(2)))
struct OffsetResetDatabaseTests {
    @Test func aResetFencesTheOldClaimSoAStaleBatchCannotUndoIt() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let connection = try database.connect()
        defer { connection.close() }
        let group = TestServices.unique("group")
        let partition = TopicPartition("in", 0)
        try connection.execute(
            """
            INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, generation, owner)
            VALUES ($1, 'in', 0, 50, 3, 'member-a')
            """,
            [.text(group)])

        let offsets = StoredPositions(consumerGroup: group)
        let after = try #require(try offsets.reset([(partition, 20)], on: connection).first)
        #expect(after.nextOffset == 20 && after.generation == 4 && after.owner == "member-a")

        // A batch of the old claim (generation 3, from 50) is fenced and writes nothing.
        let registry = HandlerRegistry.testEffects()
        let transaction = BatchTransaction(consumerGroup: group, registry: registry, deadLetterTopic: "dlq")
        let batch = PartitionBatch(
            partition: partition,
            records: [
                KafkaRecord(
                    topic: "in", partition: 0, offset: 50, key: nil, value: TestEvents.effect(id: "late", key: "late"))
            ])
        let decoder = BatchDecoder(registry: registry)
        #expect(throws: BatchFenced.self) {
            _ = try transaction.commit(
                [BatchPart(batch: batch, records: batch.records.map(decoder.decode))],
                mode: .consume(fences: [partition: PartitionFence(generation: 3, nextOffset: 50)]), on: connection)
        }
        #expect(try offsets.positions(on: connection).map(\.nextOffset) == [20])
        #expect(try connection.query("SELECT count(*) FROM processed_messages")[0].decode(Int.self, column: 0) == 0)

        // The owner, under the new claim, goes on from 20.
        let resumed = PartitionBatch(
            partition: partition,
            records: [
                KafkaRecord(
                    topic: "in", partition: 0, offset: 20, key: nil, value: TestEvents.effect(id: "e20", key: "k20"))
            ])
        let summary = try transaction.commit(
            [BatchPart(batch: resumed, records: resumed.records.map(decoder.decode))],
            mode: .consume(fences: [partition: PartitionFence(generation: 4, nextOffset: 20)]), on: connection)
        #expect(summary.outcomes.count == 1)
        #expect(try offsets.positions(on: connection).map(\.nextOffset) == [21])

        // A partition the group never stored gets a row with no owner.
        // A partition the group never stored gets a row with no owner; one reset of two
        // partitions bumps each one's generation once.
        let both = try offsets.reset([(TopicPartition("in", 1), 5), (partition, 30)], on: connection)
        #expect(both.map(\.partition) == [partition, TopicPartition("in", 1)])
        #expect(both[0].nextOffset == 30 && both[0].generation == 5 && both[0].owner == "member-a")
        #expect(both[1].owner == nil && both[1].generation == 1 && both[1].nextOffset == 5)
    }

    @Test func aDryRunRollsBackEverythingItDid() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let connection = try database.connect()
        defer { connection.close() }
        let registry = HandlerRegistry.testEffects()
        let processor = RecordProcessor(consumerGroup: "g", registry: registry, deadLetterTopic: "dlq")
        let values = [TestEvents.effect(id: "a", key: "a"), Array("{bad".utf8), TestEvents.effect(id: "f", key: "f", fail: true)]
        let records = values.enumerated().map { offset, value in
            KafkaRecord(topic: "in", partition: 0, offset: Int64(offset), key: nil, value: value)
        }
        let dry = try processor.process(records, dryRun: true, on: connection)
        #expect(dry[.applied] == 1 && dry[.deadLettered] == 2)
        #expect(dry.deadLetters.map(\.reason) == [.invalidJSON, .handlerFailed])
        for table in ["processed_messages", "test_effects", "dead_letters", "outbox"] {
            #expect(
                try connection.query("SELECT count(*) FROM \(table)")[0].decode(Int.self, column: 0) == 0, "\(table)")
        }
        let real = try processor.process(records, on: connection)
        #expect(real.counts == dry.counts)
        #expect(try connection.query("SELECT count(*) FROM dead_letters")[0].decode(Int.self, column: 0) == 2)
    }
}

/// Several partitions' batches in one transaction: each fenced on its own, one claim and one set
/// of handler runs for all, and nothing written when any part is fenced.
@Suite(.timeLimit(.minutes(2)))
struct MultiPartitionTransactionTests {
    @Test func partsAreFencedOnTheirOwnAndShareTheClaimAndTheHandlers() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
        defer { database.drop() }
        let connection = try database.connect()
        defer { connection.close() }
        let group = TestServices.unique("group")
        try connection.execute(
            """
            INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, generation, owner)
            VALUES ($1, 'in', 0, 10, 2, 'me'), ($1, 'in', 1, 30, 5, 'me')
            """,
            [.text(group)])
        let registry = HandlerRegistry.testEffects()
        let transaction = BatchTransaction(consumerGroup: group, registry: registry, deadLetterTopic: "dlq")
        let decoder = BatchDecoder(registry: registry)
        func part(_ partition: Int32, from offset: Int64, ids: [String], generation: Int64) -> (BatchPart, PartitionFence) {
            let records = ids.enumerated().map { index, id in
                KafkaRecord(
                    topic: "in", partition: partition, offset: offset + Int64(index), key: nil,
                    value: TestEvents.effect(id: id, key: "key-\(id)"))
            }
            return (
                BatchPart(
                    batch: PartitionBatch(partition: TopicPartition("in", partition), records: records),
                    records: records.map(decoder.decode)),
                PartitionFence(generation: generation, nextOffset: offset))
        }
        func commit(_ parts: [(BatchPart, PartitionFence)]) throws -> BatchSummary {
            try transaction.commit(
                parts.map(\.0), mode: .consume(fences: Dictionary(uniqueKeysWithValues: parts.map { ($0.0.batch.partition, $0.1) })),
                on: connection)
        }
        func count(_ sql: String) throws -> Int { try connection.query(sql)[0].decode(Int.self, column: 0) }

        // Partition 1 is held under generation 5, not 4: the whole transaction writes nothing.
        #expect(throws: BatchFenced.self) {
            _ = try commit([part(0, from: 10, ids: ["a", "b"], generation: 2), part(1, from: 30, ids: ["c"], generation: 4)])
        }
        #expect(try count("SELECT count(*) FROM processed_messages") == 0)
        #expect(try count("SELECT count(*) FROM test_effects") == 0)

        // Under the right claims, both commit together; "b" comes again on the other partition
        // (a producer that sent it twice) and counts once.
        let summary = try commit(
            [part(0, from: 10, ids: ["a", "b"], generation: 2), part(1, from: 30, ids: ["b", "c", "d"], generation: 5)])
        #expect(summary.outcomes.count == 4 && summary.duplicates == 1)
        #expect(try count("SELECT count(*) FROM test_effects") == 4)
        #expect(
            try connection.query("SELECT partition, next_offset FROM consumer_offsets ORDER BY partition")
                .map { [try $0.decode(Int64.self, column: 0), try $0.decode(Int64.self, column: 1)] } == [[0, 12], [1, 33]])
        #expect(
            try connection.query("SELECT event_id, partition, kafka_offset FROM processed_messages ORDER BY event_id")
                .map { "\(try $0.decode(String.self, column: 0))@\(try $0.decode(Int64.self, column: 1))/\(try $0.decode(Int64.self, column: 2))" }
                == ["a@0/10", "b@0/11", "c@1/31", "d@1/32"])
    }
}
