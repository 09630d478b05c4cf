-- The cutover importer's bookkeeping, beside the event store and written in the same short
-- transaction as each batch's events: the legacy id map, the checkpoint per collection,
-- the rejects (with the raw document), the anomalies listed by id, and which domains have
-- finished. Roles as in 0001: owned by escrow_ledger_owner, used by escrow_ledger_app.

CREATE SCHEMA legacy_import AUTHORIZATION escrow_ledger_owner;

-- Imported ledger entries looked up by their payment (verify's money per payment).
CREATE INDEX events_legacy_entry_payment_idx ON events ((payload ->> 'payment_id'))
    WHERE event_type = 'LedgerEntryImported';


-- Everything below is created as the owner role (the migrator is a superuser or a member
-- of it, see 0001).
SET LOCAL ROLE escrow_ledger_owner;
COMMENT ON SCHEMA legacy_import IS 'The cutover importer''s id map, checkpoints, rejects and anomalies (docs/legacy-ids.md).';

-- Every imported legacy document: the UUID it became and the stream it went to.
CREATE TABLE legacy_import.id_map (
    collection        text NOT NULL,
    object_id         text NOT NULL CHECK (object_id ~ '^[0-9a-f]{24}$'),
    id                uuid NOT NULL,
    stream_id         uuid NOT NULL,
    stream_type       text NOT NULL,
    digest            text NOT NULL,
    -- payments only: the account key of their purchase request, to find the payment of a
    -- dispute that has no paymentId.
    purchase_request  text,
    imported_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT id_map_pkey PRIMARY KEY (collection, object_id),
    CONSTRAINT id_map_id_key UNIQUE (collection, id)
);
CREATE INDEX id_map_purchase_request_idx ON legacy_import.id_map (purchase_request)
    WHERE collection = 'payments';
COMMENT ON TABLE legacy_import.id_map IS 'Legacy (collection, ObjectId) -> ledger UUID and stream.';

-- The last _id imported per collection (resume with _id > last), committed with its batch.
CREATE TABLE legacy_import.checkpoints (
    collection     text PRIMARY KEY,
    last_object_id text NOT NULL,
    documents      bigint NOT NULL DEFAULT 0,
    completed_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Domains (payments, disputes) whose import has finished.
CREATE TABLE legacy_import.domains (
    domain        text PRIMARY KEY CHECK (domain IN ('payments', 'disputes')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);

-- Documents outside the contract, with the raw document: resolved once a retry imports them.
CREATE TABLE legacy_import.rejects (
    collection     text NOT NULL,
    object_id      text NOT NULL,
    code           text NOT NULL,
    field          text,
    reason         text NOT NULL,
    raw_ejson      text NOT NULL,
    raw_bson       bytea NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    CONSTRAINT rejects_pkey PRIMARY KEY (collection, object_id)
);
CREATE INDEX rejects_open_idx ON legacy_import.rejects (collection, object_id) WHERE resolved_at IS NULL;
COMMENT ON TABLE legacy_import.rejects IS 'Legacy documents rejected with a reason; raw_ejson is Extended JSON text, raw_bson the bytes as read.';

-- Oddities of documents that imported, listed by id (each kind once per document).
CREATE TABLE legacy_import.anomalies (
    collection    text NOT NULL,
    object_id     text NOT NULL,
    kind          text NOT NULL,
    detail        text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT anomalies_pkey PRIMARY KEY (collection, object_id, kind)
);
CREATE INDEX anomalies_kind_idx ON legacy_import.anomalies (kind);

-- One row per run (import, dry run, retry, verify) with its report.
CREATE TABLE legacy_import.runs (
    run_id       uuid PRIMARY KEY,
    domain       text NOT NULL,
    mode         text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    report       jsonb
);

REVOKE ALL ON ALL TABLES IN SCHEMA legacy_import FROM PUBLIC;
GRANT USAGE ON SCHEMA legacy_import TO escrow_ledger_app;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA legacy_import TO escrow_ledger_app;

RESET ROLE;
