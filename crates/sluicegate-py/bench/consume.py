"""Python consumers side by side on one broker and one backlog (issue 18, point 5).

    pip install aiokafka kafka-python      # beside the package and confluent-kafka
    python crates/sluicegate-py/bench/consume.py [--messages 100000] [--partitions 8]
        [--rounds 3] [--bootstrap HOST:PORT] [--runners NAME,NAME...]

Writes a backlog of JSON records (~220 bytes, 1,000 keys) to a topic (on an embedded broker in
this process, or on the broker at ``--bootstrap``), then, in each round and in turn, reads all
of it with each runner under a group of its own, every runner doing the same work per record
(``json.loads`` of the value, reading one field) and committing after processing:

- ``sluicegate``: an ``async def`` handler, partition order (commits of finished offsets);
- ``sluicegate def``: the same with a plain ``def`` handler (run in the thread pool);
- ``sluicegate key sleep``: an ``async def`` handler that also awaits ``asyncio.sleep(0.02)``
  (a slow downstream call), in key order (1,000 keys, 1,000 in flight); not a Python
  client's workload, so not in the ratios: the issue's target is 25,000 msg/s from one process;
- ``confluent poll`` / ``confluent consume``: confluent-kafka's ``poll()`` and
  ``consume(num_messages=500)`` loops, offsets stored after processing and committed by the
  client's auto-commit (the at-least-once pattern of its docs);
- ``confluent aio``: confluent-kafka's asyncio consumer (``confluent_kafka.aio.AIOConsumer``,
  if the installed version has it), ``consume(500)``, the batch's offsets stored after it;
- ``aiokafka async for`` / ``aiokafka getmany``: aiokafka without auto-commit, ``commit()``
  of the processed position once a second (and at the end);
- ``kafka-python``: ``poll()`` batches, the same commits.

Each runner runs in a process of its own (the broker's, embedded, stays in this one), which
reports: msg/s from its first message to its last, CPU seconds (user + system, all threads)
per 1,000 messages over the same span, and its peak RSS (``VmHWM``, the interpreter and its
imports included). Group joins are outside the span; the final commit and close are not
timed. Printed per round: each runner's figures and its msg/s as a ratio to the fastest Python
client of that round; then min/median/max of each ratio over the rounds.
"""

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
import uuid

#: The Python clients the ratios are taken against.
CLIENTS = [
    "confluent poll", "confluent consume", "confluent aio",
    "aiokafka async for", "aiokafka getmany", "kafka-python",
]
RUNNERS = ["sluicegate", "sluicegate def", "sluicegate key sleep", *CLIENTS]


def work(value: bytes) -> int:
    return json.loads(value)["id"]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """Counts handled messages; times the span from the first to the ``n``-th."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0
        self.start = self.end = (0.0, 0.0)

    def tick(self) -> bool:
        """Counts one message; true once all ``n`` are handled."""
        self.seen += 1
        if self.seen == 1:
            self.start = (time.perf_counter(), cpu())
        if self.seen == self.n:
            self.end = (time.perf_counter(), cpu())
        return self.seen >= self.n

    def report(self) -> dict:
        took, used = self.end[0] - self.start[0], self.end[1] - self.start[1]
        k = max(self.n - 1, 1)
        return {
            "rate": k / took,
            "cpu_per_1k": used * 1000 / k,
            "rss_mb": peak_rss_mb(),
        }


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` would include the parent's
    peak from before the ``fork``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def group() -> str:
    return f"bench-{uuid.uuid4().hex}"


def run_sluicegate(bootstrap: str, topic: str, meter: Meter, mode: str) -> None:
    import threading

    import sluicegate

    consumer = sluicegate.Consumer(
        bootstrap_servers=bootstrap, group_id=group(), topics=[topic], max_in_flight=1000,
        ordering="key" if mode == "key sleep" else "partition",
    )

    def count() -> None:
        if meter.tick() and meter.seen == meter.n:
            consumer.shutdown()

    if mode == "def":
        lock = threading.Lock()

        @consumer.handler
        def handle_sync(msg: sluicegate.Message) -> None:
            work(msg.value)
            with lock:
                count()
    elif mode == "key sleep":
        @consumer.handler
        async def handle_slow(msg: sluicegate.Message) -> None:
            await asyncio.sleep(0.02)
            work(msg.value)
            count()
    else:
        @consumer.handler
        async def handle(msg: sluicegate.Message) -> None:
            work(msg.value)
            count()

    asyncio.run(consumer.run())


def run_confluent(bootstrap: str, topic: str, meter: Meter, batch: bool) -> None:
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group(),
        "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
    })
    c.subscribe([topic])
    done = False
    while not done:
        msgs = c.consume(num_messages=500, timeout=1.0) if batch else [c.poll(1.0)]
        for m in msgs:
            if m is None or m.error():
                continue
            work(m.value())
            c.store_offsets(m)
            done = meter.tick()
    c.close()  # commits the stored offsets


def run_confluent_aio(bootstrap: str, topic: str, meter: Meter) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.aio import AIOConsumer

    async def main() -> None:
        c = AIOConsumer({
            "bootstrap.servers": bootstrap, "group.id": group(),
            "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
        })
        await c.subscribe([topic])
        done = False
        while not done:
            last = {}
            for m in await c.consume(num_messages=500, timeout=1.0):
                if m.error():
                    continue
                work(m.value())
                last[m.partition()] = m.offset()
                done = meter.tick()
            if last:
                await c.store_offsets(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()])
        await c.close()

    asyncio.run(main())


def run_aiokafka(bootstrap: str, topic: str, meter: Meter, getmany: bool) -> None:
    from aiokafka import AIOKafkaConsumer

    async def main() -> None:
        c = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group(),
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await c.start()
        committed = time.monotonic()
        try:
            if getmany:
                done = False
                while not done:
                    for msgs in (await c.getmany(timeout_ms=1000)).values():
                        for m in msgs:
                            work(m.value)
                            done = meter.tick()
                    if time.monotonic() - committed >= 1:
                        await c.commit()
                        committed = time.monotonic()
            else:
                async for m in c:
                    work(m.value)
                    if meter.tick():
                        break
                    if time.monotonic() - committed >= 1:
                        await c.commit()
                        committed = time.monotonic()
            await c.commit()
        finally:
            await c.stop()

    asyncio.run(main())


def run_kafka_python(bootstrap: str, topic: str, meter: Meter, embedded: bool) -> None:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group(),
        auto_offset_reset="earliest", enable_auto_commit=False,
        # kafka-python 3.0 cannot decode the embedded broker's answer to its version probe.
        api_version=(2, 0) if embedded else None,
    )
    committed = time.monotonic()
    done = False
    while not done:
        for msgs in c.poll(timeout_ms=1000).values():
            for m in msgs:
                work(m.value)
                done = meter.tick()
        if time.monotonic() - committed >= 1:
            c.commit()
            committed = time.monotonic()
    c.commit()
    c.close()


def run_one(name: str, bootstrap: str, topic: str, n: int, embedded: bool) -> None:
    """The child process: runs runner ``name`` and prints its figures as JSON."""
    meter = Meter(n)
    if name.startswith("sluicegate"):
        run_sluicegate(bootstrap, topic, meter, name[len("sluicegate "):])
    elif name in ("confluent poll", "confluent consume"):
        run_confluent(bootstrap, topic, meter, name == "confluent consume")
    elif name == "confluent aio":
        run_confluent_aio(bootstrap, topic, meter)
    elif name.startswith("aiokafka"):
        run_aiokafka(bootstrap, topic, meter, name == "aiokafka getmany")
    elif name == "kafka-python":
        run_kafka_python(bootstrap, topic, meter, embedded)
    else:
        raise SystemExit(f"unknown runner {name!r}")
    print(json.dumps(meter.report()), flush=True)


def available(name: str) -> bool:
    try:
        if name == "confluent aio":
            import confluent_kafka.aio  # noqa: F401
        elif name.startswith("aiokafka"):
            import aiokafka  # noqa: F401
        elif name == "kafka-python":
            import kafka  # noqa: F401
    except ImportError:
        return False
    return True


def backlog(a: argparse.Namespace) -> tuple:
    """Writes the backlog; returns ``(bootstrap, topic, broker)`` (the broker kept alive)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    records = [(f"key-{i % 1000}", json.dumps({"id": i, "pad": "x" * 200})) for i in range(a.messages)]
    if a.bootstrap is None:
        from sluicegate.testing import EmbeddedKafka

        kafka = EmbeddedKafka()
        kafka.create_topic(topic, a.partitions)
        for start in range(0, a.messages, 50_000):
            kafka.produce(topic, records[start:start + 50_000])
        return kafka.bootstrap_servers, topic, kafka
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, a.partitions, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 20, "acks": "all"})
    failed = []
    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=lambda e, _m: e and failed.append(e))
                break
            except BufferError:
                p.poll(0.1)
    p.flush(60)
    if failed or len(p) != 0:
        raise SystemExit(f"backlog not written: {failed[:3]}")
    return a.bootstrap, topic, None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bootstrap", help="a broker to use instead of an embedded one")
    p.add_argument("--runners", help="comma-separated runner names (default: all available)")
    p.add_argument("--run", help=argparse.SUPPRESS)  # the child process: this runner
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.run:
        run_one(a.run, a.bootstrap, a.topic, a.messages, a.embedded)
        return
    embedded = a.bootstrap is None
    names = a.runners.split(",") if a.runners else RUNNERS
    names = [n for n in names if available(n)]
    bootstrap, topic, _broker = backlog(a)
    print(f"{a.messages:,} messages over {a.partitions} partitions at {bootstrap}; "
          f"runners: {', '.join(names)}", flush=True)
    ratios: dict = {n: [] for n in names}
    figures: dict = {n: [] for n in names}
    for r in range(a.rounds):
        got = {}
        for name in names:
            out = subprocess.run(
                [sys.executable, __file__, "--run", name, "--bootstrap", bootstrap,
                 "--topic", topic, "--messages", str(a.messages)] + ["--embedded"] * embedded,
                check=True, stdout=subprocess.PIPE, text=True, timeout=600,
            ).stdout
            f = got[name] = json.loads(out.strip().splitlines()[-1])
            figures[name].append(f)
            load = open("/proc/loadavg").read().split()[0]
            print(f"round {r + 1} | {name:20} | {f['rate']:>9,.0f} msg/s | {f['cpu_per_1k']:.3f} CPU s "
                  f"per 1k | peak RSS {f['rss_mb']:.0f} MB | load average {load}", flush=True)
        best = max((got[n]["rate"] for n in names if n in CLIENTS), default=float("nan"))
        for name in names:
            ratios[name].append(got[name]["rate"] / best)
        print(f"round {r + 1} | vs the fastest Python client: "
              + ", ".join(f"{n} {got[n]['rate'] / best:.2f}x" for n in names), flush=True)
    for name in names:
        rs, fs = ratios[name], figures[name]
        rates = " / ".join(f"{f['rate']:,.0f}" for f in fs)
        print(f"{name:20} | msg/s {rates} | "
              f"CPU s per 1k {min(f['cpu_per_1k'] for f in fs):.3f}-{max(f['cpu_per_1k'] for f in fs):.3f} | "
              f"peak RSS {max(f['rss_mb'] for f in fs):.0f} MB | vs the fastest Python client: "
              f"min {min(rs):.2f} median {statistics.median(rs):.2f} max {max(rs):.2f}")


if __name__ == "__main__":
    main()
