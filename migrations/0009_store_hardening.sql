-- The event store against its own service role (found by a review acting as it):
--
-- 1. `position` and `tx_id` come from the database alone. With INSERT on the whole table
--    the service role could write `OVERRIDING SYSTEM VALUE` positions (a negative one
--    sat before the feed's start, unseen by the feed and by verify) and any `tx_id` (one
--    below the projectors' checkpoints was skipped by them; one past every snapshot was
--    never in the feed). INSERT is now granted on the other columns only.
-- 2. The balance check reads `postings` through a pinned search_path: a temporary table
--    named `postings` (every role may create one) shadowed the real one, and unbalanced
--    legs committed.
-- 3. Postings hold what the ledger can read back: an account name of the contract, and an
--    amount a `rust_decimal::Decimal` holds exactly. One unreadable row stopped `verify`
--    and the projectors for good, and no one could remove it.

REVOKE INSERT ON events FROM escrow_ledger_app;
GRANT INSERT (stream_id, stream_type, version, event_id, event_type, schema_version,
              payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    ON events TO escrow_ledger_app;

ALTER TABLE events ADD CONSTRAINT events_position_positive CHECK (position > 0);

-- pg_temp last: relations are then never looked up there first.
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION postings_balanced() SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = 'postings'::regclass));
END $$;

ALTER TABLE postings ADD CONSTRAINT postings_account_name CHECK (account ~ (
    '^(external:[a-z0-9_]+'
    '|escrow:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
    '|(seller|buyer):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|ext:.+)'
    '|platform:(fees|aml_fees|adjustments|suspense))$'
));

-- At most 28 decimals, and a mantissa within 96 bits (2^96 - 1).
ALTER TABLE postings ADD CONSTRAINT postings_amount_fits CHECK (
    scale(amount) <= 28
    AND abs(amount) * power(10::numeric, scale(amount)) <= 79228162514264337593543950335
);
