import ArgumentParser
import Foundation
import OnceDomain
import OnceEnvelope
import OnceJSON
import OnceOperations
import OncePipeline
import OncePostgres

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspect the group's dead letters, re-drive them after a fix, or discard them with a note.",
        subcommands: [List.self, Show.self, Retry.self, Discard.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The group's unresolved dead letters (all with --all), oldest first; --reason, --topic and --since narrow it.")

        typealias Format = TableOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Flag(help: "Resolved ones too.")
        var all = false

        @Option(help: "Only this reason code (invalid_json, handler_failed, …).")
        var reason: String?

        @Option(name: .customLong("topic"), help: ArgumentHelp("Only those from this source topic.", valueName: "topic"))
        var sourceTopic: String?

        @Option(help: "Only those dead-lettered at or after this RFC 3339 time, or this long ago (PT1H, P1D).")
        var since: String?

        @Option(help: "At most this many.")
        var limit = 1000

        @Option(help: "table or json.")
        var format: Format = .table

        func validate() throws {
            guard limit >= 1 else { throw ValidationError("--limit must be 1 or more") }
            if let since, DeadLetters.time(since, now: Date()) == nil {
                throw ValidationError(
                    "--since `\(since)` is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor an ISO 8601 duration (PT1H)")
            }
        }

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let queue = DeadLetterQueue(consumerGroup: settings.consumerGroup)
            let filter = DeadLetterFilter(
                reason: reason, topic: sourceTopic, since: since.flatMap { DeadLetters.time($0, now: Date()) },
                includeResolved: all, limit: limit)
            let entries = try await database.readAndClose("dead_letters") { db in try queue.list(filter, on: db) }
            switch format {
            case .json:
                print(
                    JSONWriter.serializeString(
                        .object([
                            "consumer_group": .string(settings.consumerGroup),
                            "dead_letters": .array(entries.map { DeadLetters.json($0, payload: false) }),
                        ])))
            case .table where entries.isEmpty:
                let narrowed = reason != nil || sourceTopic != nil || since != nil ? " matching the filter" : ""
                print("no \(all ? "" : "unresolved ")dead letters\(narrowed) in group \(settings.consumerGroup)")
            case .table:
                var header = ["id", "created_at", "source", "event_id", "reason_code", "retries", "error"]
                if all { header.insert(contentsOf: ["resolved_at", "resolution"], at: 2) }
                print(
                    ReportTable(
                        header: header,
                        rows: entries.map { entry in
                            var row = [
                                String(entry.id), OperatorText.time(entry.createdAt), "\(entry.source)@\(entry.offset)",
                                OperatorText.clipped(entry.eventID, 40), entry.reasonCode, String(entry.retries),
                                OperatorText.clipped(entry.error, 80),
                            ]
                            if all {
                                row.insert(
                                    contentsOf: [
                                        entry.resolvedAt.map(OperatorText.time) ?? "-", entry.resolution?.rawValue ?? "-",
                                    ], at: 2)
                            }
                            return row
                        }).text)
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "One dead letter: where it came from, why, its headers and its payload (pretty JSON, or a hex dump).")

        typealias Format = TextOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Argument(help: "The dead letter's id (see `once dlq list`).")
        var id: Int64

        @Option(help: "text or json.")
        var format: Format = .text

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let queue = DeadLetterQueue(consumerGroup: settings.consumerGroup)
            let id = self.id
            let found = try await database.readAndClose("dead_letters") { db in try queue.entry(id: id, on: db) }
            guard let entry = found else { throw CommandFailure("there is no dead letter \(id)") }
            if format == .json {
                print(JSONWriter.serializeString(DeadLetters.json(entry, payload: true)))
                return
            }
            let state = entry.resolvedAt == nil ? "unresolved" : "resolved"
            var lines = [
                "dead letter \(entry.id) (\(state), retried \(entry.retries) time\(entry.retries == 1 ? "" : "s"))"
            ]
            let fields: [(String, String)] = [
                ("consumer group", entry.consumerGroup),
                ("source", "\(entry.source) offset \(entry.offset)"),
                ("event id", entry.eventID),
                ("reason", entry.reasonCode),
                ("error", entry.error),
                ("created at", OperatorText.time(entry.createdAt)),
                ("resolved at", entry.resolvedAt.map(OperatorText.time) ?? "-"),
            ] + (entry.resolution.map { resolution in
                [("resolution", resolution.rawValue), ("resolved by", entry.resolvedBy ?? "-")]
                    + (entry.note.map { [("note", $0)] } ?? [])
            } ?? [])
            lines += fields.map { name, value in name.padding(toLength: 16, withPad: " ", startingAt: 0) + value }
            if entry.headers.isEmpty {
                lines.append("headers         (none)")
            } else {
                lines.append("headers")
                lines += entry.headers.map {
                    "  \($0.name): \($0.value.map { String(decoding: $0, as: UTF8.self) } ?? "(null)")"
                }
            }
            guard let payload = entry.payload else {
                lines.append("payload         (none)")
                print(lines.joined(separator: "\n"))
                return
            }
            if let document = try? JSONParser.parse(payload) {
                lines.append("payload (\(payload.count) bytes, JSON)")
                lines.append(PayloadText.prettyJSON(document))
            } else {
                lines.append("payload (\(payload.count) bytes, not JSON)")
                lines.append(PayloadText.hexDump(payload))
            }
            print(lines.joined(separator: "\n"))
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-drive dead letters through the pipeline after a fix.",
            discussion: """
                Each dead letter's stored bytes go through the same transaction and handlers as \
                `once run`, in one transaction with its bookkeeping: its event id's dead_lettered claim \
                is released first; if the record now goes through, the dead letter is resolved; if it \
                fails again, it stays unresolved with the new reason and error. Either way its retry \
                count goes up, and no second dead letter is written. Exit status 3 when any dead \
                letter failed again.
                """)

        typealias Format = TextOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Argument(help: "The dead letter's id.")
        var id: Int64?

        @Flag(help: "Every unresolved dead letter of the group, oldest first.")
        var all = false

        @Option(help: "Every unresolved dead letter with this reason code, oldest first (after fixing that cause).")
        var reason: String?

        @Option(help: "Who the retry is recorded as (dead_letters.resolved_by); default USER@HOST.")
        var by: String = OperatorName.current

        @Option(help: "text or json.")
        var format: Format = .text

        func validate() throws {
            guard [id != nil, all, reason != nil].filter({ $0 }).count == 1 else {
                throw ValidationError("give one of: a dead letter id, --all, --reason CODE")
            }
            guard !by.isEmpty else { throw ValidationError("--by is empty") }
        }

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            try await ensurePartitions(database)
            var registry = HandlerRegistry()
            Domain.register(into: &registry)
            let retry = DeadLetterRetry(consumerGroup: settings.consumerGroup, registry: registry)
            var results: [DeadLetterRetryResult] = []
            do {
                let ids: [Int64]
                if let id {
                    ids = [id]
                } else {
                    let reason = self.reason
                    ids = try await database.withConnection { db in try retry.unresolved(reason: reason, on: db) }
                }
                for id in ids {
                    let result = try await database.withConnection { db in try retry.retry(id: id, by: by, on: db) }
                    switch result.status {
                    case .notFound: throw CommandFailure("there is no dead letter \(id)")
                    case .otherGroup(let group):
                        throw CommandFailure("dead letter \(id) belongs to group \(group); pass --group \(group)")
                    default: break
                    }
                    results.append(result)
                    if format == .text { print(Self.line(result)) }
                }
                await database.close()
            } catch {
                await database.close()
                throw error as? CommandFailure ?? CommandFailure(oneLine("retry failed: \(error)"))
            }

            let failed = results.filter { !$0.isResolved }.count
            switch format {
            case .json:
                print(
                    JSONWriter.serializeString(
                        .object([
                            "consumer_group": .string(settings.consumerGroup),
                            "results": .array(results.map(Self.json)),
                            "resolved": .integer(Int64(results.count - failed)),
                            "unresolved": .integer(Int64(failed)),
                        ])))
            case .text where id == nil && results.isEmpty:
                print("no unresolved dead letters\(reason.map { " with reason \($0)" } ?? "") in group \(settings.consumerGroup)")
            case .text where id == nil:
                print("retried \(results.count): \(results.count - failed) resolved, \(failed) still unresolved")
            case .text:
                break
            }
            if failed > 0 { throw ExitCode(3) }
        }

        static func line(_ result: DeadLetterRetryResult) -> String {
            switch result.status {
            case .resolved(let outcome):
                return "dead letter \(result.id): \(outcome.rawValue), resolved (retries \(result.retries))"
            case .failedAgain(let note):
                let why = OperatorText.clipped(note.message, 120)
                return "dead letter \(result.id): failed again, \(note.reason.rawValue): \(why); "
                    + "still unresolved (retries \(result.retries))"
            case .alreadyResolved:
                return "dead letter \(result.id): already resolved"
            case .notFound:
                return "dead letter \(result.id): not found"
            case .otherGroup(let group):
                return "dead letter \(result.id): belongs to group \(group)"
            }
        }

        static func json(_ result: DeadLetterRetryResult) -> JSONValue {
            var fields: [String: JSONValue] = ["id": .integer(result.id), "retries": .integer(Int64(result.retries))]
            switch result.status {
            case .resolved(let outcome):
                fields["status"] = .string("resolved")
                fields["outcome"] = .string(outcome.rawValue)
            case .failedAgain(let note):
                fields["status"] = .string("failed_again")
                fields["outcome"] = .string(EventOutcome.deadLettered.rawValue)
                fields["reason_code"] = .string(note.reason.rawValue)
                fields["error"] = .string(note.message)
            case .alreadyResolved:
                fields["status"] = .string("already_resolved")
            case .notFound:
                fields["status"] = .string("not_found")
            case .otherGroup(let group):
                fields["status"] = .string("other_group")
                fields["consumer_group"] = .string(group)
            }
            return .object(fields)
        }
    }

    /// `--since`: an RFC 3339 time, or an ISO 8601 duration before `now`.
    static func time(_ text: String, now: Date) -> Date? {
        if let date = Timestamp.date(text) { return date }
        return OffsetResetTarget.duration(iso: text).map { duration in
            now.addingTimeInterval(-Double(duration.components.seconds) - Double(duration.components.attoseconds) / 1e18)
        }
    }

    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give up dead letters for good, with a note saying why; the rows stay for the audit.",
            discussion: """
                A discarded dead letter is resolved (resolution `discarded`, who and the note                 recorded) and never applies: its record's claim stays, so replays skip it too. Give                 one id, or --reason CODE for every unresolved one of that reason. It stays in                 dead_letters, listed by `once dlq list --all`, until its time partition leaves the                 retention window.
                """)

        typealias Format = TextOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Argument(help: "The dead letter's id.")
        var id: Int64?

        @Option(help: "Every unresolved dead letter with this reason code.")
        var reason: String?

        @Option(help: "Why it is given up (kept in dead_letters.resolution_note).")
        var note: String

        @Option(help: "Who discards it (dead_letters.resolved_by); default USER@HOST.")
        var by: String = OperatorName.current

        @Option(help: "text or json.")
        var format: Format = .text

        func validate() throws {
            guard (id != nil) != (reason != nil) else { throw ValidationError("give a dead letter id or --reason (not both)") }
            guard !note.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw ValidationError("--note is empty: say why the dead letter is given up")
            }
            guard !by.isEmpty else { throw ValidationError("--by is empty") }
        }

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let queue = DeadLetterQueue(consumerGroup: settings.consumerGroup)
            let (id, reason, note, by) = (self.id, self.reason, self.note, self.by)
            let discarded: [Int64] = try await database.readAndClose("dead_letters") { db in
                guard let id else { return try queue.discard(reason: reason ?? "", by: by, note: note, on: db) }
                switch try queue.discard(id: id, by: by, note: note, on: db).status {
                case .discarded: return [id]
                case .alreadyResolved: throw CommandFailure("dead letter \(id) is already resolved")
                case .notFound: throw CommandFailure("there is no dead letter \(id)")
                case .otherGroup(let group):
                    throw CommandFailure("dead letter \(id) belongs to group \(group); pass --group \(group)")
                }
            }
            switch format {
            case .json:
                print(
                    JSONWriter.serializeString(
                        .object([
                            "consumer_group": .string(settings.consumerGroup),
                            "discarded": .array(discarded.map(JSONValue.integer)),
                            "resolved_by": .string(by), "note": .string(note),
                        ])))
            case .text where discarded.isEmpty:
                print("no unresolved dead letters with reason \(reason ?? "") in group \(settings.consumerGroup)")
            case .text:
                let ids = discarded.map(String.init).joined(separator: ", ")
                print("discarded \(discarded.count) dead letter\(discarded.count == 1 ? "" : "s") (\(ids)) as \(by): \(note)")
            }
        }
    }

    static func json(_ entry: DeadLetterEntry, payload: Bool) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .integer(entry.id),
            "consumer_group": .string(entry.consumerGroup),
            "topic": .string(entry.source.topic),
            "partition": .integer(Int64(entry.source.partition)),
            "offset": .integer(entry.offset),
            "event_id": .string(entry.eventID),
            "reason_code": .string(entry.reasonCode),
            "error": .string(entry.error),
            "created_at": .string(OperatorText.time(entry.createdAt)),
            "resolved_at": entry.resolvedAt.map { .string(OperatorText.time($0)) } ?? .null,
            "retries": .integer(Int64(entry.retries)),
            "resolution": entry.resolution.map { .string($0.rawValue) } ?? .null,
            "resolved_by": entry.resolvedBy.map(JSONValue.string) ?? .null,
            "note": entry.note.map(JSONValue.string) ?? .null,
        ]
        if payload {
            fields["headers"] = .array(
                entry.headers.map { header in
                    .object([
                        "name": .string(header.name),
                        "value": header.value.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null,
                    ])
                })
            fields["payload_bytes"] = entry.payload.map { .integer(Int64($0.count)) } ?? .null
            if let bytes = entry.payload, let document = try? JSONParser.parse(bytes) {
                fields["payload_json"] = document
            } else {
                fields["payload_hex"] = entry.payload.map { .string(PayloadText.hex($0)) } ?? .null
            }
        }
        return .object(fields)
    }
}
