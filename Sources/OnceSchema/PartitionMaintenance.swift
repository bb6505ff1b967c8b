import Foundation
import Logging
import OncePostgres
import ServiceLifecycle

/// How long the log tables keep their rows: `processed_messages`, published `outbox` rows and
/// resolved `dead_letters` (CONTRACT.md §2). `never` keeps everything (partitions are still
/// created; none is dropped).
///
/// Written as a number and a unit (`7d`, `36h`, `90m`, `30s`), as ISO 8601 (`P7D`, `PT12H`,
/// `P1DT6H`), or `never`; the default is 7 days.
public struct Retention: Sendable, Hashable, CustomStringConvertible {
    /// The window; nil for `never`.
    public var window: Duration?

    public static let `default` = Retention(window: .seconds(7 * 86_400))
    public static let never = Retention(window: nil)

    public init(window: Duration?) {
        self.window = window
    }

    /// Parses the forms above; nil when `text` is none of them.
    public init?(_ text: String) {
        let text = text.trimmingCharacters(in: .whitespaces)
        if text.lowercased() == "never" {
            self = .never
            return
        }
        guard let seconds = Self.seconds(text), seconds >= 0 else { return nil }
        self.window = .seconds(seconds)
    }

    /// The oldest time a row must still be kept for at `now`; nil for `never`.
    public func cutoff(now: Date = Date()) -> Date? {
        window.map { now.addingTimeInterval(-Double($0.components.seconds)) }
    }

    public var description: String {
        guard let window else { return "never" }
        let seconds = window.components.seconds
        for (unit, size) in [("d", Int64(86_400)), ("h", 3600), ("m", 60)] where seconds >= size && seconds % size == 0 {
            return "\(seconds / size)\(unit)"
        }
        return "\(seconds)s"
    }

    private static func seconds(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["d": 86_400, "h": 3600, "m": 60, "s": 1, "w": 7 * 86_400]
        let upper = text.uppercased()
        if upper.hasPrefix("P") {
            // ISO 8601: P[nW][nD][T[nH][nM][nS]]
            var total: Int64 = 0
            var number = ""
            var inTime = false
            var sawPart = false
            for character in upper.dropFirst() {
                if character == "T" {
                    guard !inTime, number.isEmpty else { return nil }
                    inTime = true
                } else if character.isASCII, character.isNumber {
                    number.append(character)
                } else {
                    let unit = Character(character.lowercased())
                    guard let value = Int64(number), let size = units[unit], inTime == (unit != "d" && unit != "w"),
                        !(unit == "m" && !inTime)
                    else { return nil }
                    total += value * size
                    number = ""
                    sawPart = true
                }
            }
            return sawPart && number.isEmpty ? total : nil
        }
        guard let unit = text.last.map({ Character($0.lowercased()) }), let size = units[unit],
            let value = Int64(text.dropLast())
        else { return nil }
        return value * size
    }
}

/// Keeps the time partitions of one database in shape while `once run` runs: creates the
/// partitions ahead of need, and drops those past the retention window (`TimePartitions`),
/// every few minutes (a quarter of the partition interval, at most ten minutes) on a database
/// session of its own. Every process does it; the partition lock makes one prune run at a
/// time, and the others skip that round. Failures are logged and tried again next round.
/// A `Service`: `run` returns on graceful shutdown or cancellation.
public final class PartitionMaintenance: Service, Sendable {
    private let databaseURL: String
    private let retention: Retention
    private let logger: Logger

    public init(databaseURL: String, retention: Retention, logger: Logger = Logger(label: "once.retention")) {
        self.databaseURL = databaseURL
        self.retention = retention
        self.logger = logger
    }

    public func run() async throws {
        let session = try await PostgresSession.connect(
            configuration: PostgresConfiguration(url: databaseURL, applicationName: "once-retention"),
            logger: logger, threadName: "once-retention-db")
        // Pruning detaches and drops partitions, which only the tables' owner may; a role with
        // the run-time grants alone (`once grants`) leaves it to `once prune` run by the owner.
        var owner: Bool?
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var interval: Duration = .seconds(60)
            do {
                if owner == nil {
                    let owns = try await session.withConnection { db in try TimePartitions.ownsTables(on: db) }
                    if !owns {
                        logger.notice(
                            "this role does not own the tables: partitions past the retention window are left for `once prune`, run as the owner")
                    }
                    owner = owns
                }
                interval = try await round(session, prune: owner ?? false)
            } catch let failure as PostgresError where failure.remedy != nil {
                logger.critical("partition maintenance cannot succeed, stopping: \(failure)", metadata: .failure(failure))
                await session.close()
                throw failure
            } catch {
                logger.warning("partition maintenance failed: \(error)", metadata: .failure(error))
            }
            let pause = interval
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) } } catch { break }
        }
        await session.close()
    }

    /// One round; returns the pause before the next.
    private func round(_ session: PostgresSession, prune: Bool) async throws -> Duration {
        let retention = self.retention
        let logger = self.logger
        return try await session.withConnection { db in
            try TimePartitions.ensure(on: db)
            if prune, let cutoff = retention.cutoff() {
                do {
                    for dropped in try TimePartitions.prune(before: cutoff, on: db) {
                        logger.notice(
                            "pruned \(dropped.name): past the retention window of \(retention)",
                            metadata: ["once.partition_rows": "\(dropped.estimatedRows)", "once.partition_bytes": "\(dropped.bytes)"])
                    }
                } catch TimePartitionsError.pruneRunning {
                    logger.debug("prune skipped: another process is pruning")
                }
            }
            let width = try TimePartitions.layout(on: db).width
            return max(.seconds(1), min(width / 4, .seconds(600)))
        }
    }
}

extension PartitionMaintenance: CustomStringConvertible {
    /// What the service group's logs name it by: never its database URL.
    public var description: String { "PartitionMaintenance(retention: \(retention))" }
}
