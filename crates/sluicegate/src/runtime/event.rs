//! What lanes and the committer tell the poll loop.

use std::time::Duration;

use rdkafka::error::KafkaResult;

use crate::commit::CommitEntry;
use crate::handler::Outcome;
use crate::status::StuckPartition;
use crate::Message;

/// Identifies one assignment of one partition. The generation changes on every assignment, so
/// a late report about a partition that was revoked (and perhaps assigned again) is recognized
/// and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub index: usize,
    pub generation: u64,
}

/// One message that left its lane: finished with `outcome`, or abandoned (`None`) because its
/// partition was revoked or the consumer is stopping; abandoned work is re-delivered later.
#[derive(Debug)]
pub(crate) struct Left {
    /// The message itself, handed back so the poll thread can free its key and its memory.
    pub message: Message,
    pub outcome: Option<Outcome>,
}

/// What the lanes and the committer tell the poll loop.
#[derive(Debug)]
pub(crate) enum Event {
    /// Messages of the partition in `slot` left their lane.
    Left { slot: Slot, left: Vec<Left> },
    /// A message of the partition in `slot` began (`true`) or ended (`false`) waiting to be
    /// retried.
    Retrying { slot: Slot, waiting: bool },
    /// The handler gave up on a message of the partition in `slot` and no dead-letter topic
    /// takes it: the partition stops at its offset.
    Stuck { slot: Slot, stuck: StuckPartition },
    /// The committer finished commit request `id`.
    Committed {
        id: u64,
        offsets: Vec<CommitEntry>,
        result: KafkaResult<()>,
        latency: Duration,
    },
}
