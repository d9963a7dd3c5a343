//! Taking and giving up partitions: assignment by the group or statically, revocation,
//! seeking, shutdown and abort.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dispatch::{Buffered, KeyGate, Ordering, Ready};
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
use crate::status::TopicPartition;
use crate::{offset_map, Error, OffsetTracker};

use super::super::event::{LaneQueue, Slot};
use super::super::seek::{self, SeekTo};
use super::commits::CommitMark;
use super::{Assignment, PartitionState};

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

impl Assignment {
    /// Takes ownership of partitions the group assigned and starts their lanes.
    pub fn assign<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
    ) {
        self.take(consumer, list, Taken::FromGroup);
    }

    /// Takes ownership of partitions assigned without a group (a static assignment).
    pub fn assign_static<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
    ) {
        self.take(consumer, list, Taken::Static);
    }

    /// Moves an owned partition to `to` and returns the offset it now starts from. Work of the
    /// old position is abandoned (a handler still running finishes, unreported), the new
    /// position is committed, and the partition starts over there with a fresh tracker (and
    /// no offset map: a seek back means to handle those records again).
    pub fn seek<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
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
        self.take(consumer, std::slice::from_ref(tp), Taken::AfterSeek);
        info!(topic = %tp.topic, partition = tp.partition, offset, "partition moved");
        Ok(offset)
    }

    /// Takes ownership of `list`, as `how` says it came.
    fn take<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
        how: Taken,
    ) {
        let mut added = Vec::new();
        for e in list {
            if self.slot_of(&e.topic, e.partition).is_some() {
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
            let topic = self.index.insert(&e.topic, e.partition, index);
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
            let tp = e.clone();
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
                commits: CommitMark::default(),
                outputs: Default::default(),
                finished_before: BTreeSet::new(),
                log_start: None,
                log_end: None,
                metrics: self.status.metrics().map(|m| m.topic(&e.topic)),
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
    fn load_offset_maps<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        added: &[TopicPartition],
    ) {
        let committed = match consumer.committed(added, OFFSET_MAP_LOOKUP_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                warn!(error = %e, "could not read committed offset maps; finished work may be handled again");
                return;
            }
        };
        for (e, next) in committed
            .into_iter()
            .filter_map(|e| e.next.map(|next| (e, next)))
        {
            let done = offset_map::decode(next, &e.metadata);
            if let Some(i) = self
                .slot_of(&e.tp.topic, e.tp.partition)
                .filter(|_| !done.is_empty())
            {
                debug!(topic = %e.tp.topic, partition = e.tp.partition, finished = done.len(), "offset map loaded");
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
    pub fn revoke<C: ConsumerEvents>(
        &mut self,
        consumer: &KafkaConsumer<C>,
        list: &[TopicPartition],
    ) {
        let revoked: Vec<usize> = list
            .iter()
            .filter_map(|e| self.slot_of(&e.topic, e.partition))
            .collect();
        self.release(&revoked, !consumer.assignment_lost(), true);
    }

    /// Gives up every partition: the graceful part of shutdown.
    pub fn release_all<C: ConsumerEvents>(&mut self, consumer: &KafkaConsumer<C>) {
        let all: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].is_some())
            .collect();
        let list: Vec<TopicPartition> = self.slots.iter().flatten().map(|p| p.tp.clone()).collect();
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
}
