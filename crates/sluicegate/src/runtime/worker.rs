//! A lane: one Tokio task that handles the messages routed to it, one at a time, applying the
//! retry policy around the user's handler, and reports each outcome to the poll loop.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::dead_letter::{DeadLetterWriter, Failure};
use crate::handler::{ErrorKind, Handler, HandlerError, HandlerResult};
use crate::policy::{Breaker, RetryDecision, RetryPolicy};
use crate::Message;

use super::event::{Event, Left, Outcome, Slot};

/// Retry waits at least this long pause their partition. A pause and resume makes librdkafka
/// drop its prefetched messages and fetch again, which costs up to a fetch round trip (about a
/// second), so shorter waits are better spent with the partition fetching: its buffer bounds
/// still apply.
const PAUSE_RETRIES_FROM: Duration = Duration::from_secs(1);
/// The longest a finished message waits in a lane before it is reported.
const REPORT_EVERY: Duration = Duration::from_millis(5);

/// What every lane of a consumer shares.
pub(crate) struct Worker<H> {
    pub handler: H,
    pub retry: RetryPolicy,
    /// Cancels a handler call that runs longer, as a [`ErrorKind::Timeout`] failure.
    pub timeout: Option<Duration>,
    pub breaker: Option<Arc<Breaker>>,
    pub dead_letter: Option<Arc<DeadLetterWriter>>,
    /// Whether a message waiting to be retried pauses its partition (the ordered modes, where
    /// nothing behind it may go first anyway).
    pub pause_while_retrying: bool,
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
                    let mut handling = pin!(self.process(&message, &revoked, slot, &events));
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

    /// Handles one message under the policies; `None` if its partition was revoked while it
    /// waited (to be retried, for the circuit breaker, or for its dead-letter write).
    async fn process(
        &self,
        message: &Message,
        revoked: &CancellationToken,
        slot: Slot,
        events: &Sender<Event>,
    ) -> Option<Outcome> {
        let _permit = self.in_flight.acquire().await;
        let mut retrying = RetryingGuard {
            events,
            slot,
            active: false,
        };
        let mut attempts = 0u32;
        let mut first_failure: Option<(Instant, SystemTime)> = None;
        loop {
            attempts += 1;
            let result = match &self.breaker {
                Some(breaker) => {
                    let ticket = tokio::select! {
                        ticket = breaker.admit() => ticket,
                        _ = revoked.cancelled() => return None,
                    };
                    let result = self.attempt(message).await;
                    let failed = result.as_ref().is_err_and(|e| e.kind().is_retryable());
                    breaker.record(ticket, failed);
                    result
                }
                None => self.attempt(message).await,
            };
            let error = match result {
                Ok(()) => return Some(Outcome::Handled { attempts }),
                Err(e) if e.kind() == ErrorKind::Skip => return Some(Outcome::Skipped),
                Err(e) => e,
            };
            let (first, first_at) =
                *first_failure.get_or_insert_with(|| (Instant::now(), SystemTime::now()));
            let delay = match self.retry.decide(
                error.kind(),
                attempts,
                first.elapsed(),
                rand::random(),
            ) {
                RetryDecision::RetryAfter(delay) => {
                    warn!(topic = message.topic(), partition = message.partition(),
                          offset = message.offset(), attempts, ?delay, %error, "handler failed; retrying");
                    delay
                }
                RetryDecision::GiveUp => {
                    if let Some(dead_letter) = &self.dead_letter {
                        error!(topic = message.topic(), partition = message.partition(),
                               offset = message.offset(), attempts, %error, "handler gave up; dead-lettering");
                        let failure = Failure {
                            error,
                            attempts,
                            first: first_at,
                            last: SystemTime::now(),
                        };
                        let sent = dead_letter.send(message, &failure, revoked).await;
                        return sent.then_some(Outcome::DeadLettered { attempts });
                    }
                    // With nowhere to put the message, holding it is the only way not to lose it.
                    error!(topic = message.topic(), partition = message.partition(),
                           offset = message.offset(), attempts, %error,
                           "handler gave up and no dead-letter topic is configured; holding the message and retrying");
                    self.retry.backoff.max
                }
            };
            if self.pause_while_retrying && delay >= PAUSE_RETRIES_FROM {
                retrying.start();
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = revoked.cancelled() => return None,
            }
        }
    }

    /// One call of the handler, bounded by the timeout.
    async fn attempt(&self, message: &Message) -> HandlerResult {
        let call = invoke(&self.handler, message.clone());
        match self.timeout {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| Err(HandlerError::timeout(limit))),
            None => call.await,
        }
    }
}

/// Tells the poll loop that a message of `slot` waits to be retried (so its partition pauses),
/// and that it no longer does when dropped.
struct RetryingGuard<'a> {
    events: &'a Sender<Event>,
    slot: Slot,
    active: bool,
}

impl RetryingGuard<'_> {
    fn start(&mut self) {
        if !self.active {
            self.active = true;
            let _ = self.events.send(Event::Retrying {
                slot: self.slot,
                waiting: true,
            });
        }
    }
}

impl Drop for RetryingGuard<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = self.events.send(Event::Retrying {
                slot: self.slot,
                waiting: false,
            });
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
