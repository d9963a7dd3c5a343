//! The committer: the one place that commits offsets. It runs on a thread of its own and
//! commits synchronously, so every result is known (librdkafka reports nothing back for
//! manual asynchronous commits) while the poll loop never blocks on the coordinator.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};

use crate::commit::{commit_list, CommitEntry};

use super::event::{Event, Reports};

/// Offsets to commit.
pub(crate) struct CommitRequest {
    pub id: u64,
    pub offsets: Vec<CommitEntry>,
}

/// Commits each request in turn and reports the result, until the request channel closes.
pub(crate) fn run<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    requests: Receiver<CommitRequest>,
    events: Reports,
) {
    for CommitRequest { id, offsets } in requests {
        let list = commit_list(&offsets);
        let started = Instant::now();
        let result = consumer.commit(&list, CommitMode::Sync);
        events.send(Event::Committed {
            id,
            offsets,
            result,
            latency: started.elapsed(),
        });
    }
}
