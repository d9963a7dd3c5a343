"""The output producer handlers write their results with, and the bridge from the runtime's
answers to awaitable results."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Tuple, Union

Bytes = Union[bytes, str]
Headers = Union[Mapping[str, Bytes], Iterable[Tuple[str, Bytes]]]


# The message (or batch) whose handler runs in this task or thread: in exactly-once mode the
# records it sends are that handler call's outputs.
current_work: "contextvars.ContextVar[Any]" = contextvars.ContextVar("sluicegate_work", default=None)


def _settle(future: "asyncio.Future[Any]", value: Any, error: Optional[BaseException]) -> None:
    if future.done():  # cancelled meanwhile: nobody waits for the answer
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def pending() -> Tuple["asyncio.Future[Any]", Callable[[Any, Optional[BaseException]], None]]:
    """A future of the running loop, and the callback (safe from any thread) that settles it
    with ``(value, error)``: what the runtime calls when its answer comes."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def done(value: Any, error: Optional[BaseException]) -> None:
        try:
            loop.call_soon_threadsafe(_settle, future, value, error)
        except RuntimeError:  # the loop was closed: nobody waits for the answer
            pass

    return future, done


class Output:
    """The consumer's producer, for handlers to write their results with: get it with
    :meth:`Consumer.output` before :meth:`Consumer.run`.

    ``await out.send(...)`` returns once the broker has acknowledged the record (``acks=all``,
    idempotent). Await it inside the handler: the input is finished only when the handler
    returns, so it is never committed before its outputs are safe; a failed send raises
    :class:`OutputError`, which, unless the handler catches it, retries the input. The
    producer has the consumer's connection and security settings. ``send`` returns an
    awaitable of the consumer's event loop: from a plain ``def`` handler (which runs in a
    thread), use ``asyncio.run_coroutine_threadsafe(out.send(...), loop).result()``.

    In exactly-once mode (``Consumer(exactly_once=...)``) ``send`` returns at once with
    ``(-1, -1)``: the record is one of the handler call's outputs, written by the transaction
    that commits the input's offset, and only if the call succeeds (a failed call's outputs are
    never written). Call ``send`` from the handler (or code it calls), not from a task of its
    own.
    """

    def __init__(self, native: Any, consumer: Any) -> None:
        self._native = native
        # The consumer's runtime carries the sends: keep it alive while this is.
        self._consumer = consumer

    def send(
        self,
        topic: str,
        value: Optional[Bytes],
        key: Optional[Bytes] = None,
        headers: Optional[Headers] = None,
        partition: Optional[int] = None,
    ) -> Awaitable[Tuple[int, int]]:
        """Writes a record to ``topic`` and waits for the broker's acknowledgement.

        Args:
            topic: where to write.
            value: the value (``str`` is sent as UTF-8), or ``None`` for a tombstone.
            key: the key, or ``None``; the record's partition follows it unless ``partition``
                is given.
            headers: a mapping or ``(name, value)`` pairs (values ``bytes`` or ``str``).
            partition: the partition to write to, instead of the key's.

        Returns:
            An awaitable of the record's ``(partition, offset)`` (``(-1, -1)`` in exactly-once
            mode, where the record is written later).

        Raises:
            OutputError: the broker did not take the record (the message says why).
            TypeError: a value, key or header is not ``bytes`` or ``str``.
        """
        if headers is None:
            pairs: list = []
        elif isinstance(headers, Mapping):
            pairs = list(headers.items())
        else:
            pairs = list(headers)
        # Read here, in the handler's task or thread, not in the coroutine, which a ``def``
        # handler's ``run_coroutine_threadsafe`` runs in a task of the loop.
        work = current_work.get()
        return self._send(topic, value, key, pairs, partition, work)

    async def _send(
        self, topic: str, value: Optional[Bytes], key: Optional[Bytes], pairs: list, partition: Optional[int], work: Any
    ) -> Tuple[int, int]:
        future, done = pending()
        self._native.send(topic, value, key, pairs, partition, done, work)
        return await future
