import Foundation
import OnceTestSupport
import Testing

/// Members stopped at the same moment leave a group that the next member can join.
///
/// Against Tansu 0.6 a leader whose LeaveGroup arrives while the group is rebalancing (as it is
/// right after another member's LeaveGroup) stays the group's leader, and no member is ever
/// assigned a partition again. The next member notices (`AssignmentWatch`: no assignment for two
/// rebalance timeouts, 12 s here) and deletes the group's broker state, after which it forms.
/// The wedge is a race, so a run of the old code may pass by luck; it failed 1 of 2 cases in the
/// run that checked it, and the repair script's runs wedged 2 of 2 and 1 of 1.
@Suite(.timeLimit(.minutes(6)), .serialized)
struct GroupLeaveTests {
    static let partitions: Int32 = 4

    @Test(arguments: [2, 3])
    func membersStoppedTogetherLeaveAGroupTheNextMemberJoinsAndDrains(members: Int) async throws {
        let fixture = try await OperatorFixture.make(partitions: Self.partitions)
        let processed = { try fixture.count("SELECT count(*) FROM processed_messages") }
        let owners = { try fixture.count("SELECT count(DISTINCT owner) FROM consumer_offsets") }
        try await produce(fixture, round: "a", perPartition: 5)

        let running = try (0..<members).map { _ in try fixture.startMember() }
        func outputs() -> String {
            running.enumerated().map { "--- member \($0.offset + 1):\n\($0.element.output)" }.joined(separator: "\n")
        }
        try await eventually("\(members) members owning partitions, the first records processed", timeout: .seconds(120)) {
            try owners() == Int64(members) && processed() == Int64(Self.partitions) * 5
        }

        // SIGTERM to every member at the same moment.
        for member in running { member.signal(SIGTERM) }
        for member in running {
            let status = try await member.waitForExit(timeout: .seconds(60))
            try #require(status == 0, "a member did not stop cleanly:\n\(outputs())")
        }

        try await produce(fixture, round: "b", perPartition: 5)
        let total = Int64(Self.partitions) * 10
        let next = try OnceProcess(fixture.runArguments(["--until-idle", "4"]))
        let started = ContinuousClock.now
        do {
            try await eventually("the next member assigned every partition and caught up", timeout: .seconds(30)) {
                try processed() == total && owners() == 1
                    && fixture.count("SELECT count(*) FROM consumer_offsets WHERE next_offset = 10") == Int64(Self.partitions)
            }
        } catch {
            next.signal(SIGKILL)
            Issue.record("\(error) (\(ContinuousClock.now - started)); the next member:\n\(next.output)\n\(outputs())")
            await fixture.tearDown()
            return
        }
        let status = try await next.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "\(next.output)")
        #expect(try fixture.count("SELECT count(*) FROM processed_messages WHERE outcome <> 'applied'") == 0)
        await fixture.tearDown()
    }

    /// `perPartition` grants to each partition, one produce request each.
    private func produce(_ fixture: OperatorFixture, round: String, perPartition: Int) async throws {
        for partition in 0..<Self.partitions {
            try await fixture.produce(
                (0..<perPartition).map { fixture.grant("\(round)-\(partition)-\($0)", account: "acct-\(partition)") },
                partition: partition)
        }
    }
}
