#!/usr/bin/env bash
# A real, single-machine Slurm cluster on loopback, for the tests.
#
# Used by `.ci/run` and by the Slurm provider's end-to-end test
# (tests/e2e/providers.rs), which runs only when SLURM_CONF is set and
# TESSERA_TEST_SLURM=1, so a caller does
#
#     bash .ci/slurm.sh install
#     env=$(bash .ci/slurm.sh start /tmp/slurm) && eval "$env"   # SLURM_CONF
#     TESSERA_TEST_SLURM=1 cargo test ...
#     bash .ci/slurm.sh stop /tmp/slurm
#
# Subcommands:
#   install     installs Debian's slurm-wlm (slurmctld, slurmd, client tools)
#               and munge with apt-get, unless they are already there.
#   start DIR   makes DIR a private state folder with its own munge key and
#               munged, a slurm.conf (cluster "tessera": one node, this
#               machine at 127.0.0.1, one partition "debug", jobs share the
#               node one core each), starts slurmctld and slurmd, waits for
#               the node to be idle, runs a warm-up job, and prints
#               `export SLURM_CONF=DIR/slurm.conf` on stdout (everything
#               else goes to stderr). A cluster already running for DIR is
#               stopped first.
#   stop DIR    cancels the jobs of DIR's cluster (it is private: they are
#               all ours), then stops its slurmd, slurmctld and munged by
#               their pid files and waits for them to exit. Nothing outside
#               DIR's cluster is touched. Safe to run twice.
#   check       exits 0 if sbatch, squeue and scancel work against
#               $SLURM_CONF (it submits a held job and cancels it).
#
# The daemons run as the calling user (root in CI; as another user the
# cluster can only run that user's jobs). Ports: slurmctld on
# $TESSERA_SLURM_PORT (default 16817), slurmd on the next one.
# $TESSERA_SLURM_START_TIMEOUT bounds the wait for the node (default 60 s).
#
# Job gotchas: the folder of a job's --output file must exist before the job
# starts (otherwise the job fails at once); scancel sends SIGCONT and
# SIGTERM to every process of the job, then SIGKILL after KillWait (5 s).
set -euo pipefail

PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

ctld_port=${TESSERA_SLURM_PORT:-16817}
slurmd_port=$((ctld_port + 1))
start_timeout=${TESSERA_SLURM_START_TIMEOUT:-60}

log() { echo "slurm.sh: $*" >&2; }
# Seconds since $1 (a `date +%s%N`), to a tenth.
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 install | start DIR | stop DIR | check" >&2
    exit 2
}

# ---------------------------------------------------------------- install

installed() {
    local c
    for c in sbatch squeue scancel sinfo srun slurmctld slurmd munged munge; do
        command -v "$c" >/dev/null 2>&1 || return 1
    done
}

cmd_install() {
    if installed; then
        log "Slurm and munge are already installed ($(slurmctld -V))"
        return 0
    fi
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    local pkgs=(slurm-wlm slurm-client munge)
    log "installing ${pkgs[*]}"
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2; then
        log "install failed; running apt-get update and trying again"
        $sudo apt-get update -qq >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
    fi
    installed || die "Slurm or munge commands still missing after install"
    log "installed $(slurmctld -V)"
}

# ---------------------------------------------------------------- helpers

# The absolute path of DIR (created if needed).
abs_dir() {
    [ -n "${1:-}" ] || usage
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

# The pid in a pid file if that process is alive and runs program $2.
live_pid() {
    local file=$1 name=$2 pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name" || return 1
    echo "$pid"
}

# Stops the daemons of pid files $1 (program $2), $3 ($4) and so on
# together: SIGTERM, then SIGKILL after 20 s.
stop_daemons() {
    local pids=() files=() pid i alive
    while [ $# -ge 2 ]; do
        if pid=$(live_pid "$1" "$2"); then
            log "stopping $2 (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        files+=("$1")
        shift 2
    done
    [ ${#pids[@]} -gt 0 ] || { rm -f "${files[@]}"; return 0; }
    for ((i = 0; i < 250; i++)); do
        alive=()
        for pid in "${pids[@]}"; do
            ! kill -0 "$pid" 2>/dev/null || alive+=("$pid")
        done
        [ ${#alive[@]} -gt 0 ] || { rm -f "${files[@]}"; return 0; }
        if [ "$i" = 200 ]; then
            log "pids ${alive[*]} ignored SIGTERM for 20 s; killing them"
            kill -KILL "${alive[@]}" 2>/dev/null || true
        fi
        sleep 0.1
    done
    log "warning: pids ${alive[*]} are still alive"
}

# Whether something listens on 127.0.0.1:$1.
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

show_logs() {
    local dir=$1 f
    for f in "$dir"/log/*.log; do
        [ -s "$f" ] || continue
        echo "----- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
}

# ---------------------------------------------------------------- start

write_key() {
    local key=$1
    rm -f "$key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$key" --bits=1024 >&2 2>/dev/null ||
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    else
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
    chmod 0400 "$key"
}

cmd_start() {
    local dir
    dir=$(abs_dir "${1:-}")
    local conf=$dir/slurm.conf m=$dir/munge
    local socket=$m/munged.socket
    export SLURM_CONF=$conf
    local t0
    t0=$(date +%s%N)

    if [ -e "$dir/slurmctld.pid" ] || [ -e "$dir/slurmd.pid" ] || [ -e "$m/munged.pid" ]; then
        log "a cluster was started in $dir before; stopping it first"
        cmd_stop "$dir"
    fi
    installed || die "Slurm or munge is missing: run '$0 install' first"
    local p
    for p in "$ctld_port" "$slurmd_port"; do
        ! port_busy "$p" ||
            die "port $p on 127.0.0.1 is in use (another cluster?); stop it or set TESSERA_SLURM_PORT"
    done

    local user node cpus mem_mib real_mib
    user=$(id -un)
    node=$(hostname -s)
    [ -n "$node" ] || die "hostname -s is empty"
    cpus=$(nproc)
    mem_mib=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    real_mib=$((mem_mib * 9 / 10))
    [ "$real_mib" -ge 1 ] || real_mib=1

    # A fresh state every time: no jobs or node states from earlier runs.
    rm -rf "$dir/state" "$dir/spool" "$dir/log" "$m"
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    mkdir -m 0700 "$m"
    chmod 0700 "$dir"

    # munge: its own key, socket, pid, log and seed in DIR/munge.
    write_key "$m/munge.key"
    log "starting munged (socket $socket)"
    munged --force --key-file="$m/munge.key" --socket="$socket" \
        --pid-file="$m/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$m/munged.seed" </dev/null >>"$dir/log/munged.out" 2>&1 ||
        { show_logs "$dir"; cat "$dir/log/munged.out" >&2; die "munged did not start"; }
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$socket" ] && break
        sleep 0.1
    done
    munge -n -S "$socket" 2>/dev/null | unmunge -S "$socket" >/dev/null 2>&1 ||
        { show_logs "$dir"; cmd_stop "$dir"; die "munged does not answer on $socket"; }

    cat >"$conf" <<EOF
# Written by .ci/slurm.sh: a one-node test cluster on loopback.
ClusterName=tessera
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
PropagateResourceLimits=NONE
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
SchedulerType=sched/backfill
# Schedule a batch job as soon as it is submitted (the default waits up to
# 3 s, to batch submissions).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Take the node's shape from here, not from the hardware: one core per CPU,
# so that every job of one CPU gets one core and they share the node.
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$real_mib State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    log "starting slurmctld (port $ctld_port) and slurmd (port $slurmd_port) for node $node"
    slurmctld -f "$conf" </dev/null >>"$dir/log/slurmctld.out" 2>&1 ||
        { show_logs "$dir"; cmd_stop "$dir"; die "slurmctld did not start"; }
    slurmd -f "$conf" -N "$node" </dev/null >>"$dir/log/slurmd.out" 2>&1 ||
        { show_logs "$dir"; cmd_stop "$dir"; die "slurmd did not start"; }

    local state="" deadline=$(($(date +%s) + start_timeout))
    while :; do
        state=$(timeout 10 sinfo -h -N -n "$node" -o '%T' 2>/dev/null || true)
        if [ "$state" = idle ] || [ "$(date +%s)" -ge "$deadline" ]; then break; fi
        sleep 0.25
    done
    if [ "$state" != idle ]; then
        log "the node is not idle after ${start_timeout} s (state: '${state:-no answer}')"
        sinfo -R >&2 2>/dev/null || true
        show_logs "$dir"
        cmd_stop "$dir"
        die "the cluster did not come up"
    fi
    log "node $node is idle after $(since "$t0") s; running a warm-up job"

    # sbatch --wait polls slowly (several seconds): poll the job ourselves.
    local id job_state=""
    if ! id=$(timeout 20 sbatch --parsable --job-name=warm-up \
        --output="$dir/log/warm-up-%j.out" --wrap true 2>"$dir/log/warm-up.err"); then
        log "sbatch of the warm-up job failed: $(cat "$dir/log/warm-up.err")"
        show_logs "$dir"
        cmd_stop "$dir"
        die "jobs cannot be submitted"
    fi
    id=${id%%;*}
    deadline=$(($(date +%s) + 60))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        job_state=$(timeout 10 scontrol show job -o "$id" 2>/dev/null |
            sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case "$job_state" in
        PENDING | CONFIGURING | RUNNING | COMPLETING | "") sleep 0.1 ;;
        *) break ;;
        esac
    done
    if [ "$job_state" != COMPLETED ]; then
        log "the warm-up job $id ended as '${job_state:-unknown}', not COMPLETED"
        scontrol show job "$id" >&2 2>/dev/null || true
        show_logs "$dir"
        cmd_stop "$dir"
        die "jobs do not run"
    fi
    log "warm-up job $id ran; the cluster is up after $(since "$t0") s"
    printf 'export SLURM_CONF=%q\n' "$conf"
}

# ---------------------------------------------------------------- stop

# The slurmstepd processes of DIR's cluster: they log to its slurmd.log.
stepds() {
    local dir=$1 pid fd
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        for fd in "/proc/$pid/fd"/*; do
            case "$(readlink "$fd" 2>/dev/null)" in
            "$dir"/log/*) echo "$pid"; break ;;
            esac
        done
    done
}

# The pids given and all their descendants.
tree_of() {
    local pid
    for pid in "$@"; do
        echo "$pid"
        # shellcheck disable=SC2046
        tree_of $(pgrep -P "$pid" 2>/dev/null || true)
    done
}

cmd_stop() {
    local dir
    [ -n "${1:-}" ] || usage
    if [ ! -d "$1" ]; then
        log "$1 does not exist; nothing to stop"
        return 0
    fi
    dir=$(cd "$1" && pwd -P)
    local conf=$dir/slurm.conf i

    # Cancel this cluster's jobs while its daemons can still end them.
    if [ -f "$conf" ] && live_pid "$dir/slurmctld.pid" slurmctld >/dev/null; then
        local jobs
        jobs=$(SLURM_CONF=$conf timeout 20 squeue -h -o '%i' 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            log "cancelling this cluster's jobs: $(echo "$jobs" | tr '\n' ' ')"
            # shellcheck disable=SC2086
            SLURM_CONF=$conf timeout 20 scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [ -z "$(SLURM_CONF=$conf squeue -h -o '%i' -t PD,R,CG,S,CF 2>/dev/null)" ] && break
                sleep 0.2
            done
        fi
    fi
    stop_daemons "$dir/slurmd.pid" slurmd "$dir/slurmctld.pid" slurmctld
    # Step daemons left behind (a job that outlived its cancel, or a
    # slurmctld that was already gone) go too, with their jobs' processes.
    local left
    left=$(stepds "$dir")
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086
        left=$(tree_of $left)
        log "killing leftover job steps: $(echo "$left" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
    stop_daemons "$dir/munge/munged.pid" munged
    log "the cluster of $dir is stopped"
}

# ---------------------------------------------------------------- check

cmd_check() {
    [ -n "${SLURM_CONF:-}" ] || { log "SLURM_CONF is not set"; return 1; }
    [ -f "$SLURM_CONF" ] || { log "SLURM_CONF=$SLURM_CONF does not exist"; return 1; }
    local c
    for c in sbatch squeue scancel; do
        command -v "$c" >/dev/null 2>&1 || { log "$c is missing"; return 1; }
    done
    timeout 20 squeue -h >/dev/null || { log "squeue does not reach slurmctld"; return 1; }
    local id
    id=$(timeout 20 sbatch --parsable --hold --job-name=slurm-sh-check \
        --output=/dev/null --wrap true) || { log "sbatch failed"; return 1; }
    id=${id%%;*}
    timeout 20 squeue -h -j "$id" -o '%i' | grep -qx "$id" ||
        { log "squeue does not list job $id"; timeout 20 scancel "$id" || true; return 1; }
    timeout 20 scancel "$id" || { log "scancel $id failed"; return 1; }
    log "sbatch, squeue and scancel work against $SLURM_CONF"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
check) cmd_check ;;
*) usage ;;
esac
