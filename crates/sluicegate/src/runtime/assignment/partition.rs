//! One owned partition's state, and the index that finds a partition's slot by topic and
//! partition on every message.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::dispatch::{Buffered, KeyGate, Ready};
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
use crate::metrics::TopicMetrics;
use crate::status::TopicPartition;
use crate::OffsetTracker;

use super::super::event::Chunk;
use super::commits::CommitMark;
use super::outputs::PendingOutputs;

pub(super) struct PartitionState {
    pub(super) tp: TopicPartition,
    pub(super) topic: Arc<str>,
    pub(super) generation: u64,
    pub(super) offsets: OffsetTracker,
    pub(super) queue: async_channel::Sender<Chunk>,
    /// Messages received during this poll round, sent together at its end (and in key order,
    /// keys freed by a report).
    pub(super) pending: Ready,
    /// Key mode: holds messages whose key is busy.
    pub(super) keys: Option<KeyGate>,
    pub(super) revoked: CancellationToken,
    pub(super) buffered: Buffered,
    /// Over its buffer bounds: paused until back under them (see [`Backpressure`]).
    pub(super) over_bounds: bool,
    /// The offset after the last message taken from librdkafka: where fetching resumes
    /// after a pause (see [`pause`]).
    pub(super) next_fetch: Option<i64>,
    /// Paused with librdkafka's fetch position moved to `next_fetch`: what it still hands
    /// out of the partition is fetched again after the resume, and can be dropped.
    pub(super) refetch_on_resume: bool,
    /// Messages waiting to be retried, in the ordered modes: paused while any do.
    pub(super) retrying: u32,
    /// Stopped at a record the handler gave up on, with no dead-letter topic: paused until
    /// released (see [`StuckPartition`](crate::StuckPartition)).
    pub(super) stuck: bool,
    /// Whether the consumer has the partition paused now, for any of the reasons.
    pub(super) paused: bool,
    /// What was asked of the committer for this partition, and what the group acknowledged.
    pub(super) commits: CommitMark,
    /// Exactly-once mode: outputs of finished messages, waiting for the commit past them.
    pub(super) outputs: PendingOutputs,
    /// Offsets the group's offset map records as finished: skipped when they arrive.
    pub(super) finished_before: BTreeSet<i64>,
    /// The log start and end (low and high watermarks) librdkafka last saw, from its
    /// statistics.
    pub(super) log_start: Option<i64>,
    pub(super) log_end: Option<i64>,
    pub(super) metrics: Option<Arc<TopicMetrics>>,
}

impl PartitionState {
    /// Sends the messages waiting to be handed to the lanes, if any.
    pub(super) fn send_pending(&mut self) {
        if !self.pending.is_empty() {
            // The queue stays open while the partition is owned: a send cannot fail here.
            let (messages, runs) = self.pending.take();
            let _ = self.queue.try_send(Chunk::new(messages, runs));
        }
    }
}

/// Pauses or resumes `tp`. A pause also moves librdkafka's fetch position to `next_fetch`
/// (where the runtime stopped taking messages): librdkafka would resume from its own record of
/// what the application took, which a batch take moves past everything in the batch, including
/// messages the runtime then handed back and errors that carry no message.
pub(super) fn pause<C: ConsumerEvents>(
    consumer: &KafkaConsumer<C>,
    tp: &TopicPartition,
    pause: bool,
    why: &str,
    next_fetch: Option<i64>,
) {
    let list = std::slice::from_ref(tp);
    let result = if pause {
        consumer.pause(list).and_then(|()| match next_fetch {
            // Queued behind the pause, without waiting; it can only fail while the partition
            // is being revoked, when what it holds is dropped anyway.
            Some(offset) => consumer.seek(tp, offset, Duration::ZERO),
            None => Ok(()),
        })
    } else {
        consumer.resume(list)
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
pub(super) struct PartitionIndex {
    pub(super) topics: Vec<(Arc<str>, Vec<Option<usize>>)>,
}

impl PartitionIndex {
    pub(super) fn get(&self, topic: &str, partition: i32) -> Option<usize> {
        self.get_bytes(topic.as_bytes(), partition)
    }

    pub(super) fn get_bytes(&self, topic: &[u8], partition: i32) -> Option<usize> {
        let (_, slots) = self.topics.iter().find(|(t, _)| t.as_bytes() == topic)?;
        slots
            .get(usize::try_from(partition).ok()?)
            .copied()
            .flatten()
    }

    /// Records `slot` for `topic`/`partition`; returns the shared name of the topic.
    pub(super) fn insert(&mut self, topic: &str, partition: i32, slot: usize) -> Arc<str> {
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

    pub(super) fn remove(&mut self, topic: &str, partition: i32) {
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

#[cfg(test)]
mod tests {
    use super::PartitionIndex;

    #[test]
    fn finds_each_partition_of_each_topic_until_removed() {
        let mut index = PartitionIndex::default();
        let name = index.insert("orders", 3, 0);
        assert_eq!(&*name, "orders");
        index.insert("orders", 0, 1);
        index.insert("payments", 3, 2);
        assert_eq!(index.get("orders", 3), Some(0));
        assert_eq!(index.get_bytes(b"orders", 0), Some(1));
        assert_eq!(index.get("payments", 3), Some(2));
        assert_eq!(
            index.get("orders", 1),
            None,
            "a gap below the highest partition"
        );
        assert_eq!(index.get("orders", 9), None, "past the highest partition");
        assert_eq!(index.get("refunds", 0), None, "an unknown topic");
        index.remove("orders", 3);
        assert_eq!(index.get("orders", 3), None);
        assert_eq!(
            index.get("payments", 3),
            Some(2),
            "other topics keep theirs"
        );
    }

    #[test]
    fn a_negative_partition_is_never_found() {
        let index = PartitionIndex::default();
        assert_eq!(index.get("orders", -1), None);
    }

    #[test]
    fn the_topic_name_is_shared_not_copied() {
        let mut index = PartitionIndex::default();
        let first = index.insert("orders", 0, 0);
        let second = index.insert("orders", 1, 1);
        assert!(std::sync::Arc::ptr_eq(&first, &second));
    }
}
