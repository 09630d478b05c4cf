#!/usr/bin/env bash
# How far the command path's bare SQL gets against the raw INSERT rate, with no HTTP at all
# (a benchmark, not a test): the bound on ratio (a) of scripts/bench/http.sh.
#
#   cargo build --release --bin escrow-ledger && bash scripts/bench/sql_bound.sh
#
# For each schema variant, on a fresh migrated database: pgbench runs the story of
# scripts/bench/story.sql grouped by GROUP (scripts/bench/grouped_story.py: GROUP stories
# side by side, each command's appends in one transaction, as group commit does) from
# 32 / GROUP clients, then the raw single-row INSERT of an event-sized row into a table
# without indexes from 32 clients, the baseline of (a). Prints commands/s, the raw rate and
# their ratio. Variants:
#   full   the schema as migrated
#   fk     without the foreign keys of postings, idempotency keys and deposit references
#   chk    without the CHECKs on posting account names and amounts
#   idx    without events' event_id key, the feed index and the postings' account index
#   strip  without all of the above (what the store could not give up is left: the
#          position and (stream, version) keys, postings rows, the deferred balance check)
# The stripped variants exist only to measure: the schema keeps all of it.
#
# Environment: DATABASE_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
# GROUP (8), DURATION (10), VARIANTS ("full strip"), BIN (target/release/escrow-ledger).
set -euo pipefail
cd "$(dirname "$0")/../.."

admin_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
group=${GROUP:-8}
duration=${DURATION:-10}
bin=${BIN:-target/release/escrow-ledger}
clients=$((32 / group))
[ "$clients" -ge 1 ] || { echo "sql_bound.sh: GROUP must be at most 32" >&2; exit 1; }
base=${admin_url%%\?*}
tmp=$(mktemp -d /tmp/el-bound.XXXXXX)
db=""
teardown() {
    [ -z "$db" ] || psql "$admin_url" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap teardown EXIT

python3 scripts/bench/grouped_story.py "$group" >"$tmp/grouped.sql"
cat >"$tmp/raw.sql" <<'SQL'
INSERT INTO bench_raw VALUES (gen_random_uuid(), 1, 'FundsDeposited',
  '{"amount": "125.50", "reference": "ch_5f2a9c0d1e", "allow_excess": false, "excess": "0"}'::jsonb,
  '{"actor": {"name": "loadgen", "role": "coordinator"}, "source": "api", "correlation_id": "5f2a9c0d-1e00-4000-8000-000000000000", "causation_id": "5f2a9c0d-1e00-4000-8000-000000000001"}'::jsonb,
  now(), sha256('x'::bytea));
SQL

variant_sql() {
    local fk="ALTER TABLE postings DROP CONSTRAINT postings_position_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_position_fkey;
ALTER TABLE deposit_references DROP CONSTRAINT deposit_references_position_fkey;"
    local chk="ALTER TABLE postings DROP CONSTRAINT postings_account_name;
ALTER TABLE postings DROP CONSTRAINT postings_amount_fits;"
    local idx="ALTER TABLE events DROP CONSTRAINT events_event_id_key;
DROP INDEX postings_account_idx; DROP INDEX events_feed_idx;"
    case $1 in
        full) echo "SELECT 1;" ;;
        fk) echo "$fk" ;;
        chk) echo "$chk" ;;
        idx) echo "$idx" ;;
        strip) printf '%s\n%s\n%s\n' "$fk" "$chk" "$idx" ;;
        *) echo "sql_bound.sh: unknown variant $1" >&2; return 1 ;;
    esac
}

tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }

printf '%-6s %12s %12s %7s\n' variant "commands/s" "raw rows/s" ratio
for variant in ${VARIANTS:-full strip}; do
    db="el_bench_bound_$(date +%s)_$$"
    url="${base%/*}/$db"
    psql "$admin_url" -qXc "CREATE DATABASE $db" >/dev/null
    DATABASE_URL=$url "$bin" migrate >/dev/null
    variant_sql "$variant" | psql "$url" -qX -v ON_ERROR_STOP=1 >/dev/null
    psql "$url" -qXc "CREATE TABLE bench_raw (stream_id uuid, version int8, event_type text,
        payload jsonb, metadata jsonb, occurred_at timestamptz, hash bytea)" >/dev/null
    # A warm-up, then statistics (autovacuum may be off): generic plans need them.
    pgbench -n -M prepared -c "$clients" -j 2 -T 3 -f "$tmp/grouped.sql" "$url" >/dev/null 2>&1
    psql "$url" -qXc ANALYZE
    stories=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$duration" -f "$tmp/grouped.sql" "$url" 2>&1 | tps)
    raw=$(pgbench -n -M prepared -c 32 -j 2 -T "$duration" -f "$tmp/raw.sql" "$url" 2>&1 | tps)
    # A script run is GROUP stories of three commands each.
    awk -v v="$variant" -v s="$stories" -v g="$group" -v r="$raw" \
        'BEGIN { c = s * g * 3; printf "%-6s %12.0f %12.0f %7.3f\n", v, c, r, c / r }'
    psql "$admin_url" -qXc "DROP DATABASE $db WITH (FORCE)" >/dev/null
    db=""
done
