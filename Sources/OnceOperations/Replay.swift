import Foundation
import OnceBackoff
import OnceKafka
import OncePipeline
import OncePostgres
import OnceSchema

/// `once replay`: re-reads a range of one partition and runs it through the pipeline's
/// transaction (`RecordProcessor`) with the group's handlers, batch by batch.
///
/// Records whose event id the group processed already are no-ops (counted as `duplicate`),
/// dead-lettered ones included: their ids are claimed too, and only `once dlq retry` re-drives
/// them. The group's stored positions are neither read nor moved. Its progress is recorded in
/// `once_replays` (`ReplayLog`) after each batch. A dry run rolls each batch's
/// transaction back; since batches do not see each other's effects then, an event whose id or
/// business key first appears in an earlier batch of the same dry run counts as it would
/// without that batch.
///
/// Transient database failures are retried a few times; after that, or when reading fails,
/// `ReplayInterrupted` says how far the replay got, so that it can be resumed from there.
public struct PartitionReplay: Sendable {
    public struct Request: Sendable, Hashable {
        public var partition: TopicPartition
        public var from: Int64
        /// The last offset to replay; nil for the end of the log as it was when reading began.
        public var through: Int64?
        public var dryRun = false
        /// Records per transaction.
        public var batchSize = PipelineDefaults.maxBatchRecords

        public init(
            partition: TopicPartition, from: Int64, through: Int64? = nil, dryRun: Bool = false, batchSize: Int = PipelineDefaults.maxBatchRecords
        ) {
            self.partition = partition
            self.from = from
            self.through = through
            self.dryRun = dryRun
            self.batchSize = batchSize
        }
    }

    let processor: RecordProcessor
    let database: PostgresSession
    let reader: PartitionReader
    let backoff = Backoff(base: .milliseconds(200), cap: .seconds(2))
    let transientAttempts = 5

    public init(processor: RecordProcessor, database: PostgresSession, reader: PartitionReader) {
        self.processor = processor
        self.database = database
        self.reader = reader
    }

    /// Replays `request`, calling `progress` after each batch.
    public func run(_ request: Request, progress: (ReplayProgress) -> Void = { _ in }) async throws -> ReplayReport {
        precondition(request.partition == reader.partition, "the reader reads another partition")
        let marks = try await reader.watermarks()
        guard request.from >= marks.low else {
            throw ReplayRangeError(
                "offset \(request.from) is before the first offset still stored in \(request.partition) (\(marks.low))")
        }
        var report = ReplayReport(request: request)
        let log = ReplayLog(consumerGroup: processor.consumerGroup)
        let logID = try await database.withConnection { db in try log.start(request, on: db) }
        // Records whose time falls before the oldest retained partition may have had their
        // claims pruned: the summary says how many (their business keys still hold).
        report.windowStart = try await database.withConnection { db in try TimePartitions.layout(on: db).oldest }
        let windowStart = report.windowStart.map { Int64(($0.timeIntervalSince1970 * 1_000_000).rounded()) }
        var pending: [KafkaRecord] = []
        let estimatedLast = request.through ?? max(request.from, marks.high - 1)

        // One batch's transaction runs while the next is read and decoded; the transactions
        // still run one after the other, in offset order.
        var committing: (batch: DecodedBatch, task: Task<ProcessReport, any Error>)?

        func settle() async throws {
            guard let (batch, task) = committing else { return }
            committing = nil
            report.outcomes.add(try await task.value)
            report.firstOffset = report.firstOffset ?? batch.records.first?.offset
            report.lastOffset = batch.records.last?.offset
            report.recordsRead += batch.records.count
            let done = report
            try await database.withConnection { db in try log.update(logID, with: done, on: db) }
            progress(
                ReplayProgress(
                    recordsRead: report.recordsRead, offset: report.lastOffset ?? request.from, from: request.from,
                    estimatedLast: estimatedLast))
        }

        func submit(_ records: [KafkaRecord]) async throws {
            let batch = processor.decode(records)
            if let windowStart {
                report.beforeWindow += records.filter { record in
                    record.timestampMilliseconds.map { $0 * 1000 < windowStart } ?? false
                }.count
            }
            try await settle()
            let done = report
            committing = (batch, Task { try await process(batch, dryRun: request.dryRun, done: done) })
        }

        let read: PartitionRead
        do {
            let size = request.batchSize
            read = try await reader.read(from: request.from, through: request.through, maxRecords: size) { records in
                pending += records
                while pending.count >= size {
                    try await submit(Array(pending.prefix(size)))
                    pending.removeFirst(size)
                }
                return true
            }
            if !pending.isEmpty { try await submit(pending) }
            try await settle()
        } catch {
            let interrupted: ReplayInterrupted
            if let error = error as? ReplayInterrupted {
                interrupted = error
            } else {
                // Reading failed with a batch still committing: let it end, so the report is exact.
                try? await settle()
                interrupted = ReplayInterrupted(report: report, underlying: error)
            }
            let (done, why) = (interrupted.report, "\(interrupted.underlying)")
            try? await database.withConnection { db in try log.update(logID, with: done, state: .failed, error: why, on: db) }
            throw interrupted
        }
        report.reachedEnd = read.reachedEnd
        let done = report
        try await database.withConnection { db in try log.update(logID, with: done, state: .finished, on: db) }
        return report
    }

    /// One batch in one transaction, retried while the database is away (briefly).
    private func process(_ batch: DecodedBatch, dryRun: Bool, done: ReplayReport) async throws -> ProcessReport {
        let processor = self.processor
        var attempt = 0
        while true {
            do {
                return try await database.withConnection { db in
                    try processor.process(batch, dryRun: dryRun, on: db)
                }
            } catch let error as PostgresError where error.isTransient && attempt < transientAttempts {
                attempt += 1
                try await Task.sleep(for: backoff.delay(attempt: attempt))
            } catch {
                throw ReplayInterrupted(report: done, underlying: error)
            }
        }
    }
}

/// Where a replay is, for a progress line.
public struct ReplayProgress: Sendable, Hashable {
    public var recordsRead: Int
    /// The last offset processed.
    public var offset: Int64
    public var from: Int64
    /// `--to-offset`, or the reported end of the log (which the replay may pass).
    public var estimatedLast: Int64

    /// Done so far, from 0 to 1; nil once the replay reads past the estimate (the broker
    /// reported an end below the real one).
    public var fraction: Double? {
        guard offset <= estimatedLast else { return nil }
        guard estimatedLast > from else { return 1 }
        return Double(offset - from + 1) / Double(estimatedLast - from + 1)
    }
}

/// What a replay did.
public struct ReplayReport: Sendable, Hashable {
    public var request: PartitionReplay.Request
    public var recordsRead = 0
    public var firstOffset: Int64?
    public var lastOffset: Int64?
    /// Outcomes per record (`duplicate` for records already processed).
    public var outcomes = ProcessReport()
    /// The oldest retained partition's start, and how many records read were written to the
    /// broker before it: their first claims have likely been pruned, so the replay claims them
    /// again, and only their business keys make them duplicates.
    public var windowStart: Date?
    public var beforeWindow = 0
    /// It stopped at the end of the log rather than at `--to-offset`.
    public var reachedEnd = false

    public init(request: PartitionReplay.Request) {
        self.request = request
    }
}

/// The requested range does not fit the partition.
public struct ReplayRangeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The replay stopped part-way; `report` covers the batches committed (or, in a dry run,
/// evaluated) before the failure.
public struct ReplayInterrupted: Error, CustomStringConvertible {
    public var report: ReplayReport
    public var underlying: any Error

    public var description: String {
        let done =
            report.lastOffset.map {
                "offsets \(report.request.from)…\($0) are done; resume with --from-offset \($0 + 1)"
            }
            ?? "nothing was replayed"
        return "replay of \(report.request.partition) stopped: \(underlying) (\(done))"
    }
}
