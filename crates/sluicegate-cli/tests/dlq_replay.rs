//! End-to-end: `sluicegate dlq replay` against the embedded broker (librdkafka's mock cluster)
//! and Apache Kafka 4.4 (started by this test binary), with dead letters written the way the
//! library writes them. Not against tansu 0.6: the replay's producer puts several records in a
//! batch, and tansu reports the high watermark of such a partition as the last batch's first
//! offset plus one, so the counts below would not hold there.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use sluicegate::dead_letter::headers;

use common::kafka::{unique, Broker};
use common::records::{high_watermarks, produce_records, read_all, Record};
use common::{last_json_line, run};

const LIMIT: Duration = Duration::from_secs(60);

/// A dead letter of message number `i` of topic `original` that failed with `kind`, as the
/// library writes it: the original key, value and headers, then the diagnostic headers.
fn dead_letter(original: &str, i: i64, kind: &str) -> Record {
    let (key, value) = (format!("key-{i}"), format!("value-{i}"));
    let mut h: Vec<(String, Option<Vec<u8>>)> = vec![
        ("trace-id".into(), Some(format!("trace-{i}").into_bytes())),
        ("null-header".into(), None),
    ];
    let failed_at = 1_700_000_000_000 + i;
    for (name, v) in [
        (headers::ORIGINAL_TOPIC, original.to_string()),
        (headers::ORIGINAL_PARTITION, (i % 2).to_string()),
        (headers::ORIGINAL_OFFSET, (100 + i).to_string()),
        (headers::ORIGINAL_TIMESTAMP, "1700000000000".to_string()),
        (headers::ERROR_MESSAGE, format!("boom {i}")),
        (headers::ERROR_KIND, kind.to_string()),
        (headers::ATTEMPTS, "3".to_string()),
        (headers::GROUP, "billing".to_string()),
        (headers::FIRST_FAILURE, (failed_at - 50).to_string()),
        (headers::LAST_FAILURE, failed_at.to_string()),
    ] {
        h.push((name.to_string(), Some(v.into_bytes())));
    }
    (key.into_bytes(), value.into_bytes(), h)
}

/// What a replay of `dead_letter(original, i, _)` must deliver: no diagnostic headers.
fn replayed(original: &str, i: i64) -> Record {
    let (key, value, h) = dead_letter(original, i, "retryable");
    let h = h
        .into_iter()
        .filter(|(name, _)| !name.starts_with("sluicegate."))
        .collect();
    (key, value, h)
}

/// Runs `sluicegate dlq replay --bootstrap BOOTSTRAP --topic DLQ_TOPIC ARGS...`.
fn replay(bootstrap: &str, dlq_topic: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![
        "dlq",
        "replay",
        "--bootstrap",
        bootstrap,
        "--topic",
        dlq_topic,
    ];
    all.extend_from_slice(args);
    run(&all, LIMIT)
}

fn missing_dlq(broker: &Broker) {
    let missing = unique("no-such-topic.dlq");
    let (ok, _, err) = replay(broker.bootstrap(), &missing, &["--dry-run"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("`{missing}` does not exist")),
        "{err}"
    );
}

on_brokers!(missing_dlq => a_missing_dlq_topic_is_a_clear_error: embedded, kafka);
