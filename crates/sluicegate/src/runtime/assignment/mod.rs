//! The poll thread's view of its partitions: for each assigned partition its lanes, its
//! [`OffsetTracker`], its buffer and pause state; and what happens on assign, revoke,
//! dispatch, completion and commit. By job:
//! - here: routing fetched messages to lanes, applying the lanes' reports, pausing;
//! - [`partition`]: one owned partition's state, and the index that finds it;
//! - [`rebalance`]: taking and giving up partitions (assign, revoke, seek, shutdown);
//! - [`commits`]: asking the committer for commits and applying its acknowledgements;
//! - [`outputs`]: exactly-once mode's outputs of finished messages, waiting for their commit;
//! - [`figures`]: lag, buffer and catch-up figures for the status.

mod commits;
mod figures;
mod outputs;
mod partition;
mod rebalance;

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::dispatch::{Backpressure, BufferLimits, Ordering};
use crate::handler::Outcome;
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
use crate::kafka::Record;
use crate::metrics::{wall, Stage};
use crate::policy::{Breaker, CircuitState};

use super::catch_up::Targets;
use super::commit::CommitError;
use super::committer::CommitRequest;
use super::event::{Event, LaneQueue, Left, Reports, Slot};
use super::status::StatusPublisher;
use super::wakeup::Wakeup;
use partition::{pause, PartitionIndex, PartitionState};

/// Outputs waiting for their commit past which a commit is asked for at once (exactly-once
/// mode), and past which no more messages are taken until a commit writes them: the memory
/// they hold stays bounded whatever the commit interval.
const OUTPUTS_COMMIT_BYTES: usize = 4 << 20;
const OUTPUTS_HOLD_BYTES: usize = 32 << 20;

/// Starts a lane task: `(slot, queue, revoked, events)`.
pub(crate) type LaneSpawner =
    Arc<dyn Fn(Slot, LaneQueue, CancellationToken, Reports) + Send + Sync>;

/// How the assignment routes and bounds work.
#[derive(Clone)]
pub(crate) struct Routing {
    pub ordering: Ordering,
    /// Handlers at once per partition (1 in partition mode).
    pub width: usize,
    pub limits: BufferLimits,
    pub drain_timeout: Duration,
    /// Pauses every partition while open.
    pub breaker: Option<Arc<Breaker>>,
    /// Exactly-once mode: commits are transactions that write the finished messages' outputs.
    pub transactional: bool,
}

/// Every partition the consumer owns, and the channel lanes report on.
pub(crate) struct Assignment {
    routing: Routing,
    spawn_lane: LaneSpawner,
    reports: Reports,
    events: Receiver<Event>,
    slots: Vec<Option<PartitionState>>,
    index: PartitionIndex,
    generation: u64,
    backpressure: Backpressure,
    skipped_as_finished: u64,
    dead_lettered: u64,
    retried: u64,
    /// The circuit breaker's state as last seen.
    circuit: CircuitState,
    /// Partitions with messages routed but not yet handed to their lanes.
    dirty: Vec<usize>,
    /// When this poll round took its first message, with metrics on: the time of the polled
    /// stage for every message of the round (a round takes at most a fraction of a
    /// millisecond), one clock reading per round instead of per message.
    polled_at: Option<SystemTime>,
    status: StatusPublisher,
    commits: Option<Sender<CommitRequest>>,
    /// The commit request the committer is working on; one at a time keeps commits in order.
    commit_in_flight: Option<u64>,
    next_commit_id: u64,
    /// Set on abort: revoked partitions are dropped without waiting or committing.
    aborted: bool,
    /// Offsets are committed (cleared for a reader from the beginning, which has no group).
    commits_enabled: bool,
    /// A reader from the beginning not yet caught up: the log ends it reads up to.
    catch_up: Option<Targets>,
    /// A transaction failed fatally (fenced by a newer instance): the consumer stops with it.
    fatal: Option<CommitError>,
}

impl Assignment {
    pub fn new(
        routing: Routing,
        spawn_lane: LaneSpawner,
        reports: Reports,
        events: Receiver<Event>,
        status: StatusPublisher,
        commits: Sender<CommitRequest>,
    ) -> Self {
        Assignment {
            backpressure: Backpressure::new(routing.limits),
            routing,
            spawn_lane,
            reports,
            events,
            slots: Vec::new(),
            index: PartitionIndex::default(),
            generation: 0,
            skipped_as_finished: 0,
            dead_lettered: 0,
            retried: 0,
            circuit: CircuitState::Closed,
            dirty: Vec::new(),
            polled_at: None,
            status,
            commits: Some(commits),
            commit_in_flight: None,
            next_commit_id: 0,
            aborted: false,
            commits_enabled: true,
            catch_up: None,
            fatal: None,
        }
    }

    /// Commits nothing and reads no committed offset maps: a reader from the beginning, with
    /// no group. Call it before any partition is taken.
    pub fn without_commits(&mut self) {
        self.commits_enabled = false;
    }

    /// Routes one fetched message to its lane. Messages of partitions this consumer does not
    /// own, or already received, are dropped here: they are neither tracked nor committed.
    pub fn dispatch<C: ConsumerEvents>(&mut self, consumer: &KafkaConsumer<C>, m: &impl Record) {
        let Some(i) = self.index.get_bytes(m.topic_bytes(), m.partition()) else {
            debug!(
                topic = %String::from_utf8_lossy(m.topic_bytes()),
                partition = m.partition(),
                "message for an unowned partition; ignored"
            );
            return;
        };
        let p = self.slots[i].as_mut().expect("indexed slots exist");
        if p.paused && p.refetch_on_resume {
            // Taken in the same batch as the message that paused the partition: librdkafka
            // fetches it again after the resume, from `next_fetch`.
            return;
        }
        p.next_fetch = Some(
            p.next_fetch
                .map_or(m.offset() + 1, |n| n.max(m.offset() + 1)),
        );
        if !p.offsets.track(m.offset()) {
            debug!(
                topic = %p.tp.topic,
                partition = m.partition(),
                offset = m.offset(),
                "message received again; already in flight or finished"
            );
            return;
        }
        if let Some(t) = &p.metrics {
            t.consumed.inc();
        }
        if !p.finished_before.is_empty() {
            let known = p.finished_before.remove(&m.offset());
            // Offsets below this one can no longer arrive: forget them.
            p.finished_before = p.finished_before.split_off(&m.offset());
            if known {
                p.offsets.finish(m.offset());
                self.skipped_as_finished += 1;
                if let Some(t) = &p.metrics {
                    t.skipped_as_finished.inc();
                }
                return;
            }
        }
        let message = m.to_message(p.topic.clone());
        if let Some(t) = &p.metrics {
            let now = *self
                .polled_at
                .get_or_insert_with(|| wall(quanta::Instant::now()));
            t.reached(Stage::Polled, std::slice::from_ref(&message), now);
        }
        let must_pause = self.backpressure.admit(&mut p.buffered, message.size());
        let was_empty = p.pending.is_empty();
        // In key order, a message whose key is busy waits in the gate instead.
        match p.keys.as_mut() {
            Some(keys) => keys.admit(message, &mut p.pending),
            None => p.pending.push(message),
        }
        if was_empty && !p.pending.is_empty() {
            self.dirty.push(i);
        }
        if must_pause && !p.over_bounds {
            p.over_bounds = true;
            if !p.paused {
                p.paused = true;
                p.refetch_on_resume = p.next_fetch.is_some();
                pause(consumer, &p.tp, true, "backpressure", p.next_fetch);
            }
        }
    }

    /// Hands the messages routed during this poll round to their lanes, one chunk per
    /// partition: one channel send and one wake-up, instead of one per message. Where lanes
    /// share a partition, the lane that takes the chunk passes the rest on as soon as a
    /// handler has to wait (see [`LaneQueue::give_back`]).
    pub fn flush(&mut self) {
        self.polled_at = None;
        for i in self.dirty.drain(..) {
            if let Some(p) = self.slots[i].as_mut() {
                p.send_pending();
            }
        }
    }

    /// Applies every lane report waiting, without blocking.
    pub fn drain_events<C: ConsumerEvents>(&mut self, consumer: &KafkaConsumer<C>) {
        while let Ok(event) = self.events.try_recv() {
            self.apply(event);
        }
        if let Some(breaker) = &self.routing.breaker {
            let state = breaker.state();
            if state != self.circuit {
                info!(state = state.as_str(), "circuit breaker");
                self.circuit = state;
                self.status.circuit(state);
            }
        }
        self.update_pauses(consumer);
    }

    fn apply(&mut self, event: Event) {
        let (slot, left) = match event {
            Event::Left { slot, left } => (slot, left),
            Event::Retrying { slot, waiting } => {
                if let Some(p) = self.slots.get_mut(slot.index).and_then(Option::as_mut) {
                    if p.generation == slot.generation {
                        p.retrying = if waiting {
                            p.retrying + 1
                        } else {
                            p.retrying.saturating_sub(1)
                        };
                    }
                }
                return;
            }
            Event::Stuck { slot, stuck } => {
                if let Some(p) = self.slots.get_mut(slot.index).and_then(Option::as_mut) {
                    if p.generation == slot.generation {
                        p.stuck = true;
                        self.status.stuck(&p.tp, stuck);
                    }
                }
                return;
            }
            Event::Outputs { slot, outputs } => {
                if let Some(p) = self.slots.get_mut(slot.index).and_then(Option::as_mut) {
                    if p.generation == slot.generation {
                        for (last, records) in outputs {
                            p.outputs.add(last, records);
                        }
                    }
                }
                return;
            }
            Event::Committed {
                id,
                offsets,
                result,
                latency,
            } => {
                return self.commit_result(id, offsets, result, latency);
            }
        };
        let Some(p) = self.slots.get_mut(slot.index).and_then(Option::as_mut) else {
            return;
        };
        if p.generation != slot.generation {
            return; // A report about an earlier assignment of this slot.
        }
        let now = p.metrics.as_ref().map(|_| SystemTime::now());
        for Left { message, outcome } in left {
            self.backpressure.release(&mut p.buffered, message.size());
            if let Some(outcome) = outcome {
                p.offsets.finish(message.offset());
                if let (Some(t), Some(now)) = (&p.metrics, now) {
                    t.finished(outcome, message.age(now));
                }
                match outcome {
                    Outcome::Handled { attempts } => self.retried += u64::from(attempts - 1),
                    Outcome::DeadLettered { attempts } => {
                        self.retried += u64::from(attempts - 1);
                        self.dead_lettered += 1;
                    }
                    Outcome::Skipped => {}
                }
            }
            if let Some(keys) = p.keys.as_mut() {
                keys.finished(&message, &mut p.pending);
            }
        }
        // Keys freed by this report go on at once, in one chunk.
        if p.keys.is_some() {
            p.send_pending();
        }
    }

    /// Pauses or resumes each partition as its reasons say: over its buffer bounds, a message
    /// waiting to be retried, stopped at a record given up on, or the circuit breaker open. A partition may be over bounds because
    /// the *total* was, so its own completions are not the only thing that can free it: this
    /// runs after every batch of events.
    fn update_pauses<C: ConsumerEvents>(&mut self, consumer: &KafkaConsumer<C>) {
        let circuit_open = self.circuit == CircuitState::Open;
        for p in self.slots.iter_mut().flatten() {
            if p.over_bounds && self.backpressure.may_resume(&p.buffered) {
                p.over_bounds = false;
            }
            let want = p.over_bounds || p.retrying > 0 || p.stuck || circuit_open;
            if want != p.paused {
                p.paused = want;
                let why = if p.stuck {
                    "stuck"
                } else if circuit_open {
                    "circuit breaker"
                } else if p.retrying > 0 {
                    "retrying"
                } else {
                    "backpressure"
                };
                p.refetch_on_resume = want && p.next_fetch.is_some();
                pause(consumer, &p.tp, want, why, p.next_fetch);
            }
        }
    }

    /// Waits until `deadline` for one event and applies it; `false` if none came.
    fn wait_event(&mut self, deadline: Instant) -> bool {
        match self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(event) => {
                self.apply(event);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the poll loop should take no new messages for now (see [`BufferLimits`]).
    pub fn should_hold(&self) -> bool {
        self.backpressure.should_hold()
            || (self.routing.transactional && self.outputs_waiting() >= OUTPUTS_HOLD_BYTES)
    }

    /// Bytes of outputs waiting for their commit (exactly-once mode).
    fn outputs_waiting(&self) -> usize {
        self.slots.iter().flatten().map(|p| p.outputs.bytes()).sum()
    }

    /// Whether enough outputs wait that a commit should not wait for the commit interval.
    pub fn outputs_due(&self) -> bool {
        self.routing.transactional && self.outputs_waiting() >= OUTPUTS_COMMIT_BYTES
    }

    /// The fatal error a transaction ended with, if one did: the consumer stops with it.
    pub fn take_fatal(&mut self) -> Option<CommitError> {
        self.fatal.take()
    }

    /// Waits up to `timeout` for lane reports and applies them.
    pub fn wait_events<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        timeout: Duration,
    ) {
        if self.wait_event(Instant::now() + timeout) {
            self.drain_events(consumer);
        }
    }

    /// Stops sending commit requests, which lets the committer end.
    /// What the poll loop waits on between rounds: raised by every report.
    pub fn wakeup(&self) -> Arc<Wakeup> {
        self.reports.wakeup().clone()
    }

    pub fn close_commits(&mut self) {
        self.commits = None;
    }

    fn slot_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.index.get(topic, partition)
    }
}
