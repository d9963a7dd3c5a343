//! End-to-end: `sluicegate offsets reset` against brokers run by the test: the embedded broker
//! (librdkafka's mock cluster), Apache Kafka 4.4 and tansu 0.6 (both started by this test
//! binary; see `common::kafka`).
//!
//! Moving to watermarks and offsets runs on the embedded broker and on Kafka. Kafka is the only
//! one that looks offsets up by time, so the time tests that matter run there: a time before,
//! at, between and after records, each partition landing on its first record at or after the
//! time. What the other brokers do instead, checked here with a client:
//! - the mock cluster (librdkafka 2.12.1's `rdkafka_mock_handlers.c`) does not implement
//!   ListGroups or DescribeGroups: `fetch_group_list` fails at once with `UnsupportedFeature`,
//!   so the command cannot see a group's state or members there;
//! - it never forgets a classic group: once a subscribed consumer joined a group, every commit
//!   from a client that is not a current member fails with `UnknownMemberId`, even after all
//!   members left. So on the mock a reset works only for groups no subscribed consumer ever
//!   joined, and the refusal it shows is the broker's, not the command's;
//! - its ListOffsets by timestamp is a FIXME: it answers offset -1 ("no record that recent")
//!   for every time, so `offsets_for_times` gives the high watermark whatever the time (the one
//!   time test there asks for a time after every record, where that answer is right);
//! - tansu lists and describes groups, but only those with committed offsets (ListGroups leaves
//!   out a group whose members committed nothing), and answers offset 0 to every ListOffsets by
//!   timestamp, so no time test runs on it. It also misreports the high watermark of a
//!   partition whose last batch holds several records (the batch's base offset plus one), so
//!   records are produced one batch each.
//!
//! A group with a member is refused on Kafka and on tansu, which list groups.

#[macro_use]
mod common;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;
use serde_json::Value;

use common::kafka::{
    commit, committed, joined_consumer, now_ms, produce, unique, watermarks, Broker, LIMIT,
};
use common::{column, last_json_line, run};

/// Runs `sluicegate offsets reset --bootstrap B --group G --topic T ARGS...`.
fn reset(bootstrap: &str, group: &str, topic: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![
        "offsets",
        "reset",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--topic",
        topic,
    ];
    all.extend_from_slice(args);
    run(&all, LIMIT)
}

/// Runs a reset with `--json` that must succeed; returns its JSON summary.
fn reset_json(bootstrap: &str, group: &str, topic: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = reset(bootstrap, group, topic, &all);
    let v = last_json_line(&out, &err);
    assert!(ok, "reset {args:?} failed: {v}\nstderr:\n{err}");
    v
}

fn earliest_and_latest(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 3);
    produce(bootstrap, &topic, &[5, 3, 0], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 2), (1, 1)]);

    let v = reset_json(bootstrap, &group, &topic, &["--to", "latest"]);
    assert_eq!(v["dry_run"], false, "{v}");
    assert_eq!(v["to"], "latest", "{v}");
    assert_eq!(column(&v, "topic"), vec![Value::from(topic.as_str()); 3]);
    assert_eq!(column(&v, "partition"), [0, 1, 2].map(Value::from));
    assert_eq!(
        column(&v, "current"),
        [Value::from(2), Value::from(1), Value::Null]
    );
    assert_eq!(column(&v, "new"), [5, 3, 0].map(Value::from));
    assert_eq!(column(&v, "clamped"), [false; 3].map(Value::from));
    assert_eq!(column(&v, "committed"), [5, 3, 0].map(Value::from));
    assert_eq!(
        committed(bootstrap, &group, &topic, 3),
        [Some(5), Some(3), Some(0)]
    );

    let (ok, out, err) = reset(bootstrap, &group, &topic, &["--to", "earliest"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("to earliest\n"), "{out}");
    assert!(out.contains("OK: committed for group"), "{out}");
    assert_eq!(
        committed(bootstrap, &group, &topic, 3),
        [Some(0), Some(0), Some(0)]
    );
}

on_brokers!(earliest_and_latest =>
    earliest_and_latest_move_every_partition_to_its_watermarks: embedded, kafka);

fn to_an_offset(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 3);
    produce(bootstrap, &topic, &[5, 3, 2], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 1), (1, 1), (2, 1)]);

    let (ok, out, err) = reset(
        bootstrap,
        &group,
        &topic,
        &["--to", "4", "--partition", "0", "--partition", "1"],
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("to offset 4\n"), "{out}");
    assert!(
        out.contains("clamped: 4 is above the high watermark 3"),
        "the output does not say partition 1 was clamped:\n{out}"
    );
    assert_eq!(
        out.matches("clamped").count(),
        1,
        "only partition 1 was clamped:\n{out}"
    );
    assert_eq!(
        committed(bootstrap, &group, &topic, 3),
        [Some(4), Some(3), Some(1)],
        "partition 2 was not chosen and must keep its offset"
    );

    // Comma-separated partitions; JSON flags and the offset asked for.
    let v = reset_json(
        bootstrap,
        &group,
        &topic,
        &["--to", "1000", "--partition", "2,0"],
    );
    assert_eq!(column(&v, "partition"), [0, 2].map(Value::from), "{v}");
    assert_eq!(column(&v, "new"), [5, 2].map(Value::from), "{v}");
    assert_eq!(column(&v, "clamped"), [true, true].map(Value::from), "{v}");
    assert_eq!(
        column(&v, "requested"),
        [1000, 1000].map(Value::from),
        "{v}"
    );
    assert_eq!(
        committed(bootstrap, &group, &topic, 3),
        [Some(5), Some(3), Some(2)]
    );
}

on_brokers!(to_an_offset =>
    an_offset_moves_only_the_chosen_partitions_and_is_clamped_to_their_watermarks:
    embedded, kafka);

#[test]
fn a_time_after_every_record_moves_to_the_high_watermark() {
    // The mock answers every time look-up with "no record that recent": right here, where the
    // time is after every record.
    let broker = Broker::embedded();
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    let written = now_ms();
    produce(bootstrap, &topic, &[4, 2], written);
    commit(bootstrap, &group, &topic, &[(0, 0), (1, 0)]);

    let later = format!("ms:{}", written + 3_600_000);
    let v = reset_json(bootstrap, &group, &topic, &["--to", &later]);
    assert!(
        v["to"]
            .as_str()
            .is_some_and(|to| to.starts_with("time ") && to.ends_with(&format!("({later})"))),
        "{v}"
    );
    assert_eq!(column(&v, "new"), [4, 2].map(Value::from), "{v}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(4), Some(2)]);
}

fn dry_run(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    produce(bootstrap, &topic, &[6, 3], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 2)]);

    let (ok, out, err) = reset(bootstrap, &group, &topic, &["--to", "latest", "--dry-run"]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.first().is_some_and(|c| c.parse::<i32>().is_ok()))
        .collect();
    // partition, low, high, current, new
    assert_eq!(
        rows,
        vec![
            vec!["0", "0", "6", "2", "6"],
            vec!["1", "0", "3", "none", "3"]
        ],
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(2), None]);

    let (ok, out, err) = reset(
        bootstrap,
        &group,
        &topic,
        &["--to", "earliest", "--dry-run", "--json"],
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(column(&v, "current"), [Value::from(2), Value::Null], "{v}");
    assert_eq!(column(&v, "new"), [0, 0].map(Value::from), "{v}");
    assert_eq!(column(&v, "committed"), [Value::Null, Value::Null], "{v}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(2), None]);
}

on_brokers!(dry_run => dry_run_prints_current_and_new_offsets_and_changes_nothing: embedded, kafka);

#[test]
fn a_commit_the_broker_refuses_for_an_active_group_changes_nothing() {
    // The mock cannot list groups, so the command cannot see the member: it warns, and the
    // broker's refusal of the commit (UnknownMemberId) is what stops the reset.
    let broker = Broker::embedded();
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    produce(bootstrap, &topic, &[3, 3], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 1), (1, 2)]);
    let _member = joined_consumer(bootstrap, &group, &topic, "offsets-reset-test-member");

    let (ok, out, err) = reset(bootstrap, &group, &topic, &["--to", "earliest"]);
    assert!(
        !ok,
        "the reset went through\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.contains("does not list consumer groups"), "{err}");
    assert!(
        err.contains(&format!(
            "the broker refused the commit for group `{group}`"
        )) && err.contains("stop its consumers first")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(1), Some(2)]);
}

fn refusals(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let group = unique("billing");
    let (ok, _, err) = reset(bootstrap, &group, "no-such-topic", &["--to", "earliest"]);
    assert!(!ok);
    assert!(
        err.contains("topic `no-such-topic` does not exist"),
        "{err}"
    );
    assert_eq!(committed(bootstrap, &group, "no-such-topic", 1), [None]);

    let topic = unique("orders");
    broker.create_topic(&topic, 2);
    let (ok, _, err) = reset(
        bootstrap,
        &group,
        &topic,
        &["--to", "earliest", "--partition", "5"],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!("topic `{topic}` has 2 partition(s)"))
            && err.contains("no partition 5"),
        "{err}"
    );

    let (ok, _, err) = reset(bootstrap, &group, &topic, &["--to", "yesterday"]);
    assert!(!ok);
    assert!(err.contains("RFC 3339") && err.contains("ms:"), "{err}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [None, None]);
}

on_brokers!(refusals => unknown_topics_and_partitions_are_clear_errors: embedded, kafka);

// ---- groups with members: Kafka and tansu list them ----------------------------------------

fn active_group(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    produce(bootstrap, &topic, &[3, 2], now_ms());
    // tansu lists (and so describes) only groups with committed offsets: the group has some,
    // as a group being reset usually does.
    commit(bootstrap, &group, &topic, &[(0, 1), (1, 1)]);
    let member = joined_consumer(bootstrap, &group, &topic, "offsets-reset-test-member");

    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["--to", "earliest"];
        args.extend_from_slice(extra);
        let (ok, out, err) = reset(bootstrap, &group, &topic, &args);
        assert!(
            !ok,
            "the reset went through\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            err.contains(&format!(
                "group `{group}` is active (state Stable, 1 member: "
            )) && err.contains("offsets-reset-test-member")
                && err.contains("stop its consumers first"),
            "{err}"
        );
        if broker.is_kafka() {
            // Kafka names the member's client id and host.
            assert!(
                err.contains("(client offsets-reset-test-member, host "),
                "{err}"
            );
        }
        assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(1), Some(1)]);
    }

    // Once its consumer has left, the group is Empty and the reset goes through.
    drop(member);
    let v = reset_json(bootstrap, &group, &topic, &["--to", "latest"]);
    assert_eq!(v["group_state"], "Empty", "{v}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(3), Some(2)]);
}

on_brokers!(active_group =>
    a_group_with_a_member_is_refused_with_its_state_and_members_until_it_stops: kafka, tansu);

// ---- Kafka: times between records ------------------------------------------------------------

/// Produces one record to `topic` for each `(partition, timestamp)`, in that order, and waits
/// for every acknowledgement.
fn produce_at(bootstrap: &str, topic: &str, records: &[(i32, i64)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (i, &(partition, timestamp)) in records.iter().enumerate() {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key("k")
                    .payload(&format!("record {i}"))
                    .timestamp(timestamp),
            )
            .expect("queued");
    }
    producer.flush(LIMIT).expect("every record acknowledged");
}

#[test]
fn a_time_between_records_moves_to_the_first_record_at_or_after_it() {
    let broker = Broker::kafka();
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    // Partition 0: offsets 0-1 at t, 2-3 at t + 10 s, 4 at t + 20 s.
    // Partition 1: offset 0 at t + 30 s, 1 at t + 40 s.
    let t = now_ms() - 120_000;
    let s = |secs: i64| t + secs * 1_000;
    produce_at(
        bootstrap,
        &topic,
        &[
            (0, t),
            (0, t),
            (0, s(10)),
            (0, s(10)),
            (0, s(20)),
            (1, s(30)),
            (1, s(40)),
        ],
    );
    assert_eq!(
        [0, 1].map(|p| watermarks(bootstrap, &topic, p)),
        [(0, 5), (0, 2)]
    );
    commit(bootstrap, &group, &topic, &[(0, 5), (1, 2)]);
    let to_time = |to: &str, extra: &[&str]| -> Value {
        let mut args = vec!["--to", to];
        args.extend_from_slice(extra);
        let v = reset_json(bootstrap, &group, &topic, &args);
        assert_eq!(
            column(&v, "clamped"),
            vec![Value::from(false); column(&v, "new").len()],
            "{v}"
        );
        v
    };

    // Between the records of partition 0 (on the first of two at t + 10 s), before those of
    // partition 1.
    let v = to_time(&format!("ms:{}", s(5)), &[]);
    assert_eq!(
        v["to"],
        format!("time {} (ms:{})", rfc3339(s(5)), s(5)),
        "{v}"
    );
    assert_eq!(column(&v, "current"), [5, 2].map(Value::from), "{v}");
    assert_eq!(column(&v, "new"), [2, 0].map(Value::from), "{v}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(2), Some(0)]);

    // After every record of partition 0: its high watermark; between those of partition 1,
    // given in RFC 3339.
    let v = to_time(&rfc3339(s(35)), &[]);
    assert_eq!(column(&v, "new"), [5, 1].map(Value::from), "{v}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(5), Some(1)]);

    // Exactly at a record's time: that record (the first of the two), on partition 0 only.
    let v = to_time(&format!("ms:{}", s(10)), &["--partition", "0"]);
    assert_eq!(column(&v, "partition"), [Value::from(0)], "{v}");
    assert_eq!(column(&v, "new"), [Value::from(2)], "{v}");
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(2), Some(1)]);

    // Before every record: each partition's first record; after every record: the log ends.
    to_time("2020-01-01T00:00:00Z", &[]);
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(0), Some(0)]);
    to_time(&format!("ms:{}", s(41)), &[]);
    assert_eq!(committed(bootstrap, &group, &topic, 2), [Some(5), Some(2)]);
}

/// `ms` as the command prints a time: RFC 3339 in UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
