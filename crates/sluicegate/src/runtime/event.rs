//! What lanes and the committer tell the poll loop.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::commit::CommitEntry;
use crate::handler::Outcome;
use crate::output::OutputRecord;
use crate::status::StuckPartition;
use crate::Message;

use super::commit::CommitError;
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

/// Work handed to a lane: messages of one partition from one poll round, in offset order (in
/// key order, per key), in runs that stay with the lane that starts them (see
/// [`KeyGate`](crate::dispatch::KeyGate)); without runs, every message is one.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    messages: std::vec::IntoIter<Message>,
    /// The `(start, end)` positions of the runs of more than one message, in order.
    runs: Vec<(u32, u32)>,
    /// Messages taken so far.
    taken: u32,
}

impl Chunk {
    pub fn new(messages: Vec<Message>, runs: Vec<(u32, u32)>) -> Self {
        Chunk {
            messages: messages.into_iter(),
            runs,
            taken: 0,
        }
    }

    /// Where the run of the message taken last ends (just after it, if it is in none).
    fn run_end(&self) -> u32 {
        let current = self.taken.saturating_sub(1);
        self.runs
            .iter()
            .find(|(start, end)| (*start..*end).contains(&current))
            .map_or(self.taken, |(_, end)| *end)
    }

    /// Splits off what follows the run of the message taken last.
    fn split_after_run(&mut self) -> Chunk {
        let end = self.run_end();
        let runs = self
            .runs
            .iter()
            .filter(|(start, _)| *start >= end)
            .map(|(start, stop)| (start - end, stop - end))
            .collect();
        self.runs.retain(|(start, _)| *start < end);
        if end == self.taken {
            // The common case: no copy.
            return Chunk {
                messages: std::mem::take(&mut self.messages),
                runs,
                taken: 0,
            };
        }
        let mut kept: Vec<Message> = std::mem::take(&mut self.messages).collect();
        let rest = kept.split_off(((end - self.taken) as usize).min(kept.len()));
        self.messages = kept.into_iter();
        Chunk::new(rest, runs)
    }

    /// The messages after the one taken last that stay with its lane, in order: the rest of
    /// its run, or, where the lane has the partition to itself (`whole`), the rest of the chunk.
    pub fn following(&self, whole: bool) -> Vec<Message> {
        let rest = self.messages.as_slice();
        if whole {
            return rest.to_vec();
        }
        rest[..((self.run_end() - self.taken) as usize).min(rest.len())].to_vec()
    }

    /// Puts `rest` (split off this chunk) back at its end.
    fn rejoin(&mut self, rest: Chunk) {
        if rest.messages.len() == 0 {
            return;
        }
        let base = self.taken + self.messages.len() as u32;
        let mut all: Vec<Message> = std::mem::take(&mut self.messages).collect();
        all.extend(rest.messages);
        self.messages = all.into_iter();
        self.runs
            .extend(rest.runs.iter().map(|(s, e)| (s + base, e + base)));
    }
}

impl Iterator for Chunk {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let next = self.messages.next()?;
        self.taken += 1;
        Some(next)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.messages.size_hint()
    }
}

impl ExactSizeIterator for Chunk {}

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
    /// Puts what follows the current run of `chunk` back on the queue for another lane, if
    /// the queue is shared and still open; otherwise `chunk` stays with the caller.
    pub fn give_back(&self, chunk: &mut Chunk) {
        if chunk.len() == 0 {
            return;
        }
        if let Some(queue) = self.share.as_ref().and_then(|q| q.upgrade()) {
            let rest = chunk.split_after_run();
            if rest.len() == 0 {
                return;
            }
            if let Err(refused) = queue.try_send(rest) {
                chunk.rejoin(refused.into_inner());
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
    /// Exactly-once mode: outputs of messages of the partition in `slot`, sent before those
    /// messages are reported [`Left`](Event::Left). Each group is written by the first
    /// transaction that commits past its offset (the last of the messages that made it).
    Outputs {
        slot: Slot,
        outputs: Vec<(i64, Vec<OutputRecord>)>,
    },
    /// The committer finished commit request `id`.
    Committed {
        id: u64,
        offsets: Vec<CommitEntry>,
        result: Result<(), CommitError>,
        latency: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: i64, runs: Vec<(u32, u32)>) -> Chunk {
        Chunk::new(
            (0..n)
                .map(|o| Message::new("t", 0, o, None, None))
                .collect(),
            runs,
        )
    }

    fn offsets(chunk: Chunk) -> Vec<i64> {
        chunk.map(|m| m.offset()).collect()
    }

    /// A lane that has to wait keeps the rest of its run and gives back the runs after it,
    /// with their bounds moved to the new chunk's start.
    #[test]
    fn a_split_keeps_the_current_run_with_the_lane() {
        let mut c = chunk(7, vec![(1, 4), (4, 6)]);
        assert_eq!(c.next().map(|m| m.offset()), Some(0));
        assert_eq!(c.next().map(|m| m.offset()), Some(1));
        let mut rest = c.split_after_run();
        assert_eq!(rest.runs, [(0, 2)]);
        assert_eq!(offsets(c), [2, 3]);
        assert_eq!(rest.next().map(|m| m.offset()), Some(4));
        let rest2 = rest.split_after_run();
        assert_eq!(offsets(rest), [5]);
        assert_eq!(offsets(rest2), [6]);
    }

    /// What follows a message in its lane: the rest of its run (none outside a run), or the
    /// rest of the chunk where the lane has the partition to itself.
    #[test]
    fn a_message_is_followed_by_the_rest_of_its_run() {
        let following = |c: &Chunk, whole| -> Vec<i64> {
            c.following(whole).iter().map(|m| m.offset()).collect()
        };
        let mut c = chunk(7, vec![(1, 4), (5, 7)]);
        c.next();
        assert_eq!(following(&c, false), Vec::<i64>::new());
        assert_eq!(following(&c, true), [1, 2, 3, 4, 5, 6]);
        c.next();
        assert_eq!(following(&c, false), [2, 3]);
        c.next();
        c.next();
        assert_eq!(following(&c, false), Vec::<i64>::new());
        c.next();
        c.next();
        assert_eq!(following(&c, false), [6]);
    }

    /// Between runs (or without any), the split takes no copy and gives back everything left.
    #[test]
    fn a_split_between_runs_gives_back_the_rest() {
        let mut c = chunk(4, vec![(2, 4)]);
        c.next();
        let rest = c.split_after_run();
        assert_eq!(c.len(), 0);
        assert_eq!(rest.runs, [(1, 3)]);
        assert_eq!(offsets(rest), [1, 2, 3]);
    }

    /// What could not be given back goes back to the end of the chunk, runs and all.
    #[test]
    fn a_refused_split_rejoins_its_chunk() {
        let mut c = chunk(6, vec![(0, 2), (3, 5)]);
        c.next();
        let rest = c.split_after_run();
        c.rejoin(rest);
        assert_eq!(c.runs, [(0, 2), (3, 5)]);
        assert_eq!(offsets(c), [1, 2, 3, 4, 5]);
    }
}
