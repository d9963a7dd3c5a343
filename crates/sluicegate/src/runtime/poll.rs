//! The poll loop: one OS thread that owns the consumer, so that polling (and with it
//! rebalance callbacks and `max.poll.interval.ms`) never waits on a handler.

use std::time::{Duration, Instant};

use std::sync::mpsc::{Receiver, Sender};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::commit::CommitSchedule;
use crate::Error;

use super::committer::{self, CommitRequest};
use super::context::RuntimeContext;
use super::event::Event;

/// At most this many messages are dispatched between two looks at lane reports.
const POLL_BATCH: usize = 512;
/// How long a poll may block when no message is waiting. A message or a rebalance ends the
/// wait at once; lane reports (completions) are applied after it, so this bounds how late a
/// completion can resume a paused partition or how late a stop request is seen.
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// The longest the loop holds off taking messages while buffers drain, before it polls (and
/// so serves rebalances) again.
const MAX_HOLD: Duration = Duration::from_millis(100);

/// How the loop is told to stop.
#[derive(Clone, Default)]
pub(crate) struct Control {
    /// Stop fetching, drain in-flight work (bounded), commit, leave the group.
    pub shutdown: CancellationToken,
    /// Stop at once, as a crash would: no drain, no final commit.
    pub abort: CancellationToken,
}

/// Runs the poll loop, and the committer beside it, until stopped; then closes the consumer.
pub(crate) fn run(
    consumer: BaseConsumer<RuntimeContext>,
    control: Control,
    commit_interval: Duration,
    commits: Receiver<CommitRequest>,
    events: Sender<Event>,
) -> Result<(), Error> {
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sluicegate-commit".into())
            .spawn_scoped(scope, || committer::run(&consumer, commits, events))
            .map_err(|e| Error::Thread(e.to_string()))?;
        let result = poll(&consumer, &control, commit_interval);
        // Closing the request channel ends the committer once its last commit is done.
        consumer.context().assignment().close_commits();
        result
    });
    // Dropping the consumer closes it: it leaves the group, running the revoke callback for
    // anything still assigned (nothing after a graceful release).
    drop(consumer);
    result
}

fn poll(
    consumer: &BaseConsumer<RuntimeContext>,
    control: &Control,
    commit_interval: Duration,
) -> Result<(), Error> {
    let mut schedule = CommitSchedule::new(commit_interval);
    let mut held_since = None;
    loop {
        if control.abort.is_cancelled() {
            consumer.context().assignment().abort();
            return Ok(());
        }
        if control.shutdown.is_cancelled() {
            consumer.context().assignment().release_all(consumer);
            return Ok(());
        }
        let holding = hold(consumer, &mut held_since);
        // `poll` returns `None` both when nothing came and when it served a callback, so only
        // the first poll of a round may block.
        let mut wait = IDLE_WAIT;
        for _ in 0..if holding { 0 } else { POLL_BATCH } {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    consumer.context().assignment().dispatch(consumer, &m);
                    wait = Duration::ZERO;
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                    consumer.context().assignment().abort();
                    return Err(Error::Fatal(e));
                }
                Some(Err(KafkaError::PartitionEOF(p))) => debug!(partition = p, "end of partition"),
                Some(Err(e)) => warn!(error = %e, "consumer error"),
            }
        }
        let mut assignment = consumer.context().assignment();
        assignment.flush();
        assignment.drain_events(consumer);
        if schedule.due(Instant::now()) {
            assignment.request_commit(None);
            assignment.publish_figures();
        }
    }
}

/// While buffers are over the hold mark, waits for lane reports instead of taking messages,
/// for at most [`MAX_HOLD`] in a row. Returns whether this round takes no messages.
fn hold(consumer: &BaseConsumer<RuntimeContext>, held_since: &mut Option<Instant>) -> bool {
    let mut assignment = consumer.context().assignment();
    if !assignment.should_hold() {
        *held_since = None;
        return false;
    }
    let since = *held_since.get_or_insert_with(Instant::now);
    if since.elapsed() >= MAX_HOLD {
        // Poll one round, which serves rebalances and keeps `max.poll.interval.ms` met.
        *held_since = None;
        return false;
    }
    assignment.wait_events(consumer, IDLE_WAIT);
    true
}
