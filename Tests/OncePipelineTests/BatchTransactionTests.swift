import OnceKafka
import OncePostgres
import OnceSchema
import OnceTestSupport
import OnceThreads
import Testing

@testable import OncePipeline

/// The claim of a batch's new event ids, written after its handlers with their outcomes: what
/// happens when another transaction claims one of those ids in between.
@Suite(.timeLimit(.minutes(2)))
struct ClaimRaceTests {
    /// A database of the pipeline's tables and `test_effects`.
    static func database() async throws -> TestDatabase {
        try await TestDatabase.create(migrations: Migration.pipeline + TestEffectHandler.migrations)
    }

    @Test(arguments: [true, false])
    func anIDClaimedMeanwhileByAnotherTransactionCountsOnceWhicheverWayThatOneEnds(otherCommits: Bool) async throws {
        let database = try await Self.database()
        defer { database.drop() }
        let transaction = BatchTransaction(consumerGroup: "g", registry: .testEffects(), deadLetterTopic: "dlq")
        let decoder = BatchDecoder(registry: .testEffects())
        let batch = PartitionBatch(
            partition: TopicPartition("in", 0),
            records: [
                KafkaRecord(topic: "in", partition: 0, offset: 0, key: nil, value: TestEvents.effect(id: "raced", key: "k-raced")),
                KafkaRecord(topic: "in", partition: 0, offset: 1, key: nil, value: TestEvents.effect(id: "alone", key: "k-alone")),
            ])
        let records = batch.records.map(decoder.decode)

        // Another transaction (the same id produced to another partition) claims "raced" and
        // stays open: the batch's probe does not see that claim, so its handler writes k-raced.
        let other = try database.connect()
        defer { other.close() }
        try other.execute("BEGIN")
        try other.execute(
            """
            INSERT INTO processed_messages
                (consumer_group, tenant_id, event_id, bucket, topic, partition, kafka_offset, event_type, outcome)
            SELECT 'g', $1, 'raced', \(TimePartitions.claimBucket(at: "'epoch'::timestamptz + $2 * interval '1 microsecond'", window: "w")),
                   'in', 1, 7, 'test.effect', 'applied'
            FROM once_partitioning w
            """,
            [.text(records[0].claimTenant), .int64(records[0].claimTimeMicroseconds)])

        let thread = BlockingThread(name: "claim-race")
        defer { thread.shutdown() }
        async let committed = thread.run {
            let connection = try database.connect()
            defer { connection.close() }
            return try transaction.commit([BatchPart(batch: batch, records: records)], mode: .replay, on: connection)
        }
        // The batch's claim waits for the other transaction's row.
        try await eventually("the batch's claim waits for the other transaction") {
            try database.scalar(
                """
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO processed_messages%'
                """, as: Int64.self) == 1
        }
        try other.execute(otherCommits ? "COMMIT" : "ROLLBACK")
        let summary = try await committed

        func rows(_ sql: String) throws -> [[String]] {
            let connection = try database.connect()
            defer { connection.close() }
            return try connection.query(sql).map { row in try (0..<row.columns.count).map { try row.decode(String.self, column: $0) } }
        }
        let claims = try rows("SELECT event_id, partition::text, outcome FROM processed_messages ORDER BY event_id")
        if otherCommits {
            // The unique index refused the batch's claim: the attempt rolled back, k-raced with it,
            // and the rerun's probe found the other claim.
            #expect(summary.outcomes == [.applied] && summary.duplicates == 1)
            #expect(claims == [["alone", "0", "applied"], ["raced", "1", "applied"]])
            #expect(try rows("SELECT key FROM test_effects ORDER BY key") == [["k-alone"]])
        } else {
            // The other transaction gave its claim up: the batch's goes in, with its effect.
            #expect(summary.outcomes == [.applied, .applied] && summary.duplicates == 0)
            #expect(claims == [["alone", "0", "applied"], ["raced", "0", "applied"]])
            #expect(try rows("SELECT key FROM test_effects ORDER BY key") == [["k-alone"], ["k-raced"]])
        }
    }

    @Test func outcomesOtherThanAppliedAreWrittenWithTheClaim() async throws {
        let database = try await Self.database()
        defer { database.drop() }
        let connection = try database.connect()
        defer { connection.close() }
        let processor = RecordProcessor(consumerGroup: "g", registry: .testEffects(), deadLetterTopic: "dlq")
        // An effect, a second event of its key (duplicate), a record that is not JSON and one
        // whose handler fails for good (both dead-lettered), and a redelivery of the first.
        let values = [
            TestEvents.effect(id: "a", key: "k"), TestEvents.effect(id: "b", key: "k"), Array("{bad".utf8),
            TestEvents.effect(id: "f", key: "f", fail: true), TestEvents.effect(id: "a", key: "k"),
        ]
        let records = values.enumerated().map { offset, value in
            KafkaRecord(topic: "in", partition: 0, offset: Int64(offset), key: nil, value: value)
        }
        let report = try processor.process(records, on: connection)
        // The redelivery is skipped (counted as a duplicate, not claimed again).
        #expect(report[.applied] == 1 && report[.duplicate] == 2 && report[.deadLettered] == 2)
        let claims = try connection.query("SELECT kafka_offset::text, outcome, ctid::text FROM processed_messages ORDER BY kafka_offset").map {
            [try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1), try $0.decode(String.self, column: 2)]
        }
        #expect(claims.map { $0[0] } == ["0", "1", "2", "3"])
        #expect(claims.map { $0[1] } == ["applied", "duplicate", "dead_lettered", "dead_lettered"])
        // Each row was written once, by one insert, in offset order: the first four places of the
        // partition's first page (an update would have moved a row past them).
        #expect(claims.map { $0[2] } == ["(0,1)", "(0,2)", "(0,3)", "(0,4)"])
    }
}
