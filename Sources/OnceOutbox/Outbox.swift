import OnceKafka
import OncePostgres
import OnceSchema

/// An event to publish after the transaction that produced it commits.
///
/// (`tenantID`, `eventType`, `aggregateID`) is its business key, unique in each time partition
/// of the outbox. It is the handlers' own business keys (ledger, device results, jobs: never
/// pruned) that stop a second event, since a handler writes an outbox row only for an effect it
/// has just made; `OutboxKeys` says what a clash does.
public struct OutboxMessage: Sendable, Hashable {
    public var tenantID: String
    public var eventType: String
    public var aggregateID: String
    public var topic: String
    public var key: String?
    public var payload: [UInt8]?
    /// Kafka headers as name → value (published in name order; stored as `StoredHeaders`).
    public var headers: [String: String]

    public init(
        tenantID: String, eventType: String, aggregateID: String, topic: String, key: String?,
        payload: [UInt8]?, headers: [String: String] = [:]
    ) {
        self.tenantID = tenantID
        self.eventType = eventType
        self.aggregateID = aggregateID
        self.topic = topic
        self.key = key
        self.payload = payload
        self.headers = headers
    }
}

/// Whether the business keys of the messages written together may already be in the outbox.
package enum OutboxKeys: Sendable {
    /// The events of effects `once run` has just made, each key new by construction: the rows
    /// are inserted without a conflict clause, whose probe of both unique indexes cost about
    /// 7 µs per row (docs/benchmarks.md), and a clash fails the statement (SQLSTATE 23505), so
    /// that the record is dead-lettered for it rather than its event dropped unnoticed.
    case new
    /// Keys that may come again (a record dead-lettered once more after its claim was pruned
    /// and it was replayed; a replay re-applying an effect lost since, whose event the outbox
    /// holds): a clash in the same time partition keeps the first row.
    case mayRepeat
}

/// Writes outbox rows inside the caller's transaction and remembers that it did, so the batch
/// can wake the relay (NOTIFY is delivered only on commit). Used by one transaction's thread.
package final class OutboxWriter {
    package static let channel = "once_outbox"
    package private(set) var inserted = 0

    package init() {}

    package func insert(_ messages: [OutboxMessage], keys: OutboxKeys = .new, on connection: PostgresConnection) throws {
        guard !messages.isEmpty else { return }
        // The transaction takes its id before its rows take theirs: the relay's floor relies on
        // it (`OutboxPosition`). Every caller has written before, so this only makes it certain.
        if inserted == 0 { _ = try connection.query("SELECT pg_current_xact_id()") }
        // One statement for the lot, rows inserted in message order (so ids follow it). Payloads
        // and headers travel in one binary parameter, cut by (start, length) pairs, so no byte of
        // them is escaped or re-encoded.
        var blob: [UInt8] = []
        var payloadStarts: [Int64?] = []
        var payloadLengths: [Int64?] = []
        var headerStarts: [Int64] = []
        var headerLengths: [Int64] = []
        for message in messages {
            if let payload = message.payload {
                payloadStarts.append(Int64(blob.count + 1))
                payloadLengths.append(Int64(payload.count))
                blob.append(contentsOf: payload)
            } else {
                payloadStarts.append(nil)
                payloadLengths.append(nil)
            }
            let headers = StoredHeaders.json(
                message.headers.keys.sorted().map { KafkaHeader(name: $0, value: Array(message.headers[$0]!.utf8)) })
            headerStarts.append(Int64(blob.count + 1))
            headerLengths.append(Int64(headers.count))
            blob.append(contentsOf: headers)
        }
        let statement = keys == .new ? Self.insertNew : Self.insertIfAbsent
        inserted += try connection.query(
            prepared: statement.name, statement.sql,
            [
                .textArray(messages.map(\.tenantID)), .textArray(messages.map(\.eventType)),
                .textArray(messages.map(\.aggregateID)), .textArray(messages.map(\.topic)),
                .textArray(messages.map(\.key)), .bytea(blob),
                .int64Array(payloadStarts), .int64Array(payloadLengths),
                .int64Array(headerStarts.map { $0 }), .int64Array(headerLengths.map { $0 }),
            ]
        ).affectedRows
    }

    private static let insertNew = (name: "once_outbox", sql: insertSQL)
    private static let insertIfAbsent = (name: "once_outbox_if_absent", sql: insertSQL + "\nON CONFLICT DO NOTHING")

    private static let insertSQL = """
            INSERT INTO outbox (bucket, tenant_id, event_type, aggregate_id, topic, message_key, payload, headers)
            SELECT (SELECT \(TimePartitions.claimBucket(at: "now()", window: "w")) FROM once_partitioning w),
                   m.tenant_id, m.event_type, m.aggregate_id, m.topic, m.message_key,
                   substring($6::bytea FROM m.payload_start::integer FOR m.payload_length::integer),
                   convert_from(
                       substring($6::bytea FROM m.headers_start::integer FOR m.headers_length::integer), 'UTF8')::jsonb
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]) WITH ORDINALITY
                AS m(tenant_id, event_type, aggregate_id, topic, message_key,
                     payload_start, payload_length, headers_start, headers_length, n)
            ORDER BY m.n
            """
}
