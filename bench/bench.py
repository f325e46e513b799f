#!/usr/bin/env python3
"""The driver behind bench/run.sh: runs scenarios S1-S13 against direct, alb, nginx and HAProxy and
writes a markdown table (bench/README.md explains every figure).

run.sh installs the tools and builds alb first; this script only runs things. It starts every
process in its own process group, records it, and stops them all on exit, on an error and on
Ctrl-C. All traffic goes to 127.0.0.1; every load run is bounded in time and count.

Environment (all optional):
  BENCH_QUICK=1          2 s per scenario, small S2 counts, 2,000 idle connections, S7 in 4 s with
                         a kill every second: tests the script
  BENCH_ONLY=S1,S3       run only these scenarios
  BENCH_CONTENDERS=alb,nginx   only these contenders (direct is always cheap and kept if listed)
  BENCH_DURATION=10      seconds of load per scenario and contender (S1, S3, S4, S8)
  BENCH_PORT=18080       balancer port; the backends take the next two, TLS (S9, S10, S12) the
                         third, nginx's and HAProxy's h2c listener (S12, S13) the fourth
  BENCH_LB_CPU=0 BENCH_LOAD_CPU=1   cores for the balancer, and for the backends and load tools
  ALB_BIN=target/release/alb
  BENCH_WS_BIN=target/release/examples/ws_bench   S8's WebSocket echo server and client
  BENCH_TLS_ROUNDS=3     rounds of S9 and S10 (1 in quick mode); the table holds the medians
  BENCH_ROUTE_ROUNDS=4   rounds of S11 (1 in quick mode); the table holds medians (costs: means)
  BENCH_ROUTES_EXE       S6's route matching bench (benches/routes.rs), built by run.sh
  BENCH_H2_ROUNDS=3      rounds of S12 and S13 (1 in quick mode); the table holds the medians
  BENCH_GRPC_BIN=target/release/examples/grpc_bench   S13's gRPC backend and checking client
"""

import datetime
import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))
from h2_clients import h2_get  # noqa: E402  (bench/h2_clients.py: one GET over HTTP/2)

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0") or "--quick" in sys.argv[1:]
DURATION = int(os.environ.get("BENCH_DURATION", "2" if QUICK else "10"))
WARMUP = 1  # seconds (wrk takes whole seconds)
S2_COUNTS = (400, 2_000) if QUICK else (5_000, 25_000)  # multiples of S2_CONCURRENCY (hey)
S2_CONCURRENCY = 8
# run.sh builds into $CARGO_TARGET_DIR when it is set (cargo's own rule), else into target/.
TARGET = ROOT / os.environ.get("CARGO_TARGET_DIR", "target")
ALB_BIN = Path(os.environ.get("ALB_BIN", TARGET / "release" / "alb"))
# A TOML file appended to alb's config in every scenario (BENCH_ALB_EXTRA_CONFIG).
ALB_EXTRA = os.environ.get("BENCH_ALB_EXTRA_CONFIG", "")
LB_PORT = int(os.environ.get("BENCH_PORT", "18080"))
B1_PORT, B2_PORT = LB_PORT + 1, LB_PORT + 2
TLS_PORT = LB_PORT + 3  # S9, S10 and S12: each balancer's TLS listener, next to its plain one
# S12 and S13: nginx's and HAProxy's h2c (HTTP/2 by prior knowledge) listener. alb serves h2c on
# its plain listener, next to HTTP/1.1 ([http2] cleartext = true); nginx 1.22 speaks only HTTP/2 on
# a plain `listen ... http2`, so it (and HAProxy, `proto h2`, alike) gets a port of its own.
H2C_PORT = LB_PORT + 4
LB_CPU = os.environ.get("BENCH_LB_CPU", "0")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "1")
ALL_SCENARIOS = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12",
                 "S13", "S14"]
ONLY = [s.strip().upper() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()]
SCENARIOS = [s for s in ALL_SCENARIOS if not ONLY or s in ONLY]
ALL_CONTENDERS = ["direct", "alb", "nginx", "haproxy"]
PICKED = [c.strip() for c in os.environ.get("BENCH_CONTENDERS", "").split(",") if c.strip()]
CONTENDERS = [c for c in ALL_CONTENDERS if not PICKED or c in PICKED]
LBS = [c for c in CONTENDERS if c != "direct"]
SMALL_BODY = 100
LARGE_BODY = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# File descriptors: the hard limit cannot be raised without CAP_SYS_RESOURCE.
FD_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
FD_LIMIT = min(FD_HARD if FD_HARD != resource.RLIM_INFINITY else 65_536, 65_536)
# HAProxy reserves two fds per connection (client and server side) and refuses to start otherwise.
HAPROXY_MAXCONN = min(20_000, (FD_LIMIT - 100) // 2)
S5_CONNECTIONS = 2_000 if QUICK else (10_000 if HAPROXY_MAXCONN >= 10_100 else
                                      max(1_000, (HAPROXY_MAXCONN - 100) // 1_000 * 1_000))
# S7: a backend dying under load. Backend b2 is SIGKILLed every S7_INTERVAL seconds of the timed
# run, stays down S7_DOWN seconds, and is restarted on its port; the next kill waits until it
# answers again. S7_KILLS bounds the kills: the last one comes S7_INTERVAL before the end.
S7_CONNECTIONS = 256
S7_DURATION = 4 if QUICK else 30
S7_INTERVAL = 1 if QUICK else 5
S7_DOWN = 0.2 if QUICK else 0.5
S7_KILLS = S7_DURATION // S7_INTERVAL - 1
# A kill "hits traffic" when b2 served at least S7_IN_USE requests in the S7_LOOKBACK seconds
# before it (in rotation it serves thousands there; out of it, a health probe at most).
S7_LOOKBACK = 0.5
S7_IN_USE = 10
# S8: WebSocket echo through each proxy (examples/ws_bench.rs, built by run.sh): S8_CONNECTIONS
# WebSocket connections, each sending one S8_SIZE-byte binary message and waiting for its echo, in
# a loop, for DURATION seconds. The two backends are ws_bench echo servers.
WS_BIN = ROOT / os.environ.get("BENCH_WS_BIN", "target/release/examples/ws_bench")
S8_CONNECTIONS = 50
S8_SIZE = 64
# After the client's close handshakes, how long the backends may take to see every WebSocket
# connection closed (the proxies pass the close frames and then close their upstream side).
S8_CLOSE_WAIT = 5.0
# S9 and S10: TLS termination. One ECDSA P-256 certificate made with openssl for each run (in the
# work dir), the same file for every balancer; TLS 1.2 and 1.3 offered, backends plain HTTP.
# S9: wrk over https with S9_CONNECTIONS keep-alive connections (S1's load, encrypted), after the
# same balancer process served S1's plain load back to back. S10: S10_CLIENTS `openssl s_time
# -new` processes, each one sequential loop of new connection, full handshake (no session offered,
# so never resumed), `GET / HTTP/1.0`, answer read to the close, for DURATION seconds.
TLS_SCENARIOS = ("S9", "S10")
S9_CONNECTIONS = 64
S10_CLIENTS = 16
# S9 and S10 run in rounds, every balancer once per round (fresh process, order rotated), and the
# table holds each figure's median over the rounds: on a shared machine one 10 s run can land on
# a quiet or a busy moment, and interleaving spreads that over every contender alike.
TLS_ROUNDS = int(os.environ.get("BENCH_TLS_ROUNDS", "1" if QUICK else "3"))
NO_TLS = "n/a (alb has no TLS listener in this build)"
# S11: what routing costs. S1's load (64 keep-alive connections, 100 B answers) through each
# balancer configured with S11_ROUTES path-prefix routes (/r0/ to /r99/), the request (S11_PATH)
# taking the last one, against the same balancer with only that route. Every route goes to the
# same two backends (alb: one pool), so only the routing differs. Each config runs in a fresh
# process, the two back to back; S11_ROUNDS rounds, the order of the two configs swapped every
# round and the balancers' order rotated; the table holds medians, and the means of the per-round
# costs. Then each config under callgrind, counted as in S2.
S11_ROUTES = 100
S11_PATH = f"/r{S11_ROUTES - 1}/x"
S11_CONNECTIONS = 64
S11_ROUNDS = int(os.environ.get("BENCH_ROUTE_ROUNDS", "1" if QUICK else "4"))
# S12: HTTP/2 over TLS (ALPN h2, the run's certificate) from h2load, S12_CONNECTIONS connections
# with S12_STREAMS concurrent streams each, GET / with 100 B answers from the usual two HTTP/1.1
# backends; then, from the same process, the same with S12_STREAMS_LOW streams each (a tenth of
# the requests in flight: the balancers do not rank the same at both). Then memory per idle HTTP/2 connection (bench/h2_clients.py: S12_IDLE connections that
# each made one request, held idle), once over h2c and once over TLS, a fresh process each.
# S13: unary gRPC calls (examples/grpc_bench.rs: two gRPC backends, h2c) through each balancer's
# h2c listener, h2load POSTing one fixed call, S13_CONNECTIONS x S13_STREAMS at once.
# Both run in H2_ROUNDS rounds as S9 and S10 do (fresh process, order rotated, medians).
H2_SCENARIOS = ("S12", "S13")
S12_CONNECTIONS, S12_STREAMS, S12_STREAMS_LOW = 10, 100, 10
S12_IDLE = 2_000 if QUICK else min(5_000, max(1_000, (HAPROXY_MAXCONN - 100) // 1_000 * 1_000))
S13_CONNECTIONS, S13_STREAMS = 10, 50
H2_ROUNDS = int(os.environ.get("BENCH_H2_ROUNDS", "1" if QUICK else "3"))
# nginx caches this many idle upstream connections (`keepalive`): S1's 64 matches wrk's 64
# connections; S12 and S13 have up to connections x streams requests in flight, each on an
# upstream connection of its own for nginx (HTTP/1.1, and grpc_pass: one stream per connection).
NGINX_KEEPALIVE, NGINX_KEEPALIVE_H2 = 64, 1_024
GRPC_BIN = ROOT / os.environ.get("BENCH_GRPC_BIN", "target/release/examples/grpc_bench")
GRPC_PATH = "/alb.bench.Bench/Call"  # the one method of examples/grpc_bench.rs
GRPC_CHECK_CALLS = 20
NO_H2 = "n/a (alb has no HTTP/2 in this build)"


class BenchError(Exception):
    pass


class NoTls(BenchError):
    """alb refused the [tls] section: a build from before TLS termination."""


class NoH2(BenchError):
    """alb refused the [http2] section or h2c:// backends: a build from before HTTP/2."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every long-running process this run started, each in its own process group."""

    def __init__(self, work):
        self.work = work
        self.procs = []
        self.pidfile = work / "pids"

    def spawn(self, name, cmd, cpu, env=None, stdin=None, stdout=None):
        full = (["taskset", "-c", cpu] if cpu is not None else []) + [str(c) for c in cmd]
        logf = open(self.work / f"{name}.log", "ab")
        logf.write(f"$ {' '.join(full)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            full,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else logf,
            stderr=logf,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        proc.bench_name = name
        proc.bench_log = self.work / f"{name}.log"
        self.procs.append(proc)
        self._write_pids()
        return proc

    def _write_pids(self):
        """Keeps `pids` listing the live process groups, for run.sh's safety net."""
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text("".join(f"{p.pid}\n" for p in self.procs))
        tmp.replace(self.pidfile)

    def stop(self, proc, sig=signal.SIGTERM, timeout=10.0):
        """Signals the process group and waits; SIGKILL after `timeout`. Returns the exit code."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{proc.bench_name} did not stop in {timeout:.0f} s: SIGKILL")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        # The group may still hold children (nginx workers) after the leader went.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc in self.procs:
            self.procs.remove(proc)
            self._write_pids()
        return proc.returncode

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout=5.0)


def wrk_cmd(port, connections, duration, latency=True, scheme="http", path="/"):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    if latency:
        cmd.append("--latency")
    return cmd + [f"{scheme}://127.0.0.1:{port}{path}"]


def run_tool(cmd, timeout, cpu=LOAD_CPU):
    """Runs a load tool to completion on the load core; returns its stdout (stderr appended)."""
    full = ["taskset", "-c", cpu] + [str(c) for c in cmd]
    try:
        out = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{cmd[0]} ran past its {timeout:.0f} s timeout") from e
    if out.returncode != 0:
        raise BenchError(f"{' '.join(full)} exited {out.returncode}: {out.stderr.strip()[-500:]}")
    return out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# Readiness and /proc


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(port, path="/", timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(port, path, proc, timeout):
    """Polls until GET `path` answers 200, at most `timeout` seconds; fails if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{proc.bench_name} exited with {proc.returncode} while starting; "
                             f"see {proc.bench_log}")
        try:
            status, _ = http_get(port, path, timeout=min(5.0, timeout))
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"port {port} not answering 200 on {path} after {timeout:.0f} s ({last})")


def https_get(port, cafile, path="/", timeout=2.0):
    """GET over TLS, verifying the certificate against the run's own (its SAN holds 127.0.0.1)."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_https(port, cafile, proc, timeout):
    """As wait_http, over TLS."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{proc.bench_name} exited with {proc.returncode} while starting; "
                             f"see {proc.bench_log}")
        try:
            status, _ = https_get(port, cafile, timeout=min(5.0, timeout))
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:  # ssl.SSLError is an OSError
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"port {port} not answering 200 over TLS after {timeout:.0f} s ({last})")


def wait_h2(port, cafile, proc, timeout):
    """As wait_http, over HTTP/2: h2c by prior knowledge, or with `cafile` TLS with ALPN h2 (a
    balancer that does not choose h2 is not ready: it would be measured in HTTP/1.1)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{proc.bench_name} exited with {proc.returncode} while starting; "
                             f"see {proc.bench_log}")
        try:
            status, _ = h2_get(port, cafile, timeout=min(5.0, timeout))
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, ValueError) as e:  # ConnectionError, TimeoutError, ssl.SSLError
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise BenchError(f"port {port} not answering 200 over HTTP/2 ({'TLS' if cafile else 'h2c'}) "
                     f"after {timeout:.0f} s ({last})")


def ensure_free(*ports):
    for port in ports:
        if port_open(port):
            raise BenchError(f"127.0.0.1:{port} is already in use (another benchmark running? "
                             f"set BENCH_PORT)")


def wait_free(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            raise BenchError(f"127.0.0.1:{port} still listening {timeout:.0f} s after its stop")
        time.sleep(0.1)


def cpu_ticks(pids):
    """utime + stime (fields 14 and 15 of /proc/PID/stat, all threads) summed over `pids`."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields[0] is field 3 (state)
    return total


def core_times(cpu):
    """(busy, total) jiffies of one core from /proc/stat; busy counts softirq (the loopback
    network stack runs there, charged to no process) and everything else that ran on it."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                total = sum(v[:8])  # guest time is already inside user
                return total - idle, total
    raise BenchError(f"no cpu{cpu} in /proc/stat")


def busy_percent(before, after):
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100.0 * busy / total if total else 0.0


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def children(pid):
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def requests_served(port):
    status, body = http_get(port, "/__requests")
    if status != 200:
        raise BenchError(f"backend {port}: /__requests answered {status}")
    return int(body.decode().strip())


# ---------------------------------------------------------------------------------------------
# Contenders


def fill(template, out, tls=False, sections=(), **values):
    """Fills in the @KEY@ placeholders. Lines from `@NAME_BEGIN@` to `@NAME_END@` are kept only
    when NAME is in `sections` (sections may nest; a line is kept when every section around it
    is), less their markers; `tls` is the section TLS (the TLS listener of S9, S10, S12)."""
    enabled = set(sections) | ({"TLS"} if tls else set())
    lines, stack = [], []
    for line in (BENCH / template).read_text().splitlines(keepends=True):
        begin = re.search(r"@([A-Z0-9]+)_BEGIN@ ?", line)
        end = re.search(r"@([A-Z0-9]+)_END@", line)
        if begin:
            stack.append(begin.group(1))
            line = line[:begin.start()] + line[begin.end():]
        elif end:
            if not stack or stack[-1] != end.group(1):
                raise BenchError(f"{template}: {end.group(0)} without its BEGIN")
            stack.pop()
            continue
        if all(name in enabled for name in stack):
            lines.append(line)
    if stack:
        raise BenchError(f"{template}: @{stack[-1]}_BEGIN@ without its END")
    text = "".join(lines)
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = re.findall(r"@[A-Z_0-9]+@", text)
    if leftover:
        raise BenchError(f"{template}: unfilled {sorted(set(leftover))}")
    out.write_text(text)
    return out


def nginx_version():
    """nginx's version as a tuple, e.g. (1, 22, 1); (0,) when it cannot be read."""
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", sh("nginx -v"))
    return tuple(int(g) for g in m.groups()) if m else (0,)


def route_indices(routes):
    """S11: the routes a config with `routes` routes holds: always the one the request takes
    (the last, /r{S11_ROUTES - 1}/), and the ones before it when there are more."""
    return list(range(S11_ROUTES - routes, S11_ROUTES))


def with_routes(name, cfg, routes):
    """S11: rewrites a balancer's filled-in config (S1's, with its one catch-all) so that requests
    are routed by path prefix: `routes` routes /rI/, every one to the same two backends, in file
    order, the request's (/r99/) the last. No catch-all is left: a request no route takes is
    refused (alb 404, nginx 404, HAProxy 503), so wrk's non-2xx count shows a routing mistake.
    Returns the path of the new config, next to the old one."""
    text = cfg.read_text()
    indices = route_indices(routes)
    if name == "alb":
        # The top-level backends (the pool "default") become one named pool that every route
        # names: one pool, so health checks and balancing are the same with 1 or 100 routes.
        m = re.search(r"^backends = (\[.*\])\n", text, re.M)
        algo = re.search(r'^algorithm = "([^"]+)"', text, re.M)
        if not m or not algo:
            raise BenchError(f"{cfg}: no top-level backends or algorithm line to route to")
        text = text[:m.start()] + text[m.end():]
        text += (f"\n# S11: {routes} route(s) to one pool; the request takes the last.\n"
                 f"[pools.app]\nbackends = {m.group(1)}\nalgorithm = \"{algo.group(1)}\"\n")
        text += "".join(f'\n[[route]]\npath_prefix = "/r{i}/"\npool = "app"\n' for i in indices)
    elif name == "nginx":
        # The catch-all `location /` becomes one prefix location per route, each with its body
        # (comments left out). nginx finds prefix locations in a tree it builds at start-up.
        m = re.search(r"^( +)location / \{\n(.*?)^\1\}\n", text, re.M | re.S)
        if not m:
            raise BenchError(f"{cfg}: no `location / {{ ... }}` block to replace")
        indent = m.group(1)
        body = "".join(line for line in m.group(2).splitlines(keepends=True)
                       if not line.lstrip().startswith("#"))
        blocks = "".join(f"{indent}location /r{i}/ {{\n{body}{indent}}}\n" for i in indices)
        text = text[:m.start()] + blocks + text[m.end():]
    elif name == "haproxy":
        # `default_backend` becomes one `use_backend` per route, each with an anonymous ACL:
        # HAProxy evaluates them in order, a linear scan, as a config written this way gets.
        m = re.search(r"^( +)default_backend (\S+)\n", text, re.M)
        if not m:
            raise BenchError(f"{cfg}: no default_backend line to replace")
        indent, backend = m.group(1), m.group(2)
        lines = "".join(f"{indent}use_backend {backend} if {{ path_beg /r{i}/ }}\n"
                        for i in indices)
        text = text[:m.start()] + lines + text[m.end():]
    else:
        raise ValueError(name)
    out = cfg.with_name(f"{cfg.stem}-routes{routes}{cfg.suffix}")
    out.write_text(text)
    return out


class Balancer:
    def __init__(self, name, proc, cpu_pids, rss_pid, tls=False, h2=None):
        self.name = name
        self.proc = proc
        self.tls = tls  # also listens on TLS_PORT
        self.h2 = h2  # None, "tls" (S12) or "grpc" (S13): see start_lb
        self.cpu_pids = cpu_pids  # whose CPU time counts
        self.rss_pid = rss_pid  # whose memory counts (nginx: the worker)

    @property
    def h2c_port(self):
        """Where it takes h2c by prior knowledge (S12, S13): alb on its plain listener, the others
        on H2C_PORT."""
        return LB_PORT if self.name == "alb" else H2C_PORT


class Bench:
    def __init__(self, work):
        self.work = work
        self.procs = Processes(work)
        self.backends = []
        self.backend_specs = []  # (port, name, delay, body) of each backend, for kill_backend
        self.results = {}  # (scenario, metric, contender) -> number
        self.notes = []  # free-text remarks gathered on the way
        self.raw = {}  # scenario -> contender -> raw dict, for the JSON next to the table
        self.tls_files = None  # (cert, key, cert+key bundle) once make_certificate ran
        self.alb_no_tls = None  # why alb cannot run S9/S10, once its check refused [tls]
        self.alb_no_h2 = None  # why alb cannot run S12/S13, once its check refused [http2]

    def note(self, text):
        log("NOTE: " + text)
        self.notes.append(text)

    def put(self, scenario, metric, contender, value):
        self.results[(scenario, metric, contender)] = value

    def not_applicable(self, scenario, contender, text, why):
        """A contender that cannot run a scenario at all: `text` in its headline cell, "n/a" in
        its other rows, and a note saying why."""
        metrics = [m for s, m, _, better, _ in ROWS if s == scenario and better]
        if self.results.get((scenario, metrics[0], contender)) == text:
            return  # said once (S9 and S10 run in rounds)
        for i, metric in enumerate(metrics):
            self.put(scenario, metric, contender, text if i == 0 else "n/a")
        self.raw.setdefault(scenario, {})[contender] = text
        self.note(f"{scenario} {contender}: {text}: {why}")

    # -- backends ----------------------------------------------------------------------------

    def start_backends(self, delays=(0, 0), body=SMALL_BODY, names=("b1", "b2")):
        self.stop_backends()
        ensure_free(B1_PORT, B2_PORT)
        self.backend_specs = list(zip((B1_PORT, B2_PORT), names, delays, (body, body)))
        for spec in self.backend_specs:
            self.backends.append(self.spawn_backend(*spec))
        for (port, *_), proc in zip(self.backend_specs, self.backends):
            wait_http(port, "/__requests", proc, 10)

    def spawn_backend(self, port, name, delay, body):
        cmd = [ALB_BIN, "backend", "--port", port, "--name", name, "--body-bytes", body]
        if delay:
            cmd += ["--delay-ms", delay]
        return self.procs.spawn(f"backend-{name}", cmd, LOAD_CPU, env={"RUST_LOG": "warn"})

    def kill_backend(self, i, down):
        """SIGKILLs backend `i` (its connections are cut, nothing is drained), leaves its port
        closed for `down` seconds, restarts it there with the same arguments and returns once it
        answers again (bounded). Returns the seconds from the kill to the first answer."""
        port, name, delay, body = self.backend_specs[i]
        killed = time.monotonic()
        self.procs.stop(self.backends[i], sig=signal.SIGKILL)
        wait_free(port)
        time.sleep(down)
        self.backends[i] = self.spawn_backend(port, name, delay, body)
        wait_http(port, "/__requests", self.backends[i], 10)
        return time.monotonic() - killed

    def stop_backends(self):
        for proc in self.backends:
            self.procs.stop(proc)
        self.backends = []

    def counters(self):
        return [requests_served(B1_PORT), requests_served(B2_PORT)]

    # -- balancers ---------------------------------------------------------------------------

    def start_lb(self, name, callgrind_out=None, connections=1_024, algorithm="least_conn",
                 tls=False, routes=None, h2=None, access_log=None):
        """Starts a balancer sized for `connections` client connections (nginx and HAProxy
        preallocate per-connection structures for their limit, so it is not set sky-high). With
        `tls` it also terminates TLS on TLS_PORT with the run's certificate (S9, S10). With
        `routes` (S11) its config routes by path prefix instead (`with_routes`). With `h2`
        it also speaks HTTP/2 to clients: "tls" (S12) h2 by ALPN on TLS_PORT (`tls` is implied)
        and h2c on its h2c port, to the usual HTTP/1.1 backends; "grpc" (S13) h2c on its h2c
        port only, to backends spoken to over h2c (the gRPC backends). With `access_log` (S14)
        it logs every request to a file: "text" or "json" for alb (its two formats), anything
        for the peers (nginx's `combined` format, HAProxy's `option httplog`)."""
        tls = tls or h2 == "tls"
        h2c = [] if not h2 or name == "alb" else [H2C_PORT]
        ensure_free(LB_PORT, *([TLS_PORT] if tls else []), *h2c)
        check_inter = "1h" if callgrind_out else "5s"
        env = {}
        cert, key, bundle = self.tls_files if tls else ("-", "-", "-")
        tls_values = dict(TLS_PORT=TLS_PORT, CERT=cert, KEY=key, CERT_BUNDLE=bundle)
        # The template sections (`@NAME_BEGIN@` ... `@NAME_END@`) each mode keeps.
        sections = {"TLS"} if tls else set()
        if name == "alb":
            if h2:
                sections |= {"H2C"}
            cfg = fill("alb.toml", self.work / "alb.toml", sections=sections, LB_PORT=LB_PORT,
                       B1=B1_PORT, B2=B2_PORT, CHECK_INTER=check_inter, ALGORITHM=algorithm,
                       SCHEME="h2c" if h2 == "grpc" else "http",
                       ACCESS_LOG="true" if access_log else "false", **tls_values)
            if ALB_EXTRA:
                # Sections a run adds to alb's config (e.g. `[tracing]`, see BENCHMARKS.md).
                cfg.write_text(cfg.read_text() + "\n" + Path(ALB_EXTRA).read_text())
            if routes:
                cfg = with_routes(name, cfg, routes)
                self.alb_check(cfg, what=f"the config with {routes} route(s)")
            if tls and self.alb_no_tls:
                raise NoTls(self.alb_no_tls)
            if h2 and self.alb_no_h2:
                raise NoH2(self.alb_no_h2)
            if tls or h2:
                self.alb_check(cfg, what=f"the {'HTTP/2' if h2 else 'TLS'} config")
            cmd = [ALB_BIN, "run", "--config", cfg]
            env["RUST_LOG"] = "warn"
            if access_log:
                # Access lines are alb's logs at info (target alb::access), on stderr: to a file.
                cmd = [ALB_BIN, "--log-format", access_log, "run", "--config", cfg]
                env["RUST_LOG"] = "warn,alb::access=info"
        elif name == "nginx":
            # S12 and S13 use a server of their own (section H2), with its TLS listener (H2TLS)
            # where S9's is in the main server: the main server keeps S1's HTTP/1.1 port.
            if h2:
                sections = {"H2", "H2TLS", "H2HTTP"} if h2 == "tls" else {"H2", "GRPC"}
            old = nginx_version() < (1, 25, 1)  # `http2 on;` came with 1.25.1
            cfg = fill("nginx.conf", self.work / "nginx.conf", sections=sections,
                       LB_PORT=LB_PORT, B1=B1_PORT, B2=B2_PORT, DIR=self.work, NOFILE=FD_LIMIT,
                       WORKER_CONNECTIONS=min(FD_LIMIT - 100, connections + 1_000),
                       KEEPALIVE=NGINX_KEEPALIVE_H2 if h2 else NGINX_KEEPALIVE,
                       ACCESS_LOG=self.work / "nginx-access.log" if access_log else "off",
                       H2C_PORT=H2C_PORT, H2_PARAM=" http2" if old else "",
                       HTTP2_ON=("# (nginx before 1.25.1: the `http2` listen parameter above)"
                                 if old else "http2 on;"), **tls_values)
            if routes:
                cfg = with_routes(name, cfg, routes)
            master = "off" if callgrind_out else "on"
            cmd = ["nginx", "-p", self.work, "-c", cfg, "-g",
                   f"daemon off; master_process {master};"]
        elif name == "haproxy":
            if h2:
                sections |= {"H2C"}
            if access_log:
                sections |= {"LOG"}
            cfg = fill("haproxy.cfg", self.work / "haproxy.cfg", sections=sections,
                       LB_PORT=LB_PORT, B1=B1_PORT, B2=B2_PORT,
                       MAXCONN=min(HAPROXY_MAXCONN, connections), CHECK_INTER=check_inter,
                       H2C_PORT=H2C_PORT, TLS_ALPN=" alpn h2,http/1.1" if h2 == "tls" else "",
                       SERVER_PROTO=" proto h2" if h2 == "grpc" else "", **tls_values)
            if routes:
                cfg = with_routes(name, cfg, routes)
            cmd = ["haproxy", "-f", cfg, "-db"]
        else:
            raise ValueError(name)
        if callgrind_out:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind_out}"] + cmd
        proc = self.procs.spawn(name + ("-callgrind" if callgrind_out else ""), cmd, LB_CPU,
                                env=env)
        # With routes nothing takes `/`: poll the path the load asks for.
        wait_http(LB_PORT, S11_PATH if routes else "/", proc, 120 if callgrind_out else 15)
        if tls:
            wait_https(TLS_PORT, cert, proc, 15)
        if h2:
            wait_h2(LB_PORT if name == "alb" else H2C_PORT, None, proc, 15)
        if h2 == "tls":
            wait_h2(TLS_PORT, cert, proc, 15)
        pids = [proc.pid]
        rss_pid = proc.pid
        if name == "nginx" and not callgrind_out:
            deadline = time.monotonic() + 5
            while not children(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            workers = children(proc.pid)
            if len(workers) != 1:
                raise BenchError(f"nginx: expected one worker, found {workers}")
            pids += workers
            rss_pid = workers[0]
        return Balancer(name, proc, pids, rss_pid, tls=tls, h2=h2)

    def stop_lb(self, lb, timeout=10.0):
        code = self.procs.stop(lb.proc, timeout=timeout)
        wait_free(LB_PORT)
        if lb.tls:
            wait_free(TLS_PORT)
        if lb.h2 and lb.h2c_port != LB_PORT:
            wait_free(lb.h2c_port)
        return code

    def alb_check(self, cfg, what="the TLS config"):
        """`alb check` on a config with [tls]: NoTls when this build does not know the section
        (serde rejects the unknown field), NoH2 when it does not know [http2] or h2c://
        backends, BenchError for any other refusal (S11 checks its routed configs the same
        way)."""
        try:
            out = subprocess.run([str(ALB_BIN), "check", "--config", str(cfg)],
                                 capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired as e:
            raise BenchError("alb check ran past 30 s") from e
        text = (out.stdout + out.stderr).strip()
        with open(self.work / "alb-check.log", "a") as f:
            f.write(f"$ {ALB_BIN} check --config {cfg}\n{text}\nexit {out.returncode}\n")
        if out.returncode == 0:
            return
        if re.search(r"unknown field `tls`", text):
            self.alb_no_tls = (f"`alb check` refused the [tls] section (exit {out.returncode}: "
                               f"unknown field `tls`; see alb-check.log in the work dir)")
            raise NoTls(self.alb_no_tls)
        if re.search(r"unknown field `http2`|scheme \"h2c\" is not supported", text):
            self.alb_no_h2 = (f"`alb check` refused the [http2] section or h2c:// backends (exit "
                              f"{out.returncode}; see alb-check.log in the work dir)")
            raise NoH2(self.alb_no_h2)
        raise BenchError(f"alb check refused {what} (exit {out.returncode}): {text[-500:]}")

    def make_certificate(self):
        """One self-signed ECDSA P-256 certificate for the run (SAN 127.0.0.1 and localhost),
        shared by every balancer: site.pem (the chain: just the leaf), site.key (PKCS#8), and
        site-bundle.pem (both in one file, as HAProxy's `crt` wants)."""
        if self.tls_files:
            return self.tls_files
        cert, key, bundle = (self.work / n for n in ("site.pem", "site.key", "site-bundle.pem"))
        cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
               "-days", "2", "-subj", "/CN=localhost", "-addext",
               "subjectAltName=IP:127.0.0.1,DNS:localhost"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise BenchError(f"openssl req exited {out.returncode}: {out.stderr.strip()[-500:]}")
        bundle.write_text(cert.read_text() + key.read_text())
        key.chmod(0o600)
        bundle.chmod(0o600)
        self.tls_files = (cert, key, bundle)
        log(f"certificate: {cert} (ECDSA P-256, SAN 127.0.0.1 and localhost)")
        return self.tls_files

    # -- load --------------------------------------------------------------------------------

    def wrk(self, port, connections, duration, latency=True, scheme="http", path="/"):
        out = run_tool(wrk_cmd(port, connections, duration, latency, scheme, path),
                       timeout=duration + 30)
        return parse_wrk(out)

    def load_run(self, scenario, contender, connections, lb=None, port=None, scheme="http",
                 path="/"):
        """Warm-up, then a timed wrk run with CPU, memory and backend counters read around it."""
        if port is None:
            port = B1_PORT if contender == "direct" else LB_PORT
        self.wrk(port, connections, WARMUP, latency=False, scheme=scheme, path=path)
        before = self.counters()
        cpu0 = cpu_ticks(lb.cpu_pids) if lb else None
        cores0 = core_times(LB_CPU), core_times(LOAD_CPU)
        res = self.wrk(port, connections, DURATION, scheme=scheme, path=path)
        cores1 = core_times(LB_CPU), core_times(LOAD_CPU)
        cpu1 = cpu_ticks(lb.cpu_pids) if lb else None
        res["lb_core_busy"] = busy_percent(cores0[0], cores1[0])
        res["load_core_busy"] = busy_percent(cores0[1], cores1[1])
        after = self.counters()
        res["served"] = [a - b for a, b in zip(after, before)]
        if lb:
            if lb.proc.poll() is not None:
                raise BenchError(f"{contender} died during {scenario}")
            res["cpu_s"] = (cpu1 - cpu0) / CLK_TCK
            res["cpu_us_per_req"] = (cpu1 - cpu0) / CLK_TCK * 1e6 / max(1, res["requests"])
            res["cpu_share"] = (cpu1 - cpu0) / CLK_TCK / res["seconds"]
            res["hwm_kib"] = status_kib(lb.rss_pid, "VmHWM")
            res["rss_kib"] = status_kib(lb.rss_pid, "VmRSS")
            if contender == "nginx":
                res["master_hwm_kib"] = status_kib(lb.proc.pid, "VmHWM")
        bad = res["non2xx"] + sum(res["socket_errors"].values())
        if bad:
            self.note(f"{scenario} {contender}: {res['non2xx']} non-2xx answers, socket errors "
                      f"{res['socket_errors']} out of {res['requests']} requests")
        if res["requests"] == 0:
            raise BenchError(f"{scenario} {contender}: wrk completed no request")
        served = sum(res["served"])
        if abs(served - res["requests"]) > max(0.02 * res["requests"], 2 * connections + 10):
            self.note(f"{scenario} {contender}: wrk counted {res['requests']} answers, the "
                      f"backends {served} requests")
        self.raw.setdefault(scenario, {})[contender] = res
        log(f"{scenario} {contender}: {res['rps']:,.0f} req/s, p99 {res['p99_ms']:.2f} ms"
            + (f", {res['cpu_us_per_req']:.1f} CPU us/req ({res['cpu_share']:.0%} of a core), "
               f"HWM {res['hwm_kib'] / 1024:.1f} MiB" if lb else "")
            + f", cores busy {res['lb_core_busy']:.0f}% / {res['load_core_busy']:.0f}%"
            + f", backends {res['served']}")
        return res

    def each_contender(self, scenario, contenders, fn, connections=1_024, tls=False, h2=None):
        for contender in contenders:
            lb = None
            try:
                if contender != "direct":
                    lb = self.start_lb(contender, connections=connections, tls=tls, h2=h2)
                fn(contender, lb)
            except NoTls as e:
                self.not_applicable(scenario, contender, NO_TLS, str(e))
            except NoH2 as e:
                self.not_applicable(scenario, contender, NO_H2, str(e))
            except BenchError as e:
                self.note(f"{scenario} {contender} FAILED: {e}")
            finally:
                if lb:
                    self.stop_lb(lb)

    # -- scenarios ---------------------------------------------------------------------------

    def s1(self):
        log(f"S1: {SMALL_BODY} B GETs, 64 connections, {DURATION} s each")
        self.start_backends(body=SMALL_BODY)

        def one(contender, lb):
            res = self.load_run("S1", contender, 64, lb)
            self.put("S1", "rps", contender, res["rps"])
            self.put("S1", "p50", contender, res["p50_ms"])
            self.put("S1", "lbcore", contender, res["lb_core_busy"])
            self.put("S1", "loadcore", contender, res["load_core_busy"])
            self.put("S1", "p99", contender, res["p99_ms"])
            if lb:
                self.put("S1", "cpu", contender, res["cpu_us_per_req"])
                self.put("S1", "rss", contender, res["hwm_kib"] / 1024)

        self.each_contender("S1", CONTENDERS, one)
        self.stop_backends()

    def s14(self):
        """S1's load with each balancer logging every request to a file: alb in its text and its
        JSON format, nginx in `combined`, HAProxy with `option httplog`. What the log costs is the
        req/s kept against S1 of the same run (log off); the lines written are counted once the
        balancer has stopped, against every request the backends served while it ran (warm-up
        included; health probes are served but not logged)."""
        log(f"S14: S1's load ({SMALL_BODY} B GETs, 64 connections) with access logs on")
        self.start_backends(body=SMALL_BODY)
        runs = [("alb", "text", ""), ("alb", "json", "_json"), ("nginx", "combined", ""),
                ("haproxy", "httplog", "")]
        for contender, log_format, suffix in runs:
            if contender not in CONTENDERS:
                continue
            log_file = {"alb": self.work / "alb.log", "haproxy": self.work / "haproxy.log",
                        "nginx": self.work / "nginx-access.log"}[contender]
            before = count_lines(log_file)
            served_before = sum(self.counters())
            lb = None
            try:
                lb = self.start_lb(contender, access_log=log_format)
                res = self.load_run("S14", contender + suffix, 64, lb)
                self.stop_lb(lb)
                lb = None
                answered = sum(self.counters()) - served_before
                self.put("S14", "rps" + suffix, contender, res["rps"])
                self.put("S14", "cpu" + suffix, contender, res["cpu_us_per_req"])
                s1 = self.results.get(("S1", "rps", contender))
                if isinstance(s1, (int, float)) and s1 > 0:
                    self.put("S14", "kept" + suffix, contender, 100 * res["rps"] / s1)
                written = count_lines(log_file) - before
                self.put("S14", "lines" + suffix, contender, written / max(1, answered))
                log(f"S14 {contender}{suffix}: {written:,} log lines for {answered:,} requests "
                    f"the backends served while it ran")
                if written < 0.999 * answered:
                    self.note(f"S14 {contender}{suffix}: {written:,} log lines for {answered:,} "
                              f"requests served: lines were lost")
            except BenchError as e:
                self.note(f"S14 {contender}{suffix} FAILED: {e}")
            finally:
                if lb:
                    self.stop_lb(lb)
        self.stop_backends()

    def s3(self):
        log(f"S3: uneven backends (1 ms and 20 ms), 64 connections, {DURATION} s each")
        self.start_backends(delays=(1, 20), body=SMALL_BODY, names=("fast", "slow"))

        def one(contender, lb):
            res = self.load_run("S3", contender, 64, lb)
            fast, slow = res["served"]
            self.put("S3", "rps", contender, res["rps"])
            self.put("S3", "p99", contender, res["p99_ms"])
            if fast + slow:
                self.put("S3", "fast", contender, 100.0 * fast / (fast + slow))
                self.put("S3", "slow", contender, 100.0 * slow / (fast + slow))

        self.each_contender("S3", LBS, one)
        # alb once more with its latency-aware algorithm, beside the peers' least-connections.
        if "alb" in LBS:
            lb = None
            try:
                lb = self.start_lb("alb", algorithm="least_time")
                res = self.load_run("S3", "alb", 64, lb)
                fast, slow = res["served"]
                self.put("S3", "rps_lt", "alb", res["rps"])
                self.put("S3", "p99_lt", "alb", res["p99_ms"])
                if fast + slow:
                    self.put("S3", "fast_lt", "alb", 100.0 * fast / (fast + slow))
            except BenchError as e:
                self.note(f"S3 alb least_time FAILED: {e}")
            finally:
                if lb:
                    self.stop_lb(lb)
            for peer in ("nginx", "haproxy"):
                for metric in ("rps", "p99", "fast"):
                    value = self.results.get(("S3", metric, peer))
                    if value is not None:
                        self.put("S3", metric + "_lt", peer, value)
        self.stop_backends()

    def s4(self):
        log(f"S4: 1 MiB answers, 16 connections, {DURATION} s each")
        self.start_backends(body=LARGE_BODY)

        def one(contender, lb):
            res = self.load_run("S4", contender, 16, lb)
            self.put("S4", "mibs", contender, res["read_bytes"] / res["seconds"] / (1 << 20))
            self.put("S4", "lbcore", contender, res["lb_core_busy"])
            self.put("S4", "loadcore", contender, res["load_core_busy"])
            if lb:
                self.put("S4", "cpu", contender, res["cpu_us_per_req"])
                self.put("S4", "rss", contender, res["hwm_kib"] / 1024)

        self.each_contender("S4", CONTENDERS, one)
        self.stop_backends()

    def s5(self):
        n = S5_CONNECTIONS
        log(f"S5: {n:,} idle keep-alive client connections")
        if n != 10_000 and not QUICK:
            self.note(f"S5 used {n:,} connections, not 10,000: the fd hard limit here is "
                      f"{FD_HARD}, and HAProxy needs two fds per connection (maxconn "
                      f"{HAPROXY_MAXCONN})")
        self.start_backends(body=SMALL_BODY)

        def one(contender, lb):
            # Warm the balancer as S1 does, so that the baseline holds its steady-state buffers.
            self.wrk(LB_PORT, 64, WARMUP, latency=False)
            time.sleep(0.3)
            res = self.idle_rss(
                "S5", contender, lb, f"s5-client-{contender}",
                [sys.executable, BENCH / "idle_clients.py", "--port", LB_PORT, "--count", n,
                 "--deadline", 90, "--hold", 60], n)
            self.raw.setdefault("S5", {})[contender] = res
            self.put("S5", "per_conn", contender, res["kib_per_connection"])
            self.put("S5", "rss_open", contender, res["rss_open_kib"] / 1024)

        self.each_contender("S5", LBS, one, connections=n + 100)
        self.stop_backends()

    def idle_rss(self, scenario, contender, lb, name, cmd, n):
        """S5 and S12: the balancer's VmRSS before, and with `n` idle client connections open
        (`cmd`: idle_clients.py or h2_clients.py, which print READY once every connection had
        its answer, then hold them until told to close). Returns the figures, KiB per
        connection included; failures and connections the balancer closed meanwhile are noted."""
        before = status_kib(lb.rss_pid, "VmRSS")
        client = self.procs.spawn(name, cmd, LOAD_CPU, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        try:
            line = read_line(client, timeout=100)
            if not line.startswith("READY"):
                raise BenchError(f"idle client: {line!r}; see {client.bench_log}")
            _, opened, failed, took = line.split()
            opened, failed = int(opened), int(failed)
            time.sleep(1.0)  # let the balancer settle (lazy frees, timers)
            with_open = status_kib(lb.rss_pid, "VmRSS")
            hwm = status_kib(lb.rss_pid, "VmHWM")
            client.stdin.write(b"close\n")
            client.stdin.flush()
            still = read_line(client, timeout=30)
            still_open = int(still.split()[1]) if still.startswith("STILL_OPEN") else -1
            read_line(client, timeout=30)
        finally:
            self.procs.stop(client)
        what = f"{scenario} {contender}" + (f" ({name})" if scenario != "S5" else "")
        if failed:
            self.note(f"{what}: {failed} of {n} connections failed to open or answer "
                      f"(see {client.bench_log})")
        if still_open != opened:
            self.note(f"{what}: only {still_open} of {opened} connections were still "
                      f"open when measured")
        if opened == 0:
            raise BenchError("no connection opened")
        per = (with_open - before) / opened
        log(f"{what}: RSS {before / 1024:.1f} -> {with_open / 1024:.1f} MiB with "
            f"{opened:,} open ({took}): {per:.2f} KiB each")
        return {"connections": opened, "failed": failed, "open_took": took,
                "rss_before_kib": before, "rss_open_kib": with_open, "hwm_kib": hwm,
                "still_open": still_open, "kib_per_connection": per}

    def s2(self):
        n1, n2 = S2_COUNTS
        log(f"S2: instructions per request under callgrind, {n1:,} and {n2:,} requests "
            f"({S2_CONCURRENCY} connections)")
        self.start_backends(body=SMALL_BODY)
        for contender in LBS:
            try:
                irs = []
                for n in (n1, n2):
                    irs.append(self.callgrind_run(contender, n))
                per = (irs[1] - irs[0]) / (n2 - n1)
                self.raw.setdefault("S2", {})[contender] = {
                    "counts": [n1, n2], "ir": irs, "ir_per_request": per}
                log(f"S2 {contender}: Ir {irs[0]:,} / {irs[1]:,} -> {per:,.0f} per request")
                self.put("S2", "ir", contender, per)
            except BenchError as e:
                self.note(f"S2 {contender} FAILED: {e}")
        self.stop_backends()

    def callgrind_run(self, contender, n, routes=None, scenario="S2"):
        """Total Ir of one balancer process under callgrind that served `n` requests (hey, keep-
        alive); with `routes` (S11) its routed config, on S11's path."""
        tag = f".routes{routes}" if routes else ""
        out = self.work / f"callgrind.{contender}{tag}.{n}.out"
        if out.exists():
            out.unlink()
        started = time.monotonic()
        lb = self.start_lb(contender, callgrind_out=out, routes=routes)
        t_up = time.monotonic()
        path = S11_PATH if routes else "/"
        try:
            text = run_tool(["hey", "-n", n, "-c", S2_CONCURRENCY, "-t", 60,
                             f"http://127.0.0.1:{LB_PORT}{path}"], timeout=300)
        except BenchError:
            self.stop_lb(lb, timeout=60)
            raise
        ok = sum(int(m) for m in re.findall(r"\[200\]\s+(\d+) responses", text))
        if ok != n // S2_CONCURRENCY * S2_CONCURRENCY:  # hey sends n / c per connection
            (self.work / f"hey.{contender}{tag}.{n}.txt").write_text(text)
            self.stop_lb(lb, timeout=60)
            raise BenchError(f"hey: {ok} of {n} requests answered 200 (see work dir)")
        t_load = time.monotonic()
        # Under valgrind a signal can sit pending while the process sleeps in epoll_wait (seen with
        # nginx: a 60 s wait, until its next timer). Repeat it and poke the port to wake it up;
        # SIGKILL would lose the callgrind file.
        deadline = time.monotonic() + 120
        while lb.proc.poll() is None and time.monotonic() < deadline:
            try:
                os.killpg(lb.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
            try:
                lb.proc.wait(2)
            except subprocess.TimeoutExpired:
                port_open(LB_PORT)
        code = self.stop_lb(lb, timeout=10)
        t_down = time.monotonic()
        if not out.exists():
            raise BenchError(f"callgrind wrote no {out.name} (exit {code})")
        ir = callgrind_total(out)
        log(f"{scenario} {contender}{tag} n={n:,}: Ir {ir:,} (start {t_up - started:.0f} s, load "
            f"{t_load - t_up:.0f} s, stop {t_down - t_load:.0f} s)")
        return ir

    def s6(self):
        log("S6: criterion, picking a backend among 10, 1,000 and 10,000 (benches/select.rs), "
            "and finding the route among 1 to 1,000 (benches/routes.rs)")
        base = TARGET / "criterion"
        for bench_name, env_var in (("select", "BENCH_SELECT_EXE"), ("routes", "BENCH_ROUTES_EXE")):
            exe = os.environ.get(env_var, "")
            if exe and not os.path.isabs(exe):
                exe = str(ROOT / exe)
            if exe and os.path.exists(exe):
                cmd = ["taskset", "-c", LB_CPU, exe, "--bench"]
            else:
                cmd = ["taskset", "-c", LB_CPU, "cargo", "bench", "--quiet", "--bench",
                       bench_name, "--"]
            if QUICK:
                cmd += ["--warm-up-time", "0.1", "--measurement-time", "0.3"]
            started = time.time()
            with open(self.work / "criterion.log", "a") as f:
                f.write(f"$ {' '.join(cmd)}\n")
                f.flush()
                try:
                    code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                          env={**os.environ, "CRITERION_HOME": str(base)},
                                          timeout=300).returncode
                except subprocess.TimeoutExpired:
                    self.note(f"S6 FAILED: the {bench_name} bench ran past 300 s")
                    continue
            if code != 0:
                self.note(f"S6 FAILED: the {bench_name} bench exited {code}; see "
                          f"{self.work / 'criterion.log'}")
                continue
            for group, key, sizes in S6_CASES:
                if group.startswith("route_") != (bench_name == "routes"):
                    continue
                for size in sizes:
                    est = base / group / str(size) / "new" / "estimates.json"
                    if not est.exists() or est.stat().st_mtime < started - 1:
                        self.note(f"S6: no fresh {est}")
                        continue
                    ns = json.loads(est.read_text())["mean"]["point_estimate"]
                    self.put("S6", f"{key}/{size}", "alb", ns)
                    self.raw.setdefault("S6", {})[f"{key}/{size}"] = ns

    def s7(self):
        log(f"S7: a backend dying under load: {S7_CONNECTIONS} connections for {S7_DURATION} s, "
            f"b2 SIGKILLed every {S7_INTERVAL} s ({S7_KILLS} times), down {S7_DOWN} s each")
        self.start_backends(body=SMALL_BODY)

        def one(contender, lb):
            try:
                self.counters()
            except (OSError, BenchError):  # a failed restart in the previous contender's run
                self.start_backends(body=SMALL_BODY)
            self.wrk(LB_PORT, S7_CONNECTIONS, WARMUP, latency=False)
            logs = lb_logs(self.work, contender)
            log_sizes = [p.stat().st_size if p.exists() else 0 for p in logs]
            b1_before, b2_base = self.counters()
            b2_lives = []  # requests each life of b2 served (its counter restarts at 0)
            load = self.procs.spawn(f"s7-wrk-{contender}",
                                    wrk_cmd(LB_PORT, S7_CONNECTIONS, S7_DURATION), LOAD_CPU,
                                    stdout=subprocess.PIPE)
            started = time.monotonic()
            kills = []  # (seconds into the run, seconds from the kill to the first answer)
            recent = []  # requests b2 served in the S7_LOOKBACK seconds before each kill
            try:
                for k in range(1, S7_KILLS + 1):
                    kill_at = started + k * S7_INTERVAL
                    time.sleep(max(0.0, kill_at - S7_LOOKBACK - time.monotonic()))
                    mark = requests_served(B2_PORT)
                    time.sleep(max(0.0, kill_at - time.monotonic()))
                    if load.poll() is not None:
                        break
                    at = time.monotonic() - started
                    served = requests_served(B2_PORT)
                    recent.append(served - mark)
                    b2_lives.append(served - b2_base)
                    b2_base = 0
                    kills.append((round(at, 2), round(self.kill_backend(1, S7_DOWN), 2)))
                try:
                    load.wait(max(1.0, started + S7_DURATION + 30 - time.monotonic()))
                except subprocess.TimeoutExpired as e:
                    raise BenchError(f"wrk ran past its {S7_DURATION + 30} s timeout") from e
                out = load.stdout.read().decode()
            finally:
                self.procs.stop(load)
                load.stdout.close()
            with open(load.bench_log, "a") as f:
                f.write(out)
            if load.returncode != 0:
                raise BenchError(f"wrk exited {load.returncode}; see {load.bench_log}")
            if lb.proc.poll() is not None:
                raise BenchError(f"{contender} died during S7")
            b1_after, b2_after = self.counters()
            b2_lives.append(b2_after - b2_base)
            b1, b2 = b1_after - b1_before, sum(b2_lives)
            res = parse_wrk(out)
            if res["requests"] == 0:
                raise BenchError("wrk completed no request")
            errors = res["socket_errors"]
            failed = res["non2xx"] + sum(errors.values())
            # wrk's count includes the non-2xx answers; a read, write or connect error is a
            # request that got no answer at all. Timeouts are not added: wrk counts a late answer
            # as completed (and may count a hung connection more than once).
            attempts = res["requests"] + sum(
                n for kind, n in errors.items() if kind != "timeout")
            res["failed"] = failed
            res["failed_pct"] = 100.0 * failed / attempts
            res["kills"] = kills
            res["served"] = [b1, b2]
            res["b2_lives"] = b2_lives
            res["b2_before_kills"] = recent
            hits = sum(n >= S7_IN_USE for n in recent)
            res["lb_log_lines"] = sum(
                len(p.read_bytes()[size:].splitlines()) for p, size in zip(logs, log_sizes)
                if p.exists())
            self.raw.setdefault("S7", {})[contender] = res
            self.put("S7", "requests", contender, res["requests"])
            self.put("S7", "failed", contender, failed)
            self.put("S7", "failed_pct", contender, res["failed_pct"])
            self.put("S7", "rps", contender, res["rps"])
            self.put("S7", "p99", contender, res["p99_ms"])
            if b1 + b2:
                self.put("S7", "killed_share", contender, 100.0 * b2 / (b1 + b2))
            self.put("S7", "hits", contender, hits)
            if len(kills) != S7_KILLS:
                self.note(f"S7 {contender}: {len(kills)} kills, not {S7_KILLS} (wrk ended early)")
            if failed:
                self.note(f"S7 {contender}: {failed} failed requests ({res['non2xx']} non-2xx "
                          f"answers, socket errors {errors}) out of {attempts}; its log got "
                          f"{res['lb_log_lines']} lines during the run "
                          f"({', '.join(p.name for p in logs)} in the work dir)")
            log(f"S7 {contender}: {res['requests']:,} requests, {failed} failed "
                f"({res['failed_pct']:.3f} %), {res['rps']:,.0f} req/s, p99 "
                f"{res['p99_ms']:.2f} ms; kills (at s, back after s) {kills}; b1 served {b1:,}, "
                f"b2 {b2:,} (per life {b2_lives}; in the {S7_LOOKBACK} s before each kill "
                f"{recent}: {hits} kills hit traffic); {res['lb_log_lines']} log lines")

        self.each_contender("S7", LBS, one)
        self.stop_backends()

    # -- S8: WebSocket ---------------------------------------------------------------------------

    def start_ws_backends(self):
        """The two backends as ws_bench echo servers (plain requests, health checks included,
        get `200 ok`; `/__stats` has their counters)."""
        self.stop_backends()
        ensure_free(B1_PORT, B2_PORT)
        self.backend_specs = []
        for port, name in ((B1_PORT, "b1"), (B2_PORT, "b2")):
            self.backends.append(self.procs.spawn(f"ws-backend-{name}",
                                                  [WS_BIN, "server", port], LOAD_CPU))
        for port, proc in zip((B1_PORT, B2_PORT), self.backends):
            wait_http(port, "/__requests", proc, 10)

    def ws_stats(self):
        stats = []
        for port in (B1_PORT, B2_PORT):
            status, body = http_get(port, "/__stats")
            if status != 200:
                raise BenchError(f"ws backend {port}: /__stats answered {status}")
            stats.append(json.loads(body))
        return stats

    def ws_client(self, port, duration, name):
        """One ws_bench client run on the load core; returns its JSON figures."""
        cmd = ["taskset", "-c", LOAD_CPU, WS_BIN, "client", f"ws://127.0.0.1:{port}/ws",
               S8_CONNECTIONS, duration, S8_SIZE]
        cmd = [str(c) for c in cmd]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"ws_bench client ran past its {duration + 60} s timeout") from e
        with open(self.work / f"s8-client-{name}.log", "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out.stdout}{out.stderr}")
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise BenchError(f"ws_bench client exited {out.returncode} with no figures: "
                             f"{out.stderr.strip()[-500:]}")
        return json.loads(lines[-1])

    def s8(self):
        log(f"S8: WebSocket echo, {S8_CONNECTIONS} connections, {S8_SIZE} B messages, "
            f"{DURATION} s each")
        if not WS_BIN.exists():
            raise BenchError(f"{WS_BIN} missing: run bench/run.sh (it builds "
                             f"examples/ws_bench.rs when S8 is selected)")
        self.start_ws_backends()

        def one(contender, lb):
            port = B1_PORT if contender == "direct" else LB_PORT
            warm = self.ws_client(port, WARMUP, contender)
            if warm["messages"] == 0:
                raise BenchError(f"warm-up echoed nothing: {warm}")
            logs = lb_logs(self.work, contender) if lb else []
            log_sizes = [p.stat().st_size if p.exists() else 0 for p in logs]
            before = self.ws_stats()
            cpu0 = cpu_ticks(lb.cpu_pids) if lb else None
            cores0 = core_times(LB_CPU), core_times(LOAD_CPU)
            res = self.ws_client(port, DURATION, contender)
            cores1 = core_times(LB_CPU), core_times(LOAD_CPU)
            cpu1 = cpu_ticks(lb.cpu_pids) if lb else None
            # The client has closed every connection: the backends should see them all closed.
            deadline = time.monotonic() + S8_CLOSE_WAIT
            after = self.ws_stats()
            while sum(s["open"] for s in after) and time.monotonic() < deadline:
                time.sleep(0.1)
                after = self.ws_stats()
            res["backends_open_after"] = [s["open"] for s in after]
            res["lb_core_busy"] = busy_percent(cores0[0], cores1[0])
            res["load_core_busy"] = busy_percent(cores0[1], cores1[1])
            res["served"] = [a["messages"] - b["messages"] for a, b in zip(after, before)]
            res["upgrades"] = [a["upgrades"] - b["upgrades"] for a, b in zip(after, before)]
            res["backend_ws_errors"] = sum(a["ws_errors"] - b["ws_errors"]
                                           for a, b in zip(after, before))
            res["lb_log_lines"] = sum(
                len(p.read_bytes()[size:].splitlines()) for p, size in zip(logs, log_sizes)
                if p.exists())
            if lb:
                if lb.proc.poll() is not None:
                    raise BenchError(f"{contender} died during S8")
                res["cpu_s"] = (cpu1 - cpu0) / CLK_TCK
                res["cpu_us_per_msg"] = (cpu1 - cpu0) / CLK_TCK * 1e6 / max(1, res["messages"])
                res["cpu_share"] = (cpu1 - cpu0) / CLK_TCK / res["seconds"]
                res["hwm_kib"] = status_kib(lb.rss_pid, "VmHWM")
            self.raw.setdefault("S8", {})[contender] = res
            if res["errors"]:
                self.note(f"S8 {contender}: {res['errors']} client errors {res['error_kinds']} "
                          f"({res['messages']:,} messages echoed; see s8-client-{contender}.log)")
            if res["backend_ws_errors"]:
                self.note(f"S8 {contender}: the backends saw {res['backend_ws_errors']} WebSocket "
                          f"connections end in an error rather than a close")
            if any(res["backends_open_after"]):
                self.note(f"S8 {contender}: {res['backends_open_after']} WebSocket connections "
                          f"still open at the backends {S8_CLOSE_WAIT:.0f} s after the client "
                          f"closed all of its")
            if sum(res["upgrades"]) != S8_CONNECTIONS:
                self.note(f"S8 {contender}: the backends accepted {res['upgrades']} WebSocket "
                          f"connections for the client's {S8_CONNECTIONS}")
            if sum(res["served"]) != res["messages"]:
                self.note(f"S8 {contender}: the client counted {res['messages']:,} echoes, the "
                          f"backends {sum(res['served']):,} ({res['served']})")
            if res["messages"] == 0:
                raise BenchError("no message echoed")
            self.put("S8", "mps", contender, res["msgs_per_s"])
            self.put("S8", "p50", contender, res["p50_ms"])
            self.put("S8", "p99", contender, res["p99_ms"])
            self.put("S8", "lbcore", contender, res["lb_core_busy"])
            self.put("S8", "loadcore", contender, res["load_core_busy"])
            if lb:
                self.put("S8", "cpu", contender, res["cpu_us_per_msg"])
                self.put("S8", "lbshare", contender, 100.0 * res["cpu_share"])
                self.put("S8", "rss", contender, res["hwm_kib"] / 1024)
            log(f"S8 {contender}: {res['msgs_per_s']:,.0f} messages/s, p50 {res['p50_ms']:.2f} "
                f"ms, p99 {res['p99_ms']:.2f} ms, max {res['max_ms']:.1f} ms"
                + (f", {res['cpu_us_per_msg']:.1f} CPU us/message ({res['cpu_share']:.0%} of a "
                   f"core), HWM {res['hwm_kib'] / 1024:.1f} MiB" if lb else "")
                + f", cores busy {res['lb_core_busy']:.0f}% / {res['load_core_busy']:.0f}%"
                + f", backends {res['served']} messages, {res['upgrades']} connections, "
                f"{res['errors']} errors, {res['lb_log_lines']} LB log lines")

        self.each_contender("S8", CONTENDERS, one)
        self.stop_backends()

    # -- S9, S10: TLS termination ----------------------------------------------------------------

    def tls_probe(self, scenario, contender):
        """What a default OpenSSL client negotiates with this balancer (version, cipher, key
        exchange group, signature), and whether TLS 1.2 alone is accepted too; one short
        `openssl s_client` each, logged and kept in results.json."""
        found = {}
        for label, extra in (("default", []), ("tls1.2", ["-tls1_2"])):
            cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{TLS_PORT}", "-brief"] + extra
            try:
                out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                     text=True, timeout=10)
                text = out.stdout + out.stderr
            except subprocess.TimeoutExpired:
                text = "timed out"
            fields = dict(re.findall(r"^(Protocol version|Ciphersuite|Signature type|"
                                     r"(?:Server|Peer) Temp Key|Negotiated TLS1\.3 group):"
                                     r"\s*(.+)$", text, re.M))
            found[label] = {k: v.strip() for k, v in fields.items()} or text.strip()[-300:]
        self.raw.setdefault(scenario + "-tls", {})[contender] = found
        log(f"{scenario} {contender} negotiates: {found}")
        return found

    def check_negotiated(self, scenario):
        """A note when the balancers did not all negotiate the same parameters."""
        probes = self.raw.get(scenario + "-tls", {})
        seen = {json.dumps(v, sort_keys=True) for v in probes.values()}
        if len(seen) > 1:
            self.note(f"{scenario}: the balancers negotiated different TLS parameters with "
                      f"openssl s_client: " + "; ".join(f"{c}: {v}" for c, v in probes.items()))

    def s9(self):
        log(f"S9: {SMALL_BODY} B GETs over TLS keep-alive, {S9_CONNECTIONS} connections, "
            f"{DURATION} s each, after the same load in plain HTTP")
        self.make_certificate()
        self.start_backends(body=SMALL_BODY)

        def one(contender, lb):
            # Plain HTTP first, from the same process: the TLS cost per request is the
            # difference of two runs back to back, which moves less than either run.
            plain = self.load_run("S9-plain", contender, S9_CONNECTIONS, lb)
            if not lb:  # direct: the backends speak plain HTTP only
                return {"plain_rps": plain["rps"], "lbcore": plain["lb_core_busy"],
                        "loadcore": plain["load_core_busy"]}
            self.tls_probe("S9", contender)
            res = self.load_run("S9", contender, S9_CONNECTIONS, lb, port=TLS_PORT,
                                scheme="https")
            return {
                "rps": res["rps"], "p50": res["p50_ms"], "p99": res["p99_ms"],
                "cpu": res["cpu_us_per_req"], "plain_rps": plain["rps"],
                "plain_cpu": plain["cpu_us_per_req"],
                "tls_cpu": res["cpu_us_per_req"] - plain["cpu_us_per_req"],
                "lbcore": res["lb_core_busy"], "loadcore": res["load_core_busy"],
                "rss": res["hwm_kib"] / 1024,
            }

        self.rounds("S9", CONTENDERS, one, ("rps", "cpu", "tls_cpu"), tls=True)
        self.check_negotiated("S9")
        self.stop_backends()

    def rounds(self, scenario, contenders, one, spread_of, count=TLS_ROUNDS, **start):
        """`count` rounds of `one(contender, lb)` (which returns {metric: value}) over every
        contender, each balancer started fresh (`start`: start_lb's tls, h2); the order of the
        balancers rotates from round to round (direct stays first). Puts each figure's median in
        the table and notes the per-round values of the metrics in `spread_of`."""
        samples = {}  # contender -> metric -> [value of each round]
        lbs = [c for c in contenders if c != "direct"]
        for r in range(count):
            k = r % max(1, len(lbs))
            order = [c for c in contenders if c == "direct"] + lbs[k:] + lbs[:k]
            log(f"{scenario} round {r + 1} of {count}: {', '.join(order)}")

            def collect(contender, lb):
                for metric, value in one(contender, lb).items():
                    samples.setdefault(contender, {}).setdefault(metric, []).append(value)

            self.each_contender(scenario, order, collect, **start)
        for contender, metrics in samples.items():
            for metric, values in metrics.items():
                self.put(scenario, metric, contender, statistics.median(values))
        self.raw.setdefault(scenario + "-rounds", {}).update(samples)
        if count > 1:
            labels = {m: label.split(": ", 1)[-1] for s, m, label, _, _ in ROWS if s == scenario}
            parts = []
            for metric in spread_of:
                per = [f"{c} " + " / ".join(f"{v:,.1f}" for v in samples[c][metric])
                       for c in contenders if metric in samples.get(c, {})]
                if per:
                    parts.append(f"{labels[metric]}: " + "; ".join(per))
            if parts:
                self.note(f"{scenario}, each of the {count} rounds (the table has the "
                          f"medians): " + ". ".join(parts))

    def s_time(self, name, clients, seconds):
        """`clients` openssl s_time -new processes on the load core for `seconds`, at once.
        Returns (connections, bytes read, wall seconds from the first start to the last exit)."""
        procs, outs = [], []
        started = time.monotonic()
        try:
            for i in range(clients):
                out = self.work / f"{name}.{i}.out"
                f = open(out, "wb")
                outs.append(out)
                procs.append(self.procs.spawn(
                    f"{name}.{i}",
                    ["openssl", "s_time", "-connect", f"127.0.0.1:{TLS_PORT}", "-new",
                     "-time", seconds, "-www", "/"], LOAD_CPU, stdout=f))
                f.close()
            deadline = started + seconds + 30
            for proc in procs:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired as e:
                    raise BenchError(f"openssl s_time ran past its {seconds + 30} s "
                                     f"timeout") from e
            wall = time.monotonic() - started
        finally:
            for proc in procs:
                self.procs.stop(proc, timeout=2.0)
        connections = read = 0
        for proc, out in zip(procs, outs):
            text = out.read_text(errors="replace")
            m = re.search(r"(\d+) connections in [\d.]+s; [\d.]+ connections/user sec, bytes "
                          r"read (\d+)", text)
            if proc.returncode != 0 or not m:
                raise BenchError(f"openssl s_time exited {proc.returncode}: "
                                 f"{text.strip()[-300:]!r}; see {proc.bench_log}")
            connections += int(m.group(1))
            read += int(m.group(2))
        return connections, read, wall

    def s10(self):
        log(f"S10: TLS handshakes, a new connection per request: {S10_CLIENTS} openssl s_time "
            f"-new clients, {DURATION} s each")
        self.make_certificate()
        self.start_backends(body=SMALL_BODY)

        def one(contender, lb):
            self.tls_probe("S10", contender)
            self.s_time(f"s10-warm-{contender}", S10_CLIENTS, WARMUP)
            before = self.counters()
            cpu0 = cpu_ticks(lb.cpu_pids)
            cores0 = core_times(LB_CPU), core_times(LOAD_CPU)
            handshakes, read, wall = self.s_time(f"s10-{contender}", S10_CLIENTS, DURATION)
            cores1 = core_times(LB_CPU), core_times(LOAD_CPU)
            cpu1 = cpu_ticks(lb.cpu_pids)
            after = self.counters()
            if lb.proc.poll() is not None:
                raise BenchError(f"{contender} died during S10")
            if handshakes == 0:
                raise BenchError("no handshake completed")
            cpu_s = (cpu1 - cpu0) / CLK_TCK
            res = {
                "handshakes": handshakes, "seconds": wall, "hps": handshakes / wall,
                "bytes_per_connection": read / handshakes, "cpu_s": cpu_s,
                "cpu_us_per_handshake": cpu_s * 1e6 / handshakes,
                "handshakes_per_cpu_s": handshakes / cpu_s if cpu_s else None,
                "cpu_share": cpu_s / wall,
                "lb_core_busy": busy_percent(cores0[0], cores1[0]),
                "load_core_busy": busy_percent(cores0[1], cores1[1]),
                "served": [a - b for a, b in zip(after, before)],
                "hwm_kib": status_kib(lb.rss_pid, "VmHWM"),
            }
            self.raw.setdefault("S10", {})[contender] = res
            served = sum(res["served"])
            if abs(served - handshakes) > max(0.02 * handshakes, S10_CLIENTS + 10):
                self.note(f"S10 {contender}: s_time counted {handshakes:,} connections, the "
                          f"backends {served:,} requests")
            # An answer is a status line, headers and the 100 B body: s_time reads what the
            # balancer sends until it closes. Less than the body means errors or empty closes.
            if res["bytes_per_connection"] < SMALL_BODY:
                self.note(f"S10 {contender}: only {res['bytes_per_connection']:.0f} bytes read per "
                          f"connection: answers missing (see {contender}.log)")
            log(f"S10 {contender}: {handshakes:,} handshakes in {wall:.1f} s = "
                f"{res['hps']:,.0f}/s, "
                f"{res['cpu_us_per_handshake']:.0f} CPU us/handshake ({res['cpu_share']:.0%} of a "
                f"core), {res['bytes_per_connection']:.0f} B read per connection, cores busy "
                f"{res['lb_core_busy']:.0f}% / {res['load_core_busy']:.0f}%, backends "
                f"{res['served']}, HWM {res['hwm_kib'] / 1024:.1f} MiB")
            return {
                "hps": res["hps"], "cpu": res["cpu_us_per_handshake"],
                "per_cpu_s": res["handshakes_per_cpu_s"], "lbshare": 100.0 * res["cpu_share"],
                "lbcore": res["lb_core_busy"], "loadcore": res["load_core_busy"],
                "rss": res["hwm_kib"] / 1024,
            }

        self.rounds("S10", LBS, one, ("hps", "cpu"), tls=True)
        self.check_negotiated("S10")
        self.stop_backends()

    # -- S11: routing ----------------------------------------------------------------------------

    def s11(self):
        log(f"S11: {SMALL_BODY} B GETs of {S11_PATH}, {S11_CONNECTIONS} connections, {DURATION} s "
            f"each, through each balancer with 1 and with {S11_ROUTES} path-prefix routes; "
            f"{S11_ROUNDS} round(s)")
        self.start_backends(body=SMALL_BODY)
        if "direct" in CONTENDERS:
            # No balancer, no routes: the load core's ceiling, and core 0's background noise.
            try:
                res = self.load_run("S11-direct", "direct", S11_CONNECTIONS, path=S11_PATH)
                self.put("S11", "rps1", "direct", res["rps"])
                self.put("S11", "p99_1", "direct", res["p99_ms"])
                self.put("S11", "lbcore", "direct", res["lb_core_busy"])
                self.put("S11", "loadcore", "direct", res["load_core_busy"])
            except BenchError as e:
                self.note(f"S11 direct FAILED: {e}")
        samples = {}  # contender -> metric -> [value of each round]
        configs = (1, S11_ROUTES)
        for r in range(S11_ROUNDS):
            k = r % max(1, len(LBS))
            order = LBS[k:] + LBS[:k]
            # Which config runs first alternates: a drift of the machine over a round then falls
            # on each config alike over two rounds.
            first = configs if r % 2 == 0 else configs[::-1]
            log(f"S11 round {r + 1} of {S11_ROUNDS}: {', '.join(order)}; routes "
                f"{first[0]} then {first[1]}")
            for contender in order:
                got = {}
                for routes in first:
                    lb = None
                    try:
                        lb = self.start_lb(contender, routes=routes)
                        res = self.load_run(f"S11-{routes}", contender, S11_CONNECTIONS, lb,
                                            path=S11_PATH)
                        if res["non2xx"] > 0.01 * res["requests"]:
                            raise BenchError(f"{res['non2xx']} of {res['requests']} answers "
                                             f"non-2xx with {routes} route(s): the request did "
                                             f"not take its route (see {lb.proc.bench_log})")
                        got[routes] = res
                    except BenchError as e:
                        self.note(f"S11 {contender} with {routes} route(s), round {r + 1} "
                                  f"FAILED: {e}")
                    finally:
                        if lb:
                            self.stop_lb(lb)
                if len(got) != 2:
                    continue
                one, many = got[1], got[S11_ROUTES]
                figures = {
                    "rps1": one["rps"], "rps100": many["rps"],
                    "rps_loss": 100.0 * (1.0 - many["rps"] / one["rps"]),
                    "cpu1": one["cpu_us_per_req"], "cpu100": many["cpu_us_per_req"],
                    "cpu_more": 100.0 * (many["cpu_us_per_req"] / one["cpu_us_per_req"] - 1.0),
                    "p99_1": one["p99_ms"], "p99_100": many["p99_ms"],
                    "lbcore": many["lb_core_busy"], "loadcore": many["load_core_busy"],
                    "rss1": one["hwm_kib"] / 1024, "rss100": many["hwm_kib"] / 1024,
                }
                for metric, value in figures.items():
                    samples.setdefault(contender, {}).setdefault(metric, []).append(value)
                log(f"S11 {contender} round {r + 1}: {figures['rps1']:,.0f} -> "
                    f"{figures['rps100']:,.0f} req/s ({figures['rps_loss']:+.1f} % fewer), "
                    f"{figures['cpu1']:.2f} -> {figures['cpu100']:.2f} CPU us/req "
                    f"({figures['cpu_more']:+.1f} %)")
        # The costs are per round (two runs a few seconds apart: a pair shares the machine's state
        # of the moment) and their mean is taken, not the cost of the medians: half the rounds
        # ran each config first, so the mean cancels whatever the first run of a pair pays more
        # (seen for alb: the first run the slower in 10 of 12 rounds). The others are medians.
        for contender, metrics in samples.items():
            for metric, values in metrics.items():
                mean = metric in ("rps_loss", "cpu_more")
                self.put("S11", metric, contender,
                         statistics.fmean(values) if mean else statistics.median(values))
        self.raw.setdefault("S11-rounds", {}).update(samples)
        parts = []
        for metric, label in (("rps_loss", "% fewer req/s"), ("cpu_more", "% more CPU/request"),
                              ("cpu1", "CPU us/request with 1 route"),
                              ("cpu100", f"with {S11_ROUTES}")):
            per = [f"{c} " + " / ".join(f"{v:+.1f}" if metric in ("rps_loss", "cpu_more")
                                        else f"{v:.2f}" for v in samples[c][metric])
                   for c in LBS if metric in samples.get(c, {})]
            if per:
                parts.append(f"{label}: " + "; ".join(per))
        for contender in LBS:
            same = samples.get(contender, {}).get("cpu1", [])
            if len(same) > 1 and max(same) > 1.10 * min(same):
                self.note(f"S11 {contender}: the same 1-route config took {min(same):.2f} to "
                          f"{max(same):.2f} CPU us/request from round to round "
                          f"({100 * (max(same) / min(same) - 1):.0f} % apart): the machine was "
                          f"noisy (with core {LB_CPU} otherwise idle, as direct's run shows, "
                          f"this is the host: a VM's neighbours do not show in its load); the "
                          f"wall-clock costs are not to be trusted to a few %, the instruction "
                          f"counts are")
        if parts and S11_ROUNDS > 1:
            self.note(f"S11, each of the {S11_ROUNDS} rounds (the table has the means of the "
                      f"costs, the medians of the rest; odd rounds ran 1 route first, even ones "
                      f"{S11_ROUTES} first): " + ". ".join(parts))
        # Instructions per request under callgrind, as S2 counts them (Ir after N2 requests minus
        # Ir after N1, each a fresh process, ÷ (N2 − N1): start-up, config parsing included, and
        # shut-down cancel out), with each config: deterministic where the CPU times above move
        # by more than the 3 % target from one 10 s run to the next.
        n1, n2 = S2_COUNTS
        log(f"S11: instructions per request under callgrind with 1 and {S11_ROUTES} routes, "
            f"{n1:,} and {n2:,} requests ({S2_CONCURRENCY} connections)")
        for contender in LBS:
            per = {}
            for routes in configs:
                try:
                    irs = [self.callgrind_run(contender, n, routes=routes, scenario="S11")
                           for n in (n1, n2)]
                    per[routes] = (irs[1] - irs[0]) / (n2 - n1)
                    self.raw.setdefault("S11-callgrind", {}).setdefault(contender, {})[
                        str(routes)] = {"counts": [n1, n2], "ir": irs,
                                        "ir_per_request": per[routes]}
                    log(f"S11 {contender} with {routes} route(s): Ir {irs[0]:,} / {irs[1]:,} -> "
                        f"{per[routes]:,.0f} per request")
                except BenchError as e:
                    self.note(f"S11 callgrind {contender} with {routes} route(s) FAILED: {e}")
            if 1 in per:
                self.put("S11", "ir1", contender, per[1])
            if S11_ROUTES in per:
                self.put("S11", "ir100", contender, per[S11_ROUTES])
            if len(per) == 2:
                self.put("S11", "ir_more", contender, 100.0 * (per[S11_ROUTES] / per[1] - 1.0))
        self.stop_backends()

    # -- S12, S13: HTTP/2 and gRPC ---------------------------------------------------------------

    def h2load(self, name, url, connections, streams, duration, log_file=None, data=None,
               headers=()):
        """One h2load run (one thread, on the load core) for `duration` seconds; its output goes
        to `<name>.log` in the work dir. Returns parse_h2load's figures."""
        cmd = ["h2load", "-t", 1, "-c", connections, "-m", streams, "-D", duration]
        for header in headers:
            cmd += ["-H", header]
        if data:
            cmd += ["-d", data]
        if log_file:
            cmd.append(f"--log-file={log_file}")
        cmd.append(url)
        out = run_tool(cmd, timeout=duration + 30)
        with open(self.work / f"{name}.log", "a") as f:
            f.write(f"$ {' '.join(str(c) for c in cmd)}\n{out}\n")
        return parse_h2load(out)

    def h2load_run(self, scenario, contender, lb, url, connections, streams, protocol,
                   data=None, headers=(), tag=None):
        """As load_run, with h2load: a warm-up, then a timed run with the balancer's CPU and
        memory, the cores and the backends' counters read around it. p50 and p99 come from
        h2load's per-request log (`--log-file`: each request's status and microseconds to the
        end of its answer); h2load itself prints only min/max/mean/sd. `protocol` is what
        h2load must have negotiated (h2 by ALPN, h2c): anything else fails the run."""
        tag = tag or f"{scenario.lower()}-h2load-{contender}"
        warm = self.h2load(tag, url, connections, streams, WARMUP, data=data, headers=headers)
        if warm["ok"] == 0:
            raise BenchError(f"h2load warm-up: no 2xx answer ({warm['requests']}, status codes "
                             f"{warm['status']}); see {tag}.log in the work dir")
        reqlog = self.work / f"{tag}.requests.tsv"
        if reqlog.exists():
            reqlog.unlink()
        before = self.counters()
        cpu0 = cpu_ticks(lb.cpu_pids) if lb else None
        cores0 = core_times(LB_CPU), core_times(LOAD_CPU)
        res = self.h2load(tag, url, connections, streams, DURATION, log_file=reqlog, data=data,
                          headers=headers)
        cores1 = core_times(LB_CPU), core_times(LOAD_CPU)
        cpu1 = cpu_ticks(lb.cpu_pids) if lb else None
        after = self.counters()
        res["served"] = [a - b for a, b in zip(after, before)]
        res["lb_core_busy"] = busy_percent(cores0[0], cores1[0])
        res["load_core_busy"] = busy_percent(cores0[1], cores1[1])
        if res["protocol"] != protocol:
            raise BenchError(f"h2load spoke {res['protocol']!r}, not {protocol}; see {tag}.log")
        if res["ok"] == 0:
            raise BenchError(f"h2load: no 2xx answer ({res['requests']}, status codes "
                             f"{res['status']}); see {tag}.log in the work dir")
        times = request_times(reqlog)
        reqlog.unlink()
        if times:
            res["p50_ms"] = percentile(times, 0.50) / 1e3
            res["p99_ms"] = percentile(times, 0.99) / 1e3
            res["max_ms"] = times[-1] / 1e3
            res["logged"] = len(times)
        if lb:
            if lb.proc.poll() is not None:
                raise BenchError(f"{contender} died during {scenario}")
            res["cpu_s"] = (cpu1 - cpu0) / CLK_TCK
            res["cpu_us_per_req"] = res["cpu_s"] * 1e6 / res["ok"]
            res["cpu_share"] = res["cpu_s"] / res["seconds"]
            res["hwm_kib"] = status_kib(lb.rss_pid, "VmHWM")
            if contender == "nginx":
                res["master_hwm_kib"] = status_kib(lb.proc.pid, "VmHWM")
        req = res["requests"]
        bad = max(0, req["done"] - res["ok"]) + req["failed"] + req["errored"] + req["timeout"]
        if bad:
            self.note(f"{scenario} {contender}: h2load counted {res['ok']:,} 2xx answers of "
                      f"{req['done']:,} done; status codes {res['status']}; failed "
                      f"{req['failed']}, errored {req['errored']}, timeout {req['timeout']}")
        # The backends also count what was in flight when h2load stopped (up to connections x
        # streams, which h2load leaves out), and what was in flight when the warm-up stopped (a
        # balancer may still pass it on after the counters were read), and alb's backends count
        # health checks; S13's count only calls answered with grpc-status 0.
        served = sum(res["served"])
        slack = 2 * connections * streams + 20
        if not res["ok"] - 0.01 * res["ok"] <= served <= res["ok"] + slack:
            self.note(f"{scenario} {contender}: h2load counted {res['ok']:,} 2xx answers, the "
                      f"backends {served:,} " + ("calls answered with grpc-status 0"
                                                 if scenario == "S13" else "requests"))
        self.raw.setdefault(scenario, {})[contender] = res
        log(f"{scenario} {contender}: {res['rps']:,.0f} req/s ({res['protocol']}), p50 "
            f"{res.get('p50_ms', 0):.2f} ms, p99 {res.get('p99_ms', 0):.2f} ms"
            + (f", {res['cpu_us_per_req']:.1f} CPU us/req ({res['cpu_share']:.0%} of a core), "
               f"HWM {res['hwm_kib'] / 1024:.1f} MiB" if lb else "")
            + f", cores busy {res['lb_core_busy']:.0f}% / {res['load_core_busy']:.0f}%"
            + f", backends {res['served']}")
        return res

    def s12(self):
        log(f"S12: HTTP/2 over TLS, {SMALL_BODY} B GETs, h2load {S12_CONNECTIONS} connections x "
            f"{S12_STREAMS} streams, {DURATION} s each, {H2_ROUNDS} round(s); then "
            f"{S12_IDLE:,} idle HTTP/2 connections, h2c and TLS")
        self.make_certificate()
        self.start_backends(body=SMALL_BODY)
        url = f"https://127.0.0.1:{TLS_PORT}/"

        def one(contender, lb):
            res = self.h2load_run("S12", contender, lb, url, S12_CONNECTIONS, S12_STREAMS, "h2")
            # The same process, a tenth of the streams in flight (its peak RSS is the first
            # run's, read before this one).
            low = self.h2load_run("S12-low", contender, lb, url, S12_CONNECTIONS,
                                  S12_STREAMS_LOW, "h2", tag=f"s12-h2load-low-{contender}")
            return {
                "rps": res["rps"], "p50": res["p50_ms"], "p99": res["p99_ms"],
                "cpu": res["cpu_us_per_req"], "lbshare": 100.0 * res["cpu_share"],
                "lbcore": res["lb_core_busy"], "loadcore": res["load_core_busy"],
                "rss": res["hwm_kib"] / 1024,
                "low_rps": low["rps"], "low_p99": low["p99_ms"], "low_cpu": low["cpu_us_per_req"],
                "low_lbcore": low["lb_core_busy"], "low_loadcore": low["load_core_busy"],
            }

        self.rounds("S12", LBS, one, ("rps", "cpu", "low_rps", "low_cpu"), count=H2_ROUNDS,
                    h2="tls")
        for transport in ("h2c", "tls"):
            self.s12_idle(transport)
        self.stop_backends()

    def s12_idle(self, transport):
        """Memory per idle HTTP/2 connection, as S5 measures it for HTTP/1.1: S12_IDLE connections
        (bench/h2_clients.py), each with one GET answered, then held idle; VmRSS with them open
        minus before, ÷ connections. `transport`: "h2c" (prior knowledge, on the balancer's h2c
        port) or "tls" (ALPN h2 on its TLS port). A fresh balancer process each."""
        n = S12_IDLE
        log(f"S12: {n:,} idle HTTP/2 connections over {transport}")

        def one(contender, lb):
            tls = transport == "tls"
            port = TLS_PORT if tls else lb.h2c_port
            # Warm the balancer with HTTP/2 on the same transport (S5 warms with wrk), so that
            # the baseline holds its steady-state buffers.
            self.h2load(f"s12-idle-warm-{contender}",
                        f"{'https' if tls else 'http'}://127.0.0.1:{port}/", S12_CONNECTIONS, 10,
                        WARMUP)
            time.sleep(0.3)
            cmd = [sys.executable, BENCH / "h2_clients.py", "--port", port, "--count", n,
                   "--deadline", 90, "--hold", 60] + (["--tls", self.tls_files[0]] if tls else [])
            res = self.idle_rss("S12", contender, lb, f"s12-idle-{transport}-{contender}", cmd, n)
            self.raw.setdefault(f"S12-idle-{transport}", {})[contender] = res
            self.put("S12", f"idle_{transport}", contender, res["kib_per_connection"])
            self.put("S12", f"idle_{transport}_rss", contender, res["rss_open_kib"] / 1024)

        self.each_contender("S12", LBS, one, connections=n + 100, h2="tls")

    def start_grpc_backends(self):
        """The two backends as grpc_bench servers (HTTP/1.1 and h2c on one port; `/__requests`
        counts the calls answered with grpc-status 0)."""
        self.stop_backends()
        ensure_free(B1_PORT, B2_PORT)
        self.backend_specs = []
        for port, name in ((B1_PORT, "b1"), (B2_PORT, "b2")):
            self.backends.append(self.procs.spawn(f"grpc-backend-{name}",
                                                  [GRPC_BIN, "server", port], LOAD_CPU))
        for port, proc in zip((B1_PORT, B2_PORT), self.backends):
            wait_http(port, "/__requests", proc, 10)

    def grpc_check(self, port, contender):
        """GRPC_CHECK_CALLS unary calls through `port` with a real gRPC client (tonic, in
        grpc_bench check): every one must come back with grpc-status 0 in its trailers and the
        expected reply, or the run fails."""
        cmd = ["taskset", "-c", LOAD_CPU, GRPC_BIN, "check", f"http://127.0.0.1:{port}",
               GRPC_CHECK_CALLS]
        cmd = [str(c) for c in cmd]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            raise BenchError("grpc_bench check ran past 60 s") from e
        with open(self.work / f"s13-check-{contender}.log", "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out.stdout}{out.stderr}")
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise BenchError(f"grpc_bench check exited {out.returncode} with no result: "
                             f"{out.stderr.strip()[-300:]}")
        res = json.loads(lines[-1])
        self.raw.setdefault("S13-check", {})[contender] = res
        if res["ok"] != res["calls"]:
            raise BenchError(f"a gRPC client (tonic) got {res['ok']} of {res['calls']} calls "
                             f"right through it: errors {res['errors']}, the first "
                             f"{res['first_error']}")
        return res

    def s13(self):
        log(f"S13: gRPC unary calls over h2c, h2load {S13_CONNECTIONS} connections x "
            f"{S13_STREAMS} streams, {DURATION} s each, {H2_ROUNDS} round(s)")
        if not GRPC_BIN.exists():
            raise BenchError(f"{GRPC_BIN} missing: run bench/run.sh (it builds "
                             f"examples/grpc_bench.rs when S13 is selected)")
        request = self.work / "grpc-request.bin"
        out = subprocess.run([str(GRPC_BIN), "request", str(request)], capture_output=True,
                             text=True, timeout=30)
        if out.returncode != 0:
            raise BenchError(f"grpc_bench request exited {out.returncode}: {out.stderr.strip()}")
        self.start_grpc_backends()
        headers = ("content-type: application/grpc", "te: trailers")

        def one(contender, lb):
            port = B1_PORT if contender == "direct" else lb.h2c_port
            self.grpc_check(port, contender)
            res = self.h2load_run("S13", contender, lb, f"http://127.0.0.1:{port}{GRPC_PATH}",
                                  S13_CONNECTIONS, S13_STREAMS, "h2c", data=request,
                                  headers=headers)
            figures = {"cps": res["rps"], "p50": res["p50_ms"], "p99": res["p99_ms"],
                       "lbcore": res["lb_core_busy"], "loadcore": res["load_core_busy"]}
            if lb:
                figures.update(cpu=res["cpu_us_per_req"], lbshare=100.0 * res["cpu_share"],
                               rss=res["hwm_kib"] / 1024)
            return figures

        self.rounds("S13", CONTENDERS, one, ("cps", "cpu", "p99"), count=H2_ROUNDS, h2="grpc")
        self.stop_backends()


S6_ALGORITHMS = ["least_conn", "round_robin", "random", "p2c", "least_time", "hash", "sticky"]
S6_SIZES = [10, 1_000, 10_000]
S6_ROUTE_SIZES = [1, 10, 100, 1_000]
# (criterion group, metric key, sizes): the group's means are read from
# <target>/criterion/<group>/<size>/new/estimates.json. select_hash is a consistent-hash pick by a
# request key (hashed outside the timed loop), select_sticky finding the pool's cookie among a
# request's cookies and mapping it to its backend; route_by_host and route_by_path find the route
# of a request whose route is the last of 1 to 1,000 (one host each, or one path prefix each
# under one host).
S6_CASES = ([(f"select_{a}", a, S6_SIZES) for a in S6_ALGORITHMS]
            + [("route_by_host", "route_by_host", S6_ROUTE_SIZES),
               ("route_by_path", "route_by_path", S6_ROUTE_SIZES)])
S6_LABELS = {
    "hash": "select hash (consistent, by client key)",
    "sticky": "select sticky (cookie to backend)",
    "route_by_host": "route by host",
    "route_by_path": "route by path prefix",
}


def lb_logs(work, contender):
    """Where a balancer logs: its stderr, and nginx's error_log (bench/nginx.conf)."""
    extra = [work / "nginx-error.log"] if contender == "nginx" else []
    return [work / f"{contender}.log"] + extra


def read_line(proc, timeout):
    """One line of a child's stdout, waiting at most `timeout` seconds."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise BenchError(f"{proc.bench_name}: no output in {timeout:.0f} s")
    finally:
        sel.close()
    line = proc.stdout.readline().decode().strip()
    if not line and proc.poll() is not None:
        raise BenchError(f"{proc.bench_name} exited {proc.returncode}; see {proc.bench_log}")
    return line


# ---------------------------------------------------------------------------------------------
# Parsing


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"wrk: cannot read the latency {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def to_bytes(text):
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text)
    if not m:
        raise BenchError(f"wrk: cannot read the size {text!r}")
    power = {"B": 0, "KB": 1, "MB": 2, "GB": 3, "TB": 4}[m.group(2)]
    return float(m.group(1)) * 1024 ** power  # wrk's units are binary


def parse_wrk(out):
    res = {"raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+[KMGT]?B) read", out)
    if not m:
        raise BenchError(f"wrk: unexpected output:\n{out}")
    res["requests"] = int(m.group(1))
    res["seconds"] = to_ms(m.group(2) + m.group(3)) / 1e3
    res["read_bytes"] = to_bytes(m.group(4))
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups()))) if m else {}
    return res


def parse_h2load(out):
    """h2load's summary: duration, request counts, status classes, the protocol it spoke."""
    res = {"raw": out}
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    if not m:
        raise BenchError(f"h2load: unexpected output:\n{out[-1500:]}")
    res["seconds"] = to_ms(m.group(1) + m.group(2)) / 1e3
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        raise BenchError(f"h2load: no request counts in:\n{out[-1500:]}")
    res["requests"] = dict(zip(("total", "started", "done", "succeeded", "failed", "errored",
                                "timeout"), map(int, m.groups())))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res["status"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, m.groups()))) if m else {}
    res["ok"] = res["status"].get("2xx", 0)
    res["rps"] = res["ok"] / res["seconds"] if res["seconds"] else 0.0
    m = re.search(r"Application protocol: (\S+)", out)
    res["protocol"] = m.group(1) if m else None
    return res


def request_times(path):
    """The microseconds each request took, sorted, from h2load's --log-file (tab-separated: start
    in µs since the epoch, status, µs to the end of the answer); answered requests only."""
    times = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.split("\t")
                if len(fields) >= 3 and fields[1].strip().isdigit() and int(fields[1]) > 0:
                    times.append(int(fields[2]))
    except FileNotFoundError:
        return []
    times.sort()
    return times


def percentile(values, q):
    """The nearest-rank q-quantile of sorted `values`."""
    return values[min(len(values) - 1, max(0, int(-(-q * len(values) // 1)) - 1))]


def count_lines(path):
    """Lines in `path` so far (0 when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def callgrind_total(path):
    total = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
    if total is None:
        raise BenchError(f"{path}: no totals line")
    return total


# ---------------------------------------------------------------------------------------------
# The table

# (scenario, metric, label, better: "hi", "lo" or "" (context only, no ratios), decimals)
ROWS = [
    ("S1", "rps", "S1 small GETs: req/s ↑", "hi", 0),
    ("S1", "p50", "S1 small GETs: p50 ms ↓", "lo", 2),
    ("S1", "p99", "S1 small GETs: p99 ms ↓", "lo", 2),
    ("S1", "cpu", "S1 small GETs: LB CPU µs/request ↓", "lo", 1),
    ("S1", "lbcore", f"S1 small GETs: core {LB_CPU} (LB) busy %", "", 0),
    ("S1", "loadcore", f"S1 small GETs: core {LOAD_CPU} (wrk, backends) busy %", "", 0),
    ("S1", "rss", "S1 small GETs: LB peak RSS MiB ↓", "lo", 1),
    ("S2", "ir", "S2 callgrind: instructions/request ↓", "lo", 0),
    ("S3", "rps", "S3 uneven backends: req/s ↑", "hi", 0),
    ("S3", "p99", "S3 uneven backends: p99 ms ↓", "lo", 2),
    ("S3", "fast", "S3 uneven backends: % to the 1 ms backend ↑", "hi", 1),
    ("S3", "slow", "S3 uneven backends: % to the 20 ms backend ↓", "lo", 1),
    ("S3", "rps_lt", "S3 with alb on least_time (peers least-conn): req/s ↑", "hi", 0),
    ("S3", "p99_lt", "S3 with alb on least_time (peers least-conn): p99 ms ↓", "lo", 2),
    ("S3", "fast_lt", "S3 with alb on least_time (peers least-conn): % to the 1 ms backend ↑", "hi", 1),
    ("S4", "mibs", "S4 1 MiB answers: MiB/s ↑", "hi", 0),
    ("S4", "cpu", "S4 1 MiB answers: LB CPU µs/request ↓", "lo", 0),
    ("S4", "lbcore", f"S4 1 MiB answers: core {LB_CPU} (LB) busy %", "", 0),
    ("S4", "loadcore", f"S4 1 MiB answers: core {LOAD_CPU} (wrk, backends) busy %", "", 0),
    ("S4", "rss", "S4 1 MiB answers: LB peak RSS MiB ↓", "lo", 1),
    ("S5", "per_conn", "S5 idle connections: LB KiB per connection ↓", "lo", 2),
    ("S5", "rss_open", "S5 idle connections: LB RSS MiB with all open ↓", "lo", 1),
] + [
    ("S6", f"{key}/{n}", f"S6 {S6_LABELS.get(key, 'select ' + key)}, {n:,} "
     f"{'route' if group.startswith('route_') else 'backend'}{'s' if n > 1 else ''}: ns ↓",
     "lo", 1)
    for group, key, sizes in S6_CASES for n in sizes
] + [
    ("S7", "requests", f"S7 backend killed every {S7_INTERVAL} s: requests completed", "", 0),
    ("S7", "failed", f"S7 backend killed every {S7_INTERVAL} s: requests failed ↓", "lo", 0),
    ("S7", "failed_pct", f"S7 backend killed every {S7_INTERVAL} s: % failed ↓", "lo", 3),
    ("S7", "rps", f"S7 backend killed every {S7_INTERVAL} s: req/s ↑", "hi", 0),
    ("S7", "p99", f"S7 backend killed every {S7_INTERVAL} s: p99 ms ↓", "lo", 2),
    ("S7", "killed_share", f"S7 backend killed every {S7_INTERVAL} s: % served by the killed one",
     "", 1),
    ("S7", "hits", f"S7 backend killed every {S7_INTERVAL} s: kills that hit traffic (of "
     f"{S7_KILLS})", "", 0),
    ("S8", "mps", "S8 WebSocket echo: messages/s ↑", "hi", 0),
    ("S8", "p50", "S8 WebSocket echo: p50 round trip ms ↓", "lo", 2),
    ("S8", "p99", "S8 WebSocket echo: p99 round trip ms ↓", "lo", 2),
    ("S8", "cpu", "S8 WebSocket echo: LB CPU µs/message ↓", "lo", 1),
    ("S8", "lbshare", "S8 WebSocket echo: LB CPU time, % of a core", "", 0),
    ("S8", "lbcore", f"S8 WebSocket echo: core {LB_CPU} (LB) busy %", "", 0),
    ("S8", "loadcore", f"S8 WebSocket echo: core {LOAD_CPU} (client, echo servers) busy %", "", 0),
    ("S8", "rss", "S8 WebSocket echo: LB peak RSS MiB ↓", "lo", 1),
    ("S9", "rps", "S9 TLS small GETs, keep-alive: req/s ↑", "hi", 0),
    ("S9", "p50", "S9 TLS small GETs, keep-alive: p50 ms ↓", "lo", 2),
    ("S9", "p99", "S9 TLS small GETs, keep-alive: p99 ms ↓", "lo", 2),
    ("S9", "cpu", "S9 TLS small GETs, keep-alive: LB CPU µs/request ↓", "lo", 1),
    ("S9", "plain_rps", "S9 same load in plain HTTP, same process just before: req/s ↑", "hi", 0),
    ("S9", "plain_cpu", "S9 same load in plain HTTP, same process just before: LB CPU "
     "µs/request ↓", "lo", 1),
    ("S9", "tls_cpu", "S9 TLS cost: LB CPU µs/request, TLS minus plain ↓", "lo", 1),
    ("S9", "lbcore", f"S9 TLS small GETs: core {LB_CPU} (LB) busy %", "", 0),
    ("S9", "loadcore", f"S9 TLS small GETs: core {LOAD_CPU} (wrk, backends) busy %", "", 0),
    ("S9", "rss", "S9 TLS small GETs: LB peak RSS MiB ↓", "lo", 1),
    ("S10", "hps", "S10 TLS full handshakes, new connection per request: handshakes/s ↑", "hi",
     0),
    ("S10", "cpu", "S10 TLS full handshakes: LB CPU µs/handshake ↓", "lo", 0),
    ("S10", "per_cpu_s", "S10 TLS full handshakes: handshakes per LB CPU-second ↑", "hi", 0),
    ("S10", "lbshare", "S10 TLS full handshakes: LB CPU time, % of a core", "", 0),
    ("S10", "lbcore", f"S10 TLS full handshakes: core {LB_CPU} (LB) busy %", "", 0),
    ("S10", "loadcore", f"S10 TLS full handshakes: core {LOAD_CPU} (s_time, backends) busy %", "",
     0),
    ("S10", "rss", "S10 TLS full handshakes: LB peak RSS MiB ↓", "lo", 1),
    ("S11", "rps1", "S11 small GETs, 1 route: req/s ↑", "hi", 0),
    ("S11", "rps100", f"S11 small GETs, {S11_ROUTES} routes (the last taken): req/s ↑", "hi", 0),
    ("S11", "rps_loss", f"S11 routing cost: % fewer req/s with {S11_ROUTES} routes than 1 "
     "(no peer ratio) ↓", "", 1),
    ("S11", "cpu1", "S11 1 route: LB CPU µs/request ↓", "lo", 2),
    ("S11", "cpu100", f"S11 {S11_ROUTES} routes: LB CPU µs/request ↓", "lo", 2),
    ("S11", "cpu_more", f"S11 routing cost: % more LB CPU per request with {S11_ROUTES} routes "
     "than 1 (no peer ratio) ↓", "", 1),
    ("S11", "p99_1", "S11 1 route: p99 ms ↓", "lo", 2),
    ("S11", "p99_100", f"S11 {S11_ROUTES} routes: p99 ms ↓", "lo", 2),
    ("S11", "lbcore", f"S11 {S11_ROUTES} routes: core {LB_CPU} (LB) busy %", "", 0),
    ("S11", "loadcore", f"S11 {S11_ROUTES} routes: core {LOAD_CPU} (wrk, backends) busy %", "",
     0),
    ("S11", "ir1", "S11 callgrind, 1 route: instructions/request ↓", "lo", 0),
    ("S11", "ir100", f"S11 callgrind, {S11_ROUTES} routes: instructions/request ↓", "lo", 0),
    ("S11", "ir_more", f"S11 routing cost: % more instructions per request with {S11_ROUTES} "
     "routes than 1 (no peer ratio) ↓", "", 1),
    ("S11", "rss1", "S11 1 route: LB peak RSS MiB ↓", "lo", 1),
    ("S11", "rss100", f"S11 {S11_ROUTES} routes: LB peak RSS MiB ↓", "lo", 1),
    ("S12", "rps", f"S12 HTTP/2 over TLS, small GETs ({S12_CONNECTIONS} connections × "
     f"{S12_STREAMS} streams): req/s ↑", "hi", 0),
    ("S12", "p50", "S12 HTTP/2 over TLS: p50 ms ↓", "lo", 2),
    ("S12", "p99", "S12 HTTP/2 over TLS: p99 ms ↓", "lo", 2),
    ("S12", "cpu", "S12 HTTP/2 over TLS: LB CPU µs/request ↓", "lo", 1),
    ("S12", "lbshare", "S12 HTTP/2 over TLS: LB CPU time, % of a core", "", 0),
    ("S12", "lbcore", f"S12 HTTP/2 over TLS: core {LB_CPU} (LB) busy %", "", 0),
    ("S12", "loadcore", f"S12 HTTP/2 over TLS: core {LOAD_CPU} (h2load, backends) busy %", "", 0),
    ("S12", "rss", "S12 HTTP/2 over TLS: LB peak RSS MiB ↓", "lo", 1),
    ("S12", "low_rps", f"S12 HTTP/2 over TLS, same process, {S12_STREAMS_LOW} streams per "
     "connection: req/s ↑", "hi", 0),
    ("S12", "low_p99", f"S12 HTTP/2 over TLS, {S12_STREAMS_LOW} streams: p99 ms ↓", "lo", 2),
    ("S12", "low_cpu", f"S12 HTTP/2 over TLS, {S12_STREAMS_LOW} streams: LB CPU µs/request ↓",
     "lo", 1),
    ("S12", "low_lbcore", f"S12 HTTP/2 over TLS, {S12_STREAMS_LOW} streams: core {LB_CPU} (LB) "
     "busy %", "", 0),
    ("S12", "low_loadcore", f"S12 HTTP/2 over TLS, {S12_STREAMS_LOW} streams: core {LOAD_CPU} "
     "(h2load, backends) busy %", "", 0),
    ("S12", "idle_h2c", f"S12 {S12_IDLE:,} idle HTTP/2 connections, h2c: LB KiB per connection ↓",
     "lo", 2),
    ("S12", "idle_h2c_rss", f"S12 {S12_IDLE:,} idle HTTP/2 connections, h2c: LB RSS MiB with all "
     "open ↓", "lo", 1),
    ("S12", "idle_tls", f"S12 {S12_IDLE:,} idle HTTP/2 connections over TLS: LB KiB per "
     "connection ↓", "lo", 2),
    ("S12", "idle_tls_rss", f"S12 {S12_IDLE:,} idle HTTP/2 connections over TLS: LB RSS MiB with "
     "all open ↓", "lo", 1),
    ("S13", "cps", f"S13 gRPC unary calls over h2c ({S13_CONNECTIONS} connections × "
     f"{S13_STREAMS} streams): calls/s ↑", "hi", 0),
    ("S13", "p50", "S13 gRPC unary calls: p50 ms ↓", "lo", 2),
    ("S13", "p99", "S13 gRPC unary calls: p99 ms ↓", "lo", 2),
    ("S13", "cpu", "S13 gRPC unary calls: LB CPU µs/call ↓", "lo", 1),
    ("S13", "lbshare", "S13 gRPC unary calls: LB CPU time, % of a core", "", 0),
    ("S13", "lbcore", f"S13 gRPC unary calls: core {LB_CPU} (LB) busy %", "", 0),
    ("S13", "loadcore", f"S13 gRPC unary calls: core {LOAD_CPU} (h2load, gRPC backends) busy %",
     "", 0),
    ("S13", "rss", "S13 gRPC unary calls: LB peak RSS MiB ↓", "lo", 1),
    ("S14", "rps", "S14 access log on (alb text, nginx combined, HAProxy httplog): req/s ↑", "hi",
     0),
    ("S14", "kept", "S14 access log on: % of S1's req/s (log off, same run) ↑", "hi", 0),
    ("S14", "cpu", "S14 access log on: LB CPU µs/request ↓", "lo", 1),
    ("S14", "rps_json", "S14 alb's JSON access log: req/s ↑", "hi", 0),
    ("S14", "kept_json", "S14 alb's JSON access log: % of S1's req/s ↑", "hi", 0),
    ("S14", "cpu_json", "S14 alb's JSON access log: LB CPU µs/request ↓", "lo", 1),
    ("S14", "lines", "S14 access log lines per request served (1.00: all logged)", "", 3),
    ("S14", "lines_json", "S14 alb's JSON access log: lines per request served", "", 3),
]


def target_for(scenario, metric, get):
    """(text, met: True/False/None) for a row; `get(contender)` reads this row's figure."""
    alb = get("alb")
    nginx, haproxy = get("nginx"), get("haproxy")

    key = (scenario, metric)
    if key == ("S1", "rps"):
        peers = [v for v in (nginx, haproxy) if v is not None]
        best = max(peers) if peers else None
        text = "≥ 1.2 × best of nginx, HAProxy"
        return text, None if alb is None or best is None else alb >= 1.2 * best
    if key == ("S1", "p99"):
        return "≤ nginx", None if alb is None or nginx is None else alb <= nginx
    if key == ("S1", "cpu"):
        return "≤ 0.8 × nginx", None if alb is None or nginx is None else alb <= 0.8 * nginx
    if key == ("S1", "rss"):
        return "≤ 8 MiB", None if alb is None else alb <= 8
    if key == ("S2", "ir"):
        return "≤ 12,000", None if alb is None else alb <= 12_000
    if key in (("S3", "fast"), ("S3", "fast_lt")):
        return "≥ 90 %", None if alb is None else alb >= 90
    if key in (("S3", "p99"), ("S3", "p99_lt")):
        return "≤ HAProxy", None if alb is None or haproxy is None else alb <= haproxy
    if key == ("S4", "cpu"):
        return "≤ 0.5 × nginx", None if alb is None or nginx is None else alb <= 0.5 * nginx
    if key == ("S4", "rss"):
        return "≤ 16 MiB", None if alb is None else alb <= 16
    if key == ("S4", "mibs"):
        return "≥ nginx", None if alb is None or nginx is None else alb >= nginx
    if key == ("S5", "per_conn"):
        return "< 8 KiB", None if alb is None else alb < 8
    if scenario == "S6":
        case, size = metric.split("/")
        sizes = next(sz for _, k, sz in S6_CASES if k == case)
        if int(size) == sizes[-1]:
            unit = "route" if case.startswith("route_") else "backend"
            return f"flat: ≤ 2 × the {sizes[0]:,}-{unit} figure", None
    if key in (("S11", "rps_loss"), ("S11", "cpu_more"), ("S11", "ir_more")):
        return "≤ 3 %", None if alb is None else alb <= 3.0
    if key == ("S7", "failed"):
        return "0", None if alb is None else alb == 0
    if key in (("S14", "kept"), ("S14", "kept_json")):
        return "≥ 90 %", None if not isinstance(alb, (int, float)) else alb >= 90
    if key in (("S12", "idle_h2c"), ("S12", "idle_tls")):
        ok = isinstance(alb, (int, float))
        return "< 16 KiB", None if not ok else alb < 16
    return "", None


def fmt(value, decimals):
    if value is None:
        return "—"
    if isinstance(value, str):  # "n/a (...)": the contender could not run the scenario
        return value
    return f"{value:,.{decimals}f}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a < 0 or b <= 0:
        return "—"
    return f"{a / b:.2f}×"


def build_table(results):
    lines = [
        "| scenario and figure | direct | alb | nginx | haproxy | alb/nginx | alb/haproxy "
        "| target | met? |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | :---: |",
    ]
    for scenario, metric, label, better, decimals in ROWS:
        if scenario not in SCENARIOS:
            continue

        def get(contender, scenario=scenario, metric=metric):
            return results.get((scenario, metric, contender))

        if all(get(c) is None for c in ALL_CONTENDERS):
            continue
        text, met = target_for(scenario, metric, get)
        if scenario == "S6" and text.startswith("flat"):
            key = metric.split("/")[0]
            sizes = next(sz for _, k, sz in S6_CASES if k == key)
            small = results.get(("S6", f"{key}/{sizes[0]}", "alb"))
            met = None if small is None or get("alb") is None else get("alb") <= 2 * small
        mark = "" if met is None else ("yes" if met else "**no**")
        cells = [fmt(get(c), decimals) for c in ALL_CONTENDERS]
        ratios = [ratio(get("alb"), get(peer)) if better else "" for peer in ("nginx", "haproxy")]
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + f" | {text} | {mark} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Machine and versions


def sh(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return (out.stdout + out.stderr).strip()
    except subprocess.TimeoutExpired:
        return "?"


def machine():
    model = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1")
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    return f"{model}, {sh('nproc')} CPUs, {mem}, Linux {sh('uname -r')}"


def versions():
    commit = sh(f"git -C {ROOT} rev-parse --short HEAD")
    dirty = sh(f"git -C {ROOT} status --porcelain -- src Cargo.toml Cargo.lock")
    lock = (ROOT / "Cargo.lock").read_text()
    m = re.search(r'name = "criterion"\nversion = "([^"]+)"', lock)
    haproxy = re.search(r"version (\S+)", sh("haproxy -v | head -1"))
    wrk = re.search(r"wrk (\S+)", sh("wrk -v 2>&1 | head -1"))
    rustls = re.search(r'name = "rustls"\nversion = "([^"]+)"', lock)
    aws_lc = re.search(r'name = "aws-lc-rs"\nversion = "([^"]+)"', lock)
    return {
        "alb": commit + (" + uncommitted changes in src/" if dirty else ""),
        "rustc": sh("rustc -V").removeprefix("rustc "),
        "nginx": sh("nginx -v").replace("nginx version: nginx/", ""),
        "HAProxy": haproxy.group(1) if haproxy else "?",
        "wrk": wrk.group(1) if wrk else "?",
        "hey": sh("dpkg-query -W -f '${Version}' hey"),
        # wrk, s_time, nginx and HAProxy all use the system's libssl; alb links rustls.
        "OpenSSL": sh("openssl version").removeprefix("OpenSSL ").split(" (")[0],
        "alb's rustls": (rustls.group(1) + (f" with aws-lc-rs {aws_lc.group(1)}" if aws_lc else "")
                         if rustls else "none (no TLS in this build)"),
        "valgrind": sh("valgrind --version").removeprefix("valgrind-"),
        "h2load": sh("h2load --version").removeprefix("h2load "),
        "criterion": m.group(1) if m else "?",
        "Python": sh(f"{sys.executable} --version").removeprefix("Python "),
    }


# ---------------------------------------------------------------------------------------------


def main():
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    if os.environ.get("BENCH_WORK"):
        work = Path(os.environ["BENCH_WORK"])
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="alb-bench."))
    log(f"work dir (logs, configs, callgrind files): {work}")
    if not ALB_BIN.exists():
        raise SystemExit(f"{ALB_BIN} missing: run bench/run.sh (it builds alb first)")
    bench = Bench(work)
    vers = versions()  # now: the tree may change while the scenarios run
    if "ALB_BIN" in os.environ:
        vers["alb"] = f"{ALB_BIN} (ALB_BIN; the tree is at {vers['alb']})"
        vers["alb's rustls"] += " in the tree's Cargo.lock (ALB_BIN may differ)"

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        ensure_free(LB_PORT, B1_PORT, B2_PORT,
                    *([TLS_PORT] if set(TLS_SCENARIOS + ("S12",)) & set(SCENARIOS) else []),
                    *([H2C_PORT] if set(H2_SCENARIOS) & set(SCENARIOS) else []))
        for scenario in SCENARIOS:
            t0 = time.monotonic()
            try:
                getattr(bench, scenario.lower())()
            except BenchError as e:
                bench.note(f"{scenario} FAILED: {e}")
                bench.stop_backends()
            log(f"{scenario} took {time.monotonic() - t0:.0f} s")
    finally:
        bench.procs.stop_all()
    elapsed = time.monotonic() - started

    for scenario in ("S1", "S4", "S8", "S9-plain", "S11-direct", "S13"):
        direct = bench.raw.get(scenario, {}).get("direct")
        if direct and direct["lb_core_busy"] > 10:
            bench.note(f"{scenario}: core {LB_CPU} was {direct['lb_core_busy']:.0f} % busy during "
                       f"the direct run, with no balancer on it: something else was using the "
                       f"machine, so this run's timings are noisy")
    table = build_table(bench.results)
    mode = "quick (BENCH_QUICK=1: 2 s per run, small counts; not representative)" if QUICK else \
        f"full ({DURATION} s per run)"
    subset = ""
    if ONLY or PICKED:
        subset = f" — subset: scenarios {','.join(SCENARIOS)}, contenders {','.join(CONTENDERS)}"
    header = [
        f"Run {stamp}, {mode}{subset}; the scenarios took {elapsed / 60:.1f} min.",
        "",
        f"- Machine: {machine()}. Balancer pinned to core {LB_CPU}; backends and load tools on "
        f"core {LOAD_CPU}.",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        f"- Settings: S1/S3 64 connections, S4 16; S2 {S2_COUNTS[0]:,} and {S2_COUNTS[1]:,} "
        f"requests over {S2_CONCURRENCY} connections with hey; S5 {S5_CONNECTIONS:,} "
        f"connections; S7 {S7_CONNECTIONS} connections for {S7_DURATION} s, backend b2 "
        f"SIGKILLed {S7_KILLS} times (every {S7_INTERVAL} s, down {S7_DOWN} s, then restarted); "
        f"S8 {S8_CONNECTIONS} WebSocket connections echoing {S8_SIZE} B binary messages one at a "
        f"time each (examples/ws_bench.rs); S9 {S9_CONNECTIONS} keep-alive connections over "
        f"TLS (wrk https), S10 {S10_CLIENTS} `openssl s_time -new` clients (full handshakes, "
        f"no resumption), one ECDSA P-256 certificate, TLS 1.2 and 1.3 offered; S11 "
        f"{S11_CONNECTIONS} connections GETting {S11_PATH} through {S11_ROUTES} path-prefix "
        f"routes and through 1 (fresh process each, back to back, {S11_ROUNDS} round(s), "
        f"costs the means of the rounds, the rest medians; instructions as in S2); S12 h2load "
        f"{S12_CONNECTIONS} connections × {S12_STREAMS} streams over TLS (ALPN h2, the same "
        f"certificate) to the HTTP/1.1 backends, then × {S12_STREAMS_LOW} streams from the same "
        f"process, then {S12_IDLE:,} idle HTTP/2 connections "
        f"(h2c, then TLS); S13 h2load {S13_CONNECTIONS} connections × {S13_STREAMS} streams of "
        f"unary gRPC calls over h2c to two gRPC backends (examples/grpc_bench.rs) spoken to over "
        f"h2c; S12 and S13 in {H2_ROUNDS} round(s), medians; nginx RSS is its worker's (the "
        f"master adds {master_hwm(bench)}).",
    ]
    notes = ["", "Notes from this run:", ""] + [f"- {n}" for n in bench.notes] if bench.notes \
        else ["", "Notes from this run: none (no errors, no failed contender)."]
    doc = "\n".join(header + ["", table] + notes) + "\n"

    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if QUICK else ""
    out = RESULTS / f"{stamp}{suffix}.md"
    out.write_text(doc)
    raw = {k: {c: {kk: vv for kk, vv in v.items() if kk != "raw"} if isinstance(v, dict) else v
               for c, v in d.items()} for k, d in bench.raw.items()}
    (work / "results.json").write_text(json.dumps(raw, indent=1))
    print()
    print(doc)
    log(f"written to {out.relative_to(ROOT)}; raw figures and logs in {work}")
    full = not QUICK and not ONLY and not PICKED
    if full:
        write_benchmarks_md(doc, out)
        log("BENCHMARKS.md updated")
    return 0


def master_hwm(bench):
    for scenario in ("S1", "S4", "S9", "S11-1", "S12", "S13"):
        r = bench.raw.get(scenario, {}).get("nginx", {})
        if not isinstance(r, dict):
            continue
        if "master_hwm_kib" in r:
            return f"{r['master_hwm_kib'] / 1024:.1f} MiB peak"
    return "its own RSS, not counted"


def write_benchmarks_md(doc, out):
    text = f"""# Benchmarks

alb against nginx and HAProxy on one machine, from `bench/run.sh` (how it works, how the peers are
configured and how to read each figure: [bench/README.md](bench/README.md)). This page holds the
latest full run; every run is kept in `bench/results/` ({out.name} for this one).

Ratios are alb's figure divided by the peer's from the same run: above 1 is better for figures
marked ↑, below 1 for those marked ↓. The figures are absolute for this machine only; the ratios
and S2's instruction counts travel better.

Re-run: `bench/run.sh` (about 25 minutes of scenarios, plus 2 to 5 minutes of build when the source
changed; `bench/run.sh --quick` checks the script in about 3).

{doc}"""
    (ROOT / "BENCHMARKS.md").write_text(text)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); every process started was stopped")
        sys.exit(130)
