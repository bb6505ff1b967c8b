import OnceKafka
import OnceOutbox
import OncePipeline
import OncePostgres
import OnceSchema

/// Where a consumer group stands: per partition its stored position against the broker's log
/// end, what became of the events so far, what the outbox still has to publish, and the dead
/// letters nobody has resolved.
///
/// The database part is read in one read-only snapshot (`readDatabase`); the broker part
/// (`readBroker`) may fail on its own, in which case the report still holds every stored
/// position, with the watermarks and lag unknown and `brokerNotes` saying why.
public struct StatusReport: Sendable, Hashable {
    /// One partition of the group's topics.
    public struct Partition: Sendable, Hashable {
        public var topic: String
        public var partition: Int32
        /// True when `consumer_offsets` has a row for it.
        public var isStored: Bool
        /// The stored next offset; nil when nothing was committed yet (or there is no row): the
        /// group starts at the earliest offset.
        public var nextOffset: Int64?
        /// The member that claimed it last, and the claim's generation.
        public var owner: String?
        public var generation: Int64?
        /// When the row last changed, RFC 3339 UTC, and how many seconds before the snapshot.
        public var updatedAt: String?
        public var updatedSecondsAgo: Double?
        /// The broker's watermarks; nil when the broker could not tell.
        public var lowWatermark: Int64?
        public var highWatermark: Int64?

        public init(
            topic: String, partition: Int32, isStored: Bool = false, nextOffset: Int64? = nil, owner: String? = nil,
            generation: Int64? = nil, updatedAt: String? = nil, updatedSecondsAgo: Double? = nil,
            lowWatermark: Int64? = nil, highWatermark: Int64? = nil
        ) {
            self.topic = topic
            self.partition = partition
            self.isStored = isStored
            self.nextOffset = nextOffset
            self.owner = owner
            self.generation = generation
            self.updatedAt = updatedAt
            self.updatedSecondsAgo = updatedSecondsAgo
            self.lowWatermark = lowWatermark
            self.highWatermark = highWatermark
        }

        public var topicPartition: TopicPartition { TopicPartition(topic, partition) }

        /// Records not yet processed: high watermark − next offset, or − the low watermark when
        /// nothing is stored yet. Nil when the broker's answer is missing. Never negative: a stored
        /// position past the reported end means the broker under-reports its end (Tansu 0.6 does,
        /// for multi-record batches), and nothing is waiting.
        public var lag: Int64? {
            guard let highWatermark else { return nil }
            if let nextOffset { return max(0, highWatermark - nextOffset) }
            return lowWatermark.map { max(0, highWatermark - $0) }
        }
    }

    /// Unpublished outbox rows.
    public struct OutboxBacklog: Sendable, Hashable {
        public var unpublished: Int64
        /// The oldest unpublished row's `created_at`, RFC 3339 UTC, and its age in seconds.
        public var oldestCreatedAt: String?
        public var oldestAgeSeconds: Double?

        public init(unpublished: Int64 = 0, oldestCreatedAt: String? = nil, oldestAgeSeconds: Double? = nil) {
            self.unpublished = unpublished
            self.oldestCreatedAt = oldestCreatedAt
            self.oldestAgeSeconds = oldestAgeSeconds
        }
    }

    public var consumerGroup: String
    /// The database snapshot's time, RFC 3339 UTC.
    public var asOf: String
    /// Every partition of the group's topics that is stored or that the broker knows, by topic
    /// and partition.
    public var partitions: [Partition]
    /// `processed_messages` rows of the group per outcome; every outcome is present.
    public var outcomes: [EventOutcome: Int64]
    public var outbox: OutboxBacklog
    /// Unresolved dead letters of the group by `reason_code` and age.
    public var deadLetterSummary: DeadLetterSummary
    /// Why the broker part is missing or incomplete; empty when the broker answered for
    /// everything.
    public var brokerNotes: [String]
    /// The time partitions of the log tables and their interval (`TimePartitions`).
    public var timePartitions: [TimePartitions.Partition] = []
    public var partitionLayout: TimePartitions.Layout?

    public init(
        consumerGroup: String, asOf: String, partitions: [Partition] = [], outcomes: [EventOutcome: Int64] = [:],
        outbox: OutboxBacklog = OutboxBacklog(), deadLetters: DeadLetterSummary = DeadLetterSummary(reasons: []),
        brokerNotes: [String] = []
    ) {
        self.consumerGroup = consumerGroup
        self.asOf = asOf
        self.partitions = partitions
        self.outcomes = outcomes
        self.outbox = outbox
        self.deadLetterSummary = deadLetters
        self.brokerNotes = brokerNotes
    }

    /// The sum of the known lags (nil when none is known).
    public var totalLag: Int64? {
        let known = partitions.compactMap(\.lag)
        return known.isEmpty ? nil : known.reduce(0, +)
    }

    /// Unresolved dead letters of the group per `reason_code`.
    public var deadLetters: [String: Int64] {
        Dictionary(deadLetterSummary.reasons.map { ($0.reason, $0.count) }, uniquingKeysWith: +)
    }

    public var unresolvedDeadLetters: Int64 { deadLetterSummary.total }

    /// Partitions whose stored position lies past the broker's reported end: the broker
    /// under-reports its high watermark there (Tansu 0.6 does after a multi-record batch), so
    /// HIGH and LAG read low. Real Kafka brokers never show this.
    public var positionsPastReportedEnd: [Partition] {
        partitions.filter { p in
            guard let next = p.nextOffset, let high = p.highWatermark else { return false }
            return next > high
        }
    }

    /// True when the broker answered for every partition.
    public var isComplete: Bool { brokerNotes.isEmpty }

    // MARK: - The database part

    /// Reads the group's stored positions, outcomes, outbox backlog and dead letters in one
    /// snapshot. Blocking: call it on the connection's thread.
    public static func readDatabase(consumerGroup group: String, on db: PostgresConnection) throws -> StatusReport {
        try db.transaction(isolation: .repeatableRead) { tx in
            _ = try tx.execute("SET TRANSACTION READ ONLY")
            let utc = { (column: String) in
                "to_char((\(column)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            }
            let asOf = try tx.query("SELECT \(utc("now()"))")[0].decode(String.self, column: 0)

            let partitions = try tx.query(
                """
                SELECT topic, partition, next_offset, owner, generation, \(utc("updated_at")),
                       extract(epoch FROM now() - updated_at)::float8
                FROM consumer_offsets WHERE consumer_group = $1
                ORDER BY topic, partition
                """, [.text(group)]
            ).map { row in
                Partition(
                    topic: try row.decode(String.self, column: 0), partition: try row.decode(Int32.self, column: 1),
                    isStored: true, nextOffset: try row.decode(Int64?.self, column: 2),
                    owner: try row.decode(String?.self, column: 3), generation: try row.decode(Int64.self, column: 4),
                    updatedAt: try row.decode(String.self, column: 5),
                    updatedSecondsAgo: try row.decode(Double.self, column: 6))
            }

            var outcomes = Dictionary(uniqueKeysWithValues: EventOutcome.allCases.map { ($0, Int64(0)) })
            for row in try tx.query(
                "SELECT outcome, count(*) FROM processed_messages WHERE consumer_group = $1 GROUP BY outcome",
                [.text(group)])
            {
                guard let outcome = EventOutcome(rawValue: try row.decode(String.self, column: 0)) else { continue }
                outcomes[outcome] = try row.decode(Int64.self, column: 1)
            }

            // The outbox belongs to the database, not to a group: every relay publishes all of it.
            let backlog = try tx.query(
                """
                SELECT count(*), \(utc("min(created_at)")), extract(epoch FROM now() - min(created_at))::float8
                FROM \(OutboxRelay.unpublishedRows)
                """)[0]
            let outbox = OutboxBacklog(
                unpublished: try backlog.decode(Int64.self, column: 0),
                oldestCreatedAt: try backlog.decode(String?.self, column: 1),
                oldestAgeSeconds: try backlog.decode(Double?.self, column: 2))

            let deadLetters = try DeadLetterQueue(consumerGroup: group).summary(on: tx)

            var report = StatusReport(
                consumerGroup: group, asOf: asOf, partitions: partitions, outcomes: outcomes, outbox: outbox,
                deadLetters: deadLetters)
            report.timePartitions = try TimePartitions.list(on: tx)
            report.partitionLayout = try TimePartitions.layout(on: tx)
            return report
        }
    }

    // MARK: - The broker part

    /// What the broker said about the topics: partition counts, watermarks, and what failed.
    public struct BrokerView: Sendable, Hashable {
        /// Partitions per topic the broker knows.
        public var partitionCounts: [String: Int32] = [:]
        public var watermarks: [TopicPartition: KafkaWatermarks] = [:]
        /// One line per failure; the first unreachable answer stops the questions.
        public var notes: [String] = []

        public init(
            partitionCounts: [String: Int32] = [:], watermarks: [TopicPartition: KafkaWatermarks] = [:],
            notes: [String] = []
        ) {
            self.partitionCounts = partitionCounts
            self.watermarks = watermarks
            self.notes = notes
        }
    }

    /// Asks the broker for the partitions of `topics` and the watermarks of each one and of
    /// `stored` (positions of topics the broker may no longer have). Never throws: what fails
    /// is a note. Once the broker does not answer (transport error, timeout) nothing more is
    /// asked, so an unreachable broker costs one `timeout`.
    public static func readBroker(
        topics: [String], stored: [TopicPartition], admin: KafkaAdmin, brokers: String,
        timeout: Duration = .seconds(5)
    ) async -> BrokerView {
        var view = BrokerView()
        var partitions = Set(stored)
        var allTopics = topics
        for partition in stored where !allTopics.contains(partition.topic) { allTopics.append(partition.topic) }

        func unreachable(_ error: KafkaError) -> Bool {
            error.kind == .transport || error.kind == .timedOut
        }
        for topic in allTopics {
            do {
                let count = try await admin.partitionCount(topic: topic, timeout: timeout)
                view.partitionCounts[topic] = count
                for partition in 0..<count { partitions.insert(TopicPartition(topic, partition)) }
            } catch let error as KafkaError where error.kind == .unknownTopicOrPartition {
                view.notes.append("topic \(topic) does not exist on the broker at \(brokers)")
            } catch let error as KafkaError where unreachable(error) {
                view.notes.append("the broker at \(brokers) is unreachable (\(error.description)): lag unknown")
                return view
            } catch {
                view.notes.append("the broker at \(brokers) did not list topic \(topic): \(error)")
                return view
            }
        }
        let known = partitions.filter { partition in
            view.partitionCounts[partition.topic].map { partition.partition < $0 } ?? false
        }
        for partition in known.sorted() {
            do {
                let watermarks = try await admin.watermarks(partition, timeout: timeout)
                view.watermarks[partition] = watermarks
            } catch let error as KafkaError where unreachable(error) {
                view.notes.append("the broker at \(brokers) stopped answering at \(partition) (\(error)): lag unknown")
                return view
            } catch {
                view.notes.append("no watermarks for \(partition): \(error)")
            }
        }
        return view
    }

    /// Adds the broker's view: every partition it knows (stored or not), and the watermarks of
    /// each.
    public mutating func merge(_ view: BrokerView) {
        var byPartition = Dictionary(uniqueKeysWithValues: partitions.map { ($0.topicPartition, $0) })
        for (topic, count) in view.partitionCounts {
            for index in 0..<count where byPartition[TopicPartition(topic, index)] == nil {
                byPartition[TopicPartition(topic, index)] = Partition(topic: topic, partition: index)
            }
        }
        for (key, watermarks) in view.watermarks {
            byPartition[key]?.lowWatermark = watermarks.low
            byPartition[key]?.highWatermark = watermarks.high
        }
        partitions = byPartition.values.sorted { $0.topicPartition < $1.topicPartition }
        brokerNotes += view.notes
    }
}
