#!/usr/bin/env bash
# What sharing a route's rate limit through Redis costs ([shared_state], issue 22): S1's load (wrk,
# one thread, 64 keep-alive connections, GET / with 100 B answers from two `alb backend`s) through
# one route limited to 1,000,000/s per client address (one key: every request comes from
# 127.0.0.1), so that nothing is refused and the limiter's cost is all that differs. Three configs:
#   local    the route's limiter in the process (no [shared_state])
#   leased   [shared_state]: tokens taken from Redis in leases (the default, up to 1,000 a trip)
#   lease=1  [shared_state] with lease = 1: one round trip to Redis for every request
# alb on core 0 (one worker), wrk, the backends and redis-server on core 1, as in bench/run.sh.
# Each round runs the three in a rotated order (a drift of the host spreads over all three); the
# table gives each round and the median. Loopback only, fixed ports 18080-18090 and 18379.
#
#   bench/shared_limits.sh     (ALB_BIN=path: a built binary; SECONDS_PER_RUN=10; ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${ALB_BIN:-target/release/alb}"
[ -x "$bin" ] || cargo build --release --locked
secs="${SECONDS_PER_RUN:-10}"
rounds="${ROUNDS:-3}"
for tool in wrk redis-server taskset curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install wrk redis-server util-linux curl)" >&2; exit 1; }
done
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/${2:-}" && return; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }

taskset -c 1 "$bin" backend --port 18081 --name b1 --body-bytes 100 >/dev/null 2>&1 & pids+=($!)
taskset -c 1 "$bin" backend --port 18082 --name b2 --body-bytes 100 >/dev/null 2>&1 & pids+=($!)
taskset -c 1 redis-server --port 18379 --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" --loglevel warning >"$work/redis.log" 2>&1 & pids+=($!)
wait_port 18081; wait_port 18082
for _ in $(seq 100); do redis-cli -p 18379 ping >/dev/null 2>&1 && break; sleep 0.1; done

config() { # variant
    cat <<TOML
listen = "127.0.0.1:18080"
backends = ["http://127.0.0.1:18081", "http://127.0.0.1:18082"]
access_log = false
[admin]
listen = "127.0.0.1:18090"
[[route]]
path_prefix = "/"
pool = "default"
rate_limit = { per_second = 1000000, burst = 100000 }
TOML
    case "$1" in
        local) ;;
        leased) printf '[shared_state]\nredis = "redis://127.0.0.1:18379"\n' ;;
        lease=1) printf '[shared_state]\nredis = "redis://127.0.0.1:18379"\nlease = 1\n' ;;
    esac
}

metric() { curl -s "http://127.0.0.1:18090/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

run() { # variant round
    config "$1" >"$work/alb.toml"
    taskset -c 0 "$bin" run --config "$work/alb.toml" >"$work/alb.log" 2>&1 &
    local alb=$!
    wait_port 18080
    if [ "$1" != local ]; then
        for _ in $(seq 100); do [ "$(metric alb_shared_state_up)" = 1 ] && break; sleep 0.1; done
    fi
    taskset -c 1 wrk -t1 -c64 -d1s http://127.0.0.1:18080/ >/dev/null
    taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency http://127.0.0.1:18080/ >"$work/wrk"
    local rps p99 refused trips
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$work/wrk")
    p99=$(awk '$1 == "99%" {print $2}' "$work/wrk")
    refused=$(awk '/Non-2xx/ {print $NF}' "$work/wrk")
    trips=$(metric alb_shared_state_round_trips_total)
    kill "$alb"; wait "$alb" 2>/dev/null || true
    echo "$1 $2 $rps $p99 ${refused:-0} ${trips:--}" >>"$work/results"
}

variants=(local leased lease=1)
for round in $(seq "$rounds"); do
    for i in 0 1 2; do
        run "${variants[$(( (i + round - 1) % 3 ))]}" "$round"
    done
done

echo "S1's load through a route limited to 1,000,000/s, ${secs} s per run, $rounds rounds (req/s, p99)"
echo
printf '| config |'; for r in $(seq "$rounds"); do printf ' round %s |' "$r"; done
printf ' median req/s | median p99 | refused | Redis round trips (last run) |\n'
printf '| --- |'; for _ in $(seq "$rounds"); do printf ' ---: |'; done; printf ' ---: | ---: | ---: | ---: |\n'
for v in "${variants[@]}"; do
    awk -v v="$v" '$1 == v' "$work/results" | sort -k2n >"$work/one"
    printf '| %s |' "$v"
    while read -r _ _ rps p99 _ _; do printf ' %s / %s |' "$rps" "$p99"; done <"$work/one"
    med_rps=$(awk '{print $3}' "$work/one" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    med_p99=$(awk '{v=$4; if (v ~ /us$/) v=v/1000; else if (v ~ /ms$/) v=v+0; else if (v ~ /s$/) v=v*1000; print v}' "$work/one" \
        | sort -g | awk '{a[NR]=$1} END {printf "%.2fms", a[int((NR+1)/2)]}')
    refused=$(awk '{s += $5} END {print s}' "$work/one")
    trips=$(tail -1 "$work/one" | awk '{print $6}')
    printf ' %s | %s | %s | %s |\n' "$med_rps" "$med_p99" "$refused" "$trips"
done
