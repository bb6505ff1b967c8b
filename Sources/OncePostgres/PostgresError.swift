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

    /// True when the same work may succeed if tried again: serialisation failures, deadlocks,
    /// lost connections and failed connects (the server may come back).
    public var isTransient: Bool {
        switch kind {
        case .serializationFailure, .deadlock, .connectionLost, .connectFailed: return true
        case .uniqueViolation, .queryCanceled, .invalidUse, .other: return false
        }
    }

    /// Maps a SQLSTATE to a kind.
    public static func kind(forSQLState sqlState: String) -> Kind {
        switch sqlState {
        case "23505": return .uniqueViolation
        case "40001": return .serializationFailure
        case "40P01": return .deadlock
        case "57014": return .queryCanceled
        case "57P01", "57P02", "57P03": return .connectionLost
        default: return sqlState.hasPrefix("08") ? .connectionLost : .other
        }
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
