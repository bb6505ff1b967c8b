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

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Send every record to this topic.")
    var topic: String?

    @Option(help: "Topic for lines with no known type.")
    var fallbackTopic = "completion-events"

    @Option(help: "Send each file this many times in a row (exact redeliveries).")
    var `repeat` = 1

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
        var sent = 0
        var failures: [String: Int] = [:]
        for _ in 0..<self.repeat {
            for chunk in stride(from: 0, to: records.count, by: 5000) {
                for result in try await producer.send(Array(records[chunk..<min(chunk + 5000, records.count)])) {
                    switch result {
                    case .success: sent += 1
                    case .failure(let error): failures["\(error)", default: 0] += 1
                    }
                }
            }
        }
        await producer.close()
        print("produced \(sent) records from \(files.count) file(s)")
        guard failures.isEmpty else {
            throw CommandFailure("\(failures.values.reduce(0, +)) records failed: \(failures.keys.sorted().joined(separator: "; "))")
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
