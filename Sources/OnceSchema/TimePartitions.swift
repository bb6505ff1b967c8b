import Foundation
import OncePostgres

/// The time partitions of the three log tables, `processed_messages`, `outbox` and
/// `dead_letters`: created ahead of need, dropped whole when they leave the retention window.
///
/// Every row of those tables has a `bucket`, the partition key (range partitioning):
/// - `processed_messages`: the start of the partition interval (`once_partitioning.width`,
///   a day by default) that holds the event's own `occurred_at` (for a record without a
///   readable one, the broker's timestamp), clamped to the partitions that exist. A redelivery,
///   a replay or a producer's duplicate carries the same bytes, so it computes the same bucket
///   and meets its first claim in the same partition, whose unique index on
///   (`consumer_group`, `tenant_id`, `event_id`) decides: one index descent per new id, however
///   many days the window holds.
/// - `outbox`: the interval the row was written in.
/// - `dead_letters`: `infinity` while unresolved (the `dead_letters_unresolved` partition,
///   never pruned); the interval of its resolution once resolved.
///
/// The tables that existed before partitioning are kept whole as partitions of their own
/// (`*_legacy`, bucket `-infinity`), so an upgrade keeps its history and copies nothing; the
/// claim probes the legacy partition as well, until it leaves the window.
///
/// `once_time_partitions` lists every partition with the range of times its rows belong to;
/// `once_partitioning` holds the interval, how many intervals are created ahead, and the
/// oldest and newest bucket a claim may fall in. Blocking: call on a database thread. Errors
/// are `PostgresError`s, and `TimePartitionsError` for a prune that cannot run.
public enum TimePartitions {
    /// The tables partitioned by time, in the order they are pruned.
    public static let tables = ["processed_messages", "outbox", "dead_letters"]

    /// Creates the partitions from the current interval to `ahead` intervals on (a no-op when
    /// they exist). Safe from several processes at once: they serialise on `once_partitioning`.
    /// Never blocks writers: a partition is created apart and attached under a lock that inserts
    /// do not wait for.
    public static func ensure(on db: PostgresConnection) throws {
        _ = try db.query("SELECT once_ensure_partitions(now())")
    }

    /// Whether the session's role owns the partitioned tables (or is a member of their
    /// owner's role), as pruning needs.
    public static func ownsTables(on db: PostgresConnection) throws -> Bool {
        try db.query(
            "SELECT pg_has_role(current_user, relowner, 'MEMBER') FROM pg_class WHERE oid = 'processed_messages'::regclass"
        )[0].decode(Bool.self, column: 0)
    }

    /// One partition, as `once status` and `once prune` show it.
    public struct Partition: Sendable, Hashable {
        public var table: String
        public var name: String
        /// The times its rows belong to: `lower..<upper`, nil where unbounded (below a legacy
        /// partition, whose `upper` is when the upgrade made it; both for unresolved dead letters).
        public var lower: Date?
        public var upper: Date?
        /// Counted when the partition is small, else the planner's estimate (-1 before the
        /// first ANALYZE).
        public var estimatedRows: Int64
        public var bytes: Int64

        public var isLegacy: Bool { name.hasSuffix("_legacy") }
        public var isUnresolvedDeadLetters: Bool { name == "dead_letters_unresolved" }
    }

    /// Every partition of the three tables, oldest first per table.
    public static func list(on db: PostgresConnection) throws -> [Partition] {
        try db.query(
            """
            SELECT p.parent, p.partition, CASE WHEN isfinite(p.lower) THEN p.lower END,
                   CASE WHEN isfinite(p.upper) THEN p.upper END, once_partition_rows(p.partition),
                   coalesce(pg_total_relation_size(c.oid), 0)
            FROM once_time_partitions p LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(p.partition))
            ORDER BY array_position($1::text[], p.parent), p.lower, p.partition
            """, [.textArray(tables)]
        ).map(partition)
    }

    /// The retention window's settings as stored in the database.
    public struct Layout: Sendable, Hashable {
        /// The partition interval.
        public var width: Duration
        /// The oldest and newest bucket a claim may fall in (nil before the first `ensure`).
        public var oldest: Date?
        public var newest: Date?
    }

    public static func layout(on db: PostgresConnection) throws -> Layout {
        let row = try db.query(
            "SELECT extract(epoch FROM width)::float8, oldest, newest FROM once_partitioning")[0]
        return Layout(
            width: .milliseconds(Int64((try row.decode(Double.self, column: 0) * 1000).rounded())),
            oldest: try row.decode(Date?.self, column: 1), newest: try row.decode(Date?.self, column: 2))
    }

    /// The partitions a prune with this cutoff drops: every row in them belongs before
    /// `cutoff`, and none of them is the current interval's. An outbox partition goes only
    /// when every row in it is published (below the relay's floor); a dead-letter partition
    /// only when it holds no unresolved dead letter. Oldest first.
    public static func prunable(before cutoff: Date, on db: PostgresConnection) throws -> [Partition] {
        try db.query(
            """
            SELECT p.parent, p.partition, CASE WHEN isfinite(p.lower) THEN p.lower END,
                   CASE WHEN isfinite(p.upper) THEN p.upper END, once_partition_rows(p.partition),
                   coalesce(pg_total_relation_size(c.oid), 0)
            FROM once_prunable_partitions($1) p LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(p.partition))
            ORDER BY array_position($2::text[], p.parent), p.lower, p.partition
            """, [.timestamptz(cutoff), .textArray(tables)]
        ).map(partition)
    }

    /// Drops the partitions `prunable(before:)` names, each detached concurrently (writers
    /// never wait for it) and then dropped; a `processed_messages` partition only after claims
    /// have stopped falling into it. Must run outside a transaction, on a session of its own;
    /// one prune at a time across processes (`TimePartitionsError.pruneRunning` otherwise).
    /// Returns what it dropped.
    @discardableResult
    public static func prune(before cutoff: Date, on db: PostgresConnection) throws -> [Partition] {
        guard try db.query("SELECT pg_try_advisory_lock($1)", [.int64(pruneLockKey)])[0].decode(Bool.self, column: 0)
        else { throw TimePartitionsError.pruneRunning }
        defer { _ = try? db.query("SELECT pg_advisory_unlock($1)", [.int64(pruneLockKey)]) }

        // A detach interrupted half-way (a crash, a cancel) is finished first: PostgreSQL allows
        // one pending detach per table.
        for row in try db.query(
            """
            SELECT quote_ident(parent.relname), quote_ident(child.relname)
            FROM pg_inherits i JOIN pg_class child ON child.oid = i.inhrelid JOIN pg_class parent ON parent.oid = i.inhparent
            WHERE i.inhdetachpending AND parent.relname = ANY($1::text[])
            """, [.textArray(tables)])
        {
            try db.execute("ALTER TABLE \(try row.decode(String.self, column: 0)) DETACH PARTITION \(try row.decode(String.self, column: 1)) FINALIZE")
        }

        let doomed = try prunable(before: cutoff, on: db)
        for partition in doomed {
            if partition.table == "processed_messages" {
                // Claims clamp to `oldest`: move it past this partition before it goes, so that
                // no new claim is routed into it while it is detached.
                try db.execute(
                    """
                    UPDATE once_partitioning SET last_prune = clock_timestamp(),
                        oldest = CASE WHEN isfinite(t.lower) THEN greatest(oldest, t.upper) ELSE oldest END
                    FROM once_time_partitions t WHERE t.partition = $1
                    """,
                    [.text(partition.name)])
            }
            let names = try db.query(
                "SELECT quote_ident($1), quote_ident($2), EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(quote_ident($2)))",
                [.text(partition.table), .text(partition.name)])[0]
            let parent = try names.decode(String.self, column: 0)
            let child = try names.decode(String.self, column: 1)
            if try names.decode(Bool.self, column: 2) {
                // Identifiers from the catalog, quoted by the server; DDL takes no parameters.
                try db.execute("ALTER TABLE \(parent) DETACH PARTITION \(child) CONCURRENTLY")
            }
            try db.execute("DROP TABLE IF EXISTS \(child)")
            try db.execute("DELETE FROM once_time_partitions WHERE partition = $1", [.text(partition.name)])
        }
        return doomed
    }

    /// Shared by every `once prune` and every `once run` that prunes on its schedule.
    static let pruneLockKey: Int64 = 0x6f6e_6365_7072_756e

    private static func partition(_ row: PostgresRow) throws -> Partition {
        Partition(
            table: try row.decode(String.self, column: 0), name: try row.decode(String.self, column: 1),
            lower: try row.decode(Date?.self, column: 2), upper: try row.decode(Date?.self, column: 3),
            estimatedRows: try row.decode(Int64.self, column: 4), bytes: try row.decode(Int64.self, column: 5))
    }

    /// The value a claim's `bucket` gets, in SQL, for a time `at` (timestamptz) and the row `w`
    /// of `once_partitioning`: its interval's start, clamped to the partitions that exist.
    package static func claimBucket(at: String, window w: String) -> String {
        "least(greatest(date_bin(\(w).width, \(at), 'epoch'), \(w).oldest), \(w).newest)"
    }

    /// Migration 4: dedup keyed by tenant, and the three log tables partitioned by time. The
    /// old tables become the `*_legacy` partitions in place (no copy: about 0.1 s per million
    /// `processed_messages` rows, the scan that proves their bucket); `once run` of an older
    /// version must be stopped first, since its statements name the old keys.
    static let migration: [String] = [
        """
        CREATE TABLE once_partitioning (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            -- The partition interval; date_bin buckets from the epoch.
            width interval NOT NULL DEFAULT '1 day' CHECK (width > '0'),
            -- How many intervals past the current one exist at every moment.
            ahead integer NOT NULL DEFAULT 2 CHECK (ahead >= 1),
            -- The oldest and newest bucket a claim may fall in: the first and last partition of
            -- processed_messages. Earlier and later times are clamped to them.
            oldest timestamptz,
            newest timestamptz,
            -- When a prune last dropped claims (a processed_messages partition): a claim made
            -- after that is still there (`once audit coverage`).
            last_prune timestamptz
        )
        """,
        "INSERT INTO once_partitioning DEFAULT VALUES",
        """
        CREATE TABLE once_time_partitions (
            partition text PRIMARY KEY,
            parent text NOT NULL,
            -- Every row of the partition belongs to lower <= time < upper.
            lower timestamptz NOT NULL,
            upper timestamptz NOT NULL
        )
        """,
    ]
        // processed_messages: the key gains the tenant; the old table is the legacy partition.
        + adoptingLegacy(
            "processed_messages",
            indexes: ["processed_messages_pkey", "processed_messages_position"],
            create: [
                "ALTER TABLE processed_messages_legacy ALTER COLUMN tenant_id TYPE text COLLATE \"C\"",
                """
                CREATE TABLE processed_messages (
                    consumer_group text COLLATE "C" NOT NULL,
                    tenant_id text COLLATE "C",
                    event_id text COLLATE "C" NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    kafka_offset bigint NOT NULL,
                    event_type text,
                    outcome text NOT NULL CONSTRAINT processed_messages_outcome_check
                        CHECK (outcome IN ('applied', 'duplicate', 'conflict', 'dead_lettered')),
                    processed_at timestamptz NOT NULL DEFAULT now(),
                    bucket timestamptz NOT NULL
                ) PARTITION BY RANGE (bucket)
                """,
            ])
        // outbox: the same, its id sequence now the partitioned table's.
        + adoptingLegacy(
            "outbox",
            indexes: ["outbox_pkey", "outbox_tenant_id_event_type_aggregate_id_key"],
            create: [
                """
                CREATE TABLE outbox (
                    id bigint NOT NULL DEFAULT nextval('outbox_id_seq'),
                    tenant_id text NOT NULL,
                    event_type text NOT NULL,
                    aggregate_id text NOT NULL,
                    topic text NOT NULL,
                    message_key text,
                    payload bytea,
                    headers jsonb NOT NULL DEFAULT '{}',
                    created_at timestamptz NOT NULL DEFAULT now(),
                    published_at timestamptz,
                    bucket timestamptz NOT NULL
                ) PARTITION BY RANGE (bucket)
                """,
                "ALTER SEQUENCE outbox_id_seq OWNED BY outbox.id",
            ])
        // dead_letters: unresolved ones live in a partition of their own, never pruned.
        + adoptingLegacy(
            "dead_letters",
            indexes: ["dead_letters_pkey", "dead_letters_unresolved"],
            create: [
                """
                CREATE TABLE dead_letters (
                    id bigint NOT NULL DEFAULT nextval('dead_letters_id_seq'),
                    consumer_group text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    kafka_offset bigint NOT NULL,
                    event_id text NOT NULL,
                    reason_code text NOT NULL,
                    error text NOT NULL,
                    payload bytea,
                    headers jsonb NOT NULL DEFAULT '[]',
                    created_at timestamptz NOT NULL DEFAULT now(),
                    resolved_at timestamptz,
                    retries integer NOT NULL DEFAULT 0,
                    -- infinity while unresolved; the interval of its resolution after.
                    bucket timestamptz NOT NULL DEFAULT 'infinity'
                ) PARTITION BY RANGE (bucket)
                """,
                "ALTER SEQUENCE dead_letters_id_seq OWNED BY dead_letters.id",
            ])
        + [
        """
        CREATE TABLE dead_letters_unresolved PARTITION OF dead_letters (PRIMARY KEY (id))
            FOR VALUES FROM ('infinity') TO (MAXVALUE)
        """,
        "CREATE INDEX dead_letters_unresolved_group ON dead_letters_unresolved (consumer_group, id)",
        "INSERT INTO once_time_partitions VALUES ('dead_letters_unresolved', 'dead_letters', 'infinity', 'infinity')",

        // A fresh install has nothing to keep: its empty old tables go at once.
        """
        DO $do$
        DECLARE
            t text;
            empty boolean;
        BEGIN
            FOREACH t IN ARRAY ARRAY['processed_messages_legacy', 'outbox_legacy', 'dead_letters_legacy'] LOOP
                EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I)', t) INTO empty;
                IF empty THEN
                    EXECUTE format('DROP TABLE %I', t);
                    DELETE FROM once_time_partitions WHERE partition = t;
                END IF;
            END LOOP;
        END $do$
        """,
        "CREATE " + partitionRowsFunction,
        createPartitionFunction(roomForUpdates: true),
        // The partitions from the interval of `at` to `ahead` intervals on. After a long pause,
        // one partition covers the whole gap, so that the range stays contiguous.
        """
        CREATE FUNCTION once_ensure_partitions(at timestamptz) RETURNS integer
        LANGUAGE plpgsql AS $fn$
        DECLARE
            w once_partitioning;
            current timestamptz;
            target timestamptz;
            b timestamptz;
            made integer := 0;
            t text;
        BEGIN
            SELECT * INTO w FROM once_partitioning FOR UPDATE;
            current := date_bin(w.width, at, 'epoch');
            target := current + w.ahead * w.width;
            b := coalesce(w.newest + w.width, current);
            IF b < current THEN
                FOREACH t IN ARRAY ARRAY['processed_messages', 'outbox', 'dead_letters'] LOOP
                    PERFORM once_create_partition(t, b, current);
                END LOOP;
                made := made + 1;
                b := current;
            END IF;
            WHILE b <= target LOOP
                FOREACH t IN ARRAY ARRAY['processed_messages', 'outbox', 'dead_letters'] LOOP
                    PERFORM once_create_partition(t, b, b + w.width);
                END LOOP;
                made := made + 1;
                b := b + w.width;
            END LOOP;
            UPDATE once_partitioning SET oldest = coalesce(oldest, current), newest = greatest(newest, target, current);
            -- Every claim joins this one row: unanalysed, the planner takes it for hundreds of
            -- rows, prices the claim above jit_above_cost and compiles it (seconds per session).
            IF made > 0 OR (SELECT reltuples < 1 FROM pg_class WHERE oid = 'once_partitioning'::regclass) THEN
                ANALYZE once_partitioning;
            END IF;
            RETURN made;
        END $fn$
        """,
        // What a prune with this cutoff drops (see TimePartitions.prunable).
        """
        CREATE FUNCTION once_prunable_partitions(cutoff timestamptz)
        RETURNS TABLE (parent text, partition text, lower timestamptz, upper timestamptz)
        LANGUAGE plpgsql AS $fn$
        DECLARE
            p once_time_partitions;
            w once_partitioning;
            doomed boolean;
            floor bigint := (SELECT coalesce(max(r.floor), 1) FROM outbox_relay r);
        BEGIN
            SELECT * INTO w FROM once_partitioning;
            -- An interval partition goes once it is past both the cutoff and the current
            -- interval; a legacy one once the upgrade that made it is past the cutoff.
            FOR p IN SELECT * FROM once_time_partitions t
                     WHERE t.upper <= CASE WHEN isfinite(t.lower) THEN least(cutoff, date_bin(w.width, now(), 'epoch'))
                                           ELSE cutoff END
                     ORDER BY t.lower
            LOOP
                doomed := to_regclass(quote_ident(p.partition)) IS NULL;
                IF NOT doomed THEN
                    CASE p.parent
                    WHEN 'processed_messages' THEN doomed := true;
                    WHEN 'outbox' THEN
                        EXECUTE format('SELECT coalesce(max(id), 0) < $1 FROM %I', p.partition) INTO doomed USING floor;
                    WHEN 'dead_letters' THEN
                        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I WHERE resolved_at IS NULL)', p.partition) INTO doomed;
                    END CASE;
                END IF;
                IF doomed THEN
                    parent := p.parent; partition := p.partition; lower := p.lower; upper := p.upper;
                    RETURN NEXT;
                END IF;
            END LOOP;
        END $fn$
        """,
    ]
}

extension TimePartitions {
    /// `once_create_partition`: one partition of one table, with the indexes that table's
    /// statements rely on. Migration 4 made it keep room on each page for updates in place (the
    /// claims' outcome updates, the relay's `published_at`); migration 8 replaces it without,
    /// since claims are written once with their outcomes and the relay records its floor.
    static func createPartitionFunction(roomForUpdates: Bool) -> String {
        let processedMessages = roomForUpdates
            ? """
                -- Room on each page for the outcome updates of a batch (HOT, no index touched).
                EXECUTE format('ALTER TABLE %I SET (fillfactor = 85), ALTER COLUMN tenant_id SET NOT NULL', name);
            """
            : """
                EXECUTE format('ALTER TABLE %I ALTER COLUMN tenant_id SET NOT NULL', name);
            """
        let outbox = roomForUpdates
            ? """
                -- Room for the relay's published_at update in place.
                EXECUTE format('ALTER TABLE %I SET (fillfactor = 50), ADD PRIMARY KEY (id)', name);
            """
            : """
                EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', name);
            """
        return """
            CREATE \(roomForUpdates ? "" : "OR REPLACE ")FUNCTION once_create_partition(parent text, lower timestamptz, upper timestamptz) RETURNS void
            LANGUAGE plpgsql AS $fn$
            DECLARE
                name text := parent || '_' || to_char(lower AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
            BEGIN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name, parent);
                CASE parent
                WHEN 'processed_messages' THEN
            \(processedMessages)
                    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (consumer_group, tenant_id, event_id)', name || '_key', name);
                WHEN 'outbox' THEN
            \(outbox)
                    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (tenant_id, event_type, aggregate_id)', name || '_key', name);
                WHEN 'dead_letters' THEN
                    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', name);
                END CASE;
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, name, lower, upper);
                INSERT INTO once_time_partitions VALUES (name, parent, lower, upper);
            END $fn$
            """
    }

    /// `once_partition_rows(name)`, after `CREATE ` or `CREATE OR REPLACE `: a partition's rows,
    /// counted when it is small (under 16 MB), the planner's estimate otherwise (-1 before the
    /// first ANALYZE); 0 for anything that is not one of once's partitions (since migration 5
    /// it runs with its owner's rights).
    static let partitionRowsFunction = """
        FUNCTION once_partition_rows(name text) RETURNS bigint
        LANGUAGE plpgsql STABLE AS $fn$
        DECLARE
            c pg_class;
            n bigint;
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM once_time_partitions WHERE partition = name) THEN RETURN 0; END IF;
            SELECT * INTO c FROM pg_class WHERE oid = to_regclass(quote_ident(name));
            IF NOT FOUND THEN RETURN 0; END IF;
            IF pg_relation_size(c.oid) < 16 * 1024 * 1024 THEN
                EXECUTE format('SELECT count(*) FROM %I', name) INTO n;
                RETURN n;
            END IF;
            RETURN c.reltuples::bigint;
        END $fn$
        """

    /// The statements that make `table` the legacy partition (bucket `-infinity`) of a new
    /// partitioned table of the same name, which `create` makes: renamed with its `indexes`,
    /// given the bucket column (a constant default: no rewrite; the check's one scan lets the
    /// attach skip its own), attached, and listed.
    fileprivate static func adoptingLegacy(_ table: String, indexes: [String], create: [String]) -> [String] {
        let legacy = "\(table)_legacy"
        return ["ALTER TABLE \(table) RENAME TO \(legacy)"]
            + indexes.map { "ALTER INDEX \($0) RENAME TO \($0.replacingOccurrences(of: table, with: legacy))" }
            + [
                """
                ALTER TABLE \(legacy)
                    ADD COLUMN bucket timestamptz NOT NULL DEFAULT '-infinity',
                    ADD CONSTRAINT \(legacy)_bucket CHECK (bucket = '-infinity')
                """
            ]
            + create
            + [
                "ALTER TABLE \(table) ATTACH PARTITION \(legacy) FOR VALUES FROM (MINVALUE) TO ('1970-01-01')",
                "INSERT INTO once_time_partitions VALUES ('\(legacy)', '\(table)', '-infinity', now())",
            ]
    }
}

/// Why a prune did not run.
public enum TimePartitionsError: Error, CustomStringConvertible, Sendable {
    /// Another process holds the prune lock.
    case pruneRunning

    public var description: String {
        switch self {
        case .pruneRunning: return "another prune is running (once prune or a once run pruning on its schedule)"
        }
    }
}
