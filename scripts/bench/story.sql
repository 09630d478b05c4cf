-- The bare SQL of the HTTP story `loadgen` drives (create a payment, deposit its amount,
-- release it with a fee) for pgbench (run with -M prepared; `loadgen` does it):
--
--   pgbench -n -M prepared -c 32 -j 2 -T 10 -f scripts/bench/story.sql "$DATABASE_URL"
--
-- One script run is one story: the statements the server's command path issues for the
-- three commands when each runs alone (`serve --no-group-commit`, or a command taken out
-- of a group), on the same tables, in the same transactions. With group commit (the
-- default) the server gathers many commands' reads and appends into shared statements
-- and transactions: scripts/bench/grouped_story.py writes the grouped counterpart.
--   create   read the stream; the append statement on its own (no Idempotency-Key: the
--            one statement is the whole transaction);
--   deposit  read the stream; in one transaction, the append statement with its 2
--            postings, then the provider reference and the idempotency row in one
--            statement;
--   release  the same with 3 postings (seller, fee) and no reference.
-- What the server adds is everything else: HTTP, JSON, authentication, deciding from the
-- stream's events, hashing the content. pgbench reports script runs per second:
-- commands/s = 3 x tps. (pgbench takes `:name` inside a string literal for a variable,
-- hence 'external:' || '...'.) The events written here carry placeholder content digests:
-- `verify` faults them, so run this only on a scratch database (http.sh makes one and
-- drops it).

SELECT gen_random_uuid()::text AS sid, gen_random_uuid()::text AS k1,
       gen_random_uuid()::text AS k2, gen_random_uuid()::text AS seller \gset

-- 1. POST /v1/payments
SELECT e.position, e.tx_id::text::int8 AS tx_id, e.stream_id, e.stream_type, e.version, e.event_id,
       e.event_type, e.schema_version, e.payload, e.metadata, e.occurred_at, e.recorded_at,
       e.prev_hash, e.hash,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(p.account, p.asset, p.amount::text) ORDER BY p.leg), '[]')
          FROM postings p WHERE p.position = e.position) AS postings
  FROM events e WHERE e.stream_id = :sid::uuid ORDER BY e.version;
WITH ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT :sid::uuid, 'payment', h.version + 1, gen_random_uuid(), 'PaymentCreated', 1,
           jsonb_build_object('asset', 'USD', 'buyer', jsonb_build_object('id', gen_random_uuid(), 'kind', 'entity'),
                              'amount', '125.5', 'seller', jsonb_build_object('id', :seller::text, 'kind', 'entity'),
                              'metadata', null, 'provider', 'stripe', 'payment_id', :sid::text, 'seller_offer', null,
                              'purchase_request', jsonb_build_object('ref', 'loadgen', 'kind', 'external')),
           jsonb_build_object('actor', jsonb_build_object('name', 'loadgen', 'role', 'coordinator'), 'source', 'api',
                              'causation_id', gen_random_uuid(), 'correlation_id', gen_random_uuid()),
           now(), now(), h.hash,
           sha256(h.hash || int8send(h.version + 1) || sha256(convert_to(:sid::text || '1', 'UTF8')))
    FROM (
        SELECT coalesce(e.version, 0) AS version, coalesce(e.hash, decode(repeat('00', 32), 'hex')) AS hash
        FROM (SELECT) AS one
        LEFT JOIN LATERAL (
            SELECT version, hash FROM events WHERE stream_id = :sid::uuid ORDER BY version DESC LIMIT 1
        ) e ON true
    ) h
    WHERE h.version = 0
    RETURNING position, version
)
SELECT position AS pos FROM ev \gset

-- 2. POST /v1/payments/{id}/deposits
SELECT e.position, e.tx_id::text::int8 AS tx_id, e.stream_id, e.stream_type, e.version, e.event_id,
       e.event_type, e.schema_version, e.payload, e.metadata, e.occurred_at, e.recorded_at,
       e.prev_hash, e.hash,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(p.account, p.asset, p.amount::text) ORDER BY p.leg), '[]')
          FROM postings p WHERE p.position = e.position) AS postings
  FROM events e WHERE e.stream_id = :sid::uuid ORDER BY e.version;
BEGIN;
WITH ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT :sid::uuid, 'payment', h.version + 1, gen_random_uuid(), 'FundsDeposited', 1,
           jsonb_build_object('amount', '125.5', 'excess', '0.0', 'reference', 'ch_' || :k1::text,
                              'allow_excess', false),
           jsonb_build_object('actor', jsonb_build_object('name', 'loadgen', 'role', 'coordinator'), 'source', 'api',
                              'causation_id', gen_random_uuid(), 'correlation_id', gen_random_uuid()),
           now(), now(), h.hash,
           sha256(h.hash || int8send(h.version + 1) || sha256(convert_to(:sid::text || '2', 'UTF8')))
    FROM (
        SELECT coalesce(e.version, 0) AS version, coalesce(e.hash, decode(repeat('00', 32), 'hex')) AS hash
        FROM (SELECT) AS one
        LEFT JOIN LATERAL (
            SELECT version, hash FROM events WHERE stream_id = :sid::uuid ORDER BY version DESC LIMIT 1
        ) e ON true
    ) h
    WHERE h.version = 1
    RETURNING position, version
), ins_postings AS (
    INSERT INTO postings (position, leg, account, asset, amount)
    SELECT ev.position, v.leg, v.account, 'USD', v.amount
      FROM ev, (VALUES (0::int2, 'external:' || 'stripe', -125.50::numeric),
                       (1::int2, 'escrow:' || :sid::text, 125.50::numeric)) AS v(leg, account, amount)
)
SELECT position AS pos FROM ev \gset
WITH reference AS (
    INSERT INTO deposit_references (provider, reference, payment_id, position)
    SELECT 'stripe', 'ch_' || :k1::text, :sid::uuid, :pos::int8
), key AS (
    INSERT INTO idempotency_keys (client, key, request_hash, status, response, position)
    SELECT 'loadgen', :k1::text, sha256(convert_to(:k1::text, 'UTF8')), 200,
           convert_to('{"id":"' || :sid::text || '","stream_version":2,"position":' || :pos::text || '}', 'UTF8'),
           :pos::int8
)
SELECT 1;
COMMIT;

-- 3. POST /v1/payments/{id}/releases with a fee
SELECT e.position, e.tx_id::text::int8 AS tx_id, e.stream_id, e.stream_type, e.version, e.event_id,
       e.event_type, e.schema_version, e.payload, e.metadata, e.occurred_at, e.recorded_at,
       e.prev_hash, e.hash,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(p.account, p.asset, p.amount::text) ORDER BY p.leg), '[]')
          FROM postings p WHERE p.position = e.position) AS postings
  FROM events e WHERE e.stream_id = :sid::uuid ORDER BY e.version;
BEGIN;
WITH ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT :sid::uuid, 'payment', h.version + 1, gen_random_uuid(), 'FundsReleased', 1,
           jsonb_build_object('fees', jsonb_build_array(jsonb_build_object('kind', 'fee', 'amount', '2.5')),
                              'amount', '125.5', 'seller_amount', '123.0'),
           jsonb_build_object('actor', jsonb_build_object('name', 'loadgen', 'role', 'coordinator'), 'source', 'api',
                              'causation_id', gen_random_uuid(), 'correlation_id', gen_random_uuid()),
           now(), now(), h.hash,
           sha256(h.hash || int8send(h.version + 1) || sha256(convert_to(:sid::text || '3', 'UTF8')))
    FROM (
        SELECT coalesce(e.version, 0) AS version, coalesce(e.hash, decode(repeat('00', 32), 'hex')) AS hash
        FROM (SELECT) AS one
        LEFT JOIN LATERAL (
            SELECT version, hash FROM events WHERE stream_id = :sid::uuid ORDER BY version DESC LIMIT 1
        ) e ON true
    ) h
    WHERE h.version = 2
    RETURNING position, version
), ins_postings AS (
    INSERT INTO postings (position, leg, account, asset, amount)
    SELECT ev.position, v.leg, v.account, 'USD', v.amount
      FROM ev, (VALUES (0::int2, 'escrow:' || :sid::text, -125.50::numeric),
                       (1::int2, 'seller:' || :seller::text, 123.00::numeric),
                       (2::int2, 'platform:' || 'fees', 2.50::numeric)) AS v(leg, account, amount)
)
SELECT position AS pos FROM ev \gset
WITH reference AS (
    INSERT INTO deposit_references (provider, reference, payment_id, position)
    SELECT 'stripe', NULL, :sid::uuid, :pos::int8 WHERE NULL::text IS NOT NULL
), key AS (
    INSERT INTO idempotency_keys (client, key, request_hash, status, response, position)
    SELECT 'loadgen', :k2::text, sha256(convert_to(:k2::text, 'UTF8')), 200,
           convert_to('{"id":"' || :sid::text || '","stream_version":3,"position":' || :pos::text || '}', 'UTF8'),
           :pos::int8
)
SELECT 1;
COMMIT;
