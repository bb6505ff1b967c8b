internal import CLibPQ
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Owns one `PGconn *` and finishes it exactly once, in `deinit`.
///
/// Internal: the only type besides `PQResult` that touches libpq pointers. Not thread-safe; it
/// is used by one `PostgresConnection`, which is used by one thread at a time.
final class PQConnection {
    private let raw: OpaquePointer
    /// The notice receiver's context. Stored here so it outlives the `PGconn` that points to it:
    /// `deinit` finishes the connection before stored properties are released.
    private let noticeSink: NoticeSink

    private init(raw: OpaquePointer, noticeSink: NoticeSink) {
        self.raw = raw
        self.noticeSink = noticeSink
        PQsetNoticeReceiver(raw, onNotice, Unmanaged.passUnretained(noticeSink).toOpaque())
    }

    deinit {
        PQfinish(raw)
    }

    /// Opens a session. `parameters` are libpq keywords in order; a `dbname` entry holding a
    /// URL or conninfo string is expanded in place, so entries before it are defaults it can
    /// override and entries after it override it. On failure the handle is finished and the
    /// error carries libpq's message, with any password removed.
    static func connect(parameters: [(String, String)], logger: Logger) throws -> PQConnection {
        let handle: OpaquePointer? = withCStringArray(parameters.map(\.0)) { keywords in
            withCStringArray(parameters.map(\.1)) { values in
                PQconnectdbParams(keywords, values, 1)
            }
        }
        guard let handle else {
            throw PostgresError(kind: .connectFailed, message: "libpq could not allocate a connection")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            var message = PQerrorMessage(handle).map { String(cString: $0) }?.trimmingWhitespace() ?? ""
            if let password = PQpass(handle).map({ String(cString: $0) }), !password.isEmpty {
                message = message.replacingAll(password, with: "***")
            }
            let target = describeTarget(handle)
            PQfinish(handle)
            throw PostgresError(kind: PostgresError.kind(forConnectFailure: message), message: "cannot connect to \(target): \(message)")
        }
        return PQConnection(raw: handle, noticeSink: NoticeSink(logger: logger))
    }

    private static func describeTarget(_ handle: OpaquePointer) -> String {
        func field(_ value: UnsafeMutablePointer<CChar>?) -> String {
            value.map { String(cString: $0) } ?? ""
        }
        let user = field(PQuser(handle))
        let host = field(PQhost(handle))
        let port = field(PQport(handle))
        let database = field(PQdb(handle))
        return "\(user.isEmpty ? "" : user + "@")\(host)\(port.isEmpty ? "" : ":" + port)/\(database)"
    }

    // MARK: State

    var isBad: Bool { PQstatus(raw) == CONNECTION_BAD }

    var backendPID: Int32 { PQbackendPID(raw) }

    var errorMessage: String {
        PQerrorMessage(raw).map { String(cString: $0) }?.trimmingWhitespace() ?? ""
    }

    /// True when no transaction is open (and no command is running).
    var isIdle: Bool { PQtransactionStatus(raw) == PQTRANS_IDLE }

    /// An error from libpq's own message, for failures that produced no result.
    func connectionError(statementIndex: Int? = nil) -> PostgresError {
        let message = errorMessage
        return PostgresError(
            kind: isBad ? .connectionLost : .other,
            message: message.isEmpty ? "libpq reported a failure without a message" : message,
            statementIndex: statementIndex
        )
    }

    /// Quotes an identifier (channel, savepoint or statement name) for splicing into SQL.
    func quoteIdentifier(_ name: String) throws -> String {
        let utf8 = Array(name.utf8)
        guard !utf8.contains(0) else { throw PostgresError.invalidUse("identifier contains a NUL character") }
        let quoted = utf8.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                PQescapeIdentifier(raw, chars.baseAddress, chars.count)
            }
        }
        guard let quoted else { throw connectionError() }
        defer { PQfreemem(quoted) }
        return String(cString: quoted)
    }

    // MARK: Synchronous commands

    /// Runs one or more statements without parameters (simple protocol); returns the last result.
    func exec(_ sql: String) -> PQResult? {
        PQexec(raw, sql).map(PQResult.init)
    }

    func execParams(_ sql: String, _ parameters: PQParameters) -> PQResult? {
        parameters.withPointers { count, types, values, lengths, formats in
            PQexecParams(raw, sql, count, types, values, lengths, formats, 0)
        }.map(PQResult.init)
    }

    func execPrepared(_ name: String, _ parameters: PQParameters) -> PQResult? {
        parameters.withPointers { count, _, values, lengths, formats in
            PQexecPrepared(raw, name, count, values, lengths, formats, 0)
        }.map(PQResult.init)
    }

    func prepare(_ name: String, _ sql: String) -> PQResult? {
        PQprepare(raw, name, sql, 0, nil).map(PQResult.init)
    }

    // MARK: Pipeline and asynchronous primitives

    func enterPipelineMode() -> Bool { PQenterPipelineMode(raw) == 1 }
    func exitPipelineMode() -> Bool { PQexitPipelineMode(raw) == 1 }
    var isInPipelineMode: Bool { PQpipelineStatus(raw) != PQ_PIPELINE_OFF }
    func pipelineSync() -> Bool { PQpipelineSync(raw) == 1 }

    func sendQuery(_ sql: String, _ parameters: PQParameters) -> Bool {
        parameters.withPointers { count, types, values, lengths, formats in
            PQsendQueryParams(raw, sql, count, types, values, lengths, formats, 0)
        } == 1
    }

    func sendPrepared(_ name: String, _ parameters: PQParameters) -> Bool {
        parameters.withPointers { count, _, values, lengths, formats in
            PQsendQueryPrepared(raw, name, count, values, lengths, formats, 0)
        } == 1
    }

    /// The next result of the current command, or nil when it has no more.
    func nextResult() -> PQResult? {
        PQgetResult(raw).map(PQResult.init)
    }

    /// Reads available input without blocking; false when the connection failed.
    func consumeInput() -> Bool { PQconsumeInput(raw) == 1 }

    /// Notifications libpq has already received, freed as they are copied.
    func drainNotifications() -> [PostgresNotification] {
        var notifications: [PostgresNotification] = []
        while let notify = PQnotifies(raw) {
            let channel = notify.pointee.relname.map { String(cString: $0) } ?? ""
            let payload = notify.pointee.extra.map { String(cString: $0) } ?? ""
            notifications.append(
                PostgresNotification(channel: channel, payload: payload, senderPID: notify.pointee.be_pid))
            PQfreemem(notify)
        }
        return notifications
    }

    /// Waits until the socket is readable and/or writable, or the timeout (ms, -1 for none)
    /// passes. Interrupted waits are resumed with the time that is left.
    func waitForSocket(read: Bool, write: Bool, timeoutMilliseconds: Int) throws -> (readable: Bool, writable: Bool) {
        let socket = PQsocket(raw)
        guard socket >= 0 else { throw connectionError() }
        var events: Int16 = 0
        if read { events |= Int16(POLLIN) }
        if write { events |= Int16(POLLOUT) }
        let clock = ContinuousClock()
        let deadline = timeoutMilliseconds >= 0 ? clock.now.advanced(by: .milliseconds(timeoutMilliseconds)) : nil
        while true {
            var descriptor = pollfd(fd: socket, events: events, revents: 0)
            var wait: Int32 = -1
            if let deadline {
                let left = clock.now.duration(to: deadline)
                wait = left <= .zero ? 0 : Int32(clamping: left.roundedUpMilliseconds)
            }
            let count = poll(&descriptor, 1, wait)
            if count < 0 {
                if errno == EINTR { continue }
                throw PostgresError(kind: .other, message: "poll failed with errno \(errno)")
            }
            if count == 0 { return (false, false) }
            let revents = descriptor.revents
            // Errors and hang-ups count as readable: libpq's next read reports them.
            let failed = revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0
            return (revents & Int16(POLLIN) != 0 || failed, revents & Int16(POLLOUT) != 0 || failed)
        }
    }
}

/// Bound parameters laid out for libpq: one byte buffer plus type, length and format arrays.
struct PQParameters {
    private let types: [UInt32]
    private let formats: [Int32]
    private let lengths: [Int32]
    /// Start of each value in `buffer`, or -1 for NULL.
    private let offsets: [Int]
    private let buffer: [UInt8]

    init(_ values: [PostgresValue]) throws {
        guard values.count <= 65_535 else {
            throw PostgresError.invalidUse("a statement takes at most 65535 parameters, not \(values.count)")
        }
        var types: [UInt32] = []
        var formats: [Int32] = []
        var lengths: [Int32] = []
        var offsets: [Int] = []
        var buffer: [UInt8] = []
        for (index, value) in values.enumerated() {
            types.append(value.typeOID)
            let start = buffer.count
            if let encoded = try value.encode(into: &buffer, parameterIndex: index) {
                guard let length = Int32(exactly: encoded.length) else {
                    throw PostgresError.invalidUse("parameter $\(index + 1) is larger than 2 GiB")
                }
                offsets.append(start)
                formats.append(encoded.format)
                lengths.append(length)
            } else {
                offsets.append(-1)
                formats.append(0)
                lengths.append(0)
            }
        }
        self.types = types
        self.formats = formats
        self.lengths = lengths
        self.offsets = offsets
        self.buffer = buffer
    }

    /// Lends libpq's parameter arrays to `body`; the pointers must not escape it.
    func withPointers<R>(
        _ body: (
            Int32, UnsafePointer<UInt32>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?,
            UnsafePointer<Int32>?
        ) -> R
    ) -> R {
        buffer.withUnsafeBytes { bytes in
            let values: [UnsafePointer<CChar>?] = offsets.map { offset in
                guard offset >= 0, let base = bytes.baseAddress else { return nil }
                return (base + offset).assumingMemoryBound(to: CChar.self)
            }
            return values.withUnsafeBufferPointer { values in
                types.withUnsafeBufferPointer { types in
                    lengths.withUnsafeBufferPointer { lengths in
                        formats.withUnsafeBufferPointer { formats in
                            body(
                                Int32(offsets.count), types.baseAddress, values.baseAddress, lengths.baseAddress,
                                formats.baseAddress)
                        }
                    }
                }
            }
        }
    }
}

/// The context of the notice receiver: where server notices and warnings go.
final class NoticeSink {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }

    func receive(severity: String, message: String) {
        let level: Logger.Level = severity == "WARNING" ? .warning : .debug
        logger.log(level: level, "postgres \(severity.lowercased()): \(message)")
    }
}

/// libpq's notice receiver: runs synchronously inside a libpq call on the connection's thread.
private func onNotice(context: UnsafeMutableRawPointer?, result: OpaquePointer?) {
    guard let context, let result else { return }
    let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
    let severity = PQresultErrorField(result, Int32(Character("V").asciiValue!)).map { String(cString: $0) } ?? "NOTICE"
    let message = PQresultErrorField(result, Int32(Character("M").asciiValue!)).map { String(cString: $0) } ?? ""
    sink.receive(severity: severity, message: message)
}

/// Lends a NULL-terminated array of C strings to `body`.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { for copy in copies { free(copy) } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

extension Duration {
    var roundedUpMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let millis = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return attoseconds % 1_000_000_000_000_000 > 0 ? millis + 1 : millis
    }
}
