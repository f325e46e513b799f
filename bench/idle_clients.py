#!/usr/bin/env python3
"""S5's client: open N keep-alive connections to a balancer, send one GET on each and read the
answer, then hold them all open and idle until a line arrives on standard input (or --hold
seconds pass), then close them all.

Prints `READY <open> <failed>` once every connection has had its answer, and at the end
`STILL_OPEN <n>` (how many the balancer had not closed meanwhile) and `CLOSED`.
Only for 127.0.0.1; bounded in count (--count) and time (--deadline, --hold).
"""

import argparse
import asyncio
import os
import resource
import sys
import time


async def open_one(host, port, sem, timeout, conns):
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
                if name.strip().lower() == b"transfer-encoding":
                    raise RuntimeError("chunked answer: send a fixed-size body in S5")
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            if status != b"200":
                raise RuntimeError(f"status {status!r}")
        except BaseException:
            writer.close()
            raise
        conns.append((reader, writer))


async def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=100, help="connections being set up at once")
    ap.add_argument("--deadline", type=float, default=120, help="seconds to open them all")
    ap.add_argument("--hold", type=float, default=120, help="longest idle hold, seconds")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        sys.exit("idle_clients.py only talks to 127.0.0.1")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.count + 64 > hard:
        sys.exit(f"fd limit {hard} is too low for {args.count} connections")

    conns = []
    sem = asyncio.Semaphore(args.concurrency)
    tasks = [
        asyncio.ensure_future(open_one(args.host, args.port, sem, 10, conns))
        for _ in range(args.count)
    ]
    started = time.monotonic()
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for task in pending:
        task.cancel()
    failed = len(pending) + sum(1 for t in done if t.exception() is not None)
    errors = {}
    for t in done:
        if t.exception() is not None:
            key = type(t.exception()).__name__ + ": " + str(t.exception())[:80]
            errors[key] = errors.get(key, 0) + 1
    for key, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"ERROR {n} x {key}", file=sys.stderr)
    print(f"READY {len(conns)} {failed} {time.monotonic() - started:.1f}s", flush=True)

    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    except asyncio.TimeoutError:
        print("hold time over", file=sys.stderr)
    # A balancer that dropped an idle connection has left EOF (or data) behind on it.
    await asyncio.sleep(0)
    still_open = sum(1 for reader, _ in conns if not reader.at_eof())
    print(f"STILL_OPEN {still_open}", flush=True)
    for _, writer in conns:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True)
    print("CLOSED", flush=True)
    # Do not wait for the stdin reader thread (still blocked if the hold time ran out).
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
