import Foundation
import Testing

@testable import OnceKafka

/// Connection settings for the local broker, from the environment that `deploy/local/services`
/// writes. A missing setting fails the test: these tests never pass without a broker.
enum KafkaTestEnvironment {
    static func brokers() throws -> String {
        let value = ProcessInfo.processInfo.environment["ONCE_KAFKA_BROKERS"]
        return try #require(value, "ONCE_KAFKA_BROKERS is not set: run the tests through deploy/local/test")
    }

    static func uniqueTopic(_ prefix: String = "test") -> String {
        "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
    }

    static func consumerConfiguration(group: String) throws -> KafkaConsumerConfiguration {
        var configuration = KafkaConsumerConfiguration(bootstrapServers: try brokers(), groupID: group)
        // The local broker completes a rebalance only after about max.poll.interval.ms.
        configuration.maxPollInterval = .seconds(6)
        configuration.sessionTimeout = .seconds(6)
        return configuration
    }

    static func producer() throws -> KafkaProducer {
        try KafkaProducer(configuration: KafkaProducerConfiguration(bootstrapServers: try brokers()))
    }

    /// Creates a topic and returns the admin client that made it.
    static func createTopic(_ name: String, partitions: Int32) async throws -> KafkaAdmin {
        let admin = try await KafkaAdmin(bootstrapServers: try brokers())
        try await admin.createTopics([KafkaTopicSpecification(name: name, partitions: partitions)])
        return admin
    }
}

/// Everything a consumer saw while polling, accumulated.
struct Observed: Sendable {
    var records: [KafkaRecord] = []
    var rebalances: [KafkaRebalanceEvent] = []
    var errors: [KafkaError] = []

    mutating func add(_ result: KafkaPollResult) {
        records += result.records
        rebalances += result.rebalances
        errors += result.errors
    }

    var assigned: Set<TopicPartition> {
        var current: Set<TopicPartition> = []
        for event in rebalances {
            switch event {
            case .assigned(let partitions): current.formUnion(partitions)
            case .revoked(let partitions), .lost(let partitions): current.subtract(partitions)
            }
        }
        return current
    }
}

struct ConditionTimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

extension KafkaConsumer {
    /// Polls until `condition` holds for what was seen so far, or fails after `timeout`.
    func poll(
        into observed: inout Observed,
        until what: String,
        timeout: Duration = .seconds(60),
        _ condition: (Observed) -> Bool
    ) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition(observed) {
            guard ContinuousClock.now < deadline else { throw ConditionTimedOut(what: what) }
            observed.add(try await poll(maxRecords: 500, timeout: .milliseconds(100)))
        }
    }
}
