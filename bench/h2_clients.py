#!/usr/bin/env python3
"""S12's idle HTTP/2 client, in the manner of idle_clients.py (S5): open N HTTP/2 connections to a
balancer (h2c by prior knowledge, or TLS with ALPN h2), make one GET / on each and read the
answer, then hold them all open and idle until a line arrives on standard input (or --hold seconds
pass), then close them all.

No HTTP/2 library: raw sockets and the few frames a client needs. Each connection sends the
preface, a SETTINGS frame (push off) and one HEADERS frame for stream 1 with END_STREAM, its
header block HPACK from the static table (0x82 :method GET, 0x84 :path /, 0x86 or 0x87 :scheme
http or https) and a literal :authority (not indexed, so the server's decoder table stays empty);
it acknowledges the server's SETTINGS and answers PINGs, and reads until stream 1 ends. While the
connections are held, each one is still read (PINGs answered, a GOAWAY or a close noted), as an
idle browser connection would be.

Prints `READY <open> <failed> <seconds>` once every connection has had its answer, and at the end
`STILL_OPEN <n>` (how many the balancer had not closed or sent GOAWAY on meanwhile) and `CLOSED`.
Only for 127.0.0.1; bounded in count (--count) and time (--deadline, --hold).

bench.py also imports `h2_get` from here: one GET / over HTTP/2 (h2c or TLS), for its readiness
polls on listeners that speak HTTP/2 only.
"""

import argparse
import asyncio
import os
import resource
import socket
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
# HPACK static table: the :status entries (RFC 7541 appendix A, indices 8-14).
STATIC_STATUS = {0x88: 200, 0x89: 204, 0x8A: 206, 0x8B: 304, 0x8C: 400, 0x8D: 404, 0x8E: 500}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream) + payload


def opening(authority, https):
    """The preface, our SETTINGS (SETTINGS_ENABLE_PUSH = 0) and GET / on stream 1."""
    auth = authority.encode()
    if len(auth) > 126:
        raise ValueError("authority too long for a one-byte HPACK length")
    block = bytes([0x82, 0x84, 0x87 if https else 0x86, 0x01, len(auth)]) + auth
    return (PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 2, 0))
            + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))


def status_of(flags, payload):
    """The :status of a response header block, read from its first field: the static table's
    indexed entries, or a literal with the :status name (index 8), raw or Huffman "200"."""
    if flags & PADDED:
        payload = payload[1:len(payload) - payload[0]]
    if flags & PRIORITY:
        payload = payload[5:]
    if not payload:
        return None
    first = payload[0]
    if first in STATIC_STATUS:
        return STATIC_STATUS[first]
    # Literal field with the name :status (static index 8): with incremental indexing (0x48),
    # without (0x08) or never indexed (0x18); the value follows.
    if first in (0x48, 0x08, 0x18) and len(payload) >= 2:
        huffman, length = payload[1] & 0x80, payload[1] & 0x7F
        value = payload[2:2 + length]
        if not huffman:
            return int(value) if value.isdigit() else None
        if value == b"\x10\x01":  # "200" Huffman-coded
            return 200
    return None


class Exchange:
    """The client side of one connection's first request, fed with frames as they come."""

    def __init__(self):
        self.status = None
        self.body = 0
        self.done = False
        self.replies = []  # frames to send back (SETTINGS and PING acknowledgements)

    def feed(self, kind, flags, stream, payload):
        if kind == SETTINGS and not flags & ACK:
            self.replies.append(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.replies.append(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            code = struct.unpack(">I", payload[4:8])[0] if len(payload) >= 8 else -1
            if not self.done:
                raise ConnectionError(f"GOAWAY (error {code}) before the answer")
        elif stream == 1 and kind == RST_STREAM:
            raise ConnectionError(f"RST_STREAM {struct.unpack('>I', payload[:4])[0]}")
        elif stream == 1 and kind == HEADERS:
            if self.status is None:
                self.status = status_of(flags, payload)
                if not flags & END_HEADERS:
                    raise ConnectionError("answer head in CONTINUATION frames: not handled")
            if flags & END_STREAM:
                self.done = True
        elif stream == 1 and kind == DATA:
            self.body += len(payload)
            if flags & END_STREAM:
                self.done = True


def parse_head(head):
    length = int.from_bytes(head[:3], "big")
    return length, head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF


def h2_get(port, cafile=None, timeout=2.0, host="127.0.0.1"):
    """One GET / over HTTP/2 on a new connection: h2c by prior knowledge, or with `cafile` TLS
    with ALPN h2 (the certificate checked against that file). Returns (status, body bytes)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if cafile:
            ctx = ssl.create_default_context(cafile=str(cafile))
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=host)
            if sock.selected_alpn_protocol() != "h2":
                raise ConnectionError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        sock.sendall(opening(f"{host}:{port}", https=bool(cafile)))
        ex = Exchange()
        buf = b""
        deadline = time.monotonic() + timeout
        while not ex.done:
            if time.monotonic() > deadline:
                raise TimeoutError("no complete HTTP/2 answer")
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                length, kind, flags, stream = parse_head(buf[:9])
                ex.feed(kind, flags, stream, buf[9:9 + length])
                buf = buf[9 + length:]
                for reply in ex.replies:
                    sock.sendall(reply)
                ex.replies.clear()
                if ex.done:
                    break
            if ex.done:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            buf += chunk
        return ex.status, ex.body
    finally:
        sock.close()


class Conn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.closed = None  # why the balancer ended it while held, once it did
        self.watcher = None


async def read_frame(reader):
    head = await reader.readexactly(9)
    length, kind, flags, stream = parse_head(head)
    payload = await reader.readexactly(length) if length else b""
    return kind, flags, stream, payload


async def open_one(host, port, ctx, sem, timeout, conns):
    async with sem:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx,
                                    server_hostname=host if ctx else None), timeout)
        try:
            if ctx:
                alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
                if alpn != "h2":
                    raise ConnectionError(f"ALPN chose {alpn!r}, not h2")
            writer.write(opening(f"{host}:{port}", https=ctx is not None))
            ex = Exchange()
            while not ex.done:
                ex.feed(*await asyncio.wait_for(read_frame(reader), timeout))
                for reply in ex.replies:
                    writer.write(reply)
                ex.replies.clear()
            if ex.status != 200:
                raise RuntimeError(f"status {ex.status}")
        except BaseException:
            writer.close()
            raise
        conns.append(Conn(reader, writer))


async def watch(conn):
    """While held: answer PINGs, note a GOAWAY or the end of the connection."""
    try:
        while True:
            kind, flags, _, payload = await read_frame(conn.reader)
            if kind == PING and not flags & ACK:
                conn.writer.write(frame(PING, ACK, 0, payload))
            elif kind == SETTINGS and not flags & ACK:
                conn.writer.write(frame(SETTINGS, ACK, 0))
            elif kind == GOAWAY:
                conn.closed = "GOAWAY"
                return
    except asyncio.CancelledError:
        raise
    except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
        conn.closed = type(e).__name__


async def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tls", metavar="CAFILE", help="TLS with ALPN h2, the certificate checked "
                    "against CAFILE (without: h2c by prior knowledge)")
    ap.add_argument("--count", type=int, default=2_000)
    ap.add_argument("--concurrency", type=int, default=100, help="connections being set up at once")
    ap.add_argument("--deadline", type=float, default=120, help="seconds to open them all")
    ap.add_argument("--hold", type=float, default=120, help="longest idle hold, seconds")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        sys.exit("h2_clients.py only talks to 127.0.0.1")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.count + 64 > hard:
        sys.exit(f"fd limit {hard} is too low for {args.count} connections")
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.tls)
        ctx.set_alpn_protocols(["h2"])

    conns = []
    sem = asyncio.Semaphore(args.concurrency)
    tasks = [
        asyncio.ensure_future(open_one(args.host, args.port, ctx, sem, 10, conns))
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
    for conn in conns:
        conn.watcher = asyncio.ensure_future(watch(conn))
    print(f"READY {len(conns)} {failed} {time.monotonic() - started:.1f}s", flush=True)

    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    except asyncio.TimeoutError:
        print("hold time over", file=sys.stderr)
    await asyncio.sleep(0)
    still_open = sum(1 for c in conns if c.closed is None)
    why = {}
    for c in conns:
        if c.closed is not None:
            why[c.closed] = why.get(c.closed, 0) + 1
    if why:
        print(f"ENDED BY THE BALANCER {why}", file=sys.stderr)
    print(f"STILL_OPEN {still_open}", flush=True)
    for c in conns:
        c.watcher.cancel()
        c.writer.close()
    await asyncio.gather(*(c.writer.wait_closed() for c in conns), return_exceptions=True)
    print("CLOSED", flush=True)
    # Do not wait for the stdin reader thread (still blocked if the hold time ran out).
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
