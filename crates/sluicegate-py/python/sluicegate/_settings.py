"""Settings objects of :class:`~sluicegate.Consumer` besides :class:`~sluicegate.Retry`: the
circuit breaker, client re-creation, TLS and SASL, and the OAUTHBEARER token a token provider
returns. Their defaults are the Rust library's; their values are checked when the consumer is
made, and a refused one raises :class:`~sluicegate.ConfigError` naming it
(``circuit_breaker.consecutive_failures``)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from . import _sluicegate

_DEFAULTS = _sluicegate._defaults()
_BREAKER = _DEFAULTS["circuit_breaker"]
_RECONNECT = _DEFAULTS["reconnect"]


@dataclasses.dataclass(frozen=True)
class CircuitBreaker:
    """Stops calling the handler, and pauses every partition, while its downstream fails.

    The breaker *opens* after ``consecutive_failures`` failed attempts in a row, or when at
    least ``min_calls`` attempts within the last ``window`` seconds failed at
    ``failure_rate`` (0 to 1) or more. While open no handler is called and every partition is
    paused (polling and heartbeats go on; nothing is lost or committed past what finished).
    After ``cool_down`` seconds it is *half-open*: one message is handled as a probe; if it
    succeeds the breaker closes, if it fails the breaker opens for another cool-down.

    Only failures that a retry may cure count: a handler that raises (anything but
    :class:`~sluicegate.PermanentError`, :class:`~sluicegate.DecodeError` or
    :class:`~sluicegate.Skip`), returns ``False`` or times out. A permanent or decode error
    says something about one message, not about the downstream.
    :meth:`Consumer.status` shows the state as ``circuit``; ``/health/ready`` fails while it is
    open.
    """

    consecutive_failures: int = _BREAKER["consecutive_failures"]
    failure_rate: float = _BREAKER["failure_rate"]
    window: float = _BREAKER["window"]
    min_calls: int = _BREAKER["min_calls"]
    cool_down: float = _BREAKER["cool_down"]


@dataclasses.dataclass(frozen=True)
class Reconnect:
    """When the runtime gives up on its Kafka client and builds a new one.

    librdkafka reconnects to brokers on its own, which is enough for a broker restart. A client
    that hit a fatal error cannot go on, though, and one that reached no broker for a long time
    may hold stale state: then the runtime abandons its uncommitted work (delivered again, as
    after a crash), drops the client and builds a new one, waiting ``initial_backoff`` seconds
    (times ``multiplier`` per attempt up to ``max_backoff``, with ``jitter`` of spread) between
    attempts.

    Args:
        unreachable_after: re-create the client after no broker was reachable this many
            seconds; ``None`` leaves reconnection to librdkafka alone.
        on_fatal: re-create the client after a fatal client error; otherwise the consumer stops
            (:meth:`Consumer.run` raises).
        max_fenced: how many times in a row a static member (``group.instance.id``) may be
            fenced by another member with its id before the consumer stops.

    :meth:`Consumer.status` counts the re-creations as ``client_restarts``.
    """

    unreachable_after: Optional[float] = _RECONNECT["unreachable_after"]
    on_fatal: bool = _RECONNECT["on_fatal"]
    initial_backoff: float = _RECONNECT["initial_backoff"]
    max_backoff: float = _RECONNECT["max_backoff"]
    multiplier: float = _RECONNECT["multiplier"]
    jitter: float = _RECONNECT["jitter"]
    max_fenced: int = _RECONNECT["max_fenced"]

    @classmethod
    def never(cls) -> "Reconnect":
        """Never re-create the client: librdkafka's own reconnects only; a fatal error stops
        the consumer."""
        return cls(unreachable_after=None, on_fatal=False)


@dataclasses.dataclass(frozen=True)
class Security:
    """How the consumer (and its output and dead-letter producers) connect: TLS and SASL.

    The fields are those of the ``security:`` section of a configuration file, with the same
    rules (checked when the consumer is made)::

        sluicegate.Security(protocol="sasl_ssl", sasl_mechanism="SCRAM-SHA-512",
                            sasl_username="billing", sasl_password=os.environ["KAFKA_PASSWORD"],
                            ssl_ca_location="/etc/kafka/ca.pem")

    Args:
        protocol: ``"plaintext"`` (the default), ``"ssl"``, ``"sasl_plaintext"`` or
            ``"sasl_ssl"``.
        sasl_mechanism: ``"PLAIN"``, ``"SCRAM-SHA-256"``, ``"SCRAM-SHA-512"`` or
            ``"OAUTHBEARER"`` (with a ``token_provider``, as AWS MSK IAM); needs a ``sasl_*``
            protocol.
        sasl_username: the user, for PLAIN and SCRAM.
        sasl_password: the password, for PLAIN and SCRAM (not shown by ``repr``).
        ssl_ca_location: the CA certificates to trust (a file or directory), over TLS.
        ssl_certificate_location: the client certificate (with ``ssl_key_location``).
        ssl_key_location: the client's private key.
        ssl_key_password: the private key's passphrase (not shown by ``repr``).

    A TLS or authentication failure that retrying cannot cure stops the consumer:
    :meth:`Consumer.run` raises :class:`~sluicegate.SluicegateError` naming the mechanism and
    the user (never the password). PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER logins
    (and refused ones) are tested against Apache Kafka.
    """

    protocol: Optional[str] = None
    sasl_mechanism: Optional[str] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = dataclasses.field(default=None, repr=False)
    ssl_ca_location: Optional[str] = None
    ssl_certificate_location: Optional[str] = None
    ssl_key_location: Optional[str] = None
    ssl_key_password: Optional[str] = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class OAuthToken:
    """An OAUTHBEARER token, as a ``token_provider`` returns it.

    Args:
        token: the token (a JWT, or what the AWS MSK IAM signer makes).
        expires_at: when it expires, in seconds since the epoch (``time.time()`` plus its
            lifetime). librdkafka asks for a new one when 80% of the lifetime has passed.
        principal: the Kafka principal the token is for (brokers read it from the token; it
            may stay empty).

    A provider may return a ``(token, expires_at)`` or ``(token, expires_at, principal)``
    tuple instead, as confluent-kafka's ``oauth_cb`` does. Not shown by ``repr``: the token.
    """

    token: str = dataclasses.field(repr=False)
    expires_at: float
    principal: str = ""
