import OncePostgres

/// What a role needs on once's tables to run the pipeline and the operator commands, or to read
/// them only (`once status`, `once audit`): the one list that `once grants` prints and that
/// `once run` checks at start. No DDL is ever needed at run time: the partitions ahead of need
/// are made by `once_ensure_partitions`, which runs with its owner's rights (migration 5), and
/// pruning is left to the owner. A pure value; `missing` and `grantStatements` query the database.
public struct Privileges: Sendable, Hashable {
    /// One table and the privileges needed on it.
    public struct Table: Sendable, Hashable {
        public var name: String
        /// `SELECT`, `INSERT`, `UPDATE`, `DELETE`.
        public var privileges: [String]

        public init(_ name: String, _ privileges: [String]) {
            self.name = name
            self.privileges = privileges
        }
    }

    public var tables: [Table]
    /// Functions called at run time, by signature (`name(argument types)`).
    public var functions: [String]

    public init(tables: [Table], functions: [String] = []) {
        self.tables = tables
        self.functions = functions
    }

    /// The pipeline's tables as `once run`, `replay`, `dlq` and `offsets` use them.
    public static let pipeline = Privileges(
        tables: [
            Table("once_schema_migrations", ["SELECT"]),
            Table("once_partitioning", ["SELECT"]),
            Table("once_time_partitions", ["SELECT"]),
            Table("consumer_offsets", ["SELECT", "INSERT", "UPDATE"]),
            // Claims are written once, with their outcomes (no UPDATE); a re-driven dead letter
            // gives up its claim (DELETE).
            Table("processed_messages", ["SELECT", "INSERT", "DELETE"]),
            Table("outbox", ["SELECT", "INSERT", "UPDATE"]),
            Table("outbox_relay", ["SELECT", "UPDATE"]),
            Table("dead_letters", ["SELECT", "INSERT", "UPDATE"]),
            Table("once_replays", ["SELECT", "INSERT", "UPDATE"]),
            Table("outbox_publication", ["SELECT"]),
        ],
        functions: ["once_ensure_partitions(timestamptz)", "once_partition_rows(text)"])

    /// These and `other`'s.
    public func adding(_ other: Privileges) -> Privileges {
        Privileges(tables: tables + other.tables, functions: functions + other.functions)
    }

    /// What reading needs: `SELECT` on every table, and the row counts of `once status`.
    public var readOnly: Privileges {
        Privileges(
            tables: tables.map { Table($0.name, ["SELECT"]) },
            functions: functions.filter { $0.hasPrefix("once_partition_rows(") })
    }

    /// The sequences behind the tables' serial columns (a row's insert takes a number from one).
    public func sequences(on db: PostgresConnection) throws -> [String] {
        try db.query(
            """
            SELECT DISTINCT s.oid::regclass::text
            FROM pg_class s
            JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
            JOIN pg_class t ON t.oid = d.refobjid
            WHERE s.relkind = 'S' AND t.oid = ANY (SELECT to_regclass(n) FROM unnest($1::text[]) AS n)
            ORDER BY 1
            """, [.textArray(tables.map(\.name))]
        ).map { try $0.decode(String.self, column: 0) }
    }

    /// The statements that give `role` these privileges, for the schema's owner to run.
    /// `role` is quoted as an identifier; tables, sequences and functions are once's own.
    public func grantStatements(role: String, readOnly: Bool, on db: PostgresConnection) throws -> [String] {
        let quoted = try db.quoteIdentifier(role)
        let schema = try db.quoteIdentifier(try db.query("SELECT current_schema()")[0].decode(String.self, column: 0))
        var statements = ["GRANT USAGE ON SCHEMA \(schema) TO \(quoted)"]
        for table in tables {
            statements.append("GRANT \(table.privileges.joined(separator: ", ")) ON TABLE \(table.name) TO \(quoted)")
        }
        if !readOnly {
            for sequence in try sequences(on: db) {
                statements.append("GRANT USAGE ON SEQUENCE \(sequence) TO \(quoted)")
            }
        }
        for function in functions {
            statements.append("GRANT EXECUTE ON FUNCTION \(function) TO \(quoted)")
        }
        return statements
    }

    /// What the session's role lacks of these, as `PRIVILEGE on OBJECT`, in list order; empty
    /// when it has everything. Objects that do not exist are reported as missing too.
    public func missing(on db: PostgresConnection) throws -> [String] {
        var checks: [(kind: String, object: String, privilege: String)] = []
        for table in tables {
            for privilege in table.privileges { checks.append(("table", table.name, privilege)) }
        }
        for sequence in try sequences(on: db) { checks.append(("sequence", sequence, "USAGE")) }
        for function in functions { checks.append(("function", function, "EXECUTE")) }
        let held = try db.query(
            """
            SELECT CASE c.kind
                WHEN 'table' THEN to_regclass(c.object) IS NOT NULL AND has_table_privilege(c.object, c.privilege)
                WHEN 'sequence' THEN to_regclass(c.object) IS NOT NULL AND has_sequence_privilege(c.object, c.privilege)
                ELSE to_regprocedure(c.object) IS NOT NULL AND has_function_privilege(c.object, c.privilege)
            END
            FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(kind, object, privilege, n)
            ORDER BY c.n
            """, [.textArray(checks.map(\.kind)), .textArray(checks.map(\.object)), .textArray(checks.map(\.privilege))]
        ).map { try $0.decode(Bool.self, column: 0) }
        return zip(checks, held).filter { !$0.1 }.map { "\($0.0.privilege) on \($0.0.object)" }
    }
}
