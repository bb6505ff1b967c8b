import Foundation
import Testing

@testable import OnceKafka

@Suite(.timeLimit(.minutes(3)), .serialized)
struct KafkaConsumerTests {
    @Test func roundTripKeepsKeyValueHeadersAndOrderPerPartition() async throws {
        let topic = KafkaTestEnvironment.uniqueTopic("roundtrip")
        let admin = try await KafkaTestEnvironment.createTopic(topic, partitions: 2)
        let producer = try KafkaTestEnvironment.producer()
        var sent: [KafkaOutgoingRecord] = []
        for index in 0..<60 {
            sent.append(
                KafkaOutgoingRecord(
                    topic: topic,
                    partition: Int32(index % 2),
                    key: index % 5 == 0 ? nil : Array("key-\(index)".utf8),
                    value: index == 7 ? [] : Array("value-\(index) ✓".utf8),
                    headers: [
                        KafkaHeader(name: "event-id", string: "e\(index)"),
                        KafkaHeader(name: "empty", value: nil),
                        KafkaHeader(name: "event-id", string: "repeat"),
                    ]
                ))
        }
        let reports = try await producer.send(sent).map { try $0.get() }
        #expect(reports.count == 60)

        let consumer = try await KafkaConsumer(configuration: try KafkaTestEnvironment.consumerConfiguration(group: topic))
        try await consumer.subscribe(topics: [topic])
        var observed = Observed()
        try await consumer.poll(into: &observed, until: "60 records") { $0.records.count >= 60 }
        await consumer.close()
        await producer.close()

        for partition in Int32(0)...1 {
            let expected = sent.filter { $0.partition == partition }
            let received = observed.records.filter { $0.partition == partition }
            #expect(received.map(\.offset) == Array(0..<Int64(expected.count)))
            #expect(received.map(\.key) == expected.map(\.key))
            #expect(received.map(\.value) == expected.map(\.value))
            #expect(received.map(\.headers) == expected.map(\.headers))
            #expect(received.allSatisfy { $0.timestampMilliseconds != nil })
        }
        #expect(observed.records.first { $0.offset == 3 && $0.partition == 1 }?.value == [])
        #expect(observed.rebalances.contains(.assigned([TopicPartition(topic, 0), TopicPartition(topic, 1)])))
        try await admin.deleteTopics([topic])
        await admin.close()
    }

    @Test func aSecondMemberJoiningWhileRecordsFlowTakesPartitionsAndNothingIsMissed() async throws {
        let topic = KafkaTestEnvironment.uniqueTopic("rebalance")
        let admin = try await KafkaTestEnvironment.createTopic(topic, partitions: 4)
        let producer = try KafkaTestEnvironment.producer()
        let configuration = try KafkaTestEnvironment.consumerConfiguration(group: topic)

        // Produce 40 records a round while the members poll; stop once both hold partitions.
        let flowing = ProduceLoop(producer: producer, topic: topic)
        let producing = Task { try await flowing.run() }

        let first = try await KafkaConsumer(configuration: configuration)
        try await first.subscribe(topics: [topic])
        var firstSeen = Observed()
        try await first.poll(into: &firstSeen, until: "the first member's records") { !$0.records.isEmpty }
        #expect(firstSeen.assigned.count == 4)

        let second = try await KafkaConsumer(configuration: configuration)
        try await second.subscribe(topics: [topic])
        var secondSeen = Observed()
        // Both members must keep polling for the rebalance to complete.
        let deadline = ContinuousClock.now + .seconds(90)
        while secondSeen.assigned.isEmpty || firstSeen.assigned.count + secondSeen.assigned.count != 4 {
            guard ContinuousClock.now < deadline else { throw ConditionTimedOut(what: "the rebalance to settle") }
            async let a = first.poll(maxRecords: 500, timeout: .milliseconds(100))
            async let b = second.poll(maxRecords: 500, timeout: .milliseconds(100))
            let (resultA, resultB) = try await (a, b)
            firstSeen.add(resultA)
            secondSeen.add(resultB)
        }
        await flowing.stop()
        let producedCount = try await producing.value

        // Every produced record reaches one member or the other.
        let expected = producedCount
        let deadline2 = ContinuousClock.now + .seconds(60)
        func distinct() -> Int {
            Set((firstSeen.records + secondSeen.records).map { TopicPartition($0.topic, $0.partition).description + "@\($0.offset)" }).count
        }
        while distinct() < expected {
            guard ContinuousClock.now < deadline2 else { throw ConditionTimedOut(what: "all \(expected) records") }
            async let a = first.poll(maxRecords: 500, timeout: .milliseconds(100))
            async let b = second.poll(maxRecords: 500, timeout: .milliseconds(100))
            let (resultA, resultB) = try await (a, b)
            firstSeen.add(resultA)
            secondSeen.add(resultB)
        }
        #expect(distinct() == expected)
        #expect(firstSeen.rebalances.contains { if case .revoked(let p) = $0 { return !p.isEmpty } else { return false } })
        #expect(secondSeen.rebalances.contains { if case .assigned(let p) = $0 { return !p.isEmpty } else { return false } })
        #expect(firstSeen.assigned.isDisjoint(with: secondSeen.assigned))
        #expect(firstSeen.assigned.union(secondSeen.assigned).count == 4)
        #expect(!secondSeen.records.isEmpty)

        await second.close()
        await first.close()
        await producer.close()
        try await admin.deleteTopics([topic])
        await admin.close()
    }

    @Test func seekRedeliversFromAStoredOffsetAndCommitsAreReadBack() async throws {
        let topic = KafkaTestEnvironment.uniqueTopic("seek")
        let admin = try await KafkaTestEnvironment.createTopic(topic, partitions: 1)
        let producer = try KafkaTestEnvironment.producer()
        // One record per produce request: Tansu 0.6 reports a partition's high watermark as the
        // last batch's base offset + 1, which is exact only for single-record batches.
        for index in 0..<10 {
            _ = try await producer.send(KafkaOutgoingRecord(topic: topic, partition: 0, value: Array("r\(index)".utf8)))
        }
        let partition = TopicPartition(topic, 0)

        let consumer = try await KafkaConsumer(configuration: try KafkaTestEnvironment.consumerConfiguration(group: topic))
        try await consumer.assign([partition: 0])
        var observed = Observed()
        try await consumer.poll(into: &observed, until: "10 records") { $0.records.count >= 10 }
        #expect(observed.records.map(\.offset) == Array(0..<10))

        try await consumer.commit([partition: 4])
        #expect(try await consumer.committed([partition]) == [partition: 4])

        try await consumer.seek(partition, to: 4)
        var again = Observed()
        try await consumer.poll(into: &again, until: "the records from offset 4") { $0.records.count >= 6 }
        #expect(again.records.map(\.offset) == Array(4..<10))
        #expect(again.records.first?.value == Array("r4".utf8))

        let marks = try await admin.watermarks(partition)
        #expect(marks == KafkaWatermarks(low: 0, high: 10))
        #expect(try await admin.partitionCount(topic: topic) == 1)

        await consumer.close()
        await producer.close()
        try await admin.deleteTopics([topic])
        await admin.close()
    }

    @Test func pauseStopsDeliveryAndResumeRestartsIt() async throws {
        let topic = KafkaTestEnvironment.uniqueTopic("pause")
        let admin = try await KafkaTestEnvironment.createTopic(topic, partitions: 1)
        let producer = try KafkaTestEnvironment.producer()
        let partition = TopicPartition(topic, 0)
        let consumer = try await KafkaConsumer(configuration: try KafkaTestEnvironment.consumerConfiguration(group: topic))
        try await consumer.assign([partition: 0])

        _ = try await producer.send((0..<5).map { KafkaOutgoingRecord(topic: topic, partition: 0, value: Array("a\($0)".utf8)) })
        var observed = Observed()
        try await consumer.poll(into: &observed, until: "the first 5 records") { $0.records.count >= 5 }

        try await consumer.pause([partition])
        _ = try await producer.send((0..<5).map { KafkaOutgoingRecord(topic: topic, partition: 0, value: Array("b\($0)".utf8)) })
        // The records are on the broker (acknowledged above); a paused partition must not deliver
        // them over many polls.
        var whilePaused = Observed()
        for _ in 0..<15 { whilePaused.add(try await consumer.poll(maxRecords: 100, timeout: .milliseconds(100))) }
        #expect(whilePaused.records.isEmpty)

        try await consumer.resume([partition])
        var afterResume = Observed()
        try await consumer.poll(into: &afterResume, until: "the records after resume") { $0.records.count >= 5 }
        #expect(afterResume.records.map(\.offset) == Array(5..<10))

        await consumer.close()
        await producer.close()
        try await admin.deleteTopics([topic])
        await admin.close()
    }
}

/// Produces rounds of records until stopped; returns how many it produced.
actor ProduceLoop {
    let producer: KafkaProducer
    let topic: String
    private var stopped = false

    init(producer: KafkaProducer, topic: String) {
        self.producer = producer
        self.topic = topic
    }

    func stop() { stopped = true }

    func run() async throws -> Int {
        var count = 0
        while !stopped {
            let round = (0..<40).map { KafkaOutgoingRecord(topic: topic, key: Array("k\(count + $0)".utf8), value: Array("v\(count + $0)".utf8)) }
            for result in try await producer.send(round) { _ = try result.get() }
            count += round.count
            // Pacing between rounds, not synchronisation: records keep flowing during the rebalance.
            try await Task.sleep(for: .milliseconds(100))
        }
        return count
    }
}
