"""``security=`` and ``token_provider=``: TLS/SASL settings checked by the library's rules,
SASL PLAIN and SCRAM logins, and OAUTHBEARER tokens from a Python function, against Apache
Kafka's SASL listeners, which ``scripts/test`` starts with ``scripts/kafka-broker start --sasl``:
OAUTHBEARER (``SLUICEGATE_TEST_OAUTH_BOOTSTRAP``; Kafka's unsecured JWT validator checks each
token's claims and expiry), PLAIN (``SLUICEGATE_TEST_PLAIN_BOOTSTRAP``; user ``alice``) and
SCRAM-SHA-256/512 (``SLUICEGATE_TEST_SCRAM_BOOTSTRAP``; user ``bob``, with credentials for both
mechanisms in the broker's SCRAM credential store)."""

import asyncio
import base64
import json
import logging
import os
import threading
import time

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import TopicPartition

import sluicegate
from conftest import PHASE, Broker, committed_to, ends_of, run_until, unique


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PHASE * 2))


def assert_reads_all(consumer, topic, placed):
    """Runs ``consumer`` until it committed every record ``placed``; each was handled."""
    handled = []

    @consumer.handler
    async def handle(msg):
        handled.append(msg.offset)

    run(run_until(consumer, "committed", lambda: committed_to(consumer, topic, ends_of(placed))))
    assert sorted(handled) == [o for _, o in placed]


def kafka_addresses(*names: str) -> list:
    """The addresses in the environment variables ``names``: listeners of the Apache Kafka that
    ``scripts/test`` starts with SASL (``scripts/kafka-broker start --sasl`` prints them)."""
    addresses = [os.environ.get(name) for name in names]
    if not all(addresses):
        pytest.fail(
            f"{', '.join(names)} are not all set: run the suite with scripts/test, which starts "
            "Apache Kafka with SASL listeners (scripts/kafka-broker start --sasl prints their "
            "addresses: plaintext, OAUTHBEARER, PLAIN, SCRAM)"
        )
    return addresses


def listeners():
    """Apache Kafka's PLAINTEXT bootstrap (a :class:`Broker`), OAUTHBEARER and PLAIN listeners."""
    bootstrap, oauth, plain = kafka_addresses(
        "SLUICEGATE_TEST_BOOTSTRAP", "SLUICEGATE_TEST_OAUTH_BOOTSTRAP", "SLUICEGATE_TEST_PLAIN_BOOTSTRAP"
    )
    return Broker("kafka", bootstrap), oauth, plain


@pytest.fixture
def kafka():
    """The PLAINTEXT :class:`Broker` and the OAUTHBEARER listener's address."""
    broker, oauth, _ = listeners()
    return broker, oauth


def unsecured_jwt(subject: str, lifetime: float) -> str:
    """A JWT without signature (``alg: none``), which Kafka's unsecured validator accepts."""

    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + int(lifetime), "scope": "kafka"}
    return f"{part({'alg': 'none'})}.{part(claims)}."


OAUTH = sluicegate.Security(protocol="sasl_plaintext", sasl_mechanism="OAUTHBEARER")


def oauth_consumer(oauth: str, topic: str, group: str, provider, **settings) -> sluicegate.Consumer:
    return sluicegate.Consumer(
        bootstrap_servers=oauth,
        group_id=group,
        topics=[topic],
        commit_interval=0.1,
        config={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
        security=OAUTH,
        token_provider=provider,
        **settings,
    )


def committed_offsets(broker: Broker, group: str, topic: str, partitions: int) -> list:
    """The group's committed offsets of ``topic`` as the broker has them (negative: none)."""
    reader = KafkaConsumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        tps = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=PHASE)
        return [tp.offset for tp in tps]
    finally:
        reader.close()


def test_a_python_token_provider_logs_the_consumer_and_its_output_in(kafka):
    """The consumer and its output producer log in with tokens from a Python function (called
    on threads of the runtime, not the event loop), consume every record, write one output per
    record and commit the log end."""
    broker, oauth = kafka
    topic, out_topic, group = unique("py-oauth"), unique("py-oauth-out"), unique("group")
    broker.create_topic(topic, 2)
    broker.create_topic(out_topic, 1)
    placed = broker.produce(topic, [(i % 2, f"k{i}", str(i).encode()) for i in range(30)])
    ends = ends_of(placed)
    calls = []

    def tokens() -> sluicegate.OAuthToken:
        calls.append(threading.current_thread().name)
        return sluicegate.OAuthToken(unsecured_jwt("py-consumer", 600), expires_at=time.time() + 600)

    consumer = oauth_consumer(oauth, topic, group, tokens)
    out = consumer.output()
    handled = set()

    @consumer.handler
    async def handle(msg: sluicegate.Message):
        await out.send(out_topic, msg.value, key=msg.key)
        handled.add((msg.partition, msg.offset))

    run(run_until(consumer, "every record is handled and committed", lambda: committed_to(consumer, topic, ends)))
    assert handled == set(placed)
    assert len(broker.read(out_topic, 30)) == 30
    # The consumer and the output producer each asked at least once, never on the loop's thread.
    assert len(calls) >= 2, calls
    assert threading.main_thread().name not in calls
    assert committed_offsets(broker, group, topic, 2) == [ends[0], ends[1]]


def test_a_tuple_from_the_token_provider_is_a_token_too(kafka):
    """``(token, expires_at)``, as confluent-kafka's ``oauth_cb`` returns it (what MSK IAM
    users' code already does)."""
    broker, oauth = kafka
    topic = unique("py-oauth-tuple")
    broker.create_topic(topic, 1)
    placed = broker.produce(topic, [(0, "k", b"x")] * 5)
    consumer = oauth_consumer(
        oauth, topic, unique("group"), lambda: (unsecured_jwt("py-tuple", 600), time.time() + 600)
    )
    assert_reads_all(consumer, topic, placed)


def test_a_configuration_file_takes_a_python_token_provider(kafka, tmp_path):
    """``Consumer.from_config(path, token_provider=...)``: the file's ``security:`` section says
    OAUTHBEARER, the function makes the tokens."""
    broker, oauth = kafka
    topic = unique("py-oauth-file")
    broker.create_topic(topic, 1)
    placed = broker.produce(topic, [(0, "k", b"x")] * 5)
    path = tmp_path / "sluicegate.yaml"
    path.write_text(
        f"kafka:\n  bootstrap_servers: {oauth}\n  group_id: {unique('group')}\n  topics: [{topic}]\n"
        "  commit_interval: 100ms\n  session_timeout: 6s\n  heartbeat_interval: 500ms\n"
        "  security:\n    protocol: sasl_plaintext\n    sasl_mechanism: OAUTHBEARER\n"
    )
    consumer = sluicegate.Consumer.from_config(
        path, token_provider=lambda: sluicegate.OAuthToken(unsecured_jwt("py-file", 600), time.time() + 600)
    )
    assert_reads_all(consumer, topic, placed)


def test_a_raising_token_provider_is_reported_and_nothing_is_consumed(kafka, caplog):
    """A token provider that raises: the failure is logged naming the exception (the consumer
    does not crash; librdkafka asks again later), nothing is consumed, nothing committed."""
    broker, oauth = kafka
    topic, group = unique("py-oauth-raises"), unique("group")
    broker.create_topic(topic, 1)
    broker.produce(topic, [(0, "k", b"x")] * 5)
    calls = []

    def tokens():
        calls.append(time.monotonic())
        raise RuntimeError("the identity service is unreachable")

    consumer = oauth_consumer(oauth, topic, group, tokens)
    handled = []

    @consumer.handler
    async def handle(msg):
        handled.append(msg.offset)

    def reported() -> bool:
        return any("the identity service is unreachable" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING):
        status = run(run_until(consumer, "the provider's failure is logged", reported))
    assert calls, "the token provider was never asked"
    record = next(r for r in caplog.records if "the identity service is unreachable" in r.getMessage())
    assert "RuntimeError" in record.getMessage(), record.getMessage()
    assert handled == []
    assert status["committed"] == {} and status["assigned"] == []
    assert committed_offsets(broker, group, topic, 1)[0] < 0


def test_a_permanent_error_from_the_token_provider_stops_the_consumer(kafka):
    """Credentials refused (the provider raises ``PermanentError``): ``run()`` raises, naming
    the provider's reason; nothing is consumed or committed."""
    broker, oauth = kafka
    topic, group = unique("py-oauth-refused"), unique("group")
    broker.create_topic(topic, 1)
    broker.produce(topic, [(0, "k", b"x")] * 5)

    def tokens():
        raise sluicegate.PermanentError("invalid_client: the client secret was revoked")

    consumer = oauth_consumer(oauth, topic, group, tokens)
    handled = []

    @consumer.handler
    async def handle(msg):
        handled.append(msg.offset)

    with pytest.raises(sluicegate.SluicegateError, match="the client secret was revoked"):
        run(consumer.run())
    assert handled == []
    assert committed_offsets(broker, group, topic, 1)[0] < 0


def test_a_token_the_broker_refuses_stops_the_consumer(kafka):
    """An expired token is refused by the broker: ``run()`` raises an authentication error
    naming OAUTHBEARER."""
    broker, oauth = kafka
    topic = unique("py-oauth-expired")
    broker.create_topic(topic, 1)

    def tokens():
        # Expired for the broker (its `exp` claim), not for librdkafka (`expires_at`).
        return sluicegate.OAuthToken(unsecured_jwt("py-expired", -60), expires_at=time.time() + 600)

    consumer = oauth_consumer(oauth, topic, unique("group"), tokens)

    @consumer.handler
    async def handle(msg):
        pass

    with pytest.raises(sluicegate.SluicegateError, match="OAUTHBEARER"):
        run(consumer.run())


@pytest.mark.parametrize(
    "security, named",
    [
        (sluicegate.Security(protocol="tls"), "security.protocol"),
        (sluicegate.Security(protocol="sasl_ssl", sasl_mechanism="GSSAPI"), "Kerberos"),
        (sluicegate.Security(sasl_mechanism="PLAIN"), "security.sasl_mechanism"),
        (sluicegate.Security(protocol="sasl_ssl", sasl_mechanism="SCRAM-SHA-512"), "security.sasl_username"),
        (sluicegate.Security(protocol="plaintext", ssl_ca_location="/ca.pem"), "security.ssl_ca_location"),
        (sluicegate.Security(protocol="ssl", ssl_certificate_location="/c.pem"), "security.ssl_key_location"),
        (sluicegate.Security(protocol=5), "security.protocol"),
    ],
)
def test_bad_security_settings_are_refused_naming_them(security, named):
    with pytest.raises(sluicegate.ConfigError, match=named.replace(".", r"\.")):
        sluicegate.Consumer(bootstrap_servers="localhost:1", group_id="g", topics=["t"], security=security)


def test_a_token_provider_needs_oauthbearer():
    with pytest.raises(sluicegate.ConfigError, match="token_provider"):
        sluicegate.Consumer(
            bootstrap_servers="localhost:1",
            group_id="g",
            topics=["t"],
            security=sluicegate.Security(protocol="sasl_ssl", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"),
            token_provider=lambda: ("t", time.time() + 60),
        )


def test_passwords_are_not_shown():
    s = sluicegate.Security(protocol="sasl_ssl", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in repr(s)
    with pytest.raises(sluicegate.ConfigError, match="security.sasl_password") as refused:
        sluicegate.Consumer(
            bootstrap_servers="localhost:1",
            group_id="g",
            topics=["t"],
            security=sluicegate.Security(
                protocol="sasl_ssl", sasl_mechanism="PLAIN", sasl_username="u", sasl_password=b"hunter2"
            ),
        )
    assert "hunter2" not in str(refused.value)
    assert "eyJ" not in repr(sluicegate.OAuthToken("eyJ-secret", expires_at=1.0))


PLAIN_USER, PLAIN_PASSWORD = "alice", "alice-Pa55word"


def sasl_consumer(address: str, topic: str, mechanism: str, user: str, password: str) -> sluicegate.Consumer:
    """A consumer of ``topic`` logging in at ``address`` (a SASL_PLAINTEXT listener)."""
    return sluicegate.Consumer(
        bootstrap_servers=address,
        group_id=unique("group"),
        topics=[topic],
        commit_interval=0.1,
        config={"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
        security=sluicegate.Security(
            protocol="sasl_plaintext", sasl_mechanism=mechanism, sasl_username=user, sasl_password=password
        ),
    )


def test_a_sasl_plain_login_consumes_and_commits():
    """``Security(protocol="sasl_plaintext", sasl_mechanism="PLAIN", ...)`` logs in to the PLAIN
    listener: every record is handled and committed."""
    broker, _, plain = listeners()
    topic = unique("py-plain")
    broker.create_topic(topic, 1)
    placed = broker.produce(topic, [(0, "k", b"x")] * 10)
    assert_reads_all(sasl_consumer(plain, topic, "PLAIN", PLAIN_USER, PLAIN_PASSWORD), topic, placed)


def test_a_wrong_password_stops_the_consumer_naming_the_user_not_the_password():
    broker, _, plain = listeners()
    consumer = sasl_consumer(plain, unique("py-plain-refused"), "PLAIN", PLAIN_USER, "not-Th3-password")

    @consumer.handler
    async def handle(msg):
        pass

    with pytest.raises(sluicegate.SluicegateError, match="PLAIN") as refused:
        run(consumer.run())
    assert PLAIN_USER in str(refused.value)
    assert "not-Th3-password" not in str(refused.value)


SCRAM_USER, SCRAM_PASSWORD = "bob", "bob-Pa55word"


def scram_listener() -> tuple:
    """Apache Kafka's PLAINTEXT bootstrap (a :class:`Broker`) and its SCRAM listener."""
    bootstrap, scram = kafka_addresses("SLUICEGATE_TEST_BOOTSTRAP", "SLUICEGATE_TEST_SCRAM_BOOTSTRAP")
    return Broker("kafka", bootstrap), scram


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_a_sasl_scram_login_consumes_and_commits(mechanism):
    """``Security(protocol="sasl_plaintext", sasl_mechanism="SCRAM-SHA-...", ...)`` logs in to
    the SCRAM listener (the broker checks the password against its SCRAM credential store):
    every record is handled and committed."""
    broker, scram = scram_listener()
    topic = unique("py-scram")
    broker.create_topic(topic, 1)
    placed = broker.produce(topic, [(0, "k", b"x")] * 10)
    assert_reads_all(sasl_consumer(scram, topic, mechanism, SCRAM_USER, SCRAM_PASSWORD), topic, placed)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_a_wrong_scram_password_stops_the_consumer_naming_the_user_not_the_password(mechanism):
    """The broker refuses the password: ``run()`` raises naming the mechanism and the user."""
    _, scram = scram_listener()
    consumer = sasl_consumer(scram, unique("py-scram-refused"), mechanism, SCRAM_USER, "not-Th3-password")

    @consumer.handler
    async def handle(msg):
        pass

    with pytest.raises(sluicegate.SluicegateError, match=mechanism) as refused:
        run(consumer.run())
    assert f"`{SCRAM_USER}`" in str(refused.value)
    assert "not-Th3-password" not in str(refused.value)
