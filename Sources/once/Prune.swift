import ArgumentParser
import Foundation
import OnceJSON
import OnceKafka
import OncePostgres
import OnceSchema

struct Prune: AsyncParsableCommand {
    typealias Format = TextOrJSON

    static let configuration = CommandConfiguration(
        abstract: "Drop the time partitions past the retention window.",
        discussion: """
            Drops whole partitions of processed_messages, outbox and dead_letters whose every row
            belongs before the window (default 7 days, --retention or ONCE_RETENTION), each
            detached concurrently so that running members never wait for it. Never touched:
            the business keys (credit_ledger, batch_action_devices, jobs), unresolved dead
            letters, outbox partitions with a row not yet published, and the current interval.
            A record redelivered or replayed after its claim was pruned still has no second
            effect: the business keys make it a duplicate. `once run` prunes the same way on its
            own every few minutes; this command is for doing it now, or further back.

            Exit status: 0 done (or nothing to do); 1 an error; 2 another prune is running.
            """)

    @OptionGroup var connection: DatabaseOptions

    @Option(help: "Drop what is older than this instead of the retention window: 7d, 36h, P7D.")
    var olderThan: String?

    @Option(help: "The retention window (env ONCE_RETENTION; default 7d).")
    var retention: String?

    @Flag(help: "Say what would be dropped; drop nothing.")
    var dryRun = false

    @Option(help: "text or json.")
    var format: Format = .text

    func validate() throws {
        if let olderThan {
            guard let parsed = Retention(olderThan), parsed.window != nil else {
                throw ValidationError("--older-than: `\(olderThan)` is not a duration: write 7d, 36h, 90m, P7D or PT12H")
            }
        }
    }

    func run() async throws {
        let settings = try connection.settings(retention: retention)
        let logger = try connection.makeLogger()
        let window = olderThan.flatMap(Retention.init) ?? settings.retention
        guard let cutoff = window.cutoff() else {
            throw CommandFailure("the retention is `never`: nothing is pruned (pass --older-than to prune anyway)")
        }
        let database = try await connectDatabase(try settings.requireDatabaseURL(), logger: logger)
        let dryRun = self.dryRun
        let started = ContinuousClock.now
        let partitions: [TimePartitions.Partition]
        do {
            partitions = try await database.withConnection { db in
                dryRun ? try TimePartitions.prunable(before: cutoff, on: db) : try TimePartitions.prune(before: cutoff, on: db)
            }
            await database.close()
        } catch TimePartitionsError.pruneRunning {
            await database.close()
            printToStandardError("once prune: \(TimePartitionsError.pruneRunning)")
            throw ExitCode(2)
        } catch {
            await database.close()
            throw CommandFailure(describeQueryFailure(error, doing: "the prune"))
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18

        switch format {
        case .json:
            print(
                JSONWriter.serializeString(
                    .object([
                        "retention": .string(window.description),
                        "cutoff": .string(OperatorText.time(cutoff)),
                        "dry_run": .bool(dryRun),
                        "seconds": .number(seconds),
                        "partitions": .array(partitions.map(Self.json)),
                    ])))
        case .text:
            print(Self.text(partitions, window: window, cutoff: cutoff, dryRun: dryRun, seconds: seconds))
        }
    }

    static func json(_ partition: TimePartitions.Partition) -> JSONValue {
        .object([
            "table": .string(partition.table),
            "partition": .string(partition.name),
            "from": partition.lower.map { .string(OperatorText.time($0)) } ?? .null,
            "to": partition.upper.map { .string(OperatorText.time($0)) } ?? .null,
            "estimated_rows": .integer(partition.estimatedRows),
            "bytes": .integer(partition.bytes),
        ])
    }

    static func text(
        _ partitions: [TimePartitions.Partition], window: Retention, cutoff: Date, dryRun: Bool, seconds: Double
    ) -> String {
        var lines = ["Prune · retention \(window) · everything before \(OperatorText.time(cutoff))\(dryRun ? " · dry run" : "")"]
        guard !partitions.isEmpty else {
            lines.append("nothing to prune: no partition lies wholly before the cutoff")
            return lines.joined(separator: "\n")
        }
        lines.append("")
        lines += partitionTable(partitions).lines(indent: 2)
        let rows = partitions.map { max(0, $0.estimatedRows) }.reduce(0, +)
        let bytes = partitions.map(\.bytes).reduce(0, +)
        let count = "\(partitions.count) partition\(partitions.count == 1 ? "" : "s")"
        lines.append("")
        lines.append(
            dryRun
                ? "would drop \(count): about \(rows) rows, \(humanBytes(bytes))"
                : "dropped \(count): about \(rows) rows, \(humanBytes(bytes)), in \(String(format: "%.2f", seconds)) s")
        return lines.joined(separator: "\n")
    }
}

/// Partitions as `once prune` and `once status` list them.
func partitionTable(_ partitions: [TimePartitions.Partition]) -> ReportTable {
    var table = ReportTable([
        ("TABLE", .left), ("PARTITION", .left), ("FROM", .left), ("TO", .left), ("ROWS≈", .right), ("SIZE", .right),
    ])
    for partition in partitions {
        table.append([
            partition.table, partition.name,
            partition.lower.map(OperatorText.time) ?? (partition.isUnresolvedDeadLetters ? "unresolved" : "-"),
            partition.upper.map(OperatorText.time) ?? "-",
            partition.estimatedRows < 0 ? "?" : String(partition.estimatedRows), humanBytes(partition.bytes),
        ])
    }
    return table
}

/// A size for people: `512 B`, `8.0 kB`, `350 MB`, `7.0 GB` (powers of 1000).
func humanBytes(_ bytes: Int64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : value >= 100 ? "\(Int(value.rounded())) \(units[unit])" : String(format: "%.1f %@", value, units[unit])
}
