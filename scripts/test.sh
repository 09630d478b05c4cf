#!/usr/bin/env bash
# The project's single test command.
#
#   bash scripts/test.sh [extra args for the test runner]
#
# 1. PostgreSQL: uses the one answering at ${TEST_PG_HOST:-127.0.0.1}:${TEST_PG_PORT:-5432}
#    (user postgres, trust); if none answers, runs a throwaway cluster (installing the
#    server programs with apt-get if they are missing) and tears it down on exit.
#    Exports TEST_DATABASE_URL (tests create one database per test from it).
#    An already set TEST_DATABASE_URL is used as is.
# 2. MongoDB wire protocol for the importer tests: secantusdb (in-memory; version pinned,
#    SECANTUSDB_VERSION overrides it) from a venv at .venv, on a free port; exports
#    TEST_MONGO_URI (and TEST_SECANTUSD, the server's program, for a test that stops a
#    server of its own). An already set TEST_MONGO_URI is used as is.
# 3. Runs `cargo nextest run --workspace --no-fail-fast` (or `cargo test --workspace`),
#    passing "$@", and exits with its status after the teardown.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

log() { printf 'test.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as the unprivileged postgres user when we are root (initdb and postgres
# refuse root), from / (root's working directory may be out of that user's reach).
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Does something accept TCP connections at $1:$2?
port_answers() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 3
    else
        port_answers "$1" "$2"
    fi
}

# A TCP port on 127.0.0.1 where nothing listens.
free_port() {
    local port tries
    for tries in $(seq 1 200); do
        port=$((20000 + RANDOM % 20000))
        if ! port_answers 127.0.0.1 "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

# The folder holding initdb and pg_ctl: on PATH, else the highest /usr/lib/postgresql/*/bin.
pg_bindir() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

pg_dir=""
pg_bin=""
mongo_pid=""
run_dir=$(mktemp -d /var/tmp/escrow-ledger-test-run.XXXXXX)

teardown() {
    if [ -n "$mongo_pid" ]; then
        kill "$mongo_pid" 2>/dev/null || true
        wait "$mongo_pid" 2>/dev/null || true
    fi
    if [ -n "$pg_dir" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$pg_dir"
    fi
    rm -rf "$run_dir"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. PostgreSQL ---------------------------------------------------------------------
pg_host=${TEST_PG_HOST:-127.0.0.1}
pg_port=${TEST_PG_PORT:-5432}
if [ -n "${TEST_DATABASE_URL:-}" ]; then
    log "PostgreSQL: using TEST_DATABASE_URL as given"
elif pg_answers "$pg_host" "$pg_port"; then
    log "PostgreSQL: using the server at $pg_host:$pg_port"
    export TEST_DATABASE_URL="postgres://postgres@$pg_host:$pg_port/postgres"
else
    log "PostgreSQL: nothing answers at $pg_host:$pg_port; starting a throwaway cluster"
    if ! pg_bin=$(pg_bindir); then
        is_root || die "the PostgreSQL server programs are missing: install them (apt-get install postgresql) or set TEST_DATABASE_URL"
        log "installing the PostgreSQL server programs (apt-get install postgresql)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        pg_bin=$(pg_bindir) || die "apt-get installed postgresql but initdb/pg_ctl are still not found"
    fi
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root, the throwaway cluster must run as the user postgres, which does not exist"
    fi
    pg_dir=$(mktemp -d /var/tmp/escrow-ledger-test-pg.XXXXXX)
    if is_root; then chown postgres: "$pg_dir"; fi
    pg_port=$(free_port)
    as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 \
        || { cat "$pg_dir/initdb.log" >&2; die "initdb failed"; }
    # Throwaway data: durability off for speed.
    if ! as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c max_connections=300 -c unix_socket_directories=$pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null; then
        cat "$pg_dir/server.log" >&2 || true
        die "the throwaway PostgreSQL did not start"
    fi
    log "PostgreSQL: throwaway cluster at 127.0.0.1:$pg_port ($pg_dir)"
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
fi

# --- 2. MongoDB wire server for the importer tests --------------------------------------
if [ -n "${TEST_MONGO_URI:-}" ]; then
    log "MongoDB: using TEST_MONGO_URI as given"
else
    venv="$repo/.venv"
    if [ ! -x "$venv/bin/secantusd-py" ]; then
        command -v python3 >/dev/null 2>&1 || die "python3 is needed for the MongoDB test server (secantusdb)"
        if [ ! -x "$venv/bin/python" ]; then
            log "creating $venv"
            python3 -m venv "$venv" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
        fi
        log "installing secantusdb into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "secantusdb==${SECANTUSDB_VERSION:-0.7.0b3}"
    fi
    mongo_port=$(free_port)
    "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$mongo_port" --storage-path :memory: \
        >"$run_dir/secantusd.log" 2>&1 &
    mongo_pid=$!
    deadline=$((SECONDS + 30))
    until port_answers 127.0.0.1 "$mongo_port"; do
        if ! kill -0 "$mongo_pid" 2>/dev/null; then
            cat "$run_dir/secantusd.log" >&2
            die "secantusd-py exited before it answered"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            cat "$run_dir/secantusd.log" >&2
            die "secantusd-py did not answer on 127.0.0.1:$mongo_port within 30 s"
        fi
        sleep 0.1
    done
    log "MongoDB: secantusd-py at 127.0.0.1:$mongo_port"
    export TEST_MONGO_URI="mongodb://127.0.0.1:$mongo_port"
    # A test starts a server of its own to stop it under a running import.
    export TEST_SECANTUSD="$venv/bin/secantusd-py"
fi

# --- 3. The tests -----------------------------------------------------------------------
# The end-to-end tests run the real binary: build it first.
cargo build --bin escrow-ledger
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
    cargo test --workspace --no-fail-fast "$@" || status=$?
fi
exit "$status"
