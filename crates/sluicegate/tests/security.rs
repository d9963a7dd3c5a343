//! Secure connections against Apache Kafka's own listeners: the broker this test binary starts
//! (`common/kafka_broker.rs`) checks SASL logins against its own credentials (PLAIN users in
//! its JAAS configuration, SCRAM-SHA-256/512 users in its SCRAM credential store, created when
//! its storage was formatted), serves TLS itself (Java's TLS stack, certificates from
//! `common/pki.rs`), verifies client certificates, and validates OAUTHBEARER tokens with its
//! unsecured JWT validator.
//!
//! - SASL: successful PLAIN, SCRAM-SHA-256 (configured from YAML and `KAFKA_SASL_*`) and
//!   SCRAM-SHA-512 logins over SASL_PLAINTEXT, and SCRAM-SHA-512 over SASL_SSL: records
//!   consumed, committed (read back from the group) and a poison record dead-lettered, so the
//!   dead-letter producer and admin client logged in too; a wrong password, an unknown user and
//!   a mechanism the listener does not enable stop the consumer (and the exactly-once consumer)
//!   fast with `Error::Authentication`.
//! - TLS: consuming with the CA trusted; mutual TLS with a key and with an encrypted key, on a
//!   listener that requires a client certificate; no client certificate, a client certificate
//!   from another CA, a broker certificate from an untrusted CA and one for another name stop
//!   the consumer fast with `Error::Tls`.
//! - OAUTHBEARER: a token provider minting unsecured JWTs logs in and consumes; an expired or
//!   malformed token stops the consumer fast; the provider is asked again before expiry.
//! - OAUTHBEARER from configuration (YAML and `KAFKA_*`): the OIDC client credentials flow
//!   against a token endpoint the test serves on loopback: logs in, consumes, dead-letters;
//!   a `401` from the endpoint and an expired token stop the consumer fast; 4 s tokens are
//!   refreshed while consuming, on a listener that ends sessions when their token expires.
//!
//! These tests need the Apache Kafka started here (its listeners and users): they use it even
//! when `SLUICEGATE_TEST_BOOTSTRAP` names another broker.

#[allow(unused_macros)] // on_both_brokers!: these tests need Kafka's secured listeners.
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use common::kafka_broker::{client_settings, user_for, KafkaBroker};
use common::pki::CLIENT_KEY_PASSWORD;
use common::{committed_to_end, stop, unique, wait_status, TestBroker};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::ClientConfig;
use sluicegate::config::ConsumerConfig;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::interop::SecureContext;
use sluicegate::security::{OAuthToken, TokenError, TokenProvider};
use sluicegate::{handler_fn, Consumer, ConsumerBuilder, Error, HandlerError, Message};

/// How long a consumer may take to stop after a rejected credential or certificate. It
/// stops in well under a second; librdkafka alone would retry forever.
const FAIL_FAST: Duration = Duration::from_secs(15);

/// How long a test may take to consume a topic and commit it to the end.
const ROUND_TRIP: Duration = Duration::from_secs(60);

/// librdkafka settings as `(key, value)` pairs.
type Settings = Vec<(String, String)>;

/// The Apache Kafka of this test binary (started on first use), with the library's logs
/// (`RUST_LOG`) in the test's output.
fn kafka() -> anyhow::Result<&'static KafkaBroker> {
    common::init_logs();
    common::shared_kafka()
}

/// Which consumer a test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    AtLeastOnce,
    /// `.exactly_once(..)`: the transactional loop, which waits on `init_transactions` first.
    ExactlyOnce,
}

/// A consumer builder for `group` and `topic` with `settings` (`bootstrap.servers` among them)
/// and short group timeouts.
fn builder(settings: &Settings, group: &str, topic: &str) -> ConsumerBuilder {
    let mut builder = Consumer::builder()
        .group_id(group)
        .topic(topic)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in settings {
        builder = match k.as_str() {
            "bootstrap.servers" => builder.bootstrap_servers(v),
            _ => builder.set(k, v),
        };
    }
    builder
}

/// Settings for the SSL listener at `addr`, trusting `ca`.
fn tls_settings(addr: &str, ca: &std::path::Path) -> Settings {
    vec![
        ("bootstrap.servers".into(), addr.into()),
        ("security.protocol".into(), "SSL".into()),
        ("ssl.ca.location".into(), ca.display().to_string()),
    ]
}

/// `settings` with `key` set to `value` (replaced if present).
fn with(mut settings: Settings, key: &str, value: impl ToString) -> Settings {
    settings.retain(|(k, _)| k != key);
    settings.push((key.into(), value.to_string()));
    settings
}

/// Runs `builder` (reading a topic that never gets a record) until it stops on its own, at
/// most [`FAIL_FAST`]; returns how it stopped and how long it took.
async fn run_until_stopped(
    builder: ConsumerBuilder,
    mode: Mode,
) -> anyhow::Result<(Result<(), Error>, Duration)> {
    let builder = match mode {
        Mode::AtLeastOnce => builder,
        Mode::ExactlyOnce => builder.exactly_once(unique("txn")),
    };
    let started = Instant::now();
    let handle = builder
        .build(handler_fn(|_: Message| async { Ok(()) }))?
        .spawn()?;
    match tokio::time::timeout(FAIL_FAST, handle.wait()).await {
        Ok(r) => Ok((r, started.elapsed())),
        Err(_) => bail!("the consumer did not stop within {FAIL_FAST:?}: it retries forever"),
    }
}

/// Runs the consumer of `builder` (`mode`) until it stops, which must be with
/// [`Error::Authentication`] naming `mechanism` and `user` (if given), without `secret` in its
/// text or `Debug`.
async fn stopped_by_authentication(
    builder: ConsumerBuilder,
    mode: Mode,
    mechanism: &str,
    user: Option<&str>,
    secret: &str,
) -> anyhow::Result<()> {
    let (result, took) = run_until_stopped(builder, mode).await?;
    let err = result
        .err()
        .context("the consumer stopped without an error")?;
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    eprintln!("{mechanism} as {user:?} ({mode:?}): stopped after {took:?} with: {text}");
    ensure!(
        matches!(&err, Error::Authentication { mechanism: m, .. } if m == mechanism),
        "not an authentication error for {mechanism}: {debug}"
    );
    ensure!(
        text.contains(mechanism) && user.is_none_or(|u| text.contains(&format!("`{u}`"))),
        "the error does not name the mechanism and the user: {text}"
    );
    ensure!(
        !text.contains(secret) && !debug.contains(secret),
        "the error shows the secret: {debug}"
    );
    Ok(())
}

/// Runs a consumer with `settings` until it stops, which must be with [`Error::Tls`]; returns
/// its reason.
async fn stopped_by_tls(settings: &Settings) -> anyhow::Result<String> {
    let builder = builder(settings, &unique("g"), &unique("never-read"));
    let (result, took) = run_until_stopped(builder, Mode::AtLeastOnce).await?;
    match result {
        Err(Error::Tls(reason)) => {
            eprintln!("stopped after {took:?} with Error::Tls: {reason}");
            Ok(reason)
        }
        Err(e) => bail!("stopped with another error than Error::Tls: {e:?}"),
        Ok(()) => bail!("stopped without an error"),
    }
}

/// Runs `builder` until it has committed every partition of `topic` at its log end `end`;
/// returns how many messages the handler saw. Offset `poison` of partition 0, if given, fails
/// permanently (and goes to the dead-letter topic, if the builder has one).
async fn consume_to_end(
    builder: ConsumerBuilder,
    topic: &str,
    end: &BTreeMap<i32, i64>,
    poison: Option<i64>,
) -> anyhow::Result<usize> {
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let handle = builder
        .build(handler_fn(move |msg: Message| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if msg.partition() == 0 && Some(msg.offset()) == poison {
                Err(HandlerError::permanent("poison"))
            } else {
                Ok(())
            })
        }))?
        .spawn()?;
    let mut status = handle.status();
    let reached = wait_status(
        &mut status,
        ROUND_TRIP,
        &format!("commits at the log ends {end:?} of {topic}"),
        |s| s.stopped || committed_to_end(s, topic, end),
    )
    .await;
    match reached {
        Ok(s) if !s.stopped => stop(handle).await?,
        _ => {
            handle.shutdown();
            let ended = tokio::time::timeout(Duration::from_secs(30), handle.wait()).await;
            bail!("{reached:?}; the consumer ended with {ended:?}");
        }
    }
    Ok(handled.load(Ordering::SeqCst))
}

/// Runs `builder` (with a dead-letter topic) over `topic` (20 records on 2 partitions, ends
/// `end`) until its commits reach the log ends, with the record at offset 3 of partition 0
/// failing for good; checks every record was handled, the group's commits (read back) and the
/// dead letter: every client of the consumer (and its dead-letter producer) got in.
async fn consumes_commits_and_dead_letters(
    broker: &TestBroker,
    builder: ConsumerBuilder,
    group: &str,
    topic: &str,
    end: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let handled = consume_to_end(builder, topic, end, Some(3)).await?;
    ensure!(handled >= 20, "{handled} messages handled");
    let committed = broker.committed_offsets(group, topic).await?;
    ensure!(
        &committed == end,
        "committed {committed:?}, log ends {end:?}"
    );
    let dead = broker
        .read_records(&format!("{topic}.dlq"), 1, ROUND_TRIP)
        .await?;
    let payload = dead[0].payload().map(String::from_utf8_lossy);
    ensure!(
        payload.as_deref() == Some(format!("{topic}:0:3").as_str()),
        "dead letter: {payload:?}"
    );
    Ok(())
}

/// Waits until a client with `settings` gets metadata listing a broker; at most 30 s.
async fn metadata_answered(settings: &Settings) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    for (k, v) in settings {
        config.set(k, v);
    }
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(m) if !m.brokers().is_empty() => return Ok(()),
                other if Instant::now() > deadline => bail!("no metadata: {other:?}"),
                // fetch_metadata waited up to 2 s for an answer: ask again.
                _ => {}
            }
        }
    })
    .await?
}

// --- SASL: the broker's own credentials ---

/// How a test builds its consumer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    /// With builder calls: `.set("sasl.mechanism", ..)` and the others.
    Builder,
    /// From YAML with the connection and SASL settings in `KAFKA_*` environment variables.
    YamlAndEnv,
}

/// Logs in over `protocol` (`SASL_PLAINTEXT` or `SASL_SSL`) as the broker's user for
/// `mechanism`: a consumer handles 2 × 10 records (offset 3 of partition 0 is poison and goes to
/// `<topic>.dlq`) and commits them; the committed offsets and the dead letter are read back.
/// Every connection of the consumer, its dead-letter producer and its admin client goes to the
/// SASL listener, which serves nothing before a login.
async fn logs_in_and_consumes(protocol: &str, mechanism: &str, setup: Setup) -> anyhow::Result<()> {
    let kafka = kafka()?;
    let broker = TestBroker::started_kafka()?;
    let started = Instant::now();
    let (topic, group) = (unique("sasl"), unique("sasl-g"));
    let (_, end) = broker.fill_topic(&topic, 2, 10).await?;
    let settings = client_settings(kafka, protocol, Some(mechanism));
    let listener = if protocol == "SASL_SSL" {
        &kafka.sasl_ssl
    } else {
        &kafka.sasl
    };
    ensure!(
        settings.contains(&("bootstrap.servers".into(), listener.clone())),
        "{settings:?}"
    );
    let builder = match setup {
        Setup::Builder => builder(&settings, &group, &topic).dead_letter(DeadLetter::default()),
        Setup::YamlAndEnv => {
            let yaml = format!(
                "kafka:
  group_id: {group}
  topics: [{topic}]
  dead_letter: {{ enabled: true }}
  session_timeout: 6s
  heartbeat_interval: 500ms
"
            );
            let (user, password) = user_for(mechanism);
            let mut env = vec![
                ("KAFKA_BOOTSTRAP_SERVERS", listener.clone()),
                ("KAFKA_SECURITY_PROTOCOL", protocol.to_lowercase()),
                ("KAFKA_SASL_MECHANISM", mechanism.to_owned()),
                ("KAFKA_SASL_USERNAME", user.to_owned()),
                ("KAFKA_SASL_PASSWORD", password.to_owned()),
            ];
            if protocol == "SASL_SSL" {
                env.push(("KAFKA_SSL_CA_LOCATION", kafka.pki.ca.display().to_string()));
            }
            let config = ConsumerConfig::load_str(&yaml, env).map_err(|e| anyhow!("{e}"))?;
            ensure!(
                config.security.sasl_mechanism.map(|m| m.as_str()) == Some(mechanism),
                "{config:?}"
            );
            ConsumerBuilder::from_config(&config)
        }
    };
    consumes_commits_and_dead_letters(&broker, builder, &group, &topic, &end).await?;
    eprintln!(
        "{mechanism} ({protocol}, {setup:?}): consumed, committed and dead-lettered in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_plain_login() -> anyhow::Result<()> {
    logs_in_and_consumes("SASL_PLAINTEXT", "PLAIN", Setup::Builder).await
}

/// Configured from YAML and `KAFKA_SASL_*` variables, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_scram_sha_256_login_configured_from_the_environment() -> anyhow::Result<()>
{
    logs_in_and_consumes("SASL_PLAINTEXT", "SCRAM-SHA-256", Setup::YamlAndEnv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_scram_sha_512_login() -> anyhow::Result<()> {
    logs_in_and_consumes("SASL_PLAINTEXT", "SCRAM-SHA-512", Setup::Builder).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_scram_sha_512_login_over_tls() -> anyhow::Result<()> {
    logs_in_and_consumes("SASL_SSL", "SCRAM-SHA-512", Setup::Builder).await
}

/// A wrong password and an unknown user, with `mechanism`, stop both consumers fast.
async fn rejected_logins_stop_the_consumer(mechanism: &str) -> anyhow::Result<()> {
    let kafka = kafka()?;
    let (user, _) = user_for(mechanism);
    let wrong = "wrong-Pa55word-Zq7";
    let settings = client_settings(kafka, "SASL_PLAINTEXT", Some(mechanism));
    let wrong_password = with(settings.clone(), "sasl.password", wrong);
    let unknown_user = with(
        with(settings, "sasl.username", "mallory"),
        "sasl.password",
        wrong,
    );
    let never_read = |settings| builder(settings, &unique("g"), &unique("never-read"));
    for mode in [Mode::AtLeastOnce, Mode::ExactlyOnce] {
        let rejected = never_read(&wrong_password);
        stopped_by_authentication(rejected, mode, mechanism, Some(user), wrong).await?;
        let rejected = never_read(&unknown_user);
        stopped_by_authentication(rejected, mode, mechanism, Some("mallory"), wrong).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_plain_logins_stop_the_consumer_fast() -> anyhow::Result<()> {
    rejected_logins_stop_the_consumer("PLAIN").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_scram_sha_256_logins_stop_the_consumer_fast() -> anyhow::Result<()> {
    rejected_logins_stop_the_consumer("SCRAM-SHA-256").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_scram_sha_512_logins_stop_the_consumer_fast() -> anyhow::Result<()> {
    rejected_logins_stop_the_consumer("SCRAM-SHA-512").await
}

/// The OAUTH listener enables OAUTHBEARER only: a PLAIN login with good credentials is refused
/// in the SASL handshake (`UNSUPPORTED_SASL_MECHANISM`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mechanism_the_listener_does_not_enable_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let (user, password) = user_for("PLAIN");
    let settings = with(
        client_settings(kafka, "SASL_PLAINTEXT", Some("PLAIN")),
        "bootstrap.servers",
        &kafka.oauth,
    );
    let builder = builder(&settings, &unique("g"), &unique("never-read"));
    stopped_by_authentication(builder, Mode::AtLeastOnce, "PLAIN", Some(user), password).await
}

// --- TLS: the broker's own SSL listeners ---

/// How a client identifies itself in the TLS handshake.
#[derive(Clone, Copy, Debug)]
enum Identity {
    /// No client certificate.
    Anonymous,
    /// The client certificate, with its key unencrypted.
    Certificate,
    /// The client certificate, with its key encrypted and `ssl.key.password`.
    EncryptedKey,
    /// A client certificate signed by another CA than the one the broker trusts.
    Rogue,
    /// A client certificate signed by the test CA, expired.
    Expired,
}

/// Settings for the SSL listener at `addr`, trusting the test CA, as `identity`.
fn identified(kafka: &KafkaBroker, addr: &str, identity: Identity) -> Settings {
    let path = |p: &std::path::Path| p.display().to_string();
    let pki = &kafka.pki;
    let mut settings = tls_settings(addr, &pki.ca);
    let (cert, key) = match identity {
        Identity::Anonymous => return settings,
        Identity::Certificate | Identity::EncryptedKey => (&pki.client_cert, &pki.client_key),
        Identity::Rogue => (&pki.rogue_client_cert, &pki.rogue_client_key),
        Identity::Expired => (&pki.expired_client_cert, &pki.expired_client_key),
    };
    settings.push(("ssl.certificate.location".into(), path(cert)));
    if let Identity::EncryptedKey = identity {
        settings.push(("ssl.key.location".into(), path(&pki.client_key_encrypted)));
        settings.push(("ssl.key.password".into(), CLIENT_KEY_PASSWORD.into()));
    } else {
        settings.push(("ssl.key.location".into(), path(key)));
    }
    settings
}

/// Over TLS on `addr` as `identity`: a consumer reads a fresh topic of 2 × 10 records and
/// commits it to the end; the group's offsets are read back from the broker.
async fn consumes_over_tls(addr: &str, identity: Identity) -> anyhow::Result<()> {
    let kafka = kafka()?;
    let broker = TestBroker::started_kafka()?;
    let started = Instant::now();
    let (topic, group) = (unique("tls"), unique("tls-g"));
    let (_, end) = broker.fill_topic(&topic, 2, 10).await?;
    let settings = identified(kafka, addr, identity);
    let handled = consume_to_end(builder(&settings, &group, &topic), &topic, &end, None).await?;
    ensure!(handled >= 20, "{handled} messages handled");
    let committed = broker.committed_offsets(&group, &topic).await?;
    ensure!(
        committed == end,
        "committed {committed:?}, log ends {end:?}"
    );
    eprintln!(
        "TLS as {identity:?}: consumed and committed 20 records in {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Hostname verification stays at librdkafka's default (`https`): the broker's certificate is
/// for `127.0.0.1` (an IP SAN) and `localhost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_over_tls_with_the_ca_trusted() -> anyhow::Result<()> {
    consumes_over_tls(&kafka()?.ssl, Identity::Anonymous).await
}

/// On the listener that requires a client certificate: with none the consumer stops at once;
/// with the certificate and its key, plain or encrypted, it consumes; a wrong key password
/// fails when the consumer is created, without showing the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let reason = stopped_by_tls(&identified(kafka, &kafka.mtls, Identity::Anonymous)).await?;
    ensure!(
        reason.contains("alert bad certificate")
            && reason.contains("wants a client certificate: set ssl.certificate.location"),
        "the reason names the missing client certificate: {reason}"
    );

    consumes_over_tls(&kafka.mtls, Identity::Certificate).await?;
    consumes_over_tls(&kafka.mtls, Identity::EncryptedKey).await?;

    let wrong = "wrong-key-Pa55word-Q9";
    let settings = with(
        identified(kafka, &kafka.mtls, Identity::EncryptedKey),
        "ssl.key.password",
        wrong,
    );
    let err = match builder(&settings, &unique("g"), &unique("never-read"))
        .build(handler_fn(|_: Message| async { Ok(()) }))
    {
        Ok(consumer) => consumer.spawn().err(),
        Err(e) => Some(e),
    }
    .context("a consumer with a wrong ssl.key.password was created")?;
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    eprintln!("wrong ssl.key.password: {text}");
    ensure!(text.contains("ssl.key"), "{text}");
    ensure!(!text.contains(wrong) && !debug.contains(wrong), "{debug}");
    Ok(())
}

/// librdkafka does not even send a certificate whose issuer the broker does not list among its
/// trusted CAs; the listener that requires one refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let reason = stopped_by_tls(&identified(kafka, &kafka.mtls, Identity::Rogue)).await?;
    ensure!(
        reason.contains("alert bad certificate")
            && reason.contains("refused the client certificate"),
        "the reason names the refused certificate: {reason}"
    );
    Ok(())
}

/// The broker checks the certificate it gets and refuses an expired one, both on the listener
/// that requires a client certificate and on the one that only requests one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_certificate_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    for addr in [&kafka.mtls, &kafka.ssl] {
        let reason = stopped_by_tls(&identified(kafka, addr, Identity::Expired)).await?;
        ensure!(
            reason.contains("alert certificate unknown")
                && reason.contains("refused the client certificate"),
            "the reason names the refused certificate: {reason}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let reason = stopped_by_tls(&tls_settings(&kafka.ssl, &kafka.pki.other_ca)).await?;
    ensure!(
        reason.contains("certificate verify failed"),
        "the reason names the verification: {reason}"
    );
    Ok(())
}

/// Signed by the trusted CA, but for `broker.invalid`, not 127.0.0.1: hostname verification
/// (on by default) rejects it, and only that: without it, the same listener answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_name_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let settings = tls_settings(&kafka.misnamed, &kafka.pki.ca);
    let reason = stopped_by_tls(&settings).await?;
    ensure!(
        reason.contains("certificate verify failed"),
        "the reason names the verification: {reason}"
    );
    metadata_answered(&with(
        settings,
        "ssl.endpoint.identification.algorithm",
        "none",
    ))
    .await
    .context("the listener does not answer without hostname verification either")
}

// --- OAUTHBEARER: tokens from the library's token provider ---

/// The principal of the test tokens (their `sub` claim).
const TOKEN_PRINCIPAL: &str = "svc-sluicegate";

/// What [`UnsecuredJwts`] hands out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Jwt {
    /// Valid for the provider's lifetime.
    Valid,
    /// Its `exp` claim a minute ago, while the provider tells librdkafka it is valid for its
    /// lifetime (a clock skew, or a provider handing out a stale token): the broker decides.
    Expired,
    /// Three parts, but the claims are not JSON.
    Malformed,
}

/// Mints unsecured JWTs (`{"alg":"none"}`, no signature), which the broker's OAUTH listener
/// accepts (Kafka's `OAuthBearerUnsecuredJws`): `sub`, `iat`, `exp` and `scope` claims. Counts
/// the calls.
#[derive(Clone)]
struct UnsecuredJwts {
    kind: Jwt,
    lifetime: Duration,
    calls: Arc<AtomicUsize>,
}

impl UnsecuredJwts {
    fn new(kind: Jwt, lifetime: Duration) -> Self {
        UnsecuredJwts {
            kind,
            lifetime,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenProvider for UnsecuredJwts {
    async fn token(&self) -> Result<OAuthToken, TokenError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // An await point, as a real provider has: it runs on the consumer's runtime.
        tokio::task::yield_now().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| TokenError::new(e.to_string()))?
            .as_secs();
        let exp = match self.kind {
            Jwt::Expired => now - 60,
            _ => now + self.lifetime.as_secs(),
        };
        let claims = match self.kind {
            Jwt::Malformed => "not a JSON object".to_owned(),
            _ => serde_json::json!({
                "sub": TOKEN_PRINCIPAL,
                "iat": now,
                "exp": exp,
                "scope": "kafka",
            })
            .to_string(),
        };
        let jwt = format!(
            "{}.{}.",
            BASE64URL.encode(r#"{"alg":"none"}"#),
            BASE64URL.encode(claims)
        );
        Ok(OAuthToken::new(jwt, TOKEN_PRINCIPAL, self.lifetime))
    }
}

/// Settings for the OAUTH listener (SASL_PLAINTEXT, OAUTHBEARER only).
fn oauth_settings(kafka: &KafkaBroker) -> Settings {
    vec![
        ("bootstrap.servers".into(), kafka.oauth.clone()),
        ("security.protocol".into(), "SASL_PLAINTEXT".into()),
        ("sasl.mechanism".into(), "OAUTHBEARER".into()),
    ]
}

/// The consumer, its dead-letter producer and its admin client log in with the provider's
/// tokens (librdkafka has no other: its own unsecured tokens are off), consume, commit and
/// dead-letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_an_oauthbearer_login_with_the_providers_token() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let broker = TestBroker::started_kafka()?;
    let started = Instant::now();
    let (topic, group) = (unique("oauth"), unique("oauth-g"));
    let (_, end) = broker.fill_topic(&topic, 2, 10).await?;
    let tokens = UnsecuredJwts::new(Jwt::Valid, Duration::from_secs(600));
    let builder = builder(&oauth_settings(kafka), &group, &topic)
        .oauth_token_provider(tokens.clone())
        .dead_letter(DeadLetter::default());
    consumes_commits_and_dead_letters(&broker, builder, &group, &topic, &end).await?;
    let calls = tokens.calls();
    ensure!(
        calls >= 2,
        "{calls} tokens for the consumer and its producer"
    );
    eprintln!(
        "OAUTHBEARER: {calls} tokens; consumed, committed and dead-lettered in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_oauthbearer_token_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let tokens = UnsecuredJwts::new(Jwt::Expired, Duration::from_secs(600));
    let token = tokens.token().await?.token().to_owned();
    for mode in [Mode::AtLeastOnce, Mode::ExactlyOnce] {
        let builder = builder(&oauth_settings(kafka), &unique("g"), &unique("never-read"))
            .oauth_token_provider(tokens.clone());
        stopped_by_authentication(builder, mode, "OAUTHBEARER", None, &token).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_oauthbearer_token_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let tokens = UnsecuredJwts::new(Jwt::Malformed, Duration::from_secs(600));
    let token = tokens.token().await?.token().to_owned();
    let builder = builder(&oauth_settings(kafka), &unique("g"), &unique("never-read"))
        .oauth_token_provider(tokens.clone());
    stopped_by_authentication(builder, Mode::AtLeastOnce, "OAUTHBEARER", None, &token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_provider_is_asked_again_before_the_token_expires() -> anyhow::Result<()> {
    // No broker needed: librdkafka asks for a token when the client is created and again at
    // 80% of its lifetime, whether or not it has connected. The port is closed, so the
    // consumer keeps trying to connect (and stays up) while the refreshes are counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let tokens = UnsecuredJwts::new(Jwt::Valid, Duration::from_secs(2));
    let mut builder = Consumer::builder()
        .bootstrap_servers(closed.to_string())
        .group_id(unique("g"))
        .topic("t")
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "OAUTHBEARER")
        .oauth_token_provider(tokens.clone());
    let output = builder.output()?;
    let handle = builder
        .build(handler_fn(|_: Message| async { Ok(()) }))?
        .spawn()?;
    let started = Instant::now();
    // Consumer and output producer each ask once at creation (2), then each again ~1.6 s
    // later: at least 4 calls within 2 lifetimes show refreshes before expiry.
    let deadline = started + Duration::from_secs(4);
    while tokens.calls() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a counter, bounded
    }
    let calls = tokens.calls();
    let took = started.elapsed();
    drop(output);
    handle.abort();
    tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .context("abort")??;
    ensure!(
        calls >= 4,
        "{calls} token calls in {took:?}: expected creation plus refresh for consumer and producer"
    );
    ensure!(took < Duration::from_secs(4), "refreshes took {took:?}");
    Ok(())
}

// --- OAUTHBEARER from configuration: an OIDC token endpoint (client credentials) ---

/// The client of the test token endpoint.
const OIDC_CLIENT_ID: &str = "sluicegate-test";
const OIDC_CLIENT_SECRET: &str = "oidc-client-s3cret";

/// What [`TokenEndpoint`] answers a client that authenticates.
#[derive(Clone, Copy, Debug)]
enum Issue {
    /// Unsecured JWTs valid for this long (`expires_in` and `exp`).
    Valid(Duration),
    /// Unsecured JWTs whose `exp` is `jwt` on, announced with a shorter `expires_in` (the
    /// client refreshes after 80% of it).
    Announced { expires_in: Duration, jwt: Duration },
    /// A JWT whose `exp` was a minute ago, with `expires_in: 3600`.
    Expired,
}

/// One request the endpoint got.
#[derive(Clone, Debug, Default)]
struct TokenRequest {
    form: BTreeMap<String, String>,
    basic: Option<String>,
}

struct EndpointState {
    issue: Issue,
    requests: std::sync::Mutex<Vec<TokenRequest>>,
    /// How many tokens were issued.
    issued: tokio::sync::watch::Sender<usize>,
    /// When the first was.
    first_issued: std::sync::OnceLock<Instant>,
}

/// A small OIDC token endpoint on loopback (`POST /token`, client credentials grant, HTTP
/// Basic client authentication) issuing unsecured JWTs (`alg: none`; `sub`, `iat`, `exp`,
/// `scope`) that the broker's OAUTH listener accepts; `401 invalid_client` to any other
/// client.
struct TokenEndpoint {
    url: String,
    state: Arc<EndpointState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TokenEndpoint {
    async fn start(issue: Issue) -> anyhow::Result<Self> {
        use axum::http::{header, HeaderMap, StatusCode};
        let state = Arc::new(EndpointState {
            issue,
            requests: std::sync::Mutex::new(Vec::new()),
            issued: tokio::sync::watch::channel(0).0,
            first_issued: std::sync::OnceLock::new(),
        });
        let handler = |axum::extract::State(state): axum::extract::State<Arc<EndpointState>>,
                       headers: HeaderMap,
                       body: String| async move {
            let form: BTreeMap<String, String> = body
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.replace('+', " ")))
                .collect();
            let basic = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            state.requests.lock().unwrap().push(TokenRequest {
                form: form.clone(),
                basic: basic.clone(),
            });
            let json = [(header::CONTENT_TYPE, "application/json")];
            if basic.as_deref() != Some(&format!("{OIDC_CLIENT_ID}:{OIDC_CLIENT_SECRET}")) {
                let body = r#"{"error":"invalid_client","error_description":"client authentication failed"}"#;
                return (StatusCode::UNAUTHORIZED, json, body.to_owned());
            }
            if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
                let body = r#"{"error":"unsupported_grant_type"}"#;
                return (StatusCode::BAD_REQUEST, json, body.to_owned());
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let (exp, expires_in) = match state.issue {
                Issue::Valid(lifetime) => (now + lifetime.as_secs(), lifetime.as_secs()),
                Issue::Announced { expires_in, jwt } => (now + jwt.as_secs(), expires_in.as_secs()),
                Issue::Expired => (now - 60, 3600),
            };
            let claims = serde_json::json!({
                "sub": TOKEN_PRINCIPAL,
                "iat": now,
                "exp": exp,
                "scope": form.get("scope").cloned().unwrap_or_default(),
            });
            let jwt = format!(
                "{}.{}.",
                BASE64URL.encode(r#"{"alg":"none"}"#),
                BASE64URL.encode(claims.to_string())
            );
            state.first_issued.get_or_init(Instant::now);
            state.issued.send_modify(|n| *n += 1);
            let body = serde_json::json!({
                "access_token": jwt,
                "token_type": "Bearer",
                "expires_in": expires_in,
            });
            (StatusCode::OK, json, body.to_string())
        };
        let app = axum::Router::new()
            .route("/token", axum::routing::post(handler))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/token", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TokenEndpoint { url, state, server })
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    fn issued(&self) -> usize {
        *self.state.issued.borrow()
    }

    /// Waits until the endpoint has issued `n` tokens, at most `limit`.
    async fn wait_issued(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let mut issued = self.state.issued.subscribe();
        tokio::time::timeout(limit, issued.wait_for(|i| *i >= n))
            .await
            .with_context(|| {
                format!("{} tokens issued within {limit:?}, not {n}", self.issued())
            })??;
        Ok(())
    }
}

/// A consumer of `topic` in `group` on the OAUTH listener, configured from YAML (the OIDC
/// settings but the secret) and `KAFKA_*` variables (the brokers and the client secret):
/// the token provider comes from the configuration alone.
fn oidc_consumer(
    kafka: &KafkaBroker,
    endpoint: &TokenEndpoint,
    secret: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<ConsumerBuilder> {
    Ok(ConsumerBuilder::from_config(&oidc_config(
        kafka, endpoint, secret, group, topic,
    )?))
}

/// The configuration of [`oidc_consumer`].
fn oidc_config(
    kafka: &KafkaBroker,
    endpoint: &TokenEndpoint,
    secret: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<ConsumerConfig> {
    let yaml = format!(
        "kafka:
  group_id: {group}
  topics: [{topic}]
  dead_letter: {{ enabled: true }}
  session_timeout: 6s
  heartbeat_interval: 500ms
  security:
    protocol: sasl_plaintext
    sasl_mechanism: OAUTHBEARER
    oauthbearer:
      token_endpoint: {url}
      client_id: {OIDC_CLIENT_ID}
      scope: kafka.read kafka.write
",
        url = endpoint.url
    );
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.oauth.clone()),
        ("KAFKA_OAUTHBEARER_CLIENT_SECRET", secret.to_owned()),
    ];
    let config = ConsumerConfig::load_str(&yaml, env).map_err(|e| anyhow!("{e}"))?;
    ensure!(config.warnings().is_empty(), "{:?}", config.warnings());
    Ok(config)
}

/// The consumer, its dead-letter producer and its admin client log in with tokens from the
/// OIDC token endpoint, all set up from configuration; consume, commit and dead-letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_an_oidc_login_configured_from_file_and_environment() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let broker = TestBroker::started_kafka()?;
    let endpoint = TokenEndpoint::start(Issue::Valid(Duration::from_secs(600))).await?;
    let started = Instant::now();
    let (topic, group) = (unique("oidc"), unique("oidc-g"));
    let (_, end) = broker.fill_topic(&topic, 2, 10).await?;
    let builder = oidc_consumer(kafka, &endpoint, OIDC_CLIENT_SECRET, &group, &topic)?;
    consumes_commits_and_dead_letters(&broker, builder, &group, &topic, &end).await?;
    let requests = endpoint.requests();
    ensure!(!requests.is_empty(), "the token endpoint was never asked");
    for r in &requests {
        ensure!(
            r.form.get("grant_type").map(String::as_str) == Some("client_credentials")
                && r.form.get("scope").map(String::as_str) == Some("kafka.read kafka.write")
                && r.basic.as_deref() == Some(&format!("{OIDC_CLIENT_ID}:{OIDC_CLIENT_SECRET}")),
            "{r:?}"
        );
    }
    eprintln!(
        "OIDC: {} token requests; consumed, committed and dead-lettered in {:?}",
        requests.len(),
        started.elapsed()
    );
    Ok(())
}

/// A client of the program's own (here a `BaseConsumer` asking for metadata), created from the
/// configuration's `client_config` with a `SecureContext` of its `client_security`, logs in
/// with the endpoint's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_clients_log_in_with_the_configured_token_provider() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let endpoint = TokenEndpoint::start(Issue::Valid(Duration::from_secs(600))).await?;
    let config = oidc_config(kafka, &endpoint, OIDC_CLIENT_SECRET, "unused", "unused")?;
    let client = config.client_config(sluicegate::config::ClientKind::Consumer);
    let context = SecureContext::new(config.client_security(&client));
    let client = client.to_rdkafka();
    let brokers = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<SecureContext> = client.create_with_context(context)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Polling serves librdkafka's token request.
            let _ = consumer.poll(Duration::from_millis(100));
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(m) if !m.brokers().is_empty() => return Ok(m.brokers().len()),
                other if Instant::now() > deadline => bail!("no metadata: {other:?}"),
                // fetch_metadata waited up to 2 s for an answer: ask again.
                _ => {}
            }
        }
    })
    .await??;
    ensure!(brokers == 1, "{brokers} brokers");
    ensure!(endpoint.issued() >= 1, "no token was issued");
    Ok(())
}

/// The endpoint refuses the client (`401 invalid_client`): asking again cannot help, so the
/// consumer stops at once, the error naming the endpoint's answer and never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_refusing_the_client_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let endpoint = TokenEndpoint::start(Issue::Valid(Duration::from_secs(600))).await?;
    let wrong = "wrong-client-s3cret";
    for mode in [Mode::AtLeastOnce, Mode::ExactlyOnce] {
        let builder = oidc_consumer(kafka, &endpoint, wrong, &unique("g"), &unique("never-read"))?;
        let (result, took) = run_until_stopped(builder, mode).await?;
        let err = result.err().context("stopped without an error")?;
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        eprintln!("refused client ({mode:?}): stopped after {took:?} with: {text}");
        ensure!(
            matches!(&err, Error::Authentication { mechanism, .. } if mechanism == "OAUTHBEARER"),
            "{debug}"
        );
        ensure!(
            text.contains(&endpoint.url)
                && text.contains("401")
                && text.contains("invalid_client")
                && text.contains(OIDC_CLIENT_ID),
            "the error does not name the endpoint's answer: {text}"
        );
        ensure!(
            !text.contains(wrong) && !debug.contains(wrong),
            "the secret shows: {debug}"
        );
    }
    ensure!(endpoint.issued() == 0, "tokens issued to a refused client");
    Ok(())
}

/// The endpoint issues a token that has already expired: the provider refuses it and the
/// consumer stops at once, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_from_the_endpoint_stops_the_consumer_fast() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let endpoint = TokenEndpoint::start(Issue::Expired).await?;
    let builder = oidc_consumer(
        kafka,
        &endpoint,
        OIDC_CLIENT_SECRET,
        &unique("g"),
        &unique("never-read"),
    )?;
    let (result, took) = run_until_stopped(builder, Mode::AtLeastOnce).await?;
    let err = result.err().context("stopped without an error")?;
    let text = err.to_string();
    eprintln!("expired token: stopped after {took:?} with: {text}");
    ensure!(
        matches!(&err, Error::Authentication { mechanism, .. } if mechanism == "OAUTHBEARER"),
        "{err:?}"
    );
    ensure!(
        text.contains("already expired") && text.contains(&endpoint.url),
        "{text}"
    );
    Ok(())
}

/// Tokens announced for 4 s (`expires_in`) whose JWT expires after 12 s, on a listener that
/// ends each session when its token expires (re-authentication, KIP-368): the endpoint is
/// asked again before each token expires, every connection logs in again with a fresh one
/// when its session ends, and consumption goes on past the first tokens' expiry.
///
/// Why the JWT outlives `expires_in`: a connection that logs in just before the refresh gets a
/// session that ends with its token, and librdkafka re-authenticates at 90% of a session;
/// Kafka refuses a second re-authentication within a second of the previous one, so with
/// tokens of a few seconds (`exp` in whole seconds) a session can end too soon after the
/// previous re-authentication (seen with 4 and 8 s tokens). The margin keeps every session
/// above a second; refreshes still come every ~3 s and the first sessions still end at 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_refreshed_before_they_expire_while_consuming() -> anyhow::Result<()> {
    const EXPIRES_IN: Duration = Duration::from_secs(4);
    const JWT_LIFETIME: Duration = Duration::from_secs(12);
    let kafka = kafka()?;
    let broker = TestBroker::started_kafka()?;
    let endpoint = TokenEndpoint::start(Issue::Announced {
        expires_in: EXPIRES_IN,
        jwt: JWT_LIFETIME,
    })
    .await?;
    let (topic, group) = (unique("oidc-refresh"), unique("oidc-refresh-g"));
    let (_, end) = broker.fill_topic(&topic, 2, 10).await?;
    let handle = oidc_consumer(kafka, &endpoint, OIDC_CLIENT_SECRET, &group, &topic)?
        .build(handler_fn(|_: Message| async { Ok(()) }))?
        .spawn()?;
    let mut status = handle.status();
    let started = Instant::now();
    let first = wait_status(
        &mut status,
        ROUND_TRIP,
        "the first records committed",
        |s| s.stopped || committed_to_end(s, &topic, &end),
    )
    .await?;
    ensure!(!first.stopped, "stopped: {first:?}");
    // A refresh before the first token's announced expiry.
    endpoint.wait_issued(2, EXPIRES_IN * 2).await?;
    // Waiting for an expiry: until the first token (and every session it opened) has expired
    // at the broker.
    let first = *endpoint
        .state
        .first_issued
        .get()
        .context("no first token")?;
    tokio::time::sleep_until((first + JWT_LIFETIME + Duration::from_secs(1)).into()).await;
    let issued = endpoint.issued();
    ensure!(
        issued >= 4,
        "{issued} tokens in {:?}: not refreshed every ~3 s",
        first.elapsed()
    );
    // Consuming goes on with the refreshed tokens.
    let produced = broker
        .produce_records(
            &topic,
            (0..2).flat_map(|p| {
                (10..20).map(move |i| (Some(p), format!("k{i}"), format!("{p}:{i}")))
            }),
        )
        .await?;
    ensure!(
        produced.iter().all(|r| (10..20).contains(&r.offset)),
        "{produced:?}"
    );
    let end: BTreeMap<i32, i64> = (0..2).map(|p| (p, 20)).collect();
    let reached = wait_status(
        &mut status,
        ROUND_TRIP,
        "the later records committed",
        |s| s.stopped || committed_to_end(s, &topic, &end),
    )
    .await;
    let issued = endpoint.issued();
    let took = started.elapsed();
    handle.shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(30), handle.wait()).await;
    ensure!(
        reached.as_ref().is_ok_and(|s| !s.stopped),
        "{reached:?}; the consumer ended with {ended:?}"
    );
    ended.context("shutdown")??;
    eprintln!(
        "OIDC refresh: {issued} tokens announced for {EXPIRES_IN:?} over {took:?}, consumption \
         went on"
    );
    Ok(())
}

/// AWS MSK IAM tokens, made offline with fixed credentials (no AWS account or MSK cluster
/// here: that the broker accepts them is not tested). Run with `--features msk-iam`.
#[cfg(feature = "msk-iam")]
mod msk_iam {
    use std::time::{Duration, SystemTime};

    use anyhow::{ensure, Context as _};
    use sluicegate::security::aws_credential_types::Credentials;
    use sluicegate::security::{MskIamTokenProvider, TokenProvider};

    const ACCESS_KEY_ID: &str = "AKIDSLUICEGATETEST01";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSLUICEGATE";

    /// Decodes unpadded base64url, refusing any other alphabet.
    fn base64url_decode(text: &str) -> anyhow::Result<Vec<u8>> {
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in text.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => anyhow::bail!("not unpadded base64url: {:?}", c as char),
            };
            bits = (bits << 6) | u32::from(v);
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn token_is_a_presigned_kafka_cluster_connect_url_for_the_region() -> anyhow::Result<()> {
        let credentials = Credentials::new(ACCESS_KEY_ID, SECRET, None, None, "test");
        let provider = MskIamTokenProvider::with_credentials("eu-west-1", credentials);
        assert_eq!(provider.region(), "eu-west-1");
        let before = SystemTime::now();
        let token = provider.token().await?;
        let url = String::from_utf8(base64url_decode(token.token())?)?;
        eprintln!("MSK IAM token URL: {url}");
        ensure!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        let query: Vec<(&str, &str)> = url
            .split_once('?')
            .context("no query")?
            .1
            .split('&')
            .filter_map(|p| p.split_once('='))
            .collect();
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .with_context(|| format!("no {name} in {url}"))
        };
        assert_eq!(param("X-Amz-Algorithm")?, "AWS4-HMAC-SHA256");
        let scope = param("X-Amz-Credential")?;
        assert!(
            scope.starts_with(&format!("{ACCESS_KEY_ID}%2F"))
                && scope.ends_with("%2Feu-west-1%2Fkafka-cluster%2Faws4_request"),
            "{scope}"
        );
        assert_eq!(param("X-Amz-Expires")?, "900");
        assert!(param("X-Amz-Date")?.len() == 16, "{url}");
        assert!(param("X-Amz-Signature")?.len() == 64, "{url}");
        assert!(
            !url.contains(SECRET) && !url.contains("wJalrXUtnFEMI"),
            "{url}"
        );
        assert_eq!(token.principal(), ACCESS_KEY_ID);
        // Valid for the signer's 15 minutes from signing (X-Amz-Date has whole seconds).
        let lifetime = token.expires_at().duration_since(before)?;
        assert!(
            lifetime > Duration::from_secs(890) && lifetime <= Duration::from_secs(900),
            "{lifetime:?}"
        );
        assert!(!format!("{token:?}").contains(token.token()));
        Ok(())
    }
}

/// The suite can be pointed at a secured cluster of one's own (`SLUICEGATE_TEST_CONFIG` with
/// the `KAFKA_*` environment): a harness built from a configuration file naming this Kafka's
/// SCRAM-SHA-512 listener, with the password from the environment, creates a topic, produces,
/// consumes to the end with a consumer of its own and reads the group's commits back, every
/// client logging in (the listener serves nothing before a login).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_reaches_a_secured_cluster_from_a_configuration_file() -> anyhow::Result<()> {
    let kafka = kafka()?;
    let (user, password) = user_for("SCRAM-SHA-512");
    let yaml = format!(
        "kafka:
  bootstrap_servers: {}
  security:
    protocol: sasl_plaintext
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: {user}
",
        kafka.sasl
    );
    let env = [("KAFKA_SASL_PASSWORD".to_string(), password.to_string())];
    let broker = TestBroker::external(Some(&yaml), env, None)?;
    ensure!(broker.kind() == common::Kind::External);
    let (topic, group) = (unique("harness-sasl"), unique("harness-sasl-g"));
    let (_, end) = broker.fill_topic(&topic, 2, 10).await?;
    let handled = consume_to_end(broker.consumer(&group, &topic), &topic, &end, None).await?;
    ensure!(handled == 20, "{handled} messages handled");
    ensure!(broker.committed_offsets(&group, &topic).await? == end);

    // Without the password, the configuration is refused, naming what is missing.
    let Err(e) = TestBroker::external(Some(&yaml), [], None) else {
        bail!("a harness without a password was built");
    };
    ensure!(format!("{e:#}").contains("sasl_password"), "{e:#}");
    Ok(())
}
