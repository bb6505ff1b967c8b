import ArgumentParser
import Foundation
import OnceDomain
import OnceJSON
import OnceKafka

struct Produce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Produce JSON-lines event files (fixtures, re-drives) to their input topics.",
        discussion: """
            Each line of each file is one record value, sent as it is (a line that is not JSON is sent too: \
            poison is part of the fixtures). A record goes to the input topic of its envelope type \
            (batch.completed and credits.granted → completion-events, batch_action.requested → \
            batch-action-events, job.requested → job-events) unless --topic is given; other lines go to \
            --fallback-topic. The key is the event's business key (batch, grant, batch action or request \
            id), else its event id, so that one key stays in one partition.
            """)

    typealias Format = TextOrJSON

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Send every record to this topic.")
    var topic: String?

    @Option(help: "Topic for lines with no known type.")
    var fallbackTopic = "completion-events"

    @Option(help: "Send each file this many times in a row (exact redeliveries).")
    var `repeat` = 1

    @Option(help: "text or json.")
    var format: Format = .text

    @Argument(help: "JSON-lines files.")
    var files: [String]

    func validate() throws {
        guard self.repeat >= 1 else { throw ValidationError("--repeat must be 1 or more") }
        guard !files.isEmpty else { throw ValidationError("give at least one file") }
    }

    func run() async throws {
        let settings = try connection.settings()
        _ = try connection.makeLogger()
        let brokers = try settings.requireBrokers()
        var records: [KafkaOutgoingRecord] = []
        for file in files {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw CommandFailure("cannot read \(file): \(FileReadFailure.reason(readingAt: file, error))")
            }
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                records.append(route(Array(line.utf8)))
            }
        }
        let producer = try KafkaProducer(configuration: {
            var configuration = KafkaProducerConfiguration(bootstrapServers: brokers)
            configuration.properties = settings.kafkaProperties
            configuration.messageTimeout = .seconds(15)
            return configuration
        }())
        var delivered = Deliveries()
        for _ in 0..<self.repeat {
            for chunk in stride(from: 0, to: records.count, by: 5000) {
                for result in try await producer.send(Array(records[chunk..<min(chunk + 5000, records.count)])) {
                    delivered.record(result)
                }
            }
        }
        await producer.close()
        switch format {
        case .json: print(JSONWriter.serializeString(delivered.json(files: files.count, repeats: self.repeat)))
        case .text: print("produced \(delivered.sent) records from \(files.count) file(s)")
        }
        guard delivered.failures.isEmpty else {
            throw CommandFailure(
                "\(delivered.failed) records failed: \(delivered.failures.keys.sorted().joined(separator: "; "))")
        }
    }

    /// What the broker acknowledged, per topic and partition, and what failed, per error.
    struct Deliveries {
        /// Records acknowledged by one partition, and the lowest and highest offset it gave them.
        struct Partition {
            var records = 0
            var firstOffset = Int64.max
            var lastOffset = Int64.min

            mutating func add(_ offset: Int64) {
                records += 1
                firstOffset = min(firstOffset, offset)
                lastOffset = max(lastOffset, offset)
            }
        }

        private(set) var partitions: [TopicPartition: Partition] = [:]
        /// Records that failed, by the error's text.
        private(set) var failures: [String: Int] = [:]

        var sent: Int { partitions.values.map(\.records).reduce(0, +) }
        var failed: Int { failures.values.reduce(0, +) }

        mutating func record(_ result: Result<KafkaDeliveryReport, KafkaError>) {
            switch result {
            case .success(let report):
                partitions[TopicPartition(report.topic, report.partition), default: Partition()].add(report.offset)
            case .failure(let error):
                failures["\(error)", default: 0] += 1
            }
        }

        /// The text line's counts, with where the records went (partitions sorted by topic,
        /// then partition) and the failures' errors.
        func json(files: Int, repeats: Int) -> JSONValue {
            .object([
                "files": .integer(Int64(files)),
                "repeat": .integer(Int64(repeats)),
                "produced": .integer(Int64(sent)),
                "failed": .integer(Int64(failed)),
                "partitions": .array(
                    partitions.sorted { $0.key < $1.key }.map { key, partition in
                        .object([
                            "topic": .string(key.topic),
                            "partition": .integer(Int64(key.partition)),
                            "records": .integer(Int64(partition.records)),
                            "first_offset": .integer(partition.firstOffset),
                            "last_offset": .integer(partition.lastOffset),
                        ])
                    }),
                "failures": .array(
                    failures.sorted { $0.key < $1.key }.map {
                        .object(["error": .string($0.key), "records": .integer(Int64($0.value))])
                    }),
            ])
        }
    }

    private func route(_ value: [UInt8]) -> KafkaOutgoingRecord {
        guard case .object(let envelope)? = try? JSONParser.parse(value) else {
            return KafkaOutgoingRecord(topic: topic ?? fallbackTopic, value: value)
        }
        let type = envelope["type"]?.stringValue ?? ""
        let destination: String
        switch type {
        case "batch.completed", "credits.granted": destination = "completion-events"
        case "batch_action.requested": destination = "batch-action-events"
        case "job.requested": destination = "job-events"
        default: destination = fallbackTopic
        }
        let data = envelope["data"]?.objectValue ?? [:]
        let key = ["batch_id", "grant_id", "batch_action_id", "request_id"].lazy.compactMap { data[$0]?.stringValue }.first
            ?? envelope["event_id"]?.stringValue
        return KafkaOutgoingRecord(topic: topic ?? destination, key: key.map { Array($0.utf8) }, value: value)
    }
}
