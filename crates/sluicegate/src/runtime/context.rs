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

use super::assignment::Assignment;

/// Holds the poll thread's state so that librdkafka's callbacks can reach it. Only the poll
/// thread ever locks it, and never across a call to `poll`, so the lock is never contended.
pub(crate) struct RuntimeContext {
    assignment: Mutex<Assignment>,
    health: Mutex<ClientHealth>,
}

/// What librdkafka's error callback said about the client's connections.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientHealth {
    /// Since when no broker has been reachable, if none is.
    pub unreachable_since: Option<Instant>,
    /// A fatal error: the client cannot go on.
    pub fatal: Option<KafkaError>,
}

impl RuntimeContext {
    pub fn new(assignment: Assignment) -> Self {
        RuntimeContext {
            assignment: Mutex::new(assignment),
            health: Mutex::new(ClientHealth::default()),
        }
    }

    pub fn health(&self) -> MutexGuard<'_, ClientHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn assignment(&self) -> MutexGuard<'_, Assignment> {
        // A panic while holding the lock leaves the state as consistent as any crash would;
        // the runtime's guarantees rest on commits, not on this memory.
        self.assignment.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        self.assignment().statistics(&statistics);
    }

    fn error(&self, e: KafkaError, reason: &str) {
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            error!(error = %e, reason, "fatal kafka client error");
            self.health().fatal.get_or_insert(e);
        } else if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            warn!(reason, "no broker is reachable");
            self.health()
                .unreachable_since
                .get_or_insert_with(Instant::now);
        } else {
            warn!(error = %e, reason, "kafka client error");
        }
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
