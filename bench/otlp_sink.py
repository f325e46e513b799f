#!/usr/bin/env python3
"""An OTLP/HTTP collector stand-in for measuring tracing's cost: it accepts every export on
127.0.0.1:PORT (default 4318) with 200 and an empty ExportTraceServiceResponse (zero bytes in
protobuf), on kept-alive connections, and counts exports and bytes. It decodes nothing: the
tests check what alb exports; this only takes it, so that the bench measures alb's side.

    python3 bench/otlp_sink.py 4318      # Ctrl-C or SIGTERM prints the counts
"""

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"exports": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        counts["exports"] += 1
        counts["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        print(f"otlp_sink: {counts['exports']} exports, {counts['bytes']} bytes", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
