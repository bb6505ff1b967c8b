import Foundation
import OnceKafka

/// The completion workload: `batch.completed` and `credits.granted` events for one tenant's
/// accounts, with producer duplicates (a new event id for a batch or grant already emitted, same
/// data) and exact redeliveries (the same record again), in a fixed order decided by a seed.
///
/// Each business key has a partition of its own choosing (a hash of the key), so an event and
/// all its duplicates and redeliveries share a partition, as a keyed producer would have it,
/// and each duplicate or redelivery comes after what it repeats.
struct Workload: Sendable {
    enum Kind: String, Sendable {
        case charge = "batch.completed"
        case grant = "credits.granted"
    }

    /// One business event: a finished batch to charge or a grant to add.
    struct Logical: Sendable {
        var kind: Kind
        var businessKey: String
        var account: Int
        var credits: Int64
        var partition: Int32

        var amount: Int64 { kind == .charge ? -credits : credits }
    }

    /// One record of the topic, in produce order.
    struct Record: Sendable {
        var eventID: String
        var logical: Int
        var value: [UInt8]
        var partition: Int32
    }

    static let tenant = "bench"

    let logicals: [Logical]
    let records: [Record]
    let partitions: Int32
    let accounts: Int
    let duplicateCount: Int
    let redeliveryCount: Int

    /// `total` records of which `duplicateShare` are producer duplicates and `redeliveryShare`
    /// exact redeliveries; the rest are first emissions, a quarter of them grants.
    init(total: Int, accounts: Int, partitions: Int32, duplicateShare: Double, redeliveryShare: Double, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let duplicates = Int((Double(total) * duplicateShare).rounded())
        let redeliveries = Int((Double(total) * redeliveryShare).rounded())
        let firsts = total - duplicates - redeliveries
        precondition(firsts > 0, "no first emissions left")

        var logicals: [Logical] = []
        logicals.reserveCapacity(firsts)
        for index in 0..<firsts {
            let kind: Kind = index % 4 == 3 ? .grant : .charge
            let key = kind == .charge ? "batch-\(index)" : "grant-\(index)"
            let credits = kind == .charge ? Int64(random.next(below: 500) + 1) : Int64(random.next(below: 5_000) + 500)
            logicals.append(
                Logical(
                    kind: kind, businessKey: key, account: Int(random.next(below: UInt64(accounts))), credits: credits,
                    partition: Int32(fnv1a(key) % UInt64(partitions))))
        }

        // Emissions placed on a line from 0 to 1: first emissions evenly, each repeat a little
        // after what it repeats (within 2% of the line), then everything sorted by place.
        struct Placed {
            var place: Double
            var eventID: String
            var logical: Int
            var occurredMilliseconds: Int64
        }
        let base: Int64 = 1_795_000_000_000  // 2026-11-18, a fixed instant so that bytes repeat run to run
        var placed: [Placed] = (0..<firsts).map { index in
            Placed(
                place: Double(index) / Double(firsts), eventID: "bench-e\(index)", logical: index,
                occurredMilliseconds: base + Int64(index))
        }
        for index in 0..<duplicates {
            let of = Int(random.next(below: UInt64(firsts)))
            placed.append(
                Placed(
                    place: placed[of].place + random.unit() * 0.02, eventID: "bench-d\(index)", logical: of,
                    occurredMilliseconds: placed[of].occurredMilliseconds + 1))
        }
        var redelivered: [Placed] = []
        for _ in 0..<redeliveries {
            var again = placed[Int(random.next(below: UInt64(placed.count)))]
            again.place += random.unit() * 0.02
            redelivered.append(again)
        }
        placed += redelivered
        placed.sort { $0.place < $1.place }

        // Bytes are made once per event id, so that a redelivery is the same record exactly.
        var bytes: [String: [UInt8]] = [:]
        bytes.reserveCapacity(firsts + duplicates)
        records = placed.map { item in
            let logical = logicals[item.logical]
            let value =
                bytes[item.eventID]
                ?? Self.envelope(
                    eventID: item.eventID, logical: logical, occurredMilliseconds: item.occurredMilliseconds)
            bytes[item.eventID] = value
            return Record(eventID: item.eventID, logical: item.logical, value: value, partition: logical.partition)
        }
        self.logicals = logicals
        self.partitions = partitions
        self.accounts = accounts
        duplicateCount = duplicates
        redeliveryCount = redeliveries
    }

    static func accountID(_ account: Int) -> String { "acct-\(account)" }

    /// The record value: the contract's envelope, as a producer would write it.
    static func envelope(
        eventID: String, logical: Logical, occurredMilliseconds: Int64, tenant: String = Workload.tenant
    ) -> [UInt8] {
        let keyField = logical.kind == .charge ? "batch_id" : "grant_id"
        return Array(
            """
            {"event_id":"\(eventID)","type":"\(logical.kind.rawValue)","version":1,"tenant_id":"\(tenant)",\
            "occurred_at":"\(rfc3339(milliseconds: occurredMilliseconds))","data":{"\(keyField)":"\(logical.businessKey)",\
            "account_id":"\(accountID(logical.account))","credits":\(logical.credits)}}
            """.utf8)
    }

    /// The Kafka records of the first `count` records (of those of `kind`, if given), keyed by
    /// business key.
    func outgoing(topic: String, count: Int? = nil, only kind: Kind? = nil) -> [KafkaOutgoingRecord] {
        selected(count: count, only: kind).map { record in
            KafkaOutgoingRecord(
                topic: topic, partition: record.partition, key: Array(logicals[record.logical].businessKey.utf8),
                value: record.value)
        }
    }

    /// The first `count` records, or those of `kind` among them, in produce order.
    func selected(count: Int? = nil, only kind: Kind? = nil) -> [Record] {
        let prefix = records.prefix(count ?? records.count)
        guard let kind else { return Array(prefix) }
        return prefix.filter { logicals[$0.logical].kind == kind }
    }

    /// What a correct consumer leaves behind after the first `count` records (of those of
    /// `kind`, if given): replayed here the way the contract says (an event id counts once; a
    /// business key is applied once).
    func expectation(count: Int? = nil, only kind: Kind? = nil) -> Expectation {
        var expectation = Expectation()
        var ids = Set<String>()
        var applied = Set<Int>()
        for record in selected(count: count, only: kind) {
            expectation.records += 1
            expectation.recordsPerPartition[record.partition, default: 0] += 1
            guard ids.insert(record.eventID).inserted else { continue }
            expectation.processed += 1
            guard applied.insert(record.logical).inserted else {
                expectation.duplicates += 1
                continue
            }
            let logical = logicals[record.logical]
            expectation.applied += 1
            expectation.balances[Self.accountID(logical.account), default: 0] += logical.amount
            expectation.ledgerTotal += logical.amount
        }
        return expectation
    }
}

/// The rows a correct run leaves, counted from the workload.
struct Expectation: Sendable {
    var records = 0
    var recordsPerPartition: [Int32: Int] = [:]
    /// Distinct event ids: `processed_messages` rows.
    var processed = 0
    /// Business keys applied: ledger rows, outbox rows, `applied` outcomes.
    var applied = 0
    /// Producer duplicates: `duplicate` outcomes.
    var duplicates = 0
    var balances: [String: Int64] = [:]
    var ledgerTotal: Int64 = 0
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-18T10:13:20.123Z`.
func rfc3339(milliseconds: Int64) -> String {
    var seconds = time_t(milliseconds / 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    let millis = Int(milliseconds % 1000)
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    let fraction = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
    return
        "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(fraction)Z"
}

/// FNV-1a over the UTF-8 bytes: a stable hash for choosing partitions.
func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}

/// A small seeded generator, so that a workload is the same on every run.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    mutating func next(below bound: UInt64) -> UInt64 { next() % bound }

    /// A double in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(UInt64(1) << 53) }
}

/// Wall-clock time in microseconds since the epoch (the clock PostgreSQL's `now()` reads).
func wallMicroseconds() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
}
