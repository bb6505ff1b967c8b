import OncePostgres
import Testing

@Suite(.timeLimit(.minutes(2)))
struct NotificationTests {
    /// A NOTIFY from another session reaches waitForNotifications.
    @Test func notifyFromAnotherConnectionArrives() throws {
        let listener = try connect()
        let sender = try connect()
        // Mixed case and a quote: LISTEN must quote the identifier exactly as pg_notify names it.
        let channel = uniqueName("Once \"chan\"")
        try listener.listen(channel: channel)

        #expect(try listener.waitForNotifications(timeout: .milliseconds(50)).isEmpty)

        let payloads = ["first", "héllo 🎉 'quoted' \"double\"", ""]
        for payload in payloads { try sender.notify(channel: channel, payload: payload) }
        var received: [PostgresNotification] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while received.count < payloads.count, ContinuousClock.now < deadline {
            received += try listener.waitForNotifications(timeout: .seconds(10))
        }
        #expect(received.map(\.payload) == payloads)
        #expect(received.allSatisfy { $0.channel == channel })
        #expect(received.allSatisfy { $0.senderPID == sender.backendPID })

        // Notifications that arrive while other statements run are kept for the next wait.
        try sender.transaction { tx in try tx.notify(channel: channel, payload: "at commit") }
        try listener.unlisten(channel: channel)
        try sender.notify(channel: channel, payload: "after unlisten")
        var late: [String] = []
        while late.isEmpty, ContinuousClock.now < deadline {
            late += try listener.waitForNotifications(timeout: .seconds(10)).map(\.payload)
        }
        #expect(late == ["at commit"])
    }
}
