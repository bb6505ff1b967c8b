import Logging
import OnceKafka
import OncePostgres
import Synchronization

/// Publishes outbox rows to Kafka in id order, marking each published after the broker
/// acknowledged it. Delivery is at least once: a row whose publication is not recorded (a crash
/// between acknowledgement and update) is published again, with the same payload and event id.
///
/// One relay is active across all processes: the one holding a session-level advisory lock;
/// the others stand by and take over when its session ends. The active relay wakes on
/// LISTEN/NOTIFY and sweeps every second as a fallback. `run` returns after `stop()`;
/// failures (database, broker) are logged and retried.
public final class OutboxRelay: Sendable {
    static let advisoryLockKey: Int64 = 0x6f6e_6365_6f75_7462
    private let databaseURL: String
    private let producerConfiguration: KafkaProducerConfiguration
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)
    /// Rows published per round trip.
    public var batchSize: Int { 500 }

    public init(databaseURL: String, brokers: String, kafkaProperties: [String: String] = [:], logger: Logger = Logger(label: "once.relay")) {
        self.databaseURL = databaseURL
        var producer = KafkaProducerConfiguration(bootstrapServers: brokers)
        producer.clientID = "once-relay"
        // Dead letters carry original values of up to 4 MiB.
        producer.properties = ["message.max.bytes": "5000000"].merging(kafkaProperties) { _, passed in passed }
        producerConfiguration = producer
        self.logger = logger
    }

    public func stop() { stopping.store(true, ordering: .relaxed) }

    private var isStopping: Bool { stopping.load(ordering: .relaxed) }

    public func run() async throws {
        let session = try await PostgresClient.connect(
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
        while !isStopping {
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
                        try? await Task.sleep(for: .seconds(1))  // standby: another relay is active
                        continue
                    }
                    lockedBackend = acquired
                    position = try await session.withConnection { db in try Self.recordedFloor(on: db) }
                    logger.info("relay active", metadata: ["floor": "\(position.floor)"])
                }
                let published = try await publishOnce(session: session, producer: producer, position: &position)
                attempt = 0
                if published == 0 {
                    _ = try await session.withConnection { db in try db.waitForNotifications(timeout: .seconds(1)) }
                }
            } catch {
                attempt += 1
                logger.warning("relay failed (attempt \(attempt)): \(error)")
                try? await Task.sleep(for: Backoff().delay(attempt: attempt))
            }
        }
        await producer.close()
        await session.close()
    }

    /// Publishes up to `batchSize` rows from the head on, and rows that committed late below it
    /// when the floor can move; returns how many were marked published.
    func publishOnce(session: PostgresClient, producer: KafkaProducer, position: inout OutboxPosition) async throws -> Int {
        let read = try await Self.read(from: position.head, below: .max, limit: batchSize, session: session)
        var rows = read.rows
        let floorBefore = position.floor
        if let recheck = position.observe(read.horizon) {
            // Every transaction that could still add a row below the head has ended: look once.
            let late = try await Self.read(
                from: recheck.lowerBound, below: recheck.upperBound, limit: batchSize, session: session)
            position.settle(below: recheck.upperBound, firstUnpublished: late.rows.first?.id)
            rows = late.rows + rows
        }
        let floor = position.floor > floorBefore ? position.floor : nil
        guard !rows.isEmpty else {
            if let floor { try await session.withConnection { db in try Self.record(floor: floor, on: db) } }
            return 0
        }
        let results = try await producer.send(rows.map(\.record))
        // Mark the acknowledged prefix: a later row of the same key must not overtake a failed one.
        let acknowledged = zip(rows, results).prefix { (try? $0.1.get()) != nil }.map(\.0.id)
        if acknowledged.count < rows.count, case .failure(let error) = results[acknowledged.count] {
            logger.warning("publishing outbox row \(rows[acknowledged.count].id) failed: \(error)")
        }
        guard !acknowledged.isEmpty else {
            position.retry(from: rows[0].id)
            throw RelayStalled(rowID: rows[0].id)
        }
        if acknowledged.count < rows.count {
            position.retry(from: rows[acknowledged.count].id)
        } else {
            position.published(through: rows[rows.count - 1].id)
        }
        try await session.withConnection { db in
            try db.query(
                prepared: "once_relay_mark", "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [.int64Array(acknowledged)])
            if let floor { try Self.record(floor: floor, on: db) }
        }
        return acknowledged.count
    }

    /// Up to `limit` unpublished rows with ids in `from..<below`, in id order, and what the
    /// read's snapshot saw of the transactions around it.
    private static func read(from: Int64, below: Int64, limit: Int, session: PostgresClient) async throws -> OutboxRead {
        try await session.withConnection { db in
            try OutboxRead(
                db.query(
                    prepared: "once_relay_read",
                    """
                    WITH horizon AS (
                        SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS oldest_running,
                               pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
                               (SELECT coalesce(max(id), 0) FROM outbox) AS top
                    )
                    SELECT h.oldest_running, h.next_xid, h.top, o.id, o.topic, o.message_key, o.payload, o.headers::text
                    FROM horizon h LEFT JOIN LATERAL (
                        SELECT id, topic, message_key, payload, headers FROM outbox
                        WHERE id >= $1 AND id < $2 AND published_at IS NULL ORDER BY id LIMIT $3
                    ) o ON true
                    ORDER BY o.id
                    """,
                    [.int64(from), .int64(below), .int(limit)]))
        }
    }

    /// Keeps the floor for the next relay (and for `once status`); it never moves back.
    private static func record(floor: Int64, on db: PostgresConnection) throws {
        try db.execute("UPDATE outbox_relay SET floor = $1, updated_at = now() WHERE floor < $1", [.int64(floor)])
    }

    /// The floor a relay starts from: the last one recorded.
    static func recordedFloor(on db: PostgresConnection) throws -> OutboxPosition {
        OutboxPosition(floor: try db.query("SELECT coalesce(max(floor), 1) FROM outbox_relay")[0].decode(Int64.self, column: 0))
    }

    /// Outbox rows not yet published, for queries outside the relay: every row below the
    /// recorded floor is published, so only the rows from there on need looking at.
    public static let unpublishedRows =
        "outbox WHERE id >= (SELECT coalesce(max(floor), 1) FROM outbox_relay) AND published_at IS NULL"

    static func headers(fromJSON text: String) -> [KafkaHeader] {
        guard case .object(let fields)? = try? JSONParser.parse(Array(text.utf8)) else { return [] }
        return fields.keys.sorted().map { name in
            KafkaHeader(name: name, value: fields[name]?.stringValue.map { Array($0.utf8) })
        }
    }
}

/// Where the relay reads. Ids are taken in insert order but committed in any order, so a row
/// can become visible below rows already published. Two marks:
/// - `head`: where the next read starts; it moves past what was published;
/// - `floor`: every row with a smaller id is published (or was rolled back). It moves up to the
///   top id one read saw only once every transaction running at that read has ended (that
///   snapshot's `xmax` is at most a later read's `xmin`); the rows between the floor and there
///   are then looked at once, for rows that committed late, and it stops at any found.
/// This holds because an outbox row's transaction has its id before the row takes its id
/// (`OutboxWriter` makes sure). A pure value; the relay keeps it and records the floor in
/// `outbox_relay`, where a restarted relay, `once status` and `once run --until-idle` find it.
struct OutboxPosition: Sendable, Hashable {
    private(set) var floor: Int64
    private(set) var head: Int64
    /// A floor waiting for the transactions running when it was seen to end.
    private var candidate: Candidate?

    private struct Candidate: Sendable, Hashable {
        var floor: Int64
        var afterXID: Int64
    }

    init(floor: Int64) {
        self.floor = floor
        head = floor
    }

    /// Takes in one read's horizon. Returns the ids to look at for rows that committed late
    /// (then call `settle`) when the floor may move now.
    mutating func observe(_ horizon: OutboxHorizon) -> Range<Int64>? {
        var recheck: Range<Int64>?
        if let waiting = candidate, horizon.oldestRunningXID >= waiting.afterXID {
            candidate = nil
            let upper = min(waiting.floor, head)
            if upper > floor { recheck = floor..<upper }
        }
        if candidate == nil, horizon.topID + 1 > floor {
            candidate = Candidate(floor: horizon.topID + 1, afterXID: horizon.nextXID)
        }
        return recheck
    }

    /// Every row below `upper` is visible now; the first of them still unpublished, if any, holds the floor.
    mutating func settle(below upper: Int64, firstUnpublished: Int64?) {
        floor = max(floor, min(upper, firstUnpublished ?? upper))
    }

    /// The rows read up to `id` are published.
    mutating func published(through id: Int64) {
        head = max(head, id + 1)
    }

    /// The row `id` could not be published: read again from there.
    mutating func retry(from id: Int64) {
        head = max(floor, min(head, id))
    }
}

/// What one relay read saw of the transactions around it.
struct OutboxHorizon: Sendable, Hashable {
    /// The oldest transaction still running (the snapshot's `xmin`).
    var oldestRunningXID: Int64
    /// The first transaction id not yet assigned (the snapshot's `xmax`).
    var nextXID: Int64
    /// The largest outbox id visible.
    var topID: Int64
}

/// The rows of one relay read, and its horizon.
struct OutboxRead {
    var horizon: OutboxHorizon
    var rows: [OutboxRow]

    init(_ result: PostgresResult) throws {
        let first = result[0]
        horizon = OutboxHorizon(
            oldestRunningXID: try first.decode(Int64.self, column: 0), nextXID: try first.decode(Int64.self, column: 1),
            topID: try first.decode(Int64.self, column: 2))
        rows = try result.compactMap { row in
            guard let id = try row.decode(Int64?.self, column: 3) else { return nil }  // no row: the horizon alone
            return OutboxRow(
                id: id,
                record: KafkaOutgoingRecord(
                    topic: try row.decode(String.self, column: 4),
                    key: try row.decode(String?.self, column: 5).map { Array($0.utf8) },
                    value: try row.decode([UInt8]?.self, column: 6),
                    headers: OutboxRelay.headers(fromJSON: try row.decode(String.self, column: 7))))
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
