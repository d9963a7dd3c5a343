#!/usr/bin/env python3
"""A `sluicegate run` exec worker: one JSON request per line on stdin, one JSON answer per
line on stdout. This one prints each record on stderr and answers "ok".

Run with: sluicegate run --config examples/workers/echo.yaml --embedded 5
"""
import json
import sys

for line in sys.stdin:
    request = json.loads(line)
    # key, value and header values: a string (UTF-8), null, or {"base64": "..."}.
    print(f"{request['topic']}/{request['partition']}/{request['offset']}: {request['value']}",
          file=sys.stderr, flush=True)
    # "ok" (done), "retry" (try again later), "fail" (dead-letter, with "error"), "skip".
    answer = {"id": request["id"], "result": "ok"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
