//! The one place offsets leave the process: [`CommitOffsets`], with its two ways out (the
//! group's offset commit, [`GroupCommit`], run by the [committer](super::committer) thread and
//! by a seek; and a transaction's, [`TransactionCommit`], run by exactly-once mode) and its one
//! error policy ([`CommitError`]). Callers only ever commit watermarks, offsets below which
//! everything finished, so no commit goes past unfinished work.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;

use crate::commit::{commit_list, CommitEntry};
use crate::output::Producer;
use crate::Error;

/// How long a transaction call (send offsets, commit) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a transaction commit that failed with a retriable error is tried again at once.
const TXN_COMMIT_TRIES: u32 = 3;

/// Why offsets did not leave the process, and so what the caller does next.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// Not committed this time; nothing is lost by asking again later (a coordinator moving,
    /// a timeout, a rebalance under way).
    #[error("commit not accepted now: {0}")]
    Retriable(KafkaError),
    /// Not committed, and asking again will not help: the work is re-delivered to whoever
    /// owns the partitions next (a group generation that moved on, an aborted transaction).
    #[error("commit refused: {0}")]
    Refused(KafkaError),
    /// The client can commit nothing any more (fenced by a newer instance): stop.
    #[error("commit failed fatally: {0}")]
    Fatal(KafkaError),
    /// What a transaction commit needs is missing (the group's metadata): stop.
    #[error("cannot commit without {0}")]
    Missing(&'static str),
}

impl CommitError {
    /// Sorts a client error by what the caller should do about it.
    fn of(e: KafkaError) -> Self {
        if let KafkaError::Transaction(t) = &e {
            return match () {
                () if t.is_fatal() => CommitError::Fatal(e),
                () if t.is_retriable() => CommitError::Retriable(e),
                () => CommitError::Refused(e),
            };
        }
        match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::FencedMemberEpoch
                | RDKafkaErrorCode::StaleMemberEpoch,
            ) => CommitError::Refused(e),
            _ => CommitError::Retriable(e),
        }
    }

    /// The error as the library reports it to users.
    pub fn into_error(self) -> Error {
        match self {
            CommitError::Fatal(e) => Error::fatal(e),
            CommitError::Retriable(e) | CommitError::Refused(e) => Error::from(e),
            CommitError::Missing(what) => Error::MissingConfig(what),
        }
    }
}

/// Takes offsets out of the process: after `commit` returns `Ok`, a restart or the group's next
/// owner of each partition starts at the offset committed for it.
pub(crate) trait CommitOffsets {
    fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError>;
}

/// The group's offset commit, synchronous.
pub(crate) struct GroupCommit<'a, C: ConsumerContext>(pub &'a BaseConsumer<C>);

impl<C: ConsumerContext> CommitOffsets for GroupCommit<'_, C> {
    fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError> {
        self.0
            .commit(&commit_list(offsets), CommitMode::Sync)
            .map_err(CommitError::of)
    }
}

/// The offsets sent to the open transaction with the group's metadata, and the transaction
/// committed with them: the outputs it holds and the offsets become visible together.
pub(crate) struct TransactionCommit<'a, C: ConsumerContext> {
    pub consumer: &'a BaseConsumer<C>,
    pub producer: &'a Producer,
}

impl<C: ConsumerContext> CommitOffsets for TransactionCommit<'_, C> {
    fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError> {
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or(CommitError::Missing("the consumer group's metadata"))?;
        self.producer
            .send_offsets_to_transaction(&commit_list(offsets), &metadata, TXN_TIMEOUT)
            .map_err(CommitError::of)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.producer.commit_transaction(TXN_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e) => match CommitError::of(e) {
                    CommitError::Retriable(_) if tries < TXN_COMMIT_TRIES => continue,
                    failed => return Err(failed),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::ConsumerCommit(code)
    }

    #[test]
    fn a_group_that_moved_on_refuses_and_the_rest_is_tried_again() {
        for code in [
            RDKafkaErrorCode::IllegalGeneration,
            RDKafkaErrorCode::UnknownMemberId,
            RDKafkaErrorCode::FencedInstanceId,
        ] {
            assert!(
                matches!(CommitError::of(group_error(code)), CommitError::Refused(_)),
                "{code:?}"
            );
        }
        for code in [
            RDKafkaErrorCode::RebalanceInProgress,
            RDKafkaErrorCode::NotCoordinator,
            RDKafkaErrorCode::CoordinatorLoadInProgress,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert!(
                matches!(
                    CommitError::of(group_error(code)),
                    CommitError::Retriable(_)
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn only_a_fatal_error_stops_the_consumer() {
        let fatal = CommitError::Fatal(group_error(RDKafkaErrorCode::Fatal));
        assert!(matches!(fatal.into_error(), Error::Fatal(_)));
        let retriable = CommitError::of(group_error(RDKafkaErrorCode::NotCoordinator));
        assert!(matches!(retriable.into_error(), Error::Kafka(_)));
    }
}
