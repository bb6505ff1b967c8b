import ArgumentParser
import Foundation
import Logging
import OnceEnvelope
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres
import OnceSchema

/// How `once status` prints its report.
enum StatusFormat: String, ExpressibleByArgument, CaseIterable {
    case table
    case json
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lag per partition, events per outcome, outbox backlog and unresolved dead letters.",
        discussion: """
            Per partition of the group's topics (--topics, and any other topic the
            group has a position for in consumer_offsets):
              NEXT   the stored next offset; "earliest" when nothing was committed
                     yet, "-" when nothing is stored
              HIGH   the broker's high watermark (see below)
              LAG    HIGH - NEXT, or HIGH - the low watermark when nothing is
                     committed; "?" when the broker does not answer
              OWNER  the member that claimed the partition last; GEN its claim
            Then the group's processed_messages per outcome (inside the retention
            window: older claims have been pruned); the outbox rows not yet
            published (the outbox serves every group) and the oldest one's age;
            the group's unresolved dead letters per reason, with how many came in
            the last hour and day and the oldest one's age; and the retention
            window (--retention or ONCE_RETENTION, default 7d): per log table its
            time partitions (oldest, newest, estimated rows, size) and when the
            next one leaves the window.

            The high watermark is what the broker reports. Where it lies below the
            stored position, the broker under-reports the end of its log (Tansu
            0.6 does after a multi-record produce request), and a footnote says
            on which partitions: HIGH and LAG read low there.

            --format json prints one object (one line per report with --watch):
            consumer_group, as_of, partitions, total_lag, outcomes, outbox,
            dead_letters, retention {window, partition_width_seconds,
            oldest_claim_bucket, next_prune, partitions}, broker {complete, notes}.

            --watch SECONDS prints a new report every SECONDS until Ctrl-C: on a
            terminal it replaces the last one, otherwise the reports follow each
            other.

            Exit status: 0 complete; 2 printed, but the broker did not answer for
            every partition (unreachable, or a topic is missing; one line on
            standard error says which); 1 an error (database unreachable, schema
            missing); 64 a usage error.
            """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "table or json.")
    var format: StatusFormat = .table

    @Option(help: ArgumentHelp("Print a new report every SECONDS until Ctrl-C.", valueName: "seconds"))
    var watch: Double?

    @Option(help: "The retention window the report measures against (env ONCE_RETENTION; default 7d).")
    var retention: String?

    func validate() throws {
        if let watch, !(watch >= 0.2 && watch <= 86_400) {
            throw ValidationError("--watch must be from 0.2 to 86400 seconds")
        }
    }

    func run() async throws {
        let settings = try connection.settings(retention: retention)
        let logger = try connection.makeLogger()
        let url = try settings.requireDatabaseURL()
        let brokers = try settings.requireBrokers()
        let window = settings.retention

        // librdkafka logs every refused connection; the report says it in one line instead,
        // unless a log level was asked for.
        var kafkaLogger = Logger(label: "once.kafka.admin")
        kafkaLogger.logLevel =
            connection.logLevel == nil && ProcessInfo.processInfo.environment["ONCE_LOG_LEVEL"] == nil
            ? .critical : logger.logLevel

        let client = try await connectDatabase(url, logger: logger)
        let admin: KafkaAdmin
        do {
            admin = try await KafkaAdmin(
                bootstrapServers: brokers, properties: settings.kafkaProperties, logger: kafkaLogger)
        } catch {
            await client.close()
            throw CommandFailure("cannot use the broker settings: \(error)")
        }

        func collect() async throws -> StatusReport {
            var report: StatusReport
            do {
                report = try await client.withConnection { db in
                    try StatusReport.readDatabase(consumerGroup: settings.consumerGroup, on: db)
                }
            } catch {
                throw CommandFailure(describeQueryFailure(error, doing: "reading the status"))
            }
            let view = await StatusReport.readBroker(
                topics: settings.topics, stored: report.partitions.map(\.topicPartition), admin: admin,
                brokers: brokers)
            report.merge(view)
            return report
        }

        guard let watch else {
            let report: StatusReport
            do {
                report = try await collect()
            } catch {
                await admin.close()
                await client.close()
                throw error
            }
            await admin.close()
            await client.close()
            print(render(report, retention: window, notesInline: false))
            if !report.isComplete {
                printToStandardError(report.brokerNotes.joined(separator: "; "))
                throw ExitCode(2)
            }
            return
        }

        // Until Ctrl-C (SIGINT ends the process; nothing needs undoing).
        let clearScreen = format == .table && standardOutputIsTerminal
        while true {
            let started = ContinuousClock.now
            let block: String
            do {
                block = render(try await collect(), retention: window, notesInline: true)
            } catch {
                block = format == .json ? JSONWriter.serializeString(["error": .string("\(error)")]) : "\(error)"
            }
            if clearScreen {
                print("\u{1B}[H\u{1B}[2J" + block)
            } else {
                print(block + (format == .table ? "\n" : ""))
            }
            fflush(nil)  // every stream: the reports go out as they are made, piped or not
            try await Task.sleep(until: started + .milliseconds(Int64(watch * 1000)), clock: .continuous)
        }
    }

    private func render(_ report: StatusReport, retention window: Retention, notesInline: Bool) -> String {
        switch format {
        case .json: return JSONWriter.serializeString(Self.json(report, retention: window))
        case .table: return Self.table(report, retention: window, notesInline: notesInline).joined(separator: "\n")
        }
    }

    // MARK: - Table

    static func table(_ report: StatusReport, retention: Retention = .default, notesInline: Bool) -> [String] {
        var lines = ["Status · group \(report.consumerGroup) · \(report.asOf)", ""]

        if report.partitions.isEmpty {
            lines.append("Partitions: none stored, and the broker listed none")
        } else {
            var partitions = ReportTable([
                ("TOPIC", .left), ("PARTITION", .right), ("NEXT", .right), ("HIGH", .right), ("LAG", .right),
                ("OWNER", .left), ("GEN", .right), ("UPDATED", .right),
            ])
            for p in report.partitions {
                partitions.append([
                    p.topic, "\(p.partition)",
                    p.nextOffset.map(String.init) ?? (p.isStored ? "earliest" : "-"),
                    p.highWatermark.map(String.init) ?? "?",
                    p.lag.map(String.init) ?? "?",
                    p.owner ?? "-",
                    p.generation.map(String.init) ?? "-",
                    p.updatedSecondsAgo.map { humanDuration(seconds: $0) + " ago" } ?? "-",
                ])
            }
            lines.append("Partitions")
            lines += partitions.lines(indent: 2)
            let unknown = report.partitions.filter { $0.lag == nil }.count
            switch (report.totalLag, unknown) {
            case (nil, _): lines.append("  Total lag: ? (the broker did not answer)")
            case (let total?, 0): lines.append("  Total lag: \(total)")
            case (let total?, let unknown): lines.append("  Total lag: \(total), and ? on \(unknown) partition(s)")
            }
        }

        lines.append("")
        var outcomes = ReportTable([("OUTCOME", .left), ("EVENTS", .right)])
        for outcome in EventOutcome.allCases {
            outcomes.append([outcome.rawValue, "\(report.outcomes[outcome] ?? 0)"])
        }
        lines.append("Outcomes (processed_messages, inside the retention window)")
        lines += outcomes.lines(indent: 2)

        lines.append("")
        if report.outbox.unpublished == 0 {
            lines.append("Outbox: nothing to publish")
        } else {
            let age = report.outbox.oldestAgeSeconds.map { ", the oldest \(humanDuration(seconds: $0)) old" } ?? ""
            let since = report.outbox.oldestCreatedAt.map { " (created \($0))" } ?? ""
            lines.append("Outbox: \(report.outbox.unpublished) unpublished\(age)\(since)")
        }

        lines.append("")
        if report.deadLetters.isEmpty {
            lines.append("Dead letters: none unresolved")
        } else {
            lines.append("Dead letters: \(report.unresolvedDeadLetters) unresolved")
            var reasons = ReportTable([
                ("REASON", .left), ("COUNT", .right), ("LAST HOUR", .right), ("LAST DAY", .right), ("OLDEST", .right),
            ])
            let asOf = Timestamp.date(report.asOf) ?? Date()
            for reason in report.deadLetterSummary.reasons {
                reasons.append([
                    reason.reason, "\(reason.count)", "\(reason.lastHour)", "\(reason.lastDay)",
                    humanDuration(seconds: max(0, asOf.timeIntervalSince(reason.oldest))) + " ago",
                ])
            }
            lines += reasons.lines(indent: 2)
        }

        lines.append("")
        lines += retentionLines(report, retention: retention)

        if notesInline && !report.brokerNotes.isEmpty {
            lines.append("")
            lines += report.brokerNotes.map { "Broker: \($0)" }
        }
        let pastEnd = report.positionsPastReportedEnd
        if !pastEnd.isEmpty {
            lines.append("")
            lines.append(
                "* The broker reports a high watermark below the stored position on \(pastEnd.count) partition(s)"
                    + " (\(pastEnd.map { "\($0.topicPartition)" }.joined(separator: ", "))):")
            lines.append("  it under-reports the end of its log (Tansu 0.6 reports the last batch's base offset + 1,")
            lines.append("  exact only when the last produce request carried one record), so HIGH and LAG read low.")
        }
        return lines
    }

    /// The retention window, the partitions per table, and the next prune.
    static func retentionLines(_ report: StatusReport, retention: Retention) -> [String] {
        let width = report.partitionLayout.map { " · partitions of \(Retention(window: $0.width))" } ?? ""
        var lines = ["Retention: \(retention)\(width)"]
        var table = ReportTable([
            ("TABLE", .left), ("PARTITIONS", .right), ("OLDEST", .left), ("NEWEST", .left), ("ROWS≈", .right),
            ("SIZE", .right),
        ])
        for name in TimePartitions.tables {
            let partitions = report.timePartitions.filter { $0.table == name }
            guard !partitions.isEmpty else { continue }
            let rows = partitions.map { max(0, $0.estimatedRows) }.reduce(0, +)
            let oldest = partitions.first { !$0.isUnresolvedDeadLetters }
            let newest = partitions.last { !$0.isUnresolvedDeadLetters }
            table.append([
                name, "\(partitions.count)",
                oldest.map { $0.isLegacy ? "legacy (before the upgrade)" : $0.lower.map(OperatorText.time) ?? "-" } ?? "-",
                newest?.upper.map { "until " + OperatorText.time($0) } ?? "-",
                "\(rows)", humanBytes(partitions.map(\.bytes).reduce(0, +)),
            ])
        }
        lines += table.lines(indent: 2)
        if let next = nextPrune(report, retention: retention) {
            lines.append("  Next prune: \(next.partition) leaves the window at \(OperatorText.time(next.at))")
        } else {
            lines.append("  Next prune: none (\(retention.window == nil ? "retention is never" : "no partition to drop"))")
        }
        return lines
    }

    /// The partition that leaves the window first, and when (`once run` drops it within
    /// minutes of that; an outbox partition with unpublished rows waits for the relay).
    static func nextPrune(_ report: StatusReport, retention: Retention) -> (partition: String, at: Date)? {
        guard let window = retention.window else { return nil }
        let seconds = Double(window.components.seconds)
        return report.timePartitions
            .filter { !$0.isUnresolvedDeadLetters }
            .compactMap { p in p.upper.map { (p.name, $0.addingTimeInterval(seconds)) } }
            .min { $0.1 < $1.1 }
    }

    // MARK: - JSON

    static func json(_ report: StatusReport, retention: Retention = .default) -> JSONValue {
        func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.integer) ?? .null }
        let partitions: [JSONValue] = report.partitions.map { p in
            .object([
                "topic": .string(p.topic), "partition": .integer(Int64(p.partition)), "stored": .bool(p.isStored),
                "next_offset": optional(p.nextOffset), "low_watermark": optional(p.lowWatermark),
                "high_watermark": optional(p.highWatermark), "lag": optional(p.lag),
                "owner": p.owner.map(JSONValue.string) ?? .null, "generation": optional(p.generation),
                "updated_at": p.updatedAt.map(JSONValue.string) ?? .null,
            ])
        }
        var outcomes: [String: JSONValue] = [:]
        for outcome in EventOutcome.allCases { outcomes[outcome.rawValue] = .integer(report.outcomes[outcome] ?? 0) }
        return .object([
            "consumer_group": .string(report.consumerGroup),
            "as_of": .string(report.asOf),
            "partitions": .array(partitions),
            "total_lag": optional(report.totalLag),
            "outcomes": .object(outcomes),
            "outbox": .object([
                "unpublished": .integer(report.outbox.unpublished),
                "oldest_created_at": report.outbox.oldestCreatedAt.map(JSONValue.string) ?? .null,
                "oldest_age_seconds": report.outbox.oldestAgeSeconds.map(JSONValue.number) ?? .null,
            ]),
            "dead_letters": .object([
                "unresolved": .integer(report.unresolvedDeadLetters),
                "by_reason": .object(report.deadLetters.mapValues(JSONValue.integer)),
                "reasons": .array(
                    report.deadLetterSummary.reasons.map { reason in
                        .object([
                            "reason": .string(reason.reason), "count": .integer(reason.count),
                            "last_hour": .integer(reason.lastHour), "last_day": .integer(reason.lastDay),
                            "oldest_created_at": .string(OperatorText.time(reason.oldest)),
                        ])
                    }),
            ]),
            "retention": .object([
                "window": .string(retention.description),
                "partition_width_seconds": report.partitionLayout.map { .integer($0.width.components.seconds) } ?? .null,
                "oldest_claim_bucket": report.partitionLayout?.oldest.map { .string(OperatorText.time($0)) } ?? .null,
                "next_prune": nextPrune(report, retention: retention).map {
                    .object(["partition": .string($0.partition), "at": .string(OperatorText.time($0.at))])
                } ?? .null,
                "partitions": .array(report.timePartitions.map(Prune.json)),
            ]),
            "broker": .object([
                "complete": .bool(report.isComplete),
                "notes": .array(report.brokerNotes.map(JSONValue.string)),
            ]),
        ])
    }
}
