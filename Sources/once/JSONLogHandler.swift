import Foundation
import Logging
import OnceJSON
import Synchronization

/// Log lines as JSON objects, one per line on standard error (`--log-format json`): `timestamp`
/// (RFC 3339, UTC, milliseconds), `level`, `label`, `message`, `source`, and every metadata field
/// under its own name (`once.partition`, `once.offset`, `once.event_id`, `sqlstate`, …). Writes
/// are serialised by a process-wide lock, so lines never interleave.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    private static let output = Mutex(())

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [String: JSONValue] = [
            "timestamp": .string(Self.timestamp(Date())),
            "level": .string(event.level.rawValue),
            "label": .string(label),
            "message": .string(event.message.description),
            "source": .string(event.source),
        ]
        if let error = event.error { fields["error"] = .string("\(error)") }
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        for (key, value) in merged where fields[key] == nil { fields[key] = Self.json(value) }
        var bytes = JSONWriter.serialize(.object(fields))
        bytes.append(UInt8(ascii: "\n"))
        Self.output.withLock { _ in
            bytes.withUnsafeBytes { buffer in
                var start = 0
                while start < buffer.count {
                    let written = write(STDERR_FILENO, buffer.baseAddress! + start, buffer.count - start)
                    if written <= 0 { break }
                    start += written
                }
            }
        }
    }

    private static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): return .string(text)
        case .stringConvertible(let convertible): return .string(convertible.description)
        case .array(let items): return .array(items.map(json))
        case .dictionary(let entries): return .object(entries.mapValues(json))
        }
    }

    private static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }
}
