import ArgumentParser
import Foundation
import Logging

/// The flags of a command that talks to the database only (migrate, grants, prune, devices
/// import): where the database is, the config file, and logging.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "libpq URL of the database (env ONCE_DATABASE_URL). Its password may instead come from PGPASSWORD or PGPASSFILE.")
    var databaseURL: String?

    @Option(help: "A file holding the database URL, so that no password is on the command line (env ONCE_DATABASE_URL_FILE).")
    var databaseURLFile: String?

    @Option(name: .customLong("config"), help: "A config file of `key = value` lines (env ONCE_CONFIG).")
    var configFile: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical (env ONCE_LOG_LEVEL).")
    var logLevel: String?

    @Option(help: "text, or json for one JSON object per line (env ONCE_LOG_FORMAT; default text).")
    var logFormat: String?

    func settings(retention: String? = nil) throws -> Settings {
        try resolve(flags(retention: retention))
    }

    func flags(retention: String? = nil) -> Settings.Flags {
        var flags = Settings.Flags()
        flags.retention = retention
        flags.databaseURL = databaseURL
        flags.databaseURLFile = databaseURLFile
        flags.configFile = configFile
        return flags
    }

    func resolve(_ flags: Settings.Flags) throws -> Settings {
        do {
            return try Settings.resolve(flags: flags)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// Sends log lines to standard error at the chosen level; returns the root logger.
    func makeLogger(label: String = "once") throws -> Logger {
        let text = logLevel ?? ProcessInfo.processInfo.environment["ONCE_LOG_LEVEL"] ?? "info"
        guard let level = Logger.Level(rawValue: text) else {
            throw ValidationError("--log-level: `\(text)` is not one of trace, debug, info, notice, warning, error, critical")
        }
        let format = logFormat ?? ProcessInfo.processInfo.environment["ONCE_LOG_FORMAT"] ?? "text"
        guard format == "text" || format == "json" else {
            throw ValidationError("--log-format: `\(format)` is not text or json")
        }
        LoggingBootstrap.once(level: level, json: format == "json")
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// The flags every command that talks to the database and the broker shares: the database's,
/// and the broker, group, topics and librdkafka properties.
struct ConnectionOptions: ParsableArguments {
    @OptionGroup var database: DatabaseOptions

    @Option(help: "Kafka bootstrap servers (env ONCE_KAFKA_BROKERS).")
    var brokers: String?

    @Option(name: .customLong("group"), help: "Consumer group id (env ONCE_GROUP_ID; default once).")
    var consumerGroup: String?

    @Option(help: "Comma-separated input topics (env ONCE_TOPICS).")
    var topics: String?

    @Option(name: .customLong("kafka-property"), help: "A librdkafka property as name=value; repeatable.")
    var kafkaProperties: [String] = []

    @Option(help: "A file of librdkafka name=value lines, for secrets such as sasl.password (env ONCE_KAFKA_PROPERTIES_FILE).")
    var kafkaPropertiesFile: String?

    var logLevel: String? { database.logLevel }

    func settings(retention: String? = nil) throws -> Settings {
        var flags = database.flags(retention: retention)
        flags.brokers = brokers
        flags.consumerGroup = consumerGroup
        flags.topics = topics
        flags.kafkaProperties = kafkaProperties
        flags.kafkaPropertiesFile = kafkaPropertiesFile
        return try database.resolve(flags)
    }

    func makeLogger(label: String = "once") throws -> Logger {
        try database.makeLogger(label: label)
    }
}

/// LoggingSystem.bootstrap may run only once per process.
enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false  // only touched from the command's start, before any task

    static func once(level: Logger.Level, json: Bool) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// A failure to report as one line on standard error with a non-zero exit.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
