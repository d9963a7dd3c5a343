//! A lane: one Tokio task that handles the messages routed to it, one at a time or a batch at
//! a time, applying the policies around the user's handler, and reports each outcome to the
//! poll loop.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::dead_letter::Failure;
use crate::dispatch::{BatchLimits, Batcher};
use crate::handler::{Outcome, Work};
use crate::layer::{BuiltIn, Scope};
use crate::output::{self, OutputRecord};
use crate::status::StuckPartition;
use crate::upcoming::{self, Ahead};
use crate::Message;

use super::event::{Chunk, Event, LaneQueue, Left, Reports, Slot};

/// Retry waits at least this long pause their partition. A pause and resume makes librdkafka
/// drop its prefetched messages and fetch again, which costs up to a fetch round trip (about a
/// second), so shorter waits are better spent with the partition fetching: its buffer bounds
/// still apply.
pub(crate) const PAUSE_RETRIES_FROM: Duration = Duration::from_secs(1);
/// The longest a finished message waits in a lane before it is reported.
const REPORT_EVERY: Duration = Duration::from_millis(5);

/// What every lane of a consumer shares.
pub(crate) struct Worker<W> {
    /// The handler (inside the user's layers) inside the built-in layers.
    pub stack: BuiltIn<W>,
    /// Set for a batch handler.
    pub batch: Option<BatchLimits>,
    /// The partition and key modes, where nothing behind a message may go first: a message
    /// waiting to be retried pauses its partition, and one the handler gave up on with no
    /// dead-letter topic holds its lane until the partition is released.
    pub ordered: bool,
    /// Bounds messages in handler calls at once across all lanes.
    pub in_flight: Arc<Semaphore>,
    /// The permits `in_flight` started with: a batch takes at most that many.
    pub max_in_flight: u32,
    /// Cancelled on abort: running handlers are dropped, as a crash would.
    pub abort: CancellationToken,
    /// Exactly-once mode: the outputs of settled messages go to the poll loop, to be written
    /// with their offsets.
    pub exactly_once: bool,
    /// Tell each handler call what its lane hands over next ([`Upcoming`](crate::Upcoming));
    /// only in the ordered modes.
    pub upcoming: bool,
}

impl<W: Work> Worker<W> {
    /// Runs one lane of the partition in `slot` until its queue is closed, one message at a
    /// time (or, for a batch handler, one batch at a time). Where lanes share the partition's
    /// queue, a handler that has to wait first passes the rest of the lane's chunk on to the
    /// other lanes, so that a chunk of quick messages costs one wake-up, and slow ones still
    /// run side by side.
    ///
    /// Once `revoked` is cancelled, queued messages are reported abandoned without being
    /// handled (but those the handler claimed for work ahead, see [`Upcoming`](crate::Upcoming))
    /// and retry back-offs end; a handler already running is left to finish (the poll
    /// loop bounds how long it waits). Only an abort, like a crash, drops running handlers.
    ///
    /// Reports go back in batches: at the end of each batch received, before waiting on a
    /// handler that did not finish at once, and otherwise whenever [`REPORT_EVERY`] has passed,
    /// so that finished work never waits on a slow handler to be committed.
    pub async fn run_lane(
        self: Arc<Self>,
        slot: Slot,
        queue: LaneQueue,
        revoked: CancellationToken,
        events: Reports,
    ) {
        if let Some(limits) = self.batch {
            return self
                .run_batch_lane(limits, slot, queue.chunks, revoked, events)
                .await;
        }
        let tokens = [&revoked];
        let mut ahead = Ahead::default();
        // One lane has the partition to itself: all of a chunk follows in order.
        let whole = queue.share.is_none();
        // The in-flight permit of the last call, kept for the next message when the handler
        // works on it ahead.
        let mut kept = None;
        while let Ok(mut chunk) = queue.chunks.recv().await {
            let mut left = Vec::with_capacity(chunk.len());
            let mut since = Instant::now();
            while let Some(message) = chunk.next() {
                let upcoming = match self.upcoming {
                    true => ahead.after(&message, || chunk.following(whole), &revoked),
                    false => None,
                };
                let permit = kept.take();
                // Once let go, only messages the handler started ahead are still handed over.
                let mut processed = if revoked.is_cancelled() && !ahead.claimed() {
                    None
                } else {
                    let one = std::slice::from_ref(&message);
                    let handling = async {
                        let permit = match permit {
                            Some(kept) => Some(kept),
                            None => self.in_flight.acquire().await.ok(),
                        };
                        let processed = self.handle(one, &tokens, Some((slot, &events))).await;
                        kept = permit.filter(|_| ahead.next_claimed());
                        processed
                    };
                    let mut handling = pin!(upcoming::telling(upcoming, handling));
                    match futures::poll!(handling.as_mut()) {
                        Poll::Ready(processed) => Some(processed),
                        Poll::Pending => {
                            // The handler waits: the rest goes to other lanes, and what
                            // finished before it is reported first, so that commits (and a
                            // shutdown's final commit) need not wait.
                            queue.give_back(&mut chunk);
                            report(&events, slot, &mut left);
                            since = Instant::now();
                            tokio::select! {
                                biased;
                                processed = handling => Some(processed),
                                _ = self.abort.cancelled() => None,
                            }
                        }
                    }
                };
                if let Some(processed) = &mut processed {
                    send_outputs(&events, slot, processed);
                }
                let outcome = match processed {
                    None => None,
                    Some(mut processed) => match processed.stuck.pop() {
                        None => processed.outcomes[0],
                        Some((_, failure)) => {
                            queue.give_back(&mut chunk);
                            report(&events, slot, &mut left);
                            self.stop_at(&message, &failure, slot, &events, &revoked)
                                .await;
                            None
                        }
                    },
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

    /// A lane that hands its partition's messages to a batch handler in batches cut by
    /// `limits`, one batch at a time, in offset order.
    async fn run_batch_lane(
        self: Arc<Self>,
        limits: BatchLimits,
        slot: Slot,
        queue: async_channel::Receiver<Chunk>,
        revoked: CancellationToken,
        events: Reports,
    ) {
        let mut batcher = Batcher::new(limits);
        let mut open = true;
        while open || !batcher.is_empty() {
            receive_into(&queue, &mut batcher, &mut open, |batcher, messages| {
                let now = Instant::now();
                for m in messages {
                    let size = m.size();
                    batcher.push(m, size, now);
                }
            })
            .await;
            while let Some(batch) = batcher.next_batch(Instant::now(), !open) {
                let mut processed = if revoked.is_cancelled() {
                    Processed::abandoned(batch.len())
                } else {
                    let tokens = vec![&revoked; batch.len()];
                    tokio::select! {
                        biased;
                        processed = self.process(&batch, &tokens, Some((slot, &events))) => processed,
                        _ = self.abort.cancelled() => Processed::abandoned(batch.len()),
                    }
                };
                send_outputs(&events, slot, &mut processed);
                let stuck = processed.stuck.into_iter().next();
                let mut left = batch
                    .iter()
                    .cloned()
                    .zip(processed.outcomes)
                    .map(|(message, outcome)| Left { message, outcome })
                    .collect();
                report(&events, slot, &mut left);
                if let Some((i, failure)) = stuck {
                    self.stop_at(&batch[i], &failure, slot, &events, &revoked)
                        .await;
                }
            }
        }
    }

    /// The lane of a partition whose messages are batched with other partitions': it hands
    /// them to the shared batch lanes (see [`run_shared_batches`](Self::run_shared_batches)).
    pub async fn forward(
        slot: Slot,
        queue: async_channel::Receiver<Chunk>,
        revoked: CancellationToken,
        events: Reports,
        shared: async_channel::Sender<Routed>,
    ) {
        while let Ok(messages) = queue.recv().await {
            for message in messages {
                let routed = Routed {
                    slot,
                    message,
                    revoked: revoked.clone(),
                    events: events.clone(),
                };
                if shared.send(routed).await.is_err() {
                    return;
                }
            }
        }
    }

    /// One of the lanes that batch messages across partitions (the unordered mode): takes
    /// what the partitions forward, cuts batches, handles them and reports each message to
    /// its own partition.
    pub async fn run_shared_batches(self: Arc<Self>, queue: async_channel::Receiver<Routed>) {
        let limits = self.batch.unwrap_or_default();
        let mut batcher = Batcher::new(limits);
        let mut open = true;
        while open || !batcher.is_empty() {
            receive_into(
                &queue,
                &mut batcher,
                &mut open,
                |batcher, routed: Routed| {
                    let size = routed.message.size();
                    batcher.push(routed, size, Instant::now());
                },
            )
            .await;
            while let Some(batch) = batcher.next_batch(Instant::now(), !open) {
                // Messages of partitions revoked meanwhile are left to their next owner.
                let (live, gone): (Vec<Routed>, Vec<Routed>) =
                    batch.into_iter().partition(|r| !r.revoked.is_cancelled());
                for r in gone {
                    r.report(None);
                }
                if live.is_empty() {
                    continue;
                }
                let messages: Vec<Message> = live.iter().map(|r| r.message.clone()).collect();
                let tokens: Vec<&CancellationToken> = live.iter().map(|r| &r.revoked).collect();
                let processed = tokio::select! {
                    biased;
                    processed = self.process(&messages, &tokens, None) => processed,
                    _ = self.abort.cancelled() => Processed::abandoned(live.len()),
                };
                // Exactly-once mode batches each partition on its own (see `Consumer::spawn`).
                debug_assert!(processed.outputs.is_empty());
                // The unordered mode: a stuck message holds no lane, only its partition.
                for (i, failure) in &processed.stuck {
                    let r = &live[*i];
                    self.stop_at(&r.message, failure, r.slot, &r.events, &r.revoked)
                        .await;
                }
                for (r, outcome) in live.into_iter().zip(processed.outcomes) {
                    r.report(outcome);
                }
            }
        }
    }

    /// Handles `messages` (one, or a batch) under the policies and returns the outcome of
    /// each, in order: `None` for those abandoned because their partition was revoked while
    /// they waited (to be retried, for the circuit breaker, or for a dead-letter write), and
    /// for those the handler gave up on with no dead-letter topic (listed in
    /// [`Processed::stuck`]; in the ordered modes the messages after it are then not tried).
    /// `revoked` holds each message's partition token. `retrying` names the partition that
    /// pauses while a retry waits, in the ordered modes.
    async fn process(
        &self,
        messages: &[Message],
        revoked: &[&CancellationToken],
        retrying: Option<(Slot, &Reports)>,
    ) -> Processed {
        let permits = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let _permit = self
            .in_flight
            .acquire_many(permits.min(self.max_in_flight))
            .await;
        self.handle(messages, revoked, retrying).await
    }

    /// [`Self::process`] under in-flight permits already held.
    async fn handle(
        &self,
        messages: &[Message],
        revoked: &[&CancellationToken],
        retrying: Option<(Slot, &Reports)>,
    ) -> Processed {
        let n = messages.len();
        let mut lane = LaneScope {
            retrying: RetryingGuard {
                target: retrying.filter(|_| self.ordered),
                active: false,
            },
            ordered: self.ordered,
            processed: Processed {
                outcomes: Vec::with_capacity(n),
                stuck: Vec::new(),
                outputs: Vec::new(),
            },
            exactly_once: self.exactly_once,
        };
        // Halted at a stuck message: what follows it was not tried.
        let handled = self.stack.handle(messages, revoked, &mut lane);
        let _ = match self.exactly_once {
            true => output::settling(handled).await,
            false => handled.await,
        };
        let LaneScope { mut processed, .. } = lane;
        processed.outcomes.resize(n, None);
        processed
    }

    /// Stops the partition of `message`, which the handler gave up on with no dead-letter
    /// topic to take it: logs how to get out of it and tells the poll loop, which pauses the
    /// partition and marks the consumer not ready. The message stays unfinished, so nothing
    /// at or after its offset is committed. In the ordered modes the lane then waits, with no
    /// handler permit, until the partition is released (revoked, moved by a seek, or the
    /// consumer stopping), since nothing after the message may go first.
    async fn stop_at(
        &self,
        message: &Message,
        failure: &Failure,
        slot: Slot,
        events: &Reports,
        revoked: &CancellationToken,
    ) {
        log_stuck(message, failure);
        events.send(Event::Stuck {
            slot,
            stuck: stuck_partition(message, failure),
        });
        if self.ordered {
            tokio::select! {
                _ = revoked.cancelled() => {}
                _ = self.abort.cancelled() => {}
            }
        }
    }
}

/// What handling a message or a batch came to.
struct Processed {
    /// Each message's outcome, in order (see [`Worker::process`]).
    outcomes: Vec<Option<Outcome>>,
    /// The messages (by index) the handler gave up on with no dead-letter topic to take them;
    /// their outcomes are `None`. In the ordered modes at most one, and every message after it
    /// was left untried (`None`).
    stuck: Vec<(usize, Failure)>,
    /// Exactly-once mode: the outputs of the messages settled, by the last offset of each
    /// group settled together.
    outputs: Vec<(i64, Vec<OutputRecord>)>,
}

impl Processed {
    /// `n` messages, each with `outcome`.
    fn all(n: usize, outcome: Option<Outcome>) -> Self {
        Processed {
            outcomes: vec![outcome; n],
            stuck: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// `n` messages abandoned: their partition was revoked, or the consumer aborted.
    fn abandoned(n: usize) -> Self {
        Self::all(n, None)
    }
}

/// The status entry of a partition stopped at `message`, which failed with `failure`.
pub(crate) fn stuck_partition(message: &Message, failure: &Failure) -> StuckPartition {
    StuckPartition {
        offset: message.offset(),
        kind: failure.error.kind(),
        error: failure.error.to_string(),
        attempts: failure.attempts,
        since: failure.last,
    }
}

/// Logs, at `error` level, that the handler gave up on `message` with no dead-letter topic to
/// take it, what that does, and what to do about it.
pub(crate) fn log_stuck(message: &Message, failure: &Failure) {
    error!(topic = message.topic(), partition = message.partition(), offset = message.offset(),
           kind = %failure.error.kind(), attempts = failure.attempts, error = %failure.error,
           "handler gave up and no dead-letter topic is configured: the partition stops at this \
            offset (paused, nothing at or after it committed, the consumer not ready) until the \
            consumer restarts or the partition is reassigned or moved by a seek. Configure a \
            dead-letter topic (ConsumerBuilder::dead_letter, KAFKA_DLQ_TOPIC, or `dead_letter:` \
            in the configuration file) to set such records aside and go on");
}

/// A message on its way from its partition's lane to the shared batch lanes.
pub(crate) struct Routed {
    slot: Slot,
    message: Message,
    revoked: CancellationToken,
    events: Reports,
}

impl Routed {
    fn report(self, outcome: Option<Outcome>) {
        let mut left = vec![Left {
            message: self.message,
            outcome,
        }];
        report(&self.events, self.slot, &mut left);
    }
}

/// Tells the poll loop that a message of `slot` waits to be retried (so its partition pauses),
/// and that it no longer does when dropped.
struct RetryingGuard<'a> {
    /// `None` where retries do not pause (the unordered mode).
    target: Option<(Slot, &'a Reports)>,
    active: bool,
}

impl RetryingGuard<'_> {
    fn start(&mut self) {
        if let Some((slot, events)) = self.target.filter(|_| !self.active) {
            self.active = true;
            events.send(Event::Retrying {
                slot,
                waiting: true,
            });
        }
    }
}

impl Drop for RetryingGuard<'_> {
    fn drop(&mut self) {
        if let Some((slot, events)) = self.target.filter(|_| self.active) {
            events.send(Event::Retrying {
                slot,
                waiting: false,
            });
        }
    }
}

/// The [`Scope`] of a lane: collects each message's outcome, lists stuck messages (in the
/// ordered modes the first one halts the stack), and pauses the partition during long retry
/// waits.
struct LaneScope<'a> {
    retrying: RetryingGuard<'a>,
    ordered: bool,
    processed: Processed,
    exactly_once: bool,
}

/// An ordered lane stopped at a stuck message.
struct Halted;

impl Scope for LaneScope<'_> {
    type Halt = Halted;

    fn settled(&mut self, messages: &[Message], outcome: Option<Outcome>) -> Result<(), Halted> {
        let outcomes = &mut self.processed.outcomes;
        outcomes.extend(std::iter::repeat_n(outcome, messages.len()));
        if self.exactly_once {
            // Kept by the successful calls (and dead letters) of these messages only: a group
            // released unsettled (`None`) kept none.
            let kept = output::take_kept();
            if let (false, Some(last)) =
                (kept.is_empty(), messages.iter().map(Message::offset).max())
            {
                self.processed.outputs.push((last, kept));
            }
        }
        Ok(())
    }

    fn stuck(&mut self, _: &Message, failure: Failure) -> Result<(), Halted> {
        let at = self.processed.outcomes.len();
        self.processed.outcomes.push(None);
        self.processed.stuck.push((at, failure));
        // Nothing after a stuck message may go first.
        if self.ordered {
            return Err(Halted);
        }
        Ok(())
    }

    fn waiting(&mut self, _: &[Message], delay: Duration) {
        if delay >= PAUSE_RETRIES_FROM {
            self.retrying.start();
        }
    }
}

/// Waits for what `queue` brings next, but not past the batcher's deadline, and adds it with
/// `add`; sets `open` to false once the queue is closed.
async fn receive_into<T, I>(
    queue: &async_channel::Receiver<T>,
    batcher: &mut Batcher<I>,
    open: &mut bool,
    add: impl FnOnce(&mut Batcher<I>, T),
) {
    if !*open {
        return;
    }
    let received = match batcher.deadline() {
        Some(deadline) => tokio::select! {
            r = queue.recv() => Some(r),
            _ = tokio::time::sleep_until(deadline.into()) => None,
        },
        None => Some(queue.recv().await),
    };
    match received {
        Some(Ok(item)) => add(batcher, item),
        Some(Err(_)) => *open = false,
        None => {}
    }
}

/// Sends the outputs of what `processed` settled to the poll loop (exactly-once mode), before
/// the messages are reported.
fn send_outputs(events: &Reports, slot: Slot, processed: &mut Processed) {
    if !processed.outputs.is_empty() {
        events.send(Event::Outputs {
            slot,
            outputs: std::mem::take(&mut processed.outputs),
        });
    }
}

/// Sends what left the lane so far to the poll loop, if anything did.
fn report(events: &Reports, slot: Slot, left: &mut Vec<Left>) {
    if !left.is_empty() {
        events.send(Event::Left {
            slot,
            left: std::mem::take(left),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use super::*;
    use crate::handler::{ErrorKind, HandlerError};

    /// Collects what a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_record_is_logged_as_an_error_that_says_how_to_configure_a_dead_letter_topic() {
        let message = Message::new("orders", 3, 1200, None, Some(b"{".to_vec()));
        let error: HandlerError = message.json::<serde_json::Value>().unwrap_err().into();
        let failure = Failure {
            error,
            attempts: 1,
            first: SystemTime::UNIX_EPOCH,
            last: SystemTime::UNIX_EPOCH,
        };
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || log_stuck(&message, &failure));
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for expected in [
            "ERROR",
            "topic=\"orders\" partition=3 offset=1200 kind=decode attempts=1",
            "error=decode error: cannot decode the value of orders/3 at offset 1200 as JSON",
            "no dead-letter topic is configured: the partition stops at this offset",
            "Configure a dead-letter topic (ConsumerBuilder::dead_letter, KAFKA_DLQ_TOPIC",
        ] {
            assert!(log.contains(expected), "{expected:?} not in {log}");
        }
        let stuck = stuck_partition(&message, &failure);
        assert_eq!(
            (stuck.offset, stuck.kind, stuck.attempts),
            (1200, ErrorKind::Decode, 1)
        );
    }
}
