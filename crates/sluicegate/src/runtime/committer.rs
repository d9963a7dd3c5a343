//! The committer: a thread of its own that runs the group's offset commits one request at a
//! time, synchronously, so every result is known (librdkafka reports nothing back for manual
//! asynchronous commits) while the poll loop never blocks on the coordinator.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use crate::commit::CommitEntry;
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};

use super::commit::{CommitOffsets as _, GroupCommit};
use super::event::{Event, Reports};

/// Offsets to commit.
pub(crate) struct CommitRequest {
    pub id: u64,
    pub offsets: Vec<CommitEntry>,
}

/// Commits each request in turn and reports the result, until the request channel closes.
pub(crate) fn run<C: ConsumerEvents>(
    consumer: &KafkaConsumer<C>,
    requests: Receiver<CommitRequest>,
    events: Reports,
) {
    let group = GroupCommit(consumer);
    for CommitRequest { id, offsets } in requests {
        let started = Instant::now();
        let result = group.commit(&offsets);
        events.send(Event::Committed {
            id,
            offsets,
            result,
            latency: started.elapsed(),
        });
    }
}
