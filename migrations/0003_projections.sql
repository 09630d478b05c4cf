-- Projections: the read tables the projectors fill from the event store's feed, and the
-- views finance reads them through.
--
-- Every read table exists twice, side `a` and side `b`, in schema `projection`. One side is
-- live (projection.projector_state.active_side) and is what the views in schema `finance`
-- select from; a rebuild fills the other side from the start of the feed, checks it, and
-- repoints the views (projection.point_views) in one short transaction. A projection's
-- schema change ships as a migration that changes both sides and point_views, plus a
-- rebuild.
--
-- Roles: escrow_ledger_owner owns everything here; escrow_ledger_app (the service, which
-- runs the projectors) reads and writes the read tables and reads the views;
-- escrow_ledger_finance (cannot log in: grant it to finance's own login roles) reads the
-- views only.

DO $$ BEGIN
    CREATE ROLE escrow_ledger_finance NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

CREATE SCHEMA projection AUTHORIZATION escrow_ledger_owner;
CREATE SCHEMA finance AUTHORIZATION escrow_ledger_owner;

-- Everything below is created as the owner role (the migrator is a superuser or a member
-- of it, see 0001), so that a rebuild acting as the owner may replace the views.
SET LOCAL ROLE escrow_ledger_owner;

COMMENT ON SCHEMA projection IS 'Read tables, two sides each (_a, _b); read them through the finance views.';
COMMENT ON SCHEMA finance IS 'Stable views over the live side of every read table: docs/read-views.md.';

-- Wake the projectors when events are committed (notifications are delivered at commit).
-- A lost notification only delays them: they also poll.
CREATE FUNCTION projection.notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('escrow_ledger_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION projection.notify_events();

-- One row per projector: its checkpoint in feed order (tx_id, position), committed in the
-- same transaction as its writes, and which side of its tables is live.
CREATE TABLE projection.projector_state (
    projector            text PRIMARY KEY,
    active_side          text NOT NULL DEFAULT 'a' CHECK (active_side IN ('a', 'b')),
    checkpoint_tx        bigint NOT NULL DEFAULT 0,
    checkpoint_position  bigint NOT NULL DEFAULT 0,
    events_applied       bigint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    halted_reason        text,
    halted_at            timestamptz,
    rebuilt_at           timestamptz
);

COMMENT ON TABLE projection.projector_state IS 'Checkpoint (feed order) and live side of each projector; a halted projector says why.';

INSERT INTO projection.projector_state (projector) VALUES ('payments'), ('balances'), ('disputes');

DO $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['a', 'b'] LOOP
        -- payments: the fold of each payment stream through the payment aggregate.
        EXECUTE format($t$
            CREATE TABLE projection.payments_%1$s (
                payment_id        uuid PRIMARY KEY,
                version           bigint NOT NULL,
                status            text NOT NULL,
                asset             text NOT NULL,
                provider          text NOT NULL,
                buyer             text NOT NULL,
                seller            text NOT NULL,
                purchase_request  text NOT NULL,
                seller_offer      text,
                metadata          jsonb,
                amount            numeric NOT NULL,
                deposited         numeric NOT NULL,
                excess            numeric NOT NULL,
                excess_held       numeric NOT NULL,
                held              numeric NOT NULL,
                released          numeric NOT NULL,
                refunded          numeric NOT NULL,
                fees              numeric NOT NULL,
                aml_fees          numeric NOT NULL,
                seller_share      numeric NOT NULL,
                buyer_share       numeric NOT NULL,
                paid_out_seller   numeric NOT NULL,
                paid_out_buyer    numeric NOT NULL,
                open_dispute_id   uuid,
                created_at        timestamptz NOT NULL,
                funded_at         timestamptz,
                released_at       timestamptz,
                refunded_at       timestamptz,
                cancelled_at      timestamptz,
                disputed_at       timestamptz,
                paid_out_at       timestamptz,
                updated_at        timestamptz NOT NULL,
                last_position     bigint NOT NULL
            )$t$, s);
        EXECUTE format('CREATE INDEX payments_%1$s_created_idx ON projection.payments_%1$s (created_at, payment_id)', s);
        EXECUTE format('CREATE INDEX payments_%1$s_status_idx ON projection.payments_%1$s (status, created_at, payment_id)', s);
        EXECUTE format('CREATE INDEX payments_%1$s_provider_idx ON projection.payments_%1$s (provider, created_at, payment_id)', s);
        EXECUTE format('CREATE INDEX payments_%1$s_buyer_idx ON projection.payments_%1$s (buyer, created_at)', s);
        EXECUTE format('CREATE INDEX payments_%1$s_seller_idx ON projection.payments_%1$s (seller, created_at)', s);

        -- reconciliation buckets: payments counted and summed by provider, status, asset
        -- and the UTC day they were created; kept in the payments projector's transaction.
        EXECUTE format($t$
            CREATE TABLE projection.reconciliation_buckets_%1$s (
                provider    text NOT NULL,
                status      text NOT NULL,
                asset       text NOT NULL,
                day         date NOT NULL,
                payments    bigint NOT NULL,
                amount      numeric NOT NULL,
                deposited   numeric NOT NULL,
                excess      numeric NOT NULL,
                held        numeric NOT NULL,
                released    numeric NOT NULL,
                refunded    numeric NOT NULL,
                fees        numeric NOT NULL,
                aml_fees    numeric NOT NULL,
                paid_out    numeric NOT NULL,
                PRIMARY KEY (provider, status, asset, day)
            )$t$, s);
        EXECUTE format('CREATE INDEX reconciliation_buckets_%1$s_day_idx ON projection.reconciliation_buckets_%1$s (day)', s);

        -- balances: per account and asset, every change, and per-asset totals.
        EXECUTE format($t$
            CREATE TABLE projection.account_balances_%1$s (
                account           text COLLATE "C" NOT NULL,
                asset             text NOT NULL,
                balance           numeric NOT NULL,
                postings          bigint NOT NULL,
                last_position     bigint NOT NULL,
                last_occurred_at  timestamptz NOT NULL,
                PRIMARY KEY (account, asset)
            )$t$, s);
        EXECUTE format($t$
            CREATE TABLE projection.balance_history_%1$s (
                position       bigint NOT NULL,
                leg            smallint NOT NULL,
                account        text COLLATE "C" NOT NULL,
                asset          text NOT NULL,
                amount         numeric NOT NULL,
                balance_after  numeric NOT NULL,
                occurred_at    timestamptz NOT NULL,
                PRIMARY KEY (position, leg)
            )$t$, s);
        EXECUTE format('CREATE INDEX balance_history_%1$s_account_idx ON projection.balance_history_%1$s (account, asset, occurred_at)', s);
        EXECUTE format($t$
            CREATE TABLE projection.trial_balance_%1$s (
                asset     text PRIMARY KEY,
                total     numeric NOT NULL,
                inflows   numeric NOT NULL,
                outflows  numeric NOT NULL,
                postings  bigint NOT NULL
            )$t$, s);

        -- disputes: the fold of each dispute stream, with its evidence, messages and
        -- timeline; indexed for the admin queue, most urgent first.
        EXECUTE format($t$
            CREATE TABLE projection.disputes_%1$s (
                dispute_id                uuid PRIMARY KEY,
                payment_id                uuid NOT NULL,
                version                   bigint NOT NULL,
                status                    text NOT NULL,
                priority                  text NOT NULL,
                priority_rank             smallint NOT NULL,
                admin                     text,
                opened_by                 text NOT NULL,
                opened_by_role            text NOT NULL,
                reason                    text NOT NULL,
                description               text NOT NULL,
                initial_priority          text NOT NULL,
                outcome                   text,
                resolution_seller_amount  numeric,
                resolution_buyer_amount   numeric,
                resolution_fees           numeric,
                resolution_aml_fees       numeric,
                resolution_note           text,
                evidence_count            integer NOT NULL,
                message_count             integer NOT NULL,
                opened_at                 timestamptz NOT NULL,
                updated_at                timestamptz NOT NULL,
                ended_at                  timestamptz,
                last_position             bigint NOT NULL
            )$t$, s);
        EXECUTE format('CREATE INDEX disputes_%1$s_queue_idx ON projection.disputes_%1$s (status, priority_rank DESC, opened_at, dispute_id)', s);
        EXECUTE format('CREATE INDEX disputes_%1$s_admin_idx ON projection.disputes_%1$s (admin, status, priority_rank DESC, opened_at, dispute_id)', s);
        EXECUTE format('CREATE INDEX disputes_%1$s_rank_idx ON projection.disputes_%1$s (priority_rank DESC, opened_at, dispute_id)', s);
        EXECUTE format('CREATE INDEX disputes_%1$s_payment_idx ON projection.disputes_%1$s (payment_id)', s);
        EXECUTE format($t$
            CREATE TABLE projection.dispute_evidence_%1$s (
                dispute_id     uuid NOT NULL,
                seq            integer NOT NULL,
                evidence_id    uuid NOT NULL,
                submitted_by   text NOT NULL,
                evidence_type  text NOT NULL,
                url            text,
                description    text,
                submitted_at   timestamptz NOT NULL,
                position       bigint NOT NULL,
                PRIMARY KEY (dispute_id, seq)
            )$t$, s);
        EXECUTE format($t$
            CREATE TABLE projection.dispute_messages_%1$s (
                dispute_id   uuid NOT NULL,
                seq          integer NOT NULL,
                message_id   uuid NOT NULL,
                author       text NOT NULL,
                author_role  text NOT NULL,
                body         text NOT NULL,
                attachments  text[] NOT NULL,
                posted_at    timestamptz NOT NULL,
                position     bigint NOT NULL,
                PRIMARY KEY (dispute_id, seq)
            )$t$, s);
        EXECUTE format($t$
            CREATE TABLE projection.dispute_timeline_%1$s (
                dispute_id   uuid NOT NULL,
                version      bigint NOT NULL,
                entry        integer NOT NULL,
                position     bigint NOT NULL,
                event_type   text NOT NULL,
                occurred_at  timestamptz NOT NULL,
                actor_name   text,
                actor_role   text,
                status       text NOT NULL,
                priority     text NOT NULL,
                admin        text,
                note         text,
                PRIMARY KEY (dispute_id, version, entry)
            )$t$, s);

        EXECUTE format($t$
            GRANT SELECT, INSERT, UPDATE, DELETE ON
                projection.payments_%1$s, projection.reconciliation_buckets_%1$s,
                projection.account_balances_%1$s, projection.balance_history_%1$s,
                projection.trial_balance_%1$s, projection.disputes_%1$s,
                projection.dispute_evidence_%1$s, projection.dispute_messages_%1$s,
                projection.dispute_timeline_%1$s
            TO escrow_ledger_app$t$, s);
    END LOOP;
END $$;

-- Points a projector's finance views at one side of its tables. Called by the migration
-- (side a) and by every rebuild's swap, inside its short transaction.
CREATE FUNCTION projection.point_views(p_projector text, p_side text) RETURNS void
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
                   (created_at AT TIME ZONE 'UTC')::date AS created_day
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

SELECT projection.point_views('payments', 'a');
SELECT projection.point_views('balances', 'a');
SELECT projection.point_views('disputes', 'a');

-- Finance's per-account trial balance: every account's balance per asset with its
-- asset's total beside it (the total must be zero).
CREATE VIEW finance.trial_balance_accounts AS
SELECT b.asset, b.account, b.account_kind, b.balance, t.total AS asset_total
FROM finance.account_balances b JOIN finance.trial_balance t USING (asset);

REVOKE ALL ON ALL TABLES IN SCHEMA projection FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA finance FROM PUBLIC;
GRANT USAGE ON SCHEMA projection TO escrow_ledger_app;
GRANT SELECT, UPDATE ON projection.projector_state TO escrow_ledger_app;
GRANT USAGE ON SCHEMA finance TO escrow_ledger_app, escrow_ledger_finance;
GRANT SELECT ON ALL TABLES IN SCHEMA finance TO escrow_ledger_app, escrow_ledger_finance;

RESET ROLE;
