import Foundation
import OnceKafka

/// How fast the broker hands the workload to one consumer: every partition assigned from
/// offset 0, read to the end, nothing done with the records. A bound on any consumer here.
struct ReadResult: Codable, Sendable {
    var records: Int
    var polls: Int
    var seconds: Double
    var recordsPerSecond: Double
    var properties: [String: String]
}

enum ReadStep {
    static func run(topic: String, expectation: Expectation, properties: [String: String], context: BenchContext) async throws -> ReadResult {
        var configuration = KafkaConsumerConfiguration(bootstrapServers: context.brokers, groupID: "bench-\(context.runID)-read")
        configuration.clientID = "once-bench-read"
        configuration.properties = properties
        let consumer = try await KafkaConsumer(configuration: configuration)
        var starts: [TopicPartition: Int64] = [:]
        for partition in expectation.recordsPerPartition.keys { starts[TopicPartition(topic, partition)] = 0 }
        let started = ContinuousClock.now
        try await consumer.assign(starts)
        var read = 0
        var polls = 0
        let deadline = ContinuousClock.now + .seconds(120)
        while read < expectation.records && ContinuousClock.now < deadline {
            read += try await consumer.poll(maxRecords: 5000, timeout: .milliseconds(100)).records.count
            polls += 1
        }
        let seconds = (ContinuousClock.now - started).seconds
        await consumer.close()
        return ReadResult(records: read, polls: polls, seconds: seconds, recordsPerSecond: Double(read) / seconds, properties: properties)
    }
}
