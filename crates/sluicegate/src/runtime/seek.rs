//! Seeking a running consumer's partition: where to ([`SeekTo`]), and how a request reaches
//! the poll thread, which owns the client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::commit::CommitEntry;
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
use crate::Error;

use crate::status::TopicPartition;

use super::commit::{CommitError, CommitOffsets as _, GroupCommit};

/// How long a look-up of watermarks or of an offset by time may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where [`ConsumerHandle::seek`](crate::ConsumerHandle::seek) moves a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    /// The first offset still in the log.
    Beginning,
    /// The end of the log: only records produced from now on.
    End,
    /// This offset. As with Kafka's own consumers, an offset outside the log makes the
    /// consumer start over as `auto.offset.reset` says (`earliest` by default).
    Offset(i64),
    /// The first record with a timestamp at or after this time (milliseconds since the
    /// epoch); the end of the log if there is none.
    Timestamp(i64),
}

/// A seek waiting for the poll thread.
pub(crate) struct SeekRequest {
    pub tp: TopicPartition,
    pub to: SeekTo,
    pub reply: oneshot::Sender<Result<i64, Error>>,
}

/// Seeks asked for and not yet carried out; closed (`None`) once the poll thread has ended,
/// so that a request then is answered at once, by dropping it.
#[derive(Clone)]
pub(crate) struct SeekQueue(Arc<Mutex<Option<Vec<SeekRequest>>>>);

impl Default for SeekQueue {
    fn default() -> Self {
        SeekQueue(Arc::new(Mutex::new(Some(Vec::new()))))
    }
}

impl SeekQueue {
    pub fn push(&self, request: SeekRequest) {
        if let Some(queue) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            queue.push(request);
        }
    }

    pub fn take(&self) -> Vec<SeekRequest> {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        queue.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The concrete offset `to` means for `tp` now.
pub(crate) fn resolve<C: ConsumerEvents>(
    consumer: &KafkaConsumer<C>,
    tp: &TopicPartition,
    to: SeekTo,
) -> Result<i64, Error> {
    let watermarks = || consumer.watermarks(tp, LOOKUP_TIMEOUT);
    Ok(match to {
        SeekTo::Offset(o) => o,
        SeekTo::Beginning => watermarks()?.0,
        SeekTo::End => watermarks()?.1,
        SeekTo::Timestamp(ms) => match consumer.offset_for_time(tp, ms, LOOKUP_TIMEOUT)? {
            Some(o) => o,
            None => watermarks()?.1,
        },
    })
}

/// Moves the fetch position of `tp` to `offset` and commits it, so that the move survives a
/// restart; the commit also names the partition the group's next owner starts from.
pub(crate) fn move_to<C: ConsumerEvents>(
    consumer: &KafkaConsumer<C>,
    tp: &TopicPartition,
    offset: i64,
) -> Result<CommitEntry, Error> {
    seek_only(consumer, tp, offset)?;
    let entry = CommitEntry {
        topic: tp.topic.clone(),
        partition: tp.partition,
        next: offset,
        metadata: String::new(),
    };
    GroupCommit(consumer)
        .commit(std::slice::from_ref(&entry), &[])
        .map_err(CommitError::into_error)?;
    Ok(entry)
}

/// Moves the fetch position of `tp` to `offset`, committing nothing: for a reader without a
/// group.
pub(crate) fn seek_only<C: ConsumerEvents>(
    consumer: &KafkaConsumer<C>,
    tp: &TopicPartition,
    offset: i64,
) -> Result<(), Error> {
    consumer.seek(tp, offset, LOOKUP_TIMEOUT)
}
