import ArgumentParser
import Foundation
import OnceEnvelope
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres

struct Offsets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The group's stored positions (consumer_offsets): describe them, or plan and execute a reset.",
        subcommands: [Show.self, Reset.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per topic and partition of the group: position, log end, lag, owner (like kafka-consumer-groups --describe).",
            discussion: """
                CURRENT-OFFSET is the stored next offset ("-" when nothing is stored: the group \
                starts at the earliest offset), LOG-END-OFFSET the broker's high watermark, LAG the \
                records between them. Without --brokers, or when the broker does not answer, those two \
                read "-" and the reason goes to standard error (exit status 2).
                """)

        typealias Format = TableOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Option(help: "table or json.")
        var format: Format = .table

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            var report = try await database.readAndClose("consumer_offsets") { db in
                try StatusReport.readDatabase(consumerGroup: settings.consumerGroup, on: db)
            }
            report.partitions.removeAll { !$0.isStored }
            if let brokers = settings.brokers {
                let admin = try await KafkaAdmin(
                    bootstrapServers: brokers, properties: settings.kafkaProperties,
                    logger: connection.kafkaLogger(logger))
                let stored = report.partitions.map(\.topicPartition)
                var view = await StatusReport.readBroker(topics: [], stored: stored, admin: admin, brokers: brokers)
                await admin.close()
                view.partitionCounts = [:]  // the stored partitions only, as --describe shows them
                report.merge(view)
            } else {
                report.brokerNotes.append("no --brokers given: log ends and lag unknown")
            }
            print(format == .json ? JSONWriter.serializeString(Self.json(report)) : Self.table(report))
            if !report.brokerNotes.isEmpty && !report.partitions.isEmpty {
                printToStandardError(report.brokerNotes.joined(separator: "; "))
                throw ExitCode(2)
            }
        }

        static func table(_ report: StatusReport) -> String {
            guard !report.partitions.isEmpty else { return "no stored positions for group \(report.consumerGroup)" }
            var table = ReportTable([
                ("GROUP", .left), ("TOPIC", .left), ("PARTITION", .right), ("CURRENT-OFFSET", .right),
                ("LOG-END-OFFSET", .right), ("LAG", .right), ("OWNER", .left), ("GENERATION", .right),
                ("UPDATED-AT", .left),
            ])
            for p in report.partitions {
                table.append([
                    report.consumerGroup, p.topic, "\(p.partition)", p.nextOffset.map(String.init) ?? "-",
                    p.highWatermark.map(String.init) ?? "-", p.lag.map(String.init) ?? "-", p.owner ?? "-",
                    p.generation.map(String.init) ?? "-", p.updatedAt ?? "-",
                ])
            }
            var lines = table.lines(indent: 0)
            let pastEnd = report.positionsPastReportedEnd
            if !pastEnd.isEmpty {
                lines.append(
                    "The broker reports a log end below the stored position on "
                        + pastEnd.map { "\($0.topicPartition)" }.joined(separator: ", ")
                        + ": it under-reports its high watermark there (as Tansu 0.6 does after a multi-record"
                        + " produce request), so LOG-END-OFFSET and LAG read low.")
            }
            return lines.joined(separator: "\n")
        }

        static func json(_ report: StatusReport) -> JSONValue {
            .object([
                "consumer_group": .string(report.consumerGroup),
                "partitions": .array(
                    report.partitions.map { p in
                        .object([
                            "topic": .string(p.topic), "partition": .integer(Int64(p.partition)),
                            "next_offset": p.nextOffset.map(JSONValue.integer) ?? .null,
                            "log_end_offset": p.highWatermark.map(JSONValue.integer) ?? .null,
                            "lag": p.lag.map(JSONValue.integer) ?? .null,
                            "owner": p.owner.map(JSONValue.string) ?? .null,
                            "generation": p.generation.map(JSONValue.integer) ?? .null,
                            "updated_at": p.updatedAt.map(JSONValue.string) ?? .null,
                        ])
                    }),
                "broker_notes": .array(report.brokerNotes.map(JSONValue.string)),
            ])
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Plan new stored positions for some of the group's partitions; store them with --execute.",
            discussion: """
                Give a scope (--topic T, --topic T:0,2, repeatable, or --all-topics: every topic \
                the group has positions for) and exactly one target: --to-earliest, --to-latest, \
                --to-offset N, --to-datetime TIME (the first record stamped at or after an RFC 3339 \
                time), --shift-by N (from the stored position; negative goes back; kept within the \
                log) or --by-duration D (the first record stamped at or after D before now; ISO 8601, \
                such as PT30M or P1DT12H).

                Without --execute it prints the plan and changes nothing: per partition the stored \
                position, the target, the records skipped (a positive change) or re-read (negative), \
                and how many of those the group already has claims for inside the retention window \
                (re-read, they change nothing). With --execute the targets are stored in one \
                transaction, each under a new generation, keeping the owners: a running owner adopts \
                its new position within seconds, without a restart; a stale member cannot commit \
                over it. Skipped records never take effect.
                """)

        typealias Format = TableOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Option(name: .customLong("topic"), help: ArgumentHelp("A topic, or TOPIC:P,P for some of its partitions; repeatable.", valueName: "topic"))
        var scopes: [String] = []

        @Option(help: "With one --topic naming a topic alone: just this partition (the same as --topic TOPIC:P).")
        var partition: Int32?

        @Flag(help: "Every topic the group has stored positions for.")
        var allTopics = false

        @Flag(help: "The first offset still stored on the broker.")
        var toEarliest = false

        @Flag(help: "The end of the log: skip everything in it now.")
        var toLatest = false

        @Option(help: "This offset, in every partition of the scope.")
        var toOffset: Int64?

        @Option(help: "The first offset stamped at or after this RFC 3339 time.")
        var toDatetime: String?

        @Option(parsing: .unconditional, help: "Move the stored position by N records (negative: back).")
        var shiftBy: Int64?

        @Option(help: "The first offset stamped at or after this ISO 8601 duration before now (PT30M).")
        var byDuration: String?

        @Flag(help: "Store the plan. Without it, nothing changes.")
        var execute = false

        @Option(help: "table or json.")
        var format: Format = .table

        func validate() throws {
            let given = [toEarliest, toLatest, toOffset != nil, toDatetime != nil, shiftBy != nil, byDuration != nil]
            guard given.filter({ $0 }).count == 1 else {
                throw ValidationError(
                    "give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, --shift-by, --by-duration")
            }
            guard allTopics != !scopes.isEmpty else {
                throw ValidationError("give --topic (one or more) or --all-topics (not both)")
            }
            for scope in scopes where OffsetResetScope.Selection(scope) == nil {
                throw ValidationError("--topic `\(scope)` is not TOPIC or TOPIC:P,P with partitions of 0 or more")
            }
            if let partition {
                guard partition >= 0 else { throw ValidationError("--partition must be 0 or more") }
                guard scopes.count == 1, !scopes[0].contains(":") else {
                    throw ValidationError("--partition narrows one --topic that names a topic alone")
                }
            }
            if let toOffset, toOffset < 0 { throw ValidationError("--to-offset must be 0 or more") }
            if let toDatetime, Timestamp.date(toDatetime) == nil {
                throw ValidationError("--to-datetime `\(toDatetime)` is not an RFC 3339 time such as 2026-11-22T10:00:00Z")
            }
            if let byDuration, OffsetResetTarget.duration(iso: byDuration) == nil {
                throw ValidationError("--by-duration `\(byDuration)` is not an ISO 8601 duration such as PT30M or P1DT12H")
            }
        }

        var scope: OffsetResetScope {
            if allTopics { return .allTopics }
            var selections = scopes.compactMap(OffsetResetScope.Selection.init)
            if let partition { selections[0].partitions = [partition] }
            return .topics(selections)
        }

        var target: OffsetResetTarget {
            if toEarliest { return .earliest }
            if toLatest { return .latest }
            if let toOffset { return .offset(toOffset) }
            if let shiftBy { return .shiftBy(shiftBy) }
            if let byDuration, let duration = OffsetResetTarget.duration(iso: byDuration) { return .byDuration(duration) }
            let date = Timestamp.date(toDatetime ?? "") ?? Date()
            return .datetime(milliseconds: Int64((date.timeIntervalSince1970 * 1000).rounded(.down)))
        }

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let planner = OffsetResetPlanner(
                consumerGroup: settings.consumerGroup, brokers: try settings.requireBrokers(),
                properties: settings.kafkaProperties, logger: connection.kafkaLogger(logger))
            let plan: OffsetResetPlan
            var stored: [StoredPosition]?
            do {
                do {
                    plan = try await planner.plan(scope: scope, target: target, database: database)
                } catch let error as OffsetResetRefused {
                    throw CommandFailure(error.description)
                } catch let error as PostgresError {
                    throw CommandFailure(oneLine("cannot read the stored positions: \(error)"))
                } catch {
                    throw OperatorChecks.brokerFailure(error, settings: settings)
                }
                if execute {
                    do {
                        stored = try await database.withConnection { db in try plan.execute(on: db) }
                    } catch {
                        throw CommandFailure(oneLine("cannot store the positions: \(error)"))
                    }
                }
                await database.close()
            } catch {
                await database.close()
                throw error
            }
            print(format == .json ? JSONWriter.serializeString(Self.json(plan, stored: stored)) : Self.text(plan, stored: stored))
        }

        /// "skip N", "re-read N" or "none".
        static func change(_ row: OffsetResetPlan.Row) -> String {
            row.change > 0 ? "skip \(row.change)" : row.change < 0 ? "re-read \(-row.change)" : "none"
        }

        static func text(_ plan: OffsetResetPlan, stored: [StoredPosition]?) -> String {
            var table = ReportTable([
                ("GROUP", .left), ("TOPIC", .left), ("PARTITION", .right), ("CURRENT-OFFSET", .right),
                ("NEW-OFFSET", .right), ("CHANGE", .left), ("ALREADY-PROCESSED", .right), ("LOG", .left),
                ("OWNER", .left),
            ])
            for row in plan.rows {
                table.append([
                    plan.consumerGroup, row.partition.topic, "\(row.partition.partition)",
                    row.current.map(String.init) ?? "-", "\(row.target)", change(row), "\(row.alreadyProcessed)",
                    "\(row.logStart)…\(row.logEnd)", row.owner ?? "-",
                ])
            }
            var lines = table.lines(indent: 0)
            if let stored {
                let generations = stored.map { "\($0.partition) \($0.generation)" }.joined(separator: ", ")
                lines.append("")
                lines.append(
                    "Executed: \(stored.count) position\(stored.count == 1 ? "" : "s") stored under new generations (\(generations)); "
                        + "running owners go on from there within seconds.")
            } else {
                lines.append("")
                lines.append("Plan only: nothing was changed. Run again with --execute to store it.")
            }
            return lines.joined(separator: "\n")
        }

        static func json(_ plan: OffsetResetPlan, stored: [StoredPosition]?) -> JSONValue {
            let after = Dictionary((stored ?? []).map { ($0.partition, $0) }, uniquingKeysWith: { first, _ in first })
            return .object([
                "consumer_group": .string(plan.consumerGroup),
                "executed": .bool(stored != nil),
                "partitions": .array(
                    plan.rows.map { row in
                        .object([
                            "topic": .string(row.partition.topic), "partition": .integer(Int64(row.partition.partition)),
                            "current_offset": row.current.map(JSONValue.integer) ?? .null,
                            "new_offset": .integer(row.target), "change": .integer(row.change),
                            "already_processed": .integer(row.alreadyProcessed),
                            "log_start_offset": .integer(row.logStart), "log_end_offset": .integer(row.logEnd),
                            "owner": row.owner.map(JSONValue.string) ?? .null,
                            "generation_before": row.generation.map(JSONValue.integer) ?? .null,
                            "generation": after[row.partition].map { .integer($0.generation) } ?? .null,
                        ])
                    }),
            ])
        }
    }
}
