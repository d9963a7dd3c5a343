"""``circuit_breaker=`` and ``reconnect=``: the library's circuit breaker and client
re-creation from Python, with the library's defaults and checks."""

import asyncio
import urllib.error
import urllib.request

import pytest

import sluicegate
from sluicegate.testing import EmbeddedKafka
from conftest import PHASE, committed_to, ends_of, unique, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


def get(addr: str, path: str):
    """``(status, body)`` of ``GET http://addr/path`` (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def gauge(metrics: str, name: str, **labels: str) -> float:
    """The value of the sample of ``name`` whose labels include ``labels`` (0 if none)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_failing_handler_opens_the_breaker_which_closes_when_it_recovers(broker):
    """A handler failing every call opens the breaker after ``consecutive_failures``: no more
    calls, every partition paused, ``status()`` and ``/health/ready`` say so, nothing is
    committed. When the downstream recovers, the probe after the cool-down closes it and every
    record is handled and committed: nothing lost."""
    topic = unique("py-breaker")
    broker.create_topic(topic, 2)
    placed = broker.produce(topic, [(i % 2, f"k{i}", str(i).encode()) for i in range(40)])
    ends = ends_of(placed)
    consumer = broker.consumer(
        topic,
        circuit_breaker=sluicegate.CircuitBreaker(consecutive_failures=3, cool_down=3.0),
        retry=sluicegate.Retry(initial_backoff=0.01, max_backoff=0.05, jitter=0.0),
        metrics_addr="127.0.0.1:0",
    )
    failing = True
    failed_calls = 0
    handled = set()

    @consumer.handler
    async def handle(msg: sluicegate.Message):
        nonlocal failed_calls
        if failing:
            failed_calls += 1
            raise sluicegate.RetryableError("the downstream is down")
        handled.add((msg.partition, msg.offset))

    async def scenario():
        nonlocal failing
        running = asyncio.ensure_future(consumer.run())
        try:
            await wait_until("the breaker opens", lambda: consumer.status()["circuit"] == "open")
            open_status = consumer.status()
            calls_when_opened = failed_calls
            addr = consumer.http_addr
            ready = await asyncio.to_thread(get, addr, "/health/ready")

            paused = {}

            def all_paused() -> bool:
                _, metrics = get(addr, "/metrics")
                paused["value"] = gauge(metrics, "sluicegate_partitions_paused")
                return paused["value"] == 2

            # The gauge follows the poll loop: bounded wait for it.
            await wait_until("both partitions are reported paused", all_paused, limit=10)
            calls_while_open = failed_calls - calls_when_opened
            failing = False
            await wait_until("every record is handled and committed", lambda: committed_to(consumer, topic, ends))
            return open_status, ready, calls_while_open, consumer.status()
        finally:
            consumer.shutdown()
            await running

    open_status, (ready_code, ready_body), calls_while_open, final = run(scenario())
    assert open_status["committed"].get((topic, 0), 0) == 0
    assert open_status["committed"].get((topic, 1), 0) == 0
    assert ready_code == 503 and "circuit_breaker" in ready_body, ready_body
    # At most the calls admitted before the breaker opened finish failing afterwards.
    assert calls_while_open <= 2, calls_while_open
    assert final["circuit"] == "closed"
    assert handled == set(placed)


def test_a_lost_cluster_makes_the_runtime_recreate_the_client():
    """``Reconnect(unreachable_after=...)``: with the only broker down longer than that, the
    runtime builds a new client (``client_restarts``), and consumes on once the broker is
    back; every record is handled (embedded broker: it can be taken down)."""
    kafka = EmbeddedKafka(1)
    topic = unique("py-reconnect")
    kafka.create_topic(topic, 1)
    first = kafka.produce(topic, [b"a%d" % i for i in range(10)])
    consumer = sluicegate.Consumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=unique("group"),
        topics=[topic],
        commit_interval=0.1,
        config={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
        reconnect=sluicegate.Reconnect(unreachable_after=1.0, initial_backoff=0.1, max_backoff=0.5),
    )
    handled = set()

    @consumer.handler
    async def handle(msg: sluicegate.Message):
        handled.add(msg.offset)

    async def scenario():
        running = asyncio.ensure_future(consumer.run())
        try:
            await wait_until("the first records are committed", lambda: committed_to(consumer, topic, ends_of(first)))
            kafka.broker_down(1)
            try:
                await wait_until("the client is re-created", lambda: consumer.status()["client_restarts"] >= 1)
            finally:
                kafka.broker_up(1)
            second = await asyncio.to_thread(kafka.produce, topic, [b"b%d" % i for i in range(10)])
            await wait_until("the later records are committed", lambda: committed_to(consumer, topic, ends_of(second)))
            return consumer.status()
        finally:
            consumer.shutdown()
            await running

    status = run(scenario())
    assert status["client_restarts"] >= 1
    assert handled == set(range(20))


def test_the_defaults_are_the_librarys():
    b, r = sluicegate.CircuitBreaker(), sluicegate.Reconnect()
    assert (b.consecutive_failures, b.failure_rate, b.window, b.min_calls, b.cool_down) == (20, 0.5, 30.0, 20, 30.0)
    assert (r.unreachable_after, r.on_fatal, r.initial_backoff, r.max_backoff, r.max_fenced) == (60.0, True, 1.0, 64.0, 3)
    never = sluicegate.Reconnect.never()
    assert never.unreachable_after is None and never.on_fatal is False


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"circuit_breaker": sluicegate.CircuitBreaker(consecutive_failures=0)}, "circuit_breaker.consecutive_failures"),
        ({"circuit_breaker": sluicegate.CircuitBreaker(consecutive_failures=-1)}, "circuit_breaker.consecutive_failures"),
        ({"circuit_breaker": sluicegate.CircuitBreaker(failure_rate=1.5)}, "circuit_breaker.failure_rate"),
        ({"circuit_breaker": sluicegate.CircuitBreaker(min_calls=0)}, "circuit_breaker.min_calls"),
        ({"circuit_breaker": sluicegate.CircuitBreaker(cool_down=-1)}, "circuit_breaker.cool_down"),
        ({"circuit_breaker": sluicegate.CircuitBreaker(window="30s")}, "circuit_breaker.window"),
        ({"reconnect": sluicegate.Reconnect(multiplier=0.5)}, "reconnect.backoff.multiplier"),
        ({"reconnect": sluicegate.Reconnect(initial_backoff=100.0)}, "reconnect.backoff.initial_backoff"),
        ({"reconnect": sluicegate.Reconnect(jitter=2.0)}, "reconnect.backoff.jitter"),
        ({"reconnect": sluicegate.Reconnect(max_fenced=0)}, "reconnect.max_fenced"),
        ({"reconnect": sluicegate.Reconnect(unreachable_after=float("nan"))}, "reconnect.unreachable_after"),
    ],
)
def test_bad_breaker_and_reconnect_values_are_refused_naming_them(settings, named):
    with pytest.raises(sluicegate.ConfigError, match=named.replace(".", r"\.")):
        sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"], **settings)
