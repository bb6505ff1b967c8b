import Logging
import Metrics
import OnceBackoff
import OnceKafka
import OncePostgres
import OnceTracing
import ServiceLifecycle

/// Publishes outbox rows to Kafka in id order, and records how far it got without rewriting
/// them: every row below the floor it records in `outbox_relay` is published (the view
/// `outbox_publication` answers per row). Delivery is at least once: a row published above the
/// recorded floor (a crash before the floor moved past it) is published again, with the same
/// payload and event id. Rows are written once, by their transaction; the relay only reads
/// them, but for the rare mark that keeps a merged gap from re-reading what it published
/// (`OutboxPosition.advance`).
///
/// One relay is active across all processes: the one holding a session-level advisory lock;
/// the others stand by and take over when its session ends. The active relay wakes on
/// LISTEN/NOTIFY and sweeps every second as a fallback; every `backlogInterval` it counts the
/// rows still to publish (`once_outbox_backlog_rows`; 0 while standing by). A row carrying a
/// trace is published with a `publish` span's context when spans are recorded
/// (`RecordTracing`). A `Service`: `run` returns on graceful
/// shutdown or cancellation, after the round in flight; failures (database, broker) are logged
/// and retried, except those retrying cannot mend (`PostgresError.remedy`), which it throws.
public final class OutboxRelay: Service, Sendable {
    /// The session-level advisory lock the active relay holds.
    public static let advisoryLockKey: Int64 = 0x6f6e_6365_6f75_7462
    private let databaseURL: String
    private let producerConfiguration: KafkaProducerConfiguration
    private let logger: Logger
    /// Rows published per round trip.
    public var batchSize: Int { 500 }
    /// Active, standing by, or failing: for `/readyz`.
    public let status = RelayStatus()
    private let published = Counter(label: "once_outbox_published_total")
    private let publishFailures = Counter(label: "once_outbox_publish_failures_total")
    private let publishDuration = Metrics.Timer(label: "once_outbox_publish_seconds")
    private let backlog = Gauge(label: "once_outbox_backlog_rows")
    private let tracing: RecordTracing
    /// How often the active relay counts the unpublished rows.
    static let backlogInterval: Duration = .seconds(5)

    public init(
        databaseURL: String, brokers: String, kafkaProperties: [String: String] = [:],
        tracing: RecordTracing = .propagateOnly, logger: Logger = Logger(label: "once.relay")
    ) {
        self.databaseURL = databaseURL
        self.tracing = tracing
        var producer = KafkaProducerConfiguration(bootstrapServers: brokers)
        producer.clientID = "once-relay"
        // Dead letters carry original values of up to 4 MiB; statistics every 5 s feed the
        // librdkafka gauges. A passed property wins.
        producer.properties = ["message.max.bytes": "5000000", "statistics.interval.ms": "5000"]
            .merging(kafkaProperties) { _, passed in passed }
        let statistics = KafkaStatisticsMetrics(client: "producer")
        producer.statisticsHandler = { statistics.record($0) }
        producerConfiguration = producer
        self.logger = logger
    }

    public func run() async throws {
        let session = try await PostgresSession.connect(
            configuration: PostgresConfiguration(
                url: databaseURL, applicationName: "once-relay",
                // The relay reads a short run of rows in id order from its floor: an ordered scan
                // of the primary key that stops at the limit. Statistics lag behind a fast-growing
                // outbox and would make the planner sort a bitmap of everything above the floor
                // (with parallel workers). Plans priced as disabled must not be JIT-compiled.
                settings: [
                    "enable_bitmapscan": "off", "enable_seqscan": "off", "max_parallel_workers_per_gather": "0",
                    "jit": "off",
                ]),
            logger: logger, threadName: "once-relay-db")
        let producer = try KafkaProducer(configuration: producerConfiguration, logger: logger)
        defer { logger.info("relay stopped") }
        var lockedBackend: Int32?
        var position = OutboxPosition(floor: 1)
        var attempt = 0
        var backlogCounted: ContinuousClock.Instant?
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                // Hold the lock on this very session; a reconnect means a new session without it.
                let backend = try await session.withConnection { db in db.backendPID }
                if lockedBackend == nil || lockedBackend != backend {
                    lockedBackend = nil
                    let acquired = try await session.withConnection { db in
                        let got = try db.query("SELECT pg_try_advisory_lock($1)", [.int64(Self.advisoryLockKey)])[0].decode(Bool.self, column: 0)
                        if got { try db.listen(channel: OutboxWriter.channel) }
                        return got ? db.backendPID : nil
                    }
                    guard let acquired else {
                        if status.role != .standby {
                            status.became(.standby)
                            backlog.record(0)
                        }
                        // Standby: another relay is active.
                        do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) } } catch { break }
                        continue
                    }
                    lockedBackend = acquired
                    status.became(.active)
                    backlogCounted = nil
                    position = try await session.withConnection { db in try Self.recordedFloor(on: db) }
                    logger.info("relay active", metadata: ["floor": "\(position.floor)"])
                }
                // Counted before the round, so that a relay that cannot publish still reports.
                if backlogCounted.map({ ContinuousClock.now - $0 >= Self.backlogInterval }) ?? true {
                    backlog.record(try await session.withConnection { db in try Self.countUnpublished(on: db) })
                    backlogCounted = .now
                }
                let count = try await publishOnce(session: session, producer: producer, position: &position)
                attempt = 0
                status.succeeded()
                if count == 0 {
                    _ = try await session.withConnection { db in try db.waitForNotifications(timeout: .seconds(1)) }
                }
            } catch let failure as PostgresError where failure.remedy != nil {
                // A missing privilege or an unmigrated schema: retrying cannot mend it.
                status.failed(failure)
                logger.critical("relay cannot publish, stopping: \(failure)", metadata: .failure(failure))
                await producer.close()
                await session.close()
                throw failure
            } catch {
                attempt += 1
                status.failed(error)
                logger.warning("relay failed (attempt \(attempt)): \(error)", metadata: .failure(error))
                let failures = attempt
                do { try await cancelWhenGracefulShutdown { try await Backoff().sleep(attempt: failures) } } catch { break }
            }
        }
        await producer.close()
        await session.close()
    }

    /// Publishes up to `batchSize` rows, the smallest unpublished ids visible in the position's
    /// read ranges (rows that committed late below the head first, by their ids); returns how
    /// many the broker acknowledged.
    func publishOnce(session: PostgresSession, producer: KafkaProducer, position: inout OutboxPosition) async throws -> Int {
        let floorBefore = position.floor
        let read = try await Self.read(position.readRanges, limit: batchSize, session: session)
        let rows = read.rows
        let sendStarted = ContinuousClock.now
        let results: [Result<KafkaDeliveryReport, KafkaError>]
        if rows.isEmpty {
            results = []
        } else if tracing.recordsSpans {
            let traced = rows.map { tracing.publishing($0.record.headers, topic: $0.record.topic) }
            results = try await producer.send(zip(rows, traced).map { row, trace in
                var record = row.record
                record.headers = trace.headers
                return record
            })
            for (trace, result) in zip(traced, results) {
                if case .failure(let error) = result { trace.span?.recordError(error) }
                trace.span?.end()
            }
        } else {
            results = try await producer.send(rows.map(\.record))
        }
        if !rows.isEmpty { publishDuration.record(duration: ContinuousClock.now - sendStarted) }
        // Mark the acknowledged prefix: a later row of the same key must not overtake a failed one.
        let acknowledged = zip(rows, results).prefix { (try? $0.1.get()) != nil }.map(\.0.id)
        if !acknowledged.isEmpty { published.increment(by: acknowledged.count) }
        if acknowledged.count < rows.count, case .failure(let error) = results[acknowledged.count] {
            publishFailures.increment()
            logger.warning("publishing outbox row \(rows[acknowledged.count].id) failed: \(error)")
        }
        // What this round has settled: every id below `examined` in the read ranges (all of them
        // when the read came back short, or empty, and every row went out).
        let examined: Int64 =
            acknowledged.count < rows.count ? rows[acknowledged.count].id
            : rows.count < batchSize ? .max : rows[rows.count - 1].id + 1
        let merged = position.advance(published: acknowledged, examinedBelow: examined, horizon: read.horizon)
        let floor = position.floor
        if !merged.isEmpty || floor > floorBefore {
            try await session.withConnection { db in
                if !merged.isEmpty { try Self.mark(merged, on: db) }
                if floor > floorBefore { try Self.record(floor: floor, on: db) }
            }
        }
        guard !acknowledged.isEmpty || rows.isEmpty else { throw RelayStalled(rowID: rows[0].id) }
        return acknowledged.count
    }

    /// Up to `limit` unpublished rows with ids in `ranges`, the smallest first, and what the
    /// read's snapshot saw of the transactions around it.
    private static func read(_ ranges: [Range<Int64>], limit: Int, session: PostgresSession) async throws -> OutboxRead {
        try await session.withConnection { db in
            try OutboxRead(
                db.query(
                    prepared: "once_relay_read",
                    """
                    WITH horizon AS (
                        SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS oldest_running,
                               pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid
                    )
                    SELECT h.oldest_running, h.next_xid, o.id, o.topic, o.message_key, o.payload, o.headers::text
                    FROM horizon h LEFT JOIN LATERAL (
                        SELECT x.* FROM unnest($1::bigint[], $2::bigint[]) AS r(low, high)
                        CROSS JOIN LATERAL (
                            SELECT id, topic, message_key, payload, headers FROM outbox
                            WHERE id >= r.low AND id < r.high AND published_at IS NULL ORDER BY id LIMIT $3
                        ) x
                        ORDER BY x.id LIMIT $3
                    ) o ON true
                    ORDER BY o.id
                    """,
                    [.int64Array(ranges.map(\.lowerBound)), .int64Array(ranges.map(\.upperBound)), .int(limit)]))
        }
    }

    /// Marks the rows of `ranges` published: ids between two gaps that merged are published
    /// (or never committed), and the read through the merged gap must not publish them again.
    static func mark(_ ranges: [Range<Int64>], on db: PostgresConnection) throws {
        try db.execute(
            """
            UPDATE outbox o SET published_at = now()
            FROM unnest($1::bigint[], $2::bigint[]) AS r(low, high)
            WHERE o.id >= r.low AND o.id < r.high AND o.published_at IS NULL
            """,
            [.int64Array(ranges.map(\.lowerBound)), .int64Array(ranges.map(\.upperBound))])
    }

    /// Keeps the floor for the next relay (and for `once status`); it never moves back.
    private static func record(floor: Int64, on db: PostgresConnection) throws {
        try db.execute("UPDATE outbox_relay SET floor = $1, updated_at = now() WHERE floor < $1", [.int64(floor)])
    }

    /// The floor a relay starts from: the last one recorded.
    static func recordedFloor(on db: PostgresConnection) throws -> OutboxPosition {
        OutboxPosition(floor: try db.query("SELECT coalesce(max(floor), 1) FROM outbox_relay")[0].decode(Int64.self, column: 0))
    }

    /// How many outbox rows wait to be published.
    static func countUnpublished(on db: PostgresConnection) throws -> Int64 {
        try db.query(prepared: "once_relay_backlog", "SELECT count(*) FROM \(unpublishedRows)")[0].decode(Int64.self, column: 0)
    }

    /// Outbox rows not known to be published, for queries outside the relay: every row below
    /// the recorded floor is published, and rows above it are counted unless marked (a relay
    /// that publishes above its floor counts them until the floor passes them, within seconds).
    public static let unpublishedRows =
        "outbox WHERE id >= (SELECT coalesce(max(floor), 1) FROM outbox_relay) AND published_at IS NULL"
}

/// Where the relay reads. Ids are taken in insert order but committed in any order, so a row
/// can become visible below rows already published; it must still go out before any later row
/// of its key, which can only commit after it. So every read takes the smallest unpublished ids
/// visible anywhere the relay has not settled:
/// - `head`: every id from here on is still to be read;
/// - `gaps`: ranges below the head that no read has found published; each may still receive
///   rows until every transaction that was running when it was seen has ended (that read's
///   `xmax` is at most a later read's `xmin`: an outbox row's transaction has its id before the
///   row takes its id, which `OutboxWriter` makes sure of); the first read after that which
///   looks through it settles it, publishing what it finds;
/// - `floor`: every row below it is published (or was rolled back, or never existed).
/// Below the head, the ids outside the gaps are published (or can no longer appear): reads skip
/// them by skipping the ranges between the gaps. When two gaps merge, the ids between them are
/// inside a range again, so `advance` hands them back for the relay to mark published.
/// A pure value; the relay keeps it and records the floor in `outbox_relay`, where a restarted
/// relay (which starts with its head there), `once status` and `once run --until-idle` find it.
struct OutboxPosition: Sendable, Hashable {
    private(set) var head: Int64
    private(set) var gaps: [Gap] = []
    /// Gaps kept apart at most; past that the closest neighbours merge (a wider range to read
    /// through, never a row skipped).
    static let maxGaps = 64

    struct Gap: Sendable, Hashable {
        var range: Range<Int64>
        /// The gap is settled by a read whose oldest running transaction is at least this.
        var settledFrom: Int64
    }

    init(floor: Int64) {
        head = floor
    }

    var floor: Int64 { gaps.first?.range.lowerBound ?? head }

    /// The id ranges the next read looks in, in order: the gaps, then everything from the head.
    var readRanges: [Range<Int64>] { gaps.map(\.range) + [head..<Int64.max] }

    /// Takes in one read: `published` are the ids it published (in order), and every id below
    /// `bound` in the read ranges was looked at by a read with `horizon`. Returns the id ranges
    /// that merged gaps took in (published or empty ids), which the relay must mark published.
    @discardableResult
    mutating func advance(published: [Int64], examinedBelow bound: Int64, horizon: OutboxHorizon) -> [Range<Int64>] {
        var merged: [Range<Int64>] = []
        var next: [Gap] = []
        func keep(_ range: Range<Int64>, settledFrom: Int64) {
            guard !range.isEmpty else { return }
            next.append(Gap(range: range, settledFrom: settledFrom))
        }
        // The ids of `range` below `bound` that this read did not publish.
        func unseen(in range: Range<Int64>) -> [Range<Int64>] {
            var pieces: [Range<Int64>] = []
            var low = range.lowerBound
            for id in published where range.contains(id) {
                if id > low { pieces.append(low..<id) }
                low = id + 1
            }
            if low < range.upperBound { pieces.append(low..<range.upperBound) }
            return pieces
        }
        for gap in gaps {
            let looked = gap.range.lowerBound..<max(gap.range.lowerBound, min(gap.range.upperBound, bound))
            if horizon.oldestRunningXID < gap.settledFrom {
                for piece in unseen(in: looked) { keep(piece, settledFrom: gap.settledFrom) }
            }
            keep(looked.upperBound..<gap.range.upperBound, settledFrom: gap.settledFrom)
        }
        if bound > head {
            let reached = bound == .max ? (published.last.map { max(head, $0 + 1) } ?? head) : bound
            for piece in unseen(in: head..<reached) { keep(piece, settledFrom: horizon.nextXID) }
            head = reached
        }
        gaps = next.sorted { $0.range.lowerBound < $1.range.lowerBound }
        while gaps.count > Self.maxGaps {
            let closest = gaps.indices.dropLast().min {
                gaps[$0 + 1].range.lowerBound - gaps[$0].range.upperBound
                    < gaps[$1 + 1].range.lowerBound - gaps[$1].range.upperBound
            }!
            let between = gaps[closest].range.upperBound..<gaps[closest + 1].range.lowerBound
            if !between.isEmpty { merged.append(between) }
            let joined = Gap(
                range: gaps[closest].range.lowerBound..<gaps[closest + 1].range.upperBound,
                settledFrom: max(gaps[closest].settledFrom, gaps[closest + 1].settledFrom))
            gaps.replaceSubrange(closest...(closest + 1), with: [joined])
        }
        return merged.sorted { $0.lowerBound < $1.lowerBound }
    }
}

/// What one relay read saw of the transactions around it.
struct OutboxHorizon: Sendable, Hashable {
    /// The oldest transaction still running (the snapshot's `xmin`).
    var oldestRunningXID: Int64
    /// The first transaction id not yet assigned (the snapshot's `xmax`).
    var nextXID: Int64
}

/// The rows of one relay read, and its horizon.
struct OutboxRead {
    var horizon: OutboxHorizon
    var rows: [OutboxRow]

    init(_ result: PostgresResult) throws {
        let first = result[0]
        horizon = OutboxHorizon(
            oldestRunningXID: try first.decode(Int64.self, column: 0), nextXID: try first.decode(Int64.self, column: 1))
        rows = try result.compactMap { row in
            guard let id = try row.decode(Int64?.self, column: 2) else { return nil }  // no row: the horizon alone
            return OutboxRow(
                id: id,
                record: KafkaOutgoingRecord(
                    topic: try row.decode(String.self, column: 3),
                    key: try row.decode(String?.self, column: 4).map { Array($0.utf8) },
                    value: try row.decode([UInt8]?.self, column: 5),
                    headers: StoredHeaders.headers(fromJSON: try row.decode(String.self, column: 6))))
        }
    }
}

struct OutboxRow: Sendable {
    var id: Int64
    var record: KafkaOutgoingRecord
}

struct RelayStalled: Error, CustomStringConvertible {
    var rowID: Int64
    var description: String { "outbox row \(rowID) could not be published" }
}

extension OutboxRelay: CustomStringConvertible {
    /// What the service group's logs name it by: no URL, no property (they may hold secrets).
    public var description: String { "OutboxRelay" }
}
