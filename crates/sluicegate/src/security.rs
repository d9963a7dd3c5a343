//! Secure connections: OAUTHBEARER tokens from a pluggable async [`TokenProvider`], and the
//! rule that tells a TLS or authentication failure (which retrying cannot fix) from a
//! transient connection error.
//!
//! TLS and SASL themselves are librdkafka's: set `security.protocol`, `ssl.ca.location`,
//! `ssl.certificate.location`, `ssl.key.location`, `ssl.key.password`, `sasl.mechanism`,
//! `sasl.username` and `sasl.password` with [`ConsumerBuilder::set`]. The producers the
//! runtime creates (output, dead letters) take the same settings.
//!
//! # When a consumer stops instead of retrying
//!
//! librdkafka retries a failed TLS handshake or SASL authentication forever, reconnecting with
//! back-off. Sluicegate watches librdkafka's error callback and stops the consumer
//! (`run` and [`ConsumerHandle::wait`] return the error) when:
//! - **authentication** (`_AUTHENTICATION`) fails: at once, with [`Error::Authentication`]
//!   naming the mechanism and the user (never the password). A failure to *get* an
//!   OAUTHBEARER token from the provider is not one of these: librdkafka asks the provider
//!   again 10 s later, and the failure is logged;
//! - **TLS** (`_SSL`) fails: at once, with [`Error::Tls`], when the reason is about a
//!   certificate (the broker's did not verify, or the broker wants ours); any other TLS
//!   error when it is the [`TLS_FAILURES`]th within [`TLS_FAILURE_WINDOW`] (a handshake cut
//!   off by a restarting broker is not a configuration error);
//! - **the broker refuses our certificate** after the handshake: at once, with [`Error::Tls`].
//!   With TLS 1.3 the client's side of the handshake is over before the broker checks the
//!   client certificate, so a broker that wants one (and got none, or one it does not trust)
//!   answers the first request with a TLS alert, which librdkafka reports as a transport
//!   failure, not as a TLS error: `tlsv13 alert certificate required` (OpenSSL, rustls) or
//!   `ssl/tls alert bad certificate` (Apache Kafka, for a missing certificate too),
//!   `certificate unknown`, `unknown ca`... The error then says which of the two it is likely
//!   to be: no client certificate is configured, or the broker refused the configured one.
//!   librdkafka does not send a client certificate whose issuer is not among the CAs the broker
//!   lists (it logs `No matching issuer found in server trusted certificate authorities`): a
//!   broker that requires one then sees none, and one that only requests one lets the client
//!   in without it.
//!
//! # Clients of your own
//!
//! [`ConsumerConfig::client_config`](crate::config::ConsumerConfig::client_config) gives the
//! settings of an admin client, producer or consumer of your own that connects as a
//! configuration says, and [`ConsumerConfig::client_security`](crate::config::ConsumerConfig::client_security)
//! its [`ClientSecurity`]: the token provider, and the same fail-fast watch over TLS and
//! authentication failures. With the `rdkafka-interop` feature, `Properties::to_rdkafka` makes
//! an rdkafka client configuration of the settings, and `SecureContext` is a ready-made
//! rdkafka client context with the [`ClientSecurity`]. The `sluicegate` CLI makes every client
//! of its commands that way.
//!
//! Token providers from configuration (`kafka.security.oauthbearer`, `kafka.security.msk_iam`
//! in [`ConsumerConfig`](crate::config::ConsumerConfig)):
//! - an OIDC token endpoint, with the client credentials grant: `OidcTokenProvider`, with the
//!   `oidc` cargo feature (on by default);
//! - AWS MSK IAM: `MskIamTokenProvider`, with the `msk-iam` cargo feature (off by default in
//!   the library: it brings in the AWS SDK's credentials chain; the `sluicegate` CLI has it).
//!
//! [`ConsumerBuilder::set`]: crate::ConsumerBuilder::set
//! [`ConsumerHandle::wait`]: crate::ConsumerHandle::wait

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::properties::Properties;
use crate::{Error, ErrorCode};

mod client;
#[cfg(feature = "msk-iam")]
mod msk_iam;
/// The AWS credentials types [`MskIamTokenProvider::with_credentials`] takes (`msk-iam`
/// feature).
#[cfg(feature = "msk-iam")]
pub use aws_credential_types;
pub use client::ClientSecurity;
pub(crate) use client::{generate_oauth_token, ClientErrors, ClientHealth};
#[cfg(feature = "msk-iam")]
pub use msk_iam::MskIamTokenProvider;
#[cfg(feature = "oidc")]
mod oidc;
#[cfg(feature = "oidc")]
pub use oidc::{OidcTokenProvider, TOKEN_REQUEST_TIMEOUT};

/// TLS errors (other than certificate errors) within [`TLS_FAILURE_WINDOW`] that stop the
/// consumer.
pub const TLS_FAILURES: usize = 3;
/// See [`TLS_FAILURES`].
pub const TLS_FAILURE_WINDOW: Duration = Duration::from_secs(30);
/// How long librdkafka's token callback waits for a [`TokenProvider`].
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// An OAUTHBEARER token for librdkafka. Its `Debug` output hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthToken {
    token: String,
    principal: String,
    expires_at: SystemTime,
}

impl OAuthToken {
    /// A token for `principal` that is valid for `lifetime` from now. librdkafka asks the
    /// provider for a new one when 80% of the lifetime has passed.
    pub fn new(token: impl Into<String>, principal: impl Into<String>, lifetime: Duration) -> Self {
        Self::expiring_at(token, principal, SystemTime::now() + lifetime)
    }

    /// A token for `principal` that expires at `expires_at`.
    pub fn expiring_at(
        token: impl Into<String>,
        principal: impl Into<String>,
        expires_at: SystemTime,
    ) -> Self {
        OAuthToken {
            token: token.into(),
            principal: principal.into(),
            expires_at,
        }
    }

    /// The token value.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The Kafka principal the token is for.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthToken")
            .field("token", &"[redacted]")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A [`TokenProvider`] could not make a token. Its message must not contain secrets: it is
/// logged, and a [rejected](Self::rejected) one is the consumer's error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    message: String,
    rejected: bool,
}

impl TokenError {
    /// An error that asking again may cure (an identity provider that cannot be reached, or
    /// answers with a server error): librdkafka asks the provider again 10 s later.
    pub fn new(message: impl Into<String>) -> Self {
        TokenError {
            message: message.into(),
            rejected: false,
        }
    }

    /// An error that asking again cannot cure: the identity provider refused the credentials
    /// (such as an OAuth `invalid_client` answer), or issued a token that has already
    /// expired. The consumer stops with [`Error::Authentication`] naming `message`, as when
    /// the broker refuses a login.
    pub fn rejected(message: impl Into<String>) -> Self {
        TokenError {
            message: message.into(),
            rejected: true,
        }
    }

    /// Whether this error stops the consumer (see [`rejected`](Self::rejected)).
    pub fn is_rejected(&self) -> bool {
        self.rejected
    }
}

/// Makes OAUTHBEARER tokens for the consumer and the producers the runtime creates; set it with
/// [`ConsumerBuilder::oauth_token_provider`](crate::ConsumerBuilder::oauth_token_provider) and
/// `security.protocol` = `SASL_SSL` (or `SASL_PLAINTEXT`), `sasl.mechanism` = `OAUTHBEARER`.
///
/// librdkafka asks for a token when a client is created and again when 80% of the previous
/// token's lifetime has passed (10 s after a failure). Each client asks on its own.
/// `token` runs on the Tokio runtime the consumer was spawned on (while the asking client
/// waits, at most [`TOKEN_TIMEOUT`]); a client created outside any runtime runs it on a
/// runtime of its own.
///
/// ```
/// use std::time::Duration;
/// use sluicegate::security::{OAuthToken, TokenError, TokenProvider};
///
/// struct FromIdentityService;
///
/// impl TokenProvider for FromIdentityService {
///     async fn token(&self) -> Result<OAuthToken, TokenError> {
///         // Fetch a token from your identity provider here.
///         Ok(OAuthToken::new("eyJhbGciOi...", "svc-billing", Duration::from_secs(3600)))
///     }
/// }
/// ```
pub trait TokenProvider: Send + Sync + 'static {
    /// A fresh token.
    fn token(&self) -> impl Future<Output = Result<OAuthToken, TokenError>> + Send;
}

type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<OAuthToken, TokenError>> + Send + 'a>>;

/// [`TokenProvider`] as a trait object.
trait DynTokenProvider: Send + Sync {
    fn token(&self) -> TokenFuture<'_>;
}

impl<T: TokenProvider> DynTokenProvider for T {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(TokenProvider::token(self))
    }
}

/// The token provider of a consumer, shared by its clients' contexts.
#[derive(Clone)]
pub(crate) struct OAuth {
    provider: Arc<dyn DynTokenProvider>,
    /// What the provider is, when known (providers made from configuration).
    described: Option<String>,
    runtime: Option<tokio::runtime::Handle>,
}

impl fmt::Debug for OAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.described {
            Some(d) => f.write_str(d),
            None => f.write_str("OAuth(token provider)"),
        }
    }
}

impl OAuth {
    pub fn new<P: TokenProvider>(provider: P) -> Self {
        OAuth {
            provider: Arc::new(provider),
            described: None,
            runtime: None,
        }
    }

    /// A provider whose `Debug` output (no secrets in it) this shows.
    #[cfg_attr(not(any(feature = "oidc", feature = "msk-iam")), allow(dead_code))]
    pub fn described<P: TokenProvider + fmt::Debug>(provider: P) -> Self {
        OAuth {
            described: Some(format!("{provider:?}")),
            ..OAuth::new(provider)
        }
    }

    /// This provider, running on the current Tokio runtime if there is one.
    pub fn on_current_runtime(&self) -> Self {
        OAuth {
            provider: self.provider.clone(),
            described: self.described.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// What librdkafka's (synchronous) token callback returns. Runs the provider on the
    /// runtime and waits for it on this thread (a librdkafka polling thread, never a runtime
    /// worker), at most [`TOKEN_TIMEOUT`].
    pub fn generate(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let provider = self.provider.clone();
        let token = match &self.runtime {
            Some(runtime) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                runtime.spawn(async move {
                    let _ = tx.send(provider.token().await);
                });
                rx.recv_timeout(TOKEN_TIMEOUT).map_err(|_| {
                    TokenError::new(format!(
                        "the token provider did not answer within {TOKEN_TIMEOUT:?}"
                    ))
                })?
            }
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async move { provider.token().await }),
        };
        let token = token.map_err(|e| {
            tracing::warn!(error = %e, "cannot get an OAUTHBEARER token");
            e
        })?;
        let lifetime_ms = token
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        tracing::debug!(principal = %token.principal, lifetime_ms, "OAUTHBEARER token issued");
        Ok(token)
    }
}

/// A TLS or authentication failure that stops the consumer; becomes [`Error::Tls`] or
/// [`Error::Authentication`].
#[derive(Clone, Debug)]
pub(crate) enum SecurityFailure {
    Tls(String),
    Authentication {
        mechanism: String,
        user: String,
        reason: String,
    },
}

impl From<SecurityFailure> for Error {
    fn from(f: SecurityFailure) -> Self {
        match f {
            SecurityFailure::Tls(reason) => Error::Tls(reason),
            SecurityFailure::Authentication {
                mechanism,
                user,
                reason,
            } => Error::Authentication {
                mechanism,
                user,
                reason,
            },
        }
    }
}

/// What a client's error callback saw of TLS and authentication, and whether it must stop.
pub(crate) struct SecurityWatch {
    mechanism: String,
    user: String,
    /// Secret values of the settings, scrubbed from reasons before they are shown.
    secrets: Vec<String>,
    /// A client certificate is configured (`ssl.certificate.*`, `ssl.keystore.location`).
    client_certificate: bool,
    tls_errors: VecDeque<Instant>,
}

impl SecurityWatch {
    pub fn new(config: &Properties) -> Self {
        let secrets = config
            .iter()
            .filter(|(k, _)| crate::secret::is_secret_key(k))
            .map(|(_, v)| v)
            .filter(|v| v.len() >= 3)
            .map(str::to_owned)
            .collect();
        SecurityWatch {
            mechanism: config
                .get("sasl.mechanism")
                .or_else(|| config.get("sasl.mechanisms"))
                .unwrap_or("GSSAPI")
                .to_owned(),
            user: config
                .get("sasl.username")
                .map(|u| format!("`{u}`"))
                .unwrap_or_else(|| "not set".to_owned()),
            secrets,
            client_certificate: [
                "ssl.certificate.location",
                "ssl.certificate.pem",
                "ssl.keystore.location",
            ]
            .iter()
            .any(|k| config.get(k).is_some_and(|v| !v.trim().is_empty())),
            tls_errors: VecDeque::new(),
        }
    }

    /// Looks at one error of librdkafka's error callback; returns the error to stop with, if
    /// this one means the consumer cannot connect (see the [module docs](self)).
    pub fn observe(
        &mut self,
        code: ErrorCode,
        reason: &str,
        now: Instant,
    ) -> Option<SecurityFailure> {
        match code {
            ErrorCode::AUTHENTICATION
                if !reason.contains("Failed to acquire SASL OAUTHBEARER token") =>
            {
                Some(SecurityFailure::Authentication {
                    mechanism: self.mechanism.clone(),
                    user: self.user.clone(),
                    reason: self.scrub(reason),
                })
            }
            ErrorCode::TRANSPORT if is_certificate_alert(reason) => {
                let mut reason = self.scrub(reason);
                reason.push_str(if self.client_certificate {
                    " (the broker refused the client certificate: is it expired, or not signed \
                     by a CA the broker trusts? librdkafka sends none whose issuer the broker \
                     does not list; see ssl.certificate.location)"
                } else {
                    " (the broker wants a client certificate: set ssl.certificate.location and \
                     ssl.key.location)"
                });
                Some(SecurityFailure::Tls(reason))
            }
            ErrorCode::SSL => {
                if reason.to_ascii_lowercase().contains("certificate") {
                    return Some(SecurityFailure::Tls(self.scrub(reason)));
                }
                while self
                    .tls_errors
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > TLS_FAILURE_WINDOW)
                {
                    self.tls_errors.pop_front();
                }
                self.tls_errors.push_back(now);
                (self.tls_errors.len() >= TLS_FAILURES)
                    .then(|| SecurityFailure::Tls(self.scrub(reason)))
            }
            _ => None,
        }
    }

    /// The failure a consumer stops with when its token provider's credentials were refused
    /// ([`TokenError::rejected`]).
    pub fn rejected_token(&self, reason: &str) -> SecurityFailure {
        SecurityFailure::Authentication {
            mechanism: self.mechanism.clone(),
            user: self.user.clone(),
            reason: format!("no OAUTHBEARER token: {}", self.scrub(reason)),
        }
    }

    fn scrub(&self, reason: &str) -> String {
        self.secrets.iter().fold(reason.to_owned(), |r, s| {
            r.replace(s.as_str(), "[redacted]")
        })
    }
}

/// `true` when `reason` (of a transport failure) is a TLS alert from the broker about a
/// certificate, as OpenSSL words it: `tlsv13 alert certificate required`, `sslv3 alert bad
/// certificate`, `tlsv1 alert unknown ca`, `sslv3 alert certificate expired`...
fn is_certificate_alert(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("ssl routines") && r.contains(" alert ") && {
        r.contains("certificate") || r.contains("unknown ca")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> SecurityWatch {
        let mut config = Properties::new();
        config
            .set("sasl.mechanism", "SCRAM-SHA-256")
            .set("sasl.username", "alice")
            .set("sasl.password", "hunter2-secret");
        SecurityWatch::new(&config)
    }

    #[test]
    fn authentication_failure_stops_at_once_naming_mechanism_and_user_not_password() {
        let e = watch()
            .observe(
                ErrorCode::AUTHENTICATION,
                "SASL authentication error: bad password hunter2-secret",
                Instant::now(),
            )
            .map(Error::from)
            .expect("stops");
        let text = e.to_string();
        assert!(matches!(e, Error::Authentication { .. }), "{text}");
        assert!(
            text.contains("SCRAM-SHA-256") && text.contains("alice"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[test]
    fn token_acquisition_failure_does_not_stop() {
        let mut w = watch();
        let reason = "Failed to acquire SASL OAUTHBEARER token: provider down";
        assert!(w
            .observe(ErrorCode::AUTHENTICATION, reason, Instant::now())
            .is_none());
    }

    #[test]
    fn certificate_failure_stops_at_once() {
        let reason = "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: \
                      error:0A000086:SSL routines::certificate verify failed";
        let e = watch()
            .observe(ErrorCode::SSL, reason, Instant::now())
            .map(Error::from);
        assert!(matches!(e, Some(Error::Tls(r)) if r.contains("certificate verify failed")));
    }

    #[test]
    fn other_tls_errors_stop_only_when_repeated_within_the_window() {
        let mut w = watch();
        let start = Instant::now();
        let reason = "SSL handshake failed: Disconnected";
        assert!(w.observe(ErrorCode::SSL, reason, start).is_none());
        let later = start + TLS_FAILURE_WINDOW + Duration::from_secs(1);
        assert!(w.observe(ErrorCode::SSL, reason, later).is_none());
        assert!(w.observe(ErrorCode::SSL, reason, later).is_none());
        assert!(w.observe(ErrorCode::SSL, reason, later).is_some());
    }

    #[test]
    fn a_certificate_alert_after_the_handshake_stops_at_once() {
        // TLS 1.3, broker wants a client certificate: librdkafka's words (2.x).
        let reason = "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A00045C:SSL \
                      routines::tlsv13 alert certificate required: SSL alert number 116 \
                      (after 0ms in state APIVERSION_QUERY)";
        let e = watch()
            .observe(ErrorCode::TRANSPORT, reason, Instant::now())
            .map(Error::from);
        assert!(
            matches!(&e, Some(Error::Tls(r)) if r.contains("certificate required")
                && r.contains("ssl.certificate.location")),
            "{e:?}"
        );
        // Apache Kafka answers a missing client certificate with `bad certificate`.
        let reason = "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A000412:SSL \
                      routines::ssl/tls alert bad certificate: SSL alert number 42";
        let e = watch()
            .observe(ErrorCode::TRANSPORT, reason, Instant::now())
            .map(Error::from);
        assert!(
            matches!(&e, Some(Error::Tls(r)) if r.contains("wants a client certificate")),
            "{e:?}"
        );
        // With a client certificate configured, the broker refused it.
        let mut config = Properties::new();
        config.set("ssl.certificate.location", "/etc/kafka/client.pem");
        let reason = "Receive failed: error:0A000418:SSL routines::tlsv1 alert unknown ca";
        let e = SecurityWatch::new(&config)
            .observe(ErrorCode::TRANSPORT, reason, Instant::now())
            .map(Error::from);
        assert!(
            matches!(&e, Some(Error::Tls(r)) if r.contains("refused the client certificate")),
            "{e:?}"
        );
        // Other TLS alerts on an established connection are not about configuration.
        let reason = "Receive failed: error:0A000126:SSL routines::unexpected eof while reading";
        assert!(watch()
            .observe(ErrorCode::TRANSPORT, reason, Instant::now())
            .is_none());
    }

    #[test]
    fn transport_errors_are_not_security_failures() {
        let mut w = watch();
        for _ in 0..10 {
            assert!(w
                .observe(ErrorCode::TRANSPORT, "Connection refused", Instant::now())
                .is_none());
        }
    }

    #[test]
    fn token_debug_hides_the_token() {
        let t = OAuthToken::new("sekrit-token", "svc", Duration::from_secs(1));
        let d = format!("{t:?}");
        assert!(!d.contains("sekrit") && d.contains("svc"), "{d}");
    }
}
