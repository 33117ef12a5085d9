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
#   install     installs Debian's postgresql and openssl (with apt-get)
#               unless both are installed already.
#   start DIR   makes a cluster in DIR/data (superuser `tessera`, trusted on
#               loopback only), starts it on 127.0.0.1, waits for it, and
#               prints on stdout the `export` line the tests read:
#               TESSERA_TEST_POSTGRES=postgres://tessera@127.0.0.1:PORT
#               (each test makes its own database there). The server also
#               speaks TLS, with a certificate for 127.0.0.1 signed by a CA
#               made for the run: TESSERA_TEST_POSTGRES_CA names the CA's
#               certificate (for `sslmode=verify-full&sslrootcert=...`).
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
    if bindir >/dev/null && command -v openssl >/dev/null; then
        log "PostgreSQL is installed in $(bindir)"
        return
    fi
    log "installing postgresql and openssl from Debian's packages"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql openssl >&2
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
    make_certificates "$dir"
    as_server_user "$bin/initdb" -D "$dir/data" -U tessera --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='' \
            -c max_connections=400 -c shared_buffers=256MB \
            -c ssl=on -c ssl_cert_file='$dir/tls/server.crt' -c ssl_key_file='$dir/tls/server.key'" \
        start >&2 \
        || { cat "$dir/data/server.log" >&2; die "PostgreSQL did not start on port $port"; }
    log "PostgreSQL is ready on 127.0.0.1:$port"
    echo "export TESSERA_TEST_POSTGRES=postgres://tessera@127.0.0.1:$port TESSERA_TEST_POSTGRES_CA=$dir/tls/ca.crt"
}

# A CA and a server certificate for 127.0.0.1 it signs, in DIR/tls.
make_certificates() {
    local tls=$1/tls
    rm -rf "$tls"
    mkdir -p "$tls"
    command -v openssl >/dev/null || die "openssl is needed to make the test certificates"
    openssl req -new -x509 -days 7 -nodes -subj /CN=tessera-test-ca \
        -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
    openssl req -new -nodes -subj /CN=127.0.0.1 \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=CA:FALSE \
        keyUsage=digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 7 -extfile "$tls/ext" -out "$tls/server.crt" 2>/dev/null
    chmod 600 "$tls/server.key"
    chmod a+rx "$tls"
    chmod a+r "$tls/ca.crt" "$tls/server.crt"
    if [ "$(id -u)" = 0 ]; then chown postgres "$tls/server.key"; fi
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
