//! librdkafka's errors in Sluicegate's words, in one place: [`KafkaError`] to [`ClientError`]
//! and [`Error`] (by functions: no rdkafka type in a public trait impl), the named [`ErrorCode`]s and how a code prints (librdkafka's table), and the
//! classification the commit path uses ([`CommitVerdict`]).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

use crate::{ClientError, Error, ErrorCode};

impl Error {
    /// Maps librdkafka's refusal of a configuration property to an error naming the property,
    /// the value and librdkafka's reason.
    pub(crate) fn from_client_creation(e: KafkaError) -> Self {
        match e {
            KafkaError::ClientConfig(_, reason, key, value) => {
                let value = if crate::secret::is_secret_key(&key) {
                    "[redacted]".to_owned()
                } else {
                    value
                };
                Error::Config { key, value, reason }
            }
            other => Error::Kafka(client_error(other)),
        }
    }
}

/// `e` as the library reports a client's error: [`Error::Kafka`].
pub(crate) fn kafka_error(e: KafkaError) -> Error {
    Error::Kafka(client_error(e))
}

/// `e` in Sluicegate's words: its code and description. (A function, not a `From`: a trait
/// impl would put rdkafka's type in the public API.)
pub(crate) fn client_error(e: KafkaError) -> ClientError {
    ClientError::new(e.rdkafka_error_code().map(ErrorCode::of), e.to_string())
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:ident,)+) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode =
                ErrorCode::from_value(RDKafkaErrorCode::$code as i32);)+

            /// Every constant above with its name (`("NOT_COORDINATOR", ErrorCode::NOT_COORDINATOR)`),
            /// for callers that take codes by name, such as the Python binding.
            pub const NAMED: &'static [(&'static str, ErrorCode)] =
                &[$((stringify!($name), ErrorCode::$name),)+];
        }
    };
}

error_codes! {
    /// The client lost its connection to a broker (librdkafka's own code).
    TRANSPORT = BrokerTransportFailure,
    /// No broker is reachable (librdkafka's own code).
    ALL_BROKERS_DOWN = AllBrokersDown,
    /// The client hit a fatal error and cannot go on (librdkafka's own code; the error's
    /// description names the underlying one).
    FATAL = Fatal,
    /// SASL authentication failed (librdkafka's own code).
    AUTHENTICATION = Authentication,
    /// A TLS error (librdkafka's own code).
    SSL = SSL,
    /// A request timed out.
    REQUEST_TIMED_OUT = RequestTimedOut,
    /// The topic or partition does not exist.
    UNKNOWN_TOPIC_OR_PARTITION = UnknownTopicOrPartition,
    /// The broker is not the partition's leader.
    NOT_LEADER_FOR_PARTITION = NotLeaderForPartition,
    /// The partition has no leader now.
    LEADER_NOT_AVAILABLE = LeaderNotAvailable,
    /// Fewer in-sync replicas than the topic requires.
    NOT_ENOUGH_REPLICAS = NotEnoughReplicas,
    /// The broker is not the group's coordinator.
    NOT_COORDINATOR = NotCoordinator,
    /// The group's coordinator is loading its state.
    COORDINATOR_LOAD_IN_PROGRESS = CoordinatorLoadInProgress,
    /// The group's coordinator is not available.
    COORDINATOR_NOT_AVAILABLE = CoordinatorNotAvailable,
    /// The group is rebalancing.
    REBALANCE_IN_PROGRESS = RebalanceInProgress,
    /// The member's group generation is no longer current.
    ILLEGAL_GENERATION = IllegalGeneration,
    /// The group does not know the member.
    UNKNOWN_MEMBER_ID = UnknownMemberId,
    /// Another member with the same `group.instance.id` took over.
    FENCED_INSTANCE_ID = FencedInstanceId,
    /// Another member holds this `group.instance.id` and has not left (the consumer group
    /// protocol, KIP-848).
    UNRELEASED_INSTANCE_ID = UnreleasedInstanceId,
    /// The commit's metadata is larger than the broker accepts.
    OFFSET_METADATA_TOO_LARGE = OffsetMetadataTooLarge,
    /// Not authorized for the topic.
    TOPIC_AUTHORIZATION_FAILED = TopicAuthorizationFailed,
    /// Not authorized for the group.
    GROUP_AUTHORIZATION_FAILED = GroupAuthorizationFailed,
    /// A newer producer with the same transactional id took over.
    PRODUCER_FENCED = ProducerFenced,
}

impl ErrorCode {
    pub(crate) fn of(code: RDKafkaErrorCode) -> Self {
        ErrorCode::from_value(code as i32)
    }

    /// The code as librdkafka's mock cluster takes it.
    pub(crate) fn response(self) -> Result<RDKafkaRespErr, Error> {
        RDKafkaRespErr::try_from(self.value()).map_err(|_| Error::Config {
            key: "error code".into(),
            value: self.value().to_string(),
            reason: "not an error code the Kafka client knows".into(),
        })
    }
}

impl std::fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match RDKafkaRespErr::try_from(self.value()) {
            Ok(code) => write!(f, "{:?}", RDKafkaErrorCode::from(code)),
            Err(_) => write!(f, "ErrorCode({})", self.value()),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match RDKafkaRespErr::try_from(self.value()) {
            Ok(code) => write!(f, "{}", RDKafkaErrorCode::from(code)),
            Err(_) => write!(f, "error code {}", self.value()),
        }
    }
}

/// Why offsets did not leave the process, and so what the caller does next.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// Not committed this time; nothing is lost by asking again later (a coordinator moving,
    /// a timeout, a rebalance under way).
    #[error("commit not accepted now: {0}")]
    Retriable(ClientError),
    /// Not committed, and asking again will not help: the work is re-delivered to whoever
    /// owns the partitions next (a group generation that moved on, an aborted transaction).
    #[error("commit refused: {0}")]
    Refused(ClientError),
    /// The client can commit nothing any more (fenced by a newer instance): stop.
    #[error("commit failed fatally: {0}")]
    Fatal(ClientError),
    /// What a transaction commit needs is missing (the group's metadata): stop.
    #[error("cannot commit without {0}")]
    Missing(&'static str),
}

impl CommitError {
    /// Sorts a client error by what the caller should do about it.
    pub(crate) fn of(e: KafkaError) -> Self {
        if let KafkaError::Transaction(t) = &e {
            return match () {
                () if t.is_fatal() => CommitError::Fatal(client_error(e)),
                () if t.is_retriable() => CommitError::Retriable(client_error(e)),
                () => CommitError::Refused(client_error(e)),
            };
        }
        match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::FencedMemberEpoch
                | RDKafkaErrorCode::StaleMemberEpoch,
            ) => CommitError::Refused(client_error(e)),
            _ => CommitError::Retriable(client_error(e)),
        }
    }

    /// The error as the library reports it to users.
    pub(crate) fn into_error(self) -> Error {
        match self {
            CommitError::Fatal(e) => Error::Fatal(e),
            CommitError::Retriable(e) | CommitError::Refused(e) => Error::Kafka(e),
            CommitError::Missing(what) => Error::MissingConfig(what),
        }
    }
}

/// A fatal consumption error with `code`, as librdkafka reports one.
pub(crate) fn fatal_consumption(code: ErrorCode) -> ClientError {
    let code =
        RDKafkaErrorCode::from(RDKafkaRespErr::try_from(code.value()).expect("a known code"));
    client_error(KafkaError::MessageConsumptionFatal(code))
}

/// A client-wide error with `code`, as librdkafka's error callback reports one (for tests).
#[cfg(test)]
pub(crate) fn global(code: ErrorCode) -> ClientError {
    let code =
        RDKafkaErrorCode::from(RDKafkaRespErr::try_from(code.value()).expect("a known code"));
    client_error(KafkaError::Global(code))
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::{client_error, CommitError, ErrorCode};
    use crate::Error;

    #[test]
    fn a_client_error_keeps_its_code_and_description() {
        let e = client_error(KafkaError::ConsumerCommit(RDKafkaErrorCode::NotCoordinator));
        assert_eq!(e.code(), Some(ErrorCode::NOT_COORDINATOR));
        assert!(e.message().contains("Not coordinator"), "{}", e.message());
        assert_eq!(
            ErrorCode::NOT_COORDINATOR.value(),
            16,
            "the Kafka protocol's number"
        );
        assert!(
            ErrorCode::TRANSPORT.value() < 0,
            "the client's own codes are negative"
        );
        assert!(ErrorCode::NOT_COORDINATOR
            .to_string()
            .contains("NotCoordinator"));
    }

    #[test]
    fn an_unknown_code_is_refused_where_a_known_one_is_needed() {
        assert!(ErrorCode::REQUEST_TIMED_OUT.response().is_ok());
        assert!(ErrorCode::from_value(123_456).response().is_err());
        assert_eq!(
            format!("{:?}", ErrorCode::from_value(123_456)),
            "ErrorCode(123456)"
        );
    }

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
        let fatal = CommitError::Fatal(client_error(group_error(RDKafkaErrorCode::Fatal)));
        assert!(matches!(fatal.into_error(), Error::Fatal(_)));
        let retriable = CommitError::of(group_error(RDKafkaErrorCode::NotCoordinator));
        assert!(matches!(retriable.into_error(), Error::Kafka(_)));
    }
}
