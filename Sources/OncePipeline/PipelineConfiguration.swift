import Foundation
import OnceTracing

/// The defaults CONTRACT.md names, in the one place every command and type takes them from.
public enum PipelineDefaults {
    public static let consumerGroup = "once"
    public static let topics = ["completion-events", "batch-action-events", "job-events"]
    public static let deadLetterTopic = "once.dead-letters"
    public static let maxBatchRecords = 2000
    public static let maxRecordBytes = 4 * 1024 * 1024
}

/// Everything `once run` needs to know. A `Sendable` value; defaults are `PipelineDefaults`.
public struct PipelineConfiguration: Sendable {
    public var databaseURL: String
    public var brokers: String
    public var consumerGroup = PipelineDefaults.consumerGroup
    public var topics = PipelineDefaults.topics
    public var deadLetterTopic = PipelineDefaults.deadLetterTopic
    /// librdkafka properties passed through to the consumer and producer (TLS, SASL, tuning).
    public var kafkaProperties: [String: String] = [:]
    /// Database sessions working on batches at once (each on a thread of its own).
    public var connections = 4
    /// The most records one batch transaction takes; batches are smaller when fewer are waiting.
    public var maxBatchRecords = PipelineDefaults.maxBatchRecords
    /// A partition with more records waiting than this is paused until half of them are done;
    /// by default two batches' worth (at least 1,000), which bounds memory by the batch size.
    public var maxBufferedRecordsPerPartition: Int {
        get { bufferedRecordsOverride ?? max(1_000, 2 * maxBatchRecords) }
        set { bufferedRecordsOverride = newValue }
    }
    private var bufferedRecordsOverride: Int?
    /// The largest record value accepted; larger ones are dead-lettered as `too_large`.
    public var maxRecordBytes = PipelineDefaults.maxRecordBytes
    /// Also commit processed positions to the Kafka group, so that standard lag tools see them.
    public var commitToKafka = true
    /// Identifies this process in `consumer_offsets.owner`.
    public var memberID = "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
    /// The longest pause between retries of a batch that hit a transient failure.
    public var maxRetryDelay: Duration = .seconds(5)
    /// How records' trace context is carried on, and whether spans are recorded.
    public var tracing = RecordTracing.propagateOnly

    public init(databaseURL: String, brokers: String) {
        self.databaseURL = databaseURL
        self.brokers = brokers
    }
}
