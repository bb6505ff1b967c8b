import Foundation
import Logging

/// The log of a short-lived Kafka client that checks the broker before a command starts.
///
/// librdkafka reports a failed connection (refused, a TLS handshake that fails, the wrong
/// protocol) as log lines and error callbacks, several per attempt, while the request itself
/// only ends in a generic "broker transport failure". This keeps them off standard error and
/// remembers the first connection failure librdkafka described, so that the command can fail
/// with one line that says why. Everything still goes to `forward` at debug level.
final class BrokerCheckLog: @unchecked Sendable {
    // @unchecked Sendable: `lock` guards `failure` and `complaint`.
    private let lock = NSLock()
    private var failure: String?
    private var complaint: String?
    private let forward: Logger

    init(forward: Logger) { self.forward = forward }

    /// A logger for the checking client.
    var logger: Logger {
        var logger = Logger(label: forward.label) { _ in Handler(log: self) }
        logger.logLevel = .info
        return logger
    }

    /// What librdkafka said about the failure, when it said anything.
    var reason: String? {
        lock.lock()
        defer { lock.unlock() }
        return failure ?? complaint
    }

    fileprivate func record(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata?) {
        forward.debug("\(message)", metadata: metadata)
        lock.lock()
        defer { lock.unlock() }
        if failure == nil, case .string("FAIL")? = metadata?["rdkafka.facility"] {
            // "[thrd:…]: ssl://host:port/bootstrap: SSL handshake failed: …": the part after the thread.
            if let range = message.range(of: "]: ") { failure = String(message[range.upperBound...]) } else { failure = message }
        } else if complaint == nil, level >= .warning {
            complaint = message
        }
    }

    private struct Handler: LogHandler {
        let log: BrokerCheckLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var all = metadata
            if let extra = event.metadata { all.merge(extra) { _, new in new } }
            log.record(event.level, "\(event.message)", all)
        }
    }
}
