//! The consumer's callbacks: rebalances, which the client runs on the poll thread while it
//! polls, forwarded to the [`Assignment`]; statistics, client errors and tokens.

use std::ops::Deref;
use std::sync::{Mutex, MutexGuard};

use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer, Statistics};
use crate::kafka::FetchQueue;
use crate::security::{
    generate_oauth_token, ClientErrors, ClientHealth, OAuth, OAuthToken, SecurityWatch,
};
use crate::status::TopicPartition;
use crate::ClientError;

use super::assignment::Assignment;

/// The runtime's client.
pub(crate) type Client = KafkaConsumer<RuntimeContext>;

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

    /// Forwards the messages of `partitions` to the fetch queue; called before they are
    /// assigned.
    pub fn forward(&self, consumer: &Client, partitions: &[TopicPartition]) {
        if let Some(queue) = self.fetch_queue().as_ref() {
            consumer.forward(queue, partitions);
        }
    }
}

/// The runtime's client with its [`FetchQueue`], which it closes first: librdkafka's queues
/// must not outlive their client.
pub(crate) struct RuntimeConsumer(Client);

impl RuntimeConsumer {
    /// Gives `consumer` a fetch queue; `nonempty` is called when messages arrive on it.
    pub fn new(consumer: Client, nonempty: impl Fn() + Send + Sync + 'static) -> Self {
        *consumer.context().fetch_queue() = Some(consumer.fetch_queue(nonempty));
        RuntimeConsumer(consumer)
    }
}

impl Deref for RuntimeConsumer {
    type Target = Client;

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

impl ConsumerEvents for RuntimeContext {
    fn assigning(&self, consumer: &Client, partitions: &[TopicPartition]) {
        // Before librdkafka starts fetching them, so that no message goes elsewhere first.
        self.forward(consumer, partitions);
    }

    fn assigned(&self, consumer: &Client, partitions: &[TopicPartition]) {
        self.assignment().assign(consumer, partitions);
    }

    fn revoking(&self, consumer: &Client, partitions: &[TopicPartition]) {
        self.assignment().revoke(consumer, partitions);
    }

    fn statistics(&self, statistics: &Statistics) {
        self.assignment().statistics(statistics);
    }

    fn error(&self, error: ClientError, reason: &str) {
        self.errors.error(error, reason);
    }

    fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        generate_oauth_token(self.oauth.as_ref(), Some(&self.errors))
    }
}
