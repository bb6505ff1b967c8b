import Logging

/// An error reported by PostgreSQL, by libpq, or by this wrapper about how it was used.
///
/// `kind` classifies the SQLSTATE so that callers can decide without string matching;
/// `isTransient` says whether retrying the same work later may succeed. `description` names the
/// SQLSTATE, the kind and the server's primary message but never the DETAIL (which carries key
/// values) nor data-exception messages (class 22, which quote the rejected input);
/// `debugDescription` includes everything and is meant for local debugging, not for logs.
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What went wrong, as far as a caller needs to react to it.
    public enum Kind: Sendable, Hashable, CustomStringConvertible {
        /// SQLSTATE 23505: a unique or primary-key constraint rejected a row.
        case uniqueViolation
        /// SQLSTATE 40001: the transaction could not be serialised; run it again.
        case serializationFailure
        /// SQLSTATE 40P01: the transaction was chosen as a deadlock victim; run it again.
        case deadlock
        /// The session is gone (libpq reports the connection bad, SQLSTATE class 08, or
        /// 57P01/57P02/57P03). The next call on the same `PostgresConnection` reconnects.
        case connectionLost
        /// Opening a session failed (server unreachable, refused, authentication failed).
        case connectFailed
        /// SQLSTATE 57014: the statement was cancelled (statement_timeout or a cancel request).
        case queryCanceled
        /// The server cannot take the work now (insufficient resources, class 53; a lock not
        /// available, 55P03; a read-only standby, 25006; an I/O error, class 58): try again later.
        case unavailable
        /// SQLSTATE 42501: the role lacks a privilege on the object named in the message.
        case insufficientPrivilege
        /// A table, column, function, schema or other object the statement names does not exist
        /// (42P01, 42703, 42883, 3F000, 42704): the schema is not migrated, or by an older version.
        case schemaMismatch
        /// The server refused the role or its password (28000, 28P01).
        case authenticationFailed
        /// The database named in the connection does not exist (3D000).
        case unknownDatabase
        /// The caller used the API in a way it does not support; nothing was sent for it.
        case invalidUse
        /// Any other SQLSTATE or libpq failure.
        case other

        public var description: String {
            switch self {
            case .uniqueViolation: return "uniqueViolation"
            case .serializationFailure: return "serializationFailure"
            case .deadlock: return "deadlock"
            case .connectionLost: return "connectionLost"
            case .connectFailed: return "connectFailed"
            case .queryCanceled: return "queryCanceled"
            case .unavailable: return "unavailable"
            case .insufficientPrivilege: return "insufficientPrivilege"
            case .schemaMismatch: return "schemaMismatch"
            case .authenticationFailed: return "authenticationFailed"
            case .unknownDatabase: return "unknownDatabase"
            case .invalidUse: return "invalidUse"
            case .other: return "other"
            }
        }
    }

    /// The classification of this error.
    public var kind: Kind
    /// The five-character SQLSTATE, when the server sent one.
    public var sqlState: String?
    /// The server's primary message, or libpq's or this wrapper's message when there is none.
    public var message: String
    /// The server's DETAIL field. It can contain row values: keep it out of logs.
    public var detail: String?
    /// The server's HINT field.
    public var hint: String?
    /// The constraint named by the server, e.g. the unique index behind a `uniqueViolation`.
    public var constraintName: String?
    /// The table named by the server, when it names one.
    public var tableName: String?
    /// In a pipeline, the zero-based index of the statement that failed.
    public var statementIndex: Int?

    public init(
        kind: Kind,
        sqlState: String? = nil,
        message: String,
        detail: String? = nil,
        hint: String? = nil,
        constraintName: String? = nil,
        tableName: String? = nil,
        statementIndex: Int? = nil
    ) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.constraintName = constraintName
        self.tableName = tableName
        self.statementIndex = statementIndex
    }

    /// How failures are treated, by SQLSTATE: the one table every retry loop goes by. An entry
    /// of two characters covers its whole class; five characters name one condition. What is
    /// not listed is `.other`: a bug or bad data, which callers retry with backoff and report
    /// as an error, but not as transient.
    public static let classification: [(sqlState: String, kind: Kind)] = [
        ("23505", .uniqueViolation),
        ("40001", .serializationFailure),
        ("40P01", .deadlock),
        ("08", .connectionLost),
        ("57P01", .connectionLost),  // admin_shutdown
        ("57P02", .connectionLost),  // crash_shutdown
        ("57P03", .connectionLost),  // cannot_connect_now (starting up, shutting down)
        ("57014", .queryCanceled),
        ("53", .unavailable),  // insufficient resources: disk full, out of memory, too many connections
        ("55P03", .unavailable),  // lock_not_available
        ("25006", .unavailable),  // read_only_sql_transaction: a standby, as during a failover
        ("58", .unavailable),  // system error: I/O
        ("42501", .insufficientPrivilege),
        ("42P01", .schemaMismatch),  // undefined_table
        ("42703", .schemaMismatch),  // undefined_column
        ("42883", .schemaMismatch),  // undefined_function
        ("42704", .schemaMismatch),  // undefined_object
        ("3F000", .schemaMismatch),  // invalid_schema_name
        ("28000", .authenticationFailed),  // invalid_authorization_specification
        ("28P01", .authenticationFailed),  // invalid_password
        ("3D000", .unknownDatabase),  // invalid_catalog_name
    ]

    /// True when the same work may succeed if tried again: serialisation failures, deadlocks,
    /// lost connections, failed connects (the server may come back) and a server that cannot
    /// take the work now.
    public var isTransient: Bool {
        switch kind {
        case .serializationFailure, .deadlock, .connectionLost, .connectFailed, .unavailable: return true
        case .uniqueViolation, .queryCanceled, .invalidUse, .other, .insufficientPrivilege, .schemaMismatch,
            .authenticationFailed, .unknownDatabase:
            return false
        }
    }

    /// What an operator must do when retrying cannot help (a privilege, the schema, the
    /// credentials, the database's name); nil for every other error. A process that meets such
    /// an error stops instead of retrying, with this in its one line.
    public var remedy: String? {
        switch kind {
        case .insufficientPrivilege:
            return "the role lacks a privilege: as the schema's owner, apply what `once grants --role ROLE` prints"
        case .schemaMismatch:
            return "the schema is missing or older than this once: run `once migrate` as the schema's owner"
        case .authenticationFailed:
            return "check the role and its password (the database URL, PGPASSWORD, PGPASSFILE or --database-url-file)"
        case .unknownDatabase:
            return "check the database name in the database URL"
        default:
            return nil
        }
    }

    /// Maps a SQLSTATE to a kind, by `classification`: the exact code, else its class.
    public static func kind(forSQLState sqlState: String) -> Kind {
        if let exact = classification.first(where: { $0.sqlState == sqlState }) { return exact.kind }
        return classification.first { $0.sqlState.count == 2 && sqlState.hasPrefix($0.sqlState) }?.kind ?? .other
    }

    /// The kind of a failed connect, read from libpq's message, which carries the server's
    /// refusal but no SQLSTATE: an unknown role or a wrong password, an unknown database;
    /// anything else (unreachable, refused, TLS) stays `.connectFailed`. The server's messages
    /// are matched in English, its default.
    public static func kind(forConnectFailure message: String) -> Kind {
        if message.contains("password authentication failed") || message.contains("no pg_hba.conf entry")
            || (message.contains("role \"") && message.contains("does not exist"))
            || message.contains("authentication failed")
        {
            return .authenticationFailed
        }
        if message.contains("database \"") && message.contains("does not exist") { return .unknownDatabase }
        return .connectFailed
    }

    /// Whether the primary message may quote the offending input: data exceptions (class 22) do,
    /// e.g. `invalid input syntax for type bigint: "…"`.
    private var messageMayQuoteValues: Bool {
        sqlState?.hasPrefix("22") ?? false
    }

    public var description: String {
        var text = "PostgreSQL error"
        if let sqlState { text += " \(sqlState)" }
        text += " (\(kind))"
        if let statementIndex { text += " in pipeline statement \(statementIndex)" }
        if messageMayQuoteValues {
            text += ": data exception (message withheld because it may quote values)"
        } else {
            text += ": \(message)"
        }
        if let constraintName { text += " [constraint \(constraintName)]" }
        if let remedy { text += "; \(remedy)" }
        return text
    }

    public var debugDescription: String {
        var text = "PostgreSQL error"
        if let sqlState { text += " \(sqlState)" }
        text += " (\(kind))"
        if let statementIndex { text += " in pipeline statement \(statementIndex)" }
        text += ": \(message)"
        if let detail { text += "\nDETAIL: \(detail)" }
        if let hint { text += "\nHINT: \(hint)" }
        if let constraintName { text += "\nCONSTRAINT: \(constraintName)" }
        if let tableName { text += "\nTABLE: \(tableName)" }
        return text
    }

    static func invalidUse(_ message: String) -> PostgresError {
        PostgresError(kind: .invalidUse, message: message)
    }
}

/// A result value that could not be turned into the requested Swift type.
///
/// It names the column and the expected type, never the value itself.
public struct PostgresDecodingError: Error, Sendable, CustomStringConvertible {
    /// Why decoding failed.
    public enum Reason: Sendable, Hashable {
        /// The value was SQL NULL and the requested type is not Optional.
        case unexpectedNull
        /// No column has this name, or the index is out of range.
        case noSuchColumn
        /// The column's PostgreSQL type cannot be decoded as the requested type.
        case typeMismatch(typeOID: UInt32)
        /// The text did not parse as the requested type.
        case malformed(String)
    }

    /// The column's name (or the name asked for, when there is no such column).
    public var column: String
    /// The column's index, when it exists.
    public var columnIndex: Int?
    /// The Swift type that was requested.
    public var expectedType: String
    public var reason: Reason

    public init(column: String, columnIndex: Int?, expectedType: String, reason: Reason) {
        self.column = column
        self.columnIndex = columnIndex
        self.expectedType = expectedType
        self.reason = reason
    }

    public var description: String {
        let position = columnIndex.map { " (index \($0))" } ?? ""
        switch reason {
        case .unexpectedNull:
            return "column \"\(column)\"\(position) is NULL; decode \(expectedType)? to accept NULL"
        case .noSuchColumn:
            return "no column \"\(column)\"\(position) in the result (decoding \(expectedType))"
        case .typeMismatch(let oid):
            return "column \"\(column)\"\(position) has PostgreSQL type oid \(oid), not decodable as \(expectedType)"
        case .malformed(let why):
            return "column \"\(column)\"\(position) cannot be decoded as \(expectedType): \(why)"
        }
    }
}

/// What a `PostgresDecodable` conformance throws when a value does not parse; `PostgresRow`
/// turns it into a `PostgresDecodingError` that names the column.
public struct PostgresValueFormatError: Error, Sendable {
    public var reason: PostgresDecodingError.Reason
    public init(_ reason: PostgresDecodingError.Reason) { self.reason = reason }
    public init(_ why: String) { self.reason = .malformed(why) }
}

extension Logger.Metadata {
    /// The fields a log line about `error` carries: its SQLSTATE when PostgreSQL gave one.
    public static func failure(_ error: any Error) -> Logger.Metadata {
        guard let sqlState = (error as? PostgresError)?.sqlState else { return [:] }
        return ["sqlstate": "\(sqlState)"]
    }
}
