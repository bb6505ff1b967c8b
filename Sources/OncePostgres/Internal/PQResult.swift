internal import CLibPQ

/// Owns one `PGresult *` and clears it exactly once, in `deinit`.
///
/// Internal: the pointer never leaves this type; what callers need is copied out into
/// `PostgresResult` or `PostgresError`.
final class PQResult {
    private let raw: OpaquePointer

    init(_ raw: OpaquePointer) {
        self.raw = raw
    }

    deinit {
        PQclear(raw)
    }

    var status: ExecStatusType { PQresultStatus(raw) }

    var isSuccess: Bool {
        let status = self.status
        return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY
    }

    var isPipelineAborted: Bool { status == PGRES_PIPELINE_ABORTED }
    var isPipelineSync: Bool { status == PGRES_PIPELINE_SYNC }

    var isCopy: Bool {
        let status = self.status
        return status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH
    }

    var commandTag: String {
        guard let tag = PQcmdStatus(raw) else { return "" }
        return String(cString: tag)
    }

    func errorField(_ code: Character) -> String? {
        guard let ascii = code.asciiValue, let value = PQresultErrorField(raw, Int32(ascii)) else { return nil }
        return String(cString: value)
    }

    /// The error this result reports, classified; `connectionBad` is libpq's view of the session.
    func makeError(connectionBad: Bool, statementIndex: Int? = nil) -> PostgresError {
        let sqlState = errorField("C")
        var kind = sqlState.map(PostgresError.kind(forSQLState:)) ?? .other
        if connectionBad { kind = .connectionLost }
        var message = errorField("M")
        if message == nil, let text = PQresultErrorMessage(raw) {
            message = String(cString: text).trimmingWhitespace()
        }
        if message?.isEmpty ?? true {
            message = "unexpected result status \(String(cString: PQresStatus(status)))"
        }
        return PostgresError(
            kind: kind,
            sqlState: sqlState,
            message: message ?? "",
            detail: errorField("D"),
            hint: errorField("H"),
            constraintName: errorField("n"),
            tableName: errorField("t"),
            statementIndex: statementIndex
        )
    }

    /// Copies every column and value out of libpq memory.
    func copyOut() -> PostgresResult {
        let rowCount = Int(PQntuples(raw))
        let columnCount = Int(PQnfields(raw))
        var columns: [PostgresColumn] = []
        columns.reserveCapacity(columnCount)
        for column in 0..<columnCount {
            let name = PQfname(raw, Int32(column)).map { String(cString: $0) } ?? ""
            columns.append(PostgresColumn(name: name, typeOID: PQftype(raw, Int32(column))))
        }
        var totalBytes = 0
        for row in 0..<rowCount {
            for column in 0..<columnCount {
                totalBytes += Int(PQgetlength(raw, Int32(row), Int32(column)))
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(totalBytes)
        var starts: [Int] = []
        var lengths: [Int] = []
        starts.reserveCapacity(rowCount * columnCount)
        lengths.reserveCapacity(rowCount * columnCount)
        for row in 0..<rowCount {
            for column in 0..<columnCount {
                if PQgetisnull(raw, Int32(row), Int32(column)) != 0 {
                    starts.append(-1)
                    lengths.append(0)
                    continue
                }
                let length = Int(PQgetlength(raw, Int32(row), Int32(column)))
                starts.append(bytes.count)
                lengths.append(length)
                if length > 0, let value = PQgetvalue(raw, Int32(row), Int32(column)) {
                    value.withMemoryRebound(to: UInt8.self, capacity: length) { pointer in
                        bytes.append(contentsOf: UnsafeBufferPointer(start: pointer, count: length))
                    }
                }
            }
        }
        let affected = PQcmdTuples(raw).flatMap { Int(String(cString: $0)) } ?? 0
        let storage = PostgresResult.Storage(
            columns: columns,
            rowCount: rowCount,
            affectedRows: affected,
            commandTag: commandTag,
            bytes: bytes,
            starts: starts,
            lengths: lengths
        )
        return PostgresResult(storage: storage)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self).unicodeScalars
        while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
