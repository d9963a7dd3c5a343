//! [`ConsumerStatus`]: what a running consumer owns and has committed, published on change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::commit::CommitEntry;
use crate::dispatch::Buffered;
use crate::policy::CircuitState;
use crate::Error;

/// A topic and a partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: String,
    /// The partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Names a partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A snapshot of a running consumer, updated on every assignment, revocation and
/// acknowledged commit. Watch it with [`ConsumerHandle::status`](crate::ConsumerHandle::status)
/// to wait for events instead of sleeping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// The partitions this consumer owns now.
    pub assigned: BTreeSet<TopicPartition>,
    /// The last offset (next to consume) the broker acknowledged committing, per partition,
    /// over the consumer's whole life.
    pub committed: BTreeMap<TopicPartition, i64>,
    /// How many assignments and revocations this consumer went through.
    pub rebalances: u64,
    /// `true` once the poll loop has ended.
    pub stopped: bool,
    /// Messages received and not yet finished (queued or being handled), as of the last
    /// commit interval.
    pub buffered_messages: usize,
    /// Bytes of those messages (keys, values and headers).
    pub buffered_bytes: usize,
    /// The most messages ever buffered at once.
    pub peak_buffered_messages: usize,
    /// The most bytes ever buffered at once.
    pub peak_buffered_bytes: usize,
    /// Messages not handled because the offset map committed with the group records them
    /// as finished already (work done out of order before a restart or rebalance).
    pub skipped_as_finished: u64,
    /// Messages written to the dead-letter topic (acknowledged by the broker), as of the last
    /// commit interval.
    pub dead_lettered: u64,
    /// Handler calls beyond the first, over messages finished, as of the last commit interval.
    pub retried: u64,
    /// The circuit breaker's state (always closed without one).
    pub circuit: CircuitState,
    /// How many times the Kafka client was re-created after it lost every broker or hit a
    /// fatal error.
    pub client_restarts: u64,
    /// Exactly-once mode: transactions committed (each commits its outputs and its inputs'
    /// offsets together).
    pub transactions_committed: u64,
    /// Exactly-once mode: transactions aborted (a handler failed, or the commit did), whose
    /// outputs `read_committed` readers never see.
    pub transactions_aborted: u64,
}

/// The figures that change with every message, published once per commit interval.
#[derive(Default)]
pub(crate) struct Figures {
    pub buffered: Buffered,
    pub peak: Buffered,
    pub skipped_as_finished: u64,
    pub dead_lettered: u64,
    pub retried: u64,
}

/// Watches a running consumer's [`ConsumerStatus`]: wait for an event (partitions assigned,
/// an offset committed) instead of sleeping.
///
/// It hands out copies, never a borrow of the shared value, so nothing a caller holds can
/// stall the poll thread that publishes it.
#[derive(Clone, Debug)]
pub struct StatusWatch(watch::Receiver<ConsumerStatus>);

impl StatusWatch {
    /// The status now.
    pub fn current(&self) -> ConsumerStatus {
        self.0.borrow().clone()
    }

    /// Waits for the next change and returns the status after it. Fails with
    /// [`Error::ConsumerGone`] once the consumer is dropped.
    pub async fn changed(&mut self) -> Result<ConsumerStatus, Error> {
        self.0.changed().await.map_err(|_| Error::ConsumerGone)?;
        Ok(self.0.borrow_and_update().clone())
    }

    /// Waits until `done` holds for the status (checked now, and on every change) and returns
    /// that status. Fails with [`Error::ConsumerGone`] if the consumer is dropped first: check
    /// [`ConsumerStatus::stopped`] in `done` to stop waiting when it merely stops.
    ///
    /// ```no_run
    /// # async fn wait(handle: sluicegate::ConsumerHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut status = handle.status();
    /// let s = tokio::time::timeout(
    ///     std::time::Duration::from_secs(30),
    ///     status.wait_for(|s| !s.assigned.is_empty()),
    /// )
    /// .await??;
    /// println!("assigned: {:?}", s.assigned);
    /// # Ok(()) }
    /// ```
    pub async fn wait_for(
        &mut self,
        mut done: impl FnMut(&ConsumerStatus) -> bool,
    ) -> Result<ConsumerStatus, Error> {
        match self.0.wait_for(|s| done(s)).await {
            Ok(s) => Ok(s.clone()),
            Err(_) => Err(Error::ConsumerGone),
        }
    }
}

/// The poll loop's side of the status channel.
#[derive(Clone)]
pub(crate) struct StatusPublisher(Arc<watch::Sender<ConsumerStatus>>);

impl StatusPublisher {
    pub fn new() -> (Self, StatusWatch) {
        let (tx, rx) = watch::channel(ConsumerStatus::default());
        (StatusPublisher(Arc::new(tx)), StatusWatch(rx))
    }

    pub fn assigned(&self, added: Vec<TopicPartition>) {
        self.0.send_modify(|s| {
            s.assigned.extend(added);
            s.rebalances += 1;
        });
    }

    pub fn revoked(&self, removed: &[TopicPartition]) {
        if removed.is_empty() {
            return;
        }
        self.0.send_modify(|s| {
            for tp in removed {
                s.assigned.remove(tp);
            }
            s.rebalances += 1;
        });
    }

    pub fn committed(&self, offsets: &[CommitEntry]) {
        self.0.send_modify(|s| {
            for e in offsets {
                s.committed
                    .insert(TopicPartition::new(&e.topic, e.partition), e.next);
            }
        });
    }

    /// Publishes the figures that change with every message, once per commit interval.
    pub fn figures(&self, f: Figures) {
        self.0.send_if_modified(|s| {
            let before = s.clone();
            s.buffered_messages = f.buffered.messages;
            s.buffered_bytes = f.buffered.bytes;
            s.peak_buffered_messages = f.peak.messages;
            s.peak_buffered_bytes = f.peak.bytes;
            s.skipped_as_finished = f.skipped_as_finished;
            s.dead_lettered = f.dead_lettered;
            s.retried = f.retried;
            *s != before
        });
    }

    /// A transaction ended: committed with `offsets`, or aborted.
    pub fn transaction(&self, committed: Option<&[CommitEntry]>) {
        self.0.send_modify(|s| match committed {
            Some(offsets) => {
                s.transactions_committed += 1;
                for e in offsets {
                    s.committed
                        .insert(TopicPartition::new(&e.topic, e.partition), e.next);
                }
            }
            None => s.transactions_aborted += 1,
        });
    }

    pub fn circuit(&self, state: CircuitState) {
        self.0.send_modify(|s| s.circuit = state);
    }

    pub fn client_restarted(&self) {
        self.0.send_modify(|s| s.client_restarts += 1);
    }

    pub fn stopped(&self) {
        self.0.send_modify(|s| s.stopped = true);
    }
}
