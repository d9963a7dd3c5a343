//! What a running consumer reports about itself: [`ConsumerStatus`] (what it owns and has
//! committed), the partitions it is stuck on and how far a reader from the beginning has come.
//! Plain data, published by the runtime and read by the health checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use crate::handler::ErrorKind;
use crate::policy::CircuitState;

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
    /// In the group: an assignment arrived (possibly empty, when the group has more members
    /// than partitions) and was not revoked since.
    pub joined: bool,
    /// No broker has been reachable since librdkafka said so (cleared once one answers).
    pub brokers_unreachable: bool,
    /// Per owned partition, messages between the committed offset and the log end (the high
    /// watermark librdkafka last saw), as of the last commit interval. Partitions whose log
    /// end is not known yet are missing.
    pub lag: BTreeMap<TopicPartition, i64>,
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
    /// Why the last Kafka client was lost (a fatal error, no broker reachable for too long),
    /// from then until a new client is assigned partitions: while it is set the consumer owns
    /// nothing, and is not ready.
    pub client_lost: Option<String>,
    /// How many times another member using this consumer's `group.instance.id` fenced it
    /// (classic group protocol) or had its client refused (consumer group protocol): two
    /// workers share an instance id. See
    /// [`Reconnect::max_fenced`](crate::policy::Reconnect::max_fenced).
    pub fenced: u64,
    /// Exactly-once mode: transactions committed (each commits its outputs and its inputs'
    /// offsets together).
    pub transactions_committed: u64,
    /// Exactly-once mode: transactions that failed to commit and were aborted (their outputs,
    /// which `read_committed` readers never see, are written by the next one). A handler
    /// failure aborts none: its outputs are dropped before any transaction.
    pub transactions_aborted: u64,
    /// Owned partitions stopped at a record the handler gave up on, with no dead-letter topic
    /// to set it aside (see [`StuckPartition`]). Each stays stopped until it is released
    /// (revoked, or moved with a seek) or the consumer restarts; the consumer is not ready
    /// meanwhile.
    pub stuck: BTreeMap<TopicPartition, StuckPartition>,
    /// A reader from the beginning ([`ConsumerBuilder::read_from_beginning`](crate::ConsumerBuilder::read_from_beginning)):
    /// how far it is from the log ends it saw
    /// at start; [`CatchUp::Untracked`] for other consumers. Progress is refreshed once per
    /// commit interval, and at once when the last partition catches up.
    pub catch_up: CatchUp,
}

/// A partition stopped at a record the handler gave up on (a decode or permanent error, or
/// retries exhausted) when no dead-letter topic is configured.
///
/// The record is neither skipped nor dropped: its offset is never committed, so the
/// partition's commits stop below it, the partition is paused, and the record is handled
/// again when the partition is next consumed (after a restart, a rebalance, or a seek back
/// to it). In the partition and key modes, and in exactly-once mode, nothing after it in its
/// partition is handled meanwhile; in the unordered mode, records already received go on.
/// The log says how to configure a dead-letter topic; `/health/ready` and
/// `sluicegate_partitions_stuck` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckPartition {
    /// The record's offset. (With several stuck records, the lowest.)
    pub offset: i64,
    /// What kind of failure stopped it.
    pub kind: ErrorKind,
    /// The handler's error, as it displays.
    pub error: String,
    /// The handler calls made for the record.
    pub attempts: u32,
    /// When the partition stopped.
    pub since: SystemTime,
}

impl fmt::Display for StuckPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "stopped at offset {} after {} attempt{s}: {}",
            self.offset, self.attempts, self.error
        )
    }
}

/// How far a reader is from the log ends it saw at start: [`ConsumerStatus::catch_up`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Not tracked: the consumer does not read from the beginning (it joins a group, or has a
    /// static assignment resuming from committed offsets).
    #[default]
    Untracked,
    /// Reading towards the log ends seen at start: the partitions not there yet, each with its
    /// progress. Empty only for the moment before the log ends are known.
    CatchingUp(BTreeMap<TopicPartition, Progress>),
    /// Every assigned partition was handled up to the log end seen at start. It stays so: later
    /// records are handled as they come.
    CaughtUp,
}

impl CatchUp {
    /// Whether every assigned partition was handled up to its log end seen at start.
    pub fn is_caught_up(&self) -> bool {
        matches!(self, CatchUp::CaughtUp)
    }

    /// Offsets still between the handled positions and the log ends (an upper bound on the
    /// records to go: compaction and transaction markers leave offsets without a record).
    pub fn remaining(&self) -> i64 {
        match self {
            CatchUp::CatchingUp(behind) => behind.values().map(Progress::remaining).sum(),
            _ => 0,
        }
    }
}

/// One partition's way to the log end seen at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The next offset not yet handled: every record below it is finished.
    pub position: i64,
    /// The log end seen at start: the high watermark, or the last stable offset with
    /// `isolation.level=read_committed` (librdkafka's default).
    pub end: i64,
}

impl Progress {
    /// Offsets between the position and the end.
    pub fn remaining(&self) -> i64 {
        (self.end - self.position).max(0)
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {} of {}", self.position, self.end)
    }
}
