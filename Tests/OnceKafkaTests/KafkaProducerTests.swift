import Foundation
import Testing

@testable import OnceKafka

@Suite(.timeLimit(.minutes(2)))
struct KafkaProducerTests {
    @Test func producingToAMissingTopicFailsWithATypedError() async throws {
        var configuration = KafkaProducerConfiguration(bootstrapServers: try KafkaTestEnvironment.brokers())
        configuration.messageTimeout = .seconds(3)
        configuration.properties["topic.metadata.propagation.max.ms"] = "1000"
        let producer = try KafkaProducer(configuration: configuration)
        let missing = KafkaTestEnvironment.uniqueTopic("missing")
        let error = await #expect(throws: KafkaError.self) {
            _ = try await producer.send(KafkaOutgoingRecord(topic: missing, value: Array("x".utf8)))
        }
        #expect(error?.kind == .unknownTopicOrPartition)
        #expect(error?.topic == missing)
        await producer.close()
    }

    @Test func anUnknownPropertyIsRejectedByName() async throws {
        var configuration = KafkaProducerConfiguration(bootstrapServers: "127.0.0.1:1")
        configuration.properties["no.such.property"] = "1"
        let error = #expect(throws: KafkaError.self) { _ = try KafkaProducer(configuration: configuration) }
        #expect(error?.kind == .configuration(property: "no.such.property"))
        #expect(error?.isRetriable == false)
    }

    @Test func deliveryReportsCarryOffsetsInOrder() async throws {
        let topic = KafkaTestEnvironment.uniqueTopic("delivery")
        let admin = try await KafkaTestEnvironment.createTopic(topic, partitions: 1)
        let producer = try KafkaTestEnvironment.producer()
        let reports = try await producer.send((0..<100).map { KafkaOutgoingRecord(topic: topic, value: Array("\($0)".utf8)) })
        #expect(try reports.map { try $0.get().offset } == Array(0..<100))
        #expect(try reports.allSatisfy { try $0.get().topic == topic && $0.get().partition == 0 })
        try await producer.flush()
        await producer.close()
        await producer.close()
        await #expect(throws: KafkaError.self) { _ = try await producer.send(KafkaOutgoingRecord(topic: topic, value: [])) }
        try await admin.deleteTopics([topic])
        await admin.close()
    }
}
