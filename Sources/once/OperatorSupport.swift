import ArgumentParser
import Foundation
import Logging
import OnceJSON
import OnceKafka
import OncePipeline
import OncePostgres

// What the operator commands (replay, offsets, dlq) share: checking a partition on the broker,
// quiet Kafka clients, tables, pretty JSON, hex dumps, times and a progress line.

extension ConnectionOptions {
    /// The logger for Kafka clients of a short command: librdkafka's own lines (connection
    /// refused, retries) only when a log level was asked for; the command reports failures itself.
    func kafkaLogger(_ base: Logger) -> Logger {
        guard logLevel == nil && ProcessInfo.processInfo.environment["ONCE_LOG_LEVEL"] == nil else { return base }
        var quiet = base
        quiet.logLevel = .critical
        return quiet
    }
}

/// Who an operator action is recorded as (`dead_letters.resolved_by`): `--by`, else the
/// login name and host, as `sudo` leaves them.
enum OperatorName {
    static var current: String {
        let environment = ProcessInfo.processInfo.environment
        let user = environment["SUDO_USER"] ?? environment["USER"] ?? environment["LOGNAME"] ?? "unknown"
        return "\(user)@\(ProcessInfo.processInfo.hostName)"
    }
}

/// `--format` of a command that prints a sentence or a report.
enum TextOrJSON: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// `--format` of a command that prints rows.
enum TableOrJSON: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

extension PostgresSession {
    /// Runs one read and closes the session; a failure becomes one line naming what was read.
    func readAndClose<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        do {
            let value = try await withConnection(body)
            await close()
            return value
        } catch let failure as CommandFailure {
            await close()
            throw failure
        } catch {
            await close()
            throw CommandFailure(oneLine("cannot read \(what): \(error)"))
        }
    }
}

enum OperatorChecks {
    /// Fails with one line unless the broker answers within seconds, has the topic, and the
    /// topic has the partition.
    static func checkPartition(_ partition: TopicPartition, settings: Settings, logger: Logger) async throws {
        let brokers = try settings.requireBrokers()
        let admin = try await KafkaAdmin(
            bootstrapServers: brokers, properties: settings.kafkaProperties, logger: logger)
        let count: Int32
        do {
            count = try await admin.partitionCount(topic: partition.topic, timeout: .seconds(5))
            await admin.close()
        } catch let error as KafkaError where error.kind == .unknownTopicOrPartition {
            await admin.close()
            throw CommandFailure("topic \(partition.topic) does not exist on \(brokers)")
        } catch {
            await admin.close()
            throw CommandFailure("cannot reach the broker at \(brokers): \(error)")
        }
        guard partition.partition < count else {
            let has = "\(partition.topic) has \(count) partition\(count == 1 ? "" : "s") (0…\(count - 1))"
            throw CommandFailure("partition \(partition.partition) is out of range: \(has)")
        }
    }

    /// A group id of its own for a reader outside the group, e.g. `once-replay-3f9a1c2e`.
    static func readerGroupID(_ group: String, purpose: String) -> String {
        "\(group)-\(purpose)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    /// Turns a failure of a broker call into one line.
    static func brokerFailure(_ error: any Error, settings: Settings) -> CommandFailure {
        if let failure = error as? CommandFailure { return failure }
        if let kafka = error as? KafkaError, [.timedOut, .transport].contains(kafka.kind) {
            return CommandFailure("cannot reach the broker at \(settings.brokers ?? "?"): \(kafka)")
        }
        return CommandFailure(oneLine("\(error)"))
    }
}

enum OperatorText {
    /// One line, at most `limit` characters.
    static func clipped(_ text: String, _ limit: Int) -> String {
        let flat = oneLine(text)
        return flat.count <= limit ? flat : String(flat.prefix(limit - 1)) + "…"
    }

    /// The count of each outcome, as JSON.
    static func outcomes(_ report: ProcessReport) -> JSONValue {
        .object(
            Dictionary(uniqueKeysWithValues: EventOutcome.allCases.map { ($0.rawValue, .integer(Int64(report[$0]))) }))
    }

    /// RFC 3339 in UTC, to the second.
    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}

/// A progress line on standard error, redrawn in place; drawn only when standard error is a
/// terminal, so nothing of it reaches a pipe or a log file.
final class OperatorProgress {
    private let enabled = isatty(STDERR_FILENO) == 1
    private var lastDrawn: ContinuousClock.Instant?
    private var drawn = false

    func show(_ text: String, force: Bool = false) {
        guard enabled else { return }
        let now = ContinuousClock.now
        if !force, let lastDrawn, now - lastDrawn < .milliseconds(100) { return }
        lastDrawn = now
        drawn = true
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
    }

    /// A bar of `width` cells, `fraction` of them full.
    static func bar(_ fraction: Double, width: Int = 30) -> String {
        let full = Int((max(0, min(1, fraction)) * Double(width)).rounded(.down))
        return "[" + String(repeating: "#", count: full) + String(repeating: "-", count: width - full) + "]"
    }

    /// Clears the line before the result is printed.
    func finish() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
