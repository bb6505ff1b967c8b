import Foundation
import OnceKafka
import OncePostgres
import OnceTestSupport
import Testing

@testable import OnceCore

/// The relay's marks as a plain value: the head follows what was published, the floor waits for
/// the transactions that could still add rows below it.
@Suite struct OutboxPositionTests {
    func horizon(oldest: Int64, next: Int64, top: Int64) -> OutboxHorizon {
        OutboxHorizon(oldestRunningXID: oldest, nextXID: next, topID: top)
    }

    @Test func theFloorWaitsForEveryTransactionRunningAtTheRead() {
        var position = OutboxPosition(floor: 1)
        // Read 1 sees rows up to 10 while transactions 100…104 run.
        #expect(position.observe(horizon(oldest: 100, next: 105, top: 10)) == nil)
        position.published(through: 10)
        #expect(position.head == 11)
        #expect(position.floor == 1)
        // Transaction 103 still runs: it may hold an id below 10.
        #expect(position.observe(horizon(oldest: 103, next: 110, top: 20)) == nil)
        position.published(through: 20)
        // All of them ended: rows 1…10 are looked at once more, then the floor passes them.
        #expect(position.observe(horizon(oldest: 105, next: 112, top: 25)) == 1..<11)
        position.settle(below: 11, firstUnpublished: nil)
        #expect(position.floor == 11)
        #expect(position.head == 21)
    }

    @Test func aRowThatCommittedLateHoldsTheFloor() {
        var position = OutboxPosition(floor: 1)
        _ = position.observe(horizon(oldest: 100, next: 105, top: 10))
        position.published(through: 10)
        let recheck = position.observe(horizon(oldest: 105, next: 106, top: 10))
        #expect(recheck == 1..<11)
        position.settle(below: 11, firstUnpublished: 4)
        #expect(position.floor == 4)
        // The next settled read finds row 4 published and moves on.
        #expect(position.observe(horizon(oldest: 106, next: 107, top: 10)) == 4..<11)
        position.settle(below: 11, firstUnpublished: nil)
        #expect(position.floor == 11)
    }

    @Test func theFloorNeverPassesTheHead() {
        var position = OutboxPosition(floor: 1)
        // A backlog: the read saw rows up to 5,000 but published only the first 500.
        _ = position.observe(horizon(oldest: 50, next: 60, top: 5000))
        position.published(through: 500)
        #expect(position.observe(horizon(oldest: 60, next: 70, top: 5000)) == 1..<501)
        position.settle(below: 501, firstUnpublished: nil)
        #expect(position.floor == 501)
    }

    @Test func aFailedRowIsReadAgainButTheFloorStays() {
        var position = OutboxPosition(floor: 7)
        position.published(through: 40)
        position.retry(from: 25)
        #expect(position.head == 25)
        position.retry(from: 3)
        #expect(position.head == 7)
        #expect(position.floor == 7)
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
        let running = Task { try await relay.run() }
        try await eventually("the 20 committed rows published") {
            try database.scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", as: Int64.self) == 20
        }
        // Let the relay sweep a few more times while the late transaction is open.
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try database.scalar("SELECT floor FROM outbox_relay", as: Int64.self) <= lateID)
        }
        try late.execute("COMMIT")
        try await eventually("the late row published") {
            try database.scalar("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1", [.int64(lateID)], as: Bool.self)
        }
        try await eventually("the floor past every row") {
            try database.scalar("SELECT floor FROM outbox_relay", as: Int64.self) == 22
        }
        relay.stop()
        try await running.value

        let published = try await consumeAll(topics.output, count: 21)
        #expect(Set(published.compactMap { $0.key.map { String(decoding: $0, as: UTF8.self) } }).count == 21)
        await topics.delete()
    }
}
