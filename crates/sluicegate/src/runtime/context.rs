//! The rdkafka consumer context: rebalance callbacks, which librdkafka runs on the
//! poll thread while it polls, forwarded to the [`Assignment`].

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{error, warn};

use crate::security::{OAuth, SecurityFailure, SecurityWatch};

use super::assignment::Assignment;

/// Holds the poll thread's state so that librdkafka's callbacks can reach it. Only the poll
/// thread ever locks it, and never across a call to `poll`, so the lock is never contended.
pub(crate) struct RuntimeContext {
    assignment: Mutex<Assignment>,
    errors: ClientErrors,
    oauth: Option<OAuth>,
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
    /// ([`TokenError::rejected`](crate::security::TokenError::rejected)): the client stops.
    pub fn token_rejected(&self, reason: &str) {
        let stop = self
            .security
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rejected_token(reason);
        error!(error = %crate::Error::from(stop.clone()), "the token provider's credentials were refused; stopping");
        self.health().security.get_or_insert(stop);
    }

    /// Records one error of librdkafka's error callback (see [`crate::security`] for which
    /// ones stop the consumer).
    pub fn error(&self, e: KafkaError, reason: &str) {
        let code = e.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::Fatal) {
            error!(error = %e, reason, "fatal kafka client error");
            self.health().fatal.get_or_insert(e);
        } else if code == Some(RDKafkaErrorCode::AllBrokersDown) {
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
    pub fatal: Option<KafkaError>,
    /// A TLS or authentication failure that retrying cannot fix: the consumer stops with it.
    pub security: Option<SecurityFailure>,
}

impl RuntimeContext {
    pub fn new(assignment: Assignment, security: SecurityWatch, oauth: Option<OAuth>) -> Self {
        RuntimeContext {
            assignment: Mutex::new(assignment),
            errors: ClientErrors::new(security),
            oauth,
        }
    }

    pub fn health(&self) -> MutexGuard<'_, ClientHealth> {
        self.errors.health()
    }

    pub fn assignment(&self) -> MutexGuard<'_, Assignment> {
        // A panic while holding the lock leaves the state as consistent as any crash would;
        // the runtime's guarantees rest on commits, not on this memory.
        self.assignment.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for RuntimeContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        generate_oauth_token(self.oauth.as_ref(), Some(&self.errors))
    }

    fn stats(&self, statistics: Statistics) {
        self.assignment().statistics(&statistics);
    }

    fn error(&self, e: KafkaError, reason: &str) {
        self.errors.error(e, reason);
    }
}

/// The token callback of every client the runtime creates: the provider's token, or an error
/// that says none was set. A [rejected](crate::security::TokenError::rejected) token request is
/// recorded in `errors` (when the client's failures stop the consumer), which stops it.
pub(crate) fn generate_oauth_token(
    oauth: Option<&OAuth>,
    errors: Option<&ClientErrors>,
) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
    match oauth {
        Some(oauth) => oauth.generate().inspect_err(|e| {
            let rejected = e
                .downcast_ref::<crate::security::TokenError>()
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

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.assignment().revoke(consumer, list),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.assignment().assign(consumer, list);
        }
    }
}
