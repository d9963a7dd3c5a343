//! [`Error`]: what can go wrong outside a handler; [`ClientError`] and [`ErrorCode`]: what the
//! Kafka client reported, in Sluicegate's own types (librdkafka's stay inside the library).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

/// An error of the Sluicegate runtime or of its Kafka client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is wrong.
    #[error("invalid configuration `{key}` = `{value}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it and what is allowed.
        reason: String,
    },
    /// A required setting was not given.
    #[error("missing configuration: {0}")]
    MissingConfig(&'static str),
    /// The Kafka client reported an error.
    #[error("kafka client error: {0}")]
    Kafka(ClientError),
    /// The Kafka client hit a fatal error and cannot go on.
    #[error("fatal kafka client error: {0}")]
    Fatal(ClientError),
    /// The embedded broker could not do what was asked.
    #[error("embedded broker: {0}")]
    Embedded(String),
    /// The consumer was dropped while something waited on its status.
    #[error("the consumer is gone")]
    ConsumerGone,
    /// [`caught_up`](crate::ConsumerHandle::caught_up) was awaited on a consumer that does not
    /// read from the beginning, so has no log ends to catch up with.
    #[error(
        "catching up is tracked only for consumers that read from the beginning \
         (ConsumerBuilder::read_from_beginning, `read_from_beginning: true`)"
    )]
    CatchUpUntracked,
    /// A runtime thread could not be started.
    #[error("cannot start a runtime thread: {0}")]
    Thread(String),
    /// A partition this consumer does not own was asked to seek.
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(String),
    /// The TLS handshake with the brokers failed in a way retrying cannot fix (see
    /// [`security`](crate::security) for the rule): an untrusted or invalid broker
    /// certificate, or a broker that wants a client certificate or refuses ours.
    #[error("TLS handshake with the brokers failed: {0}")]
    Tls(String),
    /// The brokers refused the credentials (see [`security`](crate::security)).
    #[error("authentication failed (SASL mechanism {mechanism}, user {user}): {reason}")]
    Authentication {
        /// The SASL mechanism (`sasl.mechanism`).
        mechanism: String,
        /// The user (`sasl.username`), quoted, or `not set`.
        user: String,
        /// librdkafka's reason, with any secret setting's value removed.
        reason: String,
    },
    /// The poll thread ended without reporting (it panicked).
    #[error("the consumer's poll thread ended unexpectedly")]
    PollThreadLost,
    /// A configuration (file, environment) has problems; each is listed.
    #[error("invalid configuration:\n{0}")]
    InvalidConfig(#[from] crate::config_error::ConfigErrors),
}

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
            other => Error::Kafka(other.into()),
        }
    }

    /// The client error a fatal one: the client cannot go on.
    pub(crate) fn fatal(e: KafkaError) -> Self {
        Error::Fatal(e.into())
    }
}

// Lets the library's `?` turn its client's errors into `Error::Kafka`; not part of the API.
#[doc(hidden)]
impl From<KafkaError> for Error {
    fn from(e: KafkaError) -> Self {
        Error::Kafka(e.into())
    }
}

/// An error the Kafka client reported: its [`ErrorCode`], when it carries one, and its
/// description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    code: Option<ErrorCode>,
    message: String,
}

impl ClientError {
    /// The Kafka protocol or librdkafka error code, if the error carries one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code
    }

    /// What went wrong, as the client describes it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<KafkaError> for ClientError {
    fn from(e: KafkaError) -> Self {
        ClientError {
            code: e.rdkafka_error_code().map(ErrorCode::of),
            message: e.to_string(),
        }
    }
}

/// An error code: the Kafka protocol's (zero and up, as brokers send them) or the client's own
/// (negative). The constants name those a consumer meets most; any other code compares by
/// [`value`](Self::value).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(i32);

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:ident,)+) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode(RDKafkaErrorCode::$code as i32);)+

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
    fn of(code: RDKafkaErrorCode) -> Self {
        ErrorCode(code as i32)
    }

    /// The code as a number.
    pub fn value(self) -> i32 {
        self.0
    }

    /// The code as librdkafka's mock cluster takes it.
    pub(crate) fn response(self) -> Result<RDKafkaRespErr, Error> {
        RDKafkaRespErr::try_from(self.0).map_err(|_| Error::Config {
            key: "error code".into(),
            value: self.0.to_string(),
            reason: "not an error code the Kafka client knows".into(),
        })
    }
}

impl std::fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match RDKafkaRespErr::try_from(self.0) {
            Ok(code) => write!(f, "{:?}", RDKafkaErrorCode::from(code)),
            Err(_) => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match RDKafkaRespErr::try_from(self.0) {
            Ok(code) => write!(f, "{}", RDKafkaErrorCode::from(code)),
            Err(_) => write!(f, "error code {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::{ClientError, ErrorCode};

    #[test]
    fn a_client_error_keeps_its_code_and_description() {
        let e = ClientError::from(KafkaError::ConsumerCommit(RDKafkaErrorCode::NotCoordinator));
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
        assert!(ErrorCode(123_456).response().is_err());
        assert_eq!(format!("{:?}", ErrorCode(123_456)), "ErrorCode(123456)");
    }
}
