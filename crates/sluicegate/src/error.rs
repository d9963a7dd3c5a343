//! [`Error`]: what can go wrong outside a handler; [`ClientError`] and [`ErrorCode`]: what the
//! Kafka client reported, in Sluicegate's own types (librdkafka's stay inside the library).

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

impl ClientError {
    /// An error with `code` (if any) and the client's description of it.
    pub(crate) fn new(code: Option<ErrorCode>, message: String) -> Self {
        ClientError { code, message }
    }
}

/// An error code: the Kafka protocol's (zero and up, as brokers send them) or the client's own
/// (negative). The constants name those a consumer meets most; any other code compares by
/// [`value`](Self::value).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(i32);

// The named codes, and how a code prints (librdkafka's names), are the Kafka adapter's
// (`kafka::error`): they come from librdkafka's table.

impl ErrorCode {
    /// The code numbered `value`.
    pub(crate) const fn from_value(value: i32) -> Self {
        ErrorCode(value)
    }

    /// The code as a number.
    pub fn value(self) -> i32 {
        self.0
    }
}
