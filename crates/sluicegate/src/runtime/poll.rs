//! The poll loop: one OS thread that owns the consumer, so that polling (and with it
//! rebalance callbacks and `max.poll.interval.ms`) never waits on a handler.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::commit::CommitSchedule;
use crate::kafka::FetchError;
use crate::policy::Reconnect;
use crate::{ClientError, Error};

use super::committer::{self, Committer};
use super::context::{Client, RuntimeConsumer};
use super::event::Reports;
use super::seek::SeekQueue;
use super::status::StatusPublisher;

/// At most this many messages are dispatched between two looks at lane reports.
const POLL_BATCH: usize = 512;
/// How long the loop waits when nothing is waiting for it. A message, a rebalance or a lane
/// report (a completion) ends the wait at once (see [`Wakeup`](super::wakeup::Wakeup)), so this
/// bounds only how late a stop or seek request is seen.
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// The longest the loop holds off taking messages while buffers drain, before it polls (and
/// so serves rebalances) again.
const MAX_HOLD: Duration = Duration::from_millis(100);

/// How often an unreachable client checks whether a broker answers again.
const REACHABILITY_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why the poll loop ended without an error.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// Shut down or aborted as asked.
    Stopped,
    /// The client is lost (fatal error, or no broker for too long): build a new one.
    ClientLost {
        /// Why, in a sentence.
        reason: String,
        /// The fatal error, with librdkafka's underlying code, if that was the cause.
        fatal: Option<ClientError>,
    },
}

/// How the loop is told to stop.
#[derive(Clone, Default)]
pub(crate) struct Control {
    /// Stop fetching, drain in-flight work (bounded), commit, leave the group.
    pub shutdown: CancellationToken,
    /// Stop at once, as a crash would: no drain, no final commit.
    pub abort: CancellationToken,
    /// Seeks asked for through the handle.
    pub seeks: SeekQueue,
}

/// Runs the poll loop, and the committer beside it, until stopped; then closes the consumer.
pub(crate) fn run(
    consumer: RuntimeConsumer,
    control: Control,
    commit_interval: Duration,
    committer: Committer,
    events: Reports,
    reconnect: &Reconnect,
    status: &StatusPublisher,
) -> Result<SessionEnd, Error> {
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sluicegate-commit".into())
            .spawn_scoped(scope, || committer::run(&consumer, committer, events))
            .map_err(|e| Error::Thread(e.to_string()))?;
        let result = poll(&consumer, &control, commit_interval, reconnect, status);
        // Closing the request channel ends the committer once its last commit is done.
        consumer.context().assignment().close_commits();
        result
    });
    if let Ok(SessionEnd::ClientLost { .. }) = result {
        // Closing a client that reaches no broker can block for a long time; the next client
        // need not wait for that.
        let _ = std::thread::Builder::new()
            .name("sluicegate-close".into())
            .spawn(move || drop(consumer));
    } else {
        // Dropping the consumer closes it: it leaves the group, running the revoke callback
        // for anything still assigned (nothing after a graceful release).
        drop(consumer);
    }
    result
}

fn poll(
    consumer: &Client,
    control: &Control,
    commit_interval: Duration,
    reconnect: &Reconnect,
    status: &StatusPublisher,
) -> Result<SessionEnd, Error> {
    let mut reachable = true;
    let mut schedule = CommitSchedule::new(commit_interval);
    let mut held_since = None;
    let mut last_probe = Instant::now();
    let wakeup = consumer.context().assignment().wakeup();
    // The last round took nothing: the consumer's queue was empty (or served only an event),
    // so librdkafka raises the wakeup when something comes.
    let mut idle = false;
    loop {
        status.heartbeat();
        if control.abort.is_cancelled() {
            consumer.context().assignment().abort();
            return Ok(SessionEnd::Stopped);
        }
        if control.shutdown.is_cancelled() {
            let mut assignment = consumer.context().assignment();
            assignment.release_all(consumer);
            return match assignment.take_fatal() {
                Some(e) => Err(e.into_error()),
                None => Ok(SessionEnd::Stopped),
            };
        }
        if let Some(end) = check_client(consumer, reconnect, &mut last_probe)? {
            // Uncommitted work is abandoned, as in a crash: the next client gets it again.
            consumer.context().assignment().abort();
            return Ok(end);
        }
        let now_reachable = consumer.context().health().unreachable_since.is_none();
        if now_reachable != reachable {
            reachable = now_reachable;
            status.brokers_reachable(reachable);
        }
        let holding = hold(consumer, &mut held_since);
        if !holding && idle {
            // Wait for librdkafka or a lane's report, whichever comes first.
            wakeup.wait(IDLE_WAIT);
        }
        idle = !holding;
        if !holding {
            // The consumer's own queue first: rebalances, errors and statistics (and messages
            // of a partition that could not be forwarded), then assigned partitions' messages
            // in batches.
            let mut taken = 0;
            while taken < POLL_BATCH {
                let Some(polled) = consumer.poll(Duration::ZERO) else {
                    break;
                };
                taken += 1;
                let go_on = match polled {
                    Ok(m) => {
                        consumer.context().assignment().dispatch(consumer, &m);
                        true
                    }
                    Err(e) => take_error(consumer, e),
                };
                if !go_on {
                    break;
                }
            }
            if let Some(queue) = consumer.context().fetch_queue().as_ref() {
                let mut assignment = consumer.context().assignment();
                taken += queue.take(POLL_BATCH - taken, |fetched| match fetched {
                    Ok(m) => assignment.dispatch(consumer, &m),
                    Err(e) => {
                        take_error(consumer, e);
                    }
                });
            }
            idle = taken == 0;
        }
        let mut assignment = consumer.context().assignment();
        for seek in control.seeks.take() {
            let _ = seek
                .reply
                .send(assignment.seek(consumer, &seek.tp, seek.to));
        }
        assignment.flush();
        assignment.drain_events(consumer);
        if let Some(e) = assignment.take_fatal() {
            // Exactly-once mode's producer can commit nothing any more (fenced): what is not
            // committed goes to the next owner, as in a crash.
            assignment.abort();
            return Err(e.into_error());
        }
        assignment.check_catch_up(consumer);
        if schedule.due(Instant::now()) || assignment.outputs_due() {
            assignment.request_commit(None);
            assignment.publish_figures();
        }
    }
}

/// Logs a consumer error, or records a fatal one for `check_client`; `false` after a fatal
/// error.
fn take_error(consumer: &Client, e: FetchError) -> bool {
    match e {
        FetchError::Fatal(e) => {
            consumer.context().health().fatal.get_or_insert(e);
            return false;
        }
        FetchError::PartitionEnd(p) => debug!(partition = p, "end of partition"),
        FetchError::Other(e) => warn!(error = %e, "consumer error"),
    }
    true
}

/// Decides whether the client is lost: it hit a fatal error, or has reached no broker for
/// longer than `reconnect` allows. While no broker is reachable, looks once every
/// [`REACHABILITY_PROBE_EVERY`] whether one answers again.
fn check_client(
    consumer: &Client,
    reconnect: &Reconnect,
    last_probe: &mut Instant,
) -> Result<Option<SessionEnd>, Error> {
    let health = consumer.context().health().clone();
    if let Some(failure) = health.security {
        // Retrying cannot fix a rejected certificate or credential; re-creating the client
        // would not either.
        consumer.context().assignment().abort();
        return Err(failure.into());
    }
    if let Some(e) = health.fatal {
        // The error callback reports a fatal error as `_FATAL`; the client keeps its cause.
        let e = consumer.fatal_error().unwrap_or(e);
        return if reconnect.on_fatal {
            Ok(Some(SessionEnd::ClientLost {
                reason: e.to_string(),
                fatal: Some(e),
            }))
        } else {
            consumer.context().assignment().abort();
            Err(Error::Fatal(e))
        };
    }
    let Some(since) = health.unreachable_since else {
        return Ok(None);
    };
    if last_probe.elapsed() >= REACHABILITY_PROBE_EVERY {
        *last_probe = Instant::now();
        if consumer.reaches_broker(REACHABILITY_PROBE_EVERY / 2) {
            info!("a broker is reachable again");
            consumer.context().health().unreachable_since = None;
            return Ok(None);
        }
    }
    Ok(match reconnect.unreachable_after {
        Some(after) if since.elapsed() >= after => Some(SessionEnd::ClientLost {
            reason: format!("no broker reachable for {:?}", since.elapsed()),
            fatal: None,
        }),
        _ => None,
    })
}

/// While buffers are over the hold mark, waits for lane reports instead of taking messages,
/// for at most [`MAX_HOLD`] in a row. Returns whether this round takes no messages.
fn hold(consumer: &Client, held_since: &mut Option<Instant>) -> bool {
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
