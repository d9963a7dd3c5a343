//! The one place offsets leave the process: [`CommitOffsets`], with its two ways out (the
//! group's offset commit, [`GroupCommit`]; and exactly-once mode's transaction, which writes
//! the finished messages' outputs and commits their offsets together,
//! [`TransactionCommit`]), run by the [committer](super::committer) thread and, for a seek,
//! by the poll loop, with one error policy ([`CommitError`]). Callers only ever commit
//! watermarks, offsets below which everything finished, so no commit goes past unfinished
//! work.

use std::sync::Arc;
use std::time::Duration;

use crate::commit::CommitEntry;
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer};
pub(crate) use crate::kafka::error::CommitError;
use crate::kafka::producer::{
    abort_transaction, begin_transaction, commit_transaction, fatal_error,
};
use crate::output::{self, OutputRecord, Producer};

/// How long a transaction call (init, send offsets, commit, abort) may take.
pub(crate) const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a transaction commit that failed with a retriable error is tried again at once.
const TXN_COMMIT_TRIES: u32 = 3;

/// Takes offsets out of the process: after `commit` returns `Ok`, a restart or the group's next
/// owner of each partition starts at the offset committed for it, and `outputs` (exactly-once
/// mode: those of the messages below the offsets) are written.
pub(crate) trait CommitOffsets {
    fn commit(&self, offsets: &[CommitEntry], outputs: &[OutputRecord]) -> Result<(), CommitError>;
}

/// The group's offset commit, synchronous. It writes no outputs: at-least-once handlers have
/// written theirs before finishing.
pub(crate) struct GroupCommit<'a, C: ConsumerEvents>(pub &'a KafkaConsumer<C>);

impl<C: ConsumerEvents> CommitOffsets for GroupCommit<'_, C> {
    fn commit(&self, offsets: &[CommitEntry], outputs: &[OutputRecord]) -> Result<(), CommitError> {
        debug_assert!(
            outputs.is_empty(),
            "outputs are written by transactions only"
        );
        self.0.commit(offsets)
    }
}

/// How a consumer's commits leave the process.
#[derive(Clone)]
pub(crate) enum CommitWay {
    /// The group's offset commit.
    Group,
    /// Exactly-once mode: transactions of `producer`, whose sends wait on `runtime`.
    Transaction {
        producer: Arc<Producer>,
        runtime: tokio::runtime::Handle,
    },
}

impl CommitWay {
    /// The commit of `consumer`'s offsets this way.
    pub fn with<'a, C: ConsumerEvents>(
        &'a self,
        consumer: &'a KafkaConsumer<C>,
    ) -> Box<dyn CommitOffsets + 'a> {
        match self {
            CommitWay::Group => Box::new(GroupCommit(consumer)),
            CommitWay::Transaction { producer, runtime } => Box::new(TransactionCommit {
                consumer,
                producer,
                runtime,
            }),
        }
    }
}

/// One transaction: the outputs written, the offsets sent with the group's metadata, and the
/// transaction committed, so that outputs and offsets become visible together; anything else
/// aborts it, and nothing of it is visible to `read_committed` readers. The group's metadata
/// makes the broker refuse offsets of a generation that moved on (partitions revoked since).
pub(crate) struct TransactionCommit<'a, C: ConsumerEvents> {
    pub consumer: &'a KafkaConsumer<C>,
    pub producer: &'a Producer,
    pub runtime: &'a tokio::runtime::Handle,
}

impl<C: ConsumerEvents> CommitOffsets for TransactionCommit<'_, C> {
    fn commit(&self, offsets: &[CommitEntry], outputs: &[OutputRecord]) -> Result<(), CommitError> {
        begin_transaction(self.producer).map_err(CommitError::Fatal)?;
        let result = self.fill_and_commit(offsets, outputs);
        match &result {
            Ok(()) | Err(CommitError::Fatal(_)) => {}
            Err(_) => abort_transaction(self.producer, TXN_TIMEOUT).map_err(CommitError::Fatal)?,
        }
        result
    }
}

impl<C: ConsumerEvents> TransactionCommit<'_, C> {
    fn fill_and_commit(
        &self,
        offsets: &[CommitEntry],
        outputs: &[OutputRecord],
    ) -> Result<(), CommitError> {
        let sent = self.runtime.block_on(futures::future::join_all(
            outputs.iter().map(|r| output::send(self.producer, r)),
        ));
        if let Some(e) = sent.into_iter().find_map(Result::err) {
            // A fenced producer's sends fail too: its fatal error says why, and stops.
            return Err(match fatal_error(self.producer) {
                Some(fatal) => CommitError::Fatal(fatal),
                None => CommitError::Retriable(e),
            });
        }
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
