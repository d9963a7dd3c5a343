"""The exceptions a handler raises to say what a message came to, and those the consumer
raises."""

from ._sluicegate import ConfigError, SluicegateError


class RetryableError(Exception):
    """The message failed for now: retried with the consumer's back-off (any exception
    other than the ones below does the same)."""


class PermanentError(Exception):
    """The message can never succeed: not retried, dead-lettered if a dead-letter topic is
    set (otherwise its partition stops there, visibly)."""


class DecodeError(PermanentError):
    """The message's value could not be decoded (``Message.json()``, ``Message.text()``):
    never retried, like :class:`PermanentError`. Names the topic, partition and offset."""


class Skip(Exception):
    """Finish the message on purpose without handling it (logged, committed)."""


class OutputError(SluicegateError, RetryableError):
    """A record given to :meth:`Output.send` was not taken by the broker; the message names
    the topic and why. Uncaught in a handler, the input is retried like any
    :class:`RetryableError`."""


__all__ = [
    "ConfigError",
    "DecodeError",
    "OutputError",
    "PermanentError",
    "RetryableError",
    "Skip",
    "SluicegateError",
]
