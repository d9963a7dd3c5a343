"""The HTTP service of deploy/compose/compose.yaml: answers 200 to every POST and prints the
record it got (topic, partition, offset, key and the body) on stdout. Standard library only."""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        place = "/".join(
            self.headers.get(h, "-")
            for h in ("Sluicegate-Topic", "Sluicegate-Partition", "Sluicegate-Offset")
        )
        print(f"{place} key={self.headers.get('Sluicegate-Key', '-')} {body!r}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass  # one line per record is printed above


ThreadingHTTPServer(("0.0.0.0", 8080), Echo).serve_forever()
