import ArgumentParser
import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-read a range of one partition through the pipeline; already-applied records are no-ops.",
        discussion: """
            The range is read by a consumer assigned by hand, outside the group (it never commits \
            offsets), and runs through the same transaction and handlers as `once run`, in batches. \
            Records whose event id the group has processed count as duplicate and change nothing; \
            dead-lettered ones stay dead-lettered (use `once dlq retry`). The group's stored positions \
            do not move. Without --to-offset the replay ends at the end of the log as it was when it \
            began. --dry-run runs every batch's transaction and rolls it back: nothing is written, and \
            the counts say what would have happened (each batch on its own).
            """)

    typealias Format = TextOrJSON

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The topic to re-read.")
    var topic: String

    @Option(help: "Its partition.")
    var partition: Int32

    @Option(help: "The first offset to re-read.")
    var fromOffset: Int64

    @Option(help: "The last offset to re-read (inclusive); default: the end of the log.")
    var toOffset: Int64?

    @Flag(help: "Roll every transaction back: report what would happen, write nothing.")
    var dryRun = false

    @Option(help: "text or json.")
    var format: Format = .text

    @Option(help: "Records per transaction.")
    var batchSize = PipelineDefaults.maxBatchRecords

    func validate() throws {
        guard !topic.isEmpty else { throw ValidationError("--topic is empty") }
        guard partition >= 0 else { throw ValidationError("--partition must be 0 or more") }
        guard fromOffset >= 0 else { throw ValidationError("--from-offset must be 0 or more") }
        if let toOffset, toOffset < fromOffset {
            throw ValidationError("--to-offset \(toOffset) is before --from-offset \(fromOffset)")
        }
        guard (1...100_000).contains(batchSize) else { throw ValidationError("--batch-size must be from 1 to 100000") }
    }

    func run() async throws {
        let settings = try connection.settings()
        let logger = try connection.makeLogger()
        _ = try settings.requireDatabaseURL()  // a missing setting fails before the broker is asked
        let brokers = try settings.requireBrokers()
        let source = TopicPartition(topic, partition)
        let kafkaLogger = connection.kafkaLogger(logger)

        try await OperatorChecks.checkPartition(source, settings: settings, logger: kafkaLogger)
        let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
        if !dryRun { try await ensurePartitions(database) }
        let reader: PartitionReader
        do {
            reader = try await PartitionReader(
                brokers: brokers, properties: settings.kafkaProperties,
                groupID: OperatorChecks.readerGroupID(settings.consumerGroup, purpose: "replay"), partition: source,
                logger: kafkaLogger)
        } catch {
            await database.close()
            throw OperatorChecks.brokerFailure(error, settings: settings)
        }

        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        let replay = PartitionReplay(
            processor: RecordProcessor(consumerGroup: settings.consumerGroup, registry: registry), database: database,
            reader: reader)
        let request = PartitionReplay.Request(
            partition: source, from: fromOffset, through: toOffset, dryRun: dryRun, batchSize: batchSize)
        let progress = OperatorProgress()
        let report: ReplayReport
        do {
            report = try await replay.run(request) { step in
                let done = step.fraction.map { "\(OperatorProgress.bar($0)) \(Int($0 * 100))%  " } ?? ""
                progress.show(
                    "\(dryRun ? "dry run: " : "")replaying \(source) \(done)\(step.recordsRead) records, offset \(step.offset)")
            }
            progress.finish()
        } catch {
            progress.finish()
            await reader.close()
            await database.close()
            if let interrupted = error as? ReplayInterrupted {
                throw CommandFailure(oneLine(interrupted.description))
            }
            throw OperatorChecks.brokerFailure(error, settings: settings)
        }
        await reader.close()
        await database.close()
        print(format == .json ? JSONWriter.serializeString(json(report)) : text(report))
    }

    private func text(_ report: ReplayReport) -> String {
        let range: String
        if let first = report.firstOffset, let last = report.lastOffset {
            range = "offsets \(first)…\(last)"
        } else {
            range = "no records from offset \(report.request.from)"
        }
        var lines = [
            "\(dryRun ? "dry run (rolled back, nothing written): " : "")replayed \(report.request.partition), \(range)"
                + "\(report.reachedEnd ? " (the end of the log)" : ""): \(report.recordsRead) records read"
        ]
        let rows = EventOutcome.allCases.map { [$0.rawValue, String(report.outcomes[$0])] }
        lines.append(ReportTable(header: ["outcome", "records"], rows: rows).text)
        if report.beforeWindow > 0, let start = report.windowStart {
            lines.append(
                "note: \(report.beforeWindow) of these records are older than the retention window (claims kept from "
                    + "\(OperatorText.time(start))): their first claims may be pruned; their business keys still make them duplicates")
        }
        if let through = report.request.through, report.reachedEnd, (report.lastOffset ?? -1) < through {
            lines.append("note: the log ends before --to-offset \(through)")
        }
        for letter in report.outcomes.deadLetters {
            let why = OperatorText.clipped(letter.message, 120)
            lines.append("dead-lettered \(letter.eventID): \(letter.reason.rawValue): \(why)")
        }
        return lines.joined(separator: "\n")
    }

    private func json(_ report: ReplayReport) -> JSONValue {
        .object([
            "topic": .string(report.request.partition.topic),
            "partition": .integer(Int64(report.request.partition.partition)),
            "from_offset": .integer(report.request.from),
            "to_offset": report.request.through.map { .integer($0) } ?? .null,
            "first_offset": report.firstOffset.map { .integer($0) } ?? .null,
            "last_offset": report.lastOffset.map { .integer($0) } ?? .null,
            "reached_end": .bool(report.reachedEnd),
            "dry_run": .bool(report.request.dryRun),
            "records_read": .integer(Int64(report.recordsRead)),
            "window_start": report.windowStart.map { .string(OperatorText.time($0)) } ?? .null,
            "records_before_window": .integer(Int64(report.beforeWindow)),
            "outcomes": OperatorText.outcomes(report.outcomes),
            "dead_letters": .array(
                report.outcomes.deadLetters.map { letter in
                    .object([
                        "event_id": .string(letter.eventID), "reason_code": .string(letter.reason.rawValue),
                        "error": .string(letter.message),
                    ])
                }),
        ])
    }
}
