import Foundation
import OnceDomain
import OnceJSON
import OnceKafka
import OnceOperations
import OncePipeline
import OncePostgres

/// Replays a fully processed range: every partition of the batched run's topic, from offset 0
/// to the last offset below its stored position, under the batched run's group. Every record's
/// event id is already in `processed_messages`: the duplicate-storm path, where nothing may
/// change.
///
/// Measured two ways, one partition after another:
/// - the engine of `once replay` (`OnceCore.PartitionReplay`: a hand-assigned reader, the
///   pipeline's transaction per batch), in the driver, each partition timed from the start of
///   its read to the commit of its last batch; this is the figure held against the target;
/// - `once replay --topic T --partition P --from-offset 0 --to-offset N-1` as a process, timed
///   from launch to exit (start-up, broker and database connections and shutdown included),
///   with its printed outcomes checked.
struct ReplayResult: Codable, Sendable {
    var method: String
    var topic: String
    var partitions: Int
    var records: Int
    var batchSize: Int
    var outcomes: [String: Int]
    /// Sum over partitions of the engine's read-to-last-commit time.
    var seconds: Double
    var eventsPerSecond: Double
    /// `once replay` processes, launch to exit, summed over partitions.
    var commandSeconds: Double
    var commandEventsPerSecond: Double
    var commandDuplicates: Int
    var checks: [Check]
}

enum ReplayStep {
    static func run(
        database: BenchDatabase, group: String, topic: String, expectation: Expectation, batchSize: Int,
        context: BenchContext
    ) async throws -> ReplayResult {
        var registry = HandlerRegistry()
        Domain.register(into: &registry)
        let processor = RecordProcessor(consumerGroup: group, registry: registry)
        let session = try await PostgresSession.connect(
            configuration: PostgresConfiguration(url: database.url, applicationName: "once-bench-replay"),
            threadName: "once-bench-replay")

        var outcomes = ProcessReport()
        var engine = Duration.zero
        for partition in expectation.recordsPerPartition.keys.sorted() {
            let tp = TopicPartition(topic, partition)
            let last = Int64(expectation.recordsPerPartition[partition]!) - 1
            let reader = try await PartitionReader(
                brokers: context.brokers, groupID: "bench-\(context.runID)-replay", partition: tp)
            let replay = PartitionReplay(processor: processor, database: session, reader: reader)
            let started = ContinuousClock.now
            let report = try await replay.run(.init(partition: tp, from: 0, through: last, batchSize: batchSize))
            engine += ContinuousClock.now - started
            await reader.close()
            guard report.recordsRead == last + 1 else {
                throw BenchFailure("replay of \(tp) read \(report.recordsRead) records, not \(last + 1)")
            }
            outcomes.add(report.outcomes)
        }
        await session.close()

        // The same ranges through the command line, as an operator runs it.
        var command = Duration.zero
        var commandDuplicates = 0
        for partition in expectation.recordsPerPartition.keys.sorted() {
            let last = expectation.recordsPerPartition[partition]! - 1
            let started = ContinuousClock.now
            let (status, output) = try await context.once.run(
                [
                    "replay", "--database-url", database.url, "--brokers", context.brokers, "--group", group,
                    "--topic", topic, "--partition", String(partition), "--from-offset", "0", "--to-offset",
                    String(last),
                    "--batch-size", String(batchSize), "--format", "json", "--log-level", "warning",
                ], logName: "replay-\(partition)")
            command += ContinuousClock.now - started
            guard status == 0 else {
                throw BenchFailure(
                    "once replay of partition \(partition) exited with \(status):\n\(output.suffix(2000))")
            }
            commandDuplicates += duplicates(inReplayOutput: output)
        }

        var checks = try Checks.consumer(database, group: group, expectation: expectation)
        checks.append(
            Check(
                name: "replayed records counted as duplicates", expected: Int64(expectation.records),
                actual: Int64(outcomes[.duplicate])))
        checks.append(Check(name: "replayed records applied again", expected: 0, actual: Int64(outcomes[.applied])))
        checks.append(Check(name: "outbox rows written by the replay", expected: 0, actual: Int64(outcomes.outboxRows)))
        checks.append(
            Check(
                name: "once replay: records counted as duplicates", expected: Int64(expectation.records),
                actual: Int64(commandDuplicates)))
        return ReplayResult(
            method: "OnceCore.PartitionReplay (the engine of once replay) in the driver; and once replay as a process",
            topic: topic, partitions: expectation.recordsPerPartition.count, records: expectation.records,
            batchSize: batchSize,
            outcomes: Dictionary(uniqueKeysWithValues: outcomes.counts.map { ($0.key.rawValue, $0.value) }),
            seconds: engine.seconds, eventsPerSecond: Double(expectation.records) / engine.seconds,
            commandSeconds: command.seconds, commandEventsPerSecond: Double(expectation.records) / command.seconds,
            commandDuplicates: commandDuplicates, checks: checks)
    }

    /// The `duplicate` count of `once replay --format json`'s output (its last line).
    static func duplicates(inReplayOutput output: String) -> Int {
        for line in output.split(separator: "\n").reversed() {
            guard case .object(let fields)? = try? JSONParser.parse(Array(line.utf8)),
                case .object(let outcomes)? = fields["outcomes"], case .integer(let count)? = outcomes["duplicate"]
            else { continue }
            return Int(count)
        }
        return 0
    }
}
