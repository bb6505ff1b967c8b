import OncePostgres

/// One schema change: statements run in order, in one transaction, recorded by `version`.
public struct Migration: Sendable {
    public var version: Int
    public var name: String
    public var statements: [String]

    public init(version: Int, name: String, statements: [String]) {
        self.version = version
        self.name = name
        self.statements = statements
    }
}

/// Brings a database to the newest schema.
///
/// All migrations run in one transaction under a transaction-scoped advisory lock, so two
/// processes migrating at once serialise: the second finds everything applied and does nothing.
/// Versions are unique across the list; applied versions are recorded in `once_schema_migrations`.
/// Errors are `PostgresError`s; a failing migration leaves the schema as it was.
public struct Migrator: Sendable {
    public var migrations: [Migration]

    /// The lock key shared by every `once migrate`; any constant unlikely to collide works.
    static let advisoryLockKey: Int64 = 0x6f6e_6365_6d69_6772

    public init(migrations: [Migration]) {
        precondition(Set(migrations.map(\.version)).count == migrations.count, "duplicate migration versions")
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Applies what is missing; returns the versions applied now (empty when up to date).
    @discardableResult
    public func migrate(on connection: PostgresConnection) throws -> [Int] {
        try connection.transaction { tx in
            _ = try tx.query("SELECT pg_advisory_xact_lock($1)", [.int64(Self.advisoryLockKey)])
            try tx.execute(
                """
                CREATE TABLE IF NOT EXISTS once_schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let applied = Set(try tx.query("SELECT version FROM once_schema_migrations").map { try $0.decode(Int.self, column: 0) })
            var now: [Int] = []
            for migration in migrations where !applied.contains(migration.version) {
                for statement in migration.statements {
                    try tx.execute(statement)
                }
                try tx.execute(
                    "INSERT INTO once_schema_migrations (version, name) VALUES ($1, $2)",
                    [.int(migration.version), .text(migration.name)])
                now.append(migration.version)
            }
            // Partitions ahead of need, so that no write fails for a missing one (`TimePartitions`).
            if try tx.query("SELECT to_regproc('once_ensure_partitions') IS NOT NULL")[0].decode(Bool.self, column: 0) {
                try TimePartitions.ensure(on: tx)
            }
            return now
        }
    }
}

extension Migration {
    /// The pipeline's own tables (CONTRACT.md §2): dedup, positions, dead letters, outbox.
    public static let pipeline: [Migration] = [
        Migration(
            version: 1,
            name: "pipeline tables",
            statements: [
                """
                CREATE TABLE processed_messages (
                    consumer_group text NOT NULL,
                    event_id text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    kafka_offset bigint NOT NULL,
                    event_type text,
                    tenant_id text,
                    outcome text NOT NULL
                        CHECK (outcome IN ('applied', 'duplicate', 'conflict', 'dead_lettered')),
                    processed_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (consumer_group, event_id)
                )
                """,
                "CREATE INDEX processed_messages_position ON processed_messages (consumer_group, topic, partition, kafka_offset)",
                """
                CREATE TABLE consumer_offsets (
                    consumer_group text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    -- NULL until the first batch commits: the partition starts at its earliest offset.
                    next_offset bigint,
                    -- Bumped by every claim and every operator reset; a batch commits only under
                    -- the generation it started with (the zombie fence).
                    generation bigint NOT NULL DEFAULT 0,
                    owner text,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (consumer_group, topic, partition)
                )
                """,
                """
                CREATE TABLE dead_letters (
                    id bigserial PRIMARY KEY,
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
                    retries integer NOT NULL DEFAULT 0
                )
                """,
                "CREATE INDEX dead_letters_unresolved ON dead_letters (consumer_group, id) WHERE resolved_at IS NULL",
                """
                CREATE TABLE outbox (
                    id bigserial PRIMARY KEY,
                    tenant_id text NOT NULL,
                    event_type text NOT NULL,
                    aggregate_id text NOT NULL,
                    topic text NOT NULL,
                    message_key text,
                    payload bytea,
                    headers jsonb NOT NULL DEFAULT '{}',
                    created_at timestamptz NOT NULL DEFAULT now(),
                    published_at timestamptz,
                    UNIQUE (tenant_id, event_type, aggregate_id)
                )
                """,
                "CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
            ]
        ),
        Migration(
            version: 2,
            name: "dedup keys in byte order, room for outcome updates",
            statements: [
                // Event ids and group names are identifiers: comparing them byte by byte gives the
                // same answers as any locale for equality and makes each dedup probe cheaper
                // (about 40 % under C.UTF-8, where every comparison goes through strcoll).
                """
                ALTER TABLE processed_messages
                    ALTER COLUMN consumer_group TYPE text COLLATE "C",
                    ALTER COLUMN event_id TYPE text COLLATE "C"
                """,
                // Room on each page for the batch's outcome updates (a duplicate or a conflict is
                // first claimed as `applied`), so that they stay on the page and skip the indexes.
                "ALTER TABLE processed_messages SET (fillfactor = 85)",
            ]
        ),
        Migration(
            version: 3,
            name: "outbox relay floor",
            statements: [
                // Every outbox row below `floor` is published (`OutboxPosition`): the relay scans from
                // there by id, so no index needs `published_at`, and marking a row published
                // rewrites it in place on its page (fillfactor) without touching an index.
                """
                CREATE TABLE outbox_relay (
                    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                    floor bigint NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now()
                )
                """,
                "INSERT INTO outbox_relay (floor) VALUES (1)",
                "DROP INDEX outbox_unpublished",
                "ALTER TABLE outbox SET (fillfactor = 50)",
            ]
        ),
        Migration(version: 4, name: "dedup per tenant; time partitions for retention", statements: TimePartitions.migration),
        Migration(
            version: 5,
            name: "least privilege: partitions made with the owner's rights",
            statements: [
                // Rows are counted only in once's own partitions.
                "CREATE OR REPLACE " + TimePartitions.partitionRowsFunction,
                // A role with the run-time grants (`once grants`) makes the partitions ahead of
                // need through this function, which runs as its owner, with a fixed search path;
                // nobody else may call it, or count rows through the other one.
                """
                DO $do$
                BEGIN
                    EXECUTE format('ALTER FUNCTION once_ensure_partitions(timestamptz) SECURITY DEFINER SET search_path = %I, pg_temp',
                                   current_schema());
                    EXECUTE format('ALTER FUNCTION once_partition_rows(text) SECURITY DEFINER SET search_path = %I, pg_temp',
                                   current_schema());
                END $do$
                """,
                "REVOKE EXECUTE ON FUNCTION once_ensure_partitions(timestamptz) FROM PUBLIC",
                "REVOKE EXECUTE ON FUNCTION once_partition_rows(text) FROM PUBLIC",
                "REVOKE EXECUTE ON FUNCTION once_create_partition(text, timestamptz, timestamptz) FROM PUBLIC",
                "REVOKE EXECUTE ON FUNCTION once_prunable_partitions(timestamptz) FROM PUBLIC",
            ]),
        Migration(
            version: 6,
            name: "dead letters say how they were resolved; replays record their progress",
            statements: [
                // A dead letter is resolved by a retry that went through, or discarded by an
                // operator with a note; either way the row stays for the audit. Rows resolved
                // before this migration were resolved by retries (there was no other way).
                """
                ALTER TABLE dead_letters
                    ADD COLUMN resolution text CONSTRAINT dead_letters_resolution_check
                        CHECK (resolution IN ('retried', 'discarded')),
                    ADD COLUMN resolved_by text,
                    ADD COLUMN resolution_note text
                """,
                "UPDATE dead_letters SET resolution = 'retried' WHERE resolved_at IS NOT NULL AND resolution IS NULL",
                // One row per `once replay`, updated after each of its batches.
                """
                CREATE TABLE once_replays (
                    id bigserial PRIMARY KEY,
                    consumer_group text NOT NULL,
                    topic text NOT NULL,
                    partition integer NOT NULL,
                    from_offset bigint NOT NULL,
                    through_offset bigint,
                    dry_run boolean NOT NULL,
                    state text NOT NULL DEFAULT 'running'
                        CONSTRAINT once_replays_state_check CHECK (state IN ('running', 'finished', 'failed')),
                    next_offset bigint NOT NULL,
                    records bigint NOT NULL DEFAULT 0,
                    applied bigint NOT NULL DEFAULT 0,
                    duplicates bigint NOT NULL DEFAULT 0,
                    conflicts bigint NOT NULL DEFAULT 0,
                    dead_lettered bigint NOT NULL DEFAULT 0,
                    error text,
                    started_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    finished_at timestamptz
                )
                """,
                "CREATE INDEX once_replays_group ON once_replays (consumer_group, id)",
            ]),
        Migration(
            version: 7,
            name: "the relay records its floor instead of rewriting outbox rows",
            statements: [
                // Which rows are published, now that the relay no longer sets `published_at` on
                // each (rows published before this migration keep theirs): every row below the
                // floor the relay records, and any row it marked.
                """
                CREATE VIEW outbox_publication AS
                SELECT o.id, o.tenant_id, o.event_type, o.aggregate_id, o.topic, o.message_key, o.created_at,
                       o.published_at IS NOT NULL OR o.id < f.floor AS published
                FROM outbox o CROSS JOIN (SELECT coalesce(max(floor), 1) AS floor FROM outbox_relay) f
                """
            ]),
        Migration(
            version: 8,
            name: "claims and outbox rows written once: full pages",
            statements: [
                // Claims are inserted with their outcomes and the relay records its floor, so
                // neither table's partitions need room on their pages for updates: new partitions
                // fill their pages, and the existing ones fill the pages they add from now on
                // (a change of settings only; no row moves, and inserts go on meanwhile).
                TimePartitions.createPartitionFunction(roomForUpdates: false),
                """
                DO $do$
                DECLARE
                    p text;
                BEGIN
                    FOR p IN SELECT partition FROM once_time_partitions WHERE parent IN ('processed_messages', 'outbox') LOOP
                        EXECUTE format('ALTER TABLE %I RESET (fillfactor)', p);
                    END LOOP;
                END $do$
                """,
            ]),
    ]
}
