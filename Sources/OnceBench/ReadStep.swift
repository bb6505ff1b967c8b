import Foundation
import Histogram
import OnceKafka

/// How fast the broker hands the workload to a bare consumer: every partition assigned from
/// offset 0 and read to the end, nothing done with the records. A bound on any consumer here.
struct ReadResult: Codable, Sendable {
    var records: Int
    var seconds: Double
    var recordsPerSecond: Double
}

enum ReadStep {
    static func run(topic: String, expectation: Expectation, context: BenchContext) async throws -> ReadResult {
        var configuration = KafkaConsumerConfiguration(
            bootstrapServers: context.brokers, groupID: "bench-\(context.runID)-read")
        configuration.clientID = "once-bench-read"
        configuration.properties = context.consumerProperties
        let consumer = try await KafkaConsumer(configuration: configuration)
        var starts: [TopicPartition: Int64] = [:]
        for partition in expectation.recordsPerPartition.keys { starts[TopicPartition(topic, partition)] = 0 }
        let started = ContinuousClock.now
        try await consumer.assign(starts)
        var read = 0
        let deadline = ContinuousClock.now + .seconds(120)
        while read < expectation.records && ContinuousClock.now < deadline {
            read += try await consumer.poll(maxRecords: 5000, timeout: .milliseconds(100)).records.count
        }
        let seconds = (ContinuousClock.now - started).seconds
        await consumer.close()
        guard read >= expectation.records else {
            throw BenchFailure("read: only \(read) of \(expectation.records) records in 120 s")
        }
        return ReadResult(records: read, seconds: seconds, recordsPerSecond: Double(read) / seconds)
    }
}

/// The broker's own share of end-to-end latency: a paced producer like the latency step's
/// (same rate, same settings) and a bare consumer (partitions assigned by hand at their end,
/// nothing done with the records) noting when each record arrives. What `once` adds is the rest.
struct BrokerLatencyResult: Codable, Sendable {
    var offeredRate: Int
    var offeredSeconds: Double
    var records: Int
    var p50Milliseconds: Double
    var p99Milliseconds: Double
    var maxMilliseconds: Double
    /// [first second, p50 ms, p99 ms] per 5 s of offered load.
    var windows: [[Double]]
}

enum BrokerLatencyStep {
    static func run(rate: Int, duration: Duration, topic: String, partitions: Int32, context: BenchContext) async throws
        -> BrokerLatencyResult
    {
        var configuration = KafkaConsumerConfiguration(
            bootstrapServers: context.brokers, groupID: "bench-\(context.runID)-floor")
        configuration.clientID = "once-bench-floor"
        configuration.properties = BenchContext.latencyConsumerProperties.merging(context.consumerProperties) { $1 }
        let consumer = try await KafkaConsumer(configuration: configuration)
        var starts: [TopicPartition: Int64] = [:]
        for partition in 0..<partitions { starts[TopicPartition(topic, partition)] = -1 }  // librdkafka's "end"
        try await consumer.assign(starts)
        _ = try await consumer.poll(maxRecords: 1, timeout: .seconds(1))
        var producerConfiguration = KafkaProducerConfiguration(bootstrapServers: context.brokers)
        producerConfiguration.clientID = "once-bench-floor"
        producerConfiguration.linger = BenchContext.latencyProducerLinger
        let producer = try KafkaProducer(configuration: producerConfiguration)
        let total = Int(Double(rate) * duration.seconds)
        let startedAt = wallMicroseconds()
        let sender = Task {
            let clock = ContinuousClock()
            let start = clock.now
            var sent = 0
            var sends: [Task<Void, Error>] = []
            while sent < total {
                let due = min(total, Int((clock.now - start).seconds * Double(rate)))
                if due > sent {
                    let stamp = String(wallMicroseconds())
                    let records = (sent..<due).map { index in
                        KafkaOutgoingRecord(
                            topic: topic, partition: Int32(index % Int(partitions)), value: Array(stamp.utf8))
                    }
                    sent = due
                    sends.append(Task { _ = try await producer.send(records) })
                }
                try await Task.sleep(for: .milliseconds(2))
            }
            for send in sends { try await send.value }
        }
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var windows = LatencyWindows(start: startedAt, duration: duration)
        var received = 0
        let deadline = ContinuousClock.now + duration + .seconds(20)
        while received < total && ContinuousClock.now < deadline {
            for record in try await consumer.poll(maxRecords: 1000, timeout: .milliseconds(20)).records {
                guard let value = record.value, let sent = Int64(String(decoding: value, as: UTF8.self)) else {
                    continue
                }
                let latency = wallMicroseconds() - sent
                _ = histogram.record(UInt64(max(0, latency)))
                windows.record(sentMicroseconds: sent, latencyMicroseconds: latency)
                received += 1
            }
        }
        try await sender.value
        await producer.close()
        await consumer.close()
        return BrokerLatencyResult(
            offeredRate: rate, offeredSeconds: duration.seconds, records: received,
            p50Milliseconds: Double(histogram.valueAtPercentile(50)) / 1000,
            p99Milliseconds: Double(histogram.valueAtPercentile(99)) / 1000,
            maxMilliseconds: Double(histogram.max) / 1000, windows: windows.summary)
    }
}
