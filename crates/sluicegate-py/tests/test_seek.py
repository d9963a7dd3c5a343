"""``consumer.seek`` (an offset, the beginning, the end, a time) and ``consumer.lag()`` against
the embedded broker and Apache Kafka."""

import asyncio
import datetime

import pytest

import sluicegate
from conftest import PHASE, unique, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 3))


def test_lag_reports_the_backlog_and_seek_moves_the_partition(broker):
    """50 records in one partition, the handler held at offset 20: ``lag()`` reports the 30
    records above the commit, then 0 once released. ``seek`` to offset 10, to the beginning
    and to the end each return the offset the partition starts from and the handler sees
    exactly the records from there; a time (Apache Kafka only: the embedded broker finds no
    offset by time) moves to the first record at or after it. A partition not assigned, a bad
    target and a stopped consumer are refused."""
    topic = unique("py-seek")
    broker.create_topic(topic, 1)
    broker.produce(topic, [(0, "k", f"{i}".encode()) for i in range(50)])
    tp = (topic, 0)
    consumer = broker.consumer(topic)
    seen = []
    times = {}
    release = asyncio.Event()

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        if msg.offset == 20:
            await release.wait()
        seen.append(msg.offset)
        times[msg.offset] = msg.timestamp

    def passes():
        """What the handler saw since the last call."""
        done = list(seen)
        seen.clear()
        return done

    def committed():
        return consumer.status()["committed"].get(tp)

    async def scenario():
        running = asyncio.ensure_future(consumer.run())
        try:
            await wait_until("lag of 30 above the held record", lambda: consumer.lag().get(tp) == 30)
            release.set()
            await wait_until("lag 0 at the log end", lambda: committed() == 50 and consumer.lag().get(tp) == 0)
            assert passes() == list(range(50))

            assert await consumer.seek(topic, 0, 10) == 10
            await wait_until("offsets 10..49 again", lambda: len(seen) == 40 and committed() == 50)
            assert passes() == list(range(10, 50))

            assert await consumer.seek(topic, 0, "beginning") == 0
            await wait_until("offsets 0..49 again", lambda: len(seen) == 50 and committed() == 50)
            assert passes() == list(range(50))

            if broker.name == "kafka":
                first_at = times[30]
                expected = min(o for o, t in times.items() if t >= first_at)
                at = datetime.datetime.fromtimestamp(first_at / 1000, tz=datetime.timezone.utc)
                assert await consumer.seek(topic, 0, at) == expected
                await wait_until("the records from the time", lambda: len(seen) == 50 - expected and committed() == 50)
                assert passes() == list(range(expected, 50))

            assert await consumer.seek(topic, 0, "end") == 50
            broker.produce(topic, [(0, "k", f"{i}".encode()) for i in range(50, 55)])
            await wait_until("only the records written after", lambda: committed() == 55)
            assert passes() == list(range(50, 55))

            with pytest.raises(sluicegate.SluicegateError, match="assigned|assign"):
                await consumer.seek(topic, 7, "beginning")
            with pytest.raises(ValueError, match="middle"):
                await consumer.seek(topic, 0, "middle")
        finally:
            consumer.shutdown()
            await running
        with pytest.raises(sluicegate.SluicegateError, match="not running"):
            await consumer.seek(topic, 0, "beginning")

    run(scenario())
