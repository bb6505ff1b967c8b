import Foundation
import Hummingbird
import Logging
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres

/// The pages and actions over the operations API: dead letters (filter, discard), the offset
/// reset planner, and the replay log.
extension Console {
    func addOperationsRoutes(to router: Router<BasicRequestContext>) {
        router.post("console/dead-letters/:id/discard") { request, context in
            await self.action(request) { form, actor in
                try await self.discardDeadLetter(
                    request, id: context.parameters.get("id", as: Int64.self), note: form.text("note"), actor: actor)
            }
        }
        router.post("console/dead-letters/discard") { request, _ in
            await self.action(request) { form, actor in
                try await self.discardByReason(request, reason: form.text("reason"), note: form.text("note"), actor: actor)
            }
        }
        router.get("console/offsets") { request, _ in await self.page { try await self.offsets(request) } }
        router.post("console/offsets/execute") { request, _ in
            await self.action(request) { form, actor in try await self.executePlan(request, form: form, actor: actor) }
        }
        router.get("console/replays") { request, _ in await self.page { try await self.replays(request) } }
    }

    // MARK: - Dead letters

    /// The most dead letters one page lists.
    static let deadLetterPageLimit = 200

    func deadLetters(_ request: Request) async throws -> Response {
        let query = self.query(request)
        var context = base(request, title: "Dead letters", current: "/console/dead-letters")
        var since: Date?
        if let text = query.text("since") {
            since = ConsoleText.instant(text)
            if since == nil { context["filterError"] = "“\(text)” is not an RFC 3339 time nor an age such as 30m, 2h or 1d." }
        }
        let filter = DeadLetterFilter(
            reason: query.text("reason"), topic: query.text("topic"), since: since,
            includeResolved: query["resolved"] == "1", limit: Self.deadLetterPageLimit)
        let queue = DeadLetterQueue(consumerGroup: configuration.consumerGroup)
        let group = configuration.consumerGroup
        let report = try await database.withConnection { db in
            (entries: try queue.list(filter, on: db), status: try StatusReport.readDatabase(consumerGroup: group, on: db))
        }
        context["entries"] = report.entries.map(Self.row)
        context["reasons"] = report.status.deadLetters.sorted { $0.key < $1.key }.map { ["reason": $0.key, "count": "\($0.value)"] }
        let known = Set(report.status.deadLetters.keys).union(Self.reasonCodes)
        context["reasonOptions"] = known.sorted().map { ["value": $0, "selected": $0 == filter.reason] as [String: Any] }
        context["filterTopic"] = filter.topic ?? ""
        context["filterSince"] = query.text("since") ?? ""
        context["filterReason"] = filter.reason
        context["includeResolved"] = filter.includeResolved
        return render("dead-letters", context)
    }

    /// The contract's reason codes, offered in the filter even when none is unresolved.
    static let reasonCodes = [
        "invalid_json", "missing_event_id", "invalid_event_id", "unknown_type", "unsupported_version", "invalid_tenant",
        "invalid_data", "too_large", "handler_failed",
    ]

    static func state(_ entry: DeadLetterEntry) -> String {
        guard entry.resolvedAt != nil else { return "unresolved" }
        switch entry.resolution {
        case .discarded?: return "discarded"
        case .retried?: return "retried"
        case nil: return "resolved"
        }
    }

    static func row(_ entry: DeadLetterEntry) -> [String: Any] {
        [
            "id": "\(entry.id)", "createdAt": ConsoleText.time(entry.createdAt),
            "source": "\(entry.source)@\(entry.offset)", "eventID": ConsoleText.clipped(entry.eventID, 48),
            "reason": entry.reasonCode, "error": ConsoleText.clipped(entry.error, 100), "retries": "\(entry.retries)",
            "state": state(entry),
        ]
    }

    static func detail(_ entry: DeadLetterEntry) -> [String: Any] {
        let payload = ConsoleText.payload(entry.payload)
        var fields: [String: Any] = [
            "id": "\(entry.id)", "group": entry.consumerGroup, "source": "\(entry.source)", "offset": "\(entry.offset)",
            "eventID": entry.eventID, "reason": entry.reasonCode, "error": entry.error,
            "createdAt": ConsoleText.time(entry.createdAt), "resolvedAt": entry.resolvedAt.map(ConsoleText.time) ?? "–",
            "retries": "\(entry.retries)", "state": state(entry), "stateClass": entry.resolvedAt == nil ? "bad" : "ok",
            "unresolved": entry.resolvedAt == nil, "payloadSummary": payload.summary, "payload": payload.text,
            "headers": entry.headers.map { header -> [String: Any] in
                ["name": header.name, "value": header.value.map { String(decoding: $0, as: UTF8.self) } ?? "(null)"]
            },
        ]
        fields["resolvedBy"] = entry.resolvedBy
        fields["note"] = entry.note
        return fields
    }

    func discardDeadLetter(_ request: Request, id: Int64?, note: String?, actor: String) async throws -> Response {
        guard let id else { throw ConsolePageError(status: .badRequest, heading: "No such dead letter", text: "the id is not a number") }
        guard let note else {
            return try await deadLetter(request, id: id, error: "A discard needs a note saying why.")
        }
        let queue = DeadLetterQueue(consumerGroup: configuration.consumerGroup)
        let by = "console: " + actor
        let result = try await database.withConnection { db in try queue.discard(id: id, by: by, note: note, on: db) }
        logger.info("console: \(actor) discarded dead letter \(id): \(result.status)")
        switch result.status {
        case .discarded:
            return try await deadLetter(request, id: id, notice: "Discarded; the row stays, resolved, with your note.")
        case .alreadyResolved:
            return try await deadLetter(request, id: id, notice: "Nothing to do: it was already resolved.")
        case .notFound:
            throw ConsolePageError.noDeadLetter(id)
        case .otherGroup(let group):
            throw ConsolePageError.noDeadLetter(id, otherGroup: group)
        }
    }

    func discardByReason(_ request: Request, reason: String?, note: String?, actor: String) async throws -> Response {
        guard let reason, let note else {
            throw ConsolePageError(status: .badRequest, heading: "Nothing discarded", text: "a discard by reason needs a reason and a note")
        }
        let queue = DeadLetterQueue(consumerGroup: configuration.consumerGroup)
        let by = "console: " + actor
        let ids = try await database.withConnection { db in try queue.discard(reason: reason, by: by, note: note, on: db) }
        logger.info("console: \(actor) discarded \(ids.count) dead letters of reason \(reason)")
        return message(
            request, status: .ok, heading: "Discarded",
            text: "\(ids.count) unresolved \(reason) dead letter\(ids.count == 1 ? "" : "s") discarded with your note.",
            back: "/console/dead-letters")
    }

    // MARK: - Offset reset planner

    static let targetKinds: [(value: String, label: String)] = [
        ("earliest", "earliest"), ("latest", "latest"), ("offset", "to offset"), ("datetime", "to date-time"),
        ("shift-by", "shift by ±N"), ("by-duration", "by duration back from now"),
    ]

    func offsets(_ request: Request) async throws -> Response {
        let query = self.query(request)
        var context = base(request, title: "Offsets", current: "/console/offsets")
        let kind = query.text("target") ?? "earliest"
        context["scope"] = query["scope"] ?? "all"
        context["value"] = query["value"] ?? ""
        context["targets"] = Self.targetKinds.map { ["value": $0.value, "label": $0.label, "selected": $0.value == kind] as [String: Any] }
        guard let brokers = configuration.brokers else {
            context["noBroker"] = true
            return render("offsets", context)
        }
        guard query["scope"] != nil else { return render("offsets", context) }
        let scope: OffsetResetScope
        let target: OffsetResetTarget
        do {
            scope = try ConsoleOffsetForm.scope(query["scope"] ?? "")
            target = try ConsoleOffsetForm.target(kind: kind, value: query["value"] ?? "")
        } catch let error as ConsoleFormError {
            context["planError"] = error.description
            return render("offsets", context)
        }
        let planner = OffsetResetPlanner(
            consumerGroup: configuration.consumerGroup, brokers: brokers, properties: configuration.kafkaProperties,
            logger: logger)
        let plan: OffsetResetPlan
        do {
            plan = try await planner.plan(scope: scope, target: target, database: database)
        } catch {
            context["planError"] = ConsoleText.clipped("\(error)", 400)
            return render("offsets", context)
        }
        context["plan"] = [
            "group": plan.consumerGroup, "hasRows": !plan.rows.isEmpty,
            "rows": plan.rows.map { row -> [String: Any] in
                [
                    "topic": row.partition.topic, "partition": "\(row.partition.partition)",
                    "current": row.current.map(String.init) ?? "earliest", "target": "\(row.target)",
                    "change": (row.change > 0 ? "+" : "") + "\(row.change)", "alreadyProcessed": "\(row.alreadyProcessed)",
                    "logStart": "\(row.logStart)", "logEnd": "\(row.logEnd)", "owner": row.owner ?? "–",
                    "encoded": ConsoleOffsetForm.encode(row),
                ]
            },
        ] as [String: Any]
        return render("offsets", context)
    }

    func executePlan(_ request: Request, form: ConsoleForm, actor: String) async throws -> Response {
        let rows: [OffsetResetPlan.Row]
        do {
            rows = try form.values("row").map(ConsoleOffsetForm.decode)
        } catch let error as ConsoleFormError {
            throw ConsolePageError(status: .badRequest, heading: "Nothing executed", text: error.description)
        }
        guard !rows.isEmpty else {
            throw ConsolePageError(status: .badRequest, heading: "Nothing executed", text: "the plan has no rows")
        }
        let plan = OffsetResetPlan(consumerGroup: configuration.consumerGroup, rows: rows)
        let positions = try await database.withConnection { db in try plan.execute(on: db) }
        logger.info("console: \(actor) reset \(positions.count) partition(s) of group \(configuration.consumerGroup)")
        var context = base(request, title: "Offsets reset", current: "/console/offsets")
        context["notice"] = "Executed: \(positions.count) partition\(positions.count == 1 ? "" : "s") moved."
        context["positions"] = positions.map { p -> [String: Any] in
            ["topic": p.partition.topic, "partition": "\(p.partition.partition)",
             "next": p.nextOffset.map(String.init) ?? "earliest", "generation": "\(p.generation)"]
        }
        return render("offsets-done", context)
    }

    // MARK: - Replays

    /// Seconds between refreshes of the replay page while a replay runs.
    static let replayRefresh = 3

    func replays(_ request: Request) async throws -> Response {
        let log = ReplayLog(consumerGroup: configuration.consumerGroup)
        let entries = try await database.withConnection { db in try log.recent(limit: 100, on: db) }
        var context = base(request, title: "Replays", current: "/console/replays")
        let running = entries.contains { $0.state == .running }
        if running {
            context["refresh"] = "\(Self.replayRefresh)"
            context["anyRunning"] = true
        }
        context["entries"] = entries.map { entry -> [String: Any] in
            let state = entry.state.rawValue
            var percent = entry.state == .finished ? 100.0 : 0.0
            if entry.state != .finished, let through = entry.through, through >= entry.from {
                percent = min(100, max(0, Double(entry.nextOffset - entry.from) * 100 / Double(through - entry.from + 1)))
            }
            var fields: [String: Any] = [
                "id": "\(entry.id)", "partition": "\(entry.partition)", "from": "\(entry.from)",
                "through": entry.through.map(String.init) ?? "end", "dryRun": entry.dryRun,
                "nextOffset": "next \(entry.nextOffset)", "percent": String(format: "%.0f", percent),
                "records": "\(entry.records)", "applied": "\(entry.applied)", "duplicates": "\(entry.duplicates)",
                "conflicts": "\(entry.conflicts)", "deadLettered": "\(entry.deadLettered)", "state": state,
                "stateClass": state == "failed" ? "bad" : state == "finished" ? "ok" : "",
                "startedAt": ConsoleText.time(entry.startedAt), "updatedAt": ConsoleText.time(entry.updatedAt),
            ]
            fields["error"] = entry.error
            return fields
        }
        return render("replays", context)
    }
}
