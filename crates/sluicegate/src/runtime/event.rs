//! What lanes and the committer tell the poll loop.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use rdkafka::error::KafkaResult;

use crate::commit::CommitEntry;
use crate::handler::Outcome;
use crate::status::StuckPartition;
use crate::Message;

use super::wakeup::Wakeup;

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
    /// The message itself, handed back so that the poll thread frees its key and its memory:
    /// freed where it was allocated, it costs glibc's allocator least (freed in the lanes,
    /// memory drifts between threads' caches and the poll thread pays for it, ~25% of its
    /// throughput measured).
    pub message: Message,
    pub outcome: Option<Outcome>,
}

/// Work handed to a lane: messages of one partition from one poll round, in offset order.
pub(crate) type Chunk = std::vec::IntoIter<Message>;

/// The queue the lanes of one partition take their work from.
#[derive(Clone)]
pub(crate) struct LaneQueue {
    pub chunks: async_channel::Receiver<Chunk>,
    /// Where a lane puts back the rest of its chunk when a handler has to wait, so that the
    /// partition's other lanes carry on with it: `None` where one lane serves the partition
    /// (partition order). Weak, so that the queue closes when its partition goes.
    pub share: Option<async_channel::WeakSender<Chunk>>,
}

impl LaneQueue {
    /// Puts what is left of `chunk` back on the queue for another lane, if the queue is shared
    /// and still open; otherwise `chunk` stays with the caller.
    pub fn give_back(&self, chunk: &mut Chunk) {
        if chunk.len() == 0 {
            return;
        }
        if let Some(queue) = self.share.as_ref().and_then(|q| q.upgrade()) {
            if let Err(refused) = queue.try_send(std::mem::take(chunk)) {
                *chunk = refused.into_inner();
            }
        }
    }
}

/// Where the lanes and the committer send what they tell the poll loop: a channel, and the
/// loop's [`Wakeup`], raised on every send so that a waiting loop sees the report at once.
#[derive(Clone, Debug)]
pub(crate) struct Reports {
    events: mpsc::Sender<Event>,
    wakeup: Arc<Wakeup>,
}

impl Reports {
    /// A new channel of reports, and its receiving end.
    pub fn channel() -> (Reports, mpsc::Receiver<Event>) {
        let (events, received) = mpsc::channel();
        let wakeup = Arc::default();
        (Reports { events, wakeup }, received)
    }

    /// Sends `event` to the poll loop. The loop may be gone (abort, or shutdown complete):
    /// then there is no one left to tell.
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
        self.wakeup.raise();
    }

    /// What the poll loop waits on.
    pub fn wakeup(&self) -> &Arc<Wakeup> {
        &self.wakeup
    }
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
