import ArgumentParser
import Foundation
import OnceEnvelope
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres

struct Offsets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The group's stored positions (consumer_offsets): show them, or rewind or skip one.",
        subcommands: [Show.self, Reset.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per topic and partition of the group: next offset, generation, owner, last update.")

        typealias Format = TableOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Option(help: "table or json.")
        var format: Format = .table

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let offsets = StoredPositions(consumerGroup: settings.consumerGroup)
            let positions = try await database.readAndClose("consumer_offsets") { db in try offsets.positions(on: db) }
            switch format {
            case .json:
                print(
                    JSONWriter.serializeString(
                        .object([
                            "consumer_group": .string(settings.consumerGroup),
                            "partitions": .array(positions.map(Self.json)),
                        ])))
            case .table where positions.isEmpty:
                print("no stored positions for group \(settings.consumerGroup)")
            case .table:
                print(
                    ReportTable(
                        header: ["topic", "partition", "next_offset", "generation", "owner", "updated_at"],
                        rows: positions.map { position in
                            [
                                position.partition.topic, String(position.partition.partition),
                                position.nextOffset.map(String.init) ?? "earliest", String(position.generation),
                                position.owner ?? "-", OperatorText.time(position.updatedAt),
                            ]
                        }).text)
            }
        }

        static func json(_ position: StoredPosition) -> JSONValue {
            .object([
                "topic": .string(position.partition.topic),
                "partition": .integer(Int64(position.partition.partition)),
                "next_offset": position.nextOffset.map { .integer($0) } ?? .null,
                "generation": .integer(position.generation),
                "owner": position.owner.map { .string($0) } ?? .null,
                "updated_at": .string(OperatorText.time(position.updatedAt)),
            ])
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move one partition's stored position; the member that owns it picks it up within seconds.",
            discussion: """
                Give exactly one of --to-offset, --to-earliest, --to-latest, --to-time. The position is \
                checked against the broker (it must lie within the partition's log) and stored under a \
                new generation, keeping the owner: a running owner adopts it within a second or two and \
                fetches from there, without a restart; a stale member cannot commit over it. Rewinding \
                re-reads records through the pipeline (already-applied ones change nothing); skipping \
                forward leaves the skipped records without effect. --to-time takes the first offset \
                whose record timestamp is at or after the time (RFC 3339), found by reading the \
                partition from its start; the end of the log when there is none.
                """)

        typealias Format = TextOrJSON

        @OptionGroup var connection: ConnectionOptions

        @Option(help: "The topic.")
        var topic: String

        @Option(help: "Its partition.")
        var partition: Int32

        @Option(help: "The offset the group goes on from.")
        var toOffset: Int64?

        @Flag(help: "The first offset still stored on the broker.")
        var toEarliest = false

        @Flag(help: "The end of the log: skip everything in it now.")
        var toLatest = false

        @Option(help: "The first offset stamped at or after this RFC 3339 time.")
        var toTime: String?

        @Option(help: "text or json.")
        var format: Format = .text

        func validate() throws {
            guard !topic.isEmpty else { throw ValidationError("--topic is empty") }
            guard partition >= 0 else { throw ValidationError("--partition must be 0 or more") }
            let given = [toOffset != nil, toEarliest, toLatest, toTime != nil].filter { $0 }.count
            guard given == 1 else {
                throw ValidationError("give exactly one of --to-offset, --to-earliest, --to-latest, --to-time")
            }
            if let toOffset, toOffset < 0 { throw ValidationError("--to-offset must be 0 or more") }
            if let toTime, Timestamp.date(toTime) == nil {
                throw ValidationError("--to-time `\(toTime)` is not an RFC 3339 time such as 2026-11-22T10:00:00Z")
            }
        }

        private var target: OffsetTarget {
            if let toOffset { return .offset(toOffset) }
            if toEarliest { return .earliest }
            if toLatest { return .latest }
            let date = Timestamp.date(toTime ?? "") ?? Date()
            return .time(milliseconds: Int64((date.timeIntervalSince1970 * 1000).rounded(.down)))
        }

        func run() async throws {
            let settings = try connection.settings()
            let logger = try connection.makeLogger()
            _ = try settings.requireDatabaseURL()  // a missing setting fails before the broker is asked
            let brokers = try settings.requireBrokers()
            let source = TopicPartition(topic, partition)
            let kafkaLogger = connection.kafkaLogger(logger)

            // The broker first: the offset is checked against the log before anything is stored.
            try await OperatorChecks.checkPartition(source, settings: settings, logger: kafkaLogger)
            let offset: Int64
            do {
                let reader = try await PartitionReader(
                    brokers: brokers, properties: settings.kafkaProperties,
                    groupID: OperatorChecks.readerGroupID(settings.consumerGroup, purpose: "offsets"), partition: source,
                    logger: kafkaLogger)
                do {
                    offset = try await target.resolve(with: reader)
                    await reader.close()
                } catch {
                    await reader.close()
                    throw error
                }
            } catch let error as OffsetOutOfRange {
                throw CommandFailure(error.description)
            } catch {
                throw OperatorChecks.brokerFailure(error, settings: settings)
            }

            let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
            let offsets = StoredPositions(consumerGroup: settings.consumerGroup)
            let before: StoredPosition?
            let after: StoredPosition
            do {
                (before, after) = try await database.withConnection { db in
                    try offsets.reset(source, to: offset, on: db)
                }
                await database.close()
            } catch {
                await database.close()
                throw CommandFailure(oneLine("cannot store the position: \(error)"))
            }

            if format == .json {
                print(
                    JSONWriter.serializeString(
                        .object([
                            "consumer_group": .string(settings.consumerGroup),
                            "before": before.map(Show.json) ?? .null,
                            "after": Show.json(after),
                        ])))
                return
            }
            let was =
                before.map { "\($0.nextOffset.map(String.init) ?? "earliest") (generation \($0.generation))" }
                ?? "(nothing stored)"
            let now = "\(offset) (generation \(after.generation))"
            print("\(source) of group \(settings.consumerGroup): next offset \(was) → \(now)")
            if let owner = after.owner {
                print("owner \(owner) keeps it; while it runs, it goes on from \(offset) within seconds")
            } else {
                print("no member has claimed it; the first to claim it starts at \(offset)")
            }
        }
    }
}
