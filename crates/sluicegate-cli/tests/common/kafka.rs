//! Brokers and plain-rdkafka clients for the end-to-end tests: the brokers a test runs against
//! ([`Broker`]: embedded, or the Apache Kafka and the tansu shared by the tests of a binary,
//! each started on first use), names unique to a run, producing records one batch each,
//! committing and reading a group's offsets as a client outside the group, and a consumer that
//! has joined its group.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluicegate::EmbeddedKafka;

use super::kafka_broker::KafkaBroker;
use super::tansu::{self, Tansu};

/// How long one run of the command, or one wait of the test, may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A name no other test (or earlier run against an external broker) uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{prefix}-{}-{millis}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Produces `counts[p]` records to each partition `p` of `topic`, each in a batch of its own
/// (flushed one by one), with timestamp `timestamp`; waits for every acknowledgement.
pub fn produce(bootstrap: &str, topic: &str, counts: &[i64], timestamp: i64) {
    let log_end = |p| watermarks(bootstrap, topic, p).1;
    let before: Vec<i64> = (0..counts.len() as i32).map(log_end).collect();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    for (p, &n) in counts.iter().enumerate() {
        for i in 0..n {
            producer
                .send(
                    BaseRecord::to(topic)
                        .partition(p as i32)
                        .key(&format!("key-{i}"))
                        .payload(&format!("record {i} of partition {p}"))
                        .timestamp(timestamp),
                )
                .expect("queued");
            producer.flush(LIMIT).expect("record acknowledged");
        }
    }
    let high: Vec<i64> = (0..counts.len() as i32).map(log_end).collect();
    let want: Vec<i64> = before.iter().zip(counts).map(|(b, n)| b + n).collect();
    assert_eq!(high, want, "the broker holds other records than produced");
}

/// The (low, high) watermarks of `topic`/`partition`. Asked again (bounded by `LIMIT`) while the
/// partition's leader is not leading yet: right after a topic is created, Apache Kafka lists
/// the leader in its metadata a moment before that leader answers ListOffsets.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let deadline = Instant::now() + LIMIT;
    loop {
        match client.fetch_watermarks(topic, partition, LIMIT) {
            Ok(marks) => return marks,
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::NotLeaderForPartition)
                        | Some(RDKafkaErrorCode::LeaderNotAvailable)
                ) && Instant::now() < deadline =>
            {
                // Leadership changes announce themselves to no one: asking again is the only way.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("watermarks of {topic}/{partition}: {e}"),
        }
    }
}

/// A client of `group` that never subscribes: it reads and commits the group's offsets.
pub fn group_client(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("client")
}

/// What `group` has committed for partitions `0..partitions` of `topic`, straight from the
/// broker (`None`: nothing committed).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let found = group_client(bootstrap, group)
        .committed_offsets(list, LIMIT)
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// Commits `offsets` (partition, next offset to consume) for `group`, as a client outside the
/// group would: the starting point of a test.
pub fn commit(bootstrap: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let mut list = TopicPartitionList::new();
    for &(p, o) in offsets {
        list.add_partition_offset(topic, p, Offset::Offset(o))
            .expect("partition");
    }
    let client = group_client(bootstrap, group);
    let deadline = Instant::now() + LIMIT;
    loop {
        match client.commit(&list, CommitMode::Sync) {
            Ok(()) => return,
            // The first commit to a fresh Apache Kafka creates the offsets topic, and its
            // coordinator answers "loading" until that topic is loaded.
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::CoordinatorLoadInProgress)
                        | Some(RDKafkaErrorCode::CoordinatorNotAvailable)
                        | Some(RDKafkaErrorCode::NotCoordinator)
                ) && Instant::now() < deadline =>
            {
                // Coordinator readiness announces itself to no one: asking again is the only
                // way.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("starting offsets of group `{group}` not committed: {e}"),
        }
    }
}

/// A consumer of `group` subscribed to `topic`, once it has joined: polled (bounded by
/// `LIMIT`) until the group gave it an assignment.
pub fn joined_consumer(bootstrap: &str, group: &str, topic: &str, client_id: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + LIMIT;
    // The assignment arrives through the rebalance callback, which runs inside `poll`.
    while consumer.assignment().expect("assignment").count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the consumer did not join group `{group}` within {LIMIT:?}"
        );
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            panic!("the consumer failed while joining: {e}");
        }
    }
    consumer
}

/// A broker the tests run against.
pub enum Broker {
    /// librdkafka's mock cluster, in this process, one per test.
    Embedded(EmbeddedKafka),
    /// Apache Kafka (or the broker given by `SLUICEGATE_TEST_BOOTSTRAP`), shared by the tests
    /// of the binary.
    Kafka(&'static SharedKafka),
    /// tansu 0.6, shared by the tests of the binary.
    Tansu(&'static Tansu),
}

impl Broker {
    /// A fresh embedded broker.
    pub fn embedded() -> Broker {
        Broker::Embedded(EmbeddedKafka::start(1).expect("embedded broker"))
    }

    /// The Apache Kafka shared by this test binary (see [`shared_kafka`]).
    pub fn kafka() -> Broker {
        Broker::Kafka(shared_kafka())
    }

    /// The shared tansu, or `None` when tansu tests are skipped (see [`shared_tansu`]).
    pub fn tansu() -> Option<Broker> {
        shared_tansu().map(Broker::Tansu)
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Broker::Embedded(kafka) => kafka.bootstrap_servers(),
            Broker::Kafka(kafka) => &kafka.bootstrap,
            Broker::Tansu(tansu) => &tansu.bootstrap,
        }
    }

    /// Creates `topic` with `partitions` partitions the way this broker allows (the mock has no
    /// CreateTopics; tansu with its own command) and waits until the metadata shows each
    /// partition with a leader.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Broker::Embedded(kafka) => kafka.create_topic(topic, partitions).expect("topic"),
            Broker::Kafka(kafka) => create_topic_with_admin(&kafka.bootstrap, topic, partitions),
            Broker::Tansu(tansu) => create_topic(tansu, topic, partitions),
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Broker::Embedded(_))
    }

    pub fn is_kafka(&self) -> bool {
        matches!(self, Broker::Kafka(_))
    }

    pub fn is_tansu(&self) -> bool {
        matches!(self, Broker::Tansu(_))
    }
}

/// The Apache Kafka the `kafka` tests of one test binary run against.
pub struct SharedKafka {
    pub bootstrap: String,
    /// The broker this test binary started; `None` for one given by `SLUICEGATE_TEST_BOOTSTRAP`.
    pub started: Option<KafkaBroker>,
}

impl SharedKafka {
    /// Whether it is a broker of this test binary (node id 1, one replica per partition), not
    /// one given by `SLUICEGATE_TEST_BOOTSTRAP`.
    pub fn is_ours(&self) -> bool {
        self.started.is_some()
    }
}

/// The Apache Kafka shared by the tests of one test binary (see the library's
/// `tests/common/kafka_broker.rs`), started on first use and stopped when the binary exits; or,
/// when `SLUICEGATE_TEST_BOOTSTRAP=host:port[,...]` is set, that broker instead (topics and
/// groups get unique names and are left behind). A test that needs it fails when it cannot
/// start, and so does every later one, with the same error, without trying again.
pub fn shared_kafka() -> &'static SharedKafka {
    static SHARED: OnceLock<Result<SharedKafka, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| match tansu::env_nonempty("SLUICEGATE_TEST_BOOTSTRAP") {
            Some(bootstrap) => Ok(SharedKafka {
                bootstrap,
                started: None,
            }),
            None => KafkaBroker::start().map(|broker| {
                warm_up(&broker.bootstrap);
                SharedKafka {
                    bootstrap: broker.bootstrap.clone(),
                    started: Some(broker),
                }
            }),
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Has a freshly started broker serve once each kind of request the tests make: CreateTopics,
/// Produce, ListOffsets and a group commit (which creates the offsets topic). On 2 busy cores a
/// fresh broker takes seconds to do each the first time; done here, within `LIMIT`, that time
/// is not charged to the command under test, whose own look-ups wait at most 10 s.
fn warm_up(bootstrap: &str) {
    let topic = unique("sluicegate-cli-warm-up");
    create_topic_with_admin(bootstrap, &topic, 1);
    produce(bootstrap, &topic, &[1], now_ms());
    commit(bootstrap, &topic, &topic, &[(0, 1)]);
}

/// The tansu shared by the tests of one test binary (see the library's `tests/common/tansu.rs`),
/// started on first use. Without a tansu binary the tansu tests fail and say how to install it,
/// unless `SLUICEGATE_SKIP_TANSU=1` lets them pass without running (`None`).
pub fn shared_tansu() -> Option<&'static Tansu> {
    static SHARED: OnceLock<Option<Tansu>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let bin = tansu::binary();
            if !bin.is_file() {
                if std::env::var("SLUICEGATE_SKIP_TANSU").as_deref() == Ok("1") {
                    eprintln!(
                        "no tansu at {}: skipped (SLUICEGATE_SKIP_TANSU=1)",
                        bin.display()
                    );
                    return None;
                }
                panic!(
                    "no tansu binary at {}: run scripts/install-tansu, or set \
                     SLUICEGATE_TANSU=/path/to/tansu (or SLUICEGATE_SKIP_TANSU=1 to skip)",
                    bin.display()
                );
            }
            Some(Tansu::start(&bin).unwrap_or_else(|e| panic!("{e}")))
        })
        .as_ref()
}

/// Creates `topic` with `partitions` partitions through the admin API (CreateTopics), with the
/// broker's default replication, and waits until the metadata shows them.
pub fn create_topic_with_admin(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new()
        .request_timeout(Some(LIMIT))
        .operation_timeout(Some(LIMIT));
    // The admin client's own thread completes the future: no async runtime is needed.
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    for result in results {
        if let Err((name, e)) = result {
            panic!("create topic {name}: {e}");
        }
    }
    await_topic(bootstrap, topic, partitions);
}

/// Creates `topic` with `partitions` partitions, with tansu's own command.
pub fn create_topic(tansu: &Tansu, topic: &str, partitions: i32) {
    let mut child = Command::new(tansu::binary())
        .args(["topic", "create", topic, "--partitions"])
        .arg(partitions.to_string())
        .arg("--broker")
        .arg(format!("tcp://{}", tansu.bootstrap))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .spawn()
        .expect("tansu topic create runs");
    let status = super::exit_within(&mut child, LIMIT)
        .unwrap_or_else(|| panic!("tansu topic create {topic} did not finish within {LIMIT:?}"));
    assert!(status.success(), "tansu topic create {topic}: {status}");
    await_topic(&tansu.bootstrap, topic, partitions);
}

/// Waits (bounded by `LIMIT`) until the metadata shows `topic` with `partitions` partitions,
/// each with a leader.
pub fn await_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let deadline = Instant::now() + LIMIT;
    loop {
        let m = client.fetch_metadata(Some(topic), LIMIT).expect("metadata");
        if m.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear");
        // Polling the broker's metadata: there is no event to wait on.
        std::thread::sleep(Duration::from_millis(100));
    }
}
