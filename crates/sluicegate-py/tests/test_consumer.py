"""The Python package against the embedded broker and Apache Kafka: each handler outcome,
the ordering modes, plain ``def`` handlers, the ``async for`` loop, bad settings."""

import asyncio
import json
import threading
from collections import Counter, defaultdict

import pytest

import sluicegate
from conftest import PHASE, committed_to, ends_of, run_until, unique, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


def test_each_outcome_goes_where_the_runtime_sends_it(broker):
    """Of 200 records: one returns False once, one raises RetryableError twice, one raises
    ValueError once (all three retried, then handled), one raises PermanentError and one is
    not JSON (both dead-lettered with their reason), one raises Skip. Everything else is
    handled once, and the group commits the log end."""
    topic = unique("py-outcomes")
    broker.create_topic(topic, 2)
    values = [json.dumps({"n": i}).encode() for i in range(200)]
    values[120] = b"not json"
    placed = broker.produce(topic, [(i % 2, f"k{i}", v) for i, v in enumerate(values)])
    ends = ends_of(placed)
    consumer = broker.consumer(
        topic,
        retry=sluicegate.Retry(initial_backoff=0.005, max_backoff=0.02, jitter=0.0),
        dead_letter=True,
    )
    calls = Counter()
    handled = Counter()

    @consumer.handler
    async def handle(msg: sluicegate.Message):
        n = msg.json()["n"]  # record 120 raises DecodeError here
        calls[n] += 1
        if n == 10 and calls[n] == 1:
            return False
        if n == 20 and calls[n] <= 2:
            raise sluicegate.RetryableError("not yet")
        if n == 30 and calls[n] == 1:
            raise ValueError("a bug, for now")
        if n == 40:
            raise sluicegate.PermanentError("refused for good")
        if n == 50:
            raise sluicegate.Skip("not for us")
        handled[n] += 1

    async def scenario():
        await run_until(consumer, 
            "commits at the log end, two records dead-lettered",
            lambda: committed_to(consumer, topic, ends) and consumer.status()["dead_lettered"] == 2,
        )

    run(scenario())
    assert (calls[10], calls[20], calls[30], calls[40]) == (2, 3, 2, 1)
    expected = set(range(200)) - {40, 50, 120}
    assert set(handled) == expected
    assert all(n == 1 for n in handled.values()), [n for n, c in handled.items() if c > 1]
    letters = broker.read(f"{topic}.dlq", 2)
    reasons = {m.value(): dict(m.headers() or []) for m in letters}
    assert set(reasons) == {values[40], b"not json"}
    refused, undecodable = reasons[values[40]], reasons[b"not json"]
    assert refused["sluicegate.error.kind"] == b"permanent", refused
    assert b"refused for good" in refused["sluicegate.error.message"], refused
    assert undecodable["sluicegate.error.kind"] == b"decode", undecodable
    assert b"cannot decode the value of" in undecodable["sluicegate.error.message"], undecodable


@pytest.mark.parametrize("ordering", ["partition", "key"])
def test_ordering_modes_keep_their_order(broker, ordering):
    """400 records over 2 partitions and 8 keys, a handler that awaits a little: no record
    starts while another of its partition (or key) runs, each unit sees its offsets in order,
    and in key order several keys run at once."""
    topic = unique("py-order")
    broker.create_topic(topic, 2)
    placed = broker.produce(topic, [(None, f"key-{i % 8}", f"{i}".encode()) for i in range(400)])
    ends = ends_of(placed)
    consumer = broker.consumer(topic, ordering=ordering, max_in_flight=16)
    running_now = defaultdict(int)
    last = {}
    most = [0]
    problems = []

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        unit = (msg.partition, msg.key) if ordering == "key" else msg.partition
        if running_now[unit]:
            problems.append(f"{unit}: {msg.offset} started while another ran")
        running_now[unit] += 1
        most[0] = max(most[0], sum(running_now.values()))
        if last.get(unit, -1) >= msg.offset:
            problems.append(f"{unit}: {msg.offset} after {last[unit]}")
        last[unit] = msg.offset
        await asyncio.sleep(0.002)
        running_now[unit] -= 1

    async def scenario():
        await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends))

    run(scenario())
    assert not problems, problems[:5]
    if ordering == "key":
        assert most[0] > 2, f"at most {most[0]} handlers ran at once"


def test_plain_def_handlers_run_in_threads(broker):
    """A blocking ``def`` handler runs in the thread pool, off the event loop: every record
    is handled once and committed."""
    topic = unique("py-threads")
    broker.create_topic(topic, 4)
    placed = broker.produce(topic, [(None, f"k{i}", f"{i}".encode()) for i in range(200)])
    consumer = broker.consumer(topic, ordering="key", threads=8)
    seen = Counter()
    threads = set()
    lock = threading.Lock()

    @consumer.handler
    def handle(msg: sluicegate.Message) -> None:
        with lock:
            seen[msg.text()] += 1
            threads.add(threading.get_ident())

    async def scenario():
        await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends_of(placed)))

    run(scenario())
    assert sorted(seen) == sorted(str(i) for i in range(200))
    assert set(seen.values()) == {1}
    assert threading.get_ident() not in threads


def test_an_async_for_loop_finishes_what_its_body_finished(broker):
    """``async for msg in consumer.messages()``: a message is finished when the body ends
    without raising. The body raises on the 60th record: the loop stops and the consumer shuts
    down, committing the 59 before it; a second consumer of the group starts at the 60th."""
    topic = unique("py-loop")
    broker.create_topic(topic, 1)
    broker.produce(topic, [(0, "k", f"{i}".encode()) for i in range(100)])
    group = unique("py-loop-group")

    async def first():
        consumer = broker.consumer(topic, group_id=group)
        seen = []
        with pytest.raises(RuntimeError, match="boom"):
            async for msg in consumer.messages():
                if msg.offset == 59:
                    raise RuntimeError("boom")
                seen.append(msg.offset)
        assert seen == list(range(59))
        # Leaving the loop closes it (asyncio finalizes the generator): the consumer drains,
        # commits and stops.
        await wait_until("the consumer stopped", lambda: consumer.status()["stopped"])
        assert consumer.status()["committed"].get((topic, 0)) == 59

    async def second():
        consumer = broker.consumer(topic, group_id=group)
        seen = []
        async for msg in consumer.messages():
            seen.append(msg.offset)
            if msg.offset == 99:
                consumer.shutdown()
        assert seen == list(range(59, 100))

    run(first())
    run(second())


def test_batch_handlers_get_bounded_batches_and_poison_is_isolated(broker):
    """A batch handler over 4 partitions in partition order: each batch holds at most 50
    messages of one partition in offset order; a batch holding the poison record fails as a
    whole and is bisected until the record alone is dead-lettered; every other record is
    handled once and the group commits the log end."""
    topic = unique("py-batch")
    broker.create_topic(topic, 4)
    placed = broker.produce(topic, [(p, f"k{i}", f"{i}".encode()) for i in range(200) for p in range(4)])
    poison = placed[333]
    consumer = broker.consumer(
        topic,
        retry=sluicegate.Retry(max_attempts=2, initial_backoff=0.005, max_backoff=0.02, jitter=0.0),
        dead_letter=True,
    )
    handled = Counter()
    problems = []

    @consumer.batch_handler(max_messages=50, max_wait=0.05)
    async def handle(batch):
        places = [(m.partition, m.offset) for m in batch]
        if len(batch) > 50 or len({p for p, _ in places}) != 1 or places != sorted(places):
            problems.append(places)
        if poison in places:
            raise sluicegate.PermanentError("poison")
        handled.update(places)

    async def scenario():
        await run_until(consumer, 
            "commits at the log end with the poison dead-lettered",
            lambda: committed_to(consumer, topic, ends_of(placed)) and consumer.status()["dead_lettered"] == 1,
        )

    run(scenario())
    assert not problems, problems[:3]
    assert set(handled) == set(placed) - {poison}
    assert set(handled.values()) == {1}
    letters = broker.read(f"{topic}.dlq", 1)
    headers = dict(letters[0].headers())
    assert (int(headers["sluicegate.original.partition"]), int(headers["sluicegate.original.offset"])) == poison


def test_the_runtimes_logs_reach_python_logging(broker, caplog):
    """A record given up on is logged by the runtime at ERROR, naming it, through Python's
    ``logging`` (logger ``sluicegate.<module>``)."""
    topic = unique("py-logs")
    broker.create_topic(topic, 1)
    placed = broker.produce(topic, [(0, "k", b"fine"), (0, "k", b"refused"), (0, "k", b"fine")])
    consumer = broker.consumer(topic, dead_letter=True)

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        if msg.value == b"refused":
            raise sluicegate.PermanentError("refused for good")

    async def scenario():
        await run_until(consumer, "commits at the log end", lambda: committed_to(consumer, topic, ends_of(placed)))

    with caplog.at_level("INFO", logger="sluicegate"):
        run(scenario())
    gave_up = [
        r
        for r in caplog.records
        if r.name.startswith("sluicegate.") and r.levelname == "ERROR" and "dead-lettering" in r.getMessage()
    ]
    assert gave_up, [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert "offset=1" in gave_up[0].getMessage() and "refused for good" in gave_up[0].getMessage()


def test_a_consumer_from_a_configuration_file_and_the_environment(broker, tmp_path, monkeypatch):
    """``Consumer.from_config``: the YAML file's settings (key order, a dead-letter topic),
    ``KAFKA_*`` variables over it (the bootstrap servers), and a bad value refused naming the
    file and the setting."""
    topic = unique("py-config")
    broker.create_topic(topic, 2)
    placed = broker.produce(topic, [(None, f"k{i % 4}", b"x" if i != 7 else b"poison") for i in range(40)])
    path = tmp_path / "sluicegate.yaml"
    path.write_text(
        f"kafka:\n  bootstrap_servers: nowhere:1\n  group_id: {unique('cfg')}\n  topics: [{topic}]\n"
        "  ordering: key\n  commit_interval: 100ms\n  dead_letter:\n    enabled: true\n"
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    consumer = sluicegate.Consumer.from_config(path, config={"session.timeout.ms": "6000"})

    @consumer.handler
    async def handle(msg):
        if msg.value == b"poison":
            raise sluicegate.PermanentError("poison")

    async def scenario():
        await run_until(consumer, 
            "commits at the log end, one dead-lettered",
            lambda: committed_to(consumer, topic, ends_of(placed)) and consumer.status()["dead_lettered"] == 1,
        )

    run(scenario())
    path.write_text(f"kafka:\n  bootstrap_servers: b:1\n  group_id: g\n  topics: [t]\n  ordering: sideways\n")
    with pytest.raises(sluicegate.ConfigError, match="ordering") as refused:
        sluicegate.Consumer.from_config(path)
    assert str(path) in str(refused.value)


def test_metrics_and_health_are_served_while_running(broker):
    """``metrics_addr``: Prometheus metrics (messages processed by outcome) and the health
    endpoints are served while the consumer runs."""
    import urllib.request

    topic = unique("py-metrics")
    broker.create_topic(topic, 1)
    placed = broker.produce(topic, [(0, "k", b"x")] * 20)
    consumer = broker.consumer(topic, metrics_addr="127.0.0.1:0")

    @consumer.handler
    async def handle(msg):
        pass

    def get(path):
        with urllib.request.urlopen(f"http://{consumer.http_addr}{path}", timeout=10) as r:
            return r.status, r.read().decode()

    async def scenario():
        running = asyncio.ensure_future(consumer.run())
        try:
            await wait_until("commits at the log end", lambda: committed_to(consumer, topic, ends_of(placed)))
            metrics = await asyncio.to_thread(get, "/metrics")
            ready = await asyncio.to_thread(get, "/health/ready")
            return metrics, ready
        finally:
            consumer.shutdown()
            await running

    (status, metrics), (ready_status, _) = run(scenario())
    assert status == 200 and ready_status == 200
    processed = [
        line for line in metrics.splitlines()
        if line.startswith("sluicegate_messages_processed_total{") and topic in line
    ]
    assert processed and sum(float(line.rsplit(" ", 1)[1]) for line in processed) == 20, processed


def test_bad_settings_are_refused_naming_the_setting():
    with pytest.raises(sluicegate.ConfigError, match="ordering|bogus"):
        sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"], ordering="bogus")
    with pytest.raises(sluicegate.ConfigError, match="topics"):
        sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics="orders")
    with pytest.raises(sluicegate.ConfigError, match="enable.auto.commit"):
        sluicegate.Consumer(
            bootstrap_servers="localhost:1",
            group_id="g",
            topics=["t"],
            config={"enable.auto.commit": "true"},
        )
    with pytest.raises(sluicegate.ConfigError, match="metrics_addr"):
        sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"], metrics_addr="nowhere")
    consumer = sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"])
    with pytest.raises(sluicegate.ConfigError, match="handler"):
        asyncio.run(consumer.run())
