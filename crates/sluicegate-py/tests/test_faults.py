"""Faults: commit requests refused by the embedded broker (``request_errors``), and a handler
that blocks the event loop past ``max.poll.interval.ms`` (embedded broker and Apache Kafka)."""

import asyncio
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

import sluicegate
from conftest import PHASE, Broker, committed_to, ends_of, run_until, unique
from sluicegate.testing import EmbeddedKafka

COMMIT_ERRORS = ["NOT_COORDINATOR", "REQUEST_TIMED_OUT", "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


def committed_by_the_broker(bootstrap, group, topic, partitions):
    client = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = client.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=PHASE)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        client.close()


def test_a_consumer_rides_out_refused_commits_without_loss(caplog):
    """The embedded broker refuses commits (not the coordinator, timed out, coordinator
    unavailable or loading) before the consumer starts and again mid-stream: the consumer
    retries them, every record is handled, and the group's committed offsets reach the log
    ends."""
    kafka = EmbeddedKafka(1)
    broker = Broker("embedded", kafka.bootstrap_servers, kafka)
    topic, group = unique("py-commit-faults"), unique("py-commit-faults-group")
    broker.create_topic(topic, 2)
    placed = broker.produce(topic, [(i % 2, f"k{i}", f"{i}".encode()) for i in range(300)])
    ends = ends_of(placed)
    kafka.request_errors("offset_commit", COMMIT_ERRORS)
    consumer = broker.consumer(topic, group_id=group, commit_interval=0.05)
    handled = Counter()
    halfway = asyncio.Event()

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        handled[(msg.partition, msg.offset)] += 1
        if len(handled) == 150:
            # Mid-stream, a second round of refusals.
            kafka.request_errors("offset_commit", COMMIT_ERRORS)
            halfway.set()

    async def scenario():
        await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends))

    with caplog.at_level("WARNING", logger="sluicegate"):
        run(scenario())
    assert halfway.is_set()
    assert set(handled) == set(placed), f"{len(set(placed) - set(handled))} records never handled"
    assert committed_by_the_broker(kafka.bootstrap_servers, group, topic, 2) == ends
    refused = [r.getMessage() for r in caplog.records if "commit" in r.getMessage()]
    assert refused, "the broker refused no commit: the faults were not injected"


def test_unknown_request_kinds_and_error_names_are_refused_naming_the_choices():
    kafka = EmbeddedKafka(1)
    with pytest.raises(ValueError, match="offset_commit"):
        kafka.request_errors("offset_comit", ["NOT_COORDINATOR"])
    with pytest.raises(ValueError, match="NOT_COORDINATOR"):
        kafka.request_errors("offset_commit", ["NOT_A_COORDINATOR"])
    kafka.request_errors("fetch", ["NOT_LEADER_FOR_PARTITION"] * 3)
    kafka.clear_request_errors("fetch")


#: max.poll.interval.ms for the blocking test (librdkafka wants at least session.timeout.ms).
POLL_INTERVAL_MS = 6000


def test_a_handler_blocking_the_event_loop_past_max_poll_interval_keeps_the_membership(broker):
    """An ``async def`` handler calls ``time.sleep`` (blocking the event loop: no message is
    taken or finished meanwhile) for longer than ``max.poll.interval.ms``: the Rust poll thread
    keeps polling, so the consumer is not evicted: no rebalance after the first assignment,
    every record handled exactly once and committed."""
    topic = unique("py-blocking")
    broker.create_topic(topic, 2)
    placed = broker.produce(topic, [(i % 2, f"k{i}", f"{i}".encode()) for i in range(40)])
    ends = ends_of(placed)
    consumer = broker.consumer(
        topic,
        config={
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "500",
            "max.poll.interval.ms": str(POLL_INTERVAL_MS),
        },
    )
    handled = Counter()
    blocked = []

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        if not blocked:
            started = time.monotonic()
            time.sleep(POLL_INTERVAL_MS / 1000 * 1.5)  # blocks the whole event loop
            blocked.append(time.monotonic() - started)
        handled[(msg.partition, msg.offset)] += 1

    async def scenario():
        return await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends))

    status = run(scenario())
    assert blocked and blocked[0] > POLL_INTERVAL_MS / 1000
    assert status["rebalances"] == 1 and status["joined"], status
    assert sorted(status["assigned"]) == [(topic, 0), (topic, 1)]
    assert set(handled) == set(placed) and set(handled.values()) == {1}, handled
