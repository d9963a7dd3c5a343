//! [`Metrics`]: Prometheus metrics of running consumers, in one registry you can add your own
//! metrics to, encoded as OpenMetrics text.
//!
//! Every family is named `sluicegate_*` and labelled with the consumer `group`, and with
//! `topic` (and `partition`) where the figure is per topic (or partition):
//!
//! | family | type | labels | what it counts |
//! |---|---|---|---|
//! | `sluicegate_messages_consumed_total` | counter | group, topic | received from Kafka |
//! | `sluicegate_messages_processed_total` | counter | group, topic | handled successfully |
//! | `sluicegate_messages_failed_total` | counter | group, topic, kind | messages of failed handler attempts, by [`ErrorKind`](crate::ErrorKind) |
//! | `sluicegate_messages_retried_total` | counter | group, topic | handler calls beyond the first, of finished messages |
//! | `sluicegate_messages_dead_lettered_total` | counter | group, topic | written to the dead-letter topic and acknowledged |
//! | `sluicegate_messages_skipped_total` | counter | group, topic, reason | skipped by the handler (`handler`) or finished before a restart (`already_finished`) |
//! | `sluicegate_handler_duration_seconds` | histogram | group, topic | one handler call (a batch for batch handlers) |
//! | `sluicegate_end_to_end_latency_seconds` | histogram | group, topic | record timestamp to finished: the record's age at the `finished` stage |
//! | `sluicegate_record_age_seconds` | histogram | group, topic, stage | the record's age (now minus its Kafka timestamp) at each [`Stage`]: `polled` (taken from librdkafka), `handler_start` (its first handler call began), `handler_end` (its last handler call returned); one observation per record and stage |
//! | `sluicegate_messages_in_flight` | gauge | group | messages taken by handlers, not yet finished (in a call, waiting to retry, being dead-lettered) |
//! | `sluicegate_messages_buffered` | gauge | group | received and not finished |
//! | `sluicegate_partitions_assigned` | gauge | group | partitions owned |
//! | `sluicegate_partitions_paused` | gauge | group | partitions paused (backpressure, retries, circuit, stuck) |
//! | `sluicegate_partitions_stuck` | gauge | group | partitions stopped at a record the handler gave up on, with no dead-letter topic ([`StuckPartition`](crate::StuckPartition)) |
//! | `sluicegate_consumer_lag` | gauge | group, topic, partition | log end minus committed offset |
//! | `sluicegate_commits_total` | counter | group, result | offset commits, `ok` or `failed` |
//! | `sluicegate_commit_duration_seconds` | histogram | group | one offset commit |
//! | `sluicegate_rebalances_total` | counter | group, kind | `assign` and `revoke` callbacks |
//! | `sluicegate_circuit_breaker_state` | gauge | group, state | 1 for the current state (`closed`, `open`, `half_open`) |
//! | `sluicegate_client_restarts_total` | counter | group | Kafka clients re-created |
//! | `sluicegate_transactions_total` | counter | group, result | exactly-once transactions, `committed` or `aborted` |
//! | `sluicegate_ready` | gauge | group | 1 while `/health/ready` says ready |
//! | `sluicegate_catch_up_remaining` | gauge | group | a reader from the beginning: offsets between its handled positions and the log ends seen at start, 0 once caught up ([`CatchUp`](crate::CatchUp)); absent for other consumers |
//! | `sluicegate_last_poll_timestamp_seconds` | gauge | group | Unix time of the poll loop's last turn |
//!
//! Per-message figures are counted on the paths the messages take; the buffer, pause, lag and
//! readiness gauges are refreshed once per commit interval, and the stuck-partition and
//! readiness gauges also whenever a partition stops or is released.
//!
//! Record ages and end-to-end latency have buckets from 0.25 ms to 5 minutes (0.25, 0.5, 1, 2,
//! 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 500 ms, 1, 2.5, 5, 10, 30, 60, 300 s), fine enough to
//! read a p99 of a few milliseconds; Kafka timestamps are whole milliseconds, so an age is
//! exact to a millisecond. A record without a timestamp has no age. The ages of a record at
//! its stages rise in the order of [`Stage::ALL`]; [`Metrics::record_ages`] reads them back
//! in-process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

mod ages;
mod timings;

use crate::handler::{ErrorKind, Outcome};
use crate::policy::CircuitState;
use crate::Message;
pub(crate) use ages::wall;
pub use ages::Stage;
pub use timings::Distribution;
use timings::Timings;

pub use prometheus_client;

/// A registry of consumer metrics. Clones share it: give one to each consumer
/// ([`ConsumerBuilder::metrics`](crate::ConsumerBuilder::metrics)) and register your own
/// metrics in it, so that one scrape returns everything. Consumers are told apart by their
/// `group` label: two consumers of one group in one registry add up.
///
/// ```
/// use sluicegate::metrics::prometheus_client::metrics::counter::Counter;
/// use sluicegate::metrics::Metrics;
///
/// let metrics = Metrics::new();
/// let orders = Counter::<u64>::default();
/// metrics.register("shop_orders", "Orders placed", orders.clone());
/// orders.inc();
/// assert!(metrics.encode().contains("shop_orders_total 1"));
/// ```
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    families: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry holding Sluicegate's metric families (empty until a consumer reports).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let families = Families::default();
        families.register(registry.sub_registry_with_prefix("sluicegate"));
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            families: Arc::new(families),
        }
    }

    /// Registers a metric of your own, exported with the name given (no prefix added).
    pub fn register(
        &self,
        name: impl Into<String>,
        help: impl Into<String>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry().register(name, help, metric);
    }

    /// The registry itself, for what [`register`](Self::register) does not cover (units,
    /// sub-registries, collectors). Hold the guard briefly: scrapes wait for it.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every metric in the OpenMetrics text format (what `/metrics` serves).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry())
            .expect("writing to a String cannot fail");
        text
    }

    /// Every metric in the Prometheus text format 0.0.4, for scrapers and tools that do not
    /// read OpenMetrics (such as `promtool check metrics`): counter families are named with
    /// their `_total` suffix, and the `# UNIT` and `# EOF` lines are left out.
    pub fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }

    /// The distribution of record ages at each [`Stage`] over every topic of the consumers of
    /// `group` in this registry, as `sluicegate_record_age_seconds` (and, for
    /// [`Stage::Finished`], `sluicegate_end_to_end_latency_seconds`) hold them now. A stage no
    /// record reached yet is empty. For figures of a period, take one reading at its start and
    /// [`Distribution::since`] it at its end.
    ///
    /// ```
    /// use sluicegate::metrics::{Metrics, Stage};
    ///
    /// let metrics = Metrics::new();
    /// let ages = metrics.record_ages("orders-service");
    /// assert_eq!(ages[&Stage::HandlerEnd].count(), 0);
    /// assert_eq!(ages[&Stage::HandlerEnd].quantile(0.99), None);
    /// ```
    pub fn record_ages(&self, group: &str) -> BTreeMap<Stage, Distribution> {
        let f = &self.families;
        let topics: Vec<TopicLabels> = lock(&f.topics_seen)
            .iter()
            .filter(|t| t.group == group)
            .cloned()
            .collect();
        Stage::ALL
            .into_iter()
            .map(|stage| {
                let mut total = Timings::ages().snapshot();
                for t in &topics {
                    let d = match stage {
                        Stage::Finished => f.end_to_end.get_or_create(t).snapshot(),
                        _ => f
                            .record_age
                            .get_or_create(&StageLabels::of(t, stage))
                            .snapshot(),
                    };
                    total.add(&d);
                }
                (stage, total)
            })
            .collect()
    }

    /// The handles a consumer of `group` reports through. Its counters start at 0, so that
    /// rates and increases are defined from the first scrape on.
    pub(crate) fn consumer(&self, group: &str) -> ConsumerMetrics {
        let f = &self.families;
        let g = GroupLabels {
            group: group.to_owned(),
        };
        for result in ["ok", "failed"] {
            let labels = ResultLabels {
                group: group.to_owned(),
                result,
            };
            drop(f.commits.get_or_create(&labels));
        }
        for kind in ["assign", "revoke"] {
            let labels = KindLabels {
                group: group.to_owned(),
                kind,
            };
            drop(f.rebalances.get_or_create(&labels));
        }
        drop(f.client_restarts.get_or_create(&g));
        drop(f.ready.get_or_create(&g));
        drop(f.buffered.get_or_create(&g));
        drop(f.assigned.get_or_create(&g));
        drop(f.paused.get_or_create(&g));
        drop(f.stuck.get_or_create(&g));
        ConsumerMetrics {
            group: group.to_owned(),
            in_flight: self.families.in_flight.get_or_create_owned(&GroupLabels {
                group: group.to_owned(),
            }),
            families: self.families.clone(),
            topics: Arc::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    group: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    group: String,
    topic: String,
    stage: &'static str,
}

impl StageLabels {
    fn of(t: &TopicLabels, stage: Stage) -> Self {
        StageLabels {
            group: t.group.clone(),
            topic: t.topic.clone(),
            stage: stage.as_str(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    group: String,
    topic: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkippedLabels {
    group: String,
    topic: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    group: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    group: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    group: String,
    state: &'static str,
}

type Histograms<L> = Family<L, Timings>;

/// A family of histograms with the buckets of record ages.
struct AgeHistograms<L>(Family<L, Timings>);

impl<L: Clone + std::hash::Hash + Eq> Default for AgeHistograms<L> {
    fn default() -> Self {
        AgeHistograms(Family::new_with_constructor(Timings::ages))
    }
}

impl<L> std::ops::Deref for AgeHistograms<L> {
    type Target = Family<L, Timings>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The metric families, shared by every consumer reporting to one [`Metrics`].
#[derive(Default)]
struct Families {
    consumed: Family<TopicLabels, Counter>,
    processed: Family<TopicLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    retried: Family<TopicLabels, Counter>,
    dead_lettered: Family<TopicLabels, Counter>,
    skipped: Family<SkippedLabels, Counter>,
    handler_duration: Histograms<TopicLabels>,
    end_to_end: AgeHistograms<TopicLabels>,
    record_age: AgeHistograms<StageLabels>,
    /// Every topic a consumer reported on, for [`Metrics::record_ages`].
    topics_seen: Mutex<HashSet<TopicLabels>>,
    in_flight: Family<GroupLabels, Gauge>,
    buffered: Family<GroupLabels, Gauge>,
    assigned: Family<GroupLabels, Gauge>,
    paused: Family<GroupLabels, Gauge>,
    stuck: Family<GroupLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    commits: Family<ResultLabels, Counter>,
    commit_duration: Histograms<GroupLabels>,
    rebalances: Family<KindLabels, Counter>,
    circuit: Family<StateLabels, Gauge>,
    client_restarts: Family<GroupLabels, Counter>,
    transactions: Family<ResultLabels, Counter>,
    ready: Family<GroupLabels, Gauge>,
    catch_up_remaining: Family<GroupLabels, Gauge>,
    last_poll: Family<GroupLabels, Gauge<f64, AtomicU64>>,
}

impl Families {
    fn register(&self, r: &mut Registry) {
        let f = self;
        r.register(
            "messages_consumed",
            "Messages received from Kafka",
            f.consumed.clone(),
        );
        r.register(
            "messages_processed",
            "Messages the handler finished successfully",
            f.processed.clone(),
        );
        r.register(
            "messages_failed",
            "Messages of failed handler attempts, by error kind",
            f.failed.clone(),
        );
        r.register(
            "messages_retried",
            "Handler calls beyond the first, of finished messages",
            f.retried.clone(),
        );
        r.register(
            "messages_dead_lettered",
            "Messages written to the dead-letter topic and acknowledged by the broker",
            f.dead_lettered.clone(),
        );
        r.register(
            "messages_skipped",
            "Messages not handled: skipped by the handler, or found finished in the group's offset map",
            f.skipped.clone(),
        );
        r.register_with_unit(
            "handler_duration",
            "Duration of one handler call (one batch for batch handlers)",
            Unit::Seconds,
            f.handler_duration.clone(),
        );
        r.register_with_unit(
            "end_to_end_latency",
            "Time from a record's timestamp to its message being finished (its age at the \
             finished stage)",
            Unit::Seconds,
            f.end_to_end.0.clone(),
        );
        r.register_with_unit(
            "record_age",
            "Age of a record (now minus its Kafka timestamp) when polled, when its first handler \
             call starts and when its last handler call ends",
            Unit::Seconds,
            f.record_age.0.clone(),
        );
        r.register(
            "messages_in_flight",
            "Messages taken by handlers and not yet finished (in a call, waiting to retry, being dead-lettered)",
            f.in_flight.clone(),
        );
        r.register(
            "messages_buffered",
            "Messages received and not yet finished",
            f.buffered.clone(),
        );
        r.register(
            "partitions_assigned",
            "Partitions this consumer owns",
            f.assigned.clone(),
        );
        r.register(
            "partitions_paused",
            "Owned partitions paused (backpressure, retries, circuit breaker or stuck)",
            f.paused.clone(),
        );
        r.register(
            "partitions_stuck",
            "Owned partitions stopped at a record the handler gave up on, with no dead-letter topic",
            f.stuck.clone(),
        );
        r.register(
            "consumer_lag",
            "Messages between the committed offset and the log end",
            f.lag.clone(),
        );
        r.register("commits", "Offset commits, by result", f.commits.clone());
        r.register_with_unit(
            "commit_duration",
            "Duration of one offset commit",
            Unit::Seconds,
            f.commit_duration.clone(),
        );
        r.register(
            "rebalances",
            "Partitions assigned or revoked by the group",
            f.rebalances.clone(),
        );
        r.register(
            "circuit_breaker_state",
            "1 for the circuit breaker's current state",
            f.circuit.clone(),
        );
        r.register(
            "client_restarts",
            "Kafka clients re-created after a fatal error or unreachable brokers",
            f.client_restarts.clone(),
        );
        r.register(
            "transactions",
            "Exactly-once transactions, by result",
            f.transactions.clone(),
        );
        r.register(
            "ready",
            "1 while the consumer is ready (see /health/ready)",
            f.ready.clone(),
        );
        r.register(
            "catch_up_remaining",
            "Offsets a reader from the beginning has still to handle up to the log ends seen at \
             start; 0 once caught up",
            f.catch_up_remaining.clone(),
        );
        r.register(
            "last_poll_timestamp_seconds",
            "Unix time of the poll loop's last turn",
            f.last_poll.clone(),
        );
    }
}

/// The handles one consumer reports through: its group's label set, and per-topic handles
/// made once, so that per-message counting is a few atomic additions.
#[derive(Clone)]
pub(crate) struct ConsumerMetrics {
    group: String,
    in_flight: Gauge,
    families: Arc<Families>,
    /// Read on every handler call, from every worker thread: an `ArcSwap` reads without
    /// writing to shared memory, where a lock would bounce its cache line between cores.
    topics: Arc<ArcSwap<HashMap<String, Arc<TopicMetrics>>>>,
}

/// A consumer's counters of one topic.
pub(crate) struct TopicMetrics {
    pub consumed: Counter,
    pub processed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub skipped: Counter,
    pub skipped_as_finished: Counter,
    pub handler_duration: Timings,
    pub end_to_end: Timings,
    polled: Timings,
    handler_start: Timings,
    handler_end: Timings,
    labels: TopicLabels,
}

impl TopicMetrics {
    /// Counts the ages of `messages` at `stage` (not [`Stage::Finished`], counted by
    /// [`finished`](Self::finished)), as of `now`.
    pub fn reached(&self, stage: Stage, messages: &[Message], now: SystemTime) {
        let histogram = match stage {
            Stage::Polled => &self.polled,
            Stage::HandlerStart => &self.handler_start,
            Stage::HandlerEnd => &self.handler_end,
            Stage::Finished => &self.end_to_end,
        };
        for m in messages {
            if let Some(age) = m.age(now) {
                histogram.observe(age);
            }
        }
    }

    /// Counts a finished message: its outcome, its retries and how long after its record's
    /// timestamp (`age`) it finished.
    pub fn finished(&self, outcome: Outcome, age: Option<Duration>) {
        let attempts = match outcome {
            Outcome::Handled { attempts } => {
                self.processed.inc();
                attempts
            }
            Outcome::DeadLettered { attempts } => {
                self.dead_lettered.inc();
                attempts
            }
            Outcome::Skipped => {
                self.skipped.inc();
                1
            }
        };
        if attempts > 1 {
            self.retried.inc_by(u64::from(attempts - 1));
        }
        if let Some(age) = age {
            self.end_to_end.observe(age);
        }
    }
}

impl ConsumerMetrics {
    fn group(&self) -> GroupLabels {
        GroupLabels {
            group: self.group.clone(),
        }
    }

    /// Runs `f` with the handles of `topic` (made on first use), without cloning them.
    pub fn with_topic<R>(&self, topic: &str, f: impl FnOnce(&TopicMetrics) -> R) -> R {
        if let Some(t) = self.topics.load().get(topic) {
            return f(t);
        }
        f(&self.topic(topic))
    }

    /// The handles of `topic`, made on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        if let Some(t) = self.topics.load().get(topic) {
            return t.clone();
        }
        let f = &self.families;
        let labels = TopicLabels {
            group: self.group.clone(),
            topic: topic.to_owned(),
        };
        let skipped = |reason| SkippedLabels {
            group: self.group.clone(),
            topic: topic.to_owned(),
            reason,
        };
        let t = Arc::new(TopicMetrics {
            consumed: f.consumed.get_or_create_owned(&labels),
            processed: f.processed.get_or_create_owned(&labels),
            retried: f.retried.get_or_create_owned(&labels),
            dead_lettered: f.dead_lettered.get_or_create_owned(&labels),
            skipped: f.skipped.get_or_create_owned(&skipped("handler")),
            skipped_as_finished: f.skipped.get_or_create_owned(&skipped("already_finished")),
            handler_duration: f.handler_duration.get_or_create_owned(&labels),
            end_to_end: f.end_to_end.get_or_create_owned(&labels),
            polled: f
                .record_age
                .get_or_create_owned(&StageLabels::of(&labels, Stage::Polled)),
            handler_start: f
                .record_age
                .get_or_create_owned(&StageLabels::of(&labels, Stage::HandlerStart)),
            handler_end: f
                .record_age
                .get_or_create_owned(&StageLabels::of(&labels, Stage::HandlerEnd)),
            labels: labels.clone(),
        });
        lock(&f.topics_seen).insert(labels);
        self.topics.rcu(|topics| {
            let mut topics = HashMap::clone(topics);
            topics.entry(topic.to_owned()).or_insert_with(|| t.clone());
            topics
        });
        self.topics.load()[topic].clone()
    }

    /// Counts `messages` that failed a handler attempt with `kind`.
    pub fn failed(&self, topic: &TopicMetrics, kind: ErrorKind, messages: usize) {
        self.families
            .failed
            .get_or_create(&FailedLabels {
                group: self.group.clone(),
                topic: topic.labels.topic.clone(),
                kind: kind.as_str(),
            })
            .inc_by(messages as u64);
    }

    pub fn in_flight(&self, messages: usize) {
        self.in_flight.set(messages as i64);
    }

    pub fn buffered(&self, messages: usize) {
        self.families
            .buffered
            .get_or_create(&self.group())
            .set(messages as i64);
    }

    pub fn partitions(&self, assigned: usize, paused: usize) {
        let g = self.group();
        self.families
            .assigned
            .get_or_create(&g)
            .set(assigned as i64);
        self.families.paused.get_or_create(&g).set(paused as i64);
    }

    /// Sets how many owned partitions are stopped at a record the handler gave up on.
    pub fn stuck_partitions(&self, stuck: usize) {
        self.families
            .stuck
            .get_or_create(&self.group())
            .set(stuck as i64);
    }

    /// Sets a partition's lag, or forgets it (`None`) once the partition is not ours.
    pub fn lag(&self, topic: &str, partition: i32, lag: Option<i64>) {
        let labels = PartitionLabels {
            group: self.group.clone(),
            topic: topic.to_owned(),
            partition,
        };
        match lag {
            Some(lag) => {
                self.families.lag.get_or_create(&labels).set(lag);
            }
            None => {
                self.families.lag.remove(&labels);
            }
        }
    }

    pub fn commit(&self, ok: bool, took: Duration) {
        self.families
            .commits
            .get_or_create(&ResultLabels {
                group: self.group.clone(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
        self.families
            .commit_duration
            .get_or_create(&self.group())
            .observe(took);
    }

    pub fn rebalance(&self, assign: bool) {
        self.families
            .rebalances
            .get_or_create(&KindLabels {
                group: self.group.clone(),
                kind: if assign { "assign" } else { "revoke" },
            })
            .inc();
    }

    pub fn circuit(&self, state: CircuitState) {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            self.families
                .circuit
                .get_or_create(&StateLabels {
                    group: self.group.clone(),
                    state: s.as_str(),
                })
                .set(i64::from(s == state));
        }
    }

    pub fn client_restarted(&self) {
        self.families
            .client_restarts
            .get_or_create(&self.group())
            .inc();
    }

    pub fn transaction(&self, committed: bool) {
        self.families
            .transactions
            .get_or_create(&ResultLabels {
                group: self.group.clone(),
                result: if committed { "committed" } else { "aborted" },
            })
            .inc();
    }

    pub fn ready(&self, ready: bool) {
        self.families
            .ready
            .get_or_create(&self.group())
            .set(i64::from(ready));
    }

    pub fn catch_up_remaining(&self, offsets: i64) {
        self.families
            .catch_up_remaining
            .get_or_create(&self.group())
            .set(offsets);
    }

    pub fn last_poll(&self, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.families
            .last_poll
            .get_or_create(&self.group())
            .set(secs.as_secs_f64());
    }
}

/// Locks `m`, going on after a panic elsewhere: what it guards stays consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rewrites OpenMetrics text (as `prometheus-client` writes it) in the Prometheus text format.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/metrics.txt` is what the alert rules and the dashboard are checked against.
    #[test]
    fn deploy_metrics_list_names_every_family_with_its_type() {
        let listed: std::collections::BTreeSet<&str> =
            include_str!("../../../../deploy/metrics.txt")
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .collect();
        let metrics = Metrics::new();
        let c = metrics.consumer("g");
        let t = c.topic("t");
        c.failed(&t, ErrorKind::Retryable, 1);
        c.lag("t", 0, Some(0));
        c.transaction(true);
        c.circuit(CircuitState::Closed);
        c.last_poll(SystemTime::now());
        c.catch_up_remaining(0);
        c.commit(true, Duration::ZERO);
        let text = metrics.encode();
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(listed, exported);
    }

    #[test]
    fn prometheus_text_names_counters_with_their_suffix() {
        let metrics = Metrics::new();
        let c = metrics.consumer("g");
        let t = c.topic("orders");
        t.consumed.inc_by(3);
        t.handler_duration.observe(Duration::from_millis(200));
        let text = metrics.encode_prometheus();
        assert!(
            text.contains(
                "# HELP sluicegate_messages_consumed_total Messages received from Kafka."
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sluicegate_messages_consumed_total counter"),
            "{text}"
        );
        assert!(
            text.contains("sluicegate_messages_consumed_total{group=\"g\",topic=\"orders\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE sluicegate_handler_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }
}
