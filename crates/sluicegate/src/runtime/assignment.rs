//! The poll thread's view of its partitions: for each assigned partition its lanes, its
//! [`OffsetTracker`], its buffer and pause state; and what happens on assign, revoke,
//! dispatch, completion and commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::commit::{partitions, read_list, CommitEntry};
use crate::dispatch::{Backpressure, BufferLimits, Buffered, KeyGate, Ordering, Ready};
use crate::handler::Outcome;
use crate::kafka::Record;
use crate::metrics::{wall, Stage, TopicMetrics};
use crate::policy::{Breaker, CircuitState};
use crate::status::{CatchUp, TopicPartition};
use crate::{offset_map, Error, OffsetTracker};

use super::catch_up::{Seen, Targets};
use super::committer::CommitRequest;
use super::event::{Chunk, Event, LaneQueue, Left, Reports, Slot};
use super::seek::{self, SeekTo};
use super::status::{Figures, StatusPublisher};
use super::wakeup::Wakeup;

/// The most bytes of commit metadata used for the offset map; brokers accept 4,096 by default
/// (`offset.metadata.max.bytes`).
const OFFSET_MAP_MAX_LEN: usize = 3_000;
/// How long an assignment waits to read the committed offset maps.
const OFFSET_MAP_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How partitions came to be owned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Assigned by the group: a rebalance.
    FromGroup,
    /// Assigned without a group, when the client starts.
    Static,
    /// Taken back after a seek moved it.
    AfterSeek,
}

/// Pause before re-sending a refused final commit, and how many times to send it.
const FINAL_COMMIT_RETRY: Duration = Duration::from_millis(200);
const FINAL_COMMIT_ATTEMPTS: usize = 5;

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
}

struct PartitionState {
    tp: TopicPartition,
    topic: Arc<str>,
    generation: u64,
    offsets: OffsetTracker,
    queue: async_channel::Sender<Chunk>,
    /// Messages received during this poll round, sent together at its end (and in key order,
    /// keys freed by a report).
    pending: Ready,
    /// Key mode: holds messages whose key is busy.
    keys: Option<KeyGate>,
    revoked: CancellationToken,
    buffered: Buffered,
    /// Over its buffer bounds: paused until back under them (see [`Backpressure`]).
    over_bounds: bool,
    /// The offset after the last message taken from librdkafka: where fetching resumes
    /// after a pause (see [`pause`]).
    next_fetch: Option<i64>,
    /// Paused with librdkafka's fetch position moved to `next_fetch`: what it still hands
    /// out of the partition is fetched again after the resume, and can be dropped.
    refetch_on_resume: bool,
    /// Messages waiting to be retried, in the ordered modes: paused while any do.
    retrying: u32,
    /// Stopped at a record the handler gave up on, with no dead-letter topic: paused until
    /// released (see [`StuckPartition`](crate::StuckPartition)).
    stuck: bool,
    /// Whether the consumer has the partition paused now, for any of the reasons.
    paused: bool,
    /// The watermark and the count of finished offsets above it last sent for commit.
    commit_requested: Option<(i64, usize)>,
    /// Offsets the group's offset map records as finished: skipped when they arrive.
    finished_before: BTreeSet<i64>,
    /// The group's committed offset (next to consume) as last known: acknowledged to us, or
    /// as librdkafka read it at assignment.
    committed: Option<i64>,
    /// The log start and end (low and high watermarks) librdkafka last saw, from its
    /// statistics.
    log_start: Option<i64>,
    log_end: Option<i64>,
    metrics: Option<Arc<TopicMetrics>>,
}

impl PartitionState {
    /// Sends the messages waiting to be handed to the lanes, if any.
    fn send_pending(&mut self) {
        if !self.pending.is_empty() {
            // The queue stays open while the partition is owned: a send cannot fail here.
            let (messages, runs) = self.pending.take();
            let _ = self.queue.try_send(Chunk::new(messages, runs));
        }
    }
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
        }
    }

    /// Commits nothing and reads no committed offset maps: a reader from the beginning, with
    /// no group. Call it before any partition is taken.
    pub fn without_commits(&mut self) {
        self.commits_enabled = false;
    }

    /// Starts tracking whether every partition in `targets` is handled up to its log end (see
    /// [`CatchUp`]).
    pub fn catch_up(&mut self, targets: Targets) {
        self.catch_up = Some(targets);
        self.publish_catch_up();
    }

    /// Drops from the catch-up targets the partitions handled up to their log ends, and
    /// reports it once every one is. Cheap when nothing is tracked; while catching up it asks
    /// librdkafka for positions only when a partition has nothing unfinished and its watermark
    /// alone does not settle it (see [`catch_up::caught_up`](super::catch_up::caught_up)).
    pub fn check_catch_up<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let Some(mut targets) = self.catch_up.take() else {
            return;
        };
        let seen_here = |tp: &TopicPartition| -> Seen {
            let Some(p) = self
                .slot_of(&tp.topic, tp.partition)
                .and_then(|i| self.slots[i].as_ref())
            else {
                return Seen::default();
            };
            Seen {
                watermark: p.offsets.watermark(),
                unfinished: p.offsets.unfinished(),
                position: None,
            }
        };
        let needs_position = targets.behind().any(|(tp, end)| {
            let seen = seen_here(tp);
            seen.unfinished == 0 && seen.watermark.is_none_or(|w| w < end)
        });
        let positions = if needs_position {
            match consumer.position() {
                Ok(list) => read_list(&list)
                    .into_iter()
                    .map(|e| (TopicPartition::new(e.topic, e.partition), e.next))
                    .collect(),
                Err(e) => {
                    debug!(error = %e, "no positions to judge the catch-up by");
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        let changed = targets.update(|tp| Seen {
            position: positions.get(tp).copied(),
            ..seen_here(tp)
        });
        self.catch_up = Some(targets);
        if changed {
            self.publish_catch_up();
        }
    }

    /// Publishes the catch-up progress; once every partition is caught up, says so and stops
    /// tracking.
    fn publish_catch_up(&mut self) {
        let Some(targets) = &self.catch_up else {
            return;
        };
        if targets.is_done() {
            self.catch_up = None;
            info!("caught up: every partition handled up to the log end seen at start");
            self.status.catch_up(CatchUp::CaughtUp);
            return;
        }
        let progress = targets.progress(|tp| {
            self.slot_of(&tp.topic, tp.partition)
                .and_then(|i| self.slots[i].as_ref())
                .and_then(|p| p.offsets.watermark())
        });
        self.status.catch_up(CatchUp::CatchingUp(progress));
    }

    /// Takes ownership of partitions the group assigned and starts their lanes.
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        list: &TopicPartitionList,
    ) {
        self.take(consumer, list, Taken::FromGroup);
    }

    /// Takes ownership of partitions assigned without a group (a static assignment).
    pub fn assign_static<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        list: &TopicPartitionList,
    ) {
        self.take(consumer, list, Taken::Static);
    }

    /// Moves an owned partition to `to` and returns the offset it now starts from. Work of the
    /// old position is abandoned (a handler still running finishes, unreported), the new
    /// position is committed, and the partition starts over there with a fresh tracker (and
    /// no offset map: a seek back means to handle those records again).
    pub fn seek<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tp: &TopicPartition,
        to: SeekTo,
    ) -> Result<i64, Error> {
        let i = self
            .slot_of(&tp.topic, tp.partition)
            .ok_or_else(|| Error::NotAssigned(tp.to_string()))?;
        let offset = seek::resolve(consumer, tp, to)?;
        self.release(&[i], false, false);
        // A commit in flight may carry the old position: let it land first.
        let deadline = Instant::now() + self.routing.drain_timeout;
        while self.commit_in_flight.is_some() && self.wait_event(deadline) {}
        if self.commits_enabled {
            let entry = seek::move_to(consumer, tp, offset)?;
            self.status.committed(std::slice::from_ref(&entry));
        } else {
            seek::seek_only(consumer, tp, offset)?;
        }
        self.take(
            consumer,
            &partitions([(tp.topic.as_str(), tp.partition)]),
            Taken::AfterSeek,
        );
        info!(topic = %tp.topic, partition = tp.partition, offset, "partition moved");
        Ok(offset)
    }

    /// Takes ownership of `list`, as `how` says it came.
    fn take<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        list: &TopicPartitionList,
        how: Taken,
    ) {
        let mut added = Vec::new();
        for e in list.elements() {
            if self.slot_of(e.topic(), e.partition()).is_some() {
                continue;
            }
            self.generation += 1;
            let index = match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            let slot = Slot {
                index,
                generation: self.generation,
            };
            let topic = self.index.insert(e.topic(), e.partition(), index);
            let revoked = CancellationToken::new();
            let (queue, chunks) = async_channel::unbounded();
            let lanes = self.routing.ordering.workers(self.routing.width);
            let work = LaneQueue {
                chunks,
                share: (lanes > 1).then(|| queue.downgrade()),
            };
            for _ in 0..lanes {
                (self.spawn_lane)(slot, work.clone(), revoked.clone(), self.reports.clone());
            }
            let tp = TopicPartition::new(e.topic(), e.partition());
            self.slots[index] = Some(PartitionState {
                tp: tp.clone(),
                topic,
                generation: self.generation,
                offsets: OffsetTracker::new(),
                pending: Ready::default(),
                keys: (self.routing.ordering == Ordering::Key).then(KeyGate::default),
                queue,
                revoked,
                buffered: Buffered::default(),
                over_bounds: false,
                next_fetch: None,
                refetch_on_resume: false,
                retrying: 0,
                stuck: false,
                paused: false,
                commit_requested: None,
                finished_before: BTreeSet::new(),
                committed: None,
                log_start: None,
                log_end: None,
                metrics: self.status.metrics().map(|m| m.topic(e.topic())),
            });
            added.push(tp);
        }
        // After a seek the old position's offset map no longer applies.
        if how != Taken::AfterSeek
            && self.commits_enabled
            && self.routing.ordering != Ordering::Partition
            && !added.is_empty()
        {
            self.load_offset_maps(consumer, &added);
        }
        // A partition paused before an earlier revoke may come back still paused.
        if let Err(e) = consumer.resume(list) {
            warn!(error = %e, "could not resume newly assigned partitions");
        }
        info!(partitions = ?added, "partitions assigned");
        self.status.assigned(added, how == Taken::FromGroup);
    }

    /// Reads the offset maps committed with the group, so that work finished out of order
    /// before a restart or rebalance is not handled again. Without them (a failed look-up,
    /// another tool's metadata) everything above the committed offset is simply handled again.
    fn load_offset_maps<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        added: &[TopicPartition],
    ) {
        let list = partitions(added.iter().map(|tp| (tp.topic.as_str(), tp.partition)));
        let committed = match consumer.committed_offsets(list, OFFSET_MAP_LOOKUP_TIMEOUT) {
            Ok(list) => read_list(&list),
            Err(e) => {
                warn!(error = %e, "could not read committed offset maps; finished work may be handled again");
                return;
            }
        };
        for e in committed {
            let done = offset_map::decode(e.next, &e.metadata);
            if let Some(i) = self
                .slot_of(&e.topic, e.partition)
                .filter(|_| !done.is_empty())
            {
                debug!(topic = %e.topic, partition = e.partition, finished = done.len(), "offset map loaded");
                self.slots[i]
                    .as_mut()
                    .expect("indexed slots exist")
                    .finished_before
                    .extend(done);
            }
        }
    }

    /// Gives up revoked partitions: stops their lanes, waits (bounded) for work in flight,
    /// commits what finished, and forgets them. When the assignment was lost (the group moved
    /// on without us) nothing is committed: the new owner may already be processing.
    pub fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        list: &TopicPartitionList,
    ) {
        let revoked: Vec<usize> = list
            .elements()
            .iter()
            .filter_map(|e| self.slot_of(e.topic(), e.partition()))
            .collect();
        self.release(&revoked, !consumer.assignment_lost(), true);
    }

    /// Gives up every partition: the graceful part of shutdown.
    pub fn release_all<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let all: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].is_some())
            .collect();
        let list = partitions(
            self.slots
                .iter()
                .flatten()
                .map(|p| (p.tp.topic.as_str(), p.tp.partition)),
        );
        // Stop fetching while in-flight work drains.
        let _ = consumer.pause(&list);
        self.release(&all, true, false);
    }

    /// Marks the consumer as crashed: from now on partitions are dropped without draining or
    /// committing.
    pub fn abort(&mut self) {
        self.aborted = true;
        for p in self.slots.iter().flatten() {
            p.revoked.cancel();
        }
    }

    /// Gives up the partitions in `which`, committing what finished if `commit`; `rebalance`
    /// says the group revoked them.
    fn release(&mut self, which: &[usize], commit: bool, rebalance: bool) {
        for i in which {
            if let Some(p) = self.slots[*i].as_mut() {
                p.revoked.cancel();
                // Closing the queue lets each lane report its queued messages as abandoned.
                p.queue.close();
                // Messages not yet handed to a lane are dropped here: they will not report.
                let held = p.keys.as_mut().map(|k| k.drain().collect::<Vec<_>>());
                for message in p.pending.drain().chain(held.into_iter().flatten()) {
                    self.backpressure.release(&mut p.buffered, message.size());
                }
            }
        }
        if !self.aborted && commit {
            let deadline = Instant::now() + self.routing.drain_timeout;
            while which.iter().any(|i| {
                self.slots[*i]
                    .as_ref()
                    .is_some_and(|p| p.buffered.messages > 0)
            }) {
                if !self.wait_event(deadline) {
                    warn!(timeout = ?self.routing.drain_timeout,
                          "in-flight work of released partitions did not finish in time; it will be re-delivered");
                    break;
                }
            }
            self.commit_and_wait(which, Instant::now() + self.routing.drain_timeout);
        }
        let mut removed = Vec::new();
        for i in which {
            if let Some(p) = self.slots[*i].take() {
                // Work still buffered is abandoned: it leaves the buffer accounting now.
                self.backpressure.forget(p.buffered);
                self.index.remove(&p.tp.topic, p.tp.partition);
                removed.push(p.tp);
            }
        }
        if !removed.is_empty() {
            info!(partitions = ?removed, committed = commit && !self.aborted, "partitions released");
        }
        self.status.revoked(&removed, rebalance);
    }

    /// Routes one fetched message to its lane. Messages of partitions this consumer does not
    /// own, or already received, are dropped here: they are neither tracked nor committed.
    pub fn dispatch<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, m: &impl Record) {
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
    pub fn drain_events<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
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
    fn update_pauses<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
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

    /// Asks the committer to commit the watermark of every partition (or of `only`) that
    /// moved since its last request. Does nothing while an earlier request is in flight.
    pub fn request_commit(&mut self, only: Option<&[usize]>) -> Option<u64> {
        if self.aborted || !self.commits_enabled || self.commit_in_flight.is_some() {
            return None;
        }
        let mut offsets = Vec::new();
        for (i, p) in self.slots.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let Some(w) = p.offsets.watermark() else {
                continue;
            };
            let above = p.offsets.finished_above_watermark().count();
            if p.commit_requested != Some((w, above)) {
                p.commit_requested = Some((w, above));
                offsets.push(CommitEntry {
                    topic: p.tp.topic.clone(),
                    partition: p.tp.partition,
                    next: w,
                    metadata: if above == 0 {
                        String::new()
                    } else {
                        offset_map::encode(
                            w,
                            p.offsets.finished_above_watermark(),
                            OFFSET_MAP_MAX_LEN,
                        )
                    },
                });
            }
        }
        if offsets.is_empty() {
            return None;
        }
        self.next_commit_id += 1;
        let id = self.next_commit_id;
        debug!(id, ?offsets, "commit requested");
        self.commits
            .as_ref()?
            .send(CommitRequest { id, offsets })
            .ok()?;
        self.commit_in_flight = Some(id);
        Some(id)
    }

    /// Commits the watermarks of `which` and waits for the result until `deadline`.
    fn commit_and_wait(&mut self, which: &[usize], deadline: Instant) {
        // An earlier request lands first, so a partition's commits never go backwards.
        while self.commit_in_flight.is_some() {
            if !self.wait_event(deadline) {
                return;
            }
        }
        // A refused commit (e.g. mid-rebalance) clears its request, so asking again resends it;
        // nothing left to request means every offset is acknowledged.
        for _ in 0..FINAL_COMMIT_ATTEMPTS {
            let Some(id) = self.request_commit(Some(which)) else {
                return;
            };
            while self.commit_in_flight == Some(id) {
                if !self.wait_event(deadline) {
                    warn!(
                        "final commit did not complete in time; uncommitted work will be re-delivered"
                    );
                    return;
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            let failed = which.iter().any(|i| {
                self.slots[*i].as_ref().is_some_and(|p| {
                    p.commit_requested.is_none() && p.offsets.watermark().is_some()
                })
            });
            if !failed {
                return;
            }
            // Back off before asking again, still applying any late lane reports.
            self.wait_event(deadline.min(Instant::now() + FINAL_COMMIT_RETRY));
        }
        warn!("final commit refused repeatedly; uncommitted work will be re-delivered");
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

    fn commit_result(
        &mut self,
        id: u64,
        offsets: Vec<CommitEntry>,
        result: KafkaResult<()>,
        latency: Duration,
    ) {
        if self.commit_in_flight == Some(id) {
            self.commit_in_flight = None;
        }
        if let Some(m) = self.status.metrics() {
            m.commit(result.is_ok(), latency);
        }
        match result {
            Ok(()) => {
                debug!(id, ?latency, "committed");
                for e in &offsets {
                    if let Some(i) = self.slot_of(&e.topic, e.partition) {
                        self.slots[i]
                            .as_mut()
                            .expect("indexed slots exist")
                            .committed = Some(e.next);
                    }
                }
                self.status.committed(&offsets);
            }
            Err(e) => {
                warn!(error = %e, ?offsets, "commit failed; will retry");
                for e in offsets {
                    if let Some(i) = self.slot_of(&e.topic, e.partition) {
                        let p = self.slots[i].as_mut().expect("indexed slots exist");
                        if p.commit_requested.is_some_and(|(w, _)| w == e.next) {
                            p.commit_requested = None;
                        }
                    }
                }
            }
        }
    }

    /// Whether the poll loop should take no new messages for now (see [`BufferLimits`]).
    pub fn should_hold(&self) -> bool {
        self.backpressure.should_hold()
    }

    /// Waits up to `timeout` for lane reports and applies them.
    pub fn wait_events<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        timeout: Duration,
    ) {
        if self.wait_event(Instant::now() + timeout) {
            self.drain_events(consumer);
        }
    }

    /// Takes the log ends (and, until this consumer commits, the committed offsets) of owned
    /// partitions from librdkafka's statistics.
    pub fn statistics(&mut self, stats: &Statistics) {
        for p in self.slots.iter_mut().flatten() {
            let Some(s) = stats
                .topics
                .get(&p.tp.topic)
                .and_then(|t| t.partitions.get(&p.tp.partition))
            else {
                continue;
            };
            if s.hi_offset >= 0 {
                p.log_end = Some(s.hi_offset);
            }
            if s.lo_offset >= 0 {
                p.log_start = Some(s.lo_offset);
            }
            if p.committed.is_none() && s.committed_offset >= 0 {
                p.committed = Some(s.committed_offset);
            }
        }
    }

    /// Publishes buffer, pause, lag and catch-up figures to the status. A partition the group
    /// never committed lags by its whole log; a reader without a group lags from what it has
    /// handled.
    pub fn publish_figures(&mut self) {
        self.publish_catch_up();
        let mut lag = BTreeMap::new();
        for p in self.slots.iter().flatten() {
            let done = match self.commits_enabled {
                true => p.committed,
                false => p.offsets.watermark(),
            };
            if let (Some(end), Some(committed)) = (p.log_end, done.or(p.log_start)) {
                lag.insert(p.tp.clone(), (end - committed).max(0));
            }
        }
        self.status.figures(Figures {
            paused: self.slots.iter().flatten().filter(|p| p.paused).count(),
            lag,
            buffered: self.backpressure.total(),
            peak: self.backpressure.peak(),
            skipped_as_finished: self.skipped_as_finished,
            dead_lettered: self.dead_lettered,
            retried: self.retried,
        });
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

/// Pauses or resumes `tp`. A pause also moves librdkafka's fetch position to `next_fetch`
/// (where the runtime stopped taking messages): librdkafka would resume from its own record of
/// what the application took, which a batch take moves past everything in the batch, including
/// messages the runtime then handed back and errors that carry no message.
fn pause<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tp: &TopicPartition,
    pause: bool,
    why: &str,
    next_fetch: Option<i64>,
) {
    let list = partitions([(tp.topic.as_str(), tp.partition)]);
    let result = if pause {
        consumer.pause(&list).and_then(|()| match next_fetch {
            // Queued behind the pause, without waiting; it can only fail while the partition
            // is being revoked, when what it holds is dropped anyway.
            Some(offset) => consumer.seek(
                &tp.topic,
                tp.partition,
                rdkafka::Offset::Offset(offset),
                Duration::ZERO,
            ),
            None => Ok(()),
        })
    } else {
        consumer.resume(&list)
    };
    match result {
        Ok(()) => debug!(topic = %tp.topic, partition = tp.partition, pause, why, "pause state"),
        Err(e) => {
            warn!(topic = %tp.topic, partition = tp.partition, pause, error = %e, "could not change pause state")
        }
    }
}

/// Finds the slot of a topic and partition on every message, so it avoids hashing: consumers
/// read few topics, and partition numbers are small and dense.
#[derive(Default)]
struct PartitionIndex {
    topics: Vec<(Arc<str>, Vec<Option<usize>>)>,
}

impl PartitionIndex {
    fn get(&self, topic: &str, partition: i32) -> Option<usize> {
        self.get_bytes(topic.as_bytes(), partition)
    }

    fn get_bytes(&self, topic: &[u8], partition: i32) -> Option<usize> {
        let (_, slots) = self.topics.iter().find(|(t, _)| t.as_bytes() == topic)?;
        slots
            .get(usize::try_from(partition).ok()?)
            .copied()
            .flatten()
    }

    /// Records `slot` for `topic`/`partition`; returns the shared name of the topic.
    fn insert(&mut self, topic: &str, partition: i32, slot: usize) -> Arc<str> {
        let i = match self.topics.iter().position(|(t, _)| &**t == topic) {
            Some(i) => i,
            None => {
                self.topics.push((Arc::from(topic), Vec::new()));
                self.topics.len() - 1
            }
        };
        let (name, slots) = &mut self.topics[i];
        let p = usize::try_from(partition).unwrap_or_default();
        if slots.len() <= p {
            slots.resize(p + 1, None);
        }
        slots[p] = Some(slot);
        name.clone()
    }

    fn remove(&mut self, topic: &str, partition: i32) {
        if let Some((_, slots)) = self.topics.iter_mut().find(|(t, _)| &**t == topic) {
            if let Some(s) = usize::try_from(partition)
                .ok()
                .and_then(|p| slots.get_mut(p))
            {
                *s = None;
            }
        }
    }
}
