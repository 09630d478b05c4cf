-- The event store: append-only events and their postings, immutable by the database's
-- own rules. Roles: escrow_ledger_owner (cannot log in) owns the tables;
-- escrow_ledger_app is what the service acts as (SELECT and INSERT only on the store).

DO $$ BEGIN
    CREATE ROLE escrow_ledger_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
    CREATE ROLE escrow_ledger_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- A migrator that is not a superuser must be able to hand tables to the owner role and
-- to act as the service role.
DO $$ BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT escrow_ledger_owner, escrow_ledger_app TO %I', current_user);
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- A session left idle inside a transaction holds the feed's watermark back: cap it for
-- sessions that log in as the service role (the server also sets it per connection).
ALTER ROLE escrow_ledger_app SET idle_in_transaction_session_timeout = '10s';

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       uuid NOT NULL,
    stream_type     text NOT NULL,
    version         bigint NOT NULL CHECK (version >= 1),
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    schema_version  integer NOT NULL CHECK (schema_version >= 1),
    payload         jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    metadata        jsonb NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

COMMENT ON TABLE events IS 'The append-only event store. Feed order is (tx_id, position).';

-- The feed is read in (transaction, position) order.
CREATE INDEX events_feed_idx ON events (tx_id, position);

CREATE TABLE postings (
    position  bigint NOT NULL REFERENCES events (position),
    leg       smallint NOT NULL CHECK (leg >= 0),
    account   text NOT NULL,
    asset     text NOT NULL CHECK (asset IN ('USD', 'EUR', 'USDT', 'USDC', 'BTC', 'ETH')),
    amount    numeric NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (position, leg)
);

COMMENT ON TABLE postings IS 'The signed legs of every event that moves money; they sum to zero per event and asset.';

CREATE INDEX postings_account_idx ON postings (account, asset);

CREATE FUNCTION refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'EL001';
END
$$;

CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER postings_refuse_update_delete BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER postings_refuse_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- The database itself refuses a transaction whose postings of one event do not sum to
-- zero per asset. Deferred: legs are checked at commit, once all are written.
CREATE FUNCTION postings_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    unbalanced text;
BEGIN
    SELECT asset INTO unbalanced
    FROM postings WHERE position = NEW.position
    GROUP BY asset HAVING sum(amount) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'postings of event % do not sum to zero in %', NEW.position, unbalanced
            USING ERRCODE = '23514', CONSTRAINT = 'postings_balanced';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION postings_balanced();

-- ENABLE ALWAYS: fire whatever session_replication_role says.
ALTER TABLE events ENABLE ALWAYS TRIGGER events_refuse_update_delete;
ALTER TABLE events ENABLE ALWAYS TRIGGER events_refuse_truncate;
ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_refuse_update_delete;
ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_refuse_truncate;
ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_balanced;

ALTER FUNCTION refuse_change() OWNER TO escrow_ledger_owner;
ALTER FUNCTION postings_balanced() OWNER TO escrow_ledger_owner;
ALTER TABLE events OWNER TO escrow_ledger_owner;
ALTER TABLE postings OWNER TO escrow_ledger_owner;

REVOKE ALL ON events, postings FROM PUBLIC;
GRANT SELECT, INSERT ON events, postings TO escrow_ledger_app;
GRANT SELECT ON _sqlx_migrations TO escrow_ledger_app;
