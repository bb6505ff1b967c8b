/// A column of a result: its name and PostgreSQL type OID.
public struct PostgresColumn: Sendable, Hashable {
    public let name: String
    public let typeOID: UInt32
}

/// The complete outcome of one statement, copied out of libpq when the statement finished.
///
/// A plain value (`Sendable`): no libpq memory is kept, so it may outlive its connection and
/// cross threads. Values are in PostgreSQL's text output format and decoded on demand with
/// `PostgresRow.decode`. Iterating it yields the rows in order.
public struct PostgresResult: Sendable, RandomAccessCollection {
    let storage: Storage

    /// The columns, in select-list order (empty for commands that return no rows).
    public var columns: [PostgresColumn] { storage.columns }
    /// The number of rows returned.
    public var rowCount: Int { storage.rowCount }
    /// Rows inserted, updated, deleted, selected… as the command tag reports; 0 when it has no count.
    public var affectedRows: Int { storage.affectedRows }
    /// The command tag, e.g. `INSERT 0 1`.
    public var commandTag: String { storage.commandTag }

    public var startIndex: Int { 0 }
    public var endIndex: Int { storage.rowCount }
    public subscript(position: Int) -> PostgresRow {
        precondition(position >= 0 && position < storage.rowCount, "row index out of range")
        return PostgresRow(storage: storage, row: position)
    }

    /// The rows, in order.
    public var rows: [PostgresRow] { Array(self) }

    /// Immutable copy of a libpq result: one byte buffer holding every value plus offsets.
    final class Storage: Sendable {
        let columns: [PostgresColumn]
        let columnIndexByName: [String: Int]
        let rowCount: Int
        let affectedRows: Int
        let commandTag: String
        /// Every non-NULL value's bytes, row-major.
        let bytes: [UInt8]
        /// For cell `row * columns.count + column`: its start in `bytes`, or -1 for NULL.
        let starts: [Int]
        /// For each cell: its length in `bytes` (0 for NULL).
        let lengths: [Int]

        init(
            columns: [PostgresColumn],
            rowCount: Int,
            affectedRows: Int,
            commandTag: String,
            bytes: [UInt8],
            starts: [Int],
            lengths: [Int]
        ) {
            self.columns = columns
            var byName: [String: Int] = [:]
            for (index, column) in columns.enumerated() where byName[column.name] == nil {
                byName[column.name] = index
            }
            self.columnIndexByName = byName
            self.rowCount = rowCount
            self.affectedRows = affectedRows
            self.commandTag = commandTag
            self.bytes = bytes
            self.starts = starts
            self.lengths = lengths
        }

        func cell(row: Int, column: Int) -> ArraySlice<UInt8>? {
            let index = row * columns.count + column
            let start = starts[index]
            guard start >= 0 else { return nil }
            return bytes[start..<(start + lengths[index])]
        }
    }
}

/// One row of a `PostgresResult`; a cheap value that shares the result's storage.
///
/// `decode` turns a column into a Swift type and throws `PostgresDecodingError` naming the
/// column (never the value) when the column is missing, NULL for a non-Optional type, or does
/// not parse.
public struct PostgresRow: Sendable {
    let storage: PostgresResult.Storage
    let row: Int

    /// The columns of the result this row belongs to.
    public var columns: [PostgresColumn] { storage.columns }

    /// Decodes column `column` (zero-based) as `type`.
    public func decode<T: PostgresDecodable>(_ type: T.Type, column: Int) throws -> T {
        guard column >= 0, column < storage.columns.count else {
            throw PostgresDecodingError(
                column: "#\(column)", columnIndex: nil, expectedType: "\(T.self)", reason: .noSuchColumn)
        }
        let info = storage.columns[column]
        do {
            guard let bytes = storage.cell(row: row, column: column) else { return try T.decodeNull() }
            return try T.decode(postgresText: bytes, typeOID: info.typeOID)
        } catch let error as PostgresValueFormatError {
            throw PostgresDecodingError(
                column: info.name, columnIndex: column, expectedType: "\(T.self)", reason: error.reason)
        }
    }

    /// Decodes the first column named `column` as `type`.
    public func decode<T: PostgresDecodable>(_ type: T.Type, column: String) throws -> T {
        guard let index = storage.columnIndexByName[column] else {
            throw PostgresDecodingError(
                column: column, columnIndex: nil, expectedType: "\(T.self)", reason: .noSuchColumn)
        }
        return try decode(type, column: index)
    }

    /// Whether column `column` is SQL NULL in this row.
    public func isNull(column: Int) -> Bool {
        precondition(column >= 0 && column < storage.columns.count, "column index out of range")
        return storage.cell(row: row, column: column) == nil
    }
}

/// A notification received on a channel the connection listens to.
public struct PostgresNotification: Sendable, Hashable {
    /// The channel it was sent on.
    public let channel: String
    /// The payload (empty when none was given).
    public let payload: String
    /// The backend process that sent it.
    public let senderPID: Int32
}
