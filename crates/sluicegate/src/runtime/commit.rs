//! The one place offsets leave the process: [`CommitOffsets`], with its two ways out (the
//! group's offset commit, [`GroupCommit`], run by the [committer](super::committer) thread and
//! by a seek; and a transaction's, [`TransactionCommit`], run by exactly-once mode) and its one
//! error policy ([`CommitError`]). Callers only ever commit watermarks, offsets below which
//! everything finished, so no commit goes past unfinished work.

use std::time::Duration;

use crate::commit::CommitEntry;
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
pub(crate) use crate::kafka::error::CommitError;
use crate::kafka::producer::commit_transaction;
use crate::output::Producer;

/// How long a transaction call (send offsets, commit) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a transaction commit that failed with a retriable error is tried again at once.
const TXN_COMMIT_TRIES: u32 = 3;

/// Takes offsets out of the process: after `commit` returns `Ok`, a restart or the group's next
/// owner of each partition starts at the offset committed for it.
pub(crate) trait CommitOffsets {
    fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError>;
}

/// The group's offset commit, synchronous.
pub(crate) struct GroupCommit<'a, C: ConsumerEvents>(pub &'a KafkaConsumer<C>);

impl<C: ConsumerEvents> CommitOffsets for GroupCommit<'_, C> {
    fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError> {
        self.0.commit(offsets)
    }
}

/// The offsets sent to the open transaction with the group's metadata, and the transaction
/// committed with them: the outputs it holds and the offsets become visible together.
pub(crate) struct TransactionCommit<'a, C: ConsumerEvents> {
    pub consumer: &'a KafkaConsumer<C>,
    pub producer: &'a Producer,
}

impl<C: ConsumerEvents> CommitOffsets for TransactionCommit<'_, C> {
    fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError> {
        self.consumer
            .send_offsets_to_transaction(self.producer, offsets, TXN_TIMEOUT)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match commit_transaction(self.producer, TXN_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(CommitError::Retriable(_)) if tries < TXN_COMMIT_TRIES => continue,
                Err(failed) => return Err(failed),
            }
        }
    }
}
