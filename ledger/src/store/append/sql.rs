//! The three shapes of the append statement. Each reads the heads of its streams, checks
//! the expected versions, finishes each event's hash from its stream's previous one
//! (`sha256(prev || int8send(version) || content digest)`, see [`crate::store::hash`]) and
//! inserts, in one statement. The general shape costs about 40% more server time than the
//! shape for one event, so the common cases get statements of their own.

/// One event on one stream. `$3`: -1 any, 0 no stream, n exactly n. No row back means
/// the version check failed and nothing was inserted.
pub(super) const SINGLE: &str = r"
INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                    payload, metadata, occurred_at, recorded_at, prev_hash, hash)
SELECT $1, $2, h.version + 1, $4, $5, $6, $7, $8, $9, $10, h.hash,
       sha256(h.hash || int8send(h.version + 1) || $11::bytea)
FROM (
    SELECT coalesce(e.version, 0) AS version, coalesce(e.hash, $12::bytea) AS hash
    FROM (SELECT) AS one
    LEFT JOIN LATERAL (
        SELECT version, hash FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1
    ) e ON true
) h
WHERE $3::int8 < 0 OR $3::int8 = h.version
RETURNING position, version
";

/// [`SINGLE`] with the event's postings (`$13..$16`: leg, account, asset, amount).
pub(super) const SINGLE_WITH_POSTINGS: &str = r"
WITH ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT $1, $2, h.version + 1, $4, $5, $6, $7, $8, $9, $10, h.hash,
           sha256(h.hash || int8send(h.version + 1) || $11::bytea)
    FROM (
        SELECT coalesce(e.version, 0) AS version, coalesce(e.hash, $12::bytea) AS hash
        FROM (SELECT) AS one
        LEFT JOIN LATERAL (
            SELECT version, hash FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1
        ) e ON true
    ) h
    WHERE $3::int8 < 0 OR $3::int8 = h.version
    RETURNING position, version
), ins_postings AS (
    INSERT INTO postings (position, leg, account, asset, amount)
    SELECT ev.position, p.leg, p.account, p.asset, p.amount
    FROM ev, UNNEST($13::int2[], $14::text[], $15::text[], $16::numeric[])
         AS p(leg, account, asset, amount)
)
SELECT position, version FROM ev
";

/// One event on each of several streams (a batch, a dispute opening that freezes its
/// payment). One row back per inserted event, or, when a version check failed, one row
/// per refused stream with a null position and its actual version (nothing inserted).
pub(super) const ONE_PER_STREAM: &str = r"
WITH heads AS MATERIALIZED (
    SELECT t.*, coalesce(h.version, 0) AS head, coalesce(h.hash, $13::bytea) AS head_hash
    FROM UNNEST($1::int4[], $2::uuid[], $3::text[], $4::int8[], $5::uuid[], $6::text[],
                $7::int4[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], $11::bytea[])
         AS t(idx, stream_id, stream_type, expected, event_id, event_type, schema_version,
              payload, metadata, occurred_at, content)
    LEFT JOIN LATERAL (
        SELECT e.version, e.hash FROM events e
        WHERE e.stream_id = t.stream_id ORDER BY e.version DESC LIMIT 1
    ) h ON true
),
refused AS MATERIALIZED (
    SELECT stream_id, head FROM heads WHERE expected >= 0 AND expected <> head
),
ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT stream_id, stream_type, head + 1, event_id, event_type, schema_version,
           payload, metadata, occurred_at, $12, head_hash,
           sha256(head_hash || int8send(head + 1) || content)
    FROM heads
    WHERE NOT EXISTS (SELECT 1 FROM refused)
    ORDER BY idx
    RETURNING position, event_id, stream_id, version
),
ins_postings AS (
    INSERT INTO postings (position, leg, account, asset, amount)
    SELECT ev.position, p.leg, p.account, p.asset, p.amount
    FROM UNNEST($14::int4[], $15::int2[], $16::text[], $17::text[], $18::numeric[])
         AS p(idx, leg, account, asset, amount)
    JOIN ev ON ev.event_id = ($5::uuid[])[p.idx]
)
SELECT position, event_id, stream_id, version FROM ev
UNION ALL
SELECT NULL::int8, NULL::uuid, stream_id, head FROM refused
";

/// Any number of events on any number of streams: a recursive step chains the events
/// of one stream to each other. Rows back as in [`ONE_PER_STREAM`].
pub(super) const CHAINED: &str = r"
WITH RECURSIVE
streams AS MATERIALIZED (
    SELECT s.stream_id, s.stream_type, s.expected,
           coalesce(h.version, 0) AS head, coalesce(h.hash, $20::bytea) AS head_hash
    FROM UNNEST($1::uuid[], $2::text[], $3::int8[]) AS s(stream_id, stream_type, expected)
    LEFT JOIN LATERAL (
        SELECT e.version, e.hash FROM events e
        WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
    ) h ON true
),
refused AS MATERIALIZED (
    SELECT stream_id, head FROM streams WHERE expected >= 0 AND expected <> head
),
input AS MATERIALIZED (
    SELECT * FROM UNNEST($4::int4[], $5::uuid[], $6::int8[], $7::uuid[], $8::text[],
                         $9::int4[], $10::jsonb[], $11::jsonb[], $12::timestamptz[],
                         $13::bytea[])
        AS t(idx, stream_id, ord, event_id, event_type, schema_version, payload, metadata,
             occurred_at, content)
),
chain (idx, stream_id, ord, version, prev_hash, hash) AS (
    SELECT i.idx, i.stream_id, i.ord, s.head + 1, s.head_hash,
           sha256(s.head_hash || int8send(s.head + 1) || i.content)
    FROM input i JOIN streams s ON s.stream_id = i.stream_id
    WHERE i.ord = 1 AND NOT EXISTS (SELECT 1 FROM refused)
  UNION ALL
    SELECT i.idx, i.stream_id, i.ord, c.version + 1, c.hash,
           sha256(c.hash || int8send(c.version + 1) || i.content)
    FROM chain c JOIN input i ON i.stream_id = c.stream_id AND i.ord = c.ord + 1
),
ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT c.stream_id, s.stream_type, c.version, i.event_id, i.event_type, i.schema_version,
           i.payload, i.metadata, i.occurred_at, $14, c.prev_hash, c.hash
    FROM chain c
    JOIN input i ON i.idx = c.idx
    JOIN streams s ON s.stream_id = c.stream_id
    ORDER BY c.idx
    RETURNING position, event_id, stream_id, version
),
ins_postings AS (
    INSERT INTO postings (position, leg, account, asset, amount)
    SELECT ev.position, p.leg, p.account, p.asset, p.amount
    FROM UNNEST($15::int4[], $16::int2[], $17::text[], $18::text[], $19::numeric[])
         AS p(idx, leg, account, asset, amount)
    JOIN input i ON i.idx = p.idx
    JOIN ev ON ev.event_id = i.event_id
)
SELECT position, event_id, stream_id, version FROM ev
UNION ALL
SELECT NULL::int8, NULL::uuid, stream_id, head FROM refused
";
