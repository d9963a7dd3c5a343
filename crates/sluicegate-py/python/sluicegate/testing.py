"""Testing a consumer without a Kafka install: :class:`EmbeddedKafka` (librdkafka's mock
cluster, in this process, with fault injection) and a pytest fixture.

    # conftest.py
    from sluicegate.testing import embedded_kafka  # noqa: F401  (the fixture)

    # test_orders.py
    def test_orders(embedded_kafka):
        embedded_kafka.create_topic("orders", 4)
        consumer = sluicegate.Consumer(
            bootstrap_servers=embedded_kafka.bootstrap_servers, group_id="t", topics=["orders"]
        )

Faults: ``broker_down(1)`` / ``broker_up(1)``, and failed requests of a kind::

    # the next three commits fail; the consumer retries them, nothing is lost
    embedded_kafka.request_errors(
        "offset_commit", ["NOT_COORDINATOR", "REQUEST_TIMED_OUT", "COORDINATOR_NOT_AVAILABLE"]
    )
    embedded_kafka.clear_request_errors("offset_commit")  # those not returned yet
"""

from typing import Iterator

from ._sluicegate import EmbeddedKafka

try:
    import pytest
except ImportError:  # pytest is only needed for the fixture
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def embedded_kafka() -> Iterator[EmbeddedKafka]:
        """A fresh embedded cluster of one broker for the test, stopped after it."""
        kafka = EmbeddedKafka(1)
        yield kafka
        del kafka

__all__ = ["EmbeddedKafka", "embedded_kafka"]
