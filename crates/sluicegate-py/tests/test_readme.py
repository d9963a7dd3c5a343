"""The README's Python example runs as pasted and prints what it promises."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Use it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_pasted():
    code = readme_example()
    assert "EmbeddedKafka()" in code and "consumer.run()" in code
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    total = sum(100 + i for i in range(1000))
    assert f"{total} cents, 1 dead-lettered, all committed" in done.stdout, done.stdout
