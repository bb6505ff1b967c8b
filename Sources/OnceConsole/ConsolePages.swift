import Foundation
import Hummingbird
import OnceDomain
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres
import OnceSchema

/// The read-only pages: overview (partitions), throughput, outcomes, the credit audit, and
/// browsing dead letters; and the dead-letter retry.
extension Console {
    // MARK: - Overview

    func overview(_ request: Request) async throws -> Response {
        let group = configuration.consumerGroup
        var report = try await database.withConnection { db in try StatusReport.readDatabase(consumerGroup: group, on: db) }
        if let admin, let brokers = configuration.brokers {
            let view = await StatusReport.readBroker(
                topics: configuration.topics, stored: report.partitions.map(\.topicPartition), admin: admin,
                brokers: brokers, timeout: .seconds(3))
            report.merge(view)
        } else {
            report.brokerNotes.append("No broker configured: watermarks and lag are unknown (start the console with --brokers).")
        }
        var context = base(request, title: "Overview", current: "/console")
        context["partitions"] = report.partitions.map { p -> [String: Any] in
            [
                "topic": p.topic, "partition": "\(p.partition)",
                "next": p.nextOffset.map(String.init) ?? (p.isStored ? "earliest" : "–"),
                "high": p.highWatermark.map(String.init) ?? "?", "lag": p.lag.map(String.init) ?? "?",
                "owner": p.owner ?? "–", "generation": p.generation.map(String.init) ?? "–",
                "updated": p.updatedSecondsAgo.map { ConsoleText.ago(seconds: $0) } ?? "–",
            ]
        }
        context["partitionCount"] = "\(report.partitions.count)"
        context["totalLag"] = report.totalLag.map(String.init) ?? "?"
        context["unresolved"] = "\(report.unresolvedDeadLetters)"
        context["outbox"] = "\(report.outbox.unpublished)"
        context["brokerNotes"] = report.brokerNotes
        context["outcomes"] = EventOutcome.allCases.map { ["name": $0.rawValue, "count": "\(report.outcomes[$0] ?? 0)"] }
        context["asOf"] = report.asOf
        return render("overview", context)
    }

    // MARK: - Throughput

    /// Per minute and outcome over the last hour, and the database's clock.
    static func throughputSamples(group: String, on db: PostgresConnection) throws -> (
        samples: [ThroughputChart.Sample], now: Int64
    ) {
        let now = try db.query("SELECT extract(epoch FROM now())::bigint")[0].decode(Int64.self, column: 0)
        let samples = try db.query(
            """
            SELECT extract(epoch FROM date_trunc('minute', processed_at))::bigint, outcome, count(*)
            FROM processed_messages
            WHERE consumer_group = $1 AND processed_at >= date_trunc('minute', now()) - interval '59 minutes'
            GROUP BY 1, 2
            """, [.text(group)]
        ).compactMap { row -> ThroughputChart.Sample? in
            guard let outcome = EventOutcome(rawValue: try row.decode(String.self, column: 1)) else { return nil }
            return ThroughputChart.Sample(
                minute: try row.decode(Int64.self, column: 0), outcome: outcome, count: try row.decode(Int64.self, column: 2))
        }
        return (samples, now)
    }

    func throughput(_ request: Request) async throws -> Response {
        let group = configuration.consumerGroup
        let (samples, now) = try await database.withConnection { db in try Self.throughputSamples(group: group, on: db) }
        let chart = ThroughputChart(samples: samples, now: now)
        var context = base(request, title: "Throughput", current: "/console/throughput")
        context["width"] = "\(Int(ThroughputChart.width))"
        context["height"] = "\(Int(ThroughputChart.height))"
        context["plotLeft"] = "\(ThroughputChart.plotLeft)"
        context["plotRight"] = "\(ThroughputChart.plotRight)"
        context["plotBottom"] = "\(ThroughputChart.plotBottom)"
        context["yTicks"] = chart.yTicks.map { tick -> [String: Any] in
            ["position": "\(tick.position)", "label": tick.label, "labelX": "\(ThroughputChart.plotLeft - 6)",
             "labelY": "\(tick.position + 4)"]
        }
        context["xTicks"] = chart.xTicks.map { tick -> [String: Any] in
            ["position": "\(tick.position)", "label": tick.label, "labelY": "\(ThroughputChart.plotBottom + 17)"]
        }
        context["bars"] = chart.bars.map { bar -> [String: Any] in
            ["x": "\(bar.x)", "y": "\(bar.y)", "width": "\(bar.width)", "height": "\(bar.height)",
             "outcome": bar.outcome.rawValue, "count": "\(bar.count)", "clock": ThroughputChart.clock(bar.minute)]
        }
        context["legend"] = EventOutcome.allCases.map { ["name": $0.rawValue, "count": "\(chart.totals[$0] ?? 0)"] }
        context["eventsInHour"] = "\(chart.totals.values.reduce(0, +))"
        context["peak"] = "\(chart.peak)"
        return render("throughput", context)
    }

    // MARK: - Outcomes

    func outcomes(_ request: Request) async throws -> Response {
        let group = configuration.consumerGroup
        let rows = try await database.withConnection { db in
            try db.query(
                """
                SELECT coalesce(event_type, '(unreadable)'), outcome, count(*) FROM processed_messages WHERE consumer_group = $1
                GROUP BY 1, 2 ORDER BY 1
                """, [.text(group)]
            ).map { row in
                (type: try row.decode(String.self, column: 0), outcome: try row.decode(String.self, column: 1),
                 count: try row.decode(Int64.self, column: 2))
            }
        }
        var totals: [String: Int64] = [:]
        var byType: [String: [String: Int64]] = [:]
        for row in rows {
            totals[row.outcome, default: 0] += row.count
            byType[row.type, default: [:]][row.outcome, default: 0] += row.count
        }
        let total = totals.values.reduce(0, +)
        var context = base(request, title: "Outcomes", current: "/console/outcomes")
        context["outcomes"] = EventOutcome.allCases.map { outcome -> [String: Any] in
            let count = totals[outcome.rawValue] ?? 0
            let percent = total == 0 ? 0 : Double(count) * 100 / Double(total)
            return ["name": outcome.rawValue, "count": "\(count)", "percent": String(format: "%.1f", percent)]
        }
        context["total"] = "\(total)"
        context["byType"] = byType.keys.sorted().map { type -> [String: Any] in
            let counts = byType[type] ?? [:]
            return [
                "type": type, "applied": "\(counts["applied"] ?? 0)", "duplicate": "\(counts["duplicate"] ?? 0)",
                "conflict": "\(counts["conflict"] ?? 0)", "deadLettered": "\(counts["dead_lettered"] ?? 0)",
            ]
        }
        return render("outcomes", context)
    }

    // MARK: - Credit audit

    /// The most accounts one page lists.
    static let auditAccountLimit = 500

    func audit(_ request: Request) async throws -> Response {
        let scope = CreditAudit.Scope(consumerGroup: configuration.consumerGroup)
        let report = try await database.withConnection { db in try CreditAudit.run(scope, on: db) }
        var context = base(request, title: "Credit audit", current: "/console/audit")
        context["asOf"] = report.asOf
        context["cleanText"] = report.isClean ? "clean" : "\(report.anomalies.count) anomal\(report.anomalies.count == 1 ? "y" : "ies")"
        context["cleanClass"] = report.isClean ? "ok" : "bad"
        context["anomalies"] = report.anomalies.map { anomaly -> [String: Any] in
            ["code": anomaly.code, "tenant": anomaly.tenantID, "account": anomaly.accountID ?? "–", "summary": anomaly.summary]
        }
        func figures(_ s: CreditAudit.Summary) -> [String: Any] {
            [
                "accounts": "\(s.accounts)", "grants": "\(s.grants)", "granted": "\(s.grantedCredits)",
                "charges": "\(s.charges)", "charged": "\(s.chargedCredits)", "balance": "\(s.balance)",
                "dupCompletions": "\(s.duplicateCompletions)", "dupGrants": "\(s.duplicateGrants)",
                "conflicts": "\(s.conflicts)",
            ]
        }
        context["tenants"] = report.tenants.map { tenant -> [String: Any] in
            figures(tenant.summary).merging(["tenant": tenant.tenantID]) { _, new in new }
        }
        context["accounts"] = report.accounts.prefix(Self.auditAccountLimit).map { a -> [String: Any] in
            [
                "tenant": a.tenantID, "account": a.accountID, "grants": "\(a.grants)", "granted": "\(a.grantedCredits)",
                "charges": "\(a.charges)", "charged": "\(a.chargedCredits)", "balance": "\(a.balance)",
                "conflicts": "\(a.conflicts)",
                "anomalies": report.anomalyCodes(tenantID: a.tenantID, accountID: a.accountID),
            ]
        }
        if report.accounts.count > Self.auditAccountLimit {
            context["more"] = "\(report.accounts.count - Self.auditAccountLimit)"
        }
        return render("audit", context)
    }

    // MARK: - One dead letter

    func deadLetter(_ request: Request, id: Int64?, notice: String? = nil, error: String? = nil) async throws
        -> Response
    {
        guard let id else { throw ConsolePageError(status: .badRequest, heading: "No such dead letter", text: "the id is not a number") }
        let queue = DeadLetterQueue(consumerGroup: configuration.consumerGroup)
        guard let entry = try await database.withConnection({ db in try queue.entry(id: id, on: db) }),
            entry.consumerGroup == configuration.consumerGroup
        else {
            throw ConsolePageError(
                status: .notFound, heading: "No such dead letter",
                text: "group \(configuration.consumerGroup) has no dead letter \(id)")
        }
        var context = base(request, title: "Dead letter \(id)", current: "/console/dead-letters")
        context["notice"] = notice
        context["error"] = error
        context["entry"] = Self.detail(entry)
        return render("dead-letter", context)
    }

    // MARK: - Retry

    func retryDeadLetter(_ request: Request, id: Int64?, actor: String) async throws -> Response {
        guard let id else { throw ConsolePageError(status: .badRequest, heading: "No such dead letter", text: "the id is not a number") }
        let retry = self.retry
        let by = "console: " + actor
        let result = try await database.withConnection { db in
            try TimePartitions.ensure(on: db)
            return try retry.retry(id: id, by: by, on: db)
        }
        logger.info("console: \(actor) retried dead letter \(id): \(result.status)")
        switch result.status {
        case .resolved(let outcome):
            return try await deadLetter(request, id: id, notice: "Retried: the record went through (\(outcome.rawValue)); the dead letter is resolved.")
        case .failedAgain(let note):
            return try await deadLetter(
                request, id: id, error: "Retried: it failed again (\(note.reason.rawValue): \(ConsoleText.clipped(note.message, 200))); it stays unresolved.")
        case .alreadyResolved:
            return try await deadLetter(request, id: id, notice: "Nothing to do: it was already resolved.")
        case .notFound:
            throw ConsolePageError.noDeadLetter(id)
        case .otherGroup(let group):
            throw ConsolePageError.noDeadLetter(id, otherGroup: group)
        }
    }
}
