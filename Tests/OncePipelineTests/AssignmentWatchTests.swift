import OnceKafka
import Testing

@testable import OncePipeline

/// When a member decides that its group is not forming: no assignment, not even an empty one,
/// for two rebalance timeouts after joining or after a revocation.
@Suite struct AssignmentWatchTests {
    let start = ContinuousClock.now
    let p0 = TopicPartition("in", 0)

    private func overdue(_ watch: inout AssignmentWatch, _ now: ContinuousClock.Instant) -> Bool {
        watch.isOverdue(now: now)
    }

    @Test func patienceIsTwoRebalanceTimeoutsAndAtLeastTenSeconds() {
        #expect(AssignmentWatch(kafkaProperties: ["max.poll.interval.ms": "6000"]).patience == .seconds(12))
        #expect(AssignmentWatch(kafkaProperties: ["max.poll.interval.ms": "1000"]).patience == .seconds(10))
        #expect(AssignmentWatch(kafkaProperties: [:]).patience == .seconds(600))
    }

    @Test func anAssignmentEvenAnEmptyOneEndsTheWait() {
        var watch = AssignmentWatch(kafkaProperties: ["max.poll.interval.ms": "6000"])
        watch.awaitAssignment(now: start)
        #expect(overdue(&watch, start + .seconds(11)) == false)
        watch.saw(.assigned([]), now: start + .seconds(11))
        #expect(overdue(&watch, start + .seconds(60)) == false)
    }

    @Test func overdueOncePerPeriodUntilAssigned() {
        var watch = AssignmentWatch(kafkaProperties: ["max.poll.interval.ms": "6000"])
        watch.awaitAssignment(now: start)
        #expect(overdue(&watch, start + .seconds(12)))
        #expect(overdue(&watch, start + .seconds(13)) == false)
        #expect(overdue(&watch, start + .seconds(24)))
    }

    @Test func aRevocationStartsAWaitThatALaterRevocationDoesNotRestart() {
        var watch = AssignmentWatch(kafkaProperties: ["max.poll.interval.ms": "6000"])
        watch.saw(.assigned([p0]), now: start)
        #expect(overdue(&watch, start + .seconds(100)) == false)
        watch.saw(.revoked([p0]), now: start + .seconds(100))
        watch.saw(.lost([p0]), now: start + .seconds(105))
        #expect(overdue(&watch, start + .seconds(112)))
    }
}
