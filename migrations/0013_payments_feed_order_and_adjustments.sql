-- Two changes to the payments read model, both found by review helper-36.
--
-- 1. GET /v1/payments paged by creation time skipped payments that committed while a
-- reader paged (2 of 1,060 and 6 of 2,191 under load): a payment's `created_at`
-- is stamped when its command is decided, before its transaction commits, so one stamped
-- earlier could become visible after a page had passed its time. Projected rows become
-- visible in feed order (committing transaction, position), so each payment row now
-- carries its creation event's place in the feed, and pages follow it: a row that appears
-- later always sorts after every row a reader has already been shown.
SET LOCAL ROLE escrow_ledger_owner;

DO $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['a', 'b'] LOOP
        EXECUTE format('ALTER TABLE projection.payments_%1$s
                            ADD COLUMN created_tx bigint, ADD COLUMN created_position bigint', s);
        EXECUTE format('UPDATE projection.payments_%1$s p
                        SET created_tx = e.tx_id::text::int8, created_position = e.position
                        FROM events e WHERE e.stream_id = p.payment_id AND e.version = 1', s);
        EXECUTE format('ALTER TABLE projection.payments_%1$s
                            ALTER COLUMN created_tx SET NOT NULL,
                            ALTER COLUMN created_position SET NOT NULL', s);
        EXECUTE format('CREATE INDEX payments_%1$s_feed_idx ON projection.payments_%1$s (created_tx, created_position)', s);
        EXECUTE format('DROP INDEX projection.payments_%1$s_status_idx', s);
        EXECUTE format('DROP INDEX projection.payments_%1$s_provider_idx', s);
        EXECUTE format('CREATE INDEX payments_%1$s_status_idx ON projection.payments_%1$s (status, created_tx, created_position)', s);
        EXECUTE format('CREATE INDEX payments_%1$s_provider_idx ON projection.payments_%1$s (provider, created_tx, created_position)', s);
    END LOOP;
END $$;

COMMENT ON COLUMN projection.payments_a.created_tx IS 'The transaction of the payment''s creation event: with created_position, its place in the feed (the order GET /v1/payments pages in).';
COMMENT ON COLUMN projection.payments_b.created_tx IS 'The transaction of the payment''s creation event: with created_position, its place in the feed (the order GET /v1/payments pages in).';

-- 2. A payment's escrow moved by an adjustment showed nowhere in its row (100.00
-- deposited, moved to platform:adjustments, and the payment read funded with 0.00 held
-- and nothing released or refunded). Each row now carries the net of the
-- adjustments into (+) or out of (-) its escrow, live (AdjustmentPosted) and imported
-- (LedgerEntryImported of kind adjustment).
--
-- Existing rows of the live side are filled from the postings of the events the
-- projector has applied (up to its checkpoint, in feed order); events after it add to the
-- column as the projector applies them. The idle side is emptied by the next rebuild
-- before it is used. No default: a server of the previous version, still running, fails
-- to write a payment row (and retries) rather than write a 0 that is wrong.
DO $$
DECLARE
    s text;
    live text;
BEGIN
    SELECT active_side INTO live FROM projection.projector_state WHERE projector = 'payments';
    FOREACH s IN ARRAY ARRAY['a', 'b'] LOOP
        EXECUTE format('ALTER TABLE projection.payments_%1$s ADD COLUMN escrow_adjusted numeric', s);
        IF s = live THEN
            EXECUTE format($u$
                UPDATE projection.payments_%1$s p SET escrow_adjusted = coalesce((
                    SELECT sum(po.amount)
                    FROM events e
                    JOIN postings po ON po.position = e.position
                    JOIN projection.projector_state st ON st.projector = 'payments'
                    WHERE e.stream_id = p.payment_id
                      AND (e.event_type = 'AdjustmentPosted'
                           OR (e.event_type = 'LedgerEntryImported'
                               AND e.payload ->> 'kind' = 'adjustment'))
                      AND po.account = 'escrow:' || p.payment_id::text
                      AND (e.tx_id::text::int8, e.position)
                          <= (st.checkpoint_tx, st.checkpoint_position)), 0)$u$, s);
        ELSE
            EXECUTE format('UPDATE projection.payments_%1$s SET escrow_adjusted = 0', s);
        END IF;
        EXECUTE format('ALTER TABLE projection.payments_%1$s ALTER COLUMN escrow_adjusted SET NOT NULL', s);
    END LOOP;
END $$;

-- Points a projector's finance views at one side of its tables. Called by the migration
-- (side a) and by every rebuild's swap, inside its short transaction.
CREATE OR REPLACE FUNCTION projection.point_views(p_projector text, p_side text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_side NOT IN ('a', 'b') THEN
        RAISE EXCEPTION 'side must be a or b, not %', p_side;
    END IF;
    IF p_projector = 'payments' THEN
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.payments AS
            SELECT payment_id, status, asset, provider, buyer, seller, purchase_request,
                   seller_offer, amount, deposited, held, released, refunded, fees, aml_fees,
                   paid_out_seller + paid_out_buyer AS paid_out, paid_out_seller,
                   paid_out_buyer, excess, excess_held, seller_share, buyer_share,
                   open_dispute_id, created_at, funded_at, released_at, refunded_at,
                   cancelled_at, disputed_at, paid_out_at, updated_at, version,
                   last_position, metadata,
                   (created_at AT TIME ZONE 'UTC')::date AS created_day,
                   created_tx, created_position, escrow_adjusted
            FROM projection.payments_%1$s$v$, p_side);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.reconciliation_buckets AS
            SELECT provider, status, asset, day, payments, amount, deposited, excess, held,
                   released, refunded, fees, aml_fees, paid_out
            FROM projection.reconciliation_buckets_%1$s$v$, p_side);
    ELSIF p_projector = 'balances' THEN
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.account_balances AS
            SELECT account, split_part(account, ':', 1) AS account_kind, asset, balance,
                   postings, last_position, last_occurred_at
            FROM projection.account_balances_%1$s$v$, p_side);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.balance_history AS
            SELECT position, leg, account, asset, amount, balance_after, occurred_at
            FROM projection.balance_history_%1$s$v$, p_side);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.trial_balance AS
            SELECT asset, total, inflows, outflows, postings
            FROM projection.trial_balance_%1$s$v$, p_side);
    ELSIF p_projector = 'disputes' THEN
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.disputes AS
            SELECT dispute_id, payment_id, status, priority, priority_rank, admin, opened_by,
                   opened_by_role, reason, description, initial_priority, outcome,
                   resolution_seller_amount, resolution_buyer_amount, resolution_fees,
                   resolution_aml_fees, resolution_note, evidence_count, message_count,
                   opened_at, updated_at, ended_at, version, last_position
            FROM projection.disputes_%1$s$v$, p_side);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.dispute_evidence AS
            SELECT dispute_id, seq, evidence_id, submitted_by, evidence_type, url,
                   description, submitted_at, position
            FROM projection.dispute_evidence_%1$s$v$, p_side);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.dispute_messages AS
            SELECT dispute_id, seq, message_id, author, author_role, body, attachments,
                   posted_at, position
            FROM projection.dispute_messages_%1$s$v$, p_side);
        EXECUTE format($v$
            CREATE OR REPLACE VIEW finance.dispute_timeline AS
            SELECT dispute_id, version, entry, position, event_type, occurred_at, actor_name,
                   actor_role, status, priority, admin, note
            FROM projection.dispute_timeline_%1$s$v$, p_side);
    ELSE
        RAISE EXCEPTION 'unknown projector %', p_projector;
    END IF;
END
$fn$;

SELECT projection.point_views('payments', active_side) FROM projection.projector_state
WHERE projector = 'payments';

RESET ROLE;
