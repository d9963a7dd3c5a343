//! End-to-end: `sluicegate dlq replay` against the embedded broker (librdkafka's mock cluster)
//! and Apache Kafka 4.4 (started by this test binary), with dead letters written the way the
//! library writes them. Not against tansu 0.6: the replay's producer puts several records in a
//! batch, and tansu reports the high watermark of such a partition as the last batch's first
//! offset plus one, so the counts below would not hold there.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

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
    produce_records(&bootstrap, dlq, &records);

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
