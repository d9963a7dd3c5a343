"""The output producer (``consumer.output()``) against the embedded broker and Apache Kafka:
sends acknowledged before the input is committed, with keys, headers and partitions as asked;
a failed send raises ``OutputError`` and retries the input."""

import asyncio
import json
from collections import Counter

import pytest

import sluicegate
from conftest import PHASE, committed_to, ends_of, run_until, unique, wait_until
from sluicegate.testing import EmbeddedKafka


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


def test_sends_return_where_the_broker_acknowledged_each_result(broker):
    """100 inputs over 2 partitions; the handler sends one result per input (even ones by key,
    odd ones to partition 1, with headers) and records the ``(partition, offset)`` ``send``
    returned. Once the inputs are committed, the output topic holds exactly one result per
    input, where ``send`` said, with its key, value and headers."""
    topic, results = unique("py-out-in"), unique("py-out-results")
    broker.create_topic(topic, 2)
    broker.create_topic(results, 2)
    placed = broker.produce(topic, [(i % 2, f"k{i}", json.dumps({"n": i}).encode()) for i in range(100)])
    ends = ends_of(placed)
    consumer = broker.consumer(topic)
    out = consumer.output()
    assert consumer.output() is out, "one producer per consumer"
    landed = {}

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        n = msg.json()["n"]
        landed[n] = await out.send(
            results,
            json.dumps({"n": n, "double": 2 * n}),
            key=f"result-{n}".encode(),
            headers={"origin": f"{msg.partition}/{msg.offset}"} if n % 2 == 0 else [("origin", b"odd")],
            partition=None if n % 2 == 0 else 1,
        )

    async def scenario():
        await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends))

    run(scenario())
    assert sorted(landed) == list(range(100))
    records = broker.read(results, 100)
    by_n = {json.loads(r.value())["n"]: r for r in records}
    assert sorted(by_n) == list(range(100)), "each result exactly once"
    for n, r in by_n.items():
        assert landed[n] == (r.partition(), r.offset()), n
        assert r.key() == f"result-{n}".encode()
        assert json.loads(r.value())["double"] == 2 * n
        origin = dict(r.headers())["origin"]
        assert origin == (f"{placed[n][0]}/{placed[n][1]}".encode() if n % 2 == 0 else b"odd"), (n, origin)
        if n % 2:
            assert r.partition() == 1


def test_a_failed_send_raises_output_error_and_the_input_is_retried(broker):
    """A send to a partition the topic does not have fails with ``OutputError`` (a
    ``RetryableError`` naming the topic); uncaught, the input is retried, and its second
    attempt's result is the only one written. Values of a wrong type raise ``TypeError``."""
    topic, results = unique("py-out-fail"), unique("py-out-fail-results")
    broker.create_topic(topic, 1)
    broker.create_topic(results, 1)
    placed = broker.produce(topic, [(0, f"k{i}", f"{i}".encode()) for i in range(10)])
    consumer = broker.consumer(
        topic, retry=sluicegate.Retry(initial_backoff=0.005, max_backoff=0.02, jitter=0.0)
    )
    out = consumer.output()
    attempts = Counter()
    failures = []

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        attempts[msg.offset] += 1
        if msg.offset == 4 and attempts[msg.offset] == 1:
            try:
                await out.send(results, msg.value, partition=99)
            except sluicegate.OutputError as e:
                failures.append(e)
                raise
        if msg.offset == 5 and attempts[msg.offset] == 1:
            with pytest.raises(TypeError, match="bytes, str or None"):
                await out.send(results, 12345)
        await out.send(results, msg.value)

    async def scenario():
        await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends_of(placed)))

    run(scenario())
    assert len(failures) == 1
    failure = failures[0]
    assert isinstance(failure, sluicegate.RetryableError) and isinstance(failure, sluicegate.SluicegateError)
    assert results in str(failure), str(failure)
    assert attempts[4] == 2 and all(attempts[o] == 1 for o in range(10) if o != 4), attempts
    values = sorted(int(r.value()) for r in broker.read(results, 10))
    assert values == list(range(10))


def test_output_is_taken_before_run():
    """``output()`` on a running consumer is refused with a message saying when to call it."""
    kafka = EmbeddedKafka(1)
    kafka.create_topic("orders", 1)
    consumer = sluicegate.Consumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=unique("g"), topics=["orders"],
        config={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
    )

    @consumer.handler
    async def handle(msg):
        pass

    async def scenario():
        running = asyncio.ensure_future(consumer.run())
        await wait_until("joined", lambda: consumer.status()["joined"])
        try:
            with pytest.raises(sluicegate.SluicegateError, match="before run"):
                consumer.output()
        finally:
            consumer.shutdown()
            await running

    run(scenario())
