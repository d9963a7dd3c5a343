//! End-to-end: `sluicegate bench` produces and consumes on the embedded broker, Apache Kafka
//! 4.4 and tansu 0.6 (both started by this test binary), and reports every figure with the
//! baseline beside it. No timing is asserted: only that each pass ran, read everything and
//! reported complete figures, and (on the real brokers) that the topic holds what was written.

#[macro_use]
mod common;

use std::time::Duration;

use serde_json::Value;

use common::kafka::{unique, watermarks, Broker};
use common::{last_json_line, run};

const LIMIT: Duration = Duration::from_secs(300);

/// Asserts that pass `side` of a `bench consume` report read `messages` and measured it.
fn assert_pass_complete(v: &Value, side: &str, messages: u64) {
    let p = &v[side];
    assert_eq!(p["messages"], messages, "{side}: {v}");
    assert_eq!(p["complete"], true, "{side}: {v}");
    assert!(
        p["msgs_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
        "{side}: {v}"
    );
    assert!(p["first_message_secs"].is_number(), "{side}: {v}");
    let l = &p["latency"];
    let (p50, p99, p999) = (
        l["p50_ms"].as_f64().unwrap_or(-1.0),
        l["p99_ms"].as_f64().unwrap_or(-1.0),
        l["p999_ms"].as_f64().unwrap_or(-1.0),
    );
    assert!(
        0.0 <= p50 && p50 <= p99 && p99 <= p999,
        "{side} latency: {v}"
    );
    if cfg!(target_os = "linux") {
        assert!(p["cpu_secs"].is_number(), "{side}: {v}");
        assert!(
            p["peak_rss_mb"].as_f64().unwrap_or(0.0) > 0.0,
            "{side}: {v}"
        );
    }
}

/// Asserts that pass `side` reports the records' ages at each stage of the runtime, each
/// stage counting `counted` records (a range: a live stream's stages start after its warm-up
/// by the clock, its latencies by the records' timestamps), with quantiles that rise from
/// stage to stage as far as the buckets tell (a bucket is 0.25 ms wide below 1 ms).
fn assert_stages(v: &Value, side: &str, counted: std::ops::RangeInclusive<u64>) {
    let stages = &v[side]["stages"];
    let mut p50s = Vec::new();
    for stage in ["polled", "handler_start", "handler_end", "finished"] {
        let s = &stages[stage];
        let count = s["count"].as_u64().unwrap_or(0);
        assert!(
            counted.contains(&count),
            "{side} {stage}: {count} records: {v}"
        );
        let q = |k: &str| s[k].as_f64().unwrap_or(-1.0);
        let (p50, p99, p999) = (q("p50_ms"), q("p99_ms"), q("p999_ms"));
        assert!(
            0.0 <= p50 && p50 <= p99 && p99 <= p999,
            "{side} {stage}: {v}"
        );
        p50s.push((stage, p50));
    }
    // Every record is counted once at every stage (same count) in a backlog.
    if counted.start() == counted.end() {
        let counts: Vec<_> = ["polled", "handler_start", "handler_end", "finished"]
            .iter()
            .map(|s| stages[s]["count"].clone())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] == w[1]), "{side}: {v}");
    }
    for pair in p50s.windows(2) {
        let ((a, earlier), (b, later)) = (pair[0], pair[1]);
        assert!(
            earlier <= later * 1.05 + 0.25,
            "{side}: p50 at {a} ({earlier} ms) above {b} ({later} ms): {v}"
        );
    }
    assert!(
        v["raw"]["stages"].is_null(),
        "the baseline has no stages: {v}"
    );
}

#[test]
fn bench_consume_runs_both_consumers_and_reports_a_ratio() {
    let (ok, out, err) = run(
        &[
            "bench",
            "consume",
            "--messages",
            "50000",
            "--observed",
            "--json",
        ],
        LIMIT,
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "bench failed: {v}\nstderr:\n{err}");
    assert_eq!(v["mode"], "backlog", "{v}");
    for side in ["raw", "runtime", "observed"] {
        assert_pass_complete(&v, side, 50_000);
    }
    assert!(v["runtime"]["join_secs"].is_number(), "{v}");
    assert!(
        v["raw"]["join_secs"].is_null(),
        "the baseline has no group: {v}"
    );
    for ratio in ["ratio", "cpu_ratio", "p99_ratio", "observed_ratio"] {
        assert!(v[ratio].as_f64().is_some_and(|r| r > 0.0), "{ratio}: {v}");
    }
    for side in ["runtime", "observed"] {
        assert_stages(&v, side, 50_000..=50_000);
    }
    // A backlog has no warm-up: every message is measured; the fill producer's linger stands
    // beside the figures.
    for side in ["raw", "runtime", "observed"] {
        let b = &v[side]["latency_basis"];
        assert_eq!(b["producer_linger_ms"], 5.0, "{side}: {v}");
        assert_eq!(
            (b["warm_up_excluded"].clone(), b["measured"].clone()),
            (0.into(), 50_000.into()),
            "{side}: {v}"
        );
    }
}

/// A live stream at a fixed rate, read by a batch handler without a group: every record of
/// each pass's stream arrives, with latencies; beside them, in both passes, the producer's
/// linger as given and the same warm-up rule, its records left out of the figures.
#[test]
fn bench_consume_reads_a_live_stream_at_a_fixed_rate() {
    let (ok, out, err) = run(
        &[
            "bench",
            "consume",
            "--rate",
            "2000",
            "--duration",
            "3",
            "--partitions",
            "4",
            "--batch",
            "50",
            "--assign",
            "--handler",
            "json",
            "--producer-linger-ms",
            "3",
            "--json",
        ],
        LIMIT,
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "bench failed: {v}\nstderr:\n{err}");
    assert_eq!(v["mode"], "live", "{v}");
    for side in ["raw", "runtime"] {
        let b = &v[side]["latency_basis"];
        assert_eq!(b["producer_linger_ms"], 3.0, "{side}: {v}");
        assert_eq!(b["producer_batch_records"], 10_000, "{side}: {v}");
        // A tenth of the 3 s stream: the records written in its first 0.3 s (about 600 at
        // 2,000 msg/s) are left out of the latencies, and every other one is measured.
        assert_eq!(b["warm_up_secs"], 0.3, "{side}: {v}");
        let (excluded, measured) = (
            b["warm_up_excluded"].as_u64().unwrap_or(0),
            b["measured"].as_u64().unwrap_or(0),
        );
        assert!((1..=1_000).contains(&excluded), "{side}: {v}");
        assert_eq!(excluded + measured, 6_000, "{side}: {v}");
    }
    assert_eq!(
        (v["rate"].clone(), v["duration_secs"].clone()),
        (2000.into(), 3.into())
    );
    for side in ["raw", "runtime"] {
        assert_pass_complete(&v, side, 6_000);
        assert_eq!(v[side]["decode_errors"], 0, "{side}: {v}");
    }
    // The stages leave out the warm-up, as the latencies do: every measured record, give or
    // take those in flight when the warm-up ended (a batch of 50 and the poll round at most).
    let measured = v["runtime"]["latency_basis"]["measured"]
        .as_u64()
        .unwrap_or(0);
    assert_stages(&v, "runtime", measured.saturating_sub(300)..=6_000);
    assert_eq!(
        (v["batch"].clone(), v["assign"].clone()),
        (50.into(), true.into())
    );
    assert!(v["p99_ratio"].as_f64().is_some_and(|r| r > 0.0), "{v}");
}

/// `bench produce` fills a topic on a real broker; `bench consume --no-fill` reads it as it is.
fn produce_then_consume(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let topic = unique("bench-existing");
    let mut args = vec![
        "bench",
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        &topic,
        "--messages",
        "4000",
        "--partitions",
        "2",
        "--keys",
        "10",
        "--size",
        "200",
        "--json",
    ];
    if broker.is_tansu() {
        // tansu 0.6 reports a partition's log end as its last record batch's first offset + 1:
        // one record per batch makes that the true end. Kafka gets the producer's batches.
        args.extend(["-X", "batch.num.messages=1"]);
    }
    let (ok, out, err) = run(&args, LIMIT);
    let p = last_json_line(&out, &err);
    assert!(ok, "bench produce failed: {p}\nstderr:\n{err}");
    assert_eq!(
        (
            p["sent"].clone(),
            p["delivered"].clone(),
            p["failed"].clone()
        ),
        (4000.into(), 4000.into(), 0.into()),
        "{p}"
    );
    assert!(p["msgs_per_sec"].as_f64().unwrap_or(0.0) > 0.0, "{p}");
    let log_end = || {
        (0..2)
            .map(|p| watermarks(bootstrap, &topic, p).1)
            .sum::<i64>()
    };
    if broker.is_tansu() {
        // tansu's log ends trail acknowledged writes for a moment; the bench reads what the
        // topic holds when it starts.
        let deadline = std::time::Instant::now() + LIMIT;
        while log_end() < 4_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "watermarks never reached 4000"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Once acknowledged, every record is in the log: no more, no fewer.
    assert_eq!(log_end(), 4_000, "{p}");

    let (ok, out, err) = run(
        &[
            "bench",
            "consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            &topic,
            "--no-fill",
            "--json",
        ],
        LIMIT,
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "bench consume failed: {v}\nstderr:\n{err}");
    assert!(v["fill_secs"].is_null(), "nothing was filled: {v}");
    for side in ["raw", "runtime"] {
        assert_pass_complete(&v, side, 4_000);
        assert!(
            v[side]["latency_basis"].is_null(),
            "the producer of a topic found as it was is unknown: {v}"
        );
        assert_eq!(v[side]["bytes"], 4_000 * 200, "{side}: {v}");
    }

    // Asking for more than the topic holds is refused, naming both figures.
    let (ok, _, err) = run(
        &[
            "bench",
            "consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            &topic,
            "--no-fill",
            "--messages",
            "5000",
        ],
        LIMIT,
    );
    assert!(
        !ok && err.contains("--messages 5000") && err.contains("holds only 4000"),
        "{err}"
    );
}

on_brokers!(produce_then_consume => bench_produce_then_consume_an_existing_topic: kafka, tansu);

/// `bench consume` against Kafka fills a fresh topic and reads it twice, the runtime in a group.
#[test]
fn bench_consume_fills_a_topic_on_kafka_and_reads_all_of_it_in_a_group() {
    let broker = Broker::kafka();
    let (ok, out, err) = run(
        &[
            "bench",
            "consume",
            "--bootstrap",
            broker.bootstrap(),
            "--messages",
            "3000",
            "--partitions",
            "3",
            "--size",
            "100",
            "--ordering",
            "key",
            "--json",
        ],
        LIMIT,
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "bench failed: {v}\nstderr:\n{err}");
    assert_eq!(
        (
            v["mode"].clone(),
            v["broker"].clone(),
            v["partitions"].clone()
        ),
        ("backlog".into(), "external".into(), 3.into()),
        "{v}"
    );
    assert!(v["fill_secs"].is_number(), "{v}");
    for side in ["raw", "runtime"] {
        assert_pass_complete(&v, side, 3_000);
        assert_eq!(v[side]["bytes"], 3_000 * 100, "{side}: {v}");
    }
    assert!(v["runtime"]["join_secs"].is_number(), "joined a group: {v}");
    let topic = v["topic"].as_str().expect("the topic read");
    let held: i64 = (0..3)
        .map(|p| watermarks(broker.bootstrap(), topic, p).1)
        .sum();
    assert_eq!(held, 3_000, "the topic holds what was filled: {v}");
}

#[test]
fn bench_flags_that_do_not_go_together_are_refused() {
    for (args, says) in [
        (&["bench", "consume", "--no-fill"][..], "--topic"),
        (&["bench", "consume", "--rate", "10"][..], "--duration"),
        (
            &["bench", "produce", "--messages", "5", "--duration", "5"][..],
            "cannot be used with",
        ),
        (
            &["bench", "consume", "--handler", "fast"][..],
            "noop, json or sleep:MS",
        ),
    ] {
        let (ok, _, err) = run(args, Duration::from_secs(30));
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
