import Foundation
import OnceKafka
import OncePostgres
import OnceTestSupport
import Testing

@testable import OnceOutbox
@testable import OnceSchema

/// The relay's marks as a plain value: the head follows what was read, gaps keep the ids below it
/// that may still commit, the floor waits for the transactions that could fill them.
@Suite struct OutboxPositionTests {
    func horizon(oldest: Int64, next: Int64) -> OutboxHorizon {
        OutboxHorizon(oldestRunningXID: oldest, nextXID: next)
    }

    @Test func idsNotSeenBelowTheHeadAreReadAgainUntilTheirTransactionsEnd() {
        var position = OutboxPosition(floor: 1)
        #expect(position.readRanges == [1..<Int64.max])
        // Read 1, while transactions 100…104 run, finds rows 1…3 and 6…10: 4 and 5 are not visible.
        position.advance(published: [1, 2, 3, 6, 7, 8, 9, 10], examinedBelow: .max, horizon: horizon(oldest: 100, next: 105))
        #expect(position.head == 11)
        #expect(position.floor == 4)
        #expect(position.readRanges == [4..<6, 11..<Int64.max])
        // Transaction 103 still runs: 4 and 5 stay to be looked at, however often the relay reads.
        position.advance(published: [11, 12], examinedBelow: .max, horizon: horizon(oldest: 103, next: 110))
        #expect(position.readRanges == [4..<6, 13..<Int64.max])
        // 5 committed; the next read takes it first (the smallest id), with 13.
        position.advance(published: [5, 13], examinedBelow: .max, horizon: horizon(oldest: 103, next: 111))
        #expect(position.readRanges == [4..<5, 14..<Int64.max])
        #expect(position.floor == 4)
        // Every transaction that was running at read 1 has ended: the read that looks now settles 4.
        position.advance(published: [], examinedBelow: .max, horizon: horizon(oldest: 105, next: 111))
        #expect(position.readRanges == [14..<Int64.max])
        #expect(position.floor == 14)
    }

    @Test func aReadCutByItsLimitSettlesOnlyWhatItLookedAt() {
        var position = OutboxPosition(floor: 1)
        position.advance(published: [1, 2, 5, 6], examinedBelow: .max, horizon: horizon(oldest: 50, next: 60))
        #expect(position.readRanges == [3..<5, 7..<Int64.max])
        // A backlog: the limit stops the read at row 20; the gap 3..<5 was looked through, settled.
        position.advance(published: Array(7...20), examinedBelow: 21, horizon: horizon(oldest: 60, next: 70))
        #expect(position.readRanges == [21..<Int64.max])
        #expect(position.floor == 21)
    }

    @Test func aFailedRowIsReadAgainAndHoldsTheFloor() {
        var position = OutboxPosition(floor: 7)
        // Rows 7…9 went out, row 10 failed: the read is settled below 10 only.
        position.advance(published: [7, 8, 9], examinedBelow: 10, horizon: horizon(oldest: 5, next: 6))
        #expect(position.head == 10)
        #expect(position.floor == 10)
        // Nothing went out: the position stays.
        position.advance(published: [], examinedBelow: 10, horizon: horizon(oldest: 5, next: 6))
        #expect(position.readRanges == [10..<Int64.max])
    }

    @Test func aFailureInsideAGapLeavesTheHeadWhereItIs() {
        var position = OutboxPosition(floor: 1)
        position.advance(published: [1, 4], examinedBelow: .max, horizon: horizon(oldest: 10, next: 20))
        #expect(position.readRanges == [2..<4, 5..<Int64.max])
        // Row 2 committed and failed to go out, row 5 was not reached.
        position.advance(published: [], examinedBelow: 2, horizon: horizon(oldest: 20, next: 21))
        #expect(position.readRanges == [2..<4, 5..<Int64.max])
    }

    @Test func manyGapsMergeIntoWiderRangesWithoutDroppingAnId() {
        var position = OutboxPosition(floor: 0)
        let published = (0..<Int64(OutboxPosition.maxGaps + 10)).map { $0 * 2 }
        let merged = position.advance(published: published, examinedBelow: .max, horizon: horizon(oldest: 1, next: 2))
        #expect(position.gaps.count == OutboxPosition.maxGaps)
        let covered = Set(position.gaps.flatMap { Array($0.range) })
        for odd in stride(from: Int64(1), to: published.last!, by: 2) { #expect(covered.contains(odd)) }
        #expect(position.floor == 1)
        // The published ids the merged gaps took in come back to be marked, and nothing else.
        let marked = Set(merged.flatMap { Array($0) })
        let inside = Set(published.filter(covered.contains))
        #expect(marked == inside && !marked.isEmpty, "marked \(marked.sorted()), published inside gaps \(inside.sorted())")
    }
}

/// What a clash of business keys does, against the real database.
@Suite struct OutboxKeysTests {
    func message(_ aggregate: String) -> OutboxMessage {
        OutboxMessage(tenantID: "t1", eventType: "test.out", aggregateID: aggregate, topic: "out", key: aggregate, payload: Array(aggregate.utf8))
    }

    @Test("new keys: a key the outbox holds fails the whole statement with 23505, and writes none of it")
    func aNewKeyThatIsTakenFails() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline)
        defer { database.drop() }
        let db = try database.connect()
        defer { db.close() }
        let first = OutboxWriter()
        try first.insert([message("a")], keys: .new, on: db)
        #expect(first.inserted == 1)
        let second = OutboxWriter()
        #expect { try second.insert([message("b"), message("a")], keys: .new, on: db) } throws: { error in
            (error as? PostgresError)?.kind == .uniqueViolation
        }
        #expect(second.inserted == 0)
        #expect(try db.query("SELECT aggregate_id FROM outbox ORDER BY id").map { try $0.decode(String.self, column: 0) } == ["a"])
    }

    @Test("keys that may repeat: a clash keeps the first row, and only new rows are counted")
    func aRepeatedKeyKeepsTheFirstRow() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline)
        defer { database.drop() }
        let db = try database.connect()
        defer { db.close() }
        let writer = OutboxWriter()
        try writer.insert([message("a")], keys: .mayRepeat, on: db)
        var again = message("a")
        again.payload = Array("second".utf8)
        try writer.insert([message("b"), again], keys: .mayRepeat, on: db)
        #expect(writer.inserted == 2)
        let rows = try db.query("SELECT aggregate_id, convert_from(payload, 'UTF8') FROM outbox ORDER BY id").map {
            [try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1)]
        }
        #expect(rows == [["a", "a"], ["b", "b"]])
    }
}

/// The mark for merged gaps, against the real database.
@Suite struct OutboxMarkTests {
    @Test func markingRangesTouchesOnlyTheirUnmarkedRows() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline)
        defer { database.drop() }
        let db = try database.connect()
        defer { db.close() }
        try OutboxWriter().insert(
            (0..<10).map { OutboxMessage(tenantID: "t1", eventType: "test.out", aggregateID: "a\($0)", topic: "out", key: nil, payload: nil) },
            on: db)
        let first = try db.query("SELECT min(id) FROM outbox")[0].decode(Int64.self, column: 0)
        try OutboxRelay.mark([first + 1..<first + 3, first + 7..<first + 8], on: db)
        let marked = try db.query("SELECT id - $1 FROM outbox WHERE published_at IS NOT NULL ORDER BY id", [.int64(first)])
            .map { try $0.decode(Int64.self, column: 0) }
        #expect(marked == [1, 2, 7])
        #expect(try db.query("SELECT count(*) FROM outbox_publication WHERE published")[0].decode(Int64.self, column: 0) == 3)
    }
}

/// The relay against the real database and broker.
@Suite(.serialized) struct OutboxRelayTests {
    /// Inserts one outbox row for `aggregate` on `db` (in whatever transaction it has open).
    func insertRow(_ aggregate: String, topic: String, on db: PostgresConnection) throws {
        let outbox = OutboxWriter()
        try outbox.insert(
            [OutboxMessage(tenantID: "t1", eventType: "test.out", aggregateID: aggregate, topic: topic, key: aggregate, payload: Array(aggregate.utf8))],
            on: db)
    }

    /// A transaction takes an outbox id, others commit rows above it and get published, and only
    /// then does it commit: its row is published too, and the recorded floor never passes it
    /// while it is unpublished.
    @Test func aRowCommittedAfterLaterRowsWerePublishedIsPublished() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline)
        defer { database.drop() }
        let topics = try await TestTopics.create()
        let late = try database.connect()
        defer { late.close() }
        try late.execute("BEGIN")
        try insertRow("late", topic: topics.output, on: late)
        let lateID = try late.query("SELECT max(id) FROM outbox")[0].decode(Int64.self, column: 0)

        let others = try database.connect()
        defer { others.close() }
        for n in 0..<20 { try insertRow("row-\(n)", topic: topics.output, on: others) }

        let relay = OutboxRelay(databaseURL: database.url, brokers: try TestServices.brokers())
        let running = RunningService(relay)
        // The relay writes nothing on the rows: the topic says what it published.
        #expect(try await consumeAll(topics.output, count: 20).count == 20, "the 20 committed rows published")
        // Let the relay sweep a few more times while the late transaction is open.
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try database.scalar("SELECT floor FROM outbox_relay", as: Int64.self) <= lateID)
        }
        try late.execute("COMMIT")
        try await eventually("the floor past every row") {
            try database.scalar("SELECT floor FROM outbox_relay", as: Int64.self) == 22
        }
        #expect(
            try database.scalar("SELECT published FROM outbox_publication WHERE id = $1", [.int64(lateID)], as: Bool.self),
            "below the floor: published")
        #expect(
            try database.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", as: Int64.self) == 0,
            "no row rewritten")
        try await running.stop()

        let published = try await consumeAll(topics.output, count: 21)
        #expect(Set(published.compactMap { $0.key.map { String(decoding: $0, as: UTF8.self) } }).count == 21)
        await topics.delete()
    }

    /// A transaction that commits late, below rows already published, while an older one keeps
    /// the floor from moving; then a later row of the late row's key commits. The late row must
    /// go out first: per key, the topic keeps outbox order whatever else is still running.
    @Test func aLateRowGoesOutBeforeALaterRowOfItsKey() async throws {
        let database = try await TestDatabase.create(migrations: Migration.pipeline)
        defer { database.drop() }
        let topics = try await TestTopics.create()
        func row(_ aggregate: String, key: String, on db: PostgresConnection) throws {
            try OutboxWriter().insert(
                [OutboxMessage(tenantID: "t1", eventType: "test.out", aggregateID: aggregate, topic: topics.output, key: key, payload: Array(aggregate.utf8))],
                on: db)
        }
        let older = try database.connect()
        defer { older.close() }
        try older.execute("BEGIN")
        _ = try older.query("SELECT pg_current_xact_id()")  // runs throughout, holding the horizon back
        let late = try database.connect()
        defer { late.close() }
        try late.execute("BEGIN")
        try row("first", key: "k", on: late)
        let others = try database.connect()
        defer { others.close() }
        try row("other", key: "j", on: others)

        let relay = OutboxRelay(databaseURL: database.url, brokers: try TestServices.brokers())
        let running = RunningService(relay)
        #expect(try await consumeAll(topics.output, count: 1).count == 1, "the other row published")
        try late.execute("COMMIT")
        try row("second", key: "k", on: others)
        #expect(
            try await consumeAll(topics.output, count: 3).filter { $0.key == Array("k".utf8) }.count == 2,
            "both rows of key k published while the older transaction runs")
        try older.execute("COMMIT")
        try await running.stop()

        let published = try await consumeAll(topics.output, count: 3)
        let keyK = published.filter { $0.key == Array("k".utf8) }.compactMap { $0.value.map { String(decoding: $0, as: UTF8.self) } }
        #expect(keyK == ["first", "second"])
        await topics.delete()
    }
}
