"""Each program in examples/python runs to its end against its own embedded broker and prints
what it promises."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples" / "python"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("subscriber.py", "handled 500 events, last click"),
        ("batch_loader.py", "loaded 999 rows, 1 dead-lettered to rows.dlq"),
        ("resilient.py", "processed 300 orders, 6 after retries, in order per customer: True"),
        ("worker.py", "processed 500 orders, 500 results read back from processed-orders"),
    ],
)
def test_example_runs_to_its_end(name, expected):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout
