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
            configuration: PostgresConfiguration(url: databaseURL, applicationName: "once-relay"), logger: logger, threadName: "once-relay-db")
        let producer = try KafkaProducer(configuration: producerConfiguration, logger: logger)
        defer { logger.info("relay stopped") }
        var lockedBackend: Int32?
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
                    logger.info("relay active")
                }
                let published = try await publishOnce(session: session, producer: producer)
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

    /// Publishes up to `batchSize` rows; returns how many were marked published.
    func publishOnce(session: PostgresClient, producer: KafkaProducer) async throws -> Int {
        let limit = batchSize
        let rows = try await session.withConnection { db in
            try db.query(
                "SELECT id, topic, message_key, payload, headers::text FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
                [.int(limit)]
            ).map { row in
                OutboxRow(
                    id: try row.decode(Int64.self, column: 0),
                    record: KafkaOutgoingRecord(
                        topic: try row.decode(String.self, column: 1),
                        key: try row.decode(String?.self, column: 2).map { Array($0.utf8) },
                        value: try row.decode([UInt8]?.self, column: 3),
                        headers: Self.headers(fromJSON: try row.decode(String.self, column: 4))))
            }
        }
        guard !rows.isEmpty else { return 0 }
        let results = try await producer.send(rows.map(\.record))
        // Mark the acknowledged prefix: a later row of the same key must not overtake a failed one.
        let acknowledged = zip(rows, results).prefix { (try? $0.1.get()) != nil }.map(\.0.id)
        if acknowledged.count < rows.count, case .failure(let error) = results[acknowledged.count] {
            logger.warning("publishing outbox row \(rows[acknowledged.count].id) failed: \(error)")
        }
        guard !acknowledged.isEmpty else { throw RelayStalled(rowID: rows[0].id) }
        _ = try await session.withConnection { db in
            try db.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [.int64Array(acknowledged)])
        }
        return acknowledged.count
    }

    static func headers(fromJSON text: String) -> [KafkaHeader] {
        guard case .object(let fields)? = try? JSONParser.parse(Array(text.utf8)) else { return [] }
        return fields.keys.sorted().map { name in
            KafkaHeader(name: name, value: fields[name]?.stringValue.map { Array($0.utf8) })
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
