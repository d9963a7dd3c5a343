"""Python consumers side by side on one broker and one backlog (issue 18, point 5).

    python crates/sluicegate-py/bench/consume.py [--messages 100000] [--partitions 8]
        [--rounds 3]

Writes a backlog of JSON records (~220 bytes, 1,000 keys) to an embedded broker in this
process (whose CPU every runner's figure includes alike), then, in each
round and in turn, reads all of it with each runner under a group of its own, every runner
doing the same work per record (``json.loads`` of the value, reading one field) and committing
after processing:

- ``sluicegate``: an ``async def`` handler, partition order (commits of finished offsets);
- ``confluent poll``: confluent-kafka's ``poll()`` loop, offsets stored after processing and
  committed by the client's auto-commit (the at-least-once pattern of its docs);
- ``confluent consume``: the same with ``consume(num_messages=500)``.

Prints each runner's msg/s, CPU seconds per 1,000 messages and its msg/s as a ratio to the
fastest confluent-kafka runner of the same round, then min/median/max over the rounds.
"""

import argparse
import asyncio
import json
import resource
import statistics
import time
import uuid

from confluent_kafka import Consumer as KafkaConsumer

import sluicegate
from sluicegate.testing import EmbeddedKafka


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def work(value: bytes) -> int:
    return json.loads(value)["id"]


def sluicegate_runner(bootstrap: str, topic: str, n: int) -> None:
    consumer = sluicegate.Consumer(
        bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex}", topics=[topic],
        max_in_flight=1000,
    )
    seen = 0

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        nonlocal seen
        work(msg.value)
        seen += 1
        if seen == n:
            consumer.shutdown()

    asyncio.run(consumer.run())


def confluent_runner(bootstrap: str, topic: str, n: int, batch: bool) -> None:
    c = KafkaConsumer({
        "bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
    })
    c.subscribe([topic])
    seen = 0
    while seen < n:
        msgs = c.consume(num_messages=500, timeout=1.0) if batch else [c.poll(1.0)]
        for m in msgs:
            if m is None or m.error():
                continue
            work(m.value())
            c.store_offsets(m)
            seen += 1
    c.close()  # commits the stored offsets


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    kafka = EmbeddedKafka()
    bootstrap = kafka.bootstrap_servers
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, a.partitions)
    for start in range(0, a.messages, 50_000):
        kafka.produce(topic, [
            (f"key-{i % 1000}", json.dumps({"id": i, "pad": "x" * 200}))
            for i in range(start, min(a.messages, start + 50_000))
        ])
    runners = {
        "sluicegate": lambda: sluicegate_runner(bootstrap, topic, a.messages),
        "confluent poll": lambda: confluent_runner(bootstrap, topic, a.messages, False),
        "confluent consume": lambda: confluent_runner(bootstrap, topic, a.messages, True),
    }
    ratios = {name: [] for name in runners}
    for r in range(a.rounds):
        rates, cpus = {}, {}
        for name, run in runners.items():
            t0, c0 = time.perf_counter(), cpu()
            run()
            took, used = time.perf_counter() - t0, cpu() - c0
            rates[name] = a.messages / took
            cpus[name] = used * 1000 / a.messages
        best = max(rates["confluent poll"], rates["confluent consume"])
        for name in runners:
            ratios[name].append(rates[name] / best)
            print(f"round {r + 1} | {name:17} | {rates[name]:>9,.0f} msg/s | "
                  f"{cpus[name]:.3f} CPU s per 1k | {rates[name] / best:.2f}x", flush=True)
    for name, rs in ratios.items():
        print(f"{name:17} | vs fastest confluent-kafka runner: min {min(rs):.2f} "
              f"median {statistics.median(rs):.2f} max {max(rs):.2f}")


if __name__ == "__main__":
    main()
