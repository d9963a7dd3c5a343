//! [`ConsumerBuilder`]: a consumer's settings, checked and turned into a [`Consumer`] (see
//! `build`). The run loop itself is in the parent module.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ConsumerConfig, GroupProtocol};
use crate::dead_letter::DeadLetter;
use crate::dispatch::{BatchLimits, BufferLimits, Ordering};
use crate::handler::{BatchHandler, Batched, Handler, Work};
use crate::layer::{Identity, Layer, Stack};
use crate::metrics::Metrics;
use crate::output::{producer_config, Output};
use crate::policy::{CircuitBreaker, Reconnect, RetryPolicy};
use crate::properties::Properties;
use crate::security::{OAuth, TokenProvider};
use crate::settings::defaults;
use crate::settings::{Origin, Settings};
use crate::Error;

use super::stream::{self, StreamHandler};
use super::Consumer;

/// Builds a [`Consumer`]. Start with [`Consumer::builder`]. Its `Debug` output hides the
/// values of secret settings (passwords, secrets, PEM keys).
///
/// `L` is the stack of user [layers](crate::layer) added with [`layer`](Self::layer):
/// [`Identity`] (none) by default.
#[derive(Clone)]
pub struct ConsumerBuilder<L = Identity> {
    /// Every setting, with its defaults; checked at build.
    pub(crate) settings: Settings,
    /// The user layers, wrapped around the handler at build.
    pub(super) layers: L,
}

impl<L> std::fmt::Debug for ConsumerBuilder<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("settings", &self.settings)
            .field("layers", &std::any::type_name::<L>())
            .finish()
    }
}

impl Default for ConsumerBuilder {
    fn default() -> Self {
        ConsumerBuilder {
            settings: Settings::default(),
            layers: Identity,
        }
    }
}

impl ConsumerBuilder {
    /// Starts from `config` (a [`ConsumerConfig`], usually loaded from a file and the
    /// environment): every setting of it is applied. Calls made after it win over it
    /// (precedence: file < environment < code), except that [`topic`](Self::topic) and
    /// [`topics`](Self::topics) add to the configured topics.
    ///
    /// ```
    /// use sluicegate::config::ConsumerConfig;
    /// use sluicegate::ConsumerBuilder;
    ///
    /// let config = ConsumerConfig::from_yaml_str(
    ///     "kafka: { bootstrap_servers: localhost:9092, group_id: g, topics: [t] }",
    /// ).unwrap();
    /// let builder = ConsumerBuilder::from_config(&config).max_in_flight(10);
    /// # let _ = builder;
    /// ```
    pub fn from_config(config: &ConsumerConfig) -> Self {
        Self::default().config(config)
    }
}

impl<L> ConsumerBuilder<L> {
    /// The brokers to bootstrap from, as `host:port[,host:port...]`. Required.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.settings.bootstrap_servers = Some(servers.into());
        self
    }

    /// The consumer group. Required.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.settings.group_id = Some(group.into());
        self
    }

    /// Adds a topic to subscribe to. At least one is required.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.settings.topics.push(topic.into());
        self
    }

    /// Adds topics to subscribe to.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings
            .topics
            .extend(topics.into_iter().map(Into::into));
        self
    }

    /// Reads every partition of the topics directly instead of joining the group: no group
    /// join, no rebalances, no sharing of partitions with other instances (librdkafka's
    /// `assign` in place of `subscribe`). The group id still names where offsets are committed
    /// and read from. Partitions are looked up once when the client starts (again after a
    /// reconnect); a topic that does not exist then is an error. Not with
    /// [`exactly_once`](Self::exactly_once), whose transactions need a group generation.
    pub fn static_assignment(mut self) -> Self {
        self.settings.static_assignment = true;
        self
    }

    /// Reads every partition of the topics from its beginning at every start, without a group
    /// and without committing: for consumers that keep a local view of a topic (a cache, a
    /// lookup table), usually a compacted one. Every record still in the log is handed to the
    /// handler, tombstones (records without a value, see [`Message::is_tombstone`](crate::Message::is_tombstone)) included,
    /// then later records as they come. No group id is given (one is refused): there is no
    /// group to join, share partitions in or commit to, and every instance reads everything.
    ///
    /// Each partition's log end is looked up at start (the high watermark; with
    /// `isolation.level=read_committed`, librdkafka's default, the last stable offset), and
    /// the consumer is *catching up* until the handler has finished every record below those
    /// ends: see [`ConsumerHandle::caught_up`](crate::ConsumerHandle::caught_up), [`ConsumerStatus::catch_up`](crate::ConsumerStatus::catch_up) and the
    /// `catch_up` check of `/health/ready`, which answers 503 until then. Offsets without a
    /// record (removed by compaction, or taken by transaction markers) are not waited for. An
    /// empty topic is caught up at once.
    ///
    /// If the client is re-created (see [`reconnect`](Self::reconnect)), the partitions are
    /// read from the beginning again. Not with [`static_assignment`](Self::static_assignment)
    /// (which resumes from a group's commits) nor [`exactly_once`](Self::exactly_once).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluicegate::Error> {
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    /// use sluicegate::{handler_fn, Consumer, Message};
    ///
    /// let table: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    /// let t = table.clone();
    /// let handle = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .topic("prices")
    ///     .read_from_beginning()
    ///     .build(handler_fn(move |msg: Message| {
    ///         let t = t.clone();
    ///         async move {
    ///             let key = msg.key().unwrap_or_default().to_vec();
    ///             match msg.payload() {
    ///                 Some(value) => t.lock().unwrap().insert(key, value.to_vec()),
    ///                 None => t.lock().unwrap().remove(&key), // a tombstone
    ///             };
    ///             Ok(())
    ///         }
    ///     }))?
    ///     .spawn()?;
    /// handle.caught_up().await?; // the table holds every key's latest value now
    /// println!("{} prices", table.lock().unwrap().len());
    /// # Ok(()) }
    /// ```
    pub fn read_from_beginning(mut self) -> Self {
        self.settings.read_from_beginning = true;
        self
    }

    /// Sets a librdkafka property, passed through as is (for example `session.timeout.ms`,
    /// `security.protocol`, `partition.assignment.strategy`). librdkafka validates it when the
    /// consumer is built; properties of the classic group protocol are refused with
    /// [`GroupProtocol::Consumer`] (see [`group_protocol`](Self::group_protocol)). `auto.offset.reset` defaults to `earliest` here, so that a new group
    /// misses nothing. Offset commits are the runtime's: `enable.auto.commit` and
    /// `enable.auto.offset.store` are refused. `fetch.queue.backoff.ms` defaults to 20 ms (librdkafka:
    /// 1 s), since the runtime uses librdkafka's prefetch queue as a brake.
    /// `statistics.interval.ms` defaults to 5 s: how often the lag figures are refreshed.
    /// `reconnect.backoff.max.ms` defaults to 1 s (librdkafka: 10 s) and `fetch.error.backoff.ms`
    /// to 100 ms (librdkafka: 500 ms), so that consumption resumes within a second of a broker
    /// coming back.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.client.0.insert(key.into(), value.into());
        self
    }

    /// The consumer group protocol; [`GroupProtocol::Classic`] by default (librdkafka's
    /// `group.protocol`, which [`set`](Self::set) may give as well).
    ///
    /// [`GroupProtocol::Consumer`] (KIP-848, Apache Kafka 4.0 or later) lets the broker assign
    /// partitions and move only those that change owner, and takes the session timeout and
    /// heartbeat interval from the broker: `session.timeout.ms`, `heartbeat.interval.ms`,
    /// `partition.assignment.strategy` and `group.protocol.type` are then refused at
    /// [`build`](Self::build); the broker's assignor may be chosen with
    /// `.set("group.remote.assignor", "uniform")` (or `range`). The runtime's guarantees are
    /// the same with both: revoked partitions are drained and committed before they move.
    ///
    /// ```
    /// use sluicegate::{handler_fn, Consumer, GroupProtocol, Message};
    ///
    /// let consumer = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .group_protocol(GroupProtocol::Consumer)
    ///     .build(handler_fn(|_: Message| async { Ok(()) }));
    /// assert!(consumer.is_ok());
    ///
    /// let refused = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .group_protocol(GroupProtocol::Consumer)
    ///     .set("session.timeout.ms", "6000")
    ///     .build(handler_fn(|_: Message| async { Ok(()) }));
    /// assert!(refused.is_err());
    /// ```
    pub fn group_protocol(self, protocol: GroupProtocol) -> Self {
        self.set("group.protocol", protocol.as_str())
    }

    /// Makes this consumer a *static member* of its group (KIP-345), known by `id` (librdkafka's
    /// `group.instance.id`, which [`set`](Self::set) may give as well). Unset by default: a
    /// dynamic member.
    ///
    /// A static member that stops and comes back within the session timeout (`session.timeout.ms`
    /// with the classic protocol; the broker's `group.consumer.session.timeout.ms` with
    /// [`GroupProtocol::Consumer`]) gets its partitions back without a rebalance: the other
    /// members keep working undisturbed through a restart or a rolling deploy, and it resumes
    /// from its committed offsets. The price: a static member does not leave the group when it
    /// stops, so its partitions wait for the session timeout before another member takes
    /// them. Pick a session timeout longer than a restart, and short enough for that wait.
    ///
    /// Each worker needs its own stable id (a StatefulSet pod's name, a host name plus a
    /// slot). Two members with one id fight over it: with the classic protocol the newer one
    /// *fences* the older one (a fatal error, re-created as [`Reconnect`] says, and stopped with
    /// [`Error::Fatal`] after [`Reconnect::max_fenced`] fences in a row); with the consumer
    /// protocol the newer one is refused until the holder leaves. Both are logged at `error`
    /// level naming the instance id, counted in [`ConsumerStatus::fenced`](crate::ConsumerStatus::fenced) and shown by
    /// `/health/ready`. Kafka's rule for ids is that of topic names: ASCII letters, digits,
    /// `.`, `_` and `-`, at most 249 characters; others are refused at [`build`](Self::build).
    /// Not used with [`static_assignment`](Self::static_assignment), which joins no group.
    ///
    /// ```
    /// use sluicegate::{handler_fn, Consumer, Message};
    ///
    /// let consumer = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .group_instance_id("billing-0")
    ///     .set("session.timeout.ms", "30000")
    ///     .build(handler_fn(|_: Message| async { Ok(()) }));
    /// assert!(consumer.is_ok());
    ///
    /// let refused = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .group_instance_id("billing 0")
    ///     .build(handler_fn(|_: Message| async { Ok(()) }));
    /// assert!(refused.is_err());
    /// ```
    pub fn group_instance_id(self, id: impl Into<String>) -> Self {
        self.set("group.instance.id", id)
    }

    /// How messages of a partition may run in parallel; [`Ordering::Partition`] by default.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.settings.ordering = ordering;
        self
    }

    /// The most messages in handler calls at once over all partitions (1,000 by default): the
    /// consumer's one global limit. A batch counts as its messages; a batch larger than the
    /// limit takes all of it and runs alone. See [`Settings`] for the other two concurrency
    /// settings, each with its own default.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.settings.max_in_flight = n;
        self.settings
            .given("max_in_flight", Origin::Code("max_in_flight"));
        self
    }

    /// The most handler calls running at once within one partition in the key and unordered
    /// modes (1,024 by default; [`max_in_flight`](Self::max_in_flight) still bounds the whole
    /// consumer). Partition mode runs one at a time.
    pub fn max_in_flight_per_partition(mut self, n: usize) -> Self {
        self.settings.max_in_flight_per_partition = Some(n);
        self.settings.given(
            "max_in_flight_per_partition",
            Origin::Code("max_in_flight_per_partition"),
        );
        self
    }

    /// The most batches handled at once in the unordered mode with a batch handler (see
    /// [`build_batch`](Self::build_batch)); 5 by default. Each batch also counts its messages
    /// against [`max_in_flight`](Self::max_in_flight). In partition order a partition's
    /// batches run one at a time.
    pub fn max_batches_in_flight(mut self, n: usize) -> Self {
        self.settings.max_batches_in_flight = n;
        self.settings.given(
            "max_batches_in_flight",
            Origin::Code("max_batches_in_flight"),
        );
        self
    }

    /// Bounds on buffered (received, not yet finished) messages; partitions over them pause.
    pub fn buffer_limits(mut self, limits: BufferLimits) -> Self {
        self.settings.limits = limits;
        self.settings.given("buffer", Origin::Code("buffer_limits"));
        self
    }

    /// How a batch handler's batches are cut (see [`build_batch`](Self::build_batch)); 200
    /// messages, 100 ms, 16 MiB by default.
    pub fn batch_limits(mut self, limits: BatchLimits) -> Self {
        self.settings.batch = limits;
        self.settings.given("batch", Origin::Code("batch_limits"));
        self
    }

    /// What happens when the handler fails. The default retries retryable failures (and
    /// panics and timeouts) without limit; decode and permanent errors are never retried (see
    /// [`dead_letter`](Self::dead_letter) for where they go).
    ///
    /// In the partition and key modes a message waiting to be retried keeps its place: later
    /// messages of its partition (or key) wait, and its partition is paused while the wait is a
    /// second or longer (polling and heartbeats go on; shorter waits cost less than the
    /// re-fetch a pause and resume causes). In the unordered mode other messages go on.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self.settings.given("retry", Origin::Code("retry_policy"));
        self
    }

    /// Cancels a handler call that runs longer than `timeout`; it counts as a failed attempt
    /// of kind [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) and is retried. No limit by
    /// default.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handler_timeout = Some(timeout);
        self.settings
            .given("processing_timeout", Origin::Code("handler_timeout"));
        self
    }

    /// Stops calling the handler (and pauses every partition) for a cool-down when it fails
    /// too often; see [`CircuitBreaker`]. None by default.
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.settings.circuit_breaker = Some(breaker);
        self.settings
            .given("circuit_breaker", Origin::Code("circuit_breaker"));
        self
    }

    /// Writes messages the handler gave up on (retries exhausted, or a permanent or decode
    /// error) to a dead-letter topic, and goes on; see [`DeadLetter`].
    ///
    /// Without one, a message the handler gives up on *stops its partition* at its offset
    /// (see [`StuckPartition`](crate::StuckPartition)): it is neither skipped nor retried; the
    /// partition is paused and commits nothing at or after it; an `error` log names the record
    /// and the cause and says how to configure a dead-letter topic; the consumer reports not
    /// ready (`/health/ready`, [`ConsumerStatus::stuck`](crate::ConsumerStatus::stuck)) and
    /// `sluicegate_partitions_stuck` counts it. Other partitions go on. The record is handled
    /// again when its partition is next consumed: after a restart (with a fix, or a
    /// dead-letter topic), a rebalance, or a seek. With the default retry policy only decode
    /// and permanent errors give up; retryable failures are retried without limit.
    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.settings.dead_letter = Some(dead_letter);
        self.settings
            .given("dead_letter", Origin::Code("dead_letter"));
        self
    }

    /// When the runtime re-creates its Kafka client; see [`Reconnect`]. By default after a
    /// fatal error, or after 60 s with no broker reachable.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.settings.reconnect = reconnect;
        self.settings.given("reconnect", Origin::Code("reconnect"));
        self
    }

    /// How often finished offsets are committed (1 s by default). Shorter means fewer
    /// re-deliveries after a crash, at the cost of more commit requests.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.settings.commit_interval = interval;
        self.settings
            .given("commit_interval", Origin::Code("commit_interval"));
        self
    }

    /// How long revocation and shutdown wait for handlers in flight (10 s by default). Work
    /// still running then is abandoned and re-delivered to the next owner.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self.settings
            .given("drain_timeout", Origin::Code("drain_timeout"));
        self
    }

    /// Sets a librdkafka property of the [`Output`] producer (for example `compression.type`,
    /// `linger.ms`). Connection and security settings come from the consumer's; the producer
    /// is idempotent with `acks=all`.
    pub fn producer_set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.producer.0.insert(key.into(), value.into());
        self
    }

    /// The producer handlers write their results with; see [`Output`]. Call it after every
    /// setting (in particular [`exactly_once`](Self::exactly_once)), then move clones of it into
    /// the handler. Every call returns the same producer.
    pub fn output(&mut self) -> Result<Output, Error> {
        if let Some(output) = &self.settings.output {
            return Ok(output.clone());
        }
        let output = Output::new(
            &self.settings.producer_config()?,
            self.settings.exactly_once.is_some(),
            self.settings.current_oauth(),
        )?;
        self.settings.output = Some(output.clone());
        Ok(output)
    }

    /// Processes exactly once: the records a handler call sends with the [`Output`] producer
    /// (transactional, with `transactional_id`) are kept with its messages, dropped if the
    /// call fails and, once it succeeds, written by the Kafka transaction that commits those
    /// messages' offsets. So `read_committed` readers (and this consumer, which reads
    /// `read_committed`) see each input's outputs exactly once, and a failed call's outputs
    /// are never written at all.
    ///
    /// `transactional_id` must be the same for an instance across restarts (so that a restarted
    /// instance fences its predecessor and aborts what it left open) and different between
    /// instances running at once. The broker must support transactions (Kafka 2.5 or later).
    ///
    /// Everything else is as in at-least-once mode: the same lanes, ordering modes, limits
    /// and policies, and the poll thread never waits for a handler, so a slow or retrying
    /// handler keeps the group membership however long it takes. The commit is the
    /// difference: every [`commit_interval`](Self::commit_interval) (and sooner when 4 MiB of
    /// outputs wait), one transaction writes the outputs of the messages finished since and
    /// commits their offsets; a dead letter is one more output of its message. Outputs wait in
    /// memory until then (past 32 MiB no more messages are taken until a commit writes them).
    /// A transaction that fails is aborted and its outputs are written by the next one; a fatal
    /// producer error, such as being fenced by a newer instance, stops the consumer with
    /// [`Error::Fatal`]. Batches of an unordered [`build_batch`](Self::build_batch) consumer
    /// hold one partition's messages each in this mode.
    pub fn exactly_once(mut self, transactional_id: impl Into<String>) -> Self {
        self.settings.exactly_once = Some(transactional_id.into());
        self
    }

    /// Tells each handler call which messages its lane hands over next (see [`Upcoming`]),
    /// for handlers that work ahead. Off by default: it costs a reference count per message.
    ///
    /// [`Upcoming`]: crate::Upcoming
    pub fn upcoming(mut self, tell: bool) -> Self {
        self.settings.upcoming = tell;
        self
    }

    /// Reports the consumer's metrics (see [`metrics`](crate::metrics) for the list) to
    /// `metrics`, which several consumers and your own metrics may share. None by default,
    /// unless an [`http_endpoint`](Self::http_endpoint) is set.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.settings.metrics = Some(metrics);
        self
    }

    /// Serves `/metrics` (OpenMetrics text), `/health/live` and `/health/ready` (JSON with
    /// each check's verdict; 200 when it passes, 503 when not; see [`Health`](crate::Health)) on `addr`
    /// while the consumer runs. Off by default. Port 0 picks a free port: see
    /// [`ConsumerHandle::http_addr`](crate::ConsumerHandle::http_addr).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluicegate::Error> {
    /// use sluicegate::{handler_fn, Consumer, Message};
    ///
    /// Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .http_endpoint(([0, 0, 0, 0], 9464).into())
    ///     .build(handler_fn(|_: Message| async { Ok(()) }))?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn http_endpoint(mut self, addr: SocketAddr) -> Self {
        self.settings.http_endpoint = Some(addr);
        self
    }

    /// Applies every setting of `config`; calls made after it win. See
    /// [`from_config`](Self::from_config).
    pub fn config(mut self, config: &ConsumerConfig) -> Self {
        config.apply_to(&mut self.settings);
        self
    }

    /// The settings given so far, with the defaults of the others: what
    /// [`build`](Self::build) checks and the consumer runs with.
    ///
    /// ```
    /// use sluicegate::Consumer;
    ///
    /// let builder = Consumer::builder().max_in_flight(64);
    /// assert_eq!(builder.settings().max_in_flight(), 64);
    /// assert_eq!(builder.settings().commit_interval().as_secs(), 1); // the default
    /// ```
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Lets librdkafka judge the client settings, as [`build`](Self::build) does: creates a
    /// consumer (which connects to nothing before it is polled; the bootstrap servers are
    /// left out so that no connection is even tried) and drops it.
    #[cfg(test)]
    pub(crate) fn check_client(&self) -> Result<(), Error> {
        let mut client = self.settings.client_config()?;
        client.remove("bootstrap.servers");
        crate::kafka::client::check_consumer(&client)
    }

    /// Gets OAUTHBEARER tokens from `provider` for the consumer and for the producers the
    /// runtime creates (output, dead letters); see [`TokenProvider`]. Use it with
    /// `security.protocol` = `SASL_SSL` (or `SASL_PLAINTEXT`) and `sasl.mechanism` =
    /// `OAUTHBEARER`. Set it before taking the [`output`](Self::output).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), sluicegate::Error> {
    /// use std::time::Duration;
    /// use sluicegate::security::{OAuthToken, TokenError, TokenProvider};
    /// use sluicegate::{handler_fn, Consumer, Message};
    ///
    /// struct Tokens;
    /// impl TokenProvider for Tokens {
    ///     async fn token(&self) -> Result<OAuthToken, TokenError> {
    ///         Ok(OAuthToken::new("eyJ...", "billing", Duration::from_secs(900)))
    ///     }
    /// }
    ///
    /// Consumer::builder()
    ///     .bootstrap_servers("broker.example.com:9093")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .set("security.protocol", "SASL_SSL")
    ///     .set("sasl.mechanism", "OAUTHBEARER")
    ///     .oauth_token_provider(Tokens)
    ///     .build(handler_fn(|_: Message| async { Ok(()) }))?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn oauth_token_provider<P: TokenProvider>(mut self, provider: P) -> Self {
        self.settings.oauth = Some(OAuth::new(provider));
        self
    }

    /// Gets OAUTHBEARER tokens from the token provider of `security` (one of
    /// [`ConsumerConfig::client_security`](crate::config::ConsumerConfig::client_security)'s),
    /// when it has one, as [`oauth_token_provider`](Self::oauth_token_provider) does: for a
    /// consumer that shares the connection settings of your other clients without taking the
    /// rest of the configuration. Without a provider, nothing changes.
    pub fn token_provider_of(mut self, security: &crate::security::ClientSecurity) -> Self {
        if let Some(oauth) = security.oauth() {
            self.settings.oauth = Some(oauth.clone());
        }
        self
    }

    /// Adds a user [`Layer`] around the handler: a policy of your own (a rate limit, a
    /// tracing span, an idempotency check) that wraps every call of the handler. The layer
    /// added first is the outermost: `.layer(a).layer(b)` calls `a`, which calls `b`, which
    /// calls the handler.
    ///
    /// User layers sit inside the built-in policies (dead-letter, retry and bisection,
    /// circuit breaker, handler timeout): a layer sees each *attempt*, so a retried message
    /// enters it again, and what it answers is treated as the handler's answer (an error is
    /// retried and dead-lettered by the same rules, a panic is caught, its time counts in the
    /// handler timeout). The same holds for batch handlers and in exactly-once mode. See the
    /// [`layer`](crate::layer) module for an example, and `examples/idempotency.rs`.
    pub fn layer<T>(self, layer: T) -> ConsumerBuilder<Stack<T, L>> {
        let (builder, layers) = self.with_layers(Identity);
        builder.with_layers(Stack::new(layer, layers)).0
    }

    /// This builder with `layers` in place of its own, which are returned beside it.
    fn with_layers<M>(self, layers: M) -> (ConsumerBuilder<M>, L) {
        let ConsumerBuilder {
            settings,
            layers: old,
        } = self;
        (ConsumerBuilder { settings, layers }, old)
    }

    /// Checks the settings and builds the consumer around `handler`, wrapped in the
    /// [layers](Self::layer) if any. Nothing connects yet.
    ///
    /// A value the [settings](Settings) refuse fails with [`Error::Config`], whose reason
    /// says where it was given: the builder method, or the configuration applied with
    /// [`config`](Self::config). The rules are those of a configuration file; nothing is
    /// clamped.
    ///
    /// ```
    /// use sluicegate::policy::RetryPolicy;
    /// use sluicegate::{handler_fn, Consumer, Error, Message};
    ///
    /// let refused = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .retry_policy(RetryPolicy::default().with_max_attempts(0))
    ///     .build(handler_fn(|_: Message| async { Ok(()) }));
    /// match refused {
    ///     Err(Error::Config { key, reason, .. }) => {
    ///         assert_eq!(key, "retry.max_attempts");
    ///         assert!(reason.contains("ConsumerBuilder::retry_policy"));
    ///     }
    ///     _ => panic!("a retry policy of 0 attempts was accepted"),
    /// }
    /// ```
    pub fn build<H>(self, handler: H) -> Result<Consumer<L::Handler>, Error>
    where
        H: Handler,
        L: Layer<H>,
        L::Handler: Handler,
    {
        let (builder, layers) = self.with_layers(Identity);
        builder.build_work(layers.layer(handler), None)
    }

    /// Checks the settings, starts the consumer and returns its messages as a
    /// [`Stream`](futures::Stream) of [`Delivery`]s: the way in for programs that write their
    /// own loop. Finish each delivery with its outcome (or drop it after success); errors go
    /// through the retry policy, dead-letter topic and [layers](Self::layer) as a handler's
    /// would, and offsets are committed as for [`build`](Self::build)'s consumers: in
    /// partition order a partition's next message comes out once the one before it is
    /// finished; in key order, a key's. Must be called within a Tokio runtime. Not with
    /// [`exactly_once`](Self::exactly_once) (its transactions take a handler's batches).
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use sluicegate::{Consumer, HandlerError};
    ///
    /// # async fn run() -> Result<(), sluicegate::Error> {
    /// let mut messages = Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("billing")
    ///     .topic("orders")
    ///     .messages()?;
    /// while let Some(delivery) = messages.next().await {
    ///     let delivery = delivery?; // the consumer's fatal error, if it stops on one
    ///     match delivery.json::<serde_json::Value>() {
    ///         Ok(order) => {
    ///             println!("order {order}");
    ///             delivery.ack();
    ///         }
    ///         Err(e) => delivery.finish(Err(HandlerError::from(e))), // dead-lettered
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`Delivery`]: crate::Delivery
    pub fn messages(self) -> Result<crate::Messages, Error>
    where
        L: Layer<StreamHandler>,
        L::Handler: Handler,
    {
        if let Some(id) = &self.settings.exactly_once {
            return Err(Error::Config {
                key: "exactly_once".into(),
                value: id.clone(),
                reason: "a stream's deliveries are handled outside a handler call, which \
                         exactly-once outputs must belong to; use build or build_batch"
                    .into(),
            });
        }
        let (handler, received) = stream::channel();
        let handle = self.build(handler)?.spawn()?;
        Ok(crate::Messages::new(received, handle))
    }

    /// Checks the settings and builds a consumer that calls `handler` with batches cut by
    /// [`batch_limits`](Self::batch_limits).
    ///
    /// In [`Ordering::Partition`] (the default) each batch holds messages of one partition,
    /// in offset order, and a partition's batches run one at a time. In
    /// [`Ordering::Unordered`] batches mix partitions, and up to
    /// [`max_batches_in_flight`](Self::max_batches_in_flight) batches (5 by default) run at
    /// once. [`Ordering::Key`] is refused: use partition order.
    ///
    /// ```no_run
    /// use sluicegate::{batch_handler_fn, BatchLimits, Consumer, Message};
    ///
    /// # async fn run() -> Result<(), sluicegate::Error> {
    /// Consumer::builder()
    ///     .bootstrap_servers("localhost:9092")
    ///     .group_id("loader")
    ///     .topic("events")
    ///     .batch_limits(BatchLimits::default().max_messages(500))
    ///     .build_batch(batch_handler_fn(|batch: Vec<Message>| async move {
    ///         println!("{} events in one insert", batch.len());
    ///         Ok(())
    ///     }))?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn build_batch<B>(self, handler: B) -> Result<Consumer<Batched<L::Handler>>, Error>
    where
        B: BatchHandler,
        L: Layer<B>,
        L::Handler: BatchHandler,
    {
        let limits = self.settings.batch;
        if self.settings.ordering == Ordering::Key {
            return Err(Error::Config {
                key: "ordering".into(),
                value: "key".into(),
                reason: "batch handlers run in partition or unordered mode".into(),
            });
        }
        let (builder, layers) = self.with_layers(Identity);
        builder.build_work(Batched(layers.layer(handler)), Some(limits))
    }
}

impl ConsumerBuilder {
    /// Checks the settings and builds the consumer around `work`, the handler with its layers.
    fn build_work<W: Work>(
        mut self,
        work: W,
        batch: Option<BatchLimits>,
    ) -> Result<Consumer<W>, Error> {
        if self.settings.topics.is_empty() {
            return Err(Error::MissingConfig("at least one topic"));
        }
        if let Some(p) = self.settings.problems(&|s| s.to_owned()).into_iter().next() {
            let reason = match self.settings.origin_of(&p.setting) {
                Some(origin) => format!("{} ({origin})", p.reason),
                None => p.reason,
            };
            return Err(Error::Config {
                key: p.setting,
                value: p.value,
                reason,
            });
        }
        self.settings.check_read_from_beginning()?;
        let client = self.settings.client_config()?;
        if self.settings.static_assignment && self.settings.exactly_once.is_some() {
            return Err(Error::Config {
                key: "static_assignment".into(),
                value: "true".into(),
                reason: "exactly-once mode needs group membership: its transactions commit \
                         offsets with the group's generation"
                    .into(),
            });
        }
        if self.settings.exactly_once.is_some() {
            match &self.settings.output {
                Some(o) if !o.is_transactional() => {
                    return Err(Error::Config {
                        key: "exactly_once".into(),
                        value: self.settings.exactly_once.clone().unwrap_or_default(),
                        reason: "set exactly_once before taking the output: an output taken \
                                 earlier is not transactional"
                            .into(),
                    })
                }
                Some(_) => {}
                None => {
                    self.settings.output = Some(Output::new(
                        &self.settings.producer_config()?,
                        true,
                        self.settings.current_oauth(),
                    )?)
                }
            }
        }
        // Let librdkafka judge every property now, so a typo fails at build, not at run.
        crate::kafka::client::check_consumer(&client)?;
        Ok(Consumer {
            settings: self.settings,
            client,
            work,
            batch,
        })
    }
}

/// What the runtime makes of the settings: client configurations and checks between settings
/// (the checks of single values are `Settings::problems`).
impl Settings {
    /// The consumer's client settings.
    pub(super) fn client_config(&self) -> Result<Properties, Error> {
        let bootstrap = self
            .bootstrap_servers
            .clone()
            .ok_or(Error::MissingConfig("bootstrap servers"))?;
        // A reader from the beginning has no group (a group id given is refused at build).
        let group = match self.read_from_beginning {
            true => None,
            false => Some(
                self.group_id
                    .clone()
                    .ok_or(Error::MissingConfig("group id"))?,
            ),
        };
        crate::config::refused_property(&self.client.0)?;
        // librdkafka's `assign` needs a group id even where no group is joined: a reader gets
        // one it never joins and never commits to.
        let mut client =
            defaults::consumer_client(group.as_deref().unwrap_or(defaults::READER_GROUP_ID));
        client.set("bootstrap.servers", &bootstrap);
        if self.exactly_once.is_some() {
            // Outputs of aborted transactions (and of open ones) stay invisible upstream too.
            client.set("isolation.level", "read_committed");
        }
        for (key, value) in &self.client.0 {
            client.set(key, value);
        }
        Ok(client)
    }

    /// Refuses what a reader from the beginning cannot have: a group and its commits.
    pub(super) fn check_read_from_beginning(&self) -> Result<(), Error> {
        if !self.read_from_beginning {
            return Ok(());
        }
        let refuse = |key: &str, value: &str, reason: &str| Error::Config {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        if let Some(group) = &self.group_id {
            return Err(refuse(
                "group_id",
                group,
                "not used with read_from_beginning, which reads every partition without a \
                 group and commits nothing: remove the group id, or read as a group member",
            ));
        }
        if self.static_assignment {
            return Err(refuse(
                "static_assignment",
                "true",
                "not with read_from_beginning: a static assignment resumes from a group's \
                 commits, a reader from the beginning starts over at every start; choose one",
            ));
        }
        if let Some(id) = &self.exactly_once {
            return Err(refuse(
                "exactly_once",
                id,
                "not with read_from_beginning: transactions commit offsets with a group, and \
                 a reader from the beginning has none",
            ));
        }
        Ok(())
    }

    /// The producer settings of the [`Output`] (and, in exactly-once mode, of the dead-letter
    /// writes).
    pub(super) fn producer_config(&self) -> Result<Properties, Error> {
        let mut config = producer_config(&self.client_config()?, &self.producer.0);
        if let Some(id) = &self.exactly_once {
            config.set("transactional.id", id);
        }
        Ok(config)
    }

    /// The token provider, on the current Tokio runtime if any.
    pub(super) fn current_oauth(&self) -> Option<OAuth> {
        self.oauth.as_ref().map(OAuth::on_current_runtime)
    }
}

#[cfg(test)]
mod one_validation;
#[cfg(test)]
mod tests;
