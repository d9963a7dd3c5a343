//! Brokers for the integration tests, and helpers that produce data and read back, straight
//! from the broker, what a consumer group committed.
//!
//! Each behaviour is tested against three brokers (see [`on_both_brokers!`]):
//! - **embedded**: `sluicegate::EmbeddedKafka` (librdkafka's mock cluster), one per test;
//! - **kafka**: Apache Kafka, the reference (`common/kafka_broker.rs`), a single-node KRaft
//!   broker started once per test binary on free loopback ports;
//! - **tansu**: an independent Kafka implementation, started once per test binary.
//!
//! Both real brokers are stopped when the test binary exits (even after a panic or a kill: each
//! watches a pipe from this process).
//!
//! Environment variables:
//! - `SLUICEGATE_TEST_BOOTSTRAP=host:port[,host:port...]`: run the `kafka` tests against this
//!   broker (a Kafka cluster of your own, Redpanda, MSK...) instead of starting Apache Kafka.
//!   Topics and groups get unique names and are left behind.
//! - `SLUICEGATE_TEST_CONFIG=path.yaml`: the same, with the brokers and the connection
//!   settings (`security:`, `librdkafka:`) of a Sluicegate configuration file, and the
//!   `KAFKA_*` environment over it (`KAFKA_SASL_PASSWORD`, ...), as the library reads them;
//!   `SLUICEGATE_TEST_BOOTSTRAP`, when also set, names the brokers. Every client of the
//!   harness and of the tests uses these settings (OAUTHBEARER token providers excepted).
//! - `SLUICEGATE_KAFKA_HOME=/path`: the Apache Kafka jars (`libs/`) to start. Default:
//!   `.tools/kafka` at the workspace root, where `scripts/install-kafka` puts them. A test that
//!   needs Kafka fails (not skips) when it cannot start.
//! - `SLUICEGATE_TANSU=/path/to/tansu`: the tansu binary to start. Default: `.tools/bin/tansu`
//!   at the workspace root, where `scripts/install-tansu` puts it.
//! - `SLUICEGATE_SKIP_TANSU=1`: when no tansu binary is found, let the tansu tests pass
//!   without running. Without it, they fail and say how to install tansu.
//! - `RUST_LOG` (e.g. `sluicegate=debug`): logs of the library under test, shown for failing
//!   tests.
//!
//! The brokers' own output goes to `target/tmp/kafka-<pid>-<port>.log` and
//! `target/tmp/tansu-<pid>-<port>.log`.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluicegate::{
    ConsumerBuilder, ConsumerStatus, EmbeddedKafka, Message, StatusWatch, TopicPartition,
};
use tokio::sync::watch;

pub mod kafka_broker;
pub mod pki;
mod tansu;
use kafka_broker::KafkaBroker;
use tansu::{env_nonempty, Tansu};

pub mod checker;
pub mod http;
pub mod process;

// What the CLI's demo and bench share with these tests: the records written, the ledgers,
// the read-back loop.
#[path = "../../../sluicegate-cli/src/workload/ledger.rs"]
pub mod ledger;
#[path = "../../../sluicegate-cli/src/workload/mem.rs"]
#[allow(dead_code)] // Only the soak test reads it.
pub mod mem;
#[path = "../../../sluicegate-cli/src/workload/read_back.rs"]
pub mod read_back;
#[path = "../../../sluicegate-cli/src/workload/records.rs"]
pub mod records;
use read_back::Until;

/// How long one request of the harness to a broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Defines, for an `async fn NAME(broker: TestBroker) -> anyhow::Result<()>`, a module `NAME`
/// with three tests: `NAME::embedded`, `NAME::kafka` (Apache Kafka) and `NAME::tansu`. Declare
/// the harness with `#[macro_use] mod common;` to use it. [`on_embedded_and_kafka!`] leaves
/// tansu out, for tests too long to run on both real brokers in CI.
macro_rules! on_both_brokers {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() -> anyhow::Result<()> {
                super::$name($crate::common::TestBroker::embedded()?).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka() -> anyhow::Result<()> {
                super::$name($crate::common::TestBroker::kafka()?).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tansu() -> anyhow::Result<()> {
                match $crate::common::TestBroker::tansu()? {
                    Some(broker) => super::$name(broker).await,
                    None => Ok(()),
                }
            }
        }
    )+};
}

/// Like [`on_both_brokers!`], without tansu: `NAME::embedded` and `NAME::kafka`.
#[allow(unused_macros)] // Not every test file has such tests.
macro_rules! on_embedded_and_kafka {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() -> anyhow::Result<()> {
                super::$name($crate::common::TestBroker::embedded()?).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka() -> anyhow::Result<()> {
                super::$name($crate::common::TestBroker::kafka()?).await
            }
        }
    )+};
}

/// Like [`on_both_brokers!`], on Apache Kafka only: `NAME::kafka`, for what the other test
/// brokers cannot show.
#[allow(unused_macros)] // Not every test file has such tests.
macro_rules! on_kafka {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka() -> anyhow::Result<()> {
                super::$name($crate::common::TestBroker::kafka()?).await
            }
        }
    )+};
}

/// Which broker a [`TestBroker`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// librdkafka's mock cluster in this process.
    Embedded,
    /// The Apache Kafka started by this test binary.
    Kafka,
    /// The tansu started by this test binary.
    Tansu,
    /// A cluster given by `SLUICEGATE_TEST_BOOTSTRAP` or `SLUICEGATE_TEST_CONFIG`, in place of
    /// Apache Kafka.
    External,
}

impl Kind {
    /// The broker's name in reports: `embedded`, `kafka`, `tansu` or `external`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Embedded => "embedded",
            Kind::Kafka => "kafka",
            Kind::Tansu => "tansu",
            Kind::External => "external",
        }
    }
}

/// A broker for one test: its address, and clients to create topics, produce and inspect.
pub struct TestBroker {
    kind: Kind,
    bootstrap: String,
    /// librdkafka properties every client of this broker needs besides the bootstrap servers
    /// (the security settings of an external cluster).
    settings: Vec<(String, String)>,
    // Declared before the broker it talks to, so that it is dropped first.
    producer: FutureProducer,
    embedded: Option<EmbeddedKafka>,
}

/// One record produced by the harness, where the broker put it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: String,
}

impl TestBroker {
    /// A fresh mock cluster of one broker.
    pub fn embedded() -> anyhow::Result<Self> {
        Self::embedded_cluster(1)
    }

    /// A fresh mock cluster of `brokers` brokers (ids 1..=brokers).
    pub fn embedded_cluster(brokers: i32) -> anyhow::Result<Self> {
        init_logs();
        let kafka = EmbeddedKafka::start(brokers).context("start the embedded broker")?;
        let bootstrap = kafka.bootstrap_servers().to_string();
        Self::new(Kind::Embedded, bootstrap, Some(kafka))
    }

    /// The reference broker: `SLUICEGATE_TEST_BOOTSTRAP` if set, else the Apache Kafka shared
    /// by this test binary (started on first use; an error if it cannot start).
    pub fn kafka() -> anyhow::Result<Self> {
        init_logs();
        let file = env_nonempty("SLUICEGATE_TEST_CONFIG");
        let bootstrap = env_nonempty("SLUICEGATE_TEST_BOOTSTRAP");
        if file.is_some() || bootstrap.is_some() {
            let yaml = match &file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("read SLUICEGATE_TEST_CONFIG={path}"))?,
                ),
                None => None,
            };
            return Self::external(yaml.as_deref(), std::env::vars(), bootstrap);
        }
        Self::started_kafka()
    }

    /// A cluster of one's own, as a configuration file (`yaml`) and the `KAFKA_*` environment
    /// (`env`) describe it, the library's way; `bootstrap`, if given, names its brokers.
    pub fn external(
        yaml: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
        bootstrap: Option<String>,
    ) -> anyhow::Result<Self> {
        let overrides: Vec<(String, String)> = bootstrap
            .map(|b| ("bootstrap_servers".to_string(), b))
            .into_iter()
            .collect();
        let loaded = sluicegate::config::ConsumerConfig::resolve_for(
            sluicegate::config::Purpose::Clients,
            yaml,
            env,
            &overrides,
        )
        .map_err(|e| anyhow!("the external cluster's configuration: {e}"))?;
        let client = loaded
            .config
            .client_config(sluicegate::config::ClientKind::Admin);
        let mut settings = Vec::new();
        let mut brokers = None;
        for (key, value) in client.iter() {
            match key {
                "bootstrap.servers" => brokers = Some(value.to_string()),
                _ => settings.push((key.to_string(), value.to_string())),
            }
        }
        let brokers = brokers.context("the external cluster's configuration names no brokers")?;
        Self::with_settings(Kind::External, brokers, settings, None)
    }

    /// The Apache Kafka shared by this test binary (its PLAINTEXT listener), even when
    /// `SLUICEGATE_TEST_BOOTSTRAP` is set: for tests that need its other listeners and users
    /// ([`shared_kafka`]).
    pub fn started_kafka() -> anyhow::Result<Self> {
        init_logs();
        let bootstrap = shared_kafka()?.bootstrap.clone();
        Self::new(Kind::Kafka, bootstrap, None)
    }

    /// The Apache Kafka `kafka`, which the test started itself (to kill and restart it, say)
    /// in place of the shared one.
    pub fn on_kafka(kafka: &KafkaBroker) -> anyhow::Result<Self> {
        init_logs();
        Self::new(Kind::Kafka, kafka.bootstrap.clone(), None)
    }

    /// The tansu shared by this test binary. `None` when no tansu binary is installed and
    /// `SLUICEGATE_SKIP_TANSU=1` allows skipping.
    pub fn tansu() -> anyhow::Result<Option<Self>> {
        init_logs();
        let bin = tansu::binary();
        if !bin.is_file() {
            if env_nonempty("SLUICEGATE_SKIP_TANSU").as_deref() == Some("1") {
                eprintln!(
                    "SKIPPED: no tansu binary at {} and SLUICEGATE_SKIP_TANSU=1",
                    bin.display()
                );
                return Ok(None);
            }
            bail!(
                "no tansu binary at {}: run scripts/install-tansu (or set SLUICEGATE_TANSU to a \
                 tansu binary, or SLUICEGATE_SKIP_TANSU=1 to skip the tansu tests)",
                bin.display()
            );
        }
        static TANSU: OnceLock<Result<Tansu, String>> = OnceLock::new();
        let tansu = tokio::task::block_in_place(|| TANSU.get_or_init(|| Tansu::start(&bin)));
        let bootstrap = tansu
            .as_ref()
            .map_err(|e| anyhow!("{e}"))?
            .bootstrap
            .clone();
        Self::new(Kind::Tansu, bootstrap, None).map(Some)
    }

    fn new(kind: Kind, bootstrap: String, embedded: Option<EmbeddedKafka>) -> anyhow::Result<Self> {
        Self::with_settings(kind, bootstrap, Vec::new(), embedded)
    }

    fn with_settings(
        kind: Kind,
        bootstrap: String,
        settings: Vec<(String, String)>,
        embedded: Option<EmbeddedKafka>,
    ) -> anyhow::Result<Self> {
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (key, value) in &settings {
            producer.set(key, value);
        }
        let producer = producer.create().context("create the test producer")?;
        Ok(TestBroker {
            kind,
            bootstrap,
            settings,
            producer,
            embedded,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// A consumer builder for this broker with settings that keep group joins short.
    pub fn consumer(&self, group: &str, topic: &str) -> ConsumerBuilder {
        self.builder()
            .group_id(group)
            .topic(topic)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
    }

    /// A consumer builder that reaches this broker (its address and settings), nothing else.
    pub fn builder(&self) -> ConsumerBuilder {
        let builder = sluicegate::Consumer::builder().bootstrap_servers(&self.bootstrap);
        self.settings
            .iter()
            .fold(builder, |b, (key, value)| b.set(key, value))
    }

    /// Client settings that reach this broker: its address and settings.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        config
    }

    /// A consumer builder for this broker with the group protocol `protocol`: with the classic
    /// protocol that of [`consumer`](Self::consumer) (short session); with the consumer protocol
    /// (KIP-848) the session and heartbeat are the broker's, and the client may not set them
    /// (the test Kafka sets `group.consumer.session.timeout.ms=6000` and
    /// `group.consumer.heartbeat.interval.ms=500`; the mock cluster 30 s and 3 s).
    pub fn consumer_with(
        &self,
        group: &str,
        topic: &str,
        protocol: sluicegate::GroupProtocol,
    ) -> ConsumerBuilder {
        match protocol {
            sluicegate::GroupProtocol::Classic => self.consumer(group, topic),
            sluicegate::GroupProtocol::Consumer => self.builder().group_id(group).topic(topic),
        }
        .group_protocol(protocol)
    }

    /// Creates `name` with `partitions` partitions and waits until its metadata shows them all
    /// with a leader.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        match &self.embedded {
            Some(kafka) => kafka
                .create_topic(name, partitions)
                .with_context(|| format!("create topic {name}"))?,
            None => {
                let admin: AdminClient<DefaultClientContext> = self.client().create()?;
                // tansu and the test Kafka have one broker; elsewhere let the broker pick its
                // default replication.
                let replication = match self.kind {
                    Kind::Tansu | Kind::Kafka => TopicReplication::Fixed(1),
                    _ => TopicReplication::Fixed(-1),
                };
                let topic = NewTopic::new(name, partitions, replication);
                let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
                let results = admin
                    .create_topics([&topic], &opts)
                    .await
                    .with_context(|| format!("create topic {name}"))?;
                for r in results {
                    r.map_err(|(t, e)| anyhow!("create topic {t}: {e}"))?;
                }
            }
        }
        let config = self.client();
        let name = name.to_string();
        blocking(move || {
            let client: BaseConsumer = config.create()?;
            let deadline = Instant::now() + REQUEST_TIMEOUT * 3;
            loop {
                let ready = client
                    .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
                    .ok()
                    .and_then(|m| {
                        m.topics()
                            .iter()
                            .find(|t| t.name() == name && t.error().is_none())
                            .map(|t| {
                                t.partitions().len() == partitions as usize
                                    && t.partitions().iter().all(|p| p.leader() >= 0)
                            })
                    })
                    .unwrap_or(false);
                if ready {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("topic {name} did not show {partitions} partitions with leaders");
                }
                // Polling the broker's metadata: there is no event to wait on.
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
    }

    /// Creates `topic` with `partitions` partitions, produces `per_partition` records to each
    /// (see [`produce_to_partitions`](Self::produce_to_partitions)) and returns them with the
    /// log end of each partition (see [`log_end`](Self::log_end)).
    pub async fn fill_topic(
        &self,
        topic: &str,
        partitions: i32,
        per_partition: usize,
    ) -> anyhow::Result<(Vec<Produced>, BTreeMap<i32, i64>)> {
        self.create_topic(topic, partitions).await?;
        let produced = self
            .produce_to_partitions(topic, partitions, per_partition)
            .await?;
        let end = self.log_end(topic, &produced).await?;
        Ok((produced, end))
    }

    /// Produces `count` records numbered `first..first + count` to `topic`, keyed over `keys`
    /// distinct keys and partitioned by key; waits until the broker acknowledged every one.
    pub async fn produce_keyed(
        &self,
        topic: &str,
        first: usize,
        count: usize,
        keys: usize,
    ) -> anyhow::Result<Vec<Produced>> {
        let records = (first..first + count).map(|i| {
            (
                None,
                format!("key-{}", i % keys.max(1)),
                format!("{topic}:{i}"),
            )
        });
        self.produce_records(topic, records).await
    }

    /// Produces scenario records `first..first + count` keyed over `keys` keys (see
    /// [`records::records`]), partitioned by key; waits until the broker acknowledged every one.
    pub async fn produce_scenario(
        &self,
        topic: &str,
        first: u64,
        count: u64,
        keys: u64,
    ) -> anyhow::Result<Vec<Produced>> {
        let all = records::records(first, count, keys);
        self.produce_records(topic, all.into_iter().map(|(k, p)| (None, k, p)))
            .await
    }

    /// Produces `count` records to each of `partitions` (explicitly, not by key); waits until
    /// the broker acknowledged every one.
    pub async fn produce_to_partitions(
        &self,
        topic: &str,
        partitions: i32,
        count: usize,
    ) -> anyhow::Result<Vec<Produced>> {
        let records = (0..partitions).flat_map(|p| {
            (0..count).map(move |i| (Some(p), format!("key-{p}-{i}"), format!("{topic}:{p}:{i}")))
        });
        self.produce_records(topic, records).await
    }

    /// Produces `(partition, key, payload)` records (`None`: partitioned by key); waits until
    /// the broker acknowledged every one.
    pub async fn produce_records(
        &self,
        topic: &str,
        records: impl Iterator<Item = (Option<i32>, String, String)>,
    ) -> anyhow::Result<Vec<Produced>> {
        let mut pending = Vec::new();
        for (partition, key, payload) in records {
            let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| anyhow!("enqueue a record for {topic}: {e}"))?;
            pending.push((key, payload, delivery));
        }
        let mut produced = Vec::with_capacity(pending.len());
        for (key, payload, delivery) in pending {
            let d = tokio::time::timeout(Duration::from_secs(60), delivery)
                .await
                .context("delivery report timed out")?
                .context("producer dropped the delivery report")?
                .map_err(|(e, _)| anyhow!("produce to {topic}: {e}"))?;
            produced.push(Produced {
                partition: d.partition,
                offset: d.offset,
                key,
                payload,
            });
        }
        Ok(produced)
    }

    /// Produces records with any key, value and headers (hostile input); waits until the broker
    /// acknowledged every one. `payload` of each result is the value, lossily as text.
    pub async fn produce_raw(
        &self,
        topic: &str,
        records: &[RawRecord],
    ) -> anyhow::Result<Vec<Produced>> {
        let mut produced = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = rdkafka::message::OwnedHeaders::new();
            for (key, value) in &r.headers {
                headers = headers.insert(rdkafka::message::Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                .partition(r.partition)
                .headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(v) = &r.payload {
                record = record.payload(v);
            }
            let d = self
                .producer
                .send(record, Duration::from_secs(60))
                .await
                .map_err(|(e, _)| anyhow!("produce to {topic}: {e}"))?;
            produced.push(Produced {
                partition: d.partition,
                offset: d.offset,
                key: String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                payload: String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default())
                    .into_owned(),
            });
        }
        Ok(produced)
    }

    /// The offsets (next to consume) that `group` has committed for each partition of `topic`,
    /// as the broker reports them; partitions without a commit are left out.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut config = self.client();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let topic = topic.to_string();
        blocking(move || {
            let client: BaseConsumer = config.create()?;
            let mut list = TopicPartitionList::new();
            for p in partitions_of(&client, &topic)? {
                list.add_partition(&topic, p);
            }
            let committed = client
                .committed_offsets(list, REQUEST_TIMEOUT)
                .with_context(|| format!("read committed offsets of {topic}"))?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect())
        })
        .await
    }

    /// The log end offset of each partition of `topic`, from the broker's acknowledgements of
    /// `produced` (everything the test wrote to this fresh topic). Checks that the records sit
    /// at offsets `0..end` of their partitions, with no gap and nothing else, and, where the
    /// broker reports it correctly, that the high watermark agrees.
    ///
    /// tansu 0.6.0 reports a wrong high watermark (ListOffsets `latest` answers the base offset
    /// of the last record batch plus one, not the log end), so on tansu the acknowledgements
    /// are the only source.
    pub async fn log_end(
        &self,
        topic: &str,
        produced: &[Produced],
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let high = self.high_watermarks(topic).await?;
        let mut offsets: BTreeMap<i32, BTreeSet<i64>> =
            high.keys().map(|p| (*p, BTreeSet::new())).collect();
        for r in produced {
            let fresh = offsets
                .get_mut(&r.partition)
                .with_context(|| format!("record acknowledged in unknown partition: {r:?}"))?
                .insert(r.offset);
            ensure!(fresh, "two records acknowledged at one offset: {r:?}");
        }
        let mut end = BTreeMap::new();
        for (p, offsets) in offsets {
            let n = offsets.len() as i64;
            ensure!(
                offsets.iter().copied().eq(0..n),
                "records of {topic}/{p} are not at offsets 0..{n}: {:?}...",
                offsets.iter().take(10).collect::<Vec<_>>()
            );
            end.insert(p, n);
        }
        if self.kind != Kind::Tansu {
            ensure!(
                high == end,
                "high watermarks {high:?} differ from the acknowledged log end {end:?}: records \
                 were dropped or written by someone else, or the broker misreports its high \
                 watermarks (tansu 0.6 does: give it with SLUICEGATE_TANSU, not as an external \
                 broker)"
            );
        }
        Ok(end)
    }

    /// The high watermark (log end offset, as the broker reports it) of each partition.
    pub async fn high_watermarks(&self, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
        let config = self.client();
        let topic = topic.to_string();
        blocking(move || {
            let client: BaseConsumer = config.create()?;
            partitions_of(&client, &topic)?
                .into_iter()
                .map(|p| {
                    let (_, high) = client
                        .fetch_watermarks(&topic, p, REQUEST_TIMEOUT)
                        .with_context(|| format!("watermarks of {topic}/{p}"))?;
                    Ok((p, high))
                })
                .collect()
        })
        .await
    }

    /// The embedded broker, for fault injection; `None` on a real broker.
    pub fn embedded_kafka(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_ref()
    }

    /// Reads `topic` from its beginning, in no group, until `n` records have arrived; at most
    /// `limit`. (Not up to the high watermark: tansu 0.6 misreports it.)
    pub async fn read_records(
        &self,
        topic: &str,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        self.read(topic, Isolation::ReadUncommitted, Until::Count(n), limit)
            .await
    }

    /// Reads every partition of `topic` from its beginning to its end, in no group, as a
    /// reader with `isolation` sees it; at most `limit`. The end is where the broker reports
    /// it (librdkafka's partition EOF): the last stable offset for [`Isolation::ReadCommitted`]
    /// (so records after a transaction still open are not read), the high watermark for
    /// [`Isolation::ReadUncommitted`]. Unlike [`read_records`](Self::read_records), it needs
    /// no count.
    pub async fn read_to_end(
        &self,
        topic: &str,
        isolation: Isolation,
        limit: Duration,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        self.read(topic, isolation, Until::End, limit).await
    }

    /// The diagnosis of every record in the dead-letter topic `topic` (a record handled twice
    /// may be dead-lettered twice): as many as its high watermarks count, and at least `least`
    /// (tansu 0.6 misreports high watermarks); at most `limit`.
    pub async fn dead_letters(
        &self,
        topic: &str,
        least: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<sluicegate::dead_letter::DeadLetterRecord>> {
        let held = self.high_watermarks(topic).await?.values().sum::<i64>() as usize;
        self.read_records(topic, held.max(least), limit)
            .await?
            .iter()
            .map(diagnosis)
            .collect()
    }

    /// Reads every partition of `topic` from its beginning, in no group, as `isolation` says,
    /// until `until` holds; at most `limit`.
    async fn read(
        &self,
        topic: &str,
        isolation: Isolation,
        until: Until,
        limit: Duration,
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let mut config = self.client();
        config
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation.as_str());
        let topic = topic.to_string();
        blocking(move || {
            let client: BaseConsumer = config.create()?;
            let mut list = TopicPartitionList::new();
            for p in partitions_of(&client, &topic)? {
                list.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            client.assign(&list)?;
            let mut records = Vec::new();
            read_back::read(&client, &topic, until, limit, |m| {
                records.push(m.detach());
                Ok(())
            })?;
            Ok(records)
        })
        .await
    }
}

/// What a reader sees of transactions (its `isolation.level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Records of committed transactions and records written outside transactions, up to the
    /// last stable offset: what readers of an exactly-once pipeline's outputs use.
    ReadCommitted,
    /// Every record, also those of aborted and of open transactions, up to the high watermark
    /// (librdkafka's default).
    ReadUncommitted,
}

impl Isolation {
    /// The value of `isolation.level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// The Apache Kafka shared by the tests of this binary, started on first use.
pub fn shared_kafka() -> anyhow::Result<&'static KafkaBroker> {
    static KAFKA: OnceLock<Result<KafkaBroker, String>> = OnceLock::new();
    let start = || KAFKA.get_or_init(KafkaBroker::start);
    // On a runtime thread, starting (seconds) must not stall the runtime's other tasks.
    let kafka = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(start),
        _ => start(),
    };
    kafka.as_ref().map_err(|e| anyhow!("{e}"))
}

fn partitions_of(client: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("no metadata for topic {topic}"))?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("harness task panicked")?
}

/// A name no other test (or earlier run against an external broker) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, AtomicOrdering::Relaxed),
        rand::random::<u32>()
    )
}

/// `(topic, partition)` of `topic`.
pub fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// `true` when `status` shows, for every partition with data, a commit at its log end.
pub fn committed_to_end(status: &ConsumerStatus, topic: &str, end: &BTreeMap<i32, i64>) -> bool {
    end.iter()
        .all(|(p, e)| *e == 0 || status.committed.get(&tp(topic, *p)) == Some(e))
}

/// Each partition's log end (the offset after its last record) from what was written to a
/// fresh topic.
pub fn ends_of(written: &[Produced]) -> BTreeMap<i32, i64> {
    let mut end = BTreeMap::new();
    for w in written {
        let e = end.entry(w.partition).or_insert(0);
        *e = (*e).max(w.offset + 1);
    }
    end
}

/// The diagnosis of a record read from a dead-letter topic.
pub fn diagnosis(
    record: &OwnedMessage,
) -> anyhow::Result<sluicegate::dead_letter::DeadLetterRecord> {
    let headers: Vec<sluicegate::Header> = record
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| sluicegate::Header::new(h.key, h.value))
                .collect()
        })
        .unwrap_or_default();
    sluicegate::dead_letter::DeadLetterRecord::from_headers(&headers).map_err(anyhow::Error::msg)
}

/// Shuts `handle` down gracefully and waits (at most a minute) for it to stop without error.
pub async fn stop(handle: sluicegate::ConsumerHandle) -> anyhow::Result<()> {
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .context("consumer did not stop after shutdown")?
        .context("consumer ended with an error")
}

/// Waits until the status satisfies `done`, at most `limit`; the error names `what` and shows
/// the last status seen.
pub async fn wait_status(
    status: &mut StatusWatch,
    limit: Duration,
    what: &str,
    done: impl FnMut(&ConsumerStatus) -> bool,
) -> anyhow::Result<ConsumerStatus> {
    match tokio::time::timeout(limit, status.wait_for(done)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => bail!("{e} while waiting for {what}"),
        Err(_) => bail!(
            "timed out after {limit:?} waiting for {what}; last status: {:?}",
            status.current()
        ),
    }
}

/// One message as a handler saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub partition: i32,
    pub offset: i64,
    pub payload: String,
    /// When the handler finished it.
    pub at: std::time::Instant,
}

/// A record of any shape, for [`TestBroker::produce_raw`].
#[derive(Clone, Debug, Default)]
pub struct RawRecord {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Records what a handler was given, in order, and lets a test wait for a count.
#[derive(Clone)]
pub struct Recorder {
    handled: Arc<Mutex<Vec<Handled>>>,
    count: Arc<watch::Sender<usize>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            handled: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }
}

impl Recorder {
    pub fn record(&self, msg: &Message) {
        let h = Handled {
            partition: msg.partition(),
            offset: msg.offset(),
            payload: String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned(),
            at: std::time::Instant::now(),
        };
        self.handled.lock().unwrap().push(h);
        self.count.send_modify(|n| *n += 1);
    }

    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    pub fn handled(&self) -> Vec<Handled> {
        self.handled.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the messages recorded so far, at most `limit`.
    pub async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&[Handled]) -> bool,
    ) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            rx.borrow_and_update();
            if done(&self.handled.lock().unwrap()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => bail!(
                    "timed out after {limit:?} waiting for {what}; {} messages handled",
                    self.count()
                ),
            }
        }
    }

    /// Waits until at least `n` messages were recorded, at most `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|c| *c >= n))
            .await
            .map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(()),
            _ => bail!(
                "timed out after {limit:?} waiting for {n} handled messages; got {}",
                self.count()
            ),
        }
    }
}

/// Sends the library's logs (`RUST_LOG`) to the test's output, shown for failing tests.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
