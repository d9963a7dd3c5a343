//! A lane: one Tokio task that handles the messages routed to it, one at a time, applying the
//! retry policy around the user's handler, and reports each outcome to the poll loop.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::handler::{ErrorKind, Handler, HandlerError};
use crate::policy::{RetryDecision, RetryPolicy};
use crate::Message;

use super::event::{Event, Outcome, Slot};

/// What every lane of a consumer shares.
pub(crate) struct Worker<H> {
    pub handler: H,
    pub retry: RetryPolicy,
    /// Bounds handlers running at once across all lanes.
    pub in_flight: Arc<Semaphore>,
}

impl<H: Handler> Worker<H> {
    /// Runs one lane of the partition in `slot` until its queue is closed. Once `revoked` is
    /// cancelled, queued messages are reported abandoned without being handled and retries stop.
    pub async fn run_lane(
        self: Arc<Self>,
        slot: Slot,
        queue: async_channel::Receiver<Message>,
        revoked: CancellationToken,
        events: Sender<Event>,
    ) {
        while let Ok(message) = queue.recv().await {
            let offset = message.offset();
            let bytes = message.size();
            let outcome = if revoked.is_cancelled() {
                None
            } else {
                tokio::select! {
                    biased;
                    _ = revoked.cancelled() => None,
                    outcome = self.process(message) => Some(outcome),
                }
            };
            // The poll loop may be gone (abort, or shutdown complete): nothing left to tell.
            let _ = events.send(Event::Left {
                slot,
                offset,
                bytes,
                outcome,
            });
        }
    }

    async fn process(&self, message: Message) -> Outcome {
        let _permit = self.in_flight.acquire().await;
        let mut attempts = 0u32;
        let mut first_failure: Option<Instant> = None;
        loop {
            attempts += 1;
            let error = match invoke(&self.handler, message.clone()).await {
                Ok(()) => return Outcome::Handled { attempts },
                Err(e) if e.kind() == ErrorKind::Skip => return Outcome::Skipped,
                Err(e) => e,
            };
            let elapsed = first_failure.get_or_insert_with(Instant::now).elapsed();
            let delay = match self
                .retry
                .decide(error.kind(), attempts, elapsed, rand::random())
            {
                RetryDecision::RetryAfter(delay) => {
                    warn!(topic = message.topic(), partition = message.partition(),
                          offset = message.offset(), attempts, ?delay, %error, "handler failed; retrying");
                    delay
                }
                RetryDecision::GiveUp => {
                    // With nowhere to put the message, holding it is the only way not to lose it.
                    error!(topic = message.topic(), partition = message.partition(),
                           offset = message.offset(), attempts, %error,
                           "handler gave up and no dead-letter topic is configured; holding the message and retrying");
                    self.retry.backoff.max
                }
            };
            tokio::time::sleep(delay).await;
        }
    }
}

/// Calls the handler, turning a panic into a [`HandlerError`] of kind [`ErrorKind::Panic`].
async fn invoke<H: Handler>(handler: &H, message: Message) -> Result<(), HandlerError> {
    match AssertUnwindSafe(handler.handle(message))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(HandlerError::panic(format!("handler panicked: {text}")))
        }
    }
}
