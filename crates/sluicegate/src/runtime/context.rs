//! The rdkafka consumer context: rebalance callbacks, which librdkafka runs on the
//! poll thread while it polls, forwarded to the [`Assignment`].

use std::ops::Deref;
use std::sync::{Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use tracing::warn;

use crate::kafka::FetchQueue;
use crate::security::{generate_oauth_token, ClientErrors, ClientHealth, OAuth, SecurityWatch};

use super::assignment::Assignment;

/// Holds the poll thread's state so that librdkafka's callbacks can reach it. Only the poll
/// thread ever locks it, and never across a call to `poll`, so the lock is never contended.
pub(crate) struct RuntimeContext {
    assignment: Mutex<Assignment>,
    /// Where assigned partitions' messages go, for the poll loop to take in batches. Set by
    /// [`RuntimeConsumer::new`], taken out before the client closes.
    fetch: Mutex<Option<FetchQueue>>,
    errors: ClientErrors,
    oauth: Option<OAuth>,
}

impl RuntimeContext {
    pub fn new(assignment: Assignment, security: SecurityWatch, oauth: Option<OAuth>) -> Self {
        RuntimeContext {
            assignment: Mutex::new(assignment),
            fetch: Mutex::new(None),
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

    /// The queue assigned partitions' messages go to (`None` once the client is closing).
    pub fn fetch_queue(&self) -> MutexGuard<'_, Option<FetchQueue>> {
        self.fetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forwards the messages of `list`'s partitions to the fetch queue; called before they
    /// are assigned.
    pub fn forward(&self, consumer: &BaseConsumer<Self>, list: &TopicPartitionList) {
        if let Some(queue) = self.fetch_queue().as_ref() {
            for e in list.elements() {
                queue.forward(consumer, e.topic(), e.partition());
            }
        }
    }
}

/// The runtime's client with its [`FetchQueue`], which it closes first: librdkafka's queues
/// must not outlive their client.
pub(crate) struct RuntimeConsumer(BaseConsumer<RuntimeContext>);

impl RuntimeConsumer {
    /// Gives `consumer` a fetch queue; `nonempty` is called when messages arrive on it.
    pub fn new(
        consumer: BaseConsumer<RuntimeContext>,
        nonempty: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        *consumer.context().fetch_queue() = Some(FetchQueue::new(&consumer, nonempty));
        RuntimeConsumer(consumer)
    }
}

impl Deref for RuntimeConsumer {
    type Target = BaseConsumer<RuntimeContext>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for RuntimeConsumer {
    fn drop(&mut self) {
        // Messages still on it were never handed out: the next owner fetches them again.
        self.0.context().fetch_queue().take();
    }
}

impl ClientContext for RuntimeContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::kafka::client::oauth_token(generate_oauth_token(
            self.oauth.as_ref(),
            Some(&self.errors),
        ))
    }

    fn stats(&self, statistics: Statistics) {
        self.assignment().statistics(&statistics);
    }

    fn error(&self, e: KafkaError, reason: &str) {
        self.errors
            .error(crate::kafka::error::client_error(e), reason);
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.assignment().revoke(consumer, list),
            // Before librdkafka starts fetching them, so that no message goes elsewhere first.
            Rebalance::Assign(list) => self.forward(consumer, list),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.assignment().assign(consumer, list);
        }
    }
}
