"""Runs: in the ordered modes a lane's next messages go to Python together and are handled one
after the other. What a run must never do: handle a message before the one ahead of it has
succeeded (a retry, a timed-out call), handle one twice, or leave work done ahead uncommitted
when its partition moves to another consumer."""

import asyncio
import threading
import time
from collections import Counter, defaultdict

import pytest

import sluicegate
from conftest import PHASE, committed_to, ends_of, run_until, unique, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


@pytest.mark.parametrize("kind", ["async", "def"])
@pytest.mark.parametrize("ordering", ["partition", "key"])
def test_a_failure_or_a_timeout_mid_run_holds_back_what_follows_it(broker, ordering, kind):
    """2 partitions of 300 records (10 keys), ``async def`` and ``def`` handlers. Offset 50 of
    each partition fails twice before it succeeds; offset 120's first call outlives
    ``handler_timeout`` (and finishes later, as Python cannot cancel a call the runtime gave
    up on). In partition order each partition's calls are its offsets in order, each once, but
    for those two repeated before anything after them; in key order the same holds per key."""
    topic = unique("py-runs")
    broker.create_topic(topic, 2)
    placed = broker.produce(topic, [(i % 2, f"k{i % 10}", f"{i}".encode()) for i in range(600)])
    ends = ends_of(placed)
    consumer = broker.consumer(
        topic,
        ordering=ordering,
        handler_timeout=0.5,
        retry=sluicegate.Retry(initial_backoff=0.01, max_backoff=0.05, jitter=0.0),
    )
    calls = defaultdict(list)
    by_key = defaultdict(list)
    lock = threading.Lock()

    def record(msg: sluicegate.Message) -> int:
        with lock:
            seen = calls[msg.partition]
            seen.append(msg.offset)
            by_key[(msg.partition, msg.key)].append(msg.offset)
            return seen.count(msg.offset)

    if kind == "async":

        @consumer.handler
        async def handle(msg: sluicegate.Message) -> None:
            n = record(msg)
            if msg.offset == 50 and n <= 2:
                raise sluicegate.RetryableError("not yet")
            if msg.offset == 120 and n == 1:
                await asyncio.sleep(1.5)

    else:

        @consumer.handler
        def handle(msg: sluicegate.Message) -> None:
            n = record(msg)
            if msg.offset == 50 and n <= 2:
                raise sluicegate.RetryableError("not yet")
            if msg.offset == 120 and n == 1:
                time.sleep(1.5)

    async def scenario():
        await run_until(consumer, "commits at the log ends", lambda: committed_to(consumer, topic, ends))

    run(scenario())

    def expected(offsets):
        repeats = {50: 2, 120: 1}
        return [o for o in sorted(set(offsets)) for _ in range(1 + repeats.get(o, 0))]

    for partition, end in ends.items():
        if ordering == "partition":
            assert calls[partition] == expected(range(end)), (partition, calls[partition][:60])
        else:
            assert sorted(set(calls[partition])) == list(range(end)), partition
    for (partition, key), offsets in by_key.items():
        assert offsets == expected(offsets), (partition, key, offsets[:20])


# Apache Kafka only: the embedded broker refuses commits while its group rebalances
# (RebalanceInProgress), so a revoked partition's final commit cannot land there.
@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
def test_work_done_ahead_is_committed_when_a_rebalance_moves_its_partition(broker):
    """A consumer handles 4 partitions' runs (a handler awaiting 2 ms per record); a second
    consumer of the group joins halfway, so partitions move while runs are under way. Every
    record is handled exactly once between the two: what the first did ahead was committed
    when its partitions were revoked, and nothing after was started."""
    topic, group = unique("py-runs-rebalance"), unique("py-runs-rebalance-group")
    broker.create_topic(topic, 4)
    placed = broker.produce(topic, [(None, f"k{i}", f"{i}".encode()) for i in range(2000)])
    ends = ends_of(placed)
    handled = Counter()
    by = Counter()

    def consumer(name):
        c = broker.consumer(topic, group_id=group, ordering="partition")

        @c.handler
        async def handle(msg: sluicegate.Message) -> None:
            await asyncio.sleep(0.002)
            handled[(msg.partition, msg.offset)] += 1
            by[name] += 1

        return c

    first, second = consumer("first"), consumer("second")

    async def scenario():
        running = asyncio.ensure_future(first.run())
        try:
            await wait_until("the first consumer handled 500 records", lambda: by["first"] >= 500)
            await run_until(second, "every record handled and committed", lambda: (
                len(handled) == len(placed) and all(
                    {**first.status()["committed"], **second.status()["committed"]}.get((topic, p)) == end
                    for p, end in ends.items() if end > 0
                )
            ))
        finally:
            first.shutdown()
            await running

    run(scenario())
    assert by["second"] > 0, "the second consumer never got a partition"
    assert sum(handled.values()) == len(placed) and set(handled.values()) == {1}, [
        place for place, n in handled.items() if n > 1
    ][:10]


def test_work_ahead_counts_against_max_in_flight(broker):
    """8 partitions of 40 records in partition order with ``max_in_flight=2`` and a handler
    awaiting 1 ms: runs hand each partition's messages to Python together (a message handled in
    the task of the one before it), yet never more than 2 handler calls run at once."""
    topic = unique("py-runs-limit")
    broker.create_topic(topic, 8)
    placed = broker.produce(topic, [(i % 8, f"k{i}", b"x") for i in range(320)])
    ends = ends_of(placed)
    consumer = broker.consumer(topic, ordering="partition", max_in_flight=2)
    running = 0
    most = 0
    task_of = {}

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        task_of[(msg.partition, msg.offset)] = asyncio.current_task()
        try:
            await asyncio.sleep(0.001)
        finally:
            running -= 1

    async def scenario():
        await run_until(consumer, "commits at the log ends", lambda: committed_to(consumer, topic, ends))

    run(scenario())
    assert most <= 2, f"{most} handler calls at once with max_in_flight=2"
    in_runs = sum(1 for (p, o), task in task_of.items() if task_of.get((p, o - 1)) is task)
    assert in_runs > 0, "no message was handled in a run"
