#!/usr/bin/env python3
"""A local HTTP service for a `sluicegate run` HTTP sink (Python's standard library only): it
prints each record POSTed to it and answers 200, which tells the worker the record is done.

    python3 examples/workers/http_service.py 18080    # listens on 127.0.0.1:18080

An answer of 429 or 5xx would make the worker retry the record; any other 4xx would send it to
the dead-letter topic.
"""
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


printing = threading.Lock()  # requests are served on several threads: one whole line each


class Records(BaseHTTPRequestHandler):
    def do_POST(self):
        value = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        h = self.headers
        with printing:
            print(f"{h['Sluicegate-Topic']}/{h['Sluicegate-Partition']}/"
                  f"{h['Sluicegate-Offset']}: {value.decode(errors='replace')}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass  # one line per record is enough


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18080
    ThreadingHTTPServer(("127.0.0.1", port), Records).serve_forever()
