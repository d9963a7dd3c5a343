//! [`Settings`]: the one description of a consumer, with its one set of defaults and its one
//! validation. [`ConsumerBuilder`](crate::ConsumerBuilder) holds one (see
//! [`ConsumerBuilder::settings`](crate::ConsumerBuilder::settings)), and a configuration file's
//! values land in one ([`ConsumerConfig`](crate::config::ConsumerConfig) is the file's shape,
//! its defaults are these), so a value is accepted or refused the same way from code, file or
//! environment.

pub(crate) mod defaults;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::dead_letter::DeadLetter;
use crate::dispatch::{BatchLimits, BufferLimits, Ordering};
use crate::metrics::Metrics;
use crate::output::Output;
use crate::policy::{CircuitBreaker, Reconnect, RetryPolicy};
use crate::security::OAuth;

pub use crate::properties::Properties;
pub(crate) use validate::Origin;

/// Everything that describes one consumer: where it reads, how much runs at once, what
/// happens on failure, when it commits. Built with
/// [`ConsumerBuilder`](crate::ConsumerBuilder) (read it back with
/// [`ConsumerBuilder::settings`](crate::ConsumerBuilder::settings)) or from a configuration
/// file; its `Default` is the one set of defaults of both (the README's "Defaults" table).
/// Its `Debug` output hides the values of secret settings.
///
/// Each setting has one job. Concurrency has three:
///
/// - [`max_in_flight`](Self::max_in_flight): messages in handler calls at once over the whole
///   consumer (a batch counts as its messages, a batch larger than the limit as the whole
///   limit);
/// - [`max_in_flight_per_partition`](Self::max_in_flight_per_partition): handler calls at once
///   within one partition (key and unordered modes);
/// - [`max_batches_in_flight`](Self::max_batches_in_flight): batches at once in the unordered
///   mode with a batch handler.
///
/// Where two bind, the smaller wins: `max_in_flight` bounds every other.
///
/// ```
/// use sluicegate::{Consumer, Ordering};
///
/// let builder = Consumer::builder().ordering(Ordering::Key).max_in_flight(64);
/// let settings = builder.settings();
/// assert_eq!(settings.max_in_flight(), 64);
/// assert_eq!(settings.max_in_flight_per_partition(), 1_024); // its own default
/// assert_eq!(settings.max_batches_in_flight(), 5);
/// ```
#[derive(Clone)]
pub struct Settings {
    pub(crate) bootstrap_servers: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) topics: Vec<String>,
    pub(crate) static_assignment: bool,
    pub(crate) read_from_beginning: bool,
    /// librdkafka properties; secrets are redacted in `Debug`.
    pub(crate) client: Properties,
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
    pub(crate) max_in_flight_per_partition: Option<usize>,
    pub(crate) max_batches_in_flight: usize,
    pub(crate) limits: BufferLimits,
    pub(crate) batch: BatchLimits,
    pub(crate) retry: RetryPolicy,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) circuit_breaker: Option<CircuitBreaker>,
    pub(crate) dead_letter: Option<DeadLetter>,
    pub(crate) reconnect: Reconnect,
    pub(crate) commit_interval: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) producer: Properties,
    pub(crate) output: Option<Output>,
    pub(crate) exactly_once: Option<String>,
    pub(crate) upcoming: bool,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) http_endpoint: Option<SocketAddr>,
    pub(crate) oauth: Option<OAuth>,
    /// Where each group of settings was last given (a builder method, or the configuration),
    /// so that a refused value names it; by group (`retry`, `batch`, `max_in_flight`, ...).
    pub(crate) origins: BTreeMap<&'static str, Origin>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bootstrap_servers: None,
            group_id: None,
            topics: Vec::new(),
            static_assignment: false,
            read_from_beginning: false,
            client: Properties::default(),
            ordering: Ordering::Partition,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            max_in_flight_per_partition: None,
            max_batches_in_flight: defaults::MAX_BATCHES_IN_FLIGHT,
            limits: BufferLimits::default(),
            batch: BatchLimits::default(),
            retry: RetryPolicy::default(),
            handler_timeout: None,
            circuit_breaker: None,
            dead_letter: None,
            reconnect: Reconnect::default(),
            commit_interval: defaults::COMMIT_INTERVAL,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            producer: Properties::default(),
            output: None,
            exactly_once: None,
            upcoming: false,
            metrics: None,
            http_endpoint: None,
            oauth: None,
            origins: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("static_assignment", &self.static_assignment)
            .field("read_from_beginning", &self.read_from_beginning)
            .field("client", &self.client)
            .field("ordering", &self.ordering)
            .field("max_in_flight", &self.max_in_flight)
            .field(
                "max_in_flight_per_partition",
                &self.max_in_flight_per_partition,
            )
            .field("max_batches_in_flight", &self.max_batches_in_flight)
            .field("limits", &self.limits)
            .field("batch", &self.batch)
            .field("retry", &self.retry)
            .field("handler_timeout", &self.handler_timeout)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("dead_letter", &self.dead_letter)
            .field("reconnect", &self.reconnect)
            .field("commit_interval", &self.commit_interval)
            .field("drain_timeout", &self.drain_timeout)
            .field("producer", &self.producer)
            .field("output", &self.output)
            .field("exactly_once", &self.exactly_once)
            .field("upcoming", &self.upcoming)
            .field("metrics", &self.metrics.is_some())
            .field("http_endpoint", &self.http_endpoint)
            .field("oauth_token_provider", &self.oauth)
            .finish()
    }
}

impl Settings {
    /// Records that the settings of `group` were given by `origin` (last one wins).
    pub(crate) fn given(&mut self, group: &'static str, origin: Origin) {
        self.origins.insert(group, origin);
    }

    /// How messages of a partition may run in parallel.
    pub fn ordering(&self) -> Ordering {
        self.ordering
    }

    /// The most messages in handler calls at once over the whole consumer (1,000 by default).
    /// A batch counts as its messages; a batch larger than this limit takes all of it, so it
    /// runs alone.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The most handler calls at once within one partition: 1 in partition order (and for
    /// batch handlers, whose batches of a partition run one at a time); in the key and
    /// unordered modes the value set, or 1,024 by default. [`max_in_flight`](Self::max_in_flight)
    /// still bounds the whole consumer.
    pub fn max_in_flight_per_partition(&self) -> usize {
        match self.ordering {
            Ordering::Partition => 1,
            Ordering::Key | Ordering::Unordered => self
                .max_in_flight_per_partition
                .unwrap_or(defaults::MAX_IN_FLIGHT_PER_PARTITION),
        }
    }

    /// The most batches handled at once in the unordered mode with a batch handler (5 by
    /// default); in partition order a partition's batches run one at a time.
    pub fn max_batches_in_flight(&self) -> usize {
        self.max_batches_in_flight
    }

    /// Bounds on buffered (received, not yet finished) messages.
    pub fn buffer_limits(&self) -> BufferLimits {
        self.limits
    }

    /// How a batch handler's batches are cut.
    pub fn batch_limits(&self) -> BatchLimits {
        self.batch
    }

    /// What happens when the handler fails.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The longest a handler call may run; none by default.
    pub fn handler_timeout(&self) -> Option<Duration> {
        self.handler_timeout
    }

    /// How often finished offsets are committed (1 s by default).
    pub fn commit_interval(&self) -> Duration {
        self.commit_interval
    }

    /// How long revocation and shutdown wait for handlers in flight (10 s by default).
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// The handler calls that can run at once within one partition, as lanes: more than
    /// [`max_in_flight`](Self::max_in_flight) could never run.
    pub(crate) fn lanes_per_partition(&self) -> usize {
        self.max_in_flight_per_partition()
            .min(self.max_in_flight)
            .max(1)
    }
}
