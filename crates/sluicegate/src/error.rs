//! [`Error`]: what can go wrong outside a handler.

use rdkafka::error::KafkaError;

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
    Kafka(#[from] KafkaError),
    /// The Kafka client hit a fatal error and cannot go on.
    #[error("fatal kafka client error: {0}")]
    Fatal(KafkaError),
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
            other => Error::Kafka(other),
        }
    }
}
