import Foundation
import OnceEnvelope
import OnceJSON
import OncePostgres

/// One device of the registry, as the batch-action rules read it.
public struct DeviceRecord: Sendable, Hashable {
    public var tenantID: String
    public var deviceUID: String
    public var state: DeviceState
    public var serviceTypeID: Int64?
    public var workflowID: String?
    /// RFC 3339 text; not nil means the device is deleted (and counts as not found).
    public var deletedAt: String?

    public init(
        tenantID: String, deviceUID: String, state: DeviceState, serviceTypeID: Int64? = nil,
        workflowID: String? = nil, deletedAt: String? = nil
    ) {
        self.tenantID = tenantID
        self.deviceUID = deviceUID
        self.state = state
        self.serviceTypeID = serviceTypeID
        self.workflowID = workflowID
        self.deletedAt = deletedAt
    }
}

/// A registry file that cannot be imported; nothing of it was written.
public struct DeviceImportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The 1-based line of the file where the bad record starts (the header is line 1).
    public var line: Int
    /// The column at fault, when one is.
    public var field: String?
    public var message: String

    public init(line: Int, field: String? = nil, message: String) {
        self.line = line
        self.field = field
        self.message = message
    }

    /// `line N: …`; a failure of the file as a whole (line 0) is the message alone.
    public var description: String {
        if line == 0 { return message }
        if let field { return "line \(line): \(field) \(message)" }
        return "line \(line): \(message)"
    }
}

/// What an import did.
public struct DeviceImportReport: Sendable, Hashable {
    /// Data rows in the file.
    public var rows = 0
    /// Devices that were not in the registry.
    public var inserted = 0
    /// Devices whose state, service type, workflow or deletion changed.
    public var updated = 0
    /// Devices already exactly as in the file.
    public var unchanged = 0

    public init() {}
}

/// Loads the devices registry from CSV, idempotently.
///
/// The file has the header `tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at`
/// (columns in any order, all six present, no others) and one device per line; an empty field
/// is NULL. Fields may be quoted as RFC 4180 says (`"a,b"`, `""` for a quote); lines end with
/// LF or CRLF; blank lines are skipped. Each row is checked: `tenant_id` as an envelope's
/// tenant, `device_uid` by rule 1 of the batch-action rules (15 digits or 4–64 of
/// `[A-Za-z0-9-]`; a device no batch action could name is a mistake), `state` one of IDLE,
/// READY_FOR_USE, ACTIVE, LOCKED, `service_type_id` an integer, `workflow_id` 1–128
/// characters, `deleted_at` RFC 3339; a device listed twice is an error too. The first problem
/// throws `DeviceImportError` naming the line and the field, and nothing is written.
///
/// A good file is upserted in one transaction, `chunkSize` devices per statement as arrays
/// (`INSERT … SELECT FROM unnest(…) ON CONFLICT (tenant_id, device_uid) DO UPDATE`); a device
/// already as in the file is not touched, so importing the same file twice changes nothing.
/// Devices missing from the file are left as they are. Blocking: call it on a thread that may
/// block, with a connection not inside a transaction.
public struct DeviceImporter: Sendable {
    /// The header's columns, in the canonical order.
    public static let columns = ["tenant_id", "device_uid", "state", "service_type_id", "workflow_id", "deleted_at"]

    /// Devices per upsert statement.
    public var chunkSize: Int

    public init(chunkSize: Int = 1000) {
        precondition(chunkSize > 0, "chunkSize must be positive")
        self.chunkSize = chunkSize
    }

    /// Reads and checks a registry file; throws `DeviceImportError` at the first bad line.
    public func parse(_ csv: String) throws(DeviceImportError) -> [DeviceRecord] {
        let records = try CSVReader.records(csv)
        guard let header = records.first else {
            throw DeviceImportError(
                line: 1, message: "the file is empty; expected the header \(Self.columns.joined(separator: ","))")
        }
        var position: [String: Int] = [:]
        for (index, name) in header.fields.enumerated() {
            guard Self.columns.contains(name) else {
                throw DeviceImportError(
                    line: header.line, field: name,
                    message: "is not a column of the registry; expected \(Self.columns.joined(separator: ","))")
            }
            guard position[name] == nil else {
                throw DeviceImportError(line: header.line, field: name, message: "appears twice in the header")
            }
            position[name] = index
        }
        for name in Self.columns where position[name] == nil {
            throw DeviceImportError(line: header.line, field: name, message: "is missing from the header")
        }

        var devices: [DeviceRecord] = []
        devices.reserveCapacity(records.count - 1)
        var firstLine: [DeviceKey: Int] = [:]
        for record in records.dropFirst() {
            guard record.fields.count == header.fields.count else {
                throw DeviceImportError(
                    line: record.line,
                    message: "has \(record.fields.count) fields; the header has \(header.fields.count)")
            }
            func field(_ name: String) -> String? {
                let value = record.fields[position[name]!]
                return value.isEmpty ? nil : value
            }
            func fail(_ name: String, _ message: String) -> DeviceImportError {
                DeviceImportError(line: record.line, field: name, message: message)
            }

            guard let tenantID = field("tenant_id"), EnvelopeDecoder.isValidTenantID(tenantID) else {
                throw fail("tenant_id", "must be 1 to 64 characters of [A-Za-z0-9._-]")
            }
            guard let uid = field("device_uid"), DeviceUID.isValid(uid) else {
                throw fail("device_uid", "must be 15 digits or 4 to 64 characters of [A-Za-z0-9-]")
            }
            let states = DeviceState.allCases.map(\.rawValue).joined(separator: ", ")
            guard let stateText = field("state") else { throw fail("state", "is required: one of \(states)") }
            guard let state = DeviceState(rawValue: stateText) else {
                throw fail("state", "must be one of \(states), not \(quoted(stateText))")
            }
            var serviceTypeID: Int64?
            if let text = field("service_type_id") {
                guard let value = Int64(text) else {
                    throw fail("service_type_id", "must be an integer, not \(quoted(text))")
                }
                serviceTypeID = value
            }
            let workflowID = field("workflow_id")
            if let workflowID, workflowID.unicodeScalars.count > 128 || workflowID.utf8.contains(0) {
                throw fail("workflow_id", "must be 1 to 128 characters")
            }
            let deletedAt = field("deleted_at")
            if let deletedAt, !Timestamp.isValid(deletedAt) {
                throw fail(
                    "deleted_at", "must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z, not \(quoted(deletedAt))"
                )
            }

            let key = DeviceKey(tenantID: tenantID, deviceUID: uid)
            if let earlier = firstLine[key] {
                throw fail("device_uid", "repeats the device \(tenantID)/\(uid) of line \(earlier)")
            }
            firstLine[key] = record.line
            devices.append(
                DeviceRecord(
                    tenantID: tenantID, deviceUID: uid, state: state, serviceTypeID: serviceTypeID,
                    workflowID: workflowID, deletedAt: deletedAt))
        }
        return devices
    }

    /// Checks and upserts a registry file's text.
    public func importCSV(_ csv: String, on connection: PostgresConnection) throws -> DeviceImportReport {
        try upsert(try parse(csv), on: connection)
    }

    /// Checks and upserts the registry file at `path`.
    public func importFile(atPath path: String, on connection: PostgresConnection) throws -> DeviceImportReport {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw DeviceImportError(line: 0, message: "cannot read \(path): \(FileReadFailure.reason(readingAt: path, error))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DeviceImportError(line: 0, message: "\(path) is not UTF-8 text")
        }
        return try importCSV(text, on: connection)
    }

    /// Upserts `devices` (at most once each) in one transaction, `chunkSize` per statement.
    public func upsert(_ devices: [DeviceRecord], on connection: PostgresConnection) throws -> DeviceImportReport {
        var report = DeviceImportReport()
        report.rows = devices.count
        var deletedMicros: [Int64?] = []
        deletedMicros.reserveCapacity(devices.count)
        for device in devices {
            if let text = device.deletedAt {
                guard let micros = Timestamp.microsecondsSinceEpoch(text) else {
                    throw DeviceImportError(
                        line: 0, field: "deleted_at", message: "must be an RFC 3339 timestamp, not \(quoted(text))")
                }
                deletedMicros.append(micros)
            } else {
                deletedMicros.append(nil)
            }
        }
        try connection.transaction { tx in
            for start in stride(from: 0, to: devices.count, by: chunkSize) {
                let range = start..<min(start + chunkSize, devices.count)
                let chunk = devices[range]
                let result = try tx.query(
                    """
                    INSERT INTO devices AS d (tenant_id, device_uid, state, service_type_id, workflow_id, deleted_at)
                    SELECT r.tenant_id, r.device_uid, r.state, r.service_type_id, r.workflow_id,
                           timestamptz 'epoch' + r.deleted_us * interval '1 microsecond'
                    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[])
                        AS r(tenant_id, device_uid, state, service_type_id, workflow_id, deleted_us)
                    ON CONFLICT (tenant_id, device_uid) DO UPDATE
                        SET state = excluded.state, service_type_id = excluded.service_type_id,
                            workflow_id = excluded.workflow_id, deleted_at = excluded.deleted_at, updated_at = now()
                        WHERE (d.state, d.service_type_id, d.workflow_id, d.deleted_at) IS DISTINCT FROM
                            (excluded.state, excluded.service_type_id, excluded.workflow_id, excluded.deleted_at)
                    RETURNING xmax = 0 AS inserted
                    """,
                    [
                        .textArray(chunk.map(\.tenantID)), .textArray(chunk.map(\.deviceUID)),
                        .textArray(chunk.map(\.state.rawValue)), .int64Array(chunk.map(\.serviceTypeID)),
                        .textArray(chunk.map(\.workflowID)), .int64Array(Array(deletedMicros[range])),
                    ])
                var inserted = 0
                for row in result where try row.decode(Bool.self, column: 0) { inserted += 1 }
                report.inserted += inserted
                report.updated += result.rowCount - inserted
                report.unchanged += chunk.count - result.rowCount
            }
        }
        return report
    }

    private struct DeviceKey: Hashable {
        var tenantID: String
        var deviceUID: String
    }
}

/// A value for an error message: quoted, cut to 64 characters.
private func quoted(_ text: String) -> String {
    let scalars = text.unicodeScalars
    let shown = scalars.count > 64 ? String(String.UnicodeScalarView(scalars.prefix(64))) + "…" : text
    return JSONWriter.serializeString(.string(shown))
}

/// A minimal RFC 4180 reader: comma-separated fields, optionally in double quotes (`""` is a
/// quote inside them, and they may span lines), records ending in LF or CRLF. A leading
/// byte-order mark is skipped, and so are blank lines.
enum CSVReader {
    struct Record: Equatable {
        /// The line the record starts on, from 1.
        var line: Int
        var fields: [String]
    }

    static func records(_ text: String) throws(DeviceImportError) -> [Record] {
        var scalars = Array(text.unicodeScalars)
        if scalars.first == "\u{FEFF}" { scalars.removeFirst() }

        var records: [Record] = []
        var fields: [String] = []
        var field = String.UnicodeScalarView()
        var line = 1
        var recordLine = 1
        var index = 0
        var quotedField = false

        func endRecord() {
            fields.append(String(field))
            field = String.UnicodeScalarView()
            // A blank line is one empty, unquoted field.
            if !(fields.count == 1 && fields[0].isEmpty && !quotedField) {
                records.append(Record(line: recordLine, fields: fields))
            }
            fields = []
            quotedField = false
        }

        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "\"" && field.isEmpty && !quotedField {
                // A quoted field: read to the closing quote.
                quotedField = true
                index += 1
                let openedOn = line
                var closed = false
                while index < scalars.count {
                    let inner = scalars[index]
                    if inner == "\"" {
                        if index + 1 < scalars.count, scalars[index + 1] == "\"" {
                            field.append("\"")
                            index += 2
                            continue
                        }
                        closed = true
                        index += 1
                        break
                    }
                    if inner == "\n" { line += 1 }
                    field.append(inner)
                    index += 1
                }
                guard closed else {
                    throw DeviceImportError(line: openedOn, message: "a quoted field is not closed")
                }
                // Only a separator or the end of the record may follow.
                if index < scalars.count, !([",", "\n", "\r"] as [Unicode.Scalar]).contains(scalars[index]) {
                    throw DeviceImportError(line: line, message: "unexpected text after a closing quote")
                }
                continue
            }
            switch scalar {
            case ",":
                fields.append(String(field))
                field = String.UnicodeScalarView()
                quotedField = false
                index += 1
            case "\r" where index + 1 < scalars.count && scalars[index + 1] == "\n":
                index += 1
            case "\n":
                endRecord()
                line += 1
                recordLine = line
                index += 1
            case "\"":
                throw DeviceImportError(line: line, message: "a quote inside an unquoted field; quote the whole field")
            default:
                field.append(scalar)
                index += 1
            }
        }
        if !field.isEmpty || !fields.isEmpty || quotedField { endRecord() }
        return records
    }
}

/// Why a file could not be read, in the OS's words (`No such file or directory`), for the one
/// line a command prints about it: the error of opening it again, else `error`'s own words.
public enum FileReadFailure {
    public static func reason(readingAt path: String, _ error: any Error) -> String {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return String(cString: strerror(errno)) }
        close(descriptor)
        return error.localizedDescription
    }
}
