#!/usr/bin/env bash
# Blob services on loopback for the tests: Azurite (Microsoft's Azure Blob
# Storage emulator, from npm) and moto's S3 server (an S3 emulator, from
# PyPI). Neither is the real cloud service; both speak its protocol.
#
# Used by `.ci/run`; locally:
#
#     bash .ci/blobs.sh install
#     env=$(bash .ci/blobs.sh start /tmp/blobs) && eval "$env"
#     cargo test --release --workspace              # contract tests on both
#     TESSERA_TEST_STORAGE=$TESSERA_TEST_AZURITE/e2e \
#         cargo test --release --workspace --test e2e   # e2e suite on Azurite
#     bash .ci/blobs.sh stop /tmp/blobs
#
# Subcommands:
#   install     installs azurite and @azure/storage-blob (to create the
#               container) with npm into $TESSERA_CI_TOOLS (default
#               ~/.cache/tessera-ci), and moto[server] with pip, unless they
#               are there already.
#   start DIR   starts Azurite's blob service (data in DIR/azurite) and
#               moto's server, waits for both, creates the container and the
#               bucket `tessera`, and prints on stdout the `export` lines the
#               tests read: AZURE_STORAGE_USE_EMULATOR, AZURITE_BLOB_STORAGE_URL
#               and TESSERA_TEST_AZURITE=az://tessera; AWS_ENDPOINT,
#               AWS_ALLOW_HTTP, AWS_REGION, AWS_ACCESS_KEY_ID,
#               AWS_SECRET_ACCESS_KEY and TESSERA_TEST_S3=s3://tessera.
#   stop DIR    stops both by their pid files in DIR. Safe to run twice.
#
# Ports: $TESSERA_AZURITE_PORT (default 10000), $TESSERA_S3_PORT (default 9100).
set -euo pipefail

tools=${TESSERA_CI_TOOLS:-$HOME/.cache/tessera-ci}
azurite_port=${TESSERA_AZURITE_PORT:-10000}
s3_port=${TESSERA_S3_PORT:-9100}
azurite_version=3.35.0
storage_blob_version=12.32.0
moto_version=5.2.1

log() { echo "blobs.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
}

cmd_install() {
    if [ -x "$tools/node_modules/.bin/azurite-blob" ] && [ -d "$tools/node_modules/@azure/storage-blob" ]; then
        log "Azurite is installed in $tools"
    else
        command -v npm >/dev/null || die "npm is needed to install Azurite"
        log "installing azurite@$azurite_version and @azure/storage-blob@$storage_blob_version into $tools"
        mkdir -p "$tools"
        npm install --silent --no-audit --no-fund --prefix "$tools" \
            "azurite@$azurite_version" "@azure/storage-blob@$storage_blob_version" >&2
    fi
    if python3 -c 'import moto.server' 2>/dev/null; then
        log "moto is installed"
    else
        log "installing moto[server]==$moto_version"
        python3 -m pip install -q "moto[server]==$moto_version" >&2
    fi
}

# Waits up to 30 s for a TCP port on loopback to accept connections.
wait_for_port() {
    python3 - "$1" "$2" <<'EOF' || die "$2 did not start on port $1"
import socket, sys, time
port, what = int(sys.argv[1]), sys.argv[2]
deadline = time.time() + 30
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
EOF
}

cmd_start() {
    local dir=$1
    mkdir -p "$dir/azurite"
    dir=$(cd "$dir" && pwd)
    cmd_stop "$dir"
    "$tools/node_modules/.bin/azurite-blob" --silent --skipApiVersionCheck \
        --blobHost 127.0.0.1 --blobPort "$azurite_port" --location "$dir/azurite" \
        >"$dir/azurite.log" 2>&1 &
    echo $! >"$dir/azurite.pid"
    python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    wait_for_port "$azurite_port" Azurite
    wait_for_port "$s3_port" "moto's S3 server"
    # Azurite's well-known development account and key.
    NODE_PATH="$tools/node_modules" node - "$azurite_port" >&2 <<'EOF' || die "cannot create the Azurite container"
const { BlobServiceClient } = require("@azure/storage-blob");
const port = process.argv[2];
const conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
  "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
  `BlobEndpoint=http://127.0.0.1:${port}/devstoreaccount1;`;
BlobServiceClient.fromConnectionString(conn).getContainerClient("tessera").createIfNotExists()
  .then(() => console.log("blobs.sh: Azurite container tessera is ready"))
  .catch((e) => { console.error(e.message); process.exit(1); });
EOF
    # moto accepts any credentials.
    python3 - "$s3_port" <<'EOF' || die "cannot create the S3 bucket"
import sys, urllib.request
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/tessera", method="PUT")
urllib.request.urlopen(request).read()
print("blobs.sh: S3 bucket tessera is ready", file=sys.stderr)
EOF
    echo "export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$azurite_port TESSERA_TEST_AZURITE=az://tessera"
    echo "export AWS_ENDPOINT=http://127.0.0.1:$s3_port AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test TESSERA_TEST_S3=s3://tessera"
}

cmd_stop() {
    local dir=$1 name pid
    for name in azurite moto; do
        [ -f "$dir/$name.pid" ] || continue
        pid=$(cat "$dir/$name.pid")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
}

case "${1:-}" in
    install) cmd_install ;;
    start) [ $# = 2 ] || usage; cmd_start "$2" ;;
    stop) [ $# = 2 ] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
