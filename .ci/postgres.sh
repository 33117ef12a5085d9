#!/usr/bin/env bash
# PostgreSQL on loopback for the tests, from Debian's packages.
#
# Used by `.ci/run`; locally:
#
#     bash .ci/postgres.sh install
#     env=$(bash .ci/postgres.sh start /tmp/pg) && eval "$env"
#     cargo test --release --workspace              # store tests on both
#     TESSERA_TEST_DATABASE=$TESSERA_TEST_POSTGRES \
#         cargo test --release --workspace --test e2e   # e2e suite on it
#     bash .ci/postgres.sh stop /tmp/pg
#
# Subcommands:
#   install     installs Debian's postgresql (with apt-get) unless a server
#               is installed already.
#   start DIR   makes a cluster in DIR/data (superuser `tessera`, trusted on
#               loopback only), starts it on 127.0.0.1, waits for it, and
#               prints on stdout the `export` line the tests read:
#               TESSERA_TEST_POSTGRES=postgres://tessera@127.0.0.1:PORT
#               (each test makes its own database there).
#   stop DIR    stops it. Safe to run twice.
#
# Port: $TESSERA_POSTGRES_PORT (default 55432).
set -euo pipefail

port=${TESSERA_POSTGRES_PORT:-55432}

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
}

# The newest installed server's bin folder.
bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$dir" ] && [ -x "$dir/postgres" ] && echo "$dir"
}

# Runs a server program as the `postgres` user when this script runs as
# root (PostgreSQL refuses to run as root).
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_install() {
    if bindir >/dev/null; then
        log "PostgreSQL is installed in $(bindir)"
        return
    fi
    log "installing postgresql from Debian's packages"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
    bindir >/dev/null || die "postgresql installed, but no server found in /usr/lib/postgresql"
}

cmd_start() {
    local dir=$1 bin
    bin=$(bindir) || die "PostgreSQL is not installed: run $0 install"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cmd_stop "$dir"
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    # The server user must reach its folder.
    chmod a+rx "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/data"; fi
    as_server_user "$bin/initdb" -D "$dir/data" -U tessera --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' \
            -c max_connections=400 -c shared_buffers=256MB" start >&2 \
        || { cat "$dir/data/server.log" >&2; die "PostgreSQL did not start on port $port"; }
    log "PostgreSQL is ready on 127.0.0.1:$port"
    echo "export TESSERA_TEST_POSTGRES=postgres://tessera@127.0.0.1:$port"
}

cmd_stop() {
    local dir=$1 bin
    [ -f "$dir/data/postmaster.pid" ] || return 0
    bin=$(bindir) || return 0
    as_server_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
}

case "${1:-}" in
    install) cmd_install ;;
    start) [ $# = 2 ] || usage; cmd_start "$2" ;;
    stop) [ $# = 2 ] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
