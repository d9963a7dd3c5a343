//! Publishing the [`ConsumerStatus`] (what a running consumer owns and has committed) on
//! change, and watching it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Semaphore};

use crate::commit::CommitEntry;
use crate::dispatch::Buffered;
use crate::health::Health;
use crate::metrics::ConsumerMetrics;
use crate::policy::CircuitState;
use crate::status::{CatchUp, ConsumerStatus, StuckPartition, TopicPartition};
use crate::Error;

/// The figures that change with every message, published once per commit interval.
#[derive(Default)]
pub(crate) struct Figures {
    pub buffered: Buffered,
    pub paused: usize,
    pub lag: BTreeMap<TopicPartition, i64>,
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
pub struct StatusWatch {
    status: watch::Receiver<ConsumerStatus>,
    last_poll: Arc<AtomicU64>,
}

impl StatusWatch {
    /// Whether the consumer is alive and ready, and why (what `/health/*` serves).
    pub fn health(&self) -> Health {
        Health::of(&self.current(), self.last_poll(), SystemTime::now())
    }

    /// When the poll loop last turned.
    pub fn last_poll(&self) -> Option<SystemTime> {
        read_time(&self.last_poll)
    }

    /// The status now.
    pub fn current(&self) -> ConsumerStatus {
        self.status.borrow().clone()
    }

    /// Waits for the next change and returns the status after it. Fails with
    /// [`Error::ConsumerGone`] once the consumer is dropped.
    pub async fn changed(&mut self) -> Result<ConsumerStatus, Error> {
        self.status
            .changed()
            .await
            .map_err(|_| Error::ConsumerGone)?;
        Ok(self.status.borrow_and_update().clone())
    }

    /// Waits until a reader from the beginning ([`ConsumerBuilder::read_from_beginning`](crate::ConsumerBuilder::read_from_beginning))
    /// has handled every assigned partition up
    /// to the log end it saw at start (see [`CatchUp`]): when it returns, the handler has
    /// finished every record below those ends. Returns at once when already caught up (an
    /// empty topic is caught up from the start).
    ///
    /// Fails with [`Error::CatchUpUntracked`] for a consumer that does not read from the
    /// beginning, and with [`Error::ConsumerGone`] when the consumer stops first.
    pub async fn caught_up(&self) -> Result<(), Error> {
        let mut watch = self.clone();
        let s = watch
            .wait_for(|s| s.stopped || !matches!(s.catch_up, CatchUp::CatchingUp(_)))
            .await?;
        match s.catch_up {
            CatchUp::CaughtUp => Ok(()),
            CatchUp::Untracked => Err(Error::CatchUpUntracked),
            CatchUp::CatchingUp(_) => Err(Error::ConsumerGone),
        }
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
        match self.status.wait_for(|s| done(s)).await {
            Ok(s) => Ok(s.clone()),
            Err(_) => Err(Error::ConsumerGone),
        }
    }
}

/// The poll loop's side of the status channel, and of the consumer's metrics.
#[derive(Clone)]
pub(crate) struct StatusPublisher {
    status: Arc<watch::Sender<ConsumerStatus>>,
    last_poll: Arc<AtomicU64>,
    metrics: Option<ConsumerMetrics>,
    /// The handlers' permits and how many there are: the in-flight gauge is sampled from
    /// them, rather than counted on every call.
    in_flight: Option<(Arc<Semaphore>, usize)>,
}

impl StatusPublisher {
    pub fn new(metrics: Option<ConsumerMetrics>) -> (Self, StatusWatch) {
        let (tx, rx) = watch::channel(ConsumerStatus::default());
        let last_poll = Arc::new(AtomicU64::new(0));
        let watch = StatusWatch {
            status: rx,
            last_poll: last_poll.clone(),
        };
        let publisher = StatusPublisher {
            status: Arc::new(tx),
            last_poll,
            metrics,
            in_flight: None,
        };
        (publisher, watch)
    }

    /// Samples the in-flight gauge from `permits`, of which there are `max`.
    pub fn with_in_flight(mut self, permits: Arc<Semaphore>, max: usize) -> Self {
        self.in_flight = Some((permits, max));
        self
    }

    pub fn metrics(&self) -> Option<&ConsumerMetrics> {
        self.metrics.as_ref()
    }

    /// The poll loop turned.
    pub fn heartbeat(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_poll
            .store(now.as_millis() as u64, Ordering::Relaxed);
    }

    /// Partitions were assigned: by the group (`rebalance`), or again after a seek.
    pub fn assigned(&self, added: Vec<TopicPartition>, rebalance: bool) {
        self.status.send_modify(|s| {
            for tp in &added {
                // Taken afresh: consumed again from its committed offset.
                s.stuck.remove(tp);
            }
            s.assigned.extend(added);
            s.joined = true;
            s.client_lost = None;
            if rebalance {
                s.rebalances += 1;
            }
        });
        if let Some(m) = self.metrics.as_ref().filter(|_| rebalance) {
            m.rebalance(true);
        }
    }

    /// Partitions were given up: revoked by the group (`rebalance`), for a seek, or at
    /// shutdown.
    pub fn revoked(&self, removed: &[TopicPartition], rebalance: bool) {
        if removed.is_empty() {
            return;
        }
        self.status.send_modify(|s| {
            for tp in removed {
                s.assigned.remove(tp);
                s.lag.remove(tp);
                s.stuck.remove(tp);
            }
            s.joined = !s.assigned.is_empty();
            if rebalance {
                s.rebalances += 1;
            }
        });
        if let Some(m) = &self.metrics {
            for tp in removed {
                m.lag(&tp.topic, tp.partition, None);
            }
            if rebalance {
                m.rebalance(false);
            }
        }
        self.publish_stuck();
    }

    /// `tp` stopped at a record the handler gave up on (see [`StuckPartition`]); a partition
    /// already stopped keeps its lowest such record.
    pub fn stuck(&self, tp: &TopicPartition, stuck: StuckPartition) {
        self.status.send_if_modified(|s| match s.stuck.get(tp) {
            Some(known) if known.offset <= stuck.offset => false,
            _ => {
                s.stuck.insert(tp.clone(), stuck);
                true
            }
        });
        self.publish_stuck();
    }

    /// Sets the stuck-partition gauge and readiness from the status now.
    fn publish_stuck(&self) {
        if let Some(m) = &self.metrics {
            m.stuck_partitions(self.status.borrow().stuck.len());
        }
        self.publish_readiness();
    }

    pub fn committed(&self, offsets: &[CommitEntry]) {
        self.status.send_modify(|s| {
            for e in offsets {
                s.committed
                    .insert(TopicPartition::new(&e.topic, e.partition), e.next);
            }
        });
    }

    /// Publishes the figures that change with every message, once per commit interval: the
    /// gauges first, so that whoever the status change wakes reads gauges as new as the status
    /// (a scrape right after seeing a lag in the status shows that lag).
    pub fn figures(&self, f: Figures) {
        if let Some(m) = &self.metrics {
            m.buffered(f.buffered.messages);
            if let Some((permits, max)) = &self.in_flight {
                m.in_flight(max.saturating_sub(permits.available_permits()));
            }
            m.partitions(self.status.borrow().assigned.len(), f.paused);
            for (tp, lag) in &f.lag {
                m.lag(&tp.topic, tp.partition, Some(*lag));
            }
        }
        self.status.send_if_modified(|s| {
            let before = s.clone();
            s.buffered_messages = f.buffered.messages;
            s.buffered_bytes = f.buffered.bytes;
            s.peak_buffered_messages = f.peak.messages;
            s.peak_buffered_bytes = f.peak.bytes;
            s.skipped_as_finished = f.skipped_as_finished;
            s.dead_lettered = f.dead_lettered;
            s.retried = f.retried;
            s.lag = f.lag;
            *s != before
        });
        self.publish_readiness();
    }

    /// Sets the readiness gauge from the status now.
    fn publish_readiness(&self) {
        if let Some(m) = &self.metrics {
            let last_poll = read_time(&self.last_poll);
            let health = Health::of(&self.status.borrow(), last_poll, SystemTime::now());
            m.ready(health.ready);
            if let Some(t) = last_poll {
                m.last_poll(t);
            }
        }
    }

    /// A transaction ended: committed with `offsets`, or aborted.
    pub fn transaction(&self, committed: Option<&[CommitEntry]>) {
        self.status.send_modify(|s| match committed {
            Some(offsets) => {
                s.transactions_committed += 1;
                for e in offsets {
                    s.committed
                        .insert(TopicPartition::new(&e.topic, e.partition), e.next);
                }
            }
            None => s.transactions_aborted += 1,
        });
        if let Some(m) = &self.metrics {
            m.transaction(committed.is_some());
        }
    }

    pub fn circuit(&self, state: CircuitState) {
        self.status.send_modify(|s| s.circuit = state);
        if let Some(m) = &self.metrics {
            m.circuit(state);
        }
        self.publish_readiness();
    }

    /// librdkafka found no broker reachable (`false`), or one answers again.
    pub fn brokers_reachable(&self, reachable: bool) {
        self.status.send_if_modified(|s| {
            std::mem::replace(&mut s.brokers_unreachable, !reachable) == reachable
        });
        self.publish_readiness();
    }

    /// The Kafka client was lost for `reason`, and its partitions with it (their uncommitted
    /// work is abandoned); a new client is created if `restart`.
    pub fn client_lost(&self, reason: String, restart: bool) {
        let owned: Vec<TopicPartition> = self.status.borrow().assigned.iter().cloned().collect();
        self.revoked(&owned, false);
        self.status.send_modify(|s| {
            s.client_lost = Some(reason);
            s.joined = false;
            if restart {
                s.client_restarts += 1;
            }
        });
        if let Some(m) = self.metrics.as_ref().filter(|_| restart) {
            m.client_restarted();
        }
        self.publish_readiness();
    }

    /// Another member using this consumer's instance id fenced it or had it refused.
    pub fn fenced(&self) {
        self.status.send_modify(|s| s.fenced += 1);
    }

    /// A reader's progress towards the log ends seen at start.
    pub fn catch_up(&self, catch_up: CatchUp) {
        // The gauge first, so that whoever the status change wakes reads it as new.
        if let Some(m) = &self.metrics {
            m.catch_up_remaining(catch_up.remaining());
        }
        let changed = self
            .status
            .send_if_modified(|s| std::mem::replace(&mut s.catch_up, catch_up.clone()) != catch_up);
        if changed {
            self.publish_readiness();
        }
    }

    /// Whether this consumer has caught up (a reader from the beginning, once).
    pub fn is_caught_up(&self) -> bool {
        self.status.borrow().catch_up.is_caught_up()
    }

    pub fn stopped(&self) {
        self.status.send_modify(|s| s.stopped = true);
        self.publish_readiness();
    }
}

/// A time stored as milliseconds since the epoch, 0 for none.
fn read_time(at: &AtomicU64) -> Option<SystemTime> {
    match at.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
    }
}
