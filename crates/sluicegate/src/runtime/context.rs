//! The rdkafka consumer context: rebalance callbacks, which librdkafka runs on the
//! poll thread while it polls, forwarded to the [`Assignment`].

use std::sync::{Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use tracing::warn;

use super::assignment::Assignment;

/// Holds the poll thread's state so that librdkafka's callbacks can reach it. Only the poll
/// thread ever locks it, and never across a call to `poll`, so the lock is never contended.
pub(crate) struct RuntimeContext {
    assignment: Mutex<Assignment>,
}

impl RuntimeContext {
    pub fn new(assignment: Assignment) -> Self {
        RuntimeContext {
            assignment: Mutex::new(assignment),
        }
    }

    pub fn assignment(&self) -> MutexGuard<'_, Assignment> {
        // A panic while holding the lock leaves the state as consistent as any crash would;
        // the runtime's guarantees rest on commits, not on this memory.
        self.assignment.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for RuntimeContext {}

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
