//! End-to-end: run the built `sluicegate` binary against its embedded broker, and with
//! `--bootstrap` against Apache Kafka 4.4 (started by this test binary), and check the JSON line
//! it prints (on Kafka, also against what the broker holds).

mod common;

use std::time::Duration;

use common::kafka::{committed, watermarks, Broker};
use common::{last_json_line, run};

#[test]
fn demo_loses_nothing_duplicates_nothing_commits_everything_and_keeps_order() {
    let (v, err) = run_demo(&["--messages", "20000"], Duration::from_secs(180));
    assert_eq!(v["produced"], 20_000, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["committed"], v["produced"], "{v}");
    assert_eq!(v["order_violations"], 0, "{v}");
    assert_eq!(v["dropped_by_broker"], 0, "{v}");
    for key in ["msgs_per_sec", "p50_ms", "p99_ms"] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
    assert!(
        err.contains("metrics and health: http://127.0.0.1:"),
        "no endpoint announced:\n{err}"
    );
}

#[test]
fn demo_with_a_fail_rate_dead_letters_exactly_the_poison_events_and_loses_nothing() {
    let (v, _) = run_demo(
        &["--messages", "20000", "--fail-rate", "0.01"],
        Duration::from_secs(300),
    );
    let poison = v["poison"].as_u64().expect("poison is a count");
    assert!(poison > 0, "{v}");
    assert_eq!(v["dead_lettered"], poison, "{v}");
    assert_eq!(v["dlq_unexpected"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["produced"], 20_000, "{v}");
    assert_eq!(v["committed"], v["produced"], "{v}");
    assert_eq!(v["distinct"], 20_000 - poison, "{v}");
    // Three attempts per poison event, none for healthy ones.
    assert_eq!(v["retried"], 2 * poison, "{v}");
    assert!(
        v["throughput_ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{v}"
    );
    assert!(
        v["fault_free_msgs_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{v}"
    );
}

#[test]
fn demo_with_a_batch_handler_isolates_poison_events_and_loses_nothing() {
    let (v, _) = run_demo(
        &[
            "--messages",
            "20000",
            "--batch",
            "200",
            "--fail-rate",
            "0.002",
        ],
        Duration::from_secs(300),
    );
    assert_eq!(v["batch"], 200, "{v}");
    let poison = v["poison"].as_u64().expect("poison is a count");
    assert!(poison > 0, "{v}");
    assert_eq!(v["dead_lettered"], poison, "{v}");
    assert_eq!(v["dlq_unexpected"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["committed"], v["produced"], "{v}");
    assert_eq!(v["distinct"], 20_000 - poison, "{v}");
    assert_eq!(v["order_violations"], 0, "{v}");
}

/// Against a real broker the demo's figures are what the broker holds: every event in the topic,
/// the group committed to each partition's log end, each poison event once in the dead-letter
/// topic.
#[test]
fn demo_on_kafka_commits_every_partition_to_its_end_and_dead_letters_the_poison_events() {
    let broker = Broker::kafka();
    let bootstrap = broker.bootstrap();
    let (v, _) = run_demo(
        &[
            "--bootstrap",
            bootstrap,
            "--messages",
            "3000",
            "--partitions",
            "3",
            "--fail-rate",
            "0.01",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(v["broker"], "external", "{v}");
    let poison = v["poison"].as_u64().expect("poison is a count");
    assert!(poison > 0, "{v}");
    assert_eq!(
        [
            &v["produced"],
            &v["lost"],
            &v["duplicates"],
            &v["dlq_unexpected"]
        ],
        [3_000, 0, 0, 0],
        "{v}"
    );
    assert_eq!(v["dead_lettered"], poison, "{v}");
    assert_eq!(v["distinct"], 3_000 - poison, "{v}");
    assert_eq!(v["order_violations"], 0, "{v}");

    let (topic, group) = (
        v["topic"].as_str().expect("topic"),
        v["group"].as_str().expect("group"),
    );
    let ends: Vec<i64> = (0..3).map(|p| watermarks(bootstrap, topic, p).1).collect();
    assert_eq!(ends.iter().sum::<i64>(), 3_000, "{v}");
    assert_eq!(
        committed(bootstrap, group, topic, 3),
        ends.iter().copied().map(Some).collect::<Vec<_>>(),
        "the group committed each partition to its end"
    );
    assert_eq!(v["committed"], 3_000, "{v}");
    let dlq = v["dlq_topic"].as_str().expect("a dead-letter topic");
    let dead: i64 = (0..3).map(|p| watermarks(bootstrap, dlq, p).1).sum();
    assert_eq!(dead as u64, poison, "{v}");
}

#[test]
fn a_fail_rate_outside_0_to_1_is_refused_naming_the_flag() {
    for bad in ["1", "-0.1", "lots"] {
        let (ok, _, err) = run(&["demo", "--fail-rate", bad], Duration::from_secs(30));
        assert!(!ok, "--fail-rate {bad} was accepted");
        assert!(err.contains("--fail-rate"), "{err}");
    }
}

/// Runs `sluicegate demo ARGS --json` with its endpoint on a free port, within `limit`; asserts
/// it succeeded and returns its JSON summary and its stderr.
fn run_demo(args: &[&str], limit: Duration) -> (serde_json::Value, String) {
    let mut all = vec!["demo", "--http", "127.0.0.1:0", "--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = run(&all, limit);
    let v = last_json_line(&out, &err);
    assert!(ok, "demo failed: {v}\nstderr:\n{err}");
    (v, err)
}
