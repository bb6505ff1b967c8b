import Logging

/// How to reach PostgreSQL. A `Sendable` value with defaults for everything but the URL.
public struct PostgresConfiguration: Sendable {
    /// A libpq connection URL (`postgresql://user@host:port/db?…`) or conninfo string
    /// (`host=… dbname=…`). Its settings override the defaults below.
    public var url: String
    /// libpq's `connect_timeout`, in whole seconds (libpq treats less than 2 s as 2 s).
    public var connectTimeout: Duration
    /// Shown in `pg_stat_activity`.
    public var applicationName: String
    /// Idle time before TCP keepalive probes, so that a vanished server is noticed.
    public var keepaliveIdle: Duration
    /// Server settings (`name` → `value`, no spaces) for every session this configuration
    /// opens, reconnects included: sent at connect time, as libpq's `options`.
    public var settings: [String: String]

    public init(
        url: String,
        connectTimeout: Duration = .seconds(10),
        applicationName: String = "once",
        keepaliveIdle: Duration = .seconds(30),
        settings: [String: String] = [:]
    ) {
        self.url = url
        self.connectTimeout = connectTimeout
        self.applicationName = applicationName
        self.keepaliveIdle = keepaliveIdle
        self.settings = settings
    }
}

/// A transaction isolation level for `PostgresConnection.transaction`.
public enum PostgresIsolationLevel: Sendable, Hashable {
    case readCommitted
    case repeatableRead
    case serializable

    var sql: String {
        switch self {
        case .readCommitted: return "READ COMMITTED"
        case .repeatableRead: return "REPEATABLE READ"
        case .serializable: return "SERIALIZABLE"
        }
    }
}

/// One PostgreSQL session over libpq, with blocking calls.
///
/// Threading: every call blocks its thread until the server answers, so call it only from a
/// dedicated thread (a `ThreadConfined` resource, as `PostgresSession` does), never from the
/// Swift cooperative pool. It is not `Sendable`: one owner thread at a time.
///
/// Ownership: it owns its libpq handle and finishes it when closed or deinitialised.
///
/// Failures throw `PostgresError`. When the server drops the session, the call that notices
/// throws kind `.connectionLost`; the next call opens a new session transparently (prepared
/// statements are prepared again on first use, LISTENs are renewed). Inside `transaction` no
/// reconnect happens: the transaction is gone, and calls keep throwing `.connectionLost` until
/// `transaction` returns. Session state set with plain SQL (`SET`, temp tables, a `BEGIN` sent
/// by hand) does not survive a reconnect.
///
/// Every session runs with `TimeZone` UTC, `DateStyle` ISO, `bytea_output` hex and client
/// encoding UTF-8, which the decoders rely on.
public final class PostgresConnection {
    /// Where this connection connects (and reconnects) to.
    public let configuration: PostgresConfiguration
    private let logger: Logger
    /// The current session; nil after `close()` or after a reconnect attempt failed.
    private var handle: PQConnection?
    /// Set when the session is gone or in an unknown state; the next call reconnects.
    private var isBroken = false
    private var isClosed = false
    private var isInTransaction = false
    /// Statements registered with `prepare`, by name, and those prepared in the current session.
    private var preparedStatements: [String: String] = [:]
    private var preparedInSession: Set<String> = []
    private var listeningChannels: Set<String> = []

    /// How many times this connection has opened a new session after losing one.
    public private(set) var reconnectCount = 0

    /// Connects to `url` (a libpq URL or conninfo) with default settings.
    /// Throws `PostgresError` of kind `.connectFailed` when no session can be opened.
    public convenience init(url: String, logger: Logger = Logger(label: "once.postgres")) throws {
        try self.init(configuration: PostgresConfiguration(url: url), logger: logger)
    }

    /// Connects with `configuration`; throws `PostgresError` of kind `.connectFailed` when no
    /// session can be opened (libpq's message, without the password).
    public init(configuration: PostgresConfiguration, logger: Logger = Logger(label: "once.postgres")) throws {
        self.configuration = configuration
        self.logger = logger
        self.handle = try Self.open(configuration, logger: logger)
    }

    /// The server process of the current session; nil while disconnected.
    public var backendPID: Int32? {
        guard let handle, !isBroken, !handle.isBad else { return nil }
        return handle.backendPID
    }

    /// Ends the session now instead of at deinit. Later calls throw `.invalidUse`.
    public func close() {
        handle = nil
        isClosed = true
    }

    // MARK: Sessions

    private static func open(_ configuration: PostgresConfiguration, logger: Logger) throws -> PQConnection {
        let timeout = max(2, (configuration.connectTimeout.roundedUpMilliseconds + 999) / 1000)
        let idle = max(1, configuration.keepaliveIdle.roundedUpMilliseconds / 1000)
        // Entries before `dbname` are defaults the URL may override; entries after it are forced.
        let options = configuration.settings.sorted { $0.key < $1.key }.map { "-c \($0.key)=\($0.value)" }
        let parameters: [(String, String)] = [
            ("options", options.joined(separator: " ")),
            ("connect_timeout", String(timeout)),
            ("application_name", configuration.applicationName),
            ("keepalives", "1"),
            ("keepalives_idle", String(idle)),
            ("keepalives_interval", "10"),
            ("keepalives_count", "3"),
            ("dbname", configuration.url),
            ("client_encoding", "UTF8"),
        ]
        let handle = try PQConnection.connect(parameters: parameters, logger: logger)
        let settings = "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, MDY'; SET bytea_output TO 'hex'"
        let result = handle.exec(settings)
        guard let result, result.isSuccess else {
            let cause = result?.makeError(connectionBad: handle.isBad).message ?? handle.errorMessage
            throw PostgresError(kind: .connectFailed, message: "cannot set up the session: \(cause)")
        }
        return handle
    }

    /// The current session, opening a new one when the last was lost.
    private func live() throws -> PQConnection {
        if let handle, !isBroken, !handle.isBad { return handle }
        if isClosed { throw PostgresError.invalidUse("the connection is closed") }
        if isInTransaction {
            throw PostgresError(
                kind: .connectionLost,
                message: "the connection was lost inside a transaction; it reconnects after transaction() returns"
            )
        }
        handle = nil
        preparedInSession = []
        isBroken = false
        logger.info("reconnecting to PostgreSQL")
        let fresh = try Self.open(configuration, logger: logger)
        for channel in listeningChannels.sorted() {
            _ = try check(fresh.exec("LISTEN \(try fresh.quoteIdentifier(channel))"), on: fresh)
        }
        handle = fresh
        reconnectCount += 1
        return fresh
    }

    /// Turns a libpq result into a `PostgresResult` or throws its error; notes lost sessions.
    private func check(_ result: PQResult?, on handle: PQConnection, statementIndex: Int? = nil) throws
        -> PostgresResult
    {
        guard let result else { throw noteFailure(handle.connectionError(statementIndex: statementIndex)) }
        if result.isSuccess { return result.copyOut() }
        if result.isCopy {
            isBroken = true  // the session is stuck in COPY; start a new one on the next call
            throw PostgresError.invalidUse("COPY is not supported through query(); the session will be reset")
        }
        throw noteFailure(result.makeError(connectionBad: handle.isBad, statementIndex: statementIndex))
    }

    private func noteFailure(_ error: PostgresError) -> PostgresError {
        if error.kind == .connectionLost { isBroken = true }
        return error
    }

    private func checkSQL(_ sql: String) throws {
        if sql.utf8.contains(0) { throw PostgresError.invalidUse("SQL text contains a NUL character") }
    }

    // MARK: Statements

    /// Runs one statement with bound parameters (`$1`, `$2`, …) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) throws -> PostgresResult {
        try checkSQL(sql)
        let bound = try PQParameters(parameters)
        let handle = try live()
        return try check(handle.execParams(sql, bound), on: handle)
    }

    /// Runs one statement with bound parameters and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int {
        try query(sql, parameters).affectedRows
    }

    /// Registers a named prepared statement. The server infers parameter types from the SQL:
    /// cast where that is ambiguous (`$1::bigint`). The statement is prepared again, on first
    /// use, in every new session after a reconnect. Re-preparing a name with the same SQL does
    /// nothing; with different SQL it replaces the statement.
    public func prepare(name: String, sql: String) throws {
        if preparedStatements[name] == sql, preparedInSession.contains(name) { return }
        guard !name.isEmpty else { throw PostgresError.invalidUse("a prepared statement needs a name") }
        try checkSQL(name)
        try checkSQL(sql)
        let handle = try live()
        if preparedInSession.contains(name) {
            _ = try check(handle.exec("DEALLOCATE \(try handle.quoteIdentifier(name))"), on: handle)
            preparedInSession.remove(name)
        }
        preparedStatements[name] = sql
        try ensurePrepared(name, on: handle)
    }

    /// Runs a statement registered with `prepare` and returns its rows.
    @discardableResult
    public func queryPrepared(name: String, _ parameters: [PostgresValue] = []) throws -> PostgresResult {
        try checkSQL(name)
        let bound = try PQParameters(parameters)
        let handle = try live()
        try ensurePrepared(name, on: handle)
        return try check(handle.execPrepared(name, bound), on: handle)
    }

    /// Runs a statement registered with `prepare` and returns the number of rows it affected.
    @discardableResult
    public func executePrepared(name: String, _ parameters: [PostgresValue] = []) throws -> Int {
        try queryPrepared(name: name, parameters).affectedRows
    }

    /// Runs `sql` as the prepared statement `name`, preparing it on its first use in each
    /// session: for the statements a hot path repeats, which are then parsed once per session
    /// (and planned once, when PostgreSQL settles on a generic plan after five runs).
    @discardableResult
    public func query(prepared name: String, _ sql: String, _ parameters: [PostgresValue] = []) throws -> PostgresResult {
        try prepare(name: name, sql: sql)
        return try queryPrepared(name: name, parameters)
    }

    /// Forgets a prepared statement, here and on the server.
    public func deallocate(name: String) throws {
        preparedStatements[name] = nil
        guard preparedInSession.contains(name) else { return }
        let handle = try live()
        preparedInSession.remove(name)
        _ = try check(handle.exec("DEALLOCATE \(try handle.quoteIdentifier(name))"), on: handle)
    }

    private func ensurePrepared(_ name: String, on handle: PQConnection) throws {
        guard !preparedInSession.contains(name), let sql = preparedStatements[name] else { return }
        _ = try check(handle.prepare(name, sql), on: handle)
        preparedInSession.insert(name)
    }

    // MARK: Transactions

    /// Runs `body` inside BEGIN … COMMIT and returns its value.
    ///
    /// If `body` throws, the transaction is rolled back and the error rethrown. If a statement
    /// inside failed and `body` swallowed the error, COMMIT turns into a rollback and this
    /// throws (SQLSTATE 25P02). If the session is lost at COMMIT, the outcome is unknown and the
    /// error is `.connectionLost`. Transactions do not nest; use `savepoint` inside.
    public func transaction<T>(
        isolation: PostgresIsolationLevel? = nil,
        _ body: (PostgresConnection) throws -> T
    ) throws -> T {
        guard !isInTransaction else {
            throw PostgresError.invalidUse("transaction() does not nest; use savepoint() inside it")
        }
        let handle = try live()
        guard handle.isIdle else {
            throw PostgresError.invalidUse("a transaction is already open on this connection")
        }
        _ = try check(handle.exec(isolation.map { "BEGIN ISOLATION LEVEL \($0.sql)" } ?? "BEGIN"), on: handle)
        isInTransaction = true
        defer { isInTransaction = false }
        let value: T
        do {
            value = try body(self)
        } catch {
            rollBackAfterFailure()
            throw error
        }
        let session = try live()
        let commit = try check(session.exec("COMMIT"), on: session)
        if commit.commandTag == "ROLLBACK" {
            throw PostgresError(
                kind: .other,
                sqlState: "25P02",
                message: "the transaction was rolled back at COMMIT because a statement in it had failed"
            )
        }
        return value
    }

    private func rollBackAfterFailure() {
        guard let handle, !isBroken, !handle.isBad, !handle.isIdle else { return }
        if let result = handle.exec("ROLLBACK"), result.isSuccess { return }
        isBroken = true  // ROLLBACK failed: the session's state is unknown, so start a new one
    }

    /// `name` quoted as an SQL identifier by libpq, for the few statements that cannot bind it
    /// as a parameter (GRANT, LISTEN).
    public func quoteIdentifier(_ name: String) throws -> String {
        try live().quoteIdentifier(name)
    }

    /// Runs `body` inside SAVEPOINT … RELEASE; if it throws, rolls back to the savepoint (the
    /// enclosing transaction's earlier work stays) and rethrows. Only inside a transaction.
    public func savepoint<T>(_ name: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        let handle = try live()
        let identifier = try handle.quoteIdentifier(name)
        _ = try check(handle.exec("SAVEPOINT \(identifier)"), on: handle)
        let value: T
        do {
            value = try body(self)
        } catch {
            if let session = self.handle, !isBroken, !session.isBad {
                // ROLLBACK TO keeps the savepoint; RELEASE drops it so that the name can be reused.
                // If this fails the transaction stays aborted and its COMMIT becomes a rollback.
                _ = session.exec("ROLLBACK TO SAVEPOINT \(identifier); RELEASE SAVEPOINT \(identifier)")
            }
            throw error
        }
        let session = try live()
        _ = try check(session.exec("RELEASE SAVEPOINT \(identifier)"), on: session)
        return value
    }

    // MARK: Pipeline

    /// Sends all statements that `build` adds in one go, with a single sync, then reads every
    /// result: one round trip for the lot. Returns one `PostgresResult` per statement, in order.
    ///
    /// Without an explicit BEGIN, the statements of one pipeline form one implicit transaction:
    /// if one fails, none of them takes effect. The first failure is thrown as `PostgresError`
    /// with its `statementIndex`; the later statements are skipped by the server. Either way
    /// the connection is left out of pipeline mode and ready for the next call (or, if its
    /// state is in doubt, marked to reconnect).
    public func pipeline(_ build: (inout PostgresPipeline) throws -> Void) throws -> [PostgresResult] {
        var pipeline = PostgresPipeline()
        try build(&pipeline)
        guard !pipeline.statements.isEmpty else { return [] }
        let handle = try live()
        for case .prepared(let name, _) in pipeline.statements {
            try ensurePrepared(name, on: handle)
        }
        guard handle.enterPipelineMode() else { throw noteFailure(handle.connectionError()) }
        do {
            return try run(pipeline, on: handle)
        } catch {
            if handle.isInPipelineMode, !handle.exitPipelineMode() {
                isBroken = true
            }
            if let error = error as? PostgresError { throw noteFailure(error) }
            throw error
        }
    }

    private func run(_ pipeline: PostgresPipeline, on handle: PQConnection) throws -> [PostgresResult] {
        // Abandoning a pipeline half-way leaves results in flight: start a new session next time.
        func abandon(_ error: PostgresError) -> PostgresError {
            isBroken = true
            return error
        }
        // Blocking mode: when the socket is full, libpq waits for it to drain and meanwhile
        // reads what the server sends, so neither side can block on a full buffer.
        for (index, statement) in pipeline.statements.enumerated() {
            let sent: Bool
            switch statement {
            case .query(let sql, let parameters): sent = handle.sendQuery(sql, parameters)
            case .prepared(let name, let parameters): sent = handle.sendPrepared(name, parameters)
            }
            guard sent else { throw abandon(handle.connectionError(statementIndex: index)) }
        }
        guard handle.pipelineSync() else { throw abandon(handle.connectionError()) }

        var results: [PostgresResult] = []
        results.reserveCapacity(pipeline.statements.count)
        var firstError: PostgresError?
        for index in pipeline.statements.indices {
            guard let result = handle.nextResult() else {
                let error = handle.connectionError(statementIndex: index)
                throw abandon(handle.isBad ? error : PostgresError(kind: .other, message: "pipeline result missing"))
            }
            if result.isSuccess {
                results.append(result.copyOut())
            } else if result.isPipelineAborted {
                // Skipped because an earlier statement failed; that failure is reported.
            } else if result.isCopy {
                throw abandon(PostgresError.invalidUse("COPY is not supported in a pipeline"))
            } else {
                let error = result.makeError(connectionBad: handle.isBad, statementIndex: index)
                if error.kind == .connectionLost { throw abandon(error) }
                if firstError == nil { firstError = error }
            }
            // Each statement's results end with a NULL.
            if handle.nextResult() != nil {
                throw abandon(PostgresError(kind: .other, message: "unexpected extra result in pipeline"))
            }
        }
        guard let sync = handle.nextResult(), sync.isPipelineSync else {
            throw abandon(
                handle.isBad
                    ? handle.connectionError() : PostgresError(kind: .other, message: "pipeline sync missing"))
        }
        guard handle.exitPipelineMode() else { throw abandon(handle.connectionError()) }
        if let firstError { throw firstError }
        return results
    }

    // MARK: LISTEN / NOTIFY

    /// Subscribes this connection to `channel` (renewed automatically after a reconnect;
    /// notifications sent while disconnected are lost).
    public func listen(channel: String) throws {
        let handle = try live()
        _ = try check(handle.exec("LISTEN \(try handle.quoteIdentifier(channel))"), on: handle)
        listeningChannels.insert(channel)
    }

    /// Unsubscribes this connection from `channel`.
    public func unlisten(channel: String) throws {
        listeningChannels.remove(channel)
        let handle = try live()
        _ = try check(handle.exec("UNLISTEN \(try handle.quoteIdentifier(channel))"), on: handle)
    }

    /// Sends a notification through `pg_notify`, with channel and payload bound as parameters.
    /// Inside a transaction it is delivered at COMMIT.
    public func notify(channel: String, payload: String = "") throws {
        try query("SELECT pg_notify($1, $2)", [.text(channel), .text(payload)])
    }

    /// Returns the notifications received so far, or waits up to `timeout` for at least one;
    /// returns an empty array when none came. Blocks the calling thread while waiting.
    public func waitForNotifications(timeout: Duration) throws -> [PostgresNotification] {
        let handle = try live()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            guard handle.consumeInput() else {
                var error = handle.connectionError()
                if error.kind != .connectionLost, handle.isBad { error.kind = .connectionLost }
                throw noteFailure(error)
            }
            let notifications = handle.drainNotifications()
            if !notifications.isEmpty { return notifications }
            let left = clock.now.duration(to: deadline)
            if left <= .zero { return [] }
            let milliseconds = Int(clamping: left.roundedUpMilliseconds)
            _ = try handle.waitForSocket(read: true, write: false, timeoutMilliseconds: milliseconds)
        }
    }
}

@available(*, unavailable, message: "PostgresConnection blocks and is not thread-safe; share a PostgresSession")
extension PostgresConnection: Sendable {}

/// The statements of one `PostgresConnection.pipeline` call, collected by its `build` closure.
///
/// Adding a statement only records it (parameters are encoded then, so encoding errors are
/// thrown there with the statement's index); everything is sent when `build` returns.
public struct PostgresPipeline {
    enum Statement {
        case query(String, PQParameters)
        case prepared(String, PQParameters)
    }

    var statements: [Statement] = []

    init() {}

    /// The number of statements added so far.
    public var count: Int { statements.count }

    /// Adds a statement with bound parameters.
    public mutating func query(_ sql: String, _ parameters: [PostgresValue] = []) throws {
        if sql.utf8.contains(0) { throw PostgresError.invalidUse("SQL text contains a NUL character") }
        statements.append(.query(sql, try encode(parameters)))
    }

    /// Adds a run of a statement registered with `PostgresConnection.prepare`.
    public mutating func queryPrepared(name: String, _ parameters: [PostgresValue] = []) throws {
        if name.utf8.contains(0) { throw PostgresError.invalidUse("statement name contains a NUL character") }
        statements.append(.prepared(name, try encode(parameters)))
    }

    private func encode(_ parameters: [PostgresValue]) throws -> PQParameters {
        do {
            return try PQParameters(parameters)
        } catch var error as PostgresError {
            error.statementIndex = statements.count
            throw error
        }
    }
}
