//! The security side of clients of your own (admin clients, producers, readers) made from a
//! configuration: OAUTHBEARER tokens and fail-fast TLS and authentication failures, as the
//! runtime's own clients have them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{error, warn};

use super::{OAuth, OAuthToken, SecurityFailure, SecurityWatch, TokenProvider};
use crate::properties::Properties;
use crate::{ClientError, Error, ErrorCode};

/// What a client made from a configuration needs besides its properties: the OAUTHBEARER
/// token provider, and a watch over librdkafka's errors that keeps the first authentication or
/// TLS failure retrying cannot fix (librdkafka itself retries them forever; the rule is the
/// consumer's, see the [module docs](super)). Get one with
/// [`ConsumerConfig::client_security`](crate::config::ConsumerConfig::client_security); clones
/// share the watch.
///
/// With the `rdkafka-interop` feature, use it from your own rdkafka client context: forward
/// its `generate_oauth_token` and `error` callbacks to its `generate_oauth_token` and
/// `observe` methods, with
/// `ENABLE_REFRESH_OAUTH_TOKEN = true`, and after a request failed (or while waiting) ask
/// [`failure`](Self::failure) why. Or use `SecureContext`, which does just that.
#[derive(Clone)]
pub struct ClientSecurity {
    oauth: Option<OAuth>,
    errors: Arc<ClientErrors>,
}

impl fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("token_provider", &self.oauth.is_some())
            .finish()
    }
}

impl ClientSecurity {
    /// The watch of a client created from `config` (its final settings: failures name its
    /// `sasl.mechanism` and `sasl.username`, and never show its secret values), without a
    /// token provider.
    pub fn new(config: &Properties) -> Self {
        ClientSecurity {
            oauth: None,
            errors: Arc::new(ClientErrors::new(SecurityWatch::new(config))),
        }
    }

    /// Gets OAUTHBEARER tokens from the provider a configuration describes.
    pub(crate) fn with_oauth(mut self, oauth: OAuth) -> Self {
        self.oauth = Some(oauth.on_current_runtime());
        self
    }

    /// Gets OAUTHBEARER tokens from `provider`, run on the Tokio runtime current when this is
    /// called (if any; see [`TokenProvider`]).
    pub fn with_token_provider<P: TokenProvider>(mut self, provider: P) -> Self {
        self.oauth = Some(OAuth::new(provider).on_current_runtime());
        self
    }

    /// The token provider, for the runtime's builder.
    pub(crate) fn oauth(&self) -> Option<&OAuth> {
        self.oauth.as_ref()
    }

    /// Whether a token provider is set.
    pub fn has_token_provider(&self) -> bool {
        self.oauth.is_some()
    }

    /// A token from the provider; an error saying none is set when there is no provider.
    #[cfg_attr(not(feature = "rdkafka-interop"), allow(dead_code))]
    pub(crate) fn token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        generate_oauth_token(self.oauth.as_ref(), Some(&self.errors))
    }

    /// Looks at one error of the client's error callback: logs it as a warning, and keeps it
    /// when it is a TLS or authentication failure.
    #[cfg_attr(not(feature = "rdkafka-interop"), allow(dead_code))]
    pub(crate) fn observe_error(&self, error: ClientError, reason: &str) {
        self.errors.error(error, reason);
    }

    /// The first TLS or authentication failure seen ([`Error::Tls`] or
    /// [`Error::Authentication`], naming the mechanism and user, never the password).
    pub fn failure(&self) -> Option<Error> {
        self.errors.security_failure().map(Error::from)
    }
}

/// What librdkafka's error callback said about a client, kept for the loop that polls it: the
/// error callback of every client context that must stop on TLS and authentication failures.
pub(crate) struct ClientErrors {
    health: Mutex<ClientHealth>,
    security: Mutex<SecurityWatch>,
}

impl ClientErrors {
    pub fn new(security: SecurityWatch) -> Self {
        ClientErrors {
            health: Mutex::new(ClientHealth::default()),
            security: Mutex::new(security),
        }
    }

    pub fn health(&self) -> MutexGuard<'_, ClientHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS or authentication failure the client must stop with, if one happened.
    pub fn security_failure(&self) -> Option<SecurityFailure> {
        self.health().security.clone()
    }

    /// Records a token provider's error that asking again cannot cure
    /// ([`TokenError::rejected`](super::TokenError::rejected)): the client stops.
    pub fn token_rejected(&self, reason: &str) {
        let stop = self
            .security
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected_token(reason);
        error!(error = %crate::Error::from(stop.clone()), "the token provider's credentials were refused; stopping");
        self.health().security.get_or_insert(stop);
    }

    /// Records one error of librdkafka's error callback (see [`super`] for which
    /// ones stop the consumer).
    pub fn error(&self, e: ClientError, reason: &str) {
        let code = e.code();
        if code == Some(ErrorCode::FATAL) {
            error!(error = %e, reason, "fatal kafka client error");
            self.health().fatal.get_or_insert(e);
        } else if code == Some(ErrorCode::ALL_BROKERS_DOWN) {
            warn!(reason, "no broker is reachable");
            self.health()
                .unreachable_since
                .get_or_insert_with(Instant::now);
        } else {
            warn!(error = %e, reason, "kafka client error");
        }
        if let Some(code) = code {
            let stop = self
                .security
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(code, reason, Instant::now());
            if let Some(stop) = stop {
                error!(error = %crate::Error::from(stop.clone()), "cannot connect securely; stopping");
                self.health().security.get_or_insert(stop);
            }
        }
    }
}

/// What librdkafka's error callback said about the client's connections.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientHealth {
    /// Since when no broker has been reachable, if none is.
    pub unreachable_since: Option<Instant>,
    /// A fatal error: the client cannot go on.
    pub fatal: Option<ClientError>,
    /// A TLS or authentication failure that retrying cannot fix: the consumer stops with it.
    pub security: Option<SecurityFailure>,
}

/// The token callback of every client the runtime creates: the provider's token, or an error
/// that says none was set. A [rejected](super::TokenError::rejected) token request is
/// recorded in `errors` (when the client's failures stop the consumer), which stops it.
pub(crate) fn generate_oauth_token(
    oauth: Option<&OAuth>,
    errors: Option<&ClientErrors>,
) -> Result<OAuthToken, Box<dyn std::error::Error>> {
    match oauth {
        Some(oauth) => oauth.generate().inspect_err(|e| {
            let rejected = e
                .downcast_ref::<super::TokenError>()
                .filter(|e| e.is_rejected());
            if let (Some(e), Some(errors)) = (rejected, errors) {
                errors.token_rejected(&e.to_string());
            }
        }),
        None => Err(
            "sasl.mechanism is OAUTHBEARER but no token provider is set \
                     (ConsumerBuilder::oauth_token_provider)"
                .into(),
        ),
    }
}
