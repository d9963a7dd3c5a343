"""The consumer: settings, the handler, and the two ways to run it (``run`` with a handler,
``messages`` with a loop of your own)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import inspect
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from . import _sluicegate
from ._errors import ConfigError, DecodeError, PermanentError, Skip, SluicegateError
from ._message import Message
from ._output import Output, current_work, pending
from ._settings import CircuitBreaker, OAuthToken, Reconnect, Security

logger = logging.getLogger("sluicegate")

#: How many deliveries one call takes from the native queue.
_TAKE = 1024

Handler = Callable[[Message], Union[Awaitable[Optional[bool]], Optional[bool]]]
#: What a token provider returns: an :class:`OAuthToken`, or ``(token, expires_at[, principal])``.
TokenProvider = Callable[[], Union[OAuthToken, Tuple[str, float], Tuple[str, float, str]]]
BatchHandler = Callable[[List[Message]], Union[Awaitable[Optional[bool]], Optional[bool]]]


@dataclasses.dataclass(frozen=True)
class Retry:
    """How failed messages are retried: exponential back-off from ``initial_backoff`` seconds
    up to ``max_backoff``, times ``multiplier`` per attempt, with up to ``jitter`` (a fraction)
    of random spread. ``max_attempts=None`` retries retryable failures without limit; a
    message given up on goes to the dead-letter topic (if set).
    """

    max_attempts: Optional[int] = None
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2


class Consumer:
    """A Kafka consumer run by Sluicegate's Rust runtime.

    Args:
        bootstrap_servers: ``host:port[,host:port...]``.
        group_id: the consumer group (commits go there).
        topics: the topics to subscribe to.
        ordering: ``"partition"`` (one message at a time per partition, the default),
            ``"key"`` (one at a time per key, keys side by side) or ``"unordered"``.
        max_in_flight: handler calls running at once over the whole consumer.
        retry: the :class:`Retry` policy (default: retry without limit).
        dead_letter: ``True`` for ``<topic>.dlq``, a topic name, or ``False`` (none: a message
            given up on stops its partition, visibly).
        commit_interval: seconds between commits of finished offsets.
        drain_timeout: seconds running handlers get at a rebalance or shutdown.
        handler_timeout: seconds after which a handler call counts as failed (retried).
        threads: threads for plain ``def`` handlers (``async def`` ones run on the loop); a
            wake-up's messages are spread over them while calls take 0.2 ms or more on
            average, and run in one pool job while calls are quicker.
        config: librdkafka properties, passed through (``{"security.protocol": "SSL"}``).
        metrics_addr: ``host:port`` to serve Prometheus ``/metrics`` and ``/health/live``,
            ``/health/ready`` on while running (port 0: any free one, see :attr:`http_addr`).
        circuit_breaker: a :class:`CircuitBreaker` (default: none): stops calling the handler
            and pauses the partitions while it fails too often.
        reconnect: when the Kafka client is re-created (default: :class:`Reconnect` ``()``).
        security: TLS and SASL settings (:class:`Security`); properties given in ``config``
            win over them.
        token_provider: for ``sasl_mechanism="OAUTHBEARER"``: a function of no arguments
            returning a token (see below).
        exactly_once: a transactional id: each batch of messages is handled in a Kafka
            transaction of the :meth:`output` producer that commits its outputs and its
            offsets together; a failed handler aborts it. Same id for an instance across
            restarts, a different one per instance running at once. With
            :meth:`handler` (messages of a batch one after the other) or :meth:`batch_handler`;
            not with :meth:`messages`.

    A ``token_provider`` is called when librdkafka wants a token: when each client (the
    consumer, the output and dead-letter producers) starts, and when 80% of its token's
    lifetime has passed. It runs in a thread of its own, so it may block (an AWS signer does)::

        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        def msk_token():
            token, expiry_ms = MSKAuthTokenProvider.generate_auth_token("eu-west-1")
            return sluicegate.OAuthToken(token, expires_at=expiry_ms / 1000)

    If it raises, no token is issued: the error is logged (``sluicegate`` logger, naming the
    exception) and librdkafka asks again 10 seconds later; nothing is consumed meanwhile. If it
    raises :class:`PermanentError` (credentials refused), the consumer stops and :meth:`run`
    raises :class:`SluicegateError` with its message.

    Raises:
        ConfigError: a setting was refused; the message names it.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: Optional[str] = None,
        topics: Iterable[str],
        ordering: str = "partition",
        max_in_flight: int = 1000,
        retry: Optional[Retry] = None,
        dead_letter: Union[bool, str] = False,
        commit_interval: float = 1.0,
        drain_timeout: float = 10.0,
        handler_timeout: Optional[float] = None,
        threads: int = 32,
        config: Optional[Dict[str, str]] = None,
        metrics_addr: Optional[str] = None,
        circuit_breaker: Optional[CircuitBreaker] = None,
        reconnect: Optional[Reconnect] = None,
        security: Optional[Security] = None,
        token_provider: Optional[TokenProvider] = None,
        exactly_once: Optional[str] = None,
    ) -> None:
        retry = retry or Retry()
        _check_token_provider(token_provider, security, config)
        if exactly_once is not None and (not isinstance(exactly_once, str) or not exactly_once):
            raise ConfigError(f"exactly_once: expected a transactional id (a non-empty string), got {exactly_once!r}")
        if isinstance(topics, str):
            raise ConfigError(f"topics: expected a list of topic names, got the string {topics!r}")
        if dead_letter is True:
            dlq: Optional[str] = ""
        elif dead_letter is False or dead_letter is None:
            dlq = None
        else:
            dlq = str(dead_letter)
        self._core = _sluicegate.Core(
            bootstrap_servers,
            group_id,
            list(topics),
            ordering,
            max_in_flight,
            commit_interval,
            drain_timeout,
            retry.max_attempts,
            retry.initial_backoff,
            retry.max_backoff,
            retry.multiplier,
            retry.jitter,
            dlq,
            handler_timeout,
            [(str(k), str(v)) for k, v in (config or {}).items()],
            metrics_addr,
            circuit_breaker=circuit_breaker,
            reconnect=reconnect,
            security=security,
            token_provider=token_provider,
            exactly_once=exactly_once,
        )
        self._setup(threads)
        self._exactly_once = exactly_once is not None

    @classmethod
    def from_config(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        threads: int = 32,
        config: Optional[Dict[str, str]] = None,
        token_provider: Optional[TokenProvider] = None,
    ) -> "Consumer":
        """A consumer described by a YAML configuration file with the ``KAFKA_*``
        environment variables over it: the same file, variables and checks as the Rust
        library's and ``sluicegate config check`` (see ``examples/sluicegate.yaml``).
        ``config`` sets librdkafka properties over both; ``token_provider`` gives OAUTHBEARER
        tokens as for :class:`Consumer` (over the file's ``security.oauthbearer`` or
        ``security.msk_iam``, if set).

        Raises:
            ConfigError: the file cannot be read, or a setting in it (or in the environment)
                is refused; the message names the file, the setting and why.
        """
        self = cls.__new__(cls)
        self._core = _sluicegate.Core.from_config(
            os.fspath(path),
            [(str(k), str(v)) for k, v in (config or {}).items()],
            token_provider=token_provider,
        )
        self._setup(threads)
        self._exactly_once = False
        return self

    def _setup(self, threads: int) -> None:
        self._output: Optional[Output] = None
        self._threads = threads
        self._handler: Optional[Handler] = None
        self._batch: Optional[tuple] = None
        self._started = False

    def handler(self, fn: Handler) -> Handler:
        """Decorates the handler: ``async def`` (run on the event loop) or ``def`` (run in a
        bounded thread pool), taking a :class:`Message`. In partition and key order a
        partition's (or key's) fetched messages come as a run, handled one after the other in
        one task (or pool job): context variables a handler sets stay set for the next
        messages of its run, as in a loop."""
        self._handler = fn
        self._batch = None
        return fn

    def batch_handler(
        self,
        fn: Optional[BatchHandler] = None,
        *,
        max_messages: int = 200,
        max_wait: float = 0.1,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> Any:
        """Decorates a batch handler, taking a ``list`` of :class:`Message`: batches of up to
        ``max_messages`` messages or ``max_bytes`` bytes, cut after ``max_wait`` seconds at the
        latest. In partition order a batch holds one partition's messages in offset order;
        unordered, batches mix partitions (key order is refused). A failed batch is retried,
        then bisected down to the records that fail on their own, which alone are
        dead-lettered. Use as ``@consumer.batch_handler`` or
        ``@consumer.batch_handler(max_messages=500)``."""

        def decorate(handler: BatchHandler) -> BatchHandler:
            self._handler = handler  # type: ignore[assignment]
            self._batch = (max_messages, max_wait, max_bytes)
            return handler

        return decorate(fn) if fn is not None else decorate

    def shutdown(self) -> None:
        """Asks for a graceful stop: no new messages; those in flight are finished and
        committed; then :meth:`run` returns (or the :meth:`messages` loop ends). Safe to call
        from any thread."""
        self._core.shutdown()

    def output(self) -> Output:
        """The consumer's output producer, for handlers to write results with (see
        :class:`Output`); the same one on every call. Call it before :meth:`run`::

            out = consumer.output()

            @consumer.handler
            async def handle(msg):
                await out.send("invoices", msg.value, key=msg.key)

        Raises:
            SluicegateError: the consumer is already running.
        """
        if self._output is None:
            self._output = Output(self._core.output(), self._core)
        return self._output

    async def seek(
        self, topic: str, partition: int, to: Union[str, int, datetime.datetime]
    ) -> int:
        """Moves an assigned partition while the consumer runs, and returns the offset it
        starts from now. ``to`` is ``"beginning"`` (the first record still in the log),
        ``"end"`` (only records written from now on), an offset, or a
        :class:`~datetime.datetime` (the first record at or after that time; the end if there
        is none; a naive datetime is local time). Work of the old position not yet finished
        is abandoned; the new position is committed at once, so it holds across restarts and
        rebalances.

        Raises:
            SluicegateError: the partition is not assigned to this consumer, the consumer is
                not running, or the broker did not answer the look-up.
            ValueError: ``to`` is none of the above.
        """
        if isinstance(to, datetime.datetime):
            kind, value = "timestamp", int(to.timestamp() * 1000)
        elif isinstance(to, bool):
            raise ValueError(f"seek to {to!r}: expected 'beginning', 'end', an offset or a datetime")
        elif isinstance(to, int):
            kind, value = "offset", to
        elif to in ("beginning", "end"):
            kind, value = to, None
        else:
            raise ValueError(f"seek to {to!r}: expected 'beginning', 'end', an offset or a datetime")
        future, done = pending()
        self._core.seek(topic, partition, kind, value, done)
        return await future

    def lag(self) -> Dict[Tuple[str, int], int]:
        """Records between the committed offset and the log end, per assigned partition:
        ``{(topic, partition): lag}``, as of the last commit interval (the ``lag`` of
        :meth:`status`). A partition whose log end is not known yet is missing."""
        return dict(self._core.status()["lag"])

    @property
    def http_addr(self) -> Optional[str]:
        """``host:port`` where ``/metrics`` and ``/health/*`` are served, once running with
        ``metrics_addr``; ``None`` otherwise."""
        return self._core.http_addr()

    def status(self) -> Dict[str, Any]:
        """What the consumer reports now: ``assigned``, ``committed`` and ``lag`` (keyed by
        ``(topic, partition)``), ``dead_lettered``, ``retried``, ``joined``, ``rebalances``,
        ``circuit`` (the :class:`CircuitBreaker`'s state: ``"closed"``, ``"open"`` or
        ``"half_open"``), ``brokers_unreachable``, ``client_restarts`` and ``client_lost`` (see
        :class:`Reconnect`), ``transactions_committed`` and ``transactions_aborted`` (with
        ``exactly_once``), ``stopped``."""
        return self._core.status()

    async def run(self) -> None:
        """Runs the handler until SIGINT or SIGTERM (or :meth:`shutdown`), then drains,
        commits and leaves the group.

        Raises:
            SluicegateError: the consumer stopped on an error (a fatal client error, a TLS or
                authentication failure).
        """
        if self._handler is None:
            raise ConfigError("no handler: decorate one with @consumer.handler")
        handler = self._handler
        batched = self._batch is not None
        batches = self._batches(self._batch)
        if inspect.iscoroutinefunction(handler):
            await _run_async(handler, batched, batches, self._core)
        else:
            await _run_threads(handler, batched, batches, self._threads, self._core)

    async def messages(self) -> AsyncIterator[Message]:
        """The messages, for a loop of your own::

            async for msg in consumer.messages():
                process(msg.json())

        A message is finished when the loop body ends without raising; if it raises (or the
        loop is left with ``break``), the consumer shuts down and that message is delivered
        again next time. Runs until SIGINT or SIGTERM (or :meth:`shutdown`) like :meth:`run`.

        Raises:
            ConfigError: the consumer is in ``exactly_once`` mode, whose outputs belong to
                handler calls (a loop body is not one).
        """
        if self._exactly_once:
            raise ConfigError(
                "exactly_once: a messages() loop body is not a handler call, which its outputs "
                "must belong to; use @consumer.handler or @consumer.batch_handler"
            )
        batches = self._batches(None)
        current: Optional[Message] = None
        pending: collections.deque = collections.deque()
        try:
            async for batch in batches:
                pending.extend(_one_by_one(batch))
                while pending:
                    current, run, i = pending.popleft()
                    if run is not None and not run.begin(i):
                        # The rest of a run its lane let go: handed back unhandled.
                        run._release(i)
                        while pending and pending[0][1] is run:
                            pending.popleft()
                        current = None
                        continue
                    yield current
                    current._finish("ok")
                    current = None
        finally:
            # Left early: the message in the body and those after it are not done.
            unfinished = ([current] if current is not None else []) + [m for m, _, _ in pending]
            for msg in unfinished:
                msg._finish("retryable", "the loop ended before this message was finished")
            self._core.shutdown()
            await batches.aclose()

    async def _batches(self, batch: Optional[tuple]) -> AsyncIterator[list]:
        """Starts the consumer (for a batch handler if ``batch`` gives its limits) and yields
        what the native queue holds, a list per wake-up, until the end; installs the
        SIGINT/SIGTERM handlers meanwhile. Raises what the consumer stopped on."""
        if self._started:
            raise SluicegateError("a consumer runs once; make a new one to run again")
        self._started = True
        loop = asyncio.get_running_loop()
        core = self._core
        ready = asyncio.Event()
        fd = core.fileno()
        loop.add_reader(fd, ready.set)
        signals = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, core.shutdown)
                signals.append(sig)
        core.start(batch)
        error: Optional[str] = None
        try:
            while True:
                _emit(core.logs())
                batch, ended, error = core.take(_TAKE)
                if batch:
                    yield batch
                    continue
                if ended:
                    break
                await ready.wait()
                ready.clear()
        finally:
            _emit(core.logs())
            loop.remove_reader(fd)
            for sig in signals:
                loop.remove_signal_handler(sig)
            if error is None:
                # Left before the end: stop, and refuse what still comes until it ends.
                core.shutdown()
                await _drain(core, ready, loop, fd)
        if error is not None:
            raise SluicegateError(error)


async def _run_async(
    handler: Callable[[Any], Any], batched: bool, batches: AsyncIterator[list], core: Any
) -> None:
    """Runs an ``async def`` handler on each message (or batch) the consumer queues, each in a
    task of its own that starts at once (eagerly, where asyncio can: Python >= 3.12): a
    handler that returns without suspending costs no task step. A run (a lane's next messages,
    in the ordered modes) is one task that handles its messages one after the other. Successes
    are handed back in one call per event-loop turn (``Core.finish_ok``: one wake-up of the
    runtime for all)."""
    loop = asyncio.get_running_loop()
    tasks: set = set()
    done: List[Any] = []
    flush_scheduled = False
    flushed_at = loop.time()

    def flush() -> None:
        nonlocal flush_scheduled, flushed_at
        flush_scheduled = False
        flushed_at = loop.time()
        if done:
            finished = done[:]
            done.clear()
            core.finish_ok(finished)

    async def call(work: Any) -> bool:
        """Handles ``work`` and hands its outcome back; true if it succeeded (or was skipped)."""
        nonlocal flush_scheduled
        # This task's own context: its sends are this work's outputs (exactly-once mode).
        current_work.set(work)
        # A message, or a batch whose handler takes the list of its messages.
        try:
            result = await handler(work.messages if batched else work)
        except asyncio.CancelledError:
            work._finish("retryable", "the handler was cancelled")
            raise
        except BaseException as e:  # noqa: BLE001 - every outcome goes back to the runtime
            went_on = _finish_with_error(work, e)
            if not isinstance(e, Exception):
                raise
            return went_on
        if result is False:
            work._finish("retryable", "the handler returned False")
            return False
        done.append(work)
        if not flush_scheduled:
            # Finished later, in a task's step: with the others finishing in this loop turn.
            flush_scheduled = True
            loop.call_soon(flush)
        return True

    async def handle(work: Any) -> None:
        try:
            await call(work)
        finally:
            # Here rather than in a done-callback, which would cost a loop turn per message.
            tasks.discard(asyncio.current_task())

    async def handle_run(run: Any) -> None:
        try:
            with contextlib.closing(_claimed(run)) as messages:
                for work in messages:
                    # A run that does not suspend holds back neither the outcomes before it nor
                    # the other tasks for long.
                    if done and loop.time() - flushed_at >= _RUN_STEP:
                        flush()
                        await asyncio.sleep(0)
                    if not await call(work):
                        break
        finally:
            tasks.discard(asyncio.current_task())

    start = _task_starter(loop)
    try:
        async for batch in batches:
            for work in batch:
                task = start(handle_run(work) if isinstance(work, _sluicegate.Run) else handle(work))
                if not task.done():
                    tasks.add(task)
            flush()
    finally:
        try:
            await batches.aclose()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            flush()


#: The longest successes wait to go back (seconds) while their handler goes on, and an
#: ``async def`` run holds the event loop without a break.
_RUN_STEP = 0.002

#: A ``def`` handler whose calls take less than this (on average) runs a wake-up's messages in
#: one pool job: handing each to a thread of its own would cost more than the calls.
_QUICK_CALL = 0.0002


class _Successes:
    """Successes of a pool job not handed back yet: by the job (see :func:`_run_threads`), or by
    the event loop once they have waited :data:`_RUN_STEP` (the job's thread is in a slow call,
    which must not hold back the outcomes before it)."""

    __slots__ = ("items", "since", "lock")

    def __init__(self) -> None:
        self.items: List[Any] = []
        self.since = time.perf_counter()
        self.lock = threading.Lock()

    def waited(self, now: float) -> bool:
        return bool(self.items) and now - self.since >= _RUN_STEP

    def hand_back(self, core: Any) -> None:
        # The job's thread appends meanwhile without the lock: only what was taken goes.
        with self.lock:
            taken = self.items[:]
            del self.items[: len(taken)]
            self.since = time.perf_counter()
        if taken:
            core.finish_ok(taken)


async def _run_threads(
    handler: Callable[[Any], Any], batched: bool, batches: AsyncIterator[list], threads: int, core: Any
) -> None:
    """Runs a plain ``def`` handler in a pool of ``threads`` threads. Each wake-up's messages
    (which the runtime lets run side by side) go to the pool in chunks: one chunk while the
    handler's calls are quick (under :data:`_QUICK_CALL` on average), else split into at most
    ``threads`` chunks, so that blocking handlers run side by side. A run (a lane's next
    messages, in the ordered modes) is a job of its own, handled in order. Successes of a job go
    back together (``Core.finish_ok``): at once after a call that was not quick, every
    :data:`_RUN_STEP` otherwise, from the event loop while the job is in a slow call."""
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sluicegate-handler")
    jobs: set = set()
    running: set = set()
    sweeping = False
    # Average duration of a call (seconds), kept by the pool threads; a race loses one sample.
    average = [_QUICK_CALL]

    def run_chunk(chunk: List[Any]) -> None:
        escaped: Optional[BaseException] = None
        done = _Successes()

        def call(work: Any, next_first: bool = False) -> bool:
            """Handles ``work``; a success of a slow call goes back at once, unless
            ``next_first``: a run's next message is claimed first (see ``Run.begin``)."""
            nonlocal escaped
            current_work.set(work)
            started = time.perf_counter()
            try:
                result = handler(work.messages if batched else work)
            except BaseException as e:  # noqa: BLE001 - every outcome goes back to the runtime
                if not isinstance(e, Exception):
                    escaped = e
                return _finish_with_error(work, e)
            finally:
                took = time.perf_counter() - started
                average[0] += (took - average[0]) / 16
            if result is False:
                work._finish("retryable", "the handler returned False")
                return False
            done.items.append(work)
            if took >= _QUICK_CALL and not next_first:
                done.hand_back(core)
            return True

        running.add(done)
        try:
            for item in chunk:
                if not isinstance(item, _sluicegate.Run):
                    call(item)
                    continue
                with contextlib.closing(_claimed(item)) as messages:
                    for work in messages:
                        if done.waited(time.perf_counter()):
                            done.hand_back(core)
                        if not call(work, next_first=True):
                            break
        finally:
            running.discard(done)
            done.hand_back(core)
        if escaped is not None:
            raise escaped

    def sweep() -> None:
        nonlocal sweeping
        now = time.perf_counter()
        for successes in list(running):
            if successes.waited(now):
                successes.hand_back(core)
        sweeping = bool(jobs)
        if sweeping:
            loop.call_later(_RUN_STEP, sweep)

    try:
        async for batch in batches:
            # A run is a job of its own: a slow call in it holds back no other partition.
            singles = [work for work in batch if not isinstance(work, _sluicegate.Run)]
            parts = [[work] for work in batch if isinstance(work, _sluicegate.Run)]
            if singles:
                chunks = 1 if average[0] < _QUICK_CALL else threads
                size = -(-len(singles) // chunks)
                parts += [singles[i : i + size] for i in range(0, len(singles), size)]
            for part in parts:
                job = loop.run_in_executor(pool, run_chunk, part)
                jobs.add(job)
                job.add_done_callback(jobs.discard)
            if not sweeping:
                sweeping = True
                loop.call_later(_RUN_STEP, sweep)
    finally:
        await batches.aclose()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)
        pool.shutdown(wait=False)


def _task_starter(loop: asyncio.AbstractEventLoop) -> Callable[[Any], "asyncio.Future[Any]"]:
    """A function making a task of a coroutine: eagerly started where asyncio has it (its first
    step runs now, as ``asyncio.current_task()`` and timeouts expect), else scheduled."""
    if sys.version_info >= (3, 12):
        return lambda coro: asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task


async def _drain(core: Any, ready: asyncio.Event, loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Takes the stream to its end after an early exit, handing back each delivery unfinished."""
    loop.add_reader(fd, ready.set)
    try:
        while True:
            _emit(core.logs())
            batch, ended, _ = core.take(_TAKE)
            for msg, _run, _i in _one_by_one(batch):
                msg._finish("retryable", "the consumer is stopping")
            if ended:
                return
            if not batch:
                await ready.wait()
                ready.clear()
    finally:
        loop.remove_reader(fd)


def _check_token_provider(
    provider: Optional[TokenProvider], security: Optional[Security], config: Optional[Dict[str, str]]
) -> None:
    """Refuses a token provider librdkafka would never call: OAUTHBEARER is not the mechanism."""
    if provider is None:
        return
    if not callable(provider):
        raise ConfigError(f"token_provider: expected a function returning a token, got {provider!r}")
    mechanism = (config or {}).get("sasl.mechanism") or (config or {}).get("sasl.mechanisms")
    if mechanism is None and security is not None:
        mechanism = security.sasl_mechanism
    if str(mechanism).upper() != "OAUTHBEARER":
        raise ConfigError(
            "token_provider: only used with OAUTHBEARER: give security=sluicegate.Security("
            "protocol='sasl_ssl', sasl_mechanism='OAUTHBEARER')"
            f" (the SASL mechanism is {mechanism or 'not set'})"
        )


def _emit(logs: Any) -> None:
    """Hands the runtime's log records to Python's ``logging``."""
    records, dropped = logs
    if dropped:
        logger.warning("%d log records of the runtime were dropped (not taken in time)", dropped)
    for level, name, text in records:
        logging.getLogger(name).log(level, "%s", text)


def _claimed(run: Any) -> Iterator[Any]:
    """The messages of ``run`` in order, each claimed (``Run.begin``) before it is given; ends
    where the runtime no longer waits for the rest. Closed, it hands back unhandled what was
    not given yet (after a message that did not succeed)."""
    started = 0
    try:
        for work in run.messages:
            if started and not run.begin(started):
                return
            started += 1
            yield work
    finally:
        run._release(started)


def _one_by_one(batch: List[Any]) -> Iterable[Tuple[Any, Any, int]]:
    """The items of a ``take``, with each run's messages one by one: ``(item, run, i)``, where
    ``run`` is the run of the ``i``-th message of a run after its first (``None`` otherwise)."""
    for item in batch:
        if isinstance(item, _sluicegate.Run):
            for i, msg in enumerate(item.messages):
                yield msg, (item if i else None), i
        else:
            yield item, None, 0


def _finish_with_error(msg: Message, e: BaseException) -> bool:
    """Hands a handler's exception back as the outcome it stands for (the runtime logs what
    it does with it, naming the record and the exception); true for a skip, after which a
    run goes on."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, Skip):
        msg._finish("skip", str(e) or "skipped by the handler")
        return True
    if isinstance(e, DecodeError):
        msg._finish("decode", str(e))
    elif isinstance(e, PermanentError):
        msg._finish("permanent", text)
    else:
        msg._finish("retryable", text)
    return False
