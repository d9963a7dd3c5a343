"""``exactly_once=``: the outputs a handler call sends are written by the Kafka transaction of
the output producer that commits the input's offset; a failed call's outputs are never
written."""

import asyncio
from collections import Counter

import pytest

import sluicegate
from conftest import PHASE, committed_to, ends_of, run_until, unique


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


def eos_consumer(broker, topic: str) -> sluicegate.Consumer:
    """An exactly-once consumer of ``topic`` with quick retries."""
    return broker.consumer(
        topic,
        exactly_once=unique("txn"),
        retry=sluicegate.Retry(initial_backoff=0.01, max_backoff=0.05, jitter=0.0),
    )


def test_outputs_of_a_failed_handler_are_never_written_and_each_input_is_output_once(broker):
    """The handler writes each input to an output topic; for one record it fails after its send
    (so that output is dropped, and the record retried). Each input's output is written exactly
    once, even as a ``read_uncommitted`` reader sees it (so on every broker: no transaction
    aborted), and the group commits the log end."""
    topic, out_topic = unique("py-eos"), unique("py-eos-out")
    broker.create_topic(topic, 2)
    broker.create_topic(out_topic, 1)
    placed = broker.produce(topic, [(i % 2, f"k{i}", f"v{i}".encode()) for i in range(20)])
    ends = ends_of(placed)
    consumer = eos_consumer(broker, topic)
    out = consumer.output()
    calls = Counter()

    @consumer.handler
    async def handle(msg: sluicegate.Message):
        calls[msg.value] += 1
        await out.send(out_topic, msg.value, key=msg.key)
        if msg.value == b"v7" and calls[msg.value] == 1:
            raise sluicegate.RetryableError("failed after its output was sent")

    status = run(run_until(consumer, "every record is committed", lambda: committed_to(consumer, topic, ends)))
    assert calls[b"v7"] == 2
    assert status["transactions_committed"] >= 1 and status["transactions_aborted"] == 0, status
    expected = Counter(f"v{i}".encode() for i in range(20))
    assert Counter(m.value() for m in broker.read(out_topic, 20)) == expected
    # 21 calls sent 21 outputs: the failed call's was never written, aborted or not.
    assert Counter(m.value() for m in broker.read(out_topic, 20, "read_uncommitted")) == expected


def test_a_def_handlers_outputs_belong_to_its_call(broker):
    """A plain ``def`` handler runs in a thread and sends through the event loop
    (``run_coroutine_threadsafe``, as ``Output``'s docs say): its outputs are still its call's,
    so the failed call's output is never written and each input's output is written once."""
    topic, out_topic = unique("py-eos-def"), unique("py-eos-def-out")
    broker.create_topic(topic, 1)
    broker.create_topic(out_topic, 1)
    placed = broker.produce(topic, [(0, f"k{i}", f"v{i}".encode()) for i in range(10)])
    consumer = eos_consumer(broker, topic)
    out = consumer.output()
    calls = Counter()
    loops = []

    @consumer.handler
    def handle(msg: sluicegate.Message):
        calls[msg.value] += 1
        asyncio.run_coroutine_threadsafe(out.send(out_topic, msg.value, key=msg.key), loops[0]).result(PHASE)
        if msg.value == b"v3" and calls[msg.value] == 1:
            raise sluicegate.RetryableError("failed after its output was sent")

    async def main():
        loops.append(asyncio.get_running_loop())
        return await run_until(consumer, "every record is committed", lambda: committed_to(consumer, topic, ends_of(placed)))

    status = run(main())
    assert calls[b"v3"] == 2 and status["transactions_aborted"] == 0, (calls, status)
    expected = Counter(f"v{i}".encode() for i in range(10))
    assert Counter(m.value() for m in broker.read(out_topic, 10, "read_uncommitted")) == expected


def test_exactly_once_refuses_a_messages_loop():
    consumer = sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"], exactly_once="txn")

    async def loop():
        async for _ in consumer.messages():
            pass

    with pytest.raises(sluicegate.ConfigError, match="exactly_once"):
        asyncio.run(loop())


def test_an_empty_transactional_id_is_refused():
    with pytest.raises(sluicegate.ConfigError, match="exactly_once"):
        sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"], exactly_once="")
