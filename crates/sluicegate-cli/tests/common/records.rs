//! Records with headers, as the dead-letter tests write and read them: produce a list to one
//! partition, read a topic back from its start, its high watermarks.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use super::kafka::{unique, LIMIT};

/// One record as it travels: key, value and headers (name, value).
pub type Record = (Vec<u8>, Vec<u8>, Vec<(String, Option<Vec<u8>>)>);

/// Produces `records` to `topic` partition 0 and waits (bounded) for every acknowledgement.
pub fn produce_records(bootstrap: &str, topic: &str, records: &[Record]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    for (key, value, hs) in records {
        let mut owned = OwnedHeaders::new();
        for (name, v) in hs {
            owned = owned.insert(Header {
                key: name,
                value: v.as_deref(),
            });
        }
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(0)
                    .key(key)
                    .payload(value)
                    .headers(owned),
            )
            .expect("queued");
    }
    producer.flush(LIMIT).expect("every record acknowledged");
    assert_eq!(
        high_watermarks(bootstrap, topic, 1),
        vec![records.len() as i64]
    );
}

/// The high watermark of each of the first `partitions` partitions of `topic`.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, LIMIT)
                .expect("watermarks")
                .1
        })
        .collect()
}

/// Every record of `topic` (all `partitions`), read from the start until `count` arrived;
/// bounded by `LIMIT`.
pub fn read_all(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("records-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived at {topic} within {LIMIT:?}",
            out.len()
        );
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = polled.expect("a record");
        let hs = m.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        });
        out.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().unwrap_or_default().to_vec(),
            hs,
        ));
    }
    out
}

fn replay_chosen(broker: &Broker) {
    let bootstrap = broker.bootstrap().to_string();
    let original = unique("orders");
    let (dlq, elsewhere) = (format!("{original}.dlq"), unique("elsewhere"));
    broker.create_topic(&original, 2);
    broker.create_topic(&dlq, 1);
    broker.create_topic(&elsewhere, 1);
    let (original, dlq, elsewhere) = (original.as_str(), dlq.as_str(), elsewhere.as_str());
    let kinds = [
        "retryable",
        "permanent",
        "decode",
        "timeout",
        "retryable",
        "panic",
    ];
    let mut records: Vec<Record> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| dead_letter(original, i as i64, kind))
        .collect();
    // Not dead letters: no diagnostic headers at all, and a malformed one.
    records.push((b"stray".to_vec(), b"no headers".to_vec(), Vec::new()));
    let mut bad = dead_letter(original, 99, "retryable");
    for (name, v) in &mut bad.2 {
        if name == headers::ORIGINAL_OFFSET {
            *v = Some(b"not-a-number".to_vec());
        }
    }
    records.push(bad);
    produce(&bootstrap, dlq, &records);

    // 1. Dry run: every dead letter is listed with where it would go, nothing is sent.
    let (ok, out, err) = replay(&bootstrap, dlq, &["--dry-run"]);
    assert!(ok, "dry run failed\nstdout:\n{out}\nstderr:\n{err}");
    for (i, kind) in kinds.iter().enumerate() {
        let line = format!(
            "dlq 0/{i} -> {original}   original {original}/{}/{}   {kind}: boom {i}",
            i % 2,
            100 + i
        );
        assert!(out.contains(&line), "missing `{line}` in:\n{out}");
    }
    assert!(
        out.contains("read 8, matched 6, would send 6, skipped unparseable 2"),
        "{out}"
    );
    assert!(err.contains("skipped dlq 0/6"), "{err}");
    assert!(err.contains("skipped dlq 0/7"), "{err}");
    assert_eq!(
        high_watermarks(&bootstrap, original, 2),
        vec![0, 0],
        "a dry run sent something"
    );

    // 2. Replay the retryable and timeout failures to their original topic.
    let (ok, out, err) = replay(
        &bootstrap,
        dlq,
        &[
            "--error-kind",
            "retryable",
            "--error-kind",
            "timeout",
            "--json",
        ],
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "replay failed: {v}\nstderr:\n{err}");
    assert_eq!(v["read"], 8, "{v}");
    assert_eq!(v["matched"], 3, "{v}");
    assert_eq!(v["sent"], 3, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["skipped_unparseable"], 2, "{v}");
    let arrived: BTreeSet<Record> = read_all(&bootstrap, original, 2, 3).into_iter().collect();
    let expected: BTreeSet<Record> = [0, 3, 4].map(|i| replayed(original, i)).into();
    assert_eq!(arrived, expected);
    let total: i64 = high_watermarks(&bootstrap, original, 2).iter().sum();
    assert_eq!(total, 3, "more than the matching records arrived");

    // 3. `--to` and an original offset range: only original offsets 101..=102 go to `elsewhere`.
    let (ok, out, err) = replay(
        &bootstrap,
        dlq,
        &[
            "--to",
            elsewhere,
            "--from-offset",
            "101",
            "--to-offset",
            "102",
            "--json",
        ],
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "replay failed: {v}\nstderr:\n{err}");
    assert_eq!(
        (v["matched"].as_u64(), v["sent"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    let arrived: BTreeSet<Record> = read_all(&bootstrap, elsewhere, 1, 2).into_iter().collect();
    assert_eq!(arrived, [1, 2].map(|i| replayed(original, i)).into());
    assert_eq!(high_watermarks(&bootstrap, elsewhere, 1), vec![2]);
    assert_eq!(
        high_watermarks(&bootstrap, original, 2).iter().sum::<i64>(),
        3
    );
}

on_brokers!(replay_chosen =>
    dry_run_lists_and_sends_nothing_then_replay_sends_exactly_the_chosen_kinds_as_they_were:
    embedded, kafka);

