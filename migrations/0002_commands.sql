-- What the command path keeps beside the event store, in the same transactions as the
-- events: idempotency keys (never expiring) and provider deposit references (each
-- deposited once). Both are immutable once written.

CREATE TABLE idempotency_keys (
    client        text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status        smallint NOT NULL,
    response      bytea NOT NULL,
    position      bigint NOT NULL REFERENCES events (position),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (client, key)
);

COMMENT ON TABLE idempotency_keys IS 'First successful response of each (client, Idempotency-Key), replayed byte for byte.';

CREATE TABLE deposit_references (
    provider    text NOT NULL,
    reference   text NOT NULL,
    payment_id  uuid NOT NULL,
    position    bigint NOT NULL REFERENCES events (position),
    CONSTRAINT deposit_references_pkey PRIMARY KEY (provider, reference)
);

COMMENT ON TABLE deposit_references IS 'Every provider reference ever deposited: a reference is deposited once per provider.';

CREATE TRIGGER idempotency_keys_refuse_update_delete BEFORE UPDATE OR DELETE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER deposit_references_refuse_update_delete BEFORE UPDATE OR DELETE ON deposit_references
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
ALTER TABLE idempotency_keys ENABLE ALWAYS TRIGGER idempotency_keys_refuse_update_delete;
ALTER TABLE deposit_references ENABLE ALWAYS TRIGGER deposit_references_refuse_update_delete;

ALTER TABLE idempotency_keys OWNER TO escrow_ledger_owner;
ALTER TABLE deposit_references OWNER TO escrow_ledger_owner;
REVOKE ALL ON idempotency_keys, deposit_references FROM PUBLIC;
GRANT SELECT, INSERT ON idempotency_keys, deposit_references TO escrow_ledger_app;
