import Foundation
import OncePostgres

/// Where the bench ran.
struct Machine: Codable, Sendable {
    var cores: Int
    var memoryBytes: UInt64
    var cpu: String
    var kernel: String
    var loadAverageAtStart: String
    var loadAverageAtEnd: String
    /// Share of both cores busy (any process) during the second before the first measurement.
    var cpuBusyBeforeStart: Double
    var postgresVersion: String
    var postgres: [String: String]

    static let settings = [
        "shared_buffers", "synchronous_commit", "fsync", "max_connections", "wal_level", "max_wal_size",
        "checkpoint_timeout", "work_mem",
    ]

    static func read(serverURL: String) throws -> Machine {
        let db = try PostgresConnection(url: serverURL)
        defer { db.close() }
        var postgres: [String: String] = [:]
        for name in settings {
            postgres[name] = try db.query("SELECT current_setting($1)", [.text(name)])[0].decode(String.self, column: 0)
        }
        let version = try db.query("SELECT current_setting('server_version')")[0].decode(String.self, column: 0)
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) } ?? "unknown"
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return Machine(
            cores: ProcessInfo.processInfo.activeProcessorCount, memoryBytes: ProcessInfo.processInfo.physicalMemory,
            cpu: cpu, kernel: release, loadAverageAtStart: loadAverage(), loadAverageAtEnd: "",
            cpuBusyBeforeStart: cpuBusy(over: 1), postgresVersion: version, postgres: postgres)
    }

    /// The busy share of all cores over `seconds`, from /proc/stat.
    static func cpuBusy(over seconds: UInt32) -> Double {
        func sample() -> (busy: Double, total: Double)? {
            guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
                let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
            else { return nil }
            let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            guard fields.count >= 5 else { return nil }
            let idle = fields[3] + fields[4]  // idle + iowait
            let total = fields.prefix(8).reduce(0, +)
            return (total - idle, total)
        }
        guard let first = sample() else { return 0 }
        sleep(seconds)
        guard let second = sample(), second.total > first.total else { return 0 }
        return (second.busy - first.busy) / (second.total - first.total)
    }

    static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "")
            .split(separator: " ").prefix(3).joined(separator: " ")
    }
}

/// A target of the issue and whether this run met it.
struct Target: Codable, Sendable {
    var name: String
    var value: Double
    var unit: String
    var comparison: String
    var threshold: Double
    var met: Bool

    init(_ name: String, value: Double, unit: String, atLeast threshold: Double) {
        self.name = name
        self.value = value
        self.unit = unit
        self.comparison = "≥"
        self.threshold = threshold
        met = value >= threshold
    }

    init(_ name: String, value: Double, unit: String, atMost threshold: Double) {
        self.name = name
        self.value = value
        self.unit = unit
        self.comparison = "≤"
        self.threshold = threshold
        met = value <= threshold
    }
}

/// Everything one bench run measured: written as JSON, printed as Markdown.
struct BenchReport: Codable, Sendable {
    struct Workload: Codable, Sendable {
        var records: Int
        var firstEmissions: Int
        var producerDuplicates: Int
        var exactRedeliveries: Int
        var accounts: Int
        var partitions: Int
        var grantsShare: Double
        var seed: UInt64
        var produceSeconds: Double
    }

    struct Settings: Codable, Sendable {
        var connections: Int
        var maxBatch: Int
        var kafkaProperties: [String]
        var perRecordEvents: Int
        var ceilingConnections: Int
        var ceilingChunk: Int
        var replayBatch: Int
    }

    var date: String
    var commit: String
    var verdict: String
    var machine: Machine
    var workload: Workload
    var settings: Settings
    var jsonCodec: JSONResult?
    var read: ReadResult?
    var brokerLatency: BrokerLatencyResult?
    var batched: ConsumeResult?
    var perRecord: ConsumeResult?
    var ceiling: CeilingResult?
    /// `once run` batched over the peer's topic (the workload's completions only).
    var batchedCompletions: ConsumeResult?
    var peer: PeerResult?
    /// Why the peer step did not run, when it was asked for and could not.
    var peerSkipped: String?
    var replay: ReplayResult?
    var latency: LatencyResult?
    var retention: RetentionResult?
    var batchedOverPerRecord: Double?
    var batchedOverCeiling: Double?
    /// once batched ÷ the peer, both over the completions topic.
    var batchedOverPeer: Double?
    /// PostgreSQL's CPU per record under once batched ÷ under the ceiling.
    var postgresCPUOverCeiling: Double?
    var targets: [Target]
    var failures: [String]
    var totalSeconds: Double

    var correct: Bool { failures.isEmpty }

    mutating func evaluate() {
        targets = []
        if let batched, let perRecord {
            let ratio = batched.eventsPerSecond / perRecord.eventsPerSecond
            batchedOverPerRecord = ratio
            targets.append(Target("batched ÷ per-record", value: ratio, unit: "×", atLeast: 25))
        }
        if let batched, let ceiling {
            let ratio = batched.eventsPerSecond / ceiling.eventsPerSecond
            batchedOverCeiling = ratio
            targets.append(Target("batched ÷ ceiling", value: ratio, unit: "×", atLeast: 0.6))
            targets.append(Target("batched ÷ ceiling (issue 14)", value: ratio, unit: "×", atLeast: 0.5))
        }
        if let once = batchedCompletions, let peer {
            let ratio = once.eventsPerSecond / peer.eventsPerSecond
            batchedOverPeer = ratio
            targets.append(
                Target("batched ÷ the batched peer (completions only)", value: ratio, unit: "×", atLeast: 2.0))
        }
        // While committing: the ceiling's window is its statements alone, so once's is its
        // commits alone (not joining the group, the relay's tail, or the idle time at the end).
        if let onceCPU = (batched?.processingCPU ?? batched?.cpu)?.postgresPerRecord,
            let ceilingCPU = ceiling?.cpu?.postgresPerRecord,
            ceilingCPU > 0
        {
            let ratio = onceCPU / ceilingCPU
            postgresCPUOverCeiling = ratio
            targets.append(
                Target("PostgreSQL CPU per record while committing, batched ÷ ceiling", value: ratio, unit: "×", atMost: 1.3))
        }
        if let replay {
            targets.append(
                Target("replay of processed records", value: replay.eventsPerSecond, unit: "events/s", atLeast: 100_000)
            )
        }
        if let latency {
            targets.append(
                Target(
                    "p99 latency at \(latency.offeredRate) events/s", value: latency.p99Milliseconds, unit: "ms",
                    atMost: 50))
            targets.append(
                Target(
                    "p99 latency at \(latency.offeredRate) events/s (issue 14)", value: latency.p99Milliseconds,
                    unit: "ms", atMost: 40))
        }
        if let batched {
            targets.append(
                Target(
                    "peak RSS of once run (batched)", value: Double(batched.peakRSSBytes) / 1e6, unit: "MB", atMost: 150
                ))
        }
        if let retention {
            targets.append(
                Target(
                    "once run beside \(count(retention.history.rows)) rows of history ÷ into an empty table",
                    value: retention.withHistoryOverEmpty, unit: "×", atLeast: 0.9))
            targets.append(
                Target(
                    "once prune of a day partition (\(count(retention.prune.rows)) rows)",
                    value: retention.prune.seconds,
                    unit: "s", atMost: 1))
            targets.append(
                Target(
                    "p99 latency during once prune ÷ without", value: retention.prune.pruneP99OverQuiet, unit: "×",
                    atMost: 1.2))
        }
        failures = []
        func collect(_ strategy: String, _ checks: [Check]?) {
            for check in checks?.failures ?? [] {
                failures.append("\(strategy): \(check.name): expected \(check.expected), found \(check.actual)")
            }
        }
        collect("batched", batched?.checks)
        collect("per-record", perRecord?.checks)
        collect("ceiling", ceiling?.checks)
        collect("batched (completions only)", batchedCompletions?.checks)
        collect("peer", peer?.checks)
        collect("replay", replay?.checks)
        collect("latency", latency?.checks)
        collect("retention", retention?.allChecks)
        verdict = failures.isEmpty ? "correct" : "FAILED"
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    /// The tables printed at the end of a run (and pasted into docs/benchmarks.md).
    func markdown() -> String {
        var lines: [String] = []
        lines.append("## once bench, \(date)")
        lines.append("")
        lines.append(
            "Workload: \(count(workload.records)) records (\(count(workload.firstEmissions)) first emissions, "
                + "\(count(workload.producerDuplicates)) producer duplicates, \(count(workload.exactRedeliveries)) exact redeliveries; "
                + "\(percent(workload.grantsShare)) of first emissions are grants) over \(workload.partitions) partitions and "
                + "\(count(workload.accounts)) accounts. `once run --connections \(settings.connections) --max-batch \(settings.maxBatch)`"
                + (settings.kafkaProperties.isEmpty
                    ? "" : " with " + settings.kafkaProperties.map { "`\($0)`" }.joined(separator: ", "))
                + ". Commit \(commit).")
        lines.append("")
        lines.append("| measure | result | how |")
        lines.append("| --- | ---: | --- |")
        if let batched {
            lines.append(
                "| batched (`--max-batch \(batched.maxBatch)`) | \(count(batched.eventsPerSecond)) events/s | "
                    + "\(count(batched.records)) records in \(seconds(batched.seconds)), ~\(count(Int(batched.batches))) transactions |"
            )
        }
        if let perRecord {
            lines.append(
                "| per-record (`--max-batch 1`) | \(count(perRecord.eventsPerSecond)) events/s | "
                    + "first \(count(perRecord.records)) records of the same workload in \(seconds(perRecord.seconds)) |"
            )
        }
        if let once = batchedCompletions {
            lines.append(
                "| batched, completions only (the peer's topic) | \(count(once.eventsPerSecond)) events/s | "
                    + "the workload's \(count(once.records)) completion records in \(seconds(once.seconds)), "
                    + "~\(count(Int(once.batches))) transactions |")
        }
        if let peer {
            lines.append(
                "| the batched peer (Python, \(peer.processes) processes) | \(count(peer.eventsPerSecond)) events/s | "
                    + "`\(URL(fileURLWithPath: peer.script).lastPathComponent)` over the same \(count(peer.records)) records in "
                    + "\(seconds(peer.seconds)), ~\(count(Int(peer.batches))) transactions; once batched "
                    + (batchedOverPeer.map { String(format: "%.2f×", $0) } ?? "?") + " |")
        }
        if let peerSkipped {
            lines.append("| the batched peer | skipped | \(peerSkipped) |")
        }
        if let ceiling {
            lines.append(
                "| ceiling (database alone) | \(count(ceiling.eventsPerSecond)) events/s | "
                    + "`INSERT … SELECT generate_series`, \(ceiling.connections) sessions, \(count(ceiling.chunk)) records per transaction, "
                    + "\(seconds(ceiling.seconds)) |")
        }
        if let replay {
            lines.append(
                "| replay of processed records | \(count(replay.eventsPerSecond)) events/s | "
                    + "the engine of `once replay`, \(count(replay.records)) records, \(replay.partitions) partitions one after "
                    + "another, batches of \(count(replay.batchSize)), \(seconds(replay.seconds)) |")
            lines.append(
                "| replay, `once replay` processes | \(count(replay.commandEventsPerSecond)) events/s | "
                    + "the same ranges, launch to exit of \(replay.partitions) processes, \(seconds(replay.commandSeconds)) |"
            )
        }
        if let json = jsonCodec {
            lines.append(
                "| JSON parse, OnceJSON / Foundation | \(String(format: "%.1f", json.parseRatio))× | "
                    + "\(count(json.parseOnce)) / \(count(json.parseFoundation)) values/s over the workload's \(count(Double(json.values))) record values, best of \(json.rounds) alternating rounds |")
            lines.append(
                "| JSON write, OnceJSON / Foundation | \(String(format: "%.1f", json.writeRatio))× | "
                    + "\(count(json.writeOnce)) / \(count(json.writeFoundation)) values/s (sorted keys), best of \(json.rounds) alternating rounds |")
        }
        if let read {
            lines.append(
                "| broker to a bare consumer | \(count(read.recordsPerSecond)) records/s | "
                    + "every partition of the workload read, nothing done, \(seconds(read.seconds)) |")
        }
        if let latency {
            lines.append(
                "| latency p50 / p99 / max | \(ms(latency.p50Milliseconds)) / \(ms(latency.p99Milliseconds)) / "
                    + "\(ms(latency.maxMilliseconds)) ms | \(count(latency.records)) events offered at \(count(latency.offeredRate))/s "
                    + "for \(seconds(latency.offeredSeconds)); p90 \(ms(latency.p90Milliseconds)), p99.9 \(ms(latency.p999Milliseconds)) ms; "
                    + "p99 per 5 s: \(Self.windowP99s(latency.windows)) |"
            )
        }
        if let brokerLatency {
            lines.append(
                "| broker latency p50 / p99 / max | \(ms(brokerLatency.p50Milliseconds)) / \(ms(brokerLatency.p99Milliseconds)) / "
                    + "\(ms(brokerLatency.maxMilliseconds)) ms | the same paced producer to a bare consumer "
                    + "(\(count(brokerLatency.records)) records at \(count(brokerLatency.offeredRate))/s for "
                    + "\(seconds(brokerLatency.offeredSeconds))): the broker's share; p99 per 5 s: \(Self.windowP99s(brokerLatency.windows)) |"
            )
        }
        if let batched {
            lines.append(
                "| peak RSS of `once run` (batched) | \(mb(batched.peakRSSBytes)) MB | VmHWM, \(count(batched.memorySamples)) samples |"
            )
        }
        if let latency {
            lines.append("| peak RSS of `once run` (latency) | \(mb(latency.peakRSSBytes)) MB | VmHWM |")
        }
        if let once = batchedCompletions {
            lines.append(
                "| peak RSS of `once run` (completions only) | \(mb(once.peakRSSBytes)) MB | VmHWM, \(count(once.memorySamples)) samples |")
        }
        if let peer {
            lines.append(
                "| peak RSS of the peer | \(mb(peer.largestPeakRSSBytes)) MB | VmHWM of the largest of its \(peer.processes) "
                    + "processes (\(peer.peakRSSBytes.map { mb($0) }.joined(separator: " / ")) MB) |")
        }
        if let retention { lines += Self.retentionRows(retention) }
        lines += cpuRows()
        lines.append("")
        lines.append("| target | this run | verdict |")
        lines.append("| --- | ---: | --- |")
        for target in targets {
            let value =
                target.unit == "×" ? String(format: "%.2f×", target.value) : "\(decimal(target.value)) \(target.unit)"
            let threshold =
                target.unit == "×" ? decimal(target.threshold) + "×" : "\(count(target.threshold)) \(target.unit)"
            lines.append(
                "| \(target.name) \(target.comparison) \(threshold) | \(value) | \(target.met ? "met" : "**not met**") |"
            )
        }
        lines.append("")
        lines.append("| correctness | checks |")
        lines.append("| --- | --- |")
        for (strategy, checks) in [
            ("batched", batched?.checks), ("per-record", perRecord?.checks), ("ceiling", ceiling?.checks),
            ("batched (completions only)", batchedCompletions?.checks), ("peer", peer?.checks),
            ("replay", replay?.checks), ("latency", latency?.checks), ("retention", retention?.allChecks),
        ] {
            guard let checks else { continue }
            let failed = checks.failures.count
            lines.append(
                "| \(strategy) | \(checks.count - failed)/\(checks.count) passed\(failed > 0 ? " — **FAILED**" : "") |")
        }
        lines.append("")
        let pg = Machine.settings.compactMap { name in machine.postgres[name].map { "\(name)=\($0)" } }.joined(
            separator: ", ")
        lines.append(
            "Machine: \(machine.cores) cores (\(machine.cpu)), \(decimal(Double(machine.memoryBytes) / 1_073_741_824)) GiB, "
                + "Linux \(machine.kernel); PostgreSQL \(machine.postgresVersion) (\(pg)); CPU \(percent(machine.cpuBusyBeforeStart)) "
                + "busy in the second before the first measurement; load average \(machine.loadAverageAtStart) at the start "
                + "(the build's included), \(machine.loadAverageAtEnd) at the end. Bench time \(seconds(totalSeconds))."
        )
        lines.append("")
        if failures.isEmpty {
            lines.append(
                "Result: correct (every check passed); \(targets.filter(\.met).count) of \(targets.count) targets met.")
        } else {
            lines.append("Result: **FAILED**")
            for failure in failures { lines.append("- \(failure)") }
        }
        return lines.joined(separator: "\n")
    }
}

private func count(_ value: Double) -> String { count(Int(value.rounded())) }

private func count(_ value: Int) -> String {
    let digits = String(abs(value))
    var out = ""
    for (index, character) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { out += "," }
        out.append(character)
    }
    return (value < 0 ? "-" : "") + out
}

private func decimal(_ value: Double) -> String {
    value >= 100 ? count(value) : String(format: value >= 10 ? "%.1f" : "%.2f", value)
}

private func seconds(_ value: Double) -> String { String(format: "%.1f s", value) }

extension BenchReport {
    /// The retention step's rows of the measures table.
    static func retentionRows(_ r: RetentionResult) -> [String] {
        let history = r.history
        let prune = r.prune
        let upgrade = r.upgrade
        func slice(_ s: LatencySlice) -> String {
            "\(ms(s.p50Milliseconds)) / \(ms(s.p99Milliseconds)) / \(ms(s.maxMilliseconds)) ms"
        }
        return [
            "| retention: `once run` beside \(count(history.rows)) rows of history | \(count(r.withHistory.eventsPerSecond)) events/s | "
                + "\(String(format: "%.2f", r.withHistoryOverEmpty))× the \(count(r.empty.eventsPerSecond)) events/s of the same "
                + "run into an empty table (the best of \(r.rounds.count) alternating rounds: "
                + r.rounds.map { "\(count($0[0])) / \(count($0[1]))" }.joined(separator: ", ")
                + "); the history (group `\(history.group)`, \(mb(Int(history.bytes))) MB) over 7 day "
                + "partitions, its claims in `\(r.workloadPartition)` beside \(count(r.workloadPartitionHistoryRows)) of them; "
                + "made in \(seconds(history.seconds)) |",
            "| retention: `once prune` of one day | \(String(format: "%.2f", prune.seconds)) s | `\(prune.partition)`, "
                + "\(count(prune.rows)) rows, \(mb(Int(prune.bytes))) MB, detached concurrently and dropped; "
                + "the process \(String(format: "%.2f", prune.processSeconds)) s launch to exit |",
            "| retention: `DELETE` sweep of the same rows | \(seconds(prune.sweepSeconds)) | \(count(prune.sweepRows)) rows of "
                + "a plain copy (`\(history.sweepTable)`, index on `processed_at`) in \(count(prune.sweepBatches)) statements "
                + "of \(count(prune.sweepBatch)) |",
            "| retention: latency p50 / p99 / max without | \(slice(prune.quiet)) | \(count(prune.offeredRate)) events/s "
                + "to a running `once run` on the same database, \(count(prune.quiet.records)) records sent before either |",
            "| retention: latency during `once prune` | \(slice(prune.duringPrune)) | p99 "
                + "\(String(format: "%.2f", prune.pruneP99OverQuiet))× without; \(count(prune.duringPrune.records)) records "
                + "sent from its start to 2 s after its end |",
            "| retention: latency during the `DELETE` sweep | \(slice(prune.duringSweep)) | p99 "
                + "\(String(format: "%.2f", prune.sweepP99OverQuiet))× without; \(count(prune.duringSweep.records)) records "
                + "sent from its start to 2 s after its end |",
            "| upgrade: `once migrate` to time partitions | \(String(format: "%.2f", upgrade.migrateSeconds)) s | "
                + "\(count(upgrade.rows)) processed rows of the older schema (\(String(format: "%.2f", upgrade.migrateSecondsPerMillionRows)) s "
                + "per million, launch to exit); then all \(count(upgrade.rows)) records again: "
                + "\(count(upgrade.redeliveriesPerSecond)) records/s, "
                + (upgrade.checks.allPassed ? "nothing applied twice |" : "**checks failed** |"),
        ]
    }

    /// The table of CPU per record by process, when any strategy counted it.
    func cpuRows() -> [String] {
        let strategies: [(String, CPUUsage?)] = [
            ("batched, while committing", batched?.processingCPU), ("batched, launch to exit", batched?.cpu),
            ("per-record, while committing", perRecord?.processingCPU), ("per-record, launch to exit", perRecord?.cpu),
            ("batched, completions only, while committing", batchedCompletions?.processingCPU),
            ("the batched peer, while committing", peer?.processingCPU),
            ("the batched peer, launch to exit", peer?.cpu), ("ceiling", ceiling?.cpu),
        ]
        let counted = strategies.compactMap { name, cpu in cpu.map { (name, $0) } }
        guard !counted.isEmpty else { return [] }
        func micro(_ value: Double?) -> String { value.map { String(format: "%.1f", $0) } ?? "–" }
        var lines = [
            "",
            "| CPU µs per record | client | PostgreSQL | broker | total | client is |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for (name, cpu) in counted {
            lines.append(
                "| \(name) | \(micro(cpu.clientPerRecord)) | \(micro(cpu.postgresPerRecord)) | \(micro(cpu.brokerPerRecord)) | "
                    + "\(micro(cpu.totalPerRecord)) | \(cpu.client), \(count(cpu.records)) records over \(seconds(cpu.seconds)) |")
        }
        lines.append("")
        lines.append(
            "CPU from `/proc/PID/stat` (utime + stime, and cutime + cstime for reaped children): the client's processes, "
                + "every process of the PostgreSQL cluster (the postmaster, its children, and the backends that exited), the "
                + "broker. *While committing* is from the first poll that saw a commit to the one that saw the last, per "
                + "record committed in between (the ceiling's window is its statements alone, so the ratio below compares "
                + "these); *launch to exit* adds joining the group, the relay's tail and the idle time that ends the run. "
                + "The cluster and the broker are shared with whatever else ran meanwhile."
                + (postgresCPUOverCeiling.map {
                    String(format: " PostgreSQL per record, batched ÷ ceiling: %.2f×.", $0)
                } ?? ""))
        return lines
    }

    /// "31, 45, 80, 120 ms": the p99 of each window, in order.
    static func windowP99s(_ windows: [[Double]]) -> String {
        windows.map { ms($0[2]) }.joined(separator: ", ") + " ms"
    }
}
private func ms(_ value: Double) -> String { String(format: value >= 100 ? "%.0f" : "%.1f", value) }
private func mb(_ bytes: Int) -> String { String(format: "%.1f", Double(bytes) / 1e6) }
private func percent(_ value: Double) -> String { String(format: "%.0f%%", value * 100) }
