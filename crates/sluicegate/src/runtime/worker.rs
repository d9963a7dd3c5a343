//! A lane: one Tokio task that handles the messages routed to it, one at a time, applying the
//! retry policy around the user's handler, and reports each outcome to the poll loop.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::handler::{ErrorKind, Handler, HandlerError};
use crate::policy::{RetryDecision, RetryPolicy};
use crate::Message;

use super::event::{Event, Left, Outcome, Slot};

/// The longest a finished message waits in a lane before it is reported.
const REPORT_EVERY: Duration = Duration::from_millis(5);

/// What every lane of a consumer shares.
pub(crate) struct Worker<H> {
    pub handler: H,
    pub retry: RetryPolicy,
    /// Bounds handlers running at once across all lanes.
    pub in_flight: Arc<Semaphore>,
    /// Cancelled on abort: running handlers are dropped, as a crash would.
    pub abort: CancellationToken,
}

impl<H: Handler> Worker<H> {
    /// Runs one lane of the partition in `slot` until its queue is closed.
    ///
    /// Once `revoked` is cancelled, queued messages are reported abandoned without being
    /// handled and retry back-offs end; a handler already running is left to finish (the poll
    /// loop bounds how long it waits). Only an abort, like a crash, drops running handlers.
    ///
    /// Reports go back in batches: at the end of each batch received, before waiting on a
    /// handler that did not finish at once, and otherwise whenever [`REPORT_EVERY`] has passed,
    /// so that finished work never waits on a slow handler to be committed.
    pub async fn run_lane(
        self: Arc<Self>,
        slot: Slot,
        queue: async_channel::Receiver<Vec<Message>>,
        revoked: CancellationToken,
        events: Sender<Event>,
    ) {
        while let Ok(batch) = queue.recv().await {
            let mut left = Vec::with_capacity(batch.len());
            let mut since = Instant::now();
            for message in batch {
                let outcome = if revoked.is_cancelled() {
                    None
                } else {
                    let mut handling = pin!(self.process(&message, &revoked));
                    match futures::poll!(handling.as_mut()) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => {
                            // The handler waits: report what finished before it first, so
                            // that commits (and a shutdown's final commit) need not wait.
                            report(&events, slot, &mut left);
                            since = Instant::now();
                            tokio::select! {
                                biased;
                                outcome = handling => outcome,
                                _ = self.abort.cancelled() => None,
                            }
                        }
                    }
                };
                left.push(Left { message, outcome });
                // Reading the clock for every message would cost more than the message.
                if left.len() % 8 == 0 && since.elapsed() >= REPORT_EVERY {
                    report(&events, slot, &mut left);
                    since = Instant::now();
                }
            }
            report(&events, slot, &mut left);
        }
    }

    /// Handles one message under the retry policy; `None` if its partition was revoked while
    /// it waited to be retried.
    async fn process(&self, message: &Message, revoked: &CancellationToken) -> Option<Outcome> {
        let _permit = self.in_flight.acquire().await;
        let mut attempts = 0u32;
        let mut first_failure: Option<Instant> = None;
        loop {
            attempts += 1;
            let error = match invoke(&self.handler, message.clone()).await {
                Ok(()) => return Some(Outcome::Handled { attempts }),
                Err(e) if e.kind() == ErrorKind::Skip => return Some(Outcome::Skipped),
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
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = revoked.cancelled() => return None,
            }
        }
    }
}

/// Sends what left the lane so far to the poll loop, if anything did.
fn report(events: &Sender<Event>, slot: Slot, left: &mut Vec<Left>) {
    if !left.is_empty() {
        // The poll loop may be gone (abort, or shutdown complete): nothing left to tell.
        let _ = events.send(Event::Left {
            slot,
            left: std::mem::take(left),
        });
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
