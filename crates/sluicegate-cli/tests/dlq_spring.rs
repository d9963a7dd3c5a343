//! End-to-end: `sluicegate dlq replay` on dead letters written the way Spring Kafka's
//! `DeadLetterPublishingRecoverer` writes them, against the embedded broker and Apache Kafka.
//!
//! The header names and encodings are spelled out here, as Spring Kafka writes them
//! (`KafkaHeaders.DLT_*`: texts in UTF-8, the partition a 4-byte and the offset and timestamp
//! 8-byte big-endian integers), not taken from the library, so that a wrong name or encoding
//! there fails this test.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use sluicegate::EmbeddedKafka;

use common::kafka::{now_ms, unique};
use common::kafka_broker::KafkaBroker;
use common::records::{high_watermarks, produce_records, read_all, Record};
use common::{last_json_line, run};

const LIMIT: Duration = Duration::from_secs(60);

/// The wrapper Spring Kafka puts around a listener's exception.
const LEFE: &str = "org.springframework.kafka.listener.ListenerExecutionFailedException";

/// The Apache Kafka of this test binary, started on first use.
fn kafka() -> &'static KafkaBroker {
    static KAFKA: OnceLock<KafkaBroker> = OnceLock::new();
    KAFKA.get_or_init(|| KafkaBroker::start().unwrap_or_else(|e| panic!("{e}")))
}

/// Where a record was consumed from when it failed: topic, partition, offset.
type Hop<'a> = (&'a str, i32, i64);

/// The record `i` of a Spring Kafka dead-letter topic: the original key, value and headers,
/// then, for each time it was dead-lettered (`hops`, oldest first, as Spring appends them), the
/// `kafka_dlt-original-*` headers, then the exception headers.
fn spring_dead_letter(i: i64, hops: &[Hop<'_>], class: &str, cause: Option<&str>) -> Record {
    let mut h: Vec<(String, Option<Vec<u8>>)> = vec![
        ("trace-id".into(), Some(format!("trace-{i}").into_bytes())),
        ("null-header".into(), None),
    ];
    let mut add = |name: &str, value: Vec<u8>| h.push((name.to_string(), Some(value)));
    for &(topic, partition, offset) in hops {
        add("kafka_dlt-original-topic", topic.as_bytes().to_vec());
        add(
            "kafka_dlt-original-partition",
            partition.to_be_bytes().to_vec(),
        );
        add("kafka_dlt-original-offset", offset.to_be_bytes().to_vec());
        add(
            "kafka_dlt-original-timestamp",
            1_700_000_000_000i64.to_be_bytes().to_vec(),
        );
        add("kafka_dlt-original-timestamp-type", b"CreateTime".to_vec());
        add("kafka_dlt-original-consumer-group", b"billing".to_vec());
    }
    if hops.len() > 1 {
        // Spring's retry topics count the attempts in a header of their own.
        add("retry_topic-attempts", 3i32.to_be_bytes().to_vec());
    }
    add("kafka_dlt-exception-fqcn", class.as_bytes().to_vec());
    if let Some(cause) = cause {
        add("kafka_dlt-exception-cause-fqcn", cause.as_bytes().to_vec());
    }
    add(
        "kafka_dlt-exception-message",
        format!("boom {i}").into_bytes(),
    );
    add(
        "kafka_dlt-exception-stacktrace",
        format!("{class}: boom {i}\n\tat com.acme.Listener.on(Listener.java:42)\n").into_bytes(),
    );
    (
        format!("key-{i}").into_bytes(),
        format!("value-{i}").into_bytes(),
        h,
    )
}

/// A dead letter written by Sluicegate, in the same topic: `orders`/1/`offset`, a timeout.
fn sluicegate_dead_letter(i: i64, orders: &str, offset: i64) -> Record {
    let mut h: Vec<(String, Option<Vec<u8>>)> =
        vec![("trace-id".into(), Some(format!("trace-{i}").into_bytes()))];
    for (name, v) in [
        ("sluicegate.original.topic", orders.to_string()),
        ("sluicegate.original.partition", "1".into()),
        ("sluicegate.original.offset", offset.to_string()),
        ("sluicegate.error.message", format!("boom {i}")),
        ("sluicegate.error.kind", "timeout".into()),
        ("sluicegate.attempts", "3".into()),
        ("sluicegate.group", "billing".into()),
        ("sluicegate.failure.first", "1700000000000".into()),
        ("sluicegate.failure.last", "1700000000001".into()),
    ] {
        h.push((name.to_string(), Some(v.into_bytes())));
    }
    (
        format!("key-{i}").into_bytes(),
        format!("value-{i}").into_bytes(),
        h,
    )
}

/// What a replay of `record` must deliver: its key, value and own headers only.
fn replayed(record: &Record) -> Record {
    let (key, value, h) = record.clone();
    let own = h
        .into_iter()
        .filter(|(name, _)| {
            !name.starts_with("kafka_dlt-")
                && !name.starts_with("retry_topic-")
                && !name.starts_with("sluicegate.")
        })
        .collect();
    (key, value, own)
}

/// The broker under test.
enum Broker {
    Embedded(EmbeddedKafka),
    Kafka(&'static KafkaBroker),
}

impl Broker {
    fn bootstrap(&self) -> String {
        match self {
            Broker::Embedded(k) => k.bootstrap_servers().to_string(),
            Broker::Kafka(k) => k.bootstrap.clone(),
        }
    }

    /// Creates `topic` and waits (bounded) until its metadata lists every partition.
    fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Broker::Embedded(k) => k.create_topic(topic, partitions).expect("topic"),
            Broker::Kafka(k) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", &k.bootstrap)
                    .create()
                    .expect("admin client");
                let options = AdminOptions::new()
                    .operation_timeout(Some(LIMIT))
                    .request_timeout(Some(LIMIT));
                let created = futures::executor::block_on(admin.create_topics(
                    &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                    &options,
                ))
                .expect("CreateTopics");
                for result in created {
                    result.unwrap_or_else(|(t, e)| panic!("cannot create {t}: {e}"));
                }
            }
        }
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("client");
        let deadline = Instant::now() + LIMIT;
        loop {
            let m = client.fetch_metadata(Some(topic), LIMIT).expect("metadata");
            if m.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
            }) {
                return;
            }
            assert!(Instant::now() < deadline, "topic {topic} did not appear");
            // The broker gives no event for it: poll its metadata.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// [`read_all`] as a set: what arrived, in any order.
fn read_set(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> BTreeSet<Record> {
    read_all(bootstrap, topic, partitions, count)
        .into_iter()
        .collect()
}

/// Runs `sluicegate dlq replay --bootstrap BOOTSTRAP --topic DLT ARGS...`.
fn replay(bootstrap: &str, dlt: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["dlq", "replay", "--bootstrap", bootstrap, "--topic", dlt];
    all.extend_from_slice(args);
    run(&all, LIMIT)
}

/// Runs [`replay`] with `--json`, which must succeed, and returns (matched, sent).
fn replay_json(bootstrap: &str, dlt: &str, args: &[&str]) -> (u64, u64) {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = replay(bootstrap, dlt, &all);
    let v = last_json_line(&out, &err);
    assert!(ok, "replay {args:?} failed: {v}\nstderr:\n{err}");
    assert_eq!(v["failed"], 0, "{v}");
    (
        v["matched"].as_u64().expect("matched"),
        v["sent"].as_u64().expect("sent"),
    )
}

fn spring_dead_letters_are_listed_filtered_and_replayed(broker: Broker) {
    let bootstrap = broker.bootstrap();
    let orders = unique("orders");
    let dlt = format!("{orders}.DLT");
    let elsewhere = unique("elsewhere");
    let retry = format!("{orders}-retry-0");
    broker.create_topic(&orders, 2);
    broker.create_topic(&dlt, 1);
    broker.create_topic(&elsewhere, 1);
    let ise = Some("java.lang.IllegalStateException");
    let records = vec![
        spring_dead_letter(0, &[(&orders, 1, 41)], LEFE, ise),
        spring_dead_letter(
            1,
            &[("payments", 0, 7)],
            LEFE,
            Some("com.acme.PaymentDeclinedException"),
        ),
        spring_dead_letter(
            2,
            &[(&orders, 0, 42)],
            "org.springframework.kafka.support.serializer.DeserializationException",
            None,
        ),
        // Through Spring's retry topics: consumed first from `orders`, last from its retry topic.
        spring_dead_letter(3, &[(&orders, 0, 43), (&retry, 0, 5)], LEFE, ise),
        sluicegate_dead_letter(4, &orders, 44),
    ];
    // A partition written as text: reported, never sent.
    let mut malformed = spring_dead_letter(5, &[(&orders, 0, 45)], LEFE, ise);
    for (name, v) in &mut malformed.2 {
        if name == "kafka_dlt-original-partition" {
            *v = Some(b"0".to_vec());
        }
    }
    let mut all = records.clone();
    all.push(malformed);
    let written_from = now_ms();
    produce_records(&bootstrap, &dlt, &all);

    // 1. Dry run: each record is listed with where it came from and why it failed.
    let (ok, out, err) = replay(&bootstrap, &dlt, &["--dry-run"]);
    assert!(ok, "dry run failed\nstdout:\n{out}\nstderr:\n{err}");
    for line in [
        format!(
            "dlq 0/0 -> {orders}   original {orders}/1/41   {LEFE} (cause \
             java.lang.IllegalStateException): boom 0"
        ),
        format!(
            "dlq 0/1 -> payments   original payments/0/7   {LEFE} (cause \
             com.acme.PaymentDeclinedException): boom 1"
        ),
        format!(
            "dlq 0/2 -> {orders}   original {orders}/0/42   \
             org.springframework.kafka.support.serializer.DeserializationException: boom 2"
        ),
        format!(
            "dlq 0/3 -> {orders}   original {orders}/0/43   {LEFE} (cause \
             java.lang.IllegalStateException): boom 3"
        ),
        format!("dlq 0/4 -> {orders}   original {orders}/1/44   timeout: boom 4"),
    ] {
        assert!(out.contains(&line), "missing `{line}` in:\n{out}");
    }
    assert!(
        out.contains("read 6, matched 5, would send 5, skipped unparseable 1"),
        "{out}"
    );
    assert!(
        err.contains(
            "skipped dlq 0/5: not a dead letter: header `kafka_dlt-original-partition` is not \
             a big-endian integer of 4 bytes (it has 1)"
        ),
        "{err}"
    );
    assert_eq!(high_watermarks(&bootstrap, &orders, 2), vec![0, 0]);

    // 2. By exception class (the cause's simple name): records 0 and 3, to `orders`, the
    //    retry-topic one included, without Spring's headers.
    assert_eq!(
        replay_json(
            &bootstrap,
            &dlt,
            &["--exception-class", "IllegalStateException"]
        ),
        (2, 2)
    );
    let expected: BTreeSet<Record> = [0, 3].iter().map(|&i| replayed(&records[i])).collect();
    assert_eq!(read_set(&bootstrap, &orders, 2, 2), expected);
    assert_eq!(
        high_watermarks(&bootstrap, &orders, 2).iter().sum::<i64>(),
        2,
        "more than the matching records arrived"
    );

    // 3. By original topic and full class name, to another topic.
    assert_eq!(
        replay_json(
            &bootstrap,
            &dlt,
            &[
                "--original-topic",
                "payments",
                "--exception-class",
                "com.acme.PaymentDeclinedException",
                "--to",
                &elsewhere,
            ]
        ),
        (1, 1)
    );
    assert_eq!(
        read_set(&bootstrap, &elsewhere, 1, 1),
        BTreeSet::from([replayed(&records[1])])
    );

    // 4. By original topic, partition and offset range: record 2 only (3 is offset 43, 0 and 4
    //    are partition 1).
    assert_eq!(
        replay_json(
            &bootstrap,
            &dlt,
            &[
                "--original-topic",
                &orders,
                "--original-partition",
                "0",
                "--from-offset",
                "40",
                "--to-offset",
                "42",
            ]
        ),
        (1, 1)
    );
    let expected: BTreeSet<Record> = [0, 2, 3].iter().map(|&i| replayed(&records[i])).collect();
    assert_eq!(read_set(&bootstrap, &orders, 2, 3), expected);
    assert_eq!(
        high_watermarks(&bootstrap, &orders, 2).iter().sum::<i64>(),
        3
    );

    // 5. Time: Spring's records count from when they were written, Sluicegate's from their
    //    last failure (in 2023 here).
    let before = (written_from - 1).to_string();
    let since = written_from.to_string();
    assert_eq!(
        replay_json(&bootstrap, &dlt, &["--dry-run", "--until", &before]),
        (1, 0)
    );
    assert_eq!(
        replay_json(&bootstrap, &dlt, &["--dry-run", "--since", &since]),
        (4, 0)
    );

    // Kinds are Sluicegate's and classes Spring's: together they are refused.
    let (ok, _, err) = replay(
        &bootstrap,
        &dlt,
        &[
            "--error-kind",
            "timeout",
            "--exception-class",
            "X",
            "--dry-run",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("--error-kind and --exception-class together match nothing"),
        "{err}"
    );
}

#[test]
fn spring_dead_letters_are_listed_filtered_and_replayed_on_the_embedded_broker() {
    let kafka = EmbeddedKafka::start(1).expect("embedded broker");
    spring_dead_letters_are_listed_filtered_and_replayed(Broker::Embedded(kafka));
}

#[test]
fn spring_dead_letters_are_listed_filtered_and_replayed_on_apache_kafka() {
    spring_dead_letters_are_listed_filtered_and_replayed(Broker::Kafka(kafka()));
}
