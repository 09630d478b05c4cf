-- The references of the legacy ledger entries read so far, so the importer finds
-- retried-webhook duplicates (same reference, type and amount, less than 10 minutes
-- apart) with one indexed lookup per batch here. It used to ask MongoDB for every
-- document with the batch's references, which the legacy database answers by scanning the
-- whole collection (it has no index on `reference`, and the importer writes nothing
-- there): a pass over n entries cost n^2 / batch documents read (bench import).

SET LOCAL ROLE escrow_ledger_owner;

CREATE TABLE legacy_import.entry_references (
    object_id   text PRIMARY KEY,
    reference   text NOT NULL,
    kind        text NOT NULL,
    amount      numeric NOT NULL,
    created_at  timestamptz NOT NULL,
    imported    boolean NOT NULL
);
CREATE INDEX entry_references_reference_idx ON legacy_import.entry_references (reference);
COMMENT ON TABLE legacy_import.entry_references IS 'Legacy ledger entries with a reference, as parsed (imported: whether the entry became an event); for the duplicate-webhook check.';

REVOKE ALL ON legacy_import.entry_references FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON legacy_import.entry_references TO escrow_ledger_app;

RESET ROLE;
