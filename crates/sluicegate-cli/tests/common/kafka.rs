//! Brokers and plain-rdkafka clients for the end-to-end tests: names unique to a run,
//! producing records one batch each, committing and reading a group's offsets as a client
//! outside the group, a consumer that has joined its group, and the tansu broker shared by the
//! tests of a binary (started on first use).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    client
        .fetch_watermarks(topic, partition, LIMIT)
        .expect("watermarks")
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
    group_client(bootstrap, group)
        .commit(&list, CommitMode::Sync)
        .expect("starting offsets committed");
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
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tansu topic create {topic} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "tansu topic create {topic}: {status}");
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .create()
        .expect("client");
    let deadline = Instant::now() + LIMIT;
    loop {
        let m = client.fetch_metadata(Some(topic), LIMIT).expect("metadata");
        if m.topics()
            .iter()
            .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
        {
            return;
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
}
