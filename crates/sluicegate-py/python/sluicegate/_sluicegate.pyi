"""Type stubs of the native module (the Rust core). Use the package's public names instead:
``sluicegate.Consumer``, ``sluicegate.Message``, ``sluicegate.testing.EmbeddedKafka``."""

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

class SluicegateError(Exception):
    """An error of the consumer: a bad setting, a broker or client failure."""

class ConfigError(SluicegateError):
    """A setting was refused: the message names the setting and why."""

def _defaults() -> Dict[str, Dict[str, Any]]:
    """The Rust library's defaults of ``circuit_breaker`` and ``reconnect``, by the Python
    names (durations in seconds)."""

class Message:
    """A Kafka record handed to a handler."""

    @property
    def topic(self) -> str:
        """The topic."""
    @property
    def partition(self) -> int:
        """The partition."""
    @property
    def offset(self) -> int:
        """The offset."""
    @property
    def timestamp(self) -> Optional[int]:
        """The record's timestamp in milliseconds since the Unix epoch, if it has one."""
    @property
    def key(self) -> Optional[bytes]:
        """The key, or ``None``."""
    @property
    def value(self) -> Optional[bytes]:
        """The value, or ``None`` for a tombstone."""
    @property
    def headers(self) -> List[Tuple[str, Optional[bytes]]]:
        """The headers, as ``(name, value)`` pairs in the record's order."""
    def json(self) -> Any:
        """The value decoded as JSON. Raises ``sluicegate.DecodeError`` (never retried),
        naming the record, if it is not JSON or is a tombstone."""
    def text(self) -> str:
        """The value as UTF-8 text. Raises ``sluicegate.DecodeError`` if it is not UTF-8 or
        is a tombstone."""
    def _finish(self, kind: str, reason: Optional[str] = None) -> None:
        """Says what handling the message came to (the consumer calls it)."""

class Batch:
    """A batch of messages handed to a batch handler, finished as one."""

    @property
    def messages(self) -> List[Message]:
        """The messages, in offset order within each partition."""
    def __len__(self) -> int: ...
    def _finish(self, kind: str, reason: Optional[str] = None) -> None:
        """Says what handling the batch came to (the consumer calls it)."""

class Run:
    """A lane's next messages (in the ordered modes), handed over together: each is handled
    after the one before it succeeded (or was skipped), and still finished on its own."""

    @property
    def messages(self) -> List[Message]:
        """The messages, in the order to handle them."""
    def begin(self, i: int) -> bool:
        """Whether to start message ``i`` (``i`` >= 1) now, which the runtime then takes the
        outcome of: call it before reporting message ``i - 1``'s success (its lane keeps the
        in-flight permit for message ``i`` only if it was claimed by then). False once the
        runtime no longer waits for the rest of the run (its partition was revoked or moved,
        a call of the run timed out, the circuit breaker holds calls back, or the lane let its
        permit go)."""
    def _release(self, start: int) -> None:
        """Gives the messages from index ``start`` on back unhandled (handed over again)."""
    def __len__(self) -> int: ...

class Core:
    """A consumer running on its own Tokio runtime (used by ``sluicegate.Consumer``)."""

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: Optional[str],
        topics: Sequence[str],
        ordering: str,
        max_in_flight: int,
        commit_interval: float,
        drain_timeout: float,
        max_attempts: Optional[int],
        initial_backoff: float,
        max_backoff: float,
        multiplier: float,
        jitter: float,
        dead_letter: Optional[str],
        handler_timeout: Optional[float],
        config: Sequence[Tuple[str, str]],
        metrics_addr: Optional[str] = None,
        circuit_breaker: Optional[Any] = None,
        reconnect: Optional[Any] = None,
        security: Optional[Any] = None,
        token_provider: Optional[Callable[[], Any]] = None,
        exactly_once: Optional[str] = None,
    ) -> None:
        """Checks the settings; ``circuit_breaker``, ``reconnect`` and ``security`` are
        ``sluicegate.CircuitBreaker``, ``Reconnect`` and ``Security`` objects (read by
        attribute); ``token_provider`` returns a ``sluicegate.OAuthToken`` or a tuple."""
    @staticmethod
    def from_config(
        path: str,
        config: Sequence[Tuple[str, str]],
        token_provider: Optional[Callable[[], Any]] = None,
    ) -> "Core":
        """A consumer from a configuration file with the ``KAFKA_*`` environment over it."""
    def http_addr(self) -> Optional[str]:
        """``host:port`` of ``/metrics`` and ``/health/*``, once started with an endpoint."""
    def fileno(self) -> int:
        """The socket that turns readable when deliveries (or the end) are waiting."""
    def start(self, batch: Optional[Tuple[int, float, int]] = None) -> None:
        """Starts the consumer; with ``batch`` = ``(max_messages, max_wait, max_bytes)``, for
        a batch handler."""
    def take(self, n: int) -> Tuple[List[Union[Message, Run, Batch]], bool, Optional[str]]:
        """Up to ``n`` queued messages (or runs, or batches), whether the end came, and its
        error."""
    def logs(self) -> Tuple[List[Tuple[int, str, str]], int]:
        """The runtime's log records since the last call, as ``(level, logger, text)``, and
        how many were dropped before them."""
    def status(self) -> Dict[str, Any]:
        """What the consumer reports now."""
    def finish_ok(self, work: List[Union[Message, Batch]]) -> None:
        """Finishes each message or batch as done: ``_finish("ok")`` on each, in one call."""
    def shutdown(self) -> None:
        """Asks for a graceful shutdown."""
    def output(self) -> "Output":
        """The consumer's output producer, the same on every call; only before ``start``."""
    def seek(
        self,
        topic: str,
        partition: int,
        kind: str,
        value: Optional[int],
        done: Callable[[Optional[int], Optional[BaseException]], None],
    ) -> None:
        """Moves a partition (``kind``: ``"beginning"``, ``"end"``, ``"offset"`` or
        ``"timestamp"`` in milliseconds); calls ``done(offset, error)`` from another thread."""

class Output:
    """The consumer's producer (used by ``sluicegate.Output``)."""

    def send(
        self,
        topic: str,
        value: Optional[Union[bytes, str]],
        key: Optional[Union[bytes, str]],
        headers: Sequence[Tuple[str, Union[bytes, str]]],
        partition: Optional[int],
        done: Callable[[Optional[Tuple[int, int]], Optional[BaseException]], None],
        work: Optional[Union[Message, Batch]] = None,
    ) -> None:
        """Sends a record; calls ``done((partition, offset), error)`` from another thread once
        the broker acknowledged it or the send failed. ``work``: the message or batch whose
        handler call sends it; in exactly-once mode the record is one of that call's outputs."""

class EmbeddedKafka:
    """An embedded Kafka cluster (librdkafka's mock cluster) in this process, for tests."""

    def __init__(self, brokers: int = 1) -> None: ...
    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of its brokers."""
    def create_topic(self, topic: str, partitions: int) -> None:
        """Creates ``topic`` with ``partitions`` partitions."""
    def produce(
        self,
        topic: str,
        records: Iterable[Union[bytes, str, Tuple[Optional[Union[bytes, str]], Optional[Union[bytes, str]]]]],
        partition: Optional[int] = None,
    ) -> List[Tuple[int, int]]:
        """Writes ``records`` (values, or ``(key, value)`` pairs) to ``topic`` and waits until
        each is acknowledged; returns each one's ``(partition, offset)``, in order."""
    def broker_down(self, broker: int) -> None:
        """Takes broker ``broker`` (1-based) down."""
    def broker_up(self, broker: int) -> None:
        """Brings broker ``broker`` back up."""
    def request_errors(self, api: str, codes: Sequence[str]) -> None:
        """Makes the next requests of kind ``api`` fail with ``codes``, one per request, in
        order. ``api``: ``"produce"``, ``"fetch"``, ``"list_offsets"``, ``"metadata"``,
        ``"offset_commit"``, ``"offset_fetch"``, ``"find_coordinator"``, ``"join_group"``,
        ``"heartbeat"``, ``"leave_group"``, ``"sync_group"``, ``"init_producer_id"``,
        ``"add_partitions_to_txn"``, ``"add_offsets_to_txn"``, ``"end_txn"``,
        ``"txn_offset_commit"``. ``codes``: Kafka error names such as ``"NOT_COORDINATOR"``,
        ``"REQUEST_TIMED_OUT"``, ``"COORDINATOR_NOT_AVAILABLE"``, ``"REBALANCE_IN_PROGRESS"``,
        ``"NOT_LEADER_FOR_PARTITION"`` (the Rust library's ``ErrorCode`` constants);
        ``"TRANSPORT"`` disconnects the client instead. Raises ``ValueError`` for an unknown
        name."""
    def clear_request_errors(self, api: str) -> None:
        """Forgets the errors of ``api`` pushed by :meth:`request_errors` not yet returned."""
