import Foundation
import Histogram
import OncePostgres

/// Retention, in one run and side by side:
///
/// - **scale**: the batched strategy's run (same workload, same flags, same checks) into an
///   empty table and into a database holding a retention window of history (`History`);
/// - **prune**: on that database, `once prune` dropping the oldest day against the anchors'
///   sweep (`DELETE … WHERE processed_at < …` in batches of 10,000) of a copy of the same rows,
///   each while a running `once run` is offered a steady load, whose latency is compared with
///   its latency before either;
/// - **upgrade**: a database of the schema before time partitions, with processed records and
///   their effects, migrated by `once migrate` and then handed every one of those records again
///   (`UpgradeStep`).
///
/// Every `once run` here gets `--retention never`, so that the prune measured is the only one
/// (a run prunes on its own schedule, first as it starts).
struct RetentionResult: Codable, Sendable {
    var history: History
    /// The same workload into an empty table, and into the database with the history: the best
    /// run of each.
    var empty: ConsumeResult
    var withHistory: ConsumeResult
    var withHistoryOverEmpty: Double
    /// Events/s of each round, [empty, with history], and every run.
    var rounds: [[Double]]
    var runs: [ConsumeResult]
    /// Where the claims of the run with history went (they fall in the partition of the
    /// workload's `occurred_at`, clamped to the oldest), and how much history that partition holds.
    var workloadPartition: String
    var workloadPartitionHistoryRows: Int
    var prune: PruneResult
    var upgrade: UpgradeResult
    var checks: [Check]

    /// Every check of the step, each named by its part.
    var allChecks: [Check] {
        runs.flatMap { run in run.checks.map { $0.named(run.strategy) } } + checks.map { $0.named("scale") }
            + prune.checks.map { $0.named("prune") }
            + upgrade.checks.map { $0.named("upgrade") }
    }
}

/// `once prune` of one day against a sweep by `DELETE` of the same rows, and the latency of a
/// running `once run` during each.
struct PruneResult: Codable, Sendable {
    var partition: String
    /// Rows in the partition when it was dropped (its history and the scale run's claims).
    var rows: Int
    var bytes: Int64
    var arguments: [String]
    /// The prune itself, as `once prune` reports it (lock, listing, detach, drop).
    var seconds: Double
    /// `once prune` from launch to exit.
    var processSeconds: Double
    var sweepStatement: String
    var sweepRows: Int
    var sweepBatch: Int
    var sweepBatches: Int
    var sweepSeconds: Double
    var offeredRate: Int
    var records: Int
    var runArguments: [String]
    /// Before either; from the start of the prune to 2 s after its end; the same for the sweep.
    var quiet: LatencySlice
    var duringPrune: LatencySlice
    var duringSweep: LatencySlice
    /// [first second, p50 ms, p99 ms] per 5 s of the whole load.
    var windows: [[Double]]
    /// `VACUUM (ANALYZE)` and `CHECKPOINT` of the database before the load: what the scale run
    /// left for autovacuum, done before anything is measured.
    var vacuumSeconds: Double
    var pruneP99OverQuiet: Double
    var sweepP99OverQuiet: Double
    var checks: [Check]
}

/// The latencies of the records sent in a stretch of a steady load.
struct LatencySlice: Codable, Sendable {
    /// Seconds since the load began.
    var from: Double
    var to: Double
    /// The same, as wall-clock µs since the epoch (to compare with the server's log).
    var fromMicroseconds: Int64
    var toMicroseconds: Int64
    var records: Int
    var p50Milliseconds: Double
    var p90Milliseconds: Double
    var p99Milliseconds: Double
    var maxMilliseconds: Double

    init(_ samples: [PacedLoad.Sample], from: Int64, to: Int64, loadStart: Int64) {
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        for sample in samples where sample.sentMicroseconds >= from && sample.sentMicroseconds < to {
            _ = histogram.record(UInt64(sample.latencyMicroseconds))
        }
        self.from = Double(from - loadStart) / 1e6
        self.to = Double(to - loadStart) / 1e6
        fromMicroseconds = from
        toMicroseconds = to
        records = Int(histogram.totalCount)
        p50Milliseconds = Double(histogram.valueAtPercentile(50)) / 1000
        p90Milliseconds = Double(histogram.valueAtPercentile(90)) / 1000
        p99Milliseconds = Double(histogram.valueAtPercentile(99)) / 1000
        maxMilliseconds = Double(histogram.max) / 1000
    }
}

extension Check {
    func named(_ part: String) -> Check { Check(name: "\(part): \(name)", expected: expected, actual: actual) }
}

enum RetentionStep {
    /// `once run` flags of every run of this step, after the bench's own.
    static let runArguments = ["--retention", "never"]
    /// Rounds of the scale comparison (an empty table, then the history).
    static let scaleRounds = 2
    /// Records per statement of the sweep.
    static let sweepBatch = 10_000
    /// Before the prune: the load settles for 5 s (the run's first batches, its sessions' first
    /// plans), then 10 s of it are the figure without.
    static let warmUp: Duration = .seconds(5)
    static let quiet: Duration = .seconds(10)
    /// How long after the prune and after the sweep their slices of the load run on.
    static let tail: Duration = .seconds(2)

    static func run(
        historyRows: Int, upgradeRows: Int, workloadTopic: String, expectation: Expectation, latencyTopic: String,
        upgradeTopic: String, partitions: Int32, accounts: Int, rate: Int, sessions: Int, context: BenchContext,
        log: (String) -> Void
    ) async throws -> RetentionResult {
        // Scale.
        var workloadPartition = ""
        log("retention: \(historyRows) history rows over the seven day partitions before today, by INSERT … SELECT")
        let database = try await BenchDatabase.fresh(
            "once_bench_retention", serverURL: context.serverURL, once: context.once)
        let history = try await History.make(rows: historyRows, on: database, sessions: sessions)
        log(
            "retention: history made in \(String(format: "%.1f", history.seconds)) s "
                + "(\(history.bytes / 1_000_000) MB; the oldest day \(history.oldest.rows) rows, \(history.oldest.partition))"
        )
        // Rounds of the two runs, alternating, each database vacuumed and checkpointed after its
        // run (what autovacuum and the checkpointer would do then, done before the next run, as
        // the history's was before the first): the best of each is the figure.
        var runs: [ConsumeResult] = []
        var rounds: [[Double]] = []
        var checks = history.checks
        for round in 1...scaleRounds {
            let emptyDatabase = try await BenchDatabase.fresh(
                "once_bench_retention_empty", serverURL: context.serverURL, once: context.once)
            let empty = try await ConsumeStep.run(
                strategy: "retention-empty-\(round)", on: emptyDatabase, topic: workloadTopic,
                expectation: expectation, maxBatch: context.maxBatch, extraArguments: runArguments, context: context,
                log: log)
            try settle(emptyDatabase)
            let withHistory = try await ConsumeStep.run(
                strategy: "retention-history-\(round)", on: database, topic: workloadTopic, expectation: expectation,
                maxBatch: context.maxBatch, extraArguments: runArguments, context: context, log: log)
            // The next round applies the workload afresh: its effects go (they were checked);
            // its claims, another group's, stay as more history in the oldest day.
            try database.execute("TRUNCATE credit_ledger, credit_accounts, credit_conflicts, outbox")
            try settle(database)
            log(
                "retention: round \(round): \(Int(empty.eventsPerSecond)) events/s into an empty table, "
                    + "\(Int(withHistory.eventsPerSecond)) beside \(historyRows) rows of history")
            runs += [empty, withHistory]
            rounds.append([empty.eventsPerSecond, withHistory.eventsPerSecond])
            let db = try database.connect()
            defer { db.close() }
            let landed = try db.query(
                """
                SELECT p.tableoid::regclass::text, count(*)::bigint FROM processed_messages p
                WHERE p.consumer_group = $1 GROUP BY 1 ORDER BY 2 DESC
                """, [.text("bench-\(context.runID)-retention-history-\(round)")])
            checks.append(
                Check(
                    name: "partitions the claims of round \(round) went to", expected: 1, actual: Int64(landed.count)))
            workloadPartition = try landed.first?.decode(String.self, column: 0) ?? ""
        }
        checks.append(
            Check(
                name: "history rows after the runs", expected: Int64(history.rows),
                actual: try database.scalar(
                    "SELECT count(*) FROM processed_messages WHERE consumer_group = $1", [.text(History.group)])))
        let empty = runs.filter { $0.strategy.hasPrefix("retention-empty") }.max {
            $0.eventsPerSecond < $1.eventsPerSecond
        }!
        let withHistory = runs.filter { $0.strategy.hasPrefix("retention-history") }
            .max { $0.eventsPerSecond < $1.eventsPerSecond }!

        // Prune against sweep.
        let prune = try await pruneAgainstSweep(
            database: database, history: history, topic: latencyTopic, partitions: partitions, accounts: accounts,
            rate: rate, context: context, log: log)

        // Upgrade.
        let upgrade = try await UpgradeStep.run(
            rows: upgradeRows, topic: upgradeTopic, partitions: partitions, accounts: accounts, context: context,
            log: log)

        return RetentionResult(
            history: history, empty: empty, withHistory: withHistory,
            withHistoryOverEmpty: withHistory.eventsPerSecond / empty.eventsPerSecond, rounds: rounds, runs: runs,
            workloadPartition: workloadPartition,
            workloadPartitionHistoryRows: history.days.first { $0.partition == workloadPartition }?.rows ?? 0,
            prune: prune, upgrade: upgrade, checks: checks)
    }

    /// What a run left for autovacuum and the checkpointer, done before the next measurement
    /// rather than during it: `VACUUM (ANALYZE)` of every table with rows that changed since its
    /// last vacuum or analysis, then a checkpoint. Empty tables are left alone: analysed empty (a
    /// partition not yet written to, a table just truncated), they would lead the planner to
    /// plans that scan them whole, and `once`'s cached plans would keep doing so as they fill
    /// (seen: the claim's probe and the account check turned into sequential scans, p99 34 s).
    static func settle(_ database: BenchDatabase) throws {
        let db = try database.connect()
        defer { db.close() }
        let tables = try db.query(
            """
            SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables
            WHERE n_live_tup > 0 AND (n_mod_since_analyze > 0 OR n_ins_since_vacuum > 0 OR n_dead_tup > 0)
            """
        ).map { try $0.decode(String.self, column: 0) }
        for table in tables { try db.execute("VACUUM (ANALYZE) \(table)") }
        try db.execute("CHECKPOINT")
        flushOperatingSystemCaches()
    }

    /// Waits for the kernel to write back what the checkpoint (and the history before it) left
    /// dirty in the page cache: otherwise that writeback runs during the next measurement, and
    /// every WAL flush of a commit queues behind it (seen: p99 commit latency of seconds, commits
    /// queued on the notification lock behind one slow flush).
    static func flushOperatingSystemCaches() {
        sync()
    }

    /// A running `once run` under a steady load of new events (its own group and tenant, today's
    /// partition): 15 s of it alone, then `once prune` of the oldest day, then the sweep of the
    /// copy of that day's rows, each followed by 3 s of load alone.
    static func pruneAgainstSweep(
        database: BenchDatabase, history: History, topic: String, partitions: Int32, accounts: Int, rate: Int,
        context: BenchContext, log: (String) -> Void
    ) async throws -> PruneResult {
        let group = "bench-\(context.runID)-retention-latency"
        let tenant = "bench-latency"
        let victim = history.oldest
        let rows = try database.scalar("SELECT count(*) FROM \(victim.partition)")
        let bytes = try database.scalar("SELECT pg_total_relation_size($1::regclass)", [.text(victim.partition)])
        let sweepStatement = """
            DELETE FROM \(History.sweepTable) WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM \(History.sweepTable) WHERE processed_at < now() - make_interval(secs => $1)
                ORDER BY processed_at LIMIT \(sweepBatch)))
            """

        // What autovacuum would do next (the scale run's ledger, outbox and claims), done now,
        // so that it falls in no slice of the load.
        let vacuumed = ContinuousClock.now
        try settle(database)
        let vacuumSeconds = (ContinuousClock.now - vacuumed).seconds

        log("retention: \(rate) events/s to a running once run; then once prune of \(victim.partition), then the sweep")
        let live = try await LiveRun.start(
            database: database, group: group, topic: topic, partitions: partitions, context: context,
            extraArguments: runArguments, logName: "retention-latency-run", log: log)
        defer { live.kill() }
        let observer = try await CommitObserver(database: database, group: group)
        let load = PacedLoad(
            rate: rate, topic: topic, partitions: partitions, accounts: accounts, prefix: "ret", tenant: tenant)
        let stop = Locked(false)
        let offering = Task { try await load.offer(count: nil, until: stop, brokers: context.brokers) }

        struct Marks {
            var pruneStart: Int64 = 0
            var pruneEnd: Int64 = 0
            var sweepStart: Int64 = 0
            var sweepEnd: Int64 = 0
            var olderThan: Int64 = 0
            var pruneArguments: [String] = []
            var pruneOutput = ""
            var processSeconds = 0.0
            var sweepRows = 0
            var sweepBatches = 0
            var sweepSeconds = 0.0
        }
        var marks = Marks()
        do {
            try await Task.sleep(for: warmUp + quiet)

            // The cutoff: the end of the oldest day, to the second (the next day ends a day later).
            marks.olderThan = try database.scalar(
                "SELECT floor(extract(epoch FROM now()) - $1)::bigint", [.int64(victim.upper)])
            marks.pruneArguments = [
                "prune", "--database-url", database.url, "--older-than", "\(marks.olderThan)s", "--format", "json",
            ]
            let launched = ContinuousClock.now
            marks.pruneStart = wallMicroseconds()
            let pruned = try await context.once.run(marks.pruneArguments, logName: "retention-prune")
            marks.pruneEnd = wallMicroseconds()
            marks.processSeconds = (ContinuousClock.now - launched).seconds
            guard pruned.status == 0 else {
                throw BenchFailure("once prune exited with status \(pruned.status):\n\(pruned.output.suffix(4000))")
            }
            marks.pruneOutput = pruned.output
            try await Task.sleep(for: tail + .seconds(1))

            // The sweep, on a session (and a thread) of its own, one statement per batch.
            let sweeper = try await PostgresSession.connect(
                configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-sweep"),
                threadName: "once-bench-sweep")
            let swept = ContinuousClock.now
            marks.sweepStart = wallMicroseconds()
            let olderThan = marks.olderThan
            while true {
                let deleted = try await sweeper.withConnection { db in
                    try db.execute(sweepStatement, [.double(Double(olderThan))])
                }
                guard deleted > 0 else { break }
                marks.sweepRows += deleted
                marks.sweepBatches += 1
            }
            marks.sweepEnd = wallMicroseconds()
            marks.sweepSeconds = (ContinuousClock.now - swept).seconds
            await sweeper.close()
            try await Task.sleep(for: tail + .seconds(1))
        } catch {
            stop.update { $0 = true }
            _ = try? await offering.value
            _ = await observer.stop()
            throw error
        }
        stop.update { $0 = true }
        let offered = try await offering.value
        let observations = try await live.stop(afterCommitting: offered.records, observer: observer)
        let (samples, unobserved) = offered.latencies(observations)
        let start = offered.startedAt
        let tailMicroseconds = Int64(tail.seconds * 1e6)
        let quietSlice = LatencySlice(
            samples, from: start + Int64(warmUp.seconds * 1e6), to: marks.pruneStart, loadStart: start)
        let pruneSlice = LatencySlice(
            samples, from: marks.pruneStart, to: marks.pruneEnd + tailMicroseconds, loadStart: start)
        let sweepSlice = LatencySlice(
            samples, from: marks.sweepStart, to: marks.sweepEnd + tailMicroseconds, loadStart: start)
        var windows = LatencyWindows(start: start, duration: .milliseconds(Int64(offered.seconds * 1000)))
        for sample in samples {
            windows.record(sentMicroseconds: sample.sentMicroseconds, latencyMicroseconds: sample.latencyMicroseconds)
        }

        // What the prune said it did.
        let report = marks.pruneOutput.split(separator: "\n").last { $0.hasPrefix("{") }
            .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let dropped = (report?["partitions"] as? [[String: Any]] ?? []).compactMap { $0["partition"] as? String }

        var checks = try Checks.consumer(database, group: group, tenant: tenant, expectation: offered.expectation)
        checks.append(
            Check(
                name: "records whose commit was observed", expected: Int64(offered.records),
                actual: Int64(samples.count)))
        checks.append(Check(name: "records never observed committed", expected: 0, actual: Int64(unobserved)))
        checks.append(Check(name: "partitions once prune dropped", expected: 1, actual: Int64(dropped.count)))
        checks.append(
            Check(
                name: "the oldest day dropped (gone from the catalog and the registry)", expected: 1,
                actual: try database.scalar(
                    """
                    SELECT (to_regclass($1) IS NULL AND NOT EXISTS (SELECT 1 FROM once_time_partitions WHERE partition = $1))::int::bigint
                    """, [.text(victim.partition)])))
        checks.append(
            Check(
                name: "history rows left after the prune", expected: Int64(history.rows - victim.rows),
                actual: try database.scalar(
                    "SELECT count(*) FROM processed_messages WHERE consumer_group = $1", [.text(History.group)])))
        checks.append(
            Check(name: "rows the sweep deleted", expected: Int64(history.sweepRows), actual: Int64(marks.sweepRows)))
        checks.append(
            Check(
                name: "rows left in the sweep's table", expected: 0,
                actual: try database.scalar("SELECT count(*) FROM \(History.sweepTable)")))

        return PruneResult(
            partition: victim.partition, rows: Int(rows), bytes: bytes, arguments: marks.pruneArguments,
            seconds: report?["seconds"] as? Double ?? marks.processSeconds, processSeconds: marks.processSeconds,
            sweepStatement: sweepStatement, sweepRows: marks.sweepRows, sweepBatch: sweepBatch,
            sweepBatches: marks.sweepBatches, sweepSeconds: marks.sweepSeconds, offeredRate: rate,
            records: offered.records, runArguments: live.arguments, quiet: quietSlice, duringPrune: pruneSlice,
            duringSweep: sweepSlice, windows: windows.summary, vacuumSeconds: vacuumSeconds,
            pruneP99OverQuiet: pruneSlice.p99Milliseconds / quietSlice.p99Milliseconds,
            sweepP99OverQuiet: sweepSlice.p99Milliseconds / quietSlice.p99Milliseconds, checks: checks)
    }
}
