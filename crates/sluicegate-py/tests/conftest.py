"""Brokers for the Python tests: the embedded one (in this process) and Apache Kafka (the one
``scripts/test`` starts, given as ``SLUICEGATE_TEST_BOOTSTRAP``)."""

import asyncio
import os
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import sluicegate
from sluicegate.testing import EmbeddedKafka

#: Bound on one phase of a test (a group join, a few hundred messages, a shutdown).
PHASE = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Broker:
    """A broker the tests write to and read from."""

    def __init__(self, name: str, bootstrap: str, embedded: Optional[EmbeddedKafka] = None):
        self.name = name
        self.bootstrap_servers = bootstrap
        self.embedded = embedded

    def create_topic(self, topic: str, partitions: int) -> None:
        if self.embedded is not None:
            self.embedded.create_topic(topic, partitions)
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        futures = admin.create_topics([NewTopic(topic, partitions, 1)])
        futures[topic].result(PHASE)

    def produce(self, topic: str, records: List[Tuple[Optional[int], str, bytes]]) -> List[Tuple[int, int]]:
        """Writes ``(partition, key, value)`` records (partition ``None``: by key) and waits for
        every acknowledgement; returns each one's ``(partition, offset)``, in order."""
        producer = Producer({"bootstrap.servers": self.bootstrap_servers, "acks": "all", "linger.ms": 5})
        placed: Dict[int, Tuple[int, int]] = {}
        errors: List[str] = []

        def acked(i: int) -> Callable:
            def callback(err, msg) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    placed[i] = (msg.partition(), msg.offset())

            return callback

        for i, (partition, key, value) in enumerate(records):
            kwargs = {} if partition is None else {"partition": partition}
            producer.produce(topic, value=value, key=key.encode(), on_delivery=acked(i), **kwargs)
            producer.poll(0)
        left = producer.flush(PHASE)
        assert left == 0 and not errors, f"{left} records unacknowledged; errors: {errors}"
        return [placed[i] for i in range(len(records))]

    def consumer(self, topic: str, **settings) -> sluicegate.Consumer:
        settings.setdefault("group_id", unique("group"))
        settings.setdefault("commit_interval", 0.1)
        settings.setdefault("config", {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"})
        return sluicegate.Consumer(bootstrap_servers=self.bootstrap_servers, topics=[topic], **settings)

    def read(self, topic: str, count: int, isolation: str = "read_committed") -> list:
        """``count`` records of ``topic`` from its start (within :data:`PHASE`);
        ``isolation="read_uncommitted"`` also reads records of aborted transactions."""
        reader = KafkaConsumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": unique("reader"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": isolation,
            }
        )
        reader.subscribe([topic])
        out = []
        deadline = time.monotonic() + PHASE
        try:
            while len(out) < count:
                assert time.monotonic() < deadline, f"read {len(out)} of {count} records of {topic}"
                m = reader.poll(0.2)
                if m is not None and m.error() is None:
                    out.append(m)
        finally:
            reader.close()
        return out


@pytest.fixture(params=["embedded", "kafka"])
def broker(request):
    if request.param == "embedded":
        kafka = EmbeddedKafka(1)
        yield Broker("embedded", kafka.bootstrap_servers, kafka)
        return
    bootstrap = os.environ.get("SLUICEGATE_TEST_BOOTSTRAP")
    if not bootstrap:
        pytest.fail(
            "SLUICEGATE_TEST_BOOTSTRAP is not set: run the suite with scripts/test, which starts "
            "Apache Kafka (or give a broker's host:port)"
        )
    yield Broker("kafka", bootstrap)


async def wait_until(what: str, done: Callable[[], bool], limit: float = PHASE) -> None:
    """Waits (bounded) until ``done()`` holds, checking every 20 ms."""
    deadline = asyncio.get_running_loop().time() + limit
    while not done():
        assert asyncio.get_running_loop().time() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.02)


async def run_until(consumer: sluicegate.Consumer, what: str, done: Callable[[], bool]) -> dict:
    """Runs ``consumer`` until ``done()`` holds (bounded as :func:`wait_until`), then shuts it
    down, also when the wait fails; returns the status it had when ``done()`` held."""
    running = asyncio.ensure_future(consumer.run())
    try:
        await wait_until(what, done)
        return consumer.status()
    finally:
        consumer.shutdown()
        await running


def committed_to(consumer: sluicegate.Consumer, topic: str, ends: Dict[int, int]) -> bool:
    committed = consumer.status()["committed"]
    return all(committed.get((topic, p)) == end for p, end in ends.items() if end > 0)


def ends_of(placed: List[Tuple[int, int]]) -> Dict[int, int]:
    ends: Dict[int, int] = {}
    for p, o in placed:
        ends[p] = max(ends.get(p, 0), o + 1)
    return ends
