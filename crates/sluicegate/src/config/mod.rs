//! [`ConsumerConfig`]: the one configuration type, loaded from a YAML file and the environment,
//! validated, and applied to a [`ConsumerBuilder`](crate::ConsumerBuilder).
//!
//! # Precedence
//!
//! **file < environment < code.** [`ConsumerConfig::load`] reads the file, then overrides it
//! with the `KAFKA_*` variables of the [environment table](ENV_VARS); what the program sets on
//! the builder *after* [`ConsumerBuilder::config`](crate::ConsumerBuilder::config) wins over
//! both (topics set in code are *added* to the configured ones).
//!
//! Tools add one more level: [`ConsumerConfig::resolve_for`] takes overrides by setting path
//! (`security.sasl_username=bob`, the `sluicegate` CLI's `--set`), which win over the
//! environment: **file < environment < overrides < code**. The CLI's `-X` librdkafka
//! properties come last, on the clients it makes.
//!
//! # The file
//!
//! Everything sits under a top-level `kafka:` key. Durations are human strings (`"30s"`,
//! `"500ms"`, `"1m 30s"`, parsed by `humantime`); in the environment, the `*_MS` variables take
//! whole milliseconds. Unknown keys are refused, with a suggestion when one is close.
//!
//! ```yaml
//! kafka:
//!   bootstrap_servers: "kafka-1:9092,kafka-2:9092"   # or a list
//!   group_id: billing
//!   group_instance_id: billing-0                     # static membership (optional)
//!   topics: [orders]
//!   ordering: key
//!   retry: { max_attempts: 5, initial_backoff: 200ms, max_backoff: 10s }
//!   dead_letter: { enabled: true }                   # to `<topic>.dlq`
//!   session_timeout: 30s                             # classic group protocol only
//!   librdkafka:                                      # passed through as is
//!     partition.assignment.strategy: cooperative-sticky
//! ```
//!
//! ```
//! use sluicegate::config::ConsumerConfig;
//! use sluicegate::Consumer;
//!
//! let yaml = "kafka:\n  bootstrap_servers: localhost:9092\n  group_id: billing\n  topics: [orders]\n";
//! // No process environment here: the overrides are given as pairs.
//! let config = ConsumerConfig::load_str(yaml, [("KAFKA_BATCH_SIZE", "500")]).unwrap();
//! assert_eq!(config.batch.max_messages, 500);
//! let builder = Consumer::builder()
//!     .config(&config)
//!     .max_in_flight(64); // code wins over file and environment
//! # let _ = builder;
//! ```
//!
//! Secrets ([`Secret`]: the SASL password, the TLS key password and the OIDC client secret, and
//! `librdkafka:` entries
//! whose names mark a secret, see [`is_secret_key`]) print as `[redacted]` in `Debug`,
//! `Display` and serialized output.

mod client;
mod env;
mod load;
mod source;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dead_letter::DeadLetter;
use crate::dispatch::{BatchLimits, BufferLimits, Ordering};
use crate::policy::{Backoff, RetryPolicy};
use crate::properties::shown;
use crate::settings::{Origin, Settings};

pub use crate::config_error::{ConfigError, ConfigErrors, Source};
pub use crate::secret::{is_secret_key, Secret, REDACTED};
pub use crate::settings::Properties;
pub use client::ClientKind;
pub use env::{EnvVar, ENV_VARS, OTHER_VARS};
pub use load::{Loaded, Purpose, Report};
pub use source::Sources;
pub(crate) use validate::refused_property;
pub use validate::BROKER_SESSION_TIMEOUT;

/// Declares a configuration enum read and written as one of its names; the names after
/// `refused` are refused with their own reasons (what a user may expect but the build lacks).
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }
     $(refused { $($refused:literal => $reason:expr),+ $(,)? })?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every accepted name.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name used in configuration (and given to librdkafka).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($text) { return Ok($name::$variant); })+
                $($(if s.eq_ignore_ascii_case($refused) { return Err($reason.to_string()); })+)?
                Err(format!("expected one of: {}", Self::NAMES.join(", ")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e: String| serde::de::Error::custom(format!("`{s}`: {e}")))
            }
        }
    };
}

named_enum!(
    /// Where a group starts on a partition it has no committed offset for
    /// (`auto.offset.reset`).
    OffsetReset {
        /// The oldest retained message: nothing is missed (the default).
        Earliest = "earliest",
        /// Only messages produced from now on.
        Latest = "latest",
        /// Fail instead of choosing.
        Error = "error",
    }
);

named_enum!(
    /// How the client talks to brokers (`security.protocol`).
    SecurityProtocol {
        /// No TLS, no authentication (the default).
        Plaintext = "plaintext",
        /// TLS.
        Ssl = "ssl",
        /// SASL authentication without TLS.
        SaslPlaintext = "sasl_plaintext",
        /// SASL authentication over TLS.
        SaslSsl = "sasl_ssl",
    }
);

impl SecurityProtocol {
    /// Whether the protocol authenticates with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether the protocol uses TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

named_enum!(
    /// The SASL mechanism (`sasl.mechanism`).
    SaslMechanism {
        /// User name and password, in the clear (use with TLS).
        Plain = "PLAIN",
        /// SCRAM with SHA-256.
        ScramSha256 = "SCRAM-SHA-256",
        /// SCRAM with SHA-512.
        ScramSha512 = "SCRAM-SHA-512",
        /// OAuth bearer tokens (also what AWS MSK IAM uses).
        OauthBearer = "OAUTHBEARER",
    }
    refused {
        "GSSAPI" => NO_KERBEROS,
    }
);

/// Why `GSSAPI` is refused as a SASL mechanism.
const NO_KERBEROS: &str = "GSSAPI (Kerberos) is not supported: Sluicegate is built without \
    Kerberos (librdkafka without libsasl2); use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or \
    OAUTHBEARER";

impl SaslMechanism {
    /// Whether the mechanism authenticates with a user name and password.
    pub fn needs_password(self) -> bool {
        matches!(
            self,
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
        )
    }
}

named_enum!(
    /// The consumer group protocol (`group.protocol`): how members join a group and get their
    /// partitions. The same on every member of a group is simplest; Kafka converts a group
    /// between the two as members come and go.
    GroupProtocol {
        /// The original protocol (the default): the members agree on a leader, which assigns
        /// the partitions with `partition.assignment.strategy`; the client sets
        /// `session.timeout.ms` and `heartbeat.interval.ms`. Every Kafka-compatible broker.
        Classic = "classic",
        /// KIP-848, the next-generation protocol: the broker assigns the partitions (its
        /// assignor can be chosen with `group.remote.assignor`, `uniform` or `range`), moves
        /// only those that change owner (incremental rebalances, no stop-the-world), and sets
        /// the session timeout and heartbeat interval itself (`group.consumer.*` broker
        /// settings), so `session.timeout.ms`, `heartbeat.interval.ms`,
        /// `partition.assignment.strategy` and `group.protocol.type` are refused with it.
        /// Needs Apache Kafka 4.0 or later.
        Consumer = "consumer",
    }
);

// `named_enum!` derives no `Default` (its other enums have none).
#[allow(clippy::derivable_impls)]
impl Default for GroupProtocol {
    fn default() -> Self {
        GroupProtocol::Classic
    }
}

impl GroupProtocol {
    /// Why the librdkafka property `key` cannot be set with this protocol (librdkafka refuses
    /// it, or it would do nothing); `None` when it can.
    ///
    /// ```
    /// use sluicegate::GroupProtocol;
    /// assert!(GroupProtocol::Consumer.refuses("session.timeout.ms").is_some());
    /// assert!(GroupProtocol::Classic.refuses("session.timeout.ms").is_none());
    /// ```
    pub fn refuses(self, key: &str) -> Option<&'static str> {
        if self == GroupProtocol::Classic {
            return None;
        }
        CLASSIC_ONLY
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, why)| *why)
    }
}

/// librdkafka properties of the classic group protocol only, and what takes their place with
/// the consumer protocol.
pub(crate) const CLASSIC_ONLY: &[(&str, &str)] = &[
    (
        "session.timeout.ms",
        "the broker sets the session timeout with the consumer group protocol (its \
         group.consumer.session.timeout.ms, 45s by default)",
    ),
    (
        "heartbeat.interval.ms",
        "the broker sets the heartbeat interval with the consumer group protocol (its \
         group.consumer.heartbeat.interval.ms, 5s by default)",
    ),
    (
        "partition.assignment.strategy",
        "the broker assigns partitions with the consumer group protocol; choose its assignor \
         with group.remote.assignor (uniform or range) instead",
    ),
    (
        "group.protocol.type",
        "applies to the classic group protocol only",
    ),
];

/// Serde glue: [`Ordering`] by its name.
mod ordering_name {
    use super::*;

    pub fn serialize<S: Serializer>(o: &Ordering, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(o.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ordering, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Serde glue: durations as human strings (`"30s"`, `"500ms"`).
mod human {
    use super::*;

    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("`{s}` is not a duration ({e}); write it like 500ms, 30s or 5m"))
    }

    pub fn show(d: Duration) -> String {
        humantime::format_duration(d).to_string()
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&show(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => parse(&s).map_err(serde::de::Error::custom),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "`{n}` has no unit; write a duration with one, like {n}ms or {n}s"
            ))),
        }
    }

    /// The same for `Option<Duration>` (`null` for none).
    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(deserialize_with = "super::deserialize")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// Serde glue: bootstrap servers as `"a:9092,b:9092"` or as a list.
mod servers {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => s,
            Raw::Many(list) => list.join(","),
        })
    }
}

/// A consumer's whole configuration: what the seeds' `kafka:` sections hold. Every field has
/// a default (that of [`ConsumerBuilder`](crate::ConsumerBuilder), or librdkafka's where the
/// field is `None`), except the three required ones: `bootstrap_servers`, `group_id` (none with
/// `read_from_beginning`), `topics`.
///
/// See the [module documentation](self) for the file format and precedence, and
/// [`ENV_VARS`] for the environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The brokers to bootstrap from, `host:port[,host:port...]` (a YAML list is joined).
    #[serde(deserialize_with = "servers::deserialize")]
    pub bootstrap_servers: String,
    /// The consumer group.
    pub group_id: String,
    /// Makes the consumer a static member of its group with this id (`group.instance.id`,
    /// KIP-345): a restart within the session timeout keeps its partitions without a
    /// rebalance. Each worker needs its own; none by default (a dynamic member). See
    /// [`ConsumerBuilder::group_instance_id`](crate::ConsumerBuilder::group_instance_id).
    pub group_instance_id: Option<String>,
    /// The topics to subscribe to.
    pub topics: Vec<String>,
    /// Read every partition of the topics directly instead of joining the group (see
    /// [`ConsumerBuilder::static_assignment`](crate::ConsumerBuilder::static_assignment)); `false` by default.
    pub static_assignment: bool,
    /// Read every partition from its beginning at every start, without a group and without
    /// commits, and report when the log ends seen at start are reached (see
    /// [`ConsumerBuilder::read_from_beginning`](crate::ConsumerBuilder::read_from_beginning)); `false` by default. No `group_id` then.
    pub read_from_beginning: bool,
    /// Where a new group starts (`earliest` by default).
    pub auto_offset_reset: OffsetReset,
    /// How messages of a partition may run in parallel (`partition`, `key`, `unordered`).
    #[serde(with = "ordering_name")]
    pub ordering: Ordering,
    /// The most messages in handler calls at once over the whole consumer (1000); a batch
    /// counts as its messages.
    pub max_in_flight: usize,
    /// The most handler calls at once within one partition, in key and unordered modes
    /// (1024 when unset; partition order runs one at a time).
    pub max_in_flight_per_partition: Option<usize>,
    /// The most batches handled at once in the unordered mode with a batch handler (5).
    pub max_batches_in_flight: usize,
    /// How batches of a batch handler are cut.
    pub batch: BatchConfig,
    /// Retries of failed messages.
    pub retry: RetryConfig,
    /// The dead-letter topic.
    pub dead_letter: DeadLetterConfig,
    /// Cancel a handler call running longer than this (counts as a failed attempt); none by
    /// default.
    #[serde(with = "human::opt")]
    pub processing_timeout: Option<Duration>,
    /// How often finished offsets are committed (1s).
    #[serde(with = "human")]
    pub commit_interval: Duration,
    /// How long revocation and shutdown wait for handlers in flight (10s).
    #[serde(with = "human")]
    pub drain_timeout: Duration,
    /// The consumer group protocol, `classic` (the default) or `consumer` (KIP-848: the
    /// broker assigns partitions incrementally and sets the session timeout and heartbeat
    /// interval; Apache Kafka 4.0 or later). See [`GroupProtocol`].
    pub group_protocol: GroupProtocol,
    /// `session.timeout.ms` (librdkafka: 45s). Classic group protocol only.
    #[serde(with = "human::opt")]
    pub session_timeout: Option<Duration>,
    /// `heartbeat.interval.ms` (librdkafka: 3s); at most a third of the session timeout.
    /// Classic group protocol only.
    #[serde(with = "human::opt")]
    pub heartbeat_interval: Option<Duration>,
    /// `max.poll.interval.ms` (librdkafka: 5m).
    #[serde(with = "human::opt")]
    pub max_poll_interval: Option<Duration>,
    /// Fetch settings.
    pub fetch: FetchConfig,
    /// Bounds on buffered messages; partitions over them pause.
    pub buffer: BufferConfig,
    /// Serve `/metrics`, `/health/live` and `/health/ready` here (off by default).
    pub metrics_addr: Option<SocketAddr>,
    /// TLS and SASL settings.
    pub security: SecurityConfig,
    /// Other librdkafka properties, passed through as they are.
    pub librdkafka: Properties,
}

impl Default for ConsumerConfig {
    /// The defaults of [`Settings`]: one set for code and file.
    fn default() -> Self {
        let s = Settings::default();
        ConsumerConfig {
            bootstrap_servers: String::new(),
            group_id: String::new(),
            group_instance_id: None,
            topics: Vec::new(),
            static_assignment: false,
            read_from_beginning: false,
            auto_offset_reset: OffsetReset::Earliest,
            ordering: s.ordering,
            max_in_flight: s.max_in_flight,
            max_in_flight_per_partition: s.max_in_flight_per_partition,
            max_batches_in_flight: s.max_batches_in_flight,
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            processing_timeout: s.handler_timeout,
            commit_interval: s.commit_interval,
            drain_timeout: s.drain_timeout,
            group_protocol: GroupProtocol::Classic,
            session_timeout: None,
            heartbeat_interval: None,
            max_poll_interval: None,
            fetch: FetchConfig::default(),
            buffer: BufferConfig::default(),
            metrics_addr: None,
            security: SecurityConfig::default(),
            librdkafka: Properties::default(),
        }
    }
}

/// How batches are cut ([`BatchLimits`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// The most messages in a batch (200).
    pub max_messages: usize,
    /// How long a batch's first message waits for more (100ms); above zero.
    #[serde(with = "human")]
    pub max_wait: Duration,
    /// The most bytes in a batch (16 MiB).
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        let d = Settings::default().batch;
        BatchConfig {
            max_messages: d.max_messages,
            max_wait: d.max_wait,
            max_bytes: d.max_bytes,
        }
    }
}

/// Retries of failed messages ([`RetryPolicy`] with its [`Backoff`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; `null` (the default) retries without limit.
    pub max_attempts: Option<u32>,
    /// Stop retrying this long after the first failure; none by default.
    #[serde(with = "human::opt")]
    pub max_elapsed: Option<Duration>,
    /// The first delay (100ms).
    #[serde(with = "human")]
    pub initial_backoff: Duration,
    /// The longest delay (30s); at least `initial_backoff`.
    #[serde(with = "human")]
    pub max_backoff: Duration,
    /// The growth factor between delays (2.0); at least 1.
    pub multiplier: f64,
    /// The randomized fraction of each delay (0.2); from 0 to 1.
    pub jitter: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let r = Settings::default().retry;
        let b = r.backoff;
        RetryConfig {
            max_attempts: r.max_attempts,
            max_elapsed: r.max_elapsed,
            initial_backoff: b.initial,
            max_backoff: b.max,
            multiplier: b.multiplier,
            jitter: b.jitter,
        }
    }
}

/// The dead-letter topic ([`DeadLetter`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Whether messages the handler gave up on are dead-lettered (off by default: then such a
    /// message stops its partition at its offset, visibly, until it is consumed again).
    pub enabled: bool,
    /// The dead-letter topic for every source topic; by default `<topic>.dlq` per topic.
    pub topic: Option<String>,
}

/// Fetch settings, each a librdkafka property; `null` leaves librdkafka's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// `fetch.min.bytes`: the least data a fetch answer waits for.
    pub min_bytes: Option<u64>,
    /// `fetch.wait.max.ms`: how long a fetch waits for `min_bytes`.
    #[serde(with = "human::opt")]
    pub max_wait: Option<Duration>,
    /// `max.partition.fetch.bytes`: the most data per partition in one fetch.
    pub max_partition_bytes: Option<u64>,
    /// `fetch.max.bytes`: the most data in one fetch answer.
    pub max_bytes: Option<u64>,
    /// `queued.max.messages.kbytes`: the most prefetched data per client, in KiB.
    pub queued_max_kbytes: Option<u64>,
}

/// Bounds on buffered messages ([`BufferLimits`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Messages per partition (15000).
    pub partition_messages: usize,
    /// Bytes per partition (24 MiB).
    pub partition_bytes: usize,
    /// Messages over all partitions (20000).
    pub total_messages: usize,
    /// Bytes over all partitions (32 MiB).
    pub total_bytes: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        let d = Settings::default().limits;
        BufferConfig {
            partition_messages: d.partition_messages,
            partition_bytes: d.partition_bytes,
            total_messages: d.total_messages,
            total_bytes: d.total_bytes,
        }
    }
}

/// TLS and SASL settings, each a librdkafka property. The passwords are [`Secret`]s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `security.protocol` (librdkafka: plaintext).
    pub protocol: Option<SecurityProtocol>,
    /// `sasl.mechanism`; needs a `sasl_*` protocol.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password` (secret).
    pub sasl_password: Option<Secret>,
    /// `ssl.ca.location`: the CA certificates to trust (a file or directory).
    pub ssl_ca_location: Option<String>,
    /// `ssl.certificate.location`: the client certificate.
    pub ssl_certificate_location: Option<String>,
    /// `ssl.key.location`: the client's private key.
    pub ssl_key_location: Option<String>,
    /// `ssl.key.password` (secret): the private key's passphrase.
    pub ssl_key_password: Option<Secret>,
    /// OAUTHBEARER tokens from an OIDC token endpoint (client credentials grant); needs
    /// `sasl_mechanism: OAUTHBEARER`.
    pub oauthbearer: OAuthBearerConfig,
    /// OAUTHBEARER tokens for AWS MSK IAM authentication; needs `sasl_mechanism: OAUTHBEARER`
    /// (and `protocol: sasl_ssl`, as MSK's IAM listeners are).
    pub msk_iam: MskIamConfig,
}

/// OAUTHBEARER tokens from an OIDC (OAuth 2.0) token endpoint with the client credentials
/// grant: [`OidcTokenProvider`](crate::security::OidcTokenProvider) (the `oidc` feature, on by
/// default). Set `token_endpoint`, `client_id` and `client_secret` together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthBearerConfig {
    /// The token endpoint: an `https://` URL (`http://` is for a local endpoint).
    pub token_endpoint: Option<String>,
    /// The client id (sent with the secret in HTTP Basic authentication).
    pub client_id: Option<String>,
    /// The client secret (secret).
    pub client_secret: Option<Secret>,
    /// The scopes to ask for, space-separated, as the endpoint expects them; none by default.
    pub scope: Option<String>,
}

impl OAuthBearerConfig {
    /// Whether any of these settings is given.
    pub fn is_set(&self) -> bool {
        self.token_endpoint.is_some()
            || self.client_id.is_some()
            || self.client_secret.is_some()
            || self.scope.is_some()
    }
}

/// AWS MSK IAM authentication: [`MskIamTokenProvider`](crate::security) (the `msk-iam`
/// feature; the `sluicegate` CLI has it). Credentials come from the standard AWS chain
/// (`AWS_ACCESS_KEY_ID`..., `~/.aws` files, web identity, ECS/EC2 roles).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MskIamConfig {
    /// The cluster's AWS region, such as `eu-west-1`; required.
    pub region: Option<String>,
    /// The AWS profile to take the credentials from (of `~/.aws/config` and
    /// `~/.aws/credentials`), rather than `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
}

impl MskIamConfig {
    /// Whether any of these settings is given.
    pub fn is_set(&self) -> bool {
        self.region.is_some() || self.profile.is_some()
    }
}

impl SecurityConfig {
    /// The OIDC token provider of `oauthbearer`, when its `token_endpoint` is set.
    #[cfg(feature = "oidc")]
    pub fn oidc_token_provider(&self) -> Option<crate::security::OidcTokenProvider> {
        let o = &self.oauthbearer;
        let endpoint = o.token_endpoint.clone()?;
        let provider = crate::security::OidcTokenProvider::new(
            endpoint,
            o.client_id.clone().unwrap_or_default(),
            o.client_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
        );
        Some(match &o.scope {
            Some(scope) => provider.scope(scope.clone()),
            None => provider,
        })
    }

    /// The MSK IAM token provider of `msk_iam`, when its `region` is set.
    #[cfg(feature = "msk-iam")]
    pub fn msk_iam_token_provider(&self) -> Option<crate::security::MskIamTokenProvider> {
        let m = &self.msk_iam;
        let provider = crate::security::MskIamTokenProvider::new(m.region.clone()?);
        Some(match &m.profile {
            Some(profile) => provider.profile(profile.clone()),
            None => provider,
        })
    }
}

/// A librdkafka property derived from a typed setting: the property, the setting's path and
/// its value (with secrets exposed).
pub(crate) type Derived = (&'static str, &'static str, String);

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl ConsumerConfig {
    /// The librdkafka properties the typed settings stand for, with the path of each.
    pub(crate) fn derived(&self) -> Vec<Derived> {
        let mut out: Vec<Derived> = vec![
            (
                "auto.offset.reset",
                "kafka.auto_offset_reset",
                self.auto_offset_reset.as_str().into(),
            ),
            (
                "group.protocol",
                "kafka.group_protocol",
                self.group_protocol.as_str().into(),
            ),
        ];
        let mut opt = |key, path, value: Option<String>| {
            if let Some(v) = value {
                out.push((key, path, v));
            }
        };
        opt(
            "group.instance.id",
            "kafka.group_instance_id",
            self.group_instance_id.clone(),
        );
        opt(
            "session.timeout.ms",
            "kafka.session_timeout",
            self.session_timeout.map(ms),
        );
        opt(
            "heartbeat.interval.ms",
            "kafka.heartbeat_interval",
            self.heartbeat_interval.map(ms),
        );
        opt(
            "max.poll.interval.ms",
            "kafka.max_poll_interval",
            self.max_poll_interval.map(ms),
        );
        let f = &self.fetch;
        opt(
            "fetch.min.bytes",
            "kafka.fetch.min_bytes",
            f.min_bytes.map(|v| v.to_string()),
        );
        opt(
            "fetch.wait.max.ms",
            "kafka.fetch.max_wait",
            f.max_wait.map(ms),
        );
        opt(
            "max.partition.fetch.bytes",
            "kafka.fetch.max_partition_bytes",
            f.max_partition_bytes.map(|v| v.to_string()),
        );
        opt(
            "fetch.max.bytes",
            "kafka.fetch.max_bytes",
            f.max_bytes.map(|v| v.to_string()),
        );
        opt(
            "queued.max.messages.kbytes",
            "kafka.fetch.queued_max_kbytes",
            f.queued_max_kbytes.map(|v| v.to_string()),
        );
        let s = &self.security;
        opt(
            "security.protocol",
            "kafka.security.protocol",
            s.protocol.map(|p| p.as_str().into()),
        );
        opt(
            "sasl.mechanism",
            "kafka.security.sasl_mechanism",
            s.sasl_mechanism.map(|m| m.as_str().into()),
        );
        opt(
            "sasl.username",
            "kafka.security.sasl_username",
            s.sasl_username.clone(),
        );
        opt(
            "sasl.password",
            "kafka.security.sasl_password",
            s.sasl_password.as_ref().map(|p| p.expose().into()),
        );
        opt(
            "ssl.ca.location",
            "kafka.security.ssl_ca_location",
            s.ssl_ca_location.clone(),
        );
        opt(
            "ssl.certificate.location",
            "kafka.security.ssl_certificate_location",
            s.ssl_certificate_location.clone(),
        );
        opt(
            "ssl.key.location",
            "kafka.security.ssl_key_location",
            s.ssl_key_location.clone(),
        );
        opt(
            "ssl.key.password",
            "kafka.security.ssl_key_password",
            s.ssl_key_password.as_ref().map(|p| p.expose().into()),
        );
        out
    }

    /// Every librdkafka property this configuration sets, derived from typed settings and
    /// passed through from `librdkafka:`, with **secrets exposed** (for building your own
    /// client; show them with [`is_secret_key`] in mind). The runtime's own properties (such
    /// as `enable.auto.commit=false`) are not included.
    pub fn client_properties(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .derived()
            .into_iter()
            .map(|(k, _, v)| (k.to_string(), v))
            .collect();
        out.insert("bootstrap.servers".into(), self.bootstrap_servers.clone());
        if !self.read_from_beginning {
            out.insert("group.id".into(), self.group_id.clone());
        }
        for (k, v) in &self.librdkafka.0 {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// The token provider `security.oauthbearer` or `security.msk_iam` describes.
    pub(crate) fn token_provider(&self) -> Option<crate::security::OAuth> {
        #[cfg(feature = "oidc")]
        if let Some(p) = self.security.oidc_token_provider() {
            return Some(crate::security::OAuth::described(p));
        }
        #[cfg(feature = "msk-iam")]
        if let Some(p) = self.security.msk_iam_token_provider() {
            return Some(crate::security::OAuth::described(p));
        }
        None
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        let r = &self.retry;
        RetryPolicy {
            max_attempts: r.max_attempts,
            max_elapsed: r.max_elapsed,
            backoff: Backoff {
                initial: r.initial_backoff,
                max: r.max_backoff,
                multiplier: r.multiplier,
                jitter: r.jitter,
            },
        }
    }

    /// Puts every setting of this configuration into `settings` (what
    /// [`ConsumerBuilder::config`](crate::ConsumerBuilder::config) does): the values land in
    /// the one [`Settings`] type, and are checked by its one validation. Topics are added.
    pub(crate) fn apply_to(&self, s: &mut Settings) {
        if !self.bootstrap_servers.is_empty() {
            s.bootstrap_servers = Some(self.bootstrap_servers.clone());
        }
        if !self.group_id.is_empty() {
            s.group_id = Some(self.group_id.clone());
        }
        s.topics.extend(self.topics.iter().cloned());
        s.ordering = self.ordering;
        s.max_in_flight = self.max_in_flight;
        s.max_batches_in_flight = self.max_batches_in_flight;
        s.batch = BatchLimits::default()
            .max_messages(self.batch.max_messages)
            .max_wait(self.batch.max_wait)
            .max_bytes(self.batch.max_bytes);
        s.limits = BufferLimits {
            partition_messages: self.buffer.partition_messages,
            partition_bytes: self.buffer.partition_bytes,
            total_messages: self.buffer.total_messages,
            total_bytes: self.buffer.total_bytes,
        };
        s.retry = self.retry_policy();
        s.commit_interval = self.commit_interval;
        s.drain_timeout = self.drain_timeout;
        let mut given = vec![
            "max_in_flight",
            "max_batches_in_flight",
            "batch",
            "buffer",
            "retry",
            "commit_interval",
            "drain_timeout",
        ];
        if let Some(n) = self.max_in_flight_per_partition {
            s.max_in_flight_per_partition = Some(n);
            given.push("max_in_flight_per_partition");
        }
        s.static_assignment |= self.static_assignment;
        s.read_from_beginning |= self.read_from_beginning;
        if let Some(t) = self.processing_timeout {
            s.handler_timeout = Some(t);
            given.push("processing_timeout");
        }
        if let Some(d) = self.dead_letter() {
            s.dead_letter = Some(d);
            given.push("dead_letter");
        }
        if let Some(addr) = self.metrics_addr {
            s.http_endpoint = Some(addr);
        }
        if let Some(oauth) = self.token_provider() {
            s.oauth = Some(oauth);
        }
        for (key, _, value) in self.derived() {
            s.client.0.insert(key.into(), value);
        }
        for (key, value) in &self.librdkafka.0 {
            s.client.0.insert(key.clone(), value.clone());
        }
        for group in given {
            s.given(group, Origin::Config);
        }
    }

    /// The dead-letter settings, when dead-lettering is enabled.
    pub fn dead_letter(&self) -> Option<DeadLetter> {
        let d = &self.dead_letter;
        d.enabled.then(|| match &d.topic {
            Some(topic) => DeadLetter::to_topic(topic.clone()),
            None => DeadLetter::default(),
        })
    }

    /// The configuration as YAML (under `kafka:`), secrets redacted.
    pub fn to_yaml(&self) -> String {
        #[derive(Serialize)]
        struct File<'a> {
            kafka: &'a ConsumerConfig,
        }
        serde_saphyr::to_string(&File { kafka: self })
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
