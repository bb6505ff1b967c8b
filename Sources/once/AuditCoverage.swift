import ArgumentParser
import Foundation
import OnceDomain
import OnceEnvelope
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres

struct AuditCoverage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coverage",
        abstract: "Prove that every record below the stored positions (inside the window) was processed.",
        discussion: """
            For each partition of the group with a stored position (consumer_offsets,
            whatever --topics says; --topic and --partition narrow it; a partition not
            processed yet has nothing to check), the broker's records are read from
            the first one stamped at or after the window start through next_offset - 1.
            The window starts at --since TIME (RFC 3339), else the retention window
            before now (--retention, ONCE_RETENTION or the config file, as for
            `once run`; default 7d; with `never`, the log start). Each record is
            decoded as `once run` decodes it, and its claim (tenant and event id, or
            kafka:<topic>/<partition>/<offset> under tenant ? for poison) is looked up
            in processed_messages.

            A record is
              covered        a row names its position, or names another position
                             whose record has the same claim (a redelivered copy)
              missing        (a gap) no row
              other_record   (a gap) the row names another position, whose record
                             has another claim or is not on the broker
              outside        no row, but its claim falls before the oldest
                             processed_messages partition and the broker took it
                             before the last prune: a prune may have dropped its
                             claim; not a gap

            Formats:
              table  a header line; per partition FROM, TO (offsets checked),
                     RECORDS = COVERED + GAPS + OUTSIDE, and COPIES (covered by a
                     copy's row); then at most 50 gaps and "… and N more"
              json   one object: consumer_group, as_of, window_start, topic,
                     partition, partitions, gaps (all), totals, clean
              csv    one line per gap after a header: topic, partition, offset,
                     event_id, tenant_id, gap, detail

            Exit status: 0 no gap; 3 one or more gaps; 1 an error (database or broker
            unreachable, schema missing); 64 a usage error. A progress line goes to
            standard error when it is a terminal.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Only this topic.")
    var topic: String?

    @Option(help: "Only this partition of --topic.")
    var partition: Int32?

    @Option(help: "Check the records stamped at or after this RFC 3339 time (default: the retention window).")
    var since: String?

    @Option(help: "The retention window (env ONCE_RETENTION; default 7d).")
    var retention: String?

    @Option(help: "table, json or csv.")
    var format: AuditFormat = .table

    /// Gaps listed in table form; json and csv list them all.
    static let tableGapLimit = 50

    func validate() throws {
        if let topic, topic.isEmpty { throw ValidationError("--topic is empty") }
        if let partition {
            guard topic != nil else { throw ValidationError("--partition needs --topic") }
            guard partition >= 0 else { throw ValidationError("--partition must be 0 or more") }
        }
        if let since, Timestamp.date(since) == nil {
            throw ValidationError("--since: `\(since)` is not an RFC 3339 time such as 2026-11-22T00:00:00Z")
        }
    }

    func run() async throws {
        let settings = try connection.settings(retention: retention)
        let logger = try connection.makeLogger()
        let url = try settings.requireDatabaseURL()
        let brokers = try settings.requireBrokers()
        let kafkaLogger = connection.kafkaLogger(logger)
        let group = settings.consumerGroup

        let database = try await connectDatabase(url, logger: logger)
        let snapshot: CoverageAudit.Snapshot
        do {
            snapshot = try await database.withConnection { db in
                try CoverageAudit.snapshot(consumerGroup: group, on: db)
            }
        } catch {
            await database.close()
            throw CommandFailure(describeQueryFailure(error, doing: "the coverage audit"))
        }
        let positions = snapshot.positions.filter { position in
            (topic.map { $0 == position.partition.topic } ?? true)
                && (partition.map { $0 == position.partition.partition } ?? true)
        }
        let windowStart = since.flatMap(Timestamp.date) ?? settings.retention.cutoff(now: snapshot.asOf)

        let registry = {
            var registry = HandlerRegistry()
            Domain.register(into: &registry)
            return registry
        }()
        let audit = CoverageAudit(consumerGroup: group, registry: registry, database: database) { partition in
            try await PartitionReader(
                brokers: brokers, properties: settings.kafkaProperties,
                groupID: OperatorChecks.readerGroupID(group, purpose: "coverage"), partition: partition,
                logger: kafkaLogger)
        }
        let progress = OperatorProgress()
        let report: CoverageReport
        do {
            if let topic {
                try await OperatorChecks.checkPartition(
                    TopicPartition(topic, partition ?? 0), settings: settings, logger: kafkaLogger)
            }
            report = try await audit.run(
                positions, windowStart: windowStart, lastPrune: snapshot.lastPrune
            ) { step in
                let of = step.count > 1 ? " (partition \(step.index + 1) of \(step.count))" : ""
                progress.show(
                    "checking \(step.partition) \(OperatorProgress.bar(step.fraction)) \(Int(step.fraction * 100))%  "
                        + "\(step.recordsChecked) records, offset \(step.offset)\(of)")
            }
            progress.finish()
        } catch {
            progress.finish()
            await database.close()
            if error is PostgresError {
                throw CommandFailure(describeQueryFailure(error, doing: "the coverage audit"))
            }
            throw OperatorChecks.brokerFailure(error, settings: settings)
        }
        await database.close()

        let header = Header(
            group: group, topic: topic, partition: partition, windowStart: windowStart, asOf: snapshot.asOf)
        switch format {
        case .table: print(Self.table(report, header).joined(separator: "\n"))
        case .json: print(JSONWriter.serializeString(Self.json(report, header)))
        case .csv: print(Self.csv(report).joined(separator: "\n"))
        }
        if !report.isClean { throw ExitCode(3) }
    }

    /// What the report's first line names.
    struct Header {
        var group: String
        var topic: String?
        var partition: Int32?
        var windowStart: Date?
        var asOf: Date

        var scope: String {
            guard let topic else { return "all partitions" }
            return partition.map { "\(topic)/\($0)" } ?? "topic \(topic)"
        }
    }

    // MARK: - Table

    static func table(_ report: CoverageReport, _ header: Header) -> [String] {
        var lines = [
            "Coverage · group \(header.group) · \(header.scope) · "
                + (header.windowStart.map { "window since \(OperatorText.time($0))" } ?? "window: the whole log")
                + " · stored positions as of \(OperatorText.time(header.asOf))",
            "",
        ]
        if report.partitions.isEmpty {
            lines.append("Partitions: none with a stored position")
        } else {
            var table = ReportTable([
                ("TOPIC", .left), ("PARTITION", .right), ("FROM", .right), ("TO", .right), ("RECORDS", .right),
                ("COVERED", .right), ("COPIES", .right), ("GAPS", .right), ("OUTSIDE", .right), ("NOTE", .left),
            ])
            func cells(_ topic: String, _ partition: String, _ p: PartitionCoverage) -> [String] {
                [
                    topic, partition, p.from.map(String.init) ?? "-", p.to.map(String.init) ?? "-", "\(p.records)",
                    "\(p.covered)", "\(p.coveredByCopy)", "\(p.gaps)", "\(p.outsideWindow)", note(p),
                ]
            }
            for p in report.partitions {
                table.append(cells(p.partition.topic, "\(p.partition.partition)", p))
            }
            table.appendRule()
            var totals = cells("TOTAL", "", report.totals)
            (totals[2], totals[3]) = ("", "")
            table.append(totals)
            lines.append("Partitions")
            lines += table.lines(indent: 2)
        }

        lines.append("")
        if report.gaps.isEmpty {
            lines.append("Gaps: none")
        } else {
            lines.append("Gaps: \(report.gaps.count)")
            var list = ReportTable([
                ("TOPIC", .left), ("PARTITION", .right), ("OFFSET", .right), ("EVENT_ID", .left), ("TENANT", .left),
                ("GAP", .left), ("DETAIL", .left),
            ])
            for gap in report.gaps.prefix(tableGapLimit) {
                list.append([
                    gap.partition.topic, "\(gap.partition.partition)", "\(gap.offset)", gap.eventID, gap.tenantID,
                    gap.kind.rawValue, OperatorText.clipped(gap.detail, 100),
                ])
            }
            lines += list.lines(indent: 2)
            if report.gaps.count > tableGapLimit {
                lines.append("  … and \(report.gaps.count - tableGapLimit) more (--format json or csv lists them all)")
            }
        }
        return lines
    }

    /// Why a partition's figures read the way they do, when they need a word.
    static func note(_ p: PartitionCoverage) -> String {
        if p.partition.topic.isEmpty { return "" }  // the totals
        if p.nextOffset == nil { return "nothing processed yet" }
        if let end = p.logEnd { return "the log ends at \(end), below the stored position \(p.nextOffset!)" }
        if p.records == 0 && p.beforeWindow > 0 { return "no record inside the window" }
        return ""
    }

    // MARK: - JSON

    static func json(_ report: CoverageReport, _ header: Header) -> JSONValue {
        func figures(_ p: PartitionCoverage) -> [String: JSONValue] {
            [
                "records": .integer(Int64(p.records)), "covered": .integer(Int64(p.covered)),
                "covered_by_copy": .integer(Int64(p.coveredByCopy)), "missing": .integer(Int64(p.missing)),
                "other_record": .integer(Int64(p.otherRecord)), "gaps": .integer(Int64(p.gaps)),
                "outside_window": .integer(Int64(p.outsideWindow)), "before_window": .integer(Int64(p.beforeWindow)),
            ]
        }
        let partitions: [JSONValue] = report.partitions.map { p in
            var object = figures(p)
            object["topic"] = .string(p.partition.topic)
            object["partition"] = .integer(Int64(p.partition.partition))
            object["next_offset"] = p.nextOffset.map(JSONValue.integer) ?? .null
            object["from"] = p.from.map(JSONValue.integer) ?? .null
            object["to"] = p.to.map(JSONValue.integer) ?? .null
            object["low_watermark"] = p.lowWatermark.map(JSONValue.integer) ?? .null
            object["log_end"] = p.logEnd.map(JSONValue.integer) ?? .null
            return .object(object)
        }
        let gaps: [JSONValue] = report.gaps.map { gap in
            .object([
                "topic": .string(gap.partition.topic), "partition": .integer(Int64(gap.partition.partition)),
                "offset": .integer(gap.offset), "event_id": .string(gap.eventID), "tenant_id": .string(gap.tenantID),
                "gap": .string(gap.kind.rawValue), "detail": .string(gap.detail),
            ])
        }
        return .object([
            "consumer_group": .string(header.group),
            "as_of": .string(OperatorText.time(header.asOf)),
            "window_start": header.windowStart.map { .string(OperatorText.time($0)) } ?? .null,
            "topic": header.topic.map(JSONValue.string) ?? .null,
            "partition": header.partition.map { .integer(Int64($0)) } ?? .null,
            "partitions": .array(partitions),
            "gaps": .array(gaps),
            "totals": .object(figures(report.totals)),
            "clean": .bool(report.isClean),
        ])
    }

    // MARK: - CSV

    static func csv(_ report: CoverageReport) -> [String] {
        [CSVText.line(["topic", "partition", "offset", "event_id", "tenant_id", "gap", "detail"])]
            + report.gaps.map { gap in
                CSVText.line([
                    gap.partition.topic, "\(gap.partition.partition)", "\(gap.offset)", gap.eventID, gap.tenantID,
                    gap.kind.rawValue, gap.detail,
                ])
            }
    }
}
