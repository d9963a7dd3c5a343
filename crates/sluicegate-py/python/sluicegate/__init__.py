"""Sluicegate for Python: a Kafka consumer whose handlers get every guarantee of the Rust
runtime underneath (no loss, bounded duplicates, ordering by partition or key, retries with
back-off, dead-letter topics, commits of finished work only, slow handlers never evicted).

    import asyncio, sluicegate

    consumer = sluicegate.Consumer(
        bootstrap_servers="localhost:9092", group_id="billing", topics=["orders"],
        ordering="key", retry=sluicegate.Retry(max_attempts=3), dead_letter=True,
    )

    @consumer.handler
    async def handle(msg: sluicegate.Message) -> None:
        order = msg.json()
        ...

    asyncio.run(consumer.run())   # until SIGINT/SIGTERM: drains, commits, leaves

A handler's outcome: returning normally finishes the message; returning ``False`` or raising
:class:`RetryableError` (or any other exception) retries it with back-off; raising
:class:`PermanentError` (or :class:`DecodeError`, as ``msg.json()`` does on bad JSON) gives
up at once (to the dead-letter topic, if one is set); raising :class:`Skip` finishes it
without handling. Handlers write results with the consumer's :class:`Output`
(``out = consumer.output()``, then ``await out.send(topic, value)``).
"""

from ._consumer import Consumer, Retry
from ._settings import CircuitBreaker, OAuthToken, Reconnect, Security
from ._errors import (
    ConfigError,
    DecodeError,
    OutputError,
    PermanentError,
    RetryableError,
    Skip,
    SluicegateError,
)
from ._message import Message
from ._output import Output

__all__ = [
    "CircuitBreaker",
    "ConfigError",
    "Consumer",
    "DecodeError",
    "Message",
    "OAuthToken",
    "Output",
    "OutputError",
    "PermanentError",
    "Reconnect",
    "Retry",
    "RetryableError",
    "Security",
    "Skip",
    "SluicegateError",
]
