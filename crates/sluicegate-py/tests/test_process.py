"""A Python consumer process stopped with SIGTERM (it finishes what is in flight, commits
and exits cleanly) and killed with SIGKILL mid-stream (a restart handles again only what was
not committed, and nothing is lost). The consumer is ledger_consumer.py."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

from conftest import PHASE, ends_of, unique

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITIONS = 4


def start(broker, topic, group, ledger, work=0.005):
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "ledger_consumer.py"), broker.bootstrap_servers,
         topic, group, str(ledger), str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


#: How long before a kill a record may have been finished and still be handled again: the
#: consumer's commit interval (0.2 s) plus a commit's round trip on a loaded machine.
UNCOMMITTED_WINDOW = 1.0


def timed_lines(ledger):
    """The ledger's ``((partition, offset), finished_at)`` lines."""
    if not os.path.exists(ledger):
        return []
    with open(ledger) as f:
        out = []
        for line in f:
            if line.endswith("\n"):
                p, o, t = line.split()
                out.append(((int(p), int(o)), float(t)))
        return out


def lines(ledger):
    """The ledger's ``(partition, offset)`` lines."""
    return [place for place, _ in timed_lines(ledger)]


def wait_for_lines(ledger, n, process):
    deadline = time.monotonic() + PHASE
    while len(lines(ledger)) < n:
        assert process.poll() is None, f"the consumer exited: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"fewer than {n} records finished within {PHASE} s"
        time.sleep(0.02)


def committed(broker, group, topic):
    client = KafkaConsumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        tps = client.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=PHASE)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        client.close()


def fill(broker, topic, n):
    broker.create_topic(topic, PARTITIONS)
    return broker.produce(topic, [(None, f"key-{i % 32}", f"{i}".encode()) for i in range(n)])


def test_sigterm_finishes_what_is_in_flight_commits_and_exits(broker, tmp_path):
    topic, group, ledger = unique("py-term"), unique("py-term-group"), tmp_path / "ledger"
    fill(broker, topic, 2000)
    process = start(broker, topic, group, ledger)
    wait_for_lines(ledger, 100, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=PHASE)
    assert process.returncode == 0, err[-2000:]
    assert "finished work committed" in out
    done = lines(ledger)
    assert len(done) == len(set(done)), "a record was handled twice by one process"
    # Everything finished is committed, and nothing past unfinished work (key order finishes
    # out of offset order, so per partition the commit is the first gap).
    by_partition = {}
    for p, o in done:
        by_partition.setdefault(p, set()).add(o)
    expected = {}
    for p, offsets in by_partition.items():
        end = 0
        while end in offsets:
            end += 1
        expected[p] = end
    assert committed(broker, group, topic) == {p: e for p, e in expected.items() if e > 0}


def test_a_killed_consumer_loses_nothing_and_repeats_only_uncommitted_work(broker, tmp_path):
    topic, group, ledger = unique("py-kill"), unique("py-kill-group"), tmp_path / "ledger"
    placed = fill(broker, topic, 2000)
    first = start(broker, topic, group, ledger)
    wait_for_lines(ledger, 300, first)
    first.kill()
    first.wait(timeout=PHASE)
    killed_at = time.time()
    finished_at = dict(timed_lines(ledger))
    at_kill = lines(ledger)
    second = start(broker, topic, group, ledger)
    wait_for_lines(ledger, len(at_kill) + 1, second)
    deadline = time.monotonic() + PHASE
    while set(lines(ledger)) != set(placed):
        assert second.poll() is None, second.communicate()[1][-2000:]
        assert time.monotonic() < deadline, (
            f"{len(set(placed) - set(lines(ledger)))} records never finished"
        )
        time.sleep(0.05)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=PHASE)
    assert second.returncode == 0
    after = lines(ledger)[len(at_kill):]
    again = Counter(after) - Counter(set(after))
    assert not again, f"the restarted process handled records twice: {list(again)[:5]}"
    # Only work the killed process finished but had not committed yet may come again.
    stale = [r for r in set(after) & set(at_kill) if killed_at - finished_at[r] > UNCOMMITTED_WINDOW]
    assert not stale, f"handled again though finished long before the kill: {stale[:5]}"
    assert committed(broker, group, topic) == ends_of(placed)
