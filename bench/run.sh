#!/usr/bin/env bash
# alb's benchmark suite in one command: installs the tools it needs, builds alb (which is also the
# test backend, `alb backend`; S8's WebSocket echo server and client are examples/ws_bench.rs,
# S13's gRPC backend and checking client examples/grpc_bench.rs), then runs scenarios S1-S14
# against direct, alb, nginx and HAProxy and writes a markdown table to bench/results/ (and,
# after a full run, BENCHMARKS.md).
#
#   bench/run.sh              full run, about 25 minutes (S9 and S10 take 6, S11 6, S12 and S13 7;
#                             plus the build)
#   bench/run.sh --quick      2 s per scenario, small counts: checks the script (BENCH_QUICK=1 too)
#   BENCH_ONLY=S1,S2 BENCH_CONTENDERS=alb,nginx bench/run.sh    a subset (no BENCHMARKS.md update)
#   BENCH_ONLY=S8 bench/run.sh   WebSocket echo messages/s through each proxy (builds ws_bench)
#   BENCH_ONLY=S9,S10 bench/run.sh   TLS termination: keep-alive GETs, then full handshakes/s
#   BENCH_ONLY=S11 bench/run.sh   routing: S1's load with 100 path-prefix routes against 1
#   BENCH_ONLY=S12 bench/run.sh   HTTP/2 over TLS (h2load, 10 connections x 100 streams, then
#                                 x 10) to the HTTP/1.1 backends, then memory per idle HTTP/2
#                                 connection
#   BENCH_ONLY=S13 bench/run.sh   gRPC unary calls/s over h2c to two gRPC backends (builds
#                                 grpc_bench)
#   BENCH_ONLY=S1,S14 bench/run.sh   the access log's cost: S1's load with every request logged,
#                                    against S1 (log off) of the same run
#   ALB_BIN=/path/to/alb bench/run.sh   that binary instead of building this tree (S6 still uses
#                                       the tree: it is a criterion bench of the library)
#
# Only 127.0.0.1 is used. See bench/README.md for what each scenario measures and how the peers are
# configured.
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
    case "$arg" in
        --quick) export BENCH_QUICK=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------
# command -> Debian package
declare -A PACKAGES=(
    [nginx]=nginx-light [haproxy]=haproxy [wrk]=wrk [valgrind]=valgrind
    [callgrind_annotate]=valgrind [hey]=hey [taskset]=util-linux [curl]=curl [python3]=python3
    [lscpu]=util-linux [getconf]=libc-bin
    # S9/S10: the certificate (openssl req), the handshake load (openssl s_time) and the probe of
    # what each balancer negotiates (openssl s_client). Debian's wrk links libssl: it speaks https.
    [openssl]=openssl
    # S12/S13: the HTTP/2 load (h2load: many streams per connection, h2 by ALPN or h2c).
    [h2load]=nghttp2-client
)
missing=()
for cmd in "${!PACKAGES[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd ]]; then
        missing+=("${PACKAGES[$cmd]}")
    fi
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    if ! apt-get install -y -q "${missing[@]}"; then
        # Newer Debian releases dropped nginx-light: the plain nginx package has the same binary.
        apt-get install -y -q "${missing[@]/nginx-light/nginx}"
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"
# The packaged nginx may have started itself as a service; it listens on port 80, not on ours.

cpus=$(nproc)
if ((cpus < 2)); then
    log "warning: $cpus CPU(s): the balancer and the load share one core, figures will be skewed"
    export BENCH_LOAD_CPU="${BENCH_LOAD_CPU:-0}"
fi

# S5 keeps 10,000 client connections open: take the whole fd allowance (the hard limit cannot be
# raised here without CAP_SYS_RESOURCE; bench.py adapts to it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "fd limit $(ulimit -n)"

# --- build ---------------------------------------------------------------------------------------
# ALB_BIN=/path/to/alb benchmarks that binary instead of building this tree's (to compare builds).
if [[ -z ${ALB_BIN:-} ]]; then
    log "building alb (release)"
    cargo build --release --quiet --bin alb
fi
if [[ -z ${BENCH_ONLY:-} || ${BENCH_ONLY^^} == *S6* ]]; then
    log "building the criterion benches (S6: benches/select.rs, benches/routes.rs)"
    # bench.py runs the built executables itself: `cargo bench` would wait on the build directory
    # lock whenever someone else builds in this tree meanwhile.
    built=$(cargo bench --bench select --no-run 2>&1) || { printf '%s\n' "$built" >&2; exit 1; }
    BENCH_SELECT_EXE=$(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' <<<"$built" | tail -1)
    built=$(cargo bench --bench routes --no-run 2>&1) || { printf '%s\n' "$built" >&2; exit 1; }
    BENCH_ROUTES_EXE=$(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' <<<"$built" | tail -1)
    export BENCH_SELECT_EXE BENCH_ROUTES_EXE
fi
if [[ -z ${BENCH_ONLY:-} || ${BENCH_ONLY^^} == *S8* ]]; then
    log "building the WebSocket echo server and client (S8: examples/ws_bench.rs, release)"
    cargo build --release --quiet --example ws_bench
    export BENCH_WS_BIN="${CARGO_TARGET_DIR:-target}/release/examples/ws_bench"
fi
if [[ -z ${BENCH_ONLY:-} || ${BENCH_ONLY^^} == *S13* ]]; then
    log "building the gRPC backend and client (S13: examples/grpc_bench.rs, release)"
    cargo build --release --quiet --example grpc_bench
    export BENCH_GRPC_BIN="${CARGO_TARGET_DIR:-target}/release/examples/grpc_bench"
fi

# --- run -----------------------------------------------------------------------------------------
# bench.py stops everything it started on exit and on Ctrl-C; this trap is the safety net should
# it be killed outright: it ends the process groups bench.py recorded, and nothing else.
work=$(mktemp -d /tmp/alb-bench.XXXXXX)
export BENCH_WORK=$work
driver_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $driver_pid ]] && kill -0 "$driver_pid" 2>/dev/null; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$driver_pid" 2>/dev/null || true
    fi
    # bench.py keeps $work/pids listing the process groups it has not stopped yet.
    if [[ -s $work/pids ]]; then
        while read -r pid; do
            [[ $pid =~ ^[0-9]+$ ]] && kill -KILL -- "-$pid" 2>/dev/null || true
        done <"$work/pids"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
python3 bench/bench.py &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=""
log "bench/run.sh took $(( $(date +%s) - start )) s (after the build); logs in $work"
exit "$status"
