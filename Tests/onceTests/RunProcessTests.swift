import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OnceSchema
import OnceTestSupport
import Testing

/// `once run` as operators run it: a child process, killed, restarted, joined by a second one.
@Suite(.timeLimit(.minutes(6)), .serialized)
struct RunProcessTests {
    struct Setup: Sendable {
        let database: TestDatabase
        let topic: String
        let group: String
        let tenant: String
        let admin: KafkaAdmin

        static func make(partitions: Int32 = 4) async throws -> Setup {
            let database = try await TestDatabase.create(migrations: Migration.pipeline + Domain.migrations)
            let admin = try await KafkaAdmin(bootstrapServers: try TestServices.brokers())
            let topic = TestServices.unique("grants")
            try await admin.createTopics([KafkaTopicSpecification(name: topic, partitions: partitions)])
            return Setup(database: database, topic: topic, group: TestServices.unique("group"), tenant: TestServices.unique("t"), admin: admin)
        }

        func tearDown() async {
            try? await admin.deleteTopics([topic])
            await admin.close()
            database.drop()
        }

        func arguments(_ extra: [String] = []) throws -> [String] {
            ["run", "--database-url", database.url, "--brokers", try TestServices.brokers(), "--topics", topic, "--group", group,
             "--kafka-property", "max.poll.interval.ms=6000", "--kafka-property", "session.timeout.ms=6000"] + extra
        }

        func start(_ extra: [String] = []) throws -> OnceProcess { try OnceProcess(try arguments(extra)) }

        func count(_ sql: String) throws -> Int64 { try database.scalar(sql, as: Int64.self) }

        var storedTotal: Int64 { get throws { try count("SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets") } }
        var processed: Int64 { get throws { try count("SELECT count(*) FROM processed_messages") } }
    }

    /// A `credits.granted` event.
    static func grant(id: String, tenant: String, grant: String, account: String, credits: Int = 10) -> [UInt8] {
        JSONWriter.serialize(.object([
            "event_id": .string(id), "type": .string("credits.granted"), "version": .integer(1), "tenant_id": .string(tenant),
            "occurred_at": .string("2026-11-22T10:00:00Z"),
            "data": .object(["grant_id": .string(grant), "account_id": .string(account), "credits": .integer(Int64(credits))]),
        ]))
    }

    /// Produces records and remembers which event id landed at which position.
    actor Producer {
        let producer: KafkaProducer
        let topic: String
        private(set) var positions: [TopicPartition: [Int64: String]] = [:]
        private(set) var total = 0

        init(topic: String) throws {
            self.topic = topic
            producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: try TestServices.brokers()))
        }

        func send(_ events: [(id: String, key: String, value: [UInt8])]) async throws {
            let results = try await producer.send(events.map { KafkaOutgoingRecord(topic: topic, key: Array($0.key.utf8), value: $0.value) })
            for (event, result) in zip(events, results) {
                let report = try result.get()
                positions[TopicPartition(report.topic, report.partition), default: [:]][report.offset] = event.id
            }
            total += events.count
        }

        func close() async { await producer.close() }
    }

    /// CONTRACT.md §2's invariants, checked by query against what was produced.
    func checkInvariants(_ setup: Setup, producer: Producer, grants: Int) async throws {
        let connection = try setup.database.connect()
        defer { connection.close() }
        let processedIDs = Set(try connection.query("SELECT event_id FROM processed_messages").map { try $0.decode(String.self, column: 0) })
        let stored = try connection.query("SELECT topic, partition, next_offset FROM consumer_offsets").map {
            (TopicPartition(try $0.decode(String.self, column: 0), try $0.decode(Int32.self, column: 1)), try $0.decode(Int64.self, column: 2))
        }
        let positions = await producer.positions
        for (partition, next) in stored {
            let below = positions[partition, default: [:]].filter { $0.key < next }
            #expect(below.count == Int(next), "every offset below next_offset of \(partition) was produced by this test")
            #expect(below.values.allSatisfy(processedIDs.contains), "every offset below next_offset of \(partition) is accounted for")
        }
        #expect(try setup.count("SELECT count(*) FROM credit_ledger") == Int64(grants))
        #expect(try setup.count("SELECT count(*) FROM (SELECT 1 FROM credit_ledger GROUP BY tenant_id, kind, business_key HAVING count(*) > 1) d") == 0)
        #expect(try setup.count(
            "SELECT count(*) FROM credit_accounts a WHERE balance <> (SELECT coalesce(sum(amount), 0) FROM credit_ledger l WHERE l.tenant_id = a.tenant_id AND l.account_id = a.account_id)") == 0)
        #expect(try setup.count("SELECT count(*) FROM dead_letters") == 0)
    }

    @Test func killedAtRandomMomentsItResumesWithEveryEffectExactlyOnce() async throws {
        let setup = try await Setup.make()
        let producer = try Producer(topic: setup.topic)
        // 17,000 grants, 1,500 exact redeliveries (same event id) and 1,500 producer duplicates
        // (new id, same grant): 20,000 records, produced in rounds while the consumer is killed.
        var events: [(id: String, key: String, value: [UInt8])] = (0..<17_000).map { index in
            (id: "g\(index)", key: "grant-\(index)", value: Self.grant(id: "g\(index)", tenant: setup.tenant, grant: "grant-\(index)", account: "acct-\(index % 97)"))
        }
        events += (0..<1_500).map { events[$0 * 11] }
        events += (0..<1_500).map { index in
            (id: "d\(index)", key: "grant-\(index * 7)", value: Self.grant(id: "d\(index)", tenant: setup.tenant, grant: "grant-\(index * 7)", account: "acct-\((index * 7) % 97)"))
        }
        events.shuffle()
        let feeding = Task {
            for chunk in stride(from: 0, to: events.count, by: 1_000) {
                try await producer.send(Array(events[chunk..<min(chunk + 1_000, events.count)]))
                try await Task.sleep(for: .milliseconds(300))  // pacing: records keep arriving across the kills
            }
        }

        var kills = 0
        while kills < 5 {
            let before = try setup.processed
            let child = try setup.start()
            let target = before + Int64.random(in: 300...2_500)
            try await eventually("progress before kill \(kills + 1)", timeout: .seconds(120)) {
                try setup.processed >= min(target, 18_500) || !child.process.isRunning
            }
            try #require(child.process.isRunning, "once run exited early:\n\(child.output)")
            child.signal(SIGKILL)
            try await child.waitForExit()
            kills += 1
        }
        try await feeding.value
        let last = try await OnceProcess.run(try setup.arguments(["--until-idle", "3"]), timeout: .seconds(180))
        #expect(last.status == 0, "\(last.output)")
        #expect(try setup.storedTotal == 20_000)
        #expect(try setup.processed == 18_500)
        #expect(try setup.count("SELECT count(*) FROM processed_messages WHERE outcome = 'duplicate'") == 1_500)
        try await checkInvariants(setup, producer: producer, grants: 17_000)
        await producer.close()
        await setup.tearDown()
    }

    @Test func aSecondProcessJoinsAndLeavesWithoutDoubleEffectsLossOrOffsetsGoingBack() async throws {
        let setup = try await Setup.make()
        let producer = try Producer(topic: setup.topic)
        let feeding = Task {
            for round in 0..<40 {
                try await producer.send((0..<250).map { index in
                    let id = "r\(round)-\(index)"
                    return (id: id, key: id, value: Self.grant(id: id, tenant: setup.tenant, grant: id, account: "acct-\(index % 13)"))
                })
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        // Watch the stored positions: they may only move forward.
        let watching = Task { () -> [String] in
            var last: [String: Int64] = [:]
            var regressions: [String] = []
            let connection = try setup.database.connect()
            defer { connection.close() }
            while !Task.isCancelled {
                for row in try connection.query("SELECT topic || '/' || partition, next_offset FROM consumer_offsets WHERE next_offset IS NOT NULL") {
                    let key = try row.decode(String.self, column: 0)
                    let value = try row.decode(Int64.self, column: 1)
                    if let previous = last[key], value < previous { regressions.append("\(key): \(previous) → \(value)") }
                    last[key] = value
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return regressions
        }

        let first = try setup.start()
        try await eventually("the first member claims all partitions") {
            try setup.count("SELECT count(*) FROM consumer_offsets") == 4 && setup.processed > 0
        }
        let second = try setup.start()
        try await eventually("the second member claims partitions", timeout: .seconds(120)) {
            try setup.count("SELECT count(DISTINCT owner) FROM consumer_offsets") == 2
        }
        let joinedAt = try setup.processed
        try await eventually("progress with two members") { try setup.processed > joinedAt + 500 }
        second.signal(SIGTERM)
        let secondStatus = try await second.waitForExit(timeout: .seconds(30))
        #expect(secondStatus == 0, "\(second.output)")
        try await feeding.value
        try await eventually("everything processed by the remaining member", timeout: .seconds(120)) {
            try setup.storedTotal == 10_000
        }
        first.signal(SIGTERM)
        let firstStatus = try await first.waitForExit(timeout: .seconds(30))
        #expect(firstStatus == 0, "\(first.output)")
        watching.cancel()
        let regressions = try await watching.value
        #expect(regressions.isEmpty, "stored offsets went back: \(regressions)")
        #expect(try setup.processed == 10_000)
        try await checkInvariants(setup, producer: producer, grants: 10_000)
        await producer.close()
        await setup.tearDown()
    }

    @Test func sigtermDuringAStreamExitsCleanlyAndTheNextStartReappliesNothing() async throws {
        let setup = try await Setup.make()
        let producer = try Producer(topic: setup.topic)
        let stream = Task {
            var round = 0
            while !Task.isCancelled {
                try await producer.send((0..<100).map { index in
                    let id = "s\(round)-\(index)"
                    return (id: id, key: id, value: Self.grant(id: id, tenant: setup.tenant, grant: id, account: "acct-\(index % 7)"))
                })
                round += 1
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let child = try setup.start()
        try await eventually("a steady stream being processed") { try setup.processed > 1_000 }
        let stoppedAt = ContinuousClock.now
        child.signal(SIGTERM)
        let status = try await child.waitForExit(timeout: .seconds(10))
        #expect(status == 0, "\(child.output)")
        #expect(ContinuousClock.now - stoppedAt < .seconds(10))
        stream.cancel()
        _ = await stream.result

        // Positions stored at the stop; the next start must begin exactly there.
        let stored = Dictionary(uniqueKeysWithValues: try setup.database.connect().query(
            "SELECT topic || '/' || partition, next_offset FROM consumer_offsets").map {
                (try $0.decode(String.self, column: 0), try $0.decode(Int64?.self, column: 1))
            })
        let appliedBefore = try setup.count("SELECT count(*) FROM credit_ledger")
        let next = try await OnceProcess.run(try setup.arguments(["--until-idle", "3"]), timeout: .seconds(120))
        #expect(next.status == 0, "\(next.output)")
        for (partition, offset) in stored {
            #expect(next.output.contains("claimed \(partition) at \(offset.map(String.init) ?? "earliest")"), "\(next.output)")
        }
        let total = await producer.total
        #expect(try setup.storedTotal == Int64(total))
        #expect(try setup.processed == Int64(total))
        #expect(try setup.count("SELECT count(*) FROM credit_ledger") == Int64(total))
        #expect(appliedBefore <= Int64(total))
        #expect(try setup.count("SELECT count(*) FROM processed_messages WHERE outcome <> 'applied'") == 0)
        try await checkInvariants(setup, producer: producer, grants: total)
        await producer.close()
        await setup.tearDown()
    }

    @Test func theRelayKilledMidPublishRepublishesWithTheSameIdsInKeyOrder() async throws {
        let setup = try await Setup.make()
        let producer = try Producer(topic: setup.topic)
        let grants = 20_000
        try await producer.send((0..<grants).map { index in
            let id = "o\(index)"
            return (id: id, key: "acct-\(index % 50)", value: Self.grant(id: id, tenant: setup.tenant, grant: id, account: "acct-\(index % 50)"))
        })
        let child = try setup.start()
        try await eventually("the relay part-way through", timeout: .seconds(120)) {
            let published = try setup.count("SELECT count(*) FROM outbox_publication WHERE published")
            return published > 0 && published < Int64(grants)
        }
        child.signal(SIGKILL)
        try await child.waitForExit()
        let publishedAtKill = try setup.count("SELECT count(*) FROM outbox_publication WHERE published")
        let rest = try await OnceProcess.run(try setup.arguments(["--until-idle", "3"]), timeout: .seconds(180))
        #expect(rest.status == 0, "\(rest.output)")
        #expect(publishedAtKill < Int64(grants))
        #expect(try setup.count("SELECT count(*) FROM outbox_publication WHERE NOT published") == 0)

        // Every outbox event reached the topic, with the event id stored in the outbox, and per
        // key (account) in outbox order.
        let connection = try setup.database.connect()
        let expected = try connection.query(
            "SELECT message_key, convert_from(payload, 'UTF8')::jsonb->>'event_id' FROM outbox WHERE event_type = 'credits.granted' AND tenant_id = $1 ORDER BY id",
            [.text(setup.tenant)]
        ).map { (try $0.decode(String.self, column: 0), try $0.decode(String.self, column: 1)) }
        connection.close()
        #expect(expected.count == grants)
        let partitions = try await setup.admin.partitionCount(topic: "credit-ledger")
        let records = try await consumeAll("credit-ledger", partitions: partitions, count: Int.max, timeout: .seconds(20))
        var seenByKey: [String: [String]] = [:]
        for record in records {
            guard let value = record.value, case .object(let fields)? = try? JSONParser.parse(value),
                  fields["tenant_id"]?.stringValue == setup.tenant, let id = fields["event_id"]?.stringValue,
                  let key = record.key.map({ String(decoding: $0, as: UTF8.self) }) else { continue }
            if seenByKey[key]?.contains(id) != true { seenByKey[key, default: []].append(id) }
        }
        let expectedByKey = Dictionary(grouping: expected, by: \.0).mapValues { $0.map(\.1) }
        // Where the topic and the outbox first part, per key (the whole lists are too long to read).
        let differences = expectedByKey.keys.sorted().compactMap { key -> String? in
            let seen = seenByKey[key] ?? []
            let wanted = expectedByKey[key]!
            guard seen != wanted else { return nil }
            let at = (0..<min(seen.count, wanted.count)).first { seen[$0] != wanted[$0] } ?? min(seen.count, wanted.count)
            return "\(key): \(seen.count) seen, \(wanted.count) in the outbox, first difference at \(at)"
                + " (seen \(at < seen.count ? seen[at] : "-"), outbox \(at < wanted.count ? wanted[at] : "-"))"
        }
        #expect(differences.isEmpty, "\(differences.count) keys differ: \(differences.prefix(5))")
        #expect(Set(seenByKey.keys) == Set(expectedByKey.keys))
        await producer.close()
        await setup.tearDown()
    }
}
