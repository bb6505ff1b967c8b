import Foundation
import OnceKafka
import OncePipeline
import OncePostgres

/// `once audit coverage`: proves CONTRACT.md §2's first invariant for a consumer group, by
/// reading the broker's records below each partition's stored position and looking up each
/// record's claim in `processed_messages`.
///
/// A partition is read from the first offset whose broker timestamp is at or after the window
/// start (the low watermark when there is none) through `next_offset - 1`; every record from
/// there on is checked, whatever its own timestamp. Each record is decoded as `once run`
/// decodes it, so its claim key is the one the pipeline recorded (tenant and event id, or the
/// synthetic `kafka:<topic>/<partition>/<offset>` id under tenant `?` for poison). The claim is
/// looked up in every partition of `processed_messages` (the legacy one by event id, its tenant
/// equal or NULL), a batch of records per query. A record is
/// - covered: a row names its own position; or a row names another position whose record
///   carries the same claim key (a redelivered copy: the first copy claimed the id);
/// - `missing`: no row;
/// - `other_record`: the row names another position whose record carries another key, or that
///   the broker no longer holds (so the copy cannot be shown);
/// - outside the window, not a gap: no row, but its claim's interval starts before the oldest
///   `processed_messages` partition and the broker took the record before the last prune
///   (`once_partitioning.last_prune`), so that prune may have dropped the row. A claim made
///   after the last prune is never gone, so its absence is always a gap. (A row deleted some
///   other way from a claim that may have been pruned is not told apart.)
///
/// Another position's record is compared from what the scan read (a hash of its claim key,
/// kept for every record read: 16 bytes each), or else fetched from the broker on its own.
///
/// Threading: `run` is async; database reads go through `PostgresSession.withConnection` and
/// block only the connection's own thread, broker reads go through `PartitionReader` (the
/// consumer's thread). `snapshot` blocks: call it on a database thread. Errors: `PostgresError`
/// from the database; `KafkaError` or `PartitionReadStalled` from the broker. Nothing is written.
public struct CoverageAudit: Sendable {
    /// Opens a reader for one partition; `run` closes it.
    public typealias OpenReader = @Sendable (TopicPartition) async throws -> PartitionReader

    let group: String
    let decoder: BatchDecoder
    let database: PostgresSession
    let openReader: OpenReader
    /// Records per lookup query.
    let batchSize: Int

    /// `registry` must hold the group's handlers, as `once run` registers them: it decides which
    /// records are events (claimed under their own id) and which are poison.
    public init(
        consumerGroup: String, registry: HandlerRegistry, database: PostgresSession, batchSize: Int = PipelineDefaults.maxBatchRecords,
        openReader: @escaping OpenReader
    ) {
        group = consumerGroup
        decoder = BatchDecoder(registry: registry)
        self.database = database
        self.batchSize = batchSize
        self.openReader = openReader
    }

    // MARK: - The database's side, before any record is read

    /// What the audit starts from, read in one snapshot.
    public struct Snapshot: Sendable, Hashable {
        /// The group's stored positions, by topic and partition.
        public var positions: [StoredPosition]
        /// The database's time of the snapshot.
        public var asOf: Date
        /// When a prune last dropped claims (`once_partitioning.last_prune`; nil: never). A claim
        /// made after it is still there, whatever its partition.
        public var lastPrune: Date?
    }

    /// Reads the group's stored positions. Blocking: call it on the connection's thread.
    public static func snapshot(consumerGroup group: String, on db: PostgresConnection) throws -> Snapshot {
        try db.transaction(isolation: .repeatableRead) { tx in
            _ = try tx.execute("SET TRANSACTION READ ONLY")
            let row = try tx.query(
                "SELECT now(), last_prune FROM once_partitioning")
            let positions = try StoredPositions(consumerGroup: group).positions(on: tx)
            return Snapshot(
                positions: positions, asOf: try row[0].decode(Date.self, column: 0),
                lastPrune: try row[0].decode(Date?.self, column: 1))
        }
    }

    // MARK: - The audit

    /// Checks `partitions` (each with its stored position) against the broker's records read
    /// from `windowStart` on (nil: from the log start), calling `progress` as it reads.
    public func run(
        _ partitions: [StoredPosition], windowStart: Date?, lastPrune: Date?,
        progress: (CoverageProgress) -> Void = { _ in }
    ) async throws -> CoverageReport {
        var scan = Scan(lastPruneMicroseconds: lastPrune.map { Int64(($0.timeIntervalSince1970 * 1_000_000).rounded()) })
        for (index, position) in partitions.enumerated() {
            try await read(position, windowStart: windowStart, into: &scan) { offset, first, last, checked in
                progress(
                    CoverageProgress(
                        partition: position.partition, index: index, count: partitions.count, offset: offset,
                        first: first, last: last, recordsChecked: checked))
            }
        }
        try await settleCopies(&scan)
        return CoverageReport(
            partitions: scan.partitions,
            gaps: scan.gaps.sorted { ($0.partition, $0.offset) < ($1.partition, $1.offset) })
    }

    /// What the audit has found so far.
    private struct Scan {
        /// When claims were last pruned, in microseconds since the epoch (nil: never).
        let lastPruneMicroseconds: Int64?
        var partitions: [PartitionCoverage] = []
        var gaps: [CoverageGap] = []
        /// The claim key's hash of every record read, by position.
        var keys: [TopicPartition: KeyHashes] = [:]
        /// Records whose claim names another position, to settle once everything is read.
        var copies: [Copy] = []
    }

    /// A record whose claim row names other positions than its own.
    private struct Copy {
        var record: CheckedRecord
        /// Index into `Scan.partitions`.
        var partitionIndex: Int
        var claimedAt: [Position]
    }

    private struct CheckedRecord {
        var partition: TopicPartition
        var offset: Int64
        var key: ClaimKey
        var claimMicroseconds: Int64
        /// When the broker took the record (microseconds since the epoch; nil when unknown).
        var writtenMicroseconds: Int64?

        init(_ decoded: BatchRecord) {
            partition = decoded.record.topicPartition
            offset = decoded.offset
            key = decoded.claimKey
            claimMicroseconds = decoded.claimTimeMicroseconds
            writtenMicroseconds = decoded.record.timestampMilliseconds.map { $0 * 1000 }
        }

        /// Whether a prune may have dropped this record's claim: its time is before the oldest
        /// partition (so its claim was clamped into a partition since pruned, or into its own),
        /// and the broker took it before the last prune (a claim made after that is never gone).
        func mayHaveBeenPruned(beforeOldestPartition: Bool, lastPrune: Int64?) -> Bool {
            guard beforeOldestPartition, let lastPrune else { return false }
            return (writtenMicroseconds ?? .min) < lastPrune
        }
    }

    /// Reads one partition below its stored position and checks its records in batches.
    private func read(
        _ position: StoredPosition, windowStart: Date?, into scan: inout Scan,
        progress: (_ offset: Int64, _ first: Int64, _ last: Int64, _ checked: Int) -> Void
    ) async throws {
        var coverage = PartitionCoverage(partition: position.partition, nextOffset: position.nextOffset)
        guard let next = position.nextOffset, next > 0 else {
            scan.partitions.append(coverage)
            return
        }
        let index = scan.partitions.count
        scan.partitions.append(coverage)
        let reader = try await openReader(position.partition)
        do {
            let marks = try await reader.watermarks()
            coverage.lowWatermark = marks.low
            let startMilliseconds = windowStart.map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.down)) }
            var hashes = KeyHashes(base: marks.low)
            var batch: [CheckedRecord] = []
            var inWindow = startMilliseconds == nil
            let read = try await reader.read(from: marks.low, through: next - 1, maxRecords: batchSize) { records in
                for record in records {
                    let decoded = decoder.decode(record)
                    hashes.insert(decoded.claimKey.hashValue, at: record.offset)
                    if !inWindow, let start = startMilliseconds, let stamp = record.timestampMilliseconds, stamp > 0,
                        stamp < start
                    {
                        // Before the first record stamped inside the window: not checked. One
                        // without a timestamp opens the window (when unsure, check).
                        coverage.beforeWindow += 1
                        continue
                    }
                    inWindow = true
                    coverage.from = coverage.from ?? record.offset
                    coverage.to = record.offset
                    batch.append(CheckedRecord(decoded))
                }
                if batch.count >= batchSize {
                    try await check(batch, partitionIndex: index, coverage: &coverage, scan: &scan)
                    batch.removeAll(keepingCapacity: true)
                }
                progress(records.last?.offset ?? marks.low, marks.low, next - 1, coverage.records + batch.count)
                return true
            }
            try await check(batch, partitionIndex: index, coverage: &coverage, scan: &scan)
            if read.reachedEnd && read.next < next { coverage.logEnd = read.next }
            scan.keys[position.partition] = hashes
            scan.partitions[index] = coverage
            await reader.close()
        } catch {
            await reader.close()
            throw error
        }
    }

    /// Looks up the claims of `batch` (records of one partition) and sorts each record into
    /// covered, a gap, outside the window, or a copy to settle later.
    private func check(
        _ batch: [CheckedRecord], partitionIndex: Int, coverage: inout PartitionCoverage, scan: inout Scan
    ) async throws {
        guard !batch.isEmpty else { return }
        var first: [ClaimKey: CheckedRecord] = [:]
        for record in batch where first[record.key] == nil { first[record.key] = record }
        let keys = Array(first.values)
        let group = self.group
        let claims = try await database.withConnection { db in try Self.lookUp(keys, group: group, on: db) }

        for record in batch {
            coverage.records += 1
            let claim = claims[record.key] ?? Claim()
            let here = Position(record.partition, record.offset)
            if claim.positions.contains(here) {
                coverage.covered += 1
            } else if !claim.positions.isEmpty {
                scan.copies.append(Copy(record: record, partitionIndex: partitionIndex, claimedAt: claim.positions))
            } else if record.mayHaveBeenPruned(
                beforeOldestPartition: claim.beforeOldestPartition, lastPrune: scan.lastPruneMicroseconds)
            {
                coverage.outsideWindow += 1
            } else {
                coverage.missing += 1
                scan.gaps.append(
                    CoverageGap(
                        record.partition, record.offset, record.key, kind: .missing,
                        detail: "no processed_messages row for \(record.key)"))
            }
        }
    }

    /// What `processed_messages` holds for one claim key.
    private struct Claim: Sendable {
        var positions: [Position] = []
        /// The claim's interval starts before the oldest partition (`once_partitioning.oldest`).
        var beforeOldestPartition = false
    }

    /// The claims of `records`' keys (one record per key), in one query.
    private static func lookUp(
        _ records: [CheckedRecord], group: String, on db: PostgresConnection
    ) throws -> [ClaimKey: Claim] {
        // Each key probes every partition's (consumer_group, tenant_id, event_id) index, and the
        // legacy partition's by id for a row without a tenant. The UNION keeps the subquery
        // per key (a parameterised probe), not a join over the group's whole history.
        let rows = try db.query(
            """
            SELECT k.i, coalesce(date_bin(w.width, 'epoch'::timestamptz + k.at * interval '1 microsecond', 'epoch')
                                 < w.oldest, false),
                   m.topic, m.partition, m.kafka_offset
            FROM once_partitioning w
            CROSS JOIN unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS k(tenant, id, at, i)
            LEFT JOIN LATERAL (
                SELECT p.topic, p.partition, p.kafka_offset FROM processed_messages p
                WHERE p.consumer_group = $1 AND p.tenant_id = k.tenant AND p.event_id = k.id
                UNION ALL
                SELECT l.topic, l.partition, l.kafka_offset FROM processed_messages l
                WHERE l.bucket = '-infinity' AND l.consumer_group = $1 AND l.event_id = k.id AND l.tenant_id IS NULL
            ) m ON true
            """,
            [
                .text(group), .textArray(records.map(\.key.tenantID)), .textArray(records.map(\.key.eventID)),
                .int64Array(records.map(\.claimMicroseconds)),
            ])
        var claims: [ClaimKey: Claim] = [:]
        for row in rows {
            let key = records[Int(try row.decode(Int64.self, column: 0)) - 1].key
            var claim = claims[key] ?? Claim()
            claim.beforeOldestPartition = try row.decode(Bool.self, column: 1)
            if let topic = try row.decode(String?.self, column: 2) {
                claim.positions.append(
                    Position(
                        TopicPartition(topic, try row.decode(Int32.self, column: 3)),
                        try row.decode(Int64.self, column: 4)))
            }
            claims[key] = claim
        }
        return claims
    }

    /// Settles every record whose claim names other positions: covered when one of them holds a
    /// record with the same claim key, else an `other_record` gap.
    private func settleCopies(_ scan: inout Scan) async throws {
        // The positions the scan did not read, fetched one by one, per partition.
        var unread: [TopicPartition: Set<Int64>] = [:]
        for copy in scan.copies {
            for position in copy.claimedAt where scan.keys[position.partition]?[position.offset] == nil {
                unread[position.partition, default: []].insert(position.offset)
            }
        }
        var fetched: [Position: ClaimKey] = [:]
        for (partition, offsets) in unread.sorted(by: { $0.key < $1.key }) {
            fetched.merge(try await fetch(offsets.sorted(), of: partition)) { $1 }
        }

        for copy in scan.copies {
            let record = copy.record
            var why: [String] = []
            var covered = false
            for position in copy.claimedAt {
                if let hash = scan.keys[position.partition]?[position.offset] {
                    covered = hash == record.key.hashValue
                    if !covered { why.append("\(position), whose record has another id") }
                } else if let key = fetched[position] {
                    covered = key == record.key
                    if !covered { why.append("\(position), whose record is \(key)") }
                } else {
                    why.append("\(position), where the broker has no record")
                }
                if covered { break }
            }
            if covered {
                scan.partitions[copy.partitionIndex].covered += 1
                scan.partitions[copy.partitionIndex].coveredByCopy += 1
            } else {
                scan.partitions[copy.partitionIndex].otherRecord += 1
                scan.gaps.append(
                    CoverageGap(
                        record.partition, record.offset, record.key, kind: .otherRecord,
                        detail: "the row for \(record.key) names " + why.joined(separator: "; ")))
            }
        }
    }

    /// The claim keys of single records of one partition (those the broker still has).
    private func fetch(_ offsets: [Int64], of partition: TopicPartition) async throws -> [Position: ClaimKey] {
        let reader = try await openReader(partition)
        do {
            var keys: [Position: ClaimKey] = [:]
            let marks: KafkaWatermarks
            do {
                marks = try await reader.watermarks()
            } catch let error as KafkaError where error.kind == .unknownTopicOrPartition {
                await reader.close()
                return [:]  // the topic is gone, and its records with it
            }
            for offset in offsets where offset >= marks.low {
                _ = try await reader.read(from: offset, through: offset) { records in
                    for record in records where record.offset == offset {
                        keys[Position(partition, offset)] = decoder.decode(record).claimKey
                    }
                    return false
                }
            }
            await reader.close()
            return keys
        } catch {
            await reader.close()
            throw error
        }
    }
}

/// A record's place on the broker.
struct Position: Hashable, Sendable, CustomStringConvertible {
    var partition: TopicPartition
    var offset: Int64

    init(_ partition: TopicPartition, _ offset: Int64) {
        self.partition = partition
        self.offset = offset
    }

    var description: String { "\(partition)@\(offset)" }
}

/// The claim keys' hashes of a partition's records from `base` on, by offset (a hole where the
/// log has no record).
struct KeyHashes {
    let base: Int64
    private var hashes: [Int?] = []

    init(base: Int64) { self.base = base }

    mutating func insert(_ hash: Int, at offset: Int64) {
        guard offset >= base else { return }
        let index = Int(offset - base)
        if index >= hashes.count { hashes += Array(repeating: nil, count: index - hashes.count + 1) }
        hashes[index] = hash
    }

    subscript(offset: Int64) -> Int? {
        guard offset >= base, offset - base < hashes.count else { return nil }
        return hashes[Int(offset - base)]
    }
}

// MARK: - The report

/// One partition's part of the audit. `records` = `covered` + `missing` + `otherRecord` +
/// `outsideWindow`.
public struct PartitionCoverage: Sendable, Hashable {
    public var partition: TopicPartition
    /// The stored position (nil: nothing processed yet, so nothing to check).
    public var nextOffset: Int64?
    /// The first and last offset checked (nil when none was).
    public var from: Int64?
    public var to: Int64?
    /// The broker's first offset still stored (nil when the partition was not read).
    public var lowWatermark: Int64?
    /// Where the log ends when that is below the stored position (the records between do not
    /// exist, so they are not gaps).
    public var logEnd: Int64?
    /// Records read before the first one stamped inside the window, not checked.
    public var beforeWindow = 0
    public var records = 0
    /// Records with their claim: at their own position, or (`coveredByCopy`) at a copy's.
    public var covered = 0
    public var coveredByCopy = 0
    public var missing = 0
    public var otherRecord = 0
    public var outsideWindow = 0

    public init(partition: TopicPartition, nextOffset: Int64?) {
        self.partition = partition
        self.nextOffset = nextOffset
    }

    public var gaps: Int { missing + otherRecord }
}

/// A record below the stored position without its claim.
public struct CoverageGap: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// No `processed_messages` row for its claim key.
        case missing
        /// The row names another position, whose record is not a copy of this one.
        case otherRecord = "other_record"
    }

    public var partition: TopicPartition
    public var offset: Int64
    /// The claim key's event id (synthetic for poison) and tenant (`?` when unknown).
    public var eventID: String
    public var tenantID: String
    public var kind: Kind
    public var detail: String

    init(_ partition: TopicPartition, _ offset: Int64, _ key: ClaimKey, kind: Kind, detail: String) {
        self.partition = partition
        self.offset = offset
        eventID = key.eventID
        tenantID = key.tenantID
        self.kind = kind
        self.detail = detail
    }
}

/// What `CoverageAudit.run` found: every partition, in the order asked, and every gap, by
/// position.
public struct CoverageReport: Sendable, Hashable {
    public var partitions: [PartitionCoverage]
    public var gaps: [CoverageGap]

    /// The partitions' figures added up (its `partition` is empty).
    public var totals: PartitionCoverage {
        var total = PartitionCoverage(partition: TopicPartition("", 0), nextOffset: nil)
        for p in partitions {
            total.beforeWindow += p.beforeWindow
            total.records += p.records
            total.covered += p.covered
            total.coveredByCopy += p.coveredByCopy
            total.missing += p.missing
            total.otherRecord += p.otherRecord
            total.outsideWindow += p.outsideWindow
        }
        return total
    }

    public var isClean: Bool { gaps.isEmpty }
}

/// Where an audit is, for a progress line.
public struct CoverageProgress: Sendable, Hashable {
    public var partition: TopicPartition
    /// Which partition of how many (from 0).
    public var index: Int
    public var count: Int
    /// The last offset read, of `first…last`.
    public var offset: Int64
    public var first: Int64
    public var last: Int64
    public var recordsChecked: Int

    /// Done with this partition, from 0 to 1.
    public var fraction: Double {
        guard last > first else { return 1 }
        return min(1, max(0, Double(offset - first + 1) / Double(last - first + 1)))
    }
}
