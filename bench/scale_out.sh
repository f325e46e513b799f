#!/usr/bin/env bash
# What running several alb replicas costs least-connections: each replica counts only its own
# requests in flight. One fast and one slow backend (`alb backend --delay-ms`), then the same client
# load (wrk, 2, 8 or 32 keep-alive connections in all) through one replica, or split evenly over
# two replicas in front of the same backends. Prints the share each backend got, throughput and
# latency. Loopback only, fixed ports 18xxx, about a minute.
#
#   bench/scale_out.sh     (ALB_BIN=path: a built binary; SECONDS_PER_RUN=10; ALGORITHM=least_time)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${ALB_BIN:-target/release/alb}"
[ -x "$bin" ] || cargo build --release --locked
secs="${SECONDS_PER_RUN:-10}"
slow_ms="${SLOW_MS:-10}"
algorithm="${ALGORITHM:-least_conn}"
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }
count() { curl -s "http://127.0.0.1:$1/__requests"; }

start_backends() {
    "$bin" backend --port 18081 --name fast >/dev/null 2>&1 & pids+=($!)
    "$bin" backend --port 18082 --name slow --delay-ms "$slow_ms" >/dev/null 2>&1 & pids+=($!)
    wait_port 18081; wait_port 18082
}

replica() { # port admin-port
    cat >"$work/alb-$1.toml" <<TOML
listen = "127.0.0.1:$1"
algorithm = "$algorithm"
backends = ["http://127.0.0.1:18081", "http://127.0.0.1:18082"]
access_log = false
workers = 1
[admin]
listen = "127.0.0.1:$2"
TOML
    "$bin" run --config "$work/alb-$1.toml" >/dev/null 2>&1 & pids+=($!)
    wait_port "$1"
}

run() { # connections in all, then the replica ports they are split over
    local conns="$1"; shift
    local per=$((conns / $#)) before_fast before_slow
    before_fast=$(count 18081); before_slow=$(count 18082)
    local outs=()
    for port in "$@"; do
        wrk -t1 -c"$per" -d"${secs}s" --latency "http://127.0.0.1:$port/" >"$work/wrk-$port" & outs+=($!)
    done
    wait "${outs[@]}"
    local fast=$(( $(count 18081) - before_fast )) slow=$(( $(count 18082) - before_slow ))
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {s += $2} END {printf "%.0f", s}' "$work"/wrk-*)
    p50=$(awk '$1 == "50%" {print $2}' "$work/wrk-$1")
    p99=$(awk '$1 == "99%" {print $2}' "$work/wrk-$1")
    printf '| %d | %d (%d each) | %.1f %% | %s | %s | %s |\n' "$conns" $# "$per" \
        "$(echo "100 * $fast / ($fast + $slow)" | bc -l)" "$rps" "$p50" "$p99"
    rm -f "$work"/wrk-*
}

start_backends
replica 18080 18090
replica 18180 18190
echo "fast backend: 0 ms; slow backend: ${slow_ms} ms; $algorithm, one worker per replica; ${secs} s each"
echo
echo "| connections | replicas | share to the fast backend | req/s (all) | p50 | p99 |"
echo "| --- | --- | --- | --- | --- | --- |"
for conns in 2 8 32; do
    run "$conns" 18080
    run "$conns" 18080 18180
done
