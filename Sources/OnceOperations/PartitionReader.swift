import Foundation
import Logging
import OnceKafka

/// Reads one partition with a consumer assigned by hand: outside the group's rebalances, under
/// a group id of its own, committing nothing. Replays read ranges with it; offset resets find
/// the end of a partition and the first offset at a time with it.
///
/// "The end of the log" is where the log ended when a read began. The broker's high watermark
/// is only a lower bound of it (Tansu 0.6 reports the last batch's base offset + 1, exact only
/// when the last produce request carried one record), so a read that reaches the reported end
/// goes on while records keep coming that were written before it began, and stops once the
/// partition has been quiet for `settleTime`. Records written after the read began (by their
/// timestamp) are left out, so a busy partition does not keep a read going for ever.
///
/// Thread-safety: use one reader from one task at a time. Call `close()` when done.
public final class PartitionReader: Sendable {
    public let partition: TopicPartition
    private let consumer: KafkaConsumer
    private let settleTime: Duration
    private let stallTimeout: Duration

    /// `groupID` only names the reader to the broker (librdkafka needs one); the reader never
    /// joins that group nor commits to it.
    public init(
        brokers: String, properties: [String: String] = [:], groupID: String, partition: TopicPartition,
        settleTime: Duration = .seconds(1), stallTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "once.reader")
    ) async throws {
        var configuration = KafkaConsumerConfiguration(bootstrapServers: brokers, groupID: groupID)
        configuration.clientID = groupID
        configuration.properties = properties
        consumer = try await KafkaConsumer(configuration: configuration, logger: logger)
        self.partition = partition
        self.settleTime = settleTime
        self.stallTimeout = stallTimeout
    }

    public func close() async {
        await consumer.close()
    }

    /// The broker's watermarks for the partition (see above for what the high one means).
    public func watermarks(timeout: Duration = .seconds(5)) async throws -> KafkaWatermarks {
        try await consumer.watermarks(partition, timeout: timeout)
    }

    /// Reads from `start` in offset order up to `last` (inclusive) or the end of the log,
    /// handing `body` the records of each poll; `body` returns false to stop early.
    /// Throws `PartitionReadStalled` when records known to exist do not arrive.
    public func read(
        from start: Int64, through last: Int64? = nil, maxRecords: Int = 1000,
        _ body: ([KafkaRecord]) async throws -> Bool
    ) async throws -> PartitionRead {
        let marks = try await watermarks()
        let began = Int64(Date().timeIntervalSince1970 * 1000)
        var result = PartitionRead(next: start)
        if let last, last < start { return result }
        if marks.high <= marks.low && start >= marks.high {
            result.reachedEnd = true
            return result
        }
        // Past the reported end, start one record early: a record that exists proves the fetch
        // is under way before quiet can mean "the end".
        let fetchFrom = start >= marks.high ? max(marks.low, marks.high - 1) : start
        var atReportedEnd = false
        try await consumer.assign([partition: fetchFrom])

        var quietSince = ContinuousClock.now
        var lastError: KafkaError?
        reading: while true {
            let polled = try await consumer.poll(maxRecords: maxRecords, timeout: .milliseconds(100))
            if let error = polled.errors.last { lastError = error }
            var records: [KafkaRecord] = []
            var finished = false
            for record in polled.records where record.topicPartition == partition {
                if record.offset >= marks.high - 1 { atReportedEnd = true }
                guard record.offset >= result.next else { continue }
                if let last, record.offset > last {
                    finished = true
                    break
                }
                if record.offset >= marks.high, let stamp = record.timestampMilliseconds, stamp > began {
                    result.reachedEnd = true
                    finished = true
                    break
                }
                records.append(record)
                result.next = record.offset + 1
            }
            if let last, result.next > last { finished = true }
            if !polled.records.isEmpty { quietSince = .now }
            if !records.isEmpty {
                result.recordsRead += records.count
                guard try await body(records) else {
                    result.stoppedEarly = true
                    break reading
                }
            }
            if finished { break reading }
            let quiet = ContinuousClock.now - quietSince
            if atReportedEnd && quiet >= settleTime {
                result.reachedEnd = true
                break reading
            }
            if !atReportedEnd && quiet >= stallTimeout {
                throw PartitionReadStalled(partition: partition, offset: result.next, lastError: lastError)
            }
        }
        return result
    }

    /// Where the log ends now: the offset the next record will get.
    public func end() async throws -> Int64 {
        let marks = try await watermarks()
        guard marks.high > marks.low else { return marks.high }
        let read = try await self.read(from: marks.high - 1) { _ in true }
        return max(marks.high, read.next)
    }

    /// The first offset whose record was stamped at or after `milliseconds` since the epoch;
    /// the end of the log when there is none.
    public func firstOffset(atOrAfter milliseconds: Int64) async throws -> Int64 {
        let marks = try await watermarks()
        var found: Int64?
        let read = try await self.read(from: marks.low) { records in
            found = records.first { ($0.timestampMilliseconds ?? .min) >= milliseconds }?.offset
            return found == nil
        }
        return found ?? max(marks.high, read.next)
    }
}

/// How a read ended.
public struct PartitionRead: Sendable, Hashable {
    /// The offset after the last record handed over (the start when there was none).
    public var next: Int64
    public var recordsRead = 0
    /// It stopped at the end of the log (rather than at `last`, or because `body` said so).
    public var reachedEnd = false
    public var stoppedEarly = false
}

/// Records the broker says exist did not arrive for a while: the broker is away or the
/// partition is unreadable.
public struct PartitionReadStalled: Error, CustomStringConvertible {
    public var partition: TopicPartition
    public var offset: Int64
    public var lastError: KafkaError?

    public var description: String {
        "no records from \(partition) at offset \(offset) for several seconds"
            + (lastError.map { " (last error: \($0))" } ?? "")
    }
}
