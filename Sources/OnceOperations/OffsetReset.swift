import Foundation
import Logging
import OnceKafka
import OncePipeline
import OncePostgres

/// Where an offset reset moves each partition's stored position to, as
/// `kafka-consumer-groups --reset-offsets` names the choices.
public enum OffsetResetTarget: Sendable, Hashable {
    /// The first offset still stored on the broker.
    case earliest
    /// The end of the log: everything in it now is skipped.
    case latest
    /// This offset, in every partition of the scope; refused where it lies outside the log.
    case offset(Int64)
    /// The first offset whose record was stamped at or after this time (ms since the epoch);
    /// the end of the log when there is none.
    case datetime(milliseconds: Int64)
    /// The stored position moved by this many records (negative: back), kept within the log.
    case shiftBy(Int64)
    /// The first offset stamped at or after this long before now.
    case byDuration(Duration)
}

/// The partitions an offset reset applies to.
public enum OffsetResetScope: Sendable, Hashable {
    /// One topic, with some of its partitions (nil: all of them, as the broker has them).
    public struct Selection: Sendable, Hashable {
        public var topic: String
        public var partitions: [Int32]?

        public init(topic: String, partitions: [Int32]? = nil) {
            self.topic = topic
            self.partitions = partitions
        }

        /// `T` or `T:0,2`; nil when the partitions are not numbers of 0 or more.
        public init?(_ text: String) {
            guard let colon = text.lastIndex(of: ":") else {
                guard !text.isEmpty else { return nil }
                self.init(topic: text)
                return
            }
            let topic = String(text[..<colon])
            let numbers = text[text.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false)
            let partitions = numbers.compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 >= 0 }
            guard !topic.isEmpty, !numbers.isEmpty, partitions.count == numbers.count else { return nil }
            self.init(topic: topic, partitions: Array(Set(partitions)).sorted())
        }
    }

    /// Every topic the group has stored positions for.
    case allTopics
    case topics([Selection])
}

/// What an offset reset would do, partition by partition: computed against the broker and the
/// stored positions (`OffsetResetPlanner`), shown to the operator, and executed as a whole.
/// A value; `execute` blocks the connection's thread.
public struct OffsetResetPlan: Sendable, Hashable {
    public struct Row: Sendable, Hashable {
        public var partition: TopicPartition
        /// The stored next offset (nil: nothing stored; the group would start at `logStart`).
        public var current: Int64?
        public var target: Int64
        /// The first offset still on the broker, and where the log ends now.
        public var logStart: Int64
        public var logEnd: Int64
        /// Records from the stored position to the target that the group has a claim for in
        /// `processed_messages` (within the retention window): re-read, they change nothing.
        public var alreadyProcessed: Int64
        public var owner: String?
        /// The stored generation (nil: nothing stored).
        public var generation: Int64?

        public init(
            partition: TopicPartition, current: Int64?, target: Int64, logStart: Int64, logEnd: Int64,
            alreadyProcessed: Int64 = 0, owner: String? = nil, generation: Int64? = nil
        ) {
            self.partition = partition
            self.current = current
            self.target = target
            self.logStart = logStart
            self.logEnd = logEnd
            self.alreadyProcessed = alreadyProcessed
            self.owner = owner
            self.generation = generation
        }

        /// Target minus where the group stands: positive skips that many records, negative
        /// re-reads that many.
        public var change: Int64 { target - (current ?? logStart) }
    }

    public var consumerGroup: String
    public var rows: [Row]

    public init(consumerGroup: String, rows: [Row]) {
        self.consumerGroup = consumerGroup
        self.rows = rows
    }

    /// Stores every row's target, in one transaction, each under a new generation (one bump
    /// per partition per execution), keeping the owners: a running owner adopts its new
    /// position within seconds. Returns the positions as stored now.
    public func execute(on db: PostgresConnection) throws -> [StoredPosition] {
        try StoredPositions(consumerGroup: consumerGroup).reset(rows.map { ($0.partition, $0.target) }, on: db)
    }
}

/// A target that lies outside a partition's log, or a scope the broker does not have.
public struct OffsetResetRefused: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Computes offset-reset plans: reads each partition's log bounds (and, for times, its
/// timestamps) from the broker with a `PartitionReader` of its own, and the stored positions and
/// claims from the database. Changes nothing. Partitions are read concurrently, one reader each,
/// closed before `plan` returns. Errors: `OffsetResetRefused`, the broker's `KafkaError`s,
/// `PartitionReadStalled`, and the database's `PostgresError`s.
public struct OffsetResetPlanner: Sendable {
    public let consumerGroup: String
    let brokers: String
    let properties: [String: String]
    let logger: Logger

    public init(consumerGroup: String, brokers: String, properties: [String: String] = [:], logger: Logger) {
        self.consumerGroup = consumerGroup
        self.brokers = brokers
        self.properties = properties
        self.logger = logger
    }

    public func plan(
        scope: OffsetResetScope, target: OffsetResetTarget, database: PostgresSession, now: Date = Date()
    ) async throws -> OffsetResetPlan {
        let offsets = StoredPositions(consumerGroup: consumerGroup)
        let stored = try await database.withConnection { db in try offsets.positions(on: db) }
        let partitions = try await self.partitions(in: scope, stored: stored)
        let byPartition = Dictionary(stored.map { ($0.partition, $0) }, uniquingKeysWith: { first, _ in first })

        var rows = try await withThrowingTaskGroup(of: OffsetResetPlan.Row.self) { group in
            for partition in partitions {
                let position = byPartition[partition]
                group.addTask {
                    try await self.row(for: partition, position: position, target: target, now: now)
                }
            }
            var rows: [OffsetResetPlan.Row] = []
            for try await row in group { rows.append(row) }
            return rows
        }
        rows.sort { ($0.partition.topic, $0.partition.partition) < ($1.partition.topic, $1.partition.partition) }

        let group = consumerGroup
        let counted = rows
        let processed = try await database.withConnection { db in
            try counted.map { row in try Self.claims(of: row, consumerGroup: group, on: db) }
        }
        for index in rows.indices { rows[index].alreadyProcessed = processed[index] }
        return OffsetResetPlan(consumerGroup: consumerGroup, rows: rows)
    }

    /// The scope's partitions, checked against the broker.
    private func partitions(in scope: OffsetResetScope, stored: [StoredPosition]) async throws -> [TopicPartition] {
        switch scope {
        case .allTopics:
            guard !stored.isEmpty else {
                throw OffsetResetRefused("group \(consumerGroup) has no stored positions; name the topics with --topic")
            }
            return stored.map(\.partition)
        case .topics(let selections):
            let admin = try await KafkaAdmin(bootstrapServers: brokers, properties: properties, logger: logger)
            do {
                var partitions: [TopicPartition] = []
                for selection in selections {
                    let count: Int32
                    do {
                        count = try await admin.partitionCount(topic: selection.topic, timeout: .seconds(5))
                    } catch let error as KafkaError where error.kind == .unknownTopicOrPartition {
                        throw OffsetResetRefused("topic \(selection.topic) does not exist on \(brokers)")
                    }
                    let wanted = selection.partitions ?? Array(0..<count)
                    if let missing = wanted.first(where: { $0 >= count }) {
                        throw OffsetResetRefused(
                            "topic \(selection.topic) has \(count) partition\(count == 1 ? "" : "s"); there is no partition \(missing)")
                    }
                    partitions += wanted.map { TopicPartition(selection.topic, $0) }
                }
                await admin.close()
                return Array(Set(partitions))
            } catch {
                await admin.close()
                throw error
            }
        }
    }

    private func row(
        for partition: TopicPartition, position: StoredPosition?, target: OffsetResetTarget, now: Date
    ) async throws -> OffsetResetPlan.Row {
        let reader = try await PartitionReader(
            brokers: brokers, properties: properties,
            groupID: "\(consumerGroup)-offsets-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))",
            partition: partition, logger: logger)
        do {
            let low = try await reader.watermarks().low
            let end = try await reader.end()
            let base = position?.nextOffset ?? low
            let offset: Int64
            switch target {
            case .earliest:
                offset = low
            case .latest:
                offset = end
            case .offset(let wanted):
                guard wanted >= low else {
                    throw OffsetResetRefused("offset \(wanted) is before the first offset still stored in \(partition) (\(low))")
                }
                guard wanted <= end else {
                    throw OffsetResetRefused("offset \(wanted) is past the end of \(partition) (\(end))")
                }
                offset = wanted
            case .datetime(let milliseconds):
                offset = try await reader.firstOffset(atOrAfter: milliseconds)
            case .shiftBy(let records):
                let (shifted, overflow) = base.addingReportingOverflow(records)
                offset = overflow ? (records < 0 ? low : end) : min(max(shifted, low), end)
            case .byDuration(let duration):
                let milliseconds = Int64((now.timeIntervalSince1970 * 1000).rounded(.down))
                    - duration.components.seconds * 1000 - duration.components.attoseconds / 1_000_000_000_000_000
                offset = try await reader.firstOffset(atOrAfter: milliseconds)
            }
            await reader.close()
            return OffsetResetPlan.Row(
                partition: partition, current: position?.nextOffset, target: offset, logStart: low, logEnd: end,
                owner: position?.owner, generation: position?.generation)
        } catch {
            await reader.close()
            throw error
        }
    }

    /// Claims recorded for the offsets between where the group stands and the target.
    private static func claims(of row: OffsetResetPlan.Row, consumerGroup: String, on db: PostgresConnection) throws -> Int64 {
        let base = row.current ?? row.logStart
        guard base != row.target else { return 0 }
        return try db.query(
            """
            SELECT count(*) FROM processed_messages
            WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND kafka_offset >= $4 AND kafka_offset < $5
            """,
            [.text(consumerGroup), .text(row.partition.topic), .int32(row.partition.partition),
             .int64(min(base, row.target)), .int64(max(base, row.target))]
        )[0].decode(Int64.self, column: 0)
    }
}

extension OffsetResetTarget {
    /// An ISO 8601 duration of days, hours, minutes and seconds, as `--by-duration` takes it:
    /// `PT30M`, `P1D`, `P1DT12H`, `PT1.5S`; nil for anything else (months and years have no
    /// fixed length and are refused), and for a zero duration.
    public static func duration(iso text: String) -> Duration? {
        var rest = Substring(text.uppercased())
        guard rest.popFirst() == "P", !rest.isEmpty else { return nil }
        var milliseconds: Int64 = 0
        var inTime = false
        var number = ""
        var units: [Character] = []
        for character in rest {
            if character == "T" {
                guard !inTime, number.isEmpty else { return nil }
                inTime = true
                continue
            }
            if character.isASCII && (character.isNumber || character == ".") {
                number.append(character)
                continue
            }
            let scale: Double
            switch (inTime, character) {
            case (false, "W"): scale = 604_800_000
            case (false, "D"): scale = 86_400_000
            case (true, "H"): scale = 3_600_000
            case (true, "M"): scale = 60_000
            case (true, "S"): scale = 1000
            default: return nil
            }
            // Each unit once, in order, with a number; a fraction only on the last (seconds).
            let order = Array("WDHMS")
            guard let value = Double(number), value >= 0,
                units.last.map({ order.firstIndex(of: $0)! < order.firstIndex(of: character)! }) ?? true,
                number.contains(".") ? character == "S" : true
            else { return nil }
            units.append(character)
            let (sum, overflow) = milliseconds.addingReportingOverflow(Int64((value * scale).rounded()))
            guard !overflow, value * scale < 9e15 else { return nil }
            milliseconds = sum
            number = ""
        }
        guard number.isEmpty, !units.isEmpty, !(inTime && units.allSatisfy { "WD".contains($0) }), milliseconds > 0
        else { return nil }
        return .milliseconds(milliseconds)
    }
}
