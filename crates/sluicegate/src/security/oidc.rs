//! OAUTHBEARER tokens from an OIDC / OAuth 2.0 token endpoint with the client credentials
//! grant (RFC 6749, section 4.4): the `oidc` feature.
//!
//! librdkafka has its own OIDC client (`sasl.oauthbearer.method=oidc`), but only when it is
//! built with libcurl, which Sluicegate's static build leaves out (a fresh machine would need
//! libcurl's development files); this provider makes the same request with `reqwest` (rustls
//! on ring, the system's CA certificates) and plugs into the [`TokenProvider`] plumbing, so
//! librdkafka's refresh at 80% of a token's lifetime asks it again.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::{Mutex, OnceCell};

use super::{OAuthToken, TokenError, TokenProvider};
use crate::secret::Secret;

/// How long one request to the token endpoint may take (below librdkafka's wait for a token,
/// [`TOKEN_TIMEOUT`](super::TOKEN_TIMEOUT)).
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Gets OAUTHBEARER tokens from an OIDC (OAuth 2.0) token endpoint with the client credentials
/// grant: `POST` of `grant_type=client_credentials` (and `scope`, if set) as a form, the client
/// id and secret in HTTP Basic authentication, as librdkafka's own OIDC client sends them.
/// Needs the `oidc` feature (on by default).
///
/// The answer's `access_token` is the token; it lives `expires_in` seconds, or until the JWT's
/// `exp` claim if that comes first (a token with neither is refused). The principal is the
/// JWT's `sub` claim, or the client id when the token is not a JWT or has no `sub`.
///
/// A token is shared by the clients of a consumer (the consumer, its output and dead-letter
/// producers) while less than half its lifetime has passed; librdkafka asks again at 80% of
/// the lifetime, so each refresh makes a new request.
///
/// Errors: the endpoint refusing the client (`400`/`401`/`403` with `invalid_client`, ...),
/// any other `4xx` answer, an answer without `access_token`, and a token that has already
/// expired are [rejected](TokenError::rejected): the consumer stops with
/// [`Error::Authentication`](crate::Error::Authentication) naming the endpoint and the cause.
/// An endpoint that cannot be reached, times out ([`TOKEN_REQUEST_TIMEOUT`]), or answers
/// `408`, `429` or `5xx` is asked again by librdkafka 10 s later.
///
/// From configuration: `kafka.security.oauthbearer` (`token_endpoint`, `client_id`,
/// `client_secret`, `scope`), or the `KAFKA_OAUTHBEARER_*` variables.
///
/// ```no_run
/// use sluicegate::security::OidcTokenProvider;
/// # use sluicegate::{handler_fn, Consumer, Message};
/// # fn build() -> Result<(), sluicegate::Error> {
/// let tokens = OidcTokenProvider::new(
///     "https://login.example.com/oauth2/token",
///     "billing",
///     std::env::var("CLIENT_SECRET").unwrap_or_default(),
/// )
/// .scope("kafka");
/// let consumer = Consumer::builder()
///     .bootstrap_servers("broker.example.com:9093")
///     .group_id("billing")
///     .topic("orders")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanism", "OAUTHBEARER")
///     .oauth_token_provider(tokens)
///     .build(handler_fn(|_: Message| async { Ok(()) }))?;
/// # Ok(()) }
/// ```
pub struct OidcTokenProvider {
    endpoint: String,
    client_id: String,
    client_secret: Secret,
    scope: Option<String>,
    client: OnceCell<reqwest::Client>,
    /// The last token and when it was issued.
    cached: Mutex<Option<(OAuthToken, SystemTime)>>,
}

impl fmt::Debug for OidcTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcTokenProvider")
            .field("token_endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A successful answer of the token endpoint (RFC 6749, section 5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<serde_json::Number>,
}

/// An error answer of the token endpoint (RFC 6749, section 5.2).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

/// The claims of a JWT access token that matter here.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
}

impl OidcTokenProvider {
    /// Tokens from `token_endpoint` (an `https://` URL; `http://` only for a local endpoint)
    /// for the client `client_id` with `client_secret`.
    pub fn new(
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        OidcTokenProvider {
            endpoint: token_endpoint.into(),
            client_id: client_id.into(),
            client_secret: Secret::new(client_secret),
            scope: None,
            client: OnceCell::new(),
            cached: Mutex::new(None),
        }
    }

    /// Asks for `scope` (space-separated scopes, as the endpoint expects them).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    async fn client(&self) -> Result<&reqwest::Client, TokenError> {
        self.client
            .get_or_try_init(|| async {
                // No pooled connections: requests are minutes apart, and may come from
                // different runtimes (a client created outside one gets its own per request),
                // which a pooled connection would not outlive.
                reqwest::Client::builder()
                    .timeout(TOKEN_REQUEST_TIMEOUT)
                    .pool_max_idle_per_host(0)
                    .build()
                    .map_err(|e| TokenError::new(format!("cannot create an HTTPS client: {e}")))
            })
            .await
    }

    /// One request to the endpoint.
    async fn request(&self) -> Result<OAuthToken, TokenError> {
        let endpoint = &self.endpoint;
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let answer = self
            .client()
            .await?
            .post(endpoint)
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                if e.is_builder() {
                    TokenError::rejected(format!("token endpoint `{endpoint}`: {e}"))
                } else {
                    TokenError::new(format!("token endpoint `{endpoint}` not reached: {e}"))
                }
            })?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| {
            TokenError::new(format!(
                "token endpoint `{endpoint}`: the answer was cut off: {}",
                e.without_url()
            ))
        })?;
        let issued = SystemTime::now();
        if !status.is_success() {
            let detail = match serde_json::from_slice::<ErrorAnswer>(&body) {
                Ok(ErrorAnswer {
                    error: Some(error),
                    error_description,
                }) => match error_description {
                    Some(d) => format!("{error}: {d}"),
                    None => error,
                },
                _ => String::from_utf8_lossy(&body).chars().take(200).collect(),
            };
            let message = format!(
                "token endpoint `{endpoint}` refused client `{}`: HTTP {status}{}{detail}",
                self.client_id,
                if detail.is_empty() { "" } else { ": " }
            );
            return Err(if is_transient(status.as_u16()) {
                TokenError::new(message)
            } else {
                TokenError::rejected(message)
            });
        }
        token_from_answer(&body, &self.client_id, issued)
            .map_err(|e| TokenError::rejected(format!("token endpoint `{endpoint}`: {e}")))
    }
}

/// Whether an error answer with HTTP `status` may go away when asked again: server errors,
/// `408 Request Timeout` and `429 Too Many Requests`. Any other (`400 invalid_client`, `401`,
/// `403`, `404`...) will not.
fn is_transient(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// The token in a successful answer `body`, received at `now`.
fn token_from_answer(body: &[u8], client_id: &str, now: SystemTime) -> Result<OAuthToken, String> {
    let answer: TokenAnswer = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not a JSON token answer ({e})"))?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?;
    let claims = jwt_claims(&token);
    let from_expires_in = answer
        .expires_in
        .and_then(|n| n.as_f64())
        .map(|s| add_secs(now, s));
    let from_exp = claims
        .as_ref()
        .and_then(|c| c.exp)
        .map(|s| add_secs(UNIX_EPOCH, s));
    let expires_at = match (from_expires_in, from_exp) {
        (Some(a), Some(b)) => a.min(b),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            return Err(
                "the answer has no expires_in and the token no exp claim: its \
                        lifetime is unknown"
                    .into(),
            )
        }
    };
    if expires_at <= now {
        let exp = expires_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Err(format!(
            "the token has already expired (it expires at {exp}, now is {now}, in seconds \
             since 1970): is a clock off?"
        ));
    }
    let principal = claims
        .and_then(|c| c.sub)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| client_id.to_owned());
    Ok(OAuthToken::expiring_at(token, principal, expires_at))
}

/// `base` plus `secs` seconds (negative ones before it), saturating.
fn add_secs(base: SystemTime, secs: f64) -> SystemTime {
    let d = Duration::try_from_secs_f64(secs.abs()).unwrap_or(Duration::MAX / 2);
    if secs >= 0.0 {
        base.checked_add(d).unwrap_or(base)
    } else {
        base.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// The claims of `token` when it is a JWT (`header.claims.signature`, base64url); `None` for
/// an opaque token.
fn jwt_claims(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, claims) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = BASE64URL.decode(claims.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl TokenProvider for OidcTokenProvider {
    async fn token(&self) -> Result<OAuthToken, TokenError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((token, issued)) = cached.as_ref() {
            let lifetime = token
                .expires_at()
                .duration_since(*issued)
                .unwrap_or_default();
            if now.duration_since(*issued).unwrap_or_default() < lifetime / 2 {
                return Ok(token.clone());
            }
        }
        let token = self.request().await?;
        *cached = Some((token.clone(), now));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.",
            BASE64URL.encode(r#"{"alg":"none"}"#),
            BASE64URL.encode(claims.to_string())
        )
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn principal_is_the_sub_claim_and_lifetime_the_earlier_of_expires_in_and_exp() {
        let token = jwt(serde_json::json!({"sub": "svc-a", "exp": 1_000_060}));
        let body = serde_json::json!({"access_token": token, "expires_in": 3600});
        let t = token_from_answer(body.to_string().as_bytes(), "client", at(1_000_000)).unwrap();
        assert_eq!(t.principal(), "svc-a");
        assert_eq!(t.expires_at(), at(1_000_060));
        assert_eq!(t.token(), token);
        let body = serde_json::json!({"access_token": token, "expires_in": 30});
        let t = token_from_answer(body.to_string().as_bytes(), "client", at(1_000_000)).unwrap();
        assert_eq!(t.expires_at(), at(1_000_030));
    }

    #[test]
    fn an_opaque_token_is_for_the_client_id_and_lives_expires_in() {
        let body = br#"{"access_token": "opaque-123", "token_type": "Bearer", "expires_in": 300}"#;
        let t = token_from_answer(body, "billing", at(1_000)).unwrap();
        assert_eq!(t.principal(), "billing");
        assert_eq!(t.expires_at(), at(1_300));
    }

    #[test]
    fn answers_without_a_token_or_a_lifetime_are_refused() {
        let e = token_from_answer(br#"{"expires_in": 300}"#, "c", at(1)).unwrap_err();
        assert!(e.contains("no access_token"), "{e}");
        let e = token_from_answer(br#"{"access_token": "opaque"}"#, "c", at(1)).unwrap_err();
        assert!(e.contains("lifetime is unknown"), "{e}");
        let e = token_from_answer(b"<html>", "c", at(1)).unwrap_err();
        assert!(e.contains("not a JSON token answer"), "{e}");
    }

    #[test]
    fn an_expired_token_is_refused_naming_its_expiry() {
        let token = jwt(serde_json::json!({"sub": "svc", "exp": 999_940}));
        let body = serde_json::json!({"access_token": token, "expires_in": 3600});
        let e = token_from_answer(body.to_string().as_bytes(), "c", at(1_000_000)).unwrap_err();
        assert!(e.contains("already expired") && e.contains("999940"), "{e}");
        let body = br#"{"access_token": "opaque", "expires_in": 0}"#;
        let e = token_from_answer(body, "c", at(1_000_000)).unwrap_err();
        assert!(e.contains("already expired"), "{e}");
    }

    #[test]
    fn only_server_errors_timeouts_and_throttling_are_asked_again() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(is_transient(status), "{status}");
        }
        for status in [400, 401, 403, 404, 405, 415] {
            assert!(!is_transient(status), "{status}");
        }
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let p = OidcTokenProvider::new("https://idp/token", "id", "sekrit-value");
        let d = format!("{p:?}");
        assert!(
            !d.contains("sekrit") && d.contains("https://idp/token"),
            "{d}"
        );
    }
}
