import OnceKafka
import Testing

@testable import OnceOutbox

/// What the relay keeps of the rows its process committed: only while it is active, up to its
/// capacity, each row taken once.
@Suite struct OutboxHandoffTests {
    func row(_ id: Int64, payload: String = "p") -> OutboxRow {
        OutboxRow(id: id, record: KafkaOutgoingRecord(topic: "t", key: Array("k".utf8), value: Array(payload.utf8)))
    }

    @Test func rowsAreKeptOnlyWhileTheRelayIsActiveAndTakenOnce() {
        let handoff = OutboxHandoff()
        handoff.committed([row(1)])
        #expect(handoff.count == 0, "standing by: nothing kept")
        handoff.accept(true)
        handoff.committed([row(2, payload: "two"), row(3)])
        let taken = handoff.take([1, 2, 4])
        #expect(taken.keys.sorted() == [2])
        #expect(taken[2]?.value == Array("two".utf8))
        #expect(handoff.take([2]).isEmpty, "taken once")
        #expect(handoff.count == 1)
        handoff.accept(false)
        #expect(handoff.count == 0, "standing by again: dropped")
    }

    @Test func rowsBelowTheFloorAreDropped() {
        let handoff = OutboxHandoff()
        handoff.accept(true)
        handoff.committed((1...10).map { row($0) })
        let start = ContinuousClock.now
        handoff.forget(below: 6, now: start)
        #expect(handoff.count == 5)
        handoff.forget(below: 8, now: start + .milliseconds(500))
        #expect(handoff.count == 5, "looked through within the second: not again")
        handoff.forget(below: 8, now: start + OutboxHandoff.sweepInterval)
        #expect(handoff.count == 3)
        #expect(handoff.take(Array(1...10)).keys.sorted() == [8, 9, 10])
    }

    @Test func pastItsCapacityRowsAreLeftToTheTable() {
        let handoff = OutboxHandoff(capacityBytes: 1_000)
        handoff.accept(true)
        handoff.committed((1...100).map { row($0, payload: String(repeating: "x", count: 100)) })
        let kept = handoff.count
        #expect(kept > 0 && kept < 10)
        #expect(handoff.take(Array(1...100)).keys.sorted() == Array(1...Int64(kept)), "the first rows, the rest left")
        handoff.committed([row(200)])
        #expect(handoff.count == 1, "room again once taken")
    }
}
