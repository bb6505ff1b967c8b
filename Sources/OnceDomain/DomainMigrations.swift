import OnceSchema

extension Migration {
    /// The domain's tables (CONTRACT.md §2), versions 100 and up. Every key starts with the
    /// tenant; every business key of the contract is a unique constraint, which is what stops
    /// producer-side duplicates that carry new event ids.
    public static let domain: [Migration] = [
        Migration(
            version: 100,
            name: "credits: accounts, ledger, conflicts",
            statements: [
                """
                CREATE TABLE credit_accounts (
                    tenant_id text NOT NULL,
                    account_id text NOT NULL,
                    -- Always the sum of the account's credit_ledger amounts; may go below zero.
                    balance bigint NOT NULL DEFAULT 0,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (tenant_id, account_id)
                )
                """,
                """
                CREATE TABLE credit_ledger (
                    id bigserial PRIMARY KEY,
                    tenant_id text NOT NULL,
                    account_id text NOT NULL,
                    kind text NOT NULL CHECK (kind IN ('charge', 'grant')),
                    -- batch_id for a charge, grant_id for a grant.
                    business_key text NOT NULL,
                    credits bigint NOT NULL CHECK (credits >= 0),
                    amount bigint NOT NULL,
                    event_id text NOT NULL,
                    occurred_at timestamptz NOT NULL,
                    recorded_at timestamptz NOT NULL DEFAULT now(),
                    UNIQUE (tenant_id, kind, business_key),
                    CHECK (amount = CASE kind WHEN 'charge' THEN -credits ELSE credits END),
                    FOREIGN KEY (tenant_id, account_id) REFERENCES credit_accounts (tenant_id, account_id)
                )
                """,
                "CREATE INDEX credit_ledger_account ON credit_ledger (tenant_id, account_id, id)",
                "CREATE INDEX credit_ledger_recorded ON credit_ledger (recorded_at)",
                """
                CREATE TABLE credit_conflicts (
                    id bigserial PRIMARY KEY,
                    tenant_id text NOT NULL,
                    kind text NOT NULL CHECK (kind IN ('charge', 'grant')),
                    business_key text NOT NULL,
                    -- The emission that disagreed with the ledger and was not applied.
                    event_id text NOT NULL,
                    account_id text NOT NULL,
                    credits bigint NOT NULL,
                    -- What the ledger holds for the business key.
                    existing_event_id text NOT NULL,
                    existing_account_id text NOT NULL,
                    existing_credits bigint NOT NULL,
                    recorded_at timestamptz NOT NULL DEFAULT now(),
                    UNIQUE (tenant_id, kind, business_key, event_id)
                )
                """,
                "CREATE INDEX credit_conflicts_recorded ON credit_conflicts (recorded_at)",
            ]
        ),
        Migration(
            version: 101,
            name: "devices registry and batch action results",
            statements: [
                """
                CREATE TABLE devices (
                    tenant_id text NOT NULL,
                    device_uid text NOT NULL,
                    state text NOT NULL,
                    service_type_id bigint,
                    workflow_id text,
                    -- Not NULL: the device is deleted and counts as not found.
                    deleted_at timestamptz,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (tenant_id, device_uid)
                )
                """,
                """
                CREATE TABLE batch_action_devices (
                    tenant_id text NOT NULL,
                    batch_action_id text NOT NULL,
                    device_uid text NOT NULL,
                    action text NOT NULL,
                    workflow_id text,
                    outcome text NOT NULL CHECK (outcome IN ('SUCCESS', 'FAIL')),
                    error_code text CHECK (
                        error_code IN ('INVALID_DEVICE_UID', 'DEVICE_NOT_FOUND', 'WRONG_SERVICE_TYPE',
                                       'WRONG_STATE', 'ALREADY_IN_WORKFLOW', 'NOT_IN_WORKFLOW')),
                    -- The event whose chunk classified the device.
                    event_id text NOT NULL,
                    recorded_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (tenant_id, batch_action_id, device_uid),
                    CHECK ((outcome = 'SUCCESS') = (error_code IS NULL))
                )
                """,
            ]
        ),
        Migration(
            version: 102,
            name: "jobs",
            statements: [
                """
                CREATE TABLE jobs (
                    job_id uuid NOT NULL UNIQUE,
                    tenant_id text NOT NULL,
                    request_id text NOT NULL,
                    user_id text NOT NULL,
                    action_code bigint NOT NULL,
                    action_name text NOT NULL,
                    customer_ids text[] NOT NULL,
                    event_id text NOT NULL,
                    occurred_at timestamptz NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (tenant_id, request_id)
                )
                """,
                """
                CREATE TABLE job_conflicts (
                    id bigserial PRIMARY KEY,
                    tenant_id text NOT NULL,
                    request_id text NOT NULL,
                    -- The emission that disagreed with the job already created; no job came of it.
                    event_id text NOT NULL,
                    user_id text NOT NULL,
                    action_code bigint NOT NULL,
                    action_name text NOT NULL,
                    customer_ids text[] NOT NULL,
                    existing_event_id text NOT NULL,
                    recorded_at timestamptz NOT NULL DEFAULT now(),
                    UNIQUE (tenant_id, request_id, event_id)
                )
                """,
            ]
        ),
        Migration(
            version: 103,
            name: "credits: the audit, not a foreign key, checks that every ledger row has its account",
            statements: [
                // The account is opened in the same transaction as the ledger row, so the key
                // never refused a row; its check cost a share lock on the account row per
                // ledger row (a MultiXact while another transaction holds it).
                // `once audit credits` reports a ledger row without its account
                // (balance_mismatch), as it always did for a schema without the key.
                "ALTER TABLE credit_ledger DROP CONSTRAINT IF EXISTS credit_ledger_tenant_id_account_id_fkey",
            ]
        ),
    ]
}
