import Foundation
import OnceDomain
import OncePipeline
import OnceSchema

/// Where `once` finds its database, broker and group, resolved from flags, then environment
/// variables, then an optional config file (flags win over the environment over the file).
///
/// The file has one `key = value` per line (`#` starts a comment): `database_url`, `brokers`,
/// `group_id`, `topics` (comma-separated), `retention` (`Retention`), and `kafka.<property>` for
/// any librdkafka property. The environment has `ONCE_DATABASE_URL`, `ONCE_KAFKA_BROKERS`,
/// `ONCE_GROUP_ID`, `ONCE_TOPICS`, `ONCE_RETENTION`, `ONCE_CONFIG` (the file) and
/// `ONCE_KAFKA_PROPERTIES` (`name=value,name=value`; a comma not followed by `name=` belongs to
/// the value before it, so `debug=broker,topic,fetch=…` keeps librdkafka's own lists whole).
///
/// Secrets need not appear on a command line or in the environment: the database URL may come
/// from a file (`--database-url-file`, `ONCE_DATABASE_URL_FILE`, `database_url_file`; the
/// password also from libpq's own `PGPASSWORD` or `PGPASSFILE`/`~/.pgpass` when the URL has
/// none), and librdkafka properties (`sasl.password`, `ssl.key.password`) from a file of
/// `name=value` lines (`--kafka-properties-file`, `ONCE_KAFKA_PROPERTIES_FILE`,
/// `kafka_properties_file`). Errors never quote a value.
public struct Settings: Sendable, Hashable {
    public var databaseURL: String?
    public var brokers: String?
    public var consumerGroup = PipelineDefaults.consumerGroup
    public var topics = PipelineDefaults.topics
    public var kafkaProperties: [String: String] = [:]
    /// How long processed ids, published outbox rows and resolved dead letters are kept.
    public var retention = Retention.default

    /// Values given on the command line; nil where a flag was not given.
    public struct Flags: Sendable, Hashable {
        public var databaseURL: String?
        public var databaseURLFile: String?
        public var brokers: String?
        public var consumerGroup: String?
        public var topics: String?
        public var configFile: String?
        public var kafkaProperties: [String] = []
        public var kafkaPropertiesFile: String?
        public var retention: String?
        public init() {}
    }

    public init() {}

    /// Resolves the settings; `readFile` is injected for tests.
    public static func resolve(
        flags: Flags,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        readFile: (String) throws -> String = { try String(contentsOfFile: $0, encoding: .utf8) }
    ) throws(SettingsError) -> Settings {
        var settings = Settings()
        if let path = flags.configFile ?? environment["ONCE_CONFIG"] {
            let text: String
            do { text = try readFile(path) } catch { throw SettingsError("cannot read config file \(path): \(error.localizedDescription)") }
            for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
                guard let (key, value) = pair(line, separator: "=") else {
                    throw SettingsError("\(path):\(index + 1): expected `key = value`")
                }
                try settings.apply(key: key, value: value, origin: "\(path):\(index + 1)", readFile: readFile)
            }
        }
        if let path = environment["ONCE_DATABASE_URL_FILE"] {
            try settings.apply(key: "database_url_file", value: path, origin: "ONCE_DATABASE_URL_FILE", readFile: readFile)
        }
        if let value = environment["ONCE_DATABASE_URL"] { settings.databaseURL = value }
        if let path = environment["ONCE_KAFKA_PROPERTIES_FILE"] {
            try settings.apply(key: "kafka_properties_file", value: path, origin: "ONCE_KAFKA_PROPERTIES_FILE", readFile: readFile)
        }
        if let value = environment["ONCE_KAFKA_BROKERS"] { settings.brokers = value }
        if let value = environment["ONCE_GROUP_ID"] { try settings.apply(key: "group_id", value: value, origin: "ONCE_GROUP_ID") }
        if let value = environment["ONCE_TOPICS"] { try settings.apply(key: "topics", value: value, origin: "ONCE_TOPICS") }
        if let value = environment["ONCE_RETENTION"] { try settings.apply(key: "retention", value: value, origin: "ONCE_RETENTION") }
        if let value = environment["ONCE_KAFKA_PROPERTIES"] {
            for item in Self.propertyList(value) {
                guard let (name, propertyValue) = pair(item, separator: "=") else {
                    throw SettingsError("ONCE_KAFKA_PROPERTIES: an item is not name=value")
                }
                settings.kafkaProperties[name] = propertyValue
            }
        }
        if let path = flags.databaseURLFile {
            try settings.apply(key: "database_url_file", value: path, origin: "--database-url-file", readFile: readFile)
        }
        if let value = flags.databaseURL { settings.databaseURL = value }
        if let path = flags.kafkaPropertiesFile {
            try settings.apply(key: "kafka_properties_file", value: path, origin: "--kafka-properties-file", readFile: readFile)
        }
        if let value = flags.brokers { settings.brokers = value }
        if let value = flags.consumerGroup { try settings.apply(key: "group_id", value: value, origin: "--group") }
        if let value = flags.topics { try settings.apply(key: "topics", value: value, origin: "--topics") }
        if let value = flags.retention { try settings.apply(key: "retention", value: value, origin: "--retention") }
        for item in flags.kafkaProperties {
            guard let (name, value) = pair(item, separator: "=") else {
                throw SettingsError("--kafka-property: expected name=value, got an item without `=`")
            }
            settings.kafkaProperties[name] = value
        }
        return settings
    }

    private mutating func apply(
        key: String, value: String, origin: String,
        readFile: (String) throws -> String = { try String(contentsOfFile: $0, encoding: .utf8) }
    ) throws(SettingsError) {
        switch key {
        case "database_url": databaseURL = value
        case "database_url_file":
            let url = try Self.secretFile(value, origin: origin, readFile: readFile)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard !url.isEmpty else { throw SettingsError("\(origin): \(value) is empty") }
            databaseURL = url
        case "kafka_properties_file":
            let text = try Self.secretFile(value, origin: origin, readFile: readFile)
            for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = rawLine.trimmingCharacters(in: .whitespaces)
                guard !line.isEmpty, !line.hasPrefix("#") else { continue }
                guard let (name, propertyValue) = pair(line, separator: "=") else {
                    throw SettingsError("\(value):\(index + 1): expected name=value")
                }
                kafkaProperties[name] = propertyValue
            }
        case "brokers": brokers = value
        case "group_id":
            guard !value.isEmpty else { throw SettingsError("\(origin): the group id is empty") }
            consumerGroup = value
        case "topics":
            let list = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !list.isEmpty else { throw SettingsError("\(origin): no topics given") }
            topics = list
        case "retention":
            guard let parsed = Retention(value) else {
                throw SettingsError("\(origin): `\(value)` is not a retention window: write 7d, 36h, 90m, P7D, PT12H or never")
            }
            retention = parsed
        case _ where key.hasPrefix("kafka.") && key.count > 6:
            kafkaProperties[String(key.dropFirst(6))] = value
        default:
            throw SettingsError("\(origin): unknown setting `\(key)`")
        }
    }

    /// A file holding a secret; the error names the file and the OS's reason, never its content.
    private static func secretFile(
        _ path: String, origin: String, readFile: (String) throws -> String
    ) throws(SettingsError) -> String {
        do {
            return try readFile(path)
        } catch {
            throw SettingsError("\(origin): cannot read \(path): \(FileReadFailure.reason(readingAt: path, error))")
        }
    }

    /// `name=value,name=value` cut at the commas that start a new `name=`; a first item
    /// without `=` stays whole, for the caller to reject.
    static func propertyList(_ text: String) -> [String] {
        var items: [String] = []
        for piece in text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            if !items.isEmpty, !startsProperty(piece) {
                items[items.count - 1] += "," + piece
            } else {
                items.append(piece)
            }
        }
        return items.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    }

    private static func startsProperty(_ piece: String) -> Bool {
        guard let equals = piece.firstIndex(of: "=") else { return false }
        let name = piece[..<equals].trimmingCharacters(in: .whitespaces)
        return !name.isEmpty && name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-" }
    }

    /// The database URL, or an error telling how to give one. libpq takes a `postgresql://` (or
    /// `postgres://`) URL or `key=value` pairs, and would read anything else as a database
    /// name; such a value is refused here (without quoting it: it may hold a password).
    public func requireDatabaseURL() throws(SettingsError) -> String {
        guard let databaseURL, !databaseURL.isEmpty else {
            throw SettingsError("no database: pass --database-url or set ONCE_DATABASE_URL")
        }
        let isURL = databaseURL.hasPrefix("postgresql://") || databaseURL.hasPrefix("postgres://")
        let isPairs = databaseURL.split(separator: " ").allSatisfy { $0.contains("=") && !$0.hasPrefix("=") }
        guard isURL || isPairs else {
            throw SettingsError(
                "the database URL is neither a postgresql:// URL nor key=value pairs (e.g. postgresql://user@host:5432/db or host=… dbname=…)")
        }
        return databaseURL
    }

    /// The bootstrap servers, or an error telling how to give them.
    public func requireBrokers() throws(SettingsError) -> String {
        guard let brokers, !brokers.isEmpty else {
            throw SettingsError("no broker: pass --brokers or set ONCE_KAFKA_BROKERS")
        }
        return brokers
    }
}

private func pair(_ text: String, separator: Character) -> (String, String)? {
    guard let index = text.firstIndex(of: separator) else { return nil }
    let key = text[..<index].trimmingCharacters(in: .whitespaces)
    let value = text[text.index(after: index)...].trimmingCharacters(in: .whitespaces)
    return key.isEmpty ? nil : (key, value)
}

/// A configuration mistake, with where it was made.
public struct SettingsError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
