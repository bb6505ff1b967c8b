import Foundation
import Synchronization
import Testing

@testable import OnceKafka

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The calling OS thread, comparable across jobs.
private func currentThread() -> UInt {
    #if canImport(Darwin)
        UInt(bitPattern: pthread_self())
    #else
        UInt(pthread_self())
    #endif
}

/// The ownership model shared by consumer, producer and admin: one thread per handle, one
/// teardown, typed `.closed` errors afterwards. None of these needs a broker.
@Suite(.timeLimit(.minutes(1)))
struct KafkaHandleTests {
    /// A client that never has to reach a broker for what these tests do.
    private static func offlineClient() throws -> RDKafkaClient {
        try RDKafkaClient.admin(
            properties: ["bootstrap.servers": "127.0.0.1:1", "log.queue": "true"], logger: .init(label: "once.kafka.test"))
    }

    @Test func jobsRunOnOneDedicatedThreadAndCloseTearsDownOnce() async throws {
        let handle = KafkaHandle(try Self.offlineClient(), subject: "test client", threadName: "test-kafka")
        let first = try await handle.run { _ in currentThread() }
        let second = try await handle.run { _ in currentThread() }
        #expect(first == second)
        #expect(first != currentThread())

        let teardowns = Atomic<Int>(0)
        await handle.close { _ in teardowns.add(1, ordering: .relaxed) }
        await handle.close { _ in teardowns.add(1, ordering: .relaxed) }
        #expect(teardowns.load(ordering: .relaxed) == 1)
        #expect(!handle.isOpen)

        let afterClose = await #expect(throws: KafkaError.self) { try await handle.run { _ in 1 } }
        #expect(afterClose?.kind == .closed)
        #expect(afterClose?.message == "test client is closed")
        let onCaller = #expect(throws: KafkaError.self) { try handle.runOnCallingThread { _ in 1 } }
        #expect(onCaller?.kind == .closed)
    }

    @Test func aHandleNeverClosedStillFreesItsClient() async throws {
        var handle: KafkaHandle? = KafkaHandle(try Self.offlineClient(), subject: "test client", threadName: "test-kafka")
        #expect(try await handle?.run { _ in true } == true)
        handle = nil  // deinit queues the destroy to the handle's thread and ends it
        #expect(handle == nil)
    }

    @Test func everyClientThrowsClosedAfterClose() async throws {
        let consumer = try await KafkaConsumer(
            configuration: KafkaConsumerConfiguration(bootstrapServers: "127.0.0.1:1", groupID: "closed-test"))
        await consumer.close()
        await consumer.close()
        let polled = await #expect(throws: KafkaError.self) { _ = try await consumer.poll() }
        #expect(polled?.kind == .closed)

        let admin = try await KafkaAdmin(bootstrapServers: "127.0.0.1:1")
        await admin.close()
        await admin.close()
        let counted = await #expect(throws: KafkaError.self) { _ = try await admin.partitionCount(topic: "t") }
        #expect(counted?.kind == .closed)

        let producer = try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: "127.0.0.1:1"))
        await producer.close()
        let flushed = await #expect(throws: KafkaError.self) { try await producer.flush() }
        #expect(flushed?.kind == .closed)
        let sent = await #expect(throws: KafkaError.self) {
            _ = try await producer.send(KafkaOutgoingRecord(topic: "t", value: []))
        }
        #expect(sent?.kind == .closed)
    }
}

/// The rebalance hand-off against the broker: the listener decides where assigned partitions
/// start and hears the revoke when the consumer leaves.
@Suite(.timeLimit(.minutes(2)))
struct KafkaRebalanceHandoffTests {
    final class Listener: KafkaRebalanceListener {
        let starts: [TopicPartition: Int64]
        private let heard = Mutex<(assigned: [[TopicPartition]], revoked: [[TopicPartition]])>(([], []))

        init(starts: [TopicPartition: Int64]) { self.starts = starts }

        func partitionsAssigned(_ partitions: [TopicPartition]) -> [TopicPartition: Int64] {
            heard.withLock { $0.assigned.append(partitions) }
            return starts.filter { partitions.contains($0.key) }
        }

        func partitionsRevoked(_ partitions: [TopicPartition]) {
            heard.withLock { $0.revoked.append(partitions) }
        }

        var assigned: [[TopicPartition]] { heard.withLock { $0.assigned } }
        var revoked: [[TopicPartition]] { heard.withLock { $0.revoked } }
    }

    @Test func theListenerChoosesWhereAssignedPartitionsStartAndHearsTheRevokeOnClose() async throws {
        let topic = KafkaTestEnvironment.uniqueTopic("handoff")
        let admin = try await KafkaTestEnvironment.createTopic(topic, partitions: 1)
        let producer = try KafkaTestEnvironment.producer()
        let partition = TopicPartition(topic, 0)
        for index in 0..<10 {
            _ = try await producer.send(KafkaOutgoingRecord(topic: topic, partition: 0, value: Array("r\(index)".utf8)))
        }

        let listener = Listener(starts: [partition: 6])
        let consumer = try await KafkaConsumer(
            configuration: try KafkaTestEnvironment.consumerConfiguration(group: topic), rebalanceListener: listener)
        try await consumer.subscribe(topics: [topic])
        var observed = Observed()
        try await consumer.poll(into: &observed, until: "the records from offset 6") { $0.records.count >= 4 }
        #expect(observed.records.map(\.offset) == Array(6..<10))
        #expect(observed.rebalances.first == .assigned([partition]))
        #expect(listener.assigned.first == [partition])
        #expect(try await consumer.assignment() == [partition])

        await consumer.close()
        #expect(listener.revoked.last == [partition])

        await producer.close()
        try await admin.deleteTopics([topic])
        await admin.close()
    }
}
