//! The committer: a thread of its own that runs the commits (the group's offset commits, or
//! exactly-once mode's transactions) one request at a time, synchronously, so every result is
//! known (librdkafka reports nothing back for manual asynchronous commits) while the poll loop
//! never blocks on the coordinator, nor on a transaction.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use crate::commit::CommitEntry;
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};

use crate::output::OutputRecord;

use super::commit::CommitWay;
use super::event::{Event, Reports};

/// Offsets to commit, and (exactly-once mode) the outputs the commit writes.
pub(crate) struct CommitRequest {
    pub id: u64,
    pub offsets: Vec<CommitEntry>,
    pub outputs: Vec<OutputRecord>,
}

/// A session's commits: the requests of its poll loop, and how they leave the process.
pub(crate) struct Committer {
    pub requests: Receiver<CommitRequest>,
    pub way: CommitWay,
}

/// Commits each request in turn and reports the result, until the request channel closes.
pub(crate) fn run<C: ConsumerEvents>(
    consumer: &KafkaConsumer<C>,
    Committer { requests, way }: Committer,
    events: Reports,
) {
    let commit = way.with(consumer);
    for CommitRequest {
        id,
        offsets,
        outputs,
    } in requests
    {
        let started = Instant::now();
        let result = commit.commit(&offsets, &outputs);
        events.send(Event::Committed {
            id,
            offsets,
            result,
            latency: started.elapsed(),
        });
    }
}
