//! The rdkafka consumer context: rebalance callbacks, which librdkafka runs on the
//! poll thread while it polls, forwarded to the [`Assignment`].

use std::sync::{Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use tracing::warn;

use crate::security::{generate_oauth_token, ClientErrors, ClientHealth, OAuth, SecurityWatch};

use super::assignment::Assignment;

/// Holds the poll thread's state so that librdkafka's callbacks can reach it. Only the poll
/// thread ever locks it, and never across a call to `poll`, so the lock is never contended.
pub(crate) struct RuntimeContext {
    assignment: Mutex<Assignment>,
    errors: ClientErrors,
    oauth: Option<OAuth>,
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
