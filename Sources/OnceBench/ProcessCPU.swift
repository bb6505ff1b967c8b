import Foundation

/// CPU time of one process from `/proc/PID/stat`, in clock ticks (`sysconf(_SC_CLK_TCK)`):
/// its own `utime + stime` (every thread's) and `cutime + cstime`, the time of the children it
/// has reaped (a backend that exits still counts, in its postmaster's figure).
struct ProcessTimes: Sendable {
    var pid: Int32
    var parent: Int32
    var ownTicks: Int64
    var childrenTicks: Int64

    static let ticksPerSecond = Int64(sysconf(Int32(_SC_CLK_TCK)))

    /// Nil when the process is gone (or the kernel's line does not parse).
    static func read(pid: Int32) -> ProcessTimes? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        return parse(text)
    }

    /// `PID (COMM) STATE PPID … UTIME STIME CUTIME CSTIME …`: COMM may hold spaces and
    /// parentheses, so the fields are counted from the last `)`.
    static func parse(_ line: String) -> ProcessTimes? {
        guard let close = line.lastIndex(of: ")"), let pid = Int32(line.prefix { $0 != " " }) else { return nil }
        // After COMM: state (field 3), ppid (4), … utime (14), stime (15), cutime (16), cstime (17).
        let fields = line[line.index(after: close)...].split(separator: " ")
        guard fields.count > 14, let parent = Int32(fields[1]), let utime = Int64(fields[11]),
            let stime = Int64(fields[12]), let cutime = Int64(fields[13]), let cstime = Int64(fields[14])
        else { return nil }
        return ProcessTimes(pid: pid, parent: parent, ownTicks: utime + stime, childrenTicks: cutime + cstime)
    }

    /// Every live process, read once each.
    static func all() -> [ProcessTimes] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return names.compactMap { name in Int32(name).flatMap { read(pid: $0) } }
    }

    /// The pid of the process whose command line is `ARG0 ARGS…` with `ARG0` ending in `program`
    /// and `ARGS` holding every string of `containing` (as an argument or a part of one).
    static func find(program: String, containing: [String]) -> Int32? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for name in names {
            guard let pid = Int32(name),
                let bytes = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !bytes.isEmpty
            else { continue }
            let arguments = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let first = arguments.first, first.hasSuffix(program) else { continue }
            let rest = arguments.dropFirst().joined(separator: " ")
            if containing.allSatisfy({ rest.contains($0) }) { return pid }
        }
        return nil
    }
}

/// The processes whose CPU the bench counts for a strategy: the client (the `once` or peer
/// processes the bench starts: its reaped children, `cutime + cstime` of the bench itself; or,
/// for the ceiling, the bench's own sessions), the PostgreSQL cluster (the postmaster, its live
/// children and the children it reaped) and the broker.
struct CPUProbe: Sendable {
    /// The postmaster: the parent of a backend of the bench's server (nil if the server is not
    /// on this machine).
    var postmaster: Int32?
    /// The Tansu broker serving the bench's brokers.
    var broker: Int32?

    /// The postmaster as the parent of the backend at `backendPID`, and the broker as the
    /// `tansu broker` process listening on the port of `brokers`.
    static func locate(backendPID: Int32, brokers: String) -> CPUProbe {
        let postmaster = ProcessTimes.read(pid: backendPID).map(\.parent)
        let port = brokers.split(separator: ",").first.flatMap { $0.split(separator: ":").last }.map { String($0) }
        let broker = port.flatMap { ProcessTimes.find(program: "tansu", containing: ["broker", ":\($0)"]) }
        return CPUProbe(postmaster: postmaster, broker: broker)
    }

    /// CPU ticks, cumulative, at one instant.
    struct Sample: Sendable {
        var benchOwn: Int64
        var benchChildren: Int64
        var postgres: Int64?
        var broker: Int64?
        /// The live processes asked for, their own time (`sample(tracking:)`).
        var tracked: Int64 = 0
        /// The bench's own backends (the commit watch's), their time: not the client's doing,
        /// so taken out of PostgreSQL's.
        var benchBackends: Int64 = 0
        var at: ContinuousClock.Instant
    }

    /// Also reads the own time of the live processes `tracking`, for a window that ends before
    /// they are reaped, and of the bench's backends `benchBackends`.
    func sample(tracking pids: [Int32] = [], benchBackends: [Int32] = []) -> Sample {
        let bench = ProcessTimes.read(pid: getpid())
        var postgres: Int64?
        if let postmaster, let root = ProcessTimes.read(pid: postmaster) {
            let children = ProcessTimes.all().filter { $0.parent == postmaster }
            postgres = root.ownTicks + root.childrenTicks + children.reduce(0) { $0 + $1.ownTicks + $1.childrenTicks }
        }
        let broker = broker.flatMap { ProcessTimes.read(pid: $0) }.map { $0.ownTicks + $0.childrenTicks }
        return Sample(
            benchOwn: bench?.ownTicks ?? 0, benchChildren: bench?.childrenTicks ?? 0, postgres: postgres,
            broker: broker, tracked: Self.ownTicks(of: pids), benchBackends: Self.ownTicks(of: benchBackends), at: .now)
    }

    /// The own time of those of `pids` that are alive.
    private static func ownTicks(of pids: [Int32]) -> Int64 {
        pids.compactMap { ProcessTimes.read(pid: $0) }.reduce(0) { $0 + $1.ownTicks }
    }

    /// Where the client's CPU is found.
    enum Client: String, Codable, Sendable {
        /// Processes the bench started and reaped (`once run`, the peer's).
        case children
        /// The bench's own threads (the ceiling's sessions).
        case bench
        /// Live processes the samples tracked (`sample(tracking:)`).
        case tracked
    }

    /// The CPU between two samples, per process group, for `records` records.
    static func usage(from before: Sample, to after: Sample, client: Client, clientName: String, records: Int)
        -> CPUUsage
    {
        func microseconds(_ ticks: Int64) -> Double { Double(ticks) * 1_000_000 / Double(ProcessTimes.ticksPerSecond) }
        let clientTicks =
            switch client {
            case .children: after.benchChildren - before.benchChildren
            case .bench: after.benchOwn - before.benchOwn
            case .tracked: after.tracked - before.tracked
            }
        let postgres = both(before.postgres, after.postgres).map { pair in
            microseconds(pair.1 - pair.0 - (after.benchBackends - before.benchBackends))
        }
        let broker = both(before.broker, after.broker).map { pair in microseconds(pair.1 - pair.0) }
        return CPUUsage(
            records: records, seconds: (after.at - before.at).seconds, client: clientName,
            clientMicroseconds: microseconds(clientTicks), postgresMicroseconds: postgres,
            brokerMicroseconds: broker)
    }
}

/// CPU spent by each process group during a strategy, in µs, and per record.
struct CPUUsage: Codable, Sendable {
    var records: Int
    /// The wall time between the two samples.
    var seconds: Double
    /// What the client column holds: `once run`, the peer's processes, the bench's sessions.
    var client: String
    var clientMicroseconds: Double
    /// Nil when the postmaster or the broker was not found on this machine.
    var postgresMicroseconds: Double?
    var brokerMicroseconds: Double?

    var clientPerRecord: Double { clientMicroseconds / Double(records) }
    var postgresPerRecord: Double? { postgresMicroseconds.map { $0 / Double(records) } }
    var brokerPerRecord: Double? { brokerMicroseconds.map { $0 / Double(records) } }
    var totalPerRecord: Double { clientPerRecord + (postgresPerRecord ?? 0) + (brokerPerRecord ?? 0) }

    enum CodingKeys: String, CodingKey {
        case records, seconds, client, clientMicroseconds, postgresMicroseconds, brokerMicroseconds
        case clientPerRecord, postgresPerRecord, brokerPerRecord, totalPerRecord
    }

    init(
        records: Int, seconds: Double, client: String, clientMicroseconds: Double, postgresMicroseconds: Double?,
        brokerMicroseconds: Double?
    ) {
        self.records = records
        self.seconds = seconds
        self.client = client
        self.clientMicroseconds = clientMicroseconds
        self.postgresMicroseconds = postgresMicroseconds
        self.brokerMicroseconds = brokerMicroseconds
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        records = try c.decode(Int.self, forKey: .records)
        seconds = try c.decode(Double.self, forKey: .seconds)
        client = try c.decode(String.self, forKey: .client)
        clientMicroseconds = try c.decode(Double.self, forKey: .clientMicroseconds)
        postgresMicroseconds = try c.decodeIfPresent(Double.self, forKey: .postgresMicroseconds)
        brokerMicroseconds = try c.decodeIfPresent(Double.self, forKey: .brokerMicroseconds)
    }

    /// The figures and the per-record quotients (the JSON carries both).
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(records, forKey: .records)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(client, forKey: .client)
        try c.encode(clientMicroseconds, forKey: .clientMicroseconds)
        try c.encodeIfPresent(postgresMicroseconds, forKey: .postgresMicroseconds)
        try c.encodeIfPresent(brokerMicroseconds, forKey: .brokerMicroseconds)
        try c.encode(clientPerRecord, forKey: .clientPerRecord)
        try c.encodeIfPresent(postgresPerRecord, forKey: .postgresPerRecord)
        try c.encodeIfPresent(brokerPerRecord, forKey: .brokerPerRecord)
        try c.encode(totalPerRecord, forKey: .totalPerRecord)
    }
}

/// Two optionals as one: both or nothing.
private func both<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}
