#!/usr/bin/env bash
# The HTTP command path's benchmark (not a test).
#
#   bash scripts/bench/http.sh
#
# Builds release, creates a fresh database on the server of
# ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}, migrates it, writes a tokens
# file (a coordinator token minted by `escrow-ledger token`), starts
# `escrow-ledger serve --no-projectors` on a free port, and runs `loadgen`: the full story
# (create, deposit, release with a fee) over HTTP from CLIENTS concurrent clients for
# DURATION seconds, then on the same database and from as many connections (a) the raw
# single-row INSERT rate and (b) the same three commands' bare SQL through pgbench
# (scripts/bench/story.sql). Prints commands/s, p50/p99 latency and both ratios, then drops
# the database and stops the server.
#
# Environment: CLIENTS (32), DURATION (10), WARMUP (2), PROJECTORS=1 to run the server with
# its projectors, NO_GROUP_COMMIT=1 to run it with `--no-group-commit`, KEEP_DB=1 to keep the database, NO_BUILD=1 to use the binaries as built,
# PROFILE (release; `debug` for a quick trial), STORY_SQL (scripts/bench/story.sql).
# Needs psql and pgbench on PATH.
set -euo pipefail

cd "$(dirname "$0")/../.."
log() { printf 'http.sh: %s\n' "$*" >&2; }

admin_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
clients=${CLIENTS:-32}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
for tool in psql pgbench; do
    command -v "$tool" >/dev/null || { log "$tool is needed on PATH"; exit 1; }
done

profile=${PROFILE:-release}
story_sql=${STORY_SQL:-scripts/bench/story.sql}
if [ -z "${NO_BUILD:-}" ]; then
    log "building $profile (escrow-ledger, loadgen)"
    if [ "$profile" = debug ]; then
        cargo build --bin escrow-ledger --bin loadgen
    else
        cargo build --profile "$profile" --bin escrow-ledger --bin loadgen
    fi
fi
bin=target/$profile/escrow-ledger
loadgen=target/$profile/loadgen

# The fresh database's URL: the admin URL with its database name replaced.
db="el_bench_$(date +%s)_$$"
base=${admin_url%%\?*}
query=""
case "$admin_url" in *\?*) query="?${admin_url#*\?}" ;; esac
db_url="${base%/*}/$db$query"

tmp=$(mktemp -d /tmp/el-bench.XXXXXX)
server_pid=""
teardown() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -z "${KEEP_DB:-}" ]; then
        psql "$admin_url" -qXc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    else
        log "kept database $db_url"
    fi
    rm -rf "$tmp"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "creating database $db"
psql "$admin_url" -qXc "CREATE DATABASE $db" >/dev/null
DATABASE_URL=$db_url "$bin" migrate >/dev/null

minted=$("$bin" token --role coordinator --name loadgen)
token=$(printf '%s\n' "$minted" | sed -n 's/^token: //p')
printf '%s\n' "$minted" | sed -n 's/^tokens file line: //p' >"$tmp/tokens"
[ -n "$token" ] && [ -s "$tmp/tokens" ] || { log "could not mint a token: $minted"; exit 1; }

serve_args=(serve --bind 127.0.0.1:0)
[ -n "${PROJECTORS:-}" ] || serve_args+=(--no-projectors)
[ -z "${NO_GROUP_COMMIT:-}" ] || serve_args+=(--no-group-commit)
DATABASE_URL=$db_url API_TOKENS_FILE=$tmp/tokens RUST_LOG=${RUST_LOG:-warn} \
    "$bin" "${serve_args[@]}" >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
addr=""
for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$tmp/server.out" | head -n1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.err" >&2; log "the server exited"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/server.err" >&2; log "the server did not say where it listens"; exit 1; }
log "server: ${serve_args[*]} at $addr"

status=0
"$loadgen" --base "$addr" --token "$token" --database-url "$db_url" \
    --clients "$clients" --seconds "$duration" --warmup "$warmup" \
    --pgbench-script "$story_sql" || status=$?
if [ -s "$tmp/server.err" ]; then
    log "server log (last lines):"
    tail -n 20 "$tmp/server.err" >&2
fi
exit "$status"
