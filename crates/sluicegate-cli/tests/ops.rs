//! End-to-end: `sluicegate lag`, `diagnose` and `topics` against the embedded broker
//! (librdkafka's mock cluster, in this process), Apache Kafka 4.4 and tansu 0.6 (both started
//! by this test binary), and the log format and secret redaction of the CLI.
//!
//! What each broker can show, found by probing them (and asserted below):
//! - Apache Kafka answers everything the commands ask: it lists and describes groups (also
//!   those with only committed offsets) with each member's client id, host and assignment,
//!   creates topics and describes every config (its defaults marked as such). Its high
//!   watermarks are exact, so nothing here works around it.
//! - the mock cluster lists no consumer groups (no ListGroups/DescribeGroups), creates no
//!   topics through the admin API and describes no configs (no CreateTopics/DescribeConfigs in
//!   its ApiVersions answer; asked anyway, librdkafka waits for a broker that supports them
//!   until the request times out). So on it `lag` and `diagnose` say the group's state is
//!   unknown, `topics create` is refused at once, and `topics describe` says why configs are
//!   missing. Topics are made with `EmbeddedKafka::create_topic` there.
//! - tansu lists and describes only groups with committed offsets, and reports members without
//!   client id, host or assignment; it describes only the configs a topic was created with. Its
//!   high watermark can be below the log end when the last batch holds several records, so
//!   records are produced one batch each (on every broker: the helper is shared).

#[macro_use]
mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

use common::kafka::{commit, joined_consumer, now_ms, produce, unique, Broker, LIMIT};
use common::{column, last_json_line, run, run_with_env};

/// Runs `sluicegate ARGS --json`; returns (exit success, the JSON summary, stderr).
fn run_json(args: &[&str]) -> (bool, Value, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = run(&all, LIMIT);
    (ok, last_json_line(&out, &err), err)
}

/// The check named `name` of a diagnosis.
fn check<'a>(diagnosis: &'a Value, name: &str) -> &'a Value {
    diagnosis["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check `{name}` in {diagnosis}"))
}

/// How a check's message must read.
enum Message<'a> {
    Contains(&'a str),
    StartsWith(&'a str),
}

/// Asserts the verdict and the message of the check named `name` of a diagnosis.
fn expect_check(diagnosis: &Value, name: &str, verdict: &str, message: Message) {
    let c = check(diagnosis, name);
    assert_eq!(c["verdict"], verdict, "{diagnosis}");
    let text = c["message"].as_str().unwrap_or_default();
    let fits = match message {
        Message::Contains(part) => text.contains(part),
        Message::StartsWith(start) => text.starts_with(start),
    };
    assert!(fits, "{c}");
}

/// An address on which nothing listens.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

// ---- lag -------------------------------------------------------------------------------------

/// A running consumer's lag (its status, fed by librdkafka's statistics) and `sluicegate lag`
/// agree: 0 on every partition once it has caught up; after more records arrive while it is
/// stopped, the records it has yet to handle, and again the same figures in both.
fn consumer_and_cli_lag(broker: &Broker) {
    let bootstrap = broker.bootstrap().to_string();
    let (topic, group) = (unique("lag-match"), unique("lag-match-group"));
    broker.create_topic(&topic, 2);
    produce(&bootstrap, &topic, &[6, 4], now_ms());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(Semaphore::MAX_PERMITS));
    let start = |gate: std::sync::Arc<Semaphore>| {
        sluicegate::Consumer::builder()
            .bootstrap_servers(&bootstrap)
            .group_id(&group)
            .topic(&topic)
            .commit_interval(Duration::from_millis(200))
            .set("statistics.interval.ms", "200")
            .build(sluicegate::handler_fn(move |_: sluicegate::Message| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await.expect("never closed").forget();
                    Ok(())
                }
            }))
            .expect("consumer")
            .spawn()
            .expect("spawned")
    };
    let wait_lag = |handle: &sluicegate::ConsumerHandle, want: [i64; 2]| {
        let want: std::collections::BTreeMap<_, _> = (0..2)
            .map(|p| (sluicegate::TopicPartition::new(&topic, p), want[p as usize]))
            .collect();
        let mut status = handle.status();
        runtime
            .block_on(async {
                tokio::time::timeout(LIMIT, status.wait_for(|s| s.lag == want)).await
            })
            .unwrap_or_else(|_| {
                panic!("lag never became {want:?}: {:?}", handle.status().current())
            })
            .expect("consumer gone")
    };
    let cli_lag = || {
        let (ok, v, err) = run_json(&[
            "lag",
            "--bootstrap",
            &bootstrap,
            "--group",
            &group,
            "--topic",
            &topic,
        ]);
        assert!(ok, "{v}\nstderr:\n{err}");
        v
    };

    let handle = runtime.block_on(async { start(gate.clone()) });
    let status = wait_lag(&handle, [0, 0]);
    let v = cli_lag();
    assert_eq!(column(&v, "lag"), [0, 0].map(Value::from), "{v}");
    assert_eq!(column(&v, "log_end"), [6, 4].map(Value::from), "{v}");
    let committed: Vec<Value> = (0..2)
        .map(|p| Value::from(status.committed[&sluicegate::TopicPartition::new(&topic, p)]))
        .collect();
    assert_eq!(column(&v, "committed"), committed, "{v}");
    handle.shutdown();
    runtime.block_on(handle.wait()).expect("stopped cleanly");

    produce(&bootstrap, &topic, &[3, 0], now_ms());
    let v = cli_lag();
    assert_eq!(column(&v, "lag"), [3, 0].map(Value::from), "{v}");
    // Restarted with its handler held back, the consumer reports the same backlog.
    let held = std::sync::Arc::new(Semaphore::new(0));
    let handle = runtime.block_on(async { start(held.clone()) });
    wait_lag(&handle, [3, 0]);
    held.add_permits(Semaphore::MAX_PERMITS);
    wait_lag(&handle, [0, 0]);
    handle.shutdown();
    runtime.block_on(handle.wait()).expect("stopped cleanly");
}

on_both_brokers!(consumer_and_cli_lag => consumer_lag_matches_the_cli);

/// A group that consumed part of a topic: committed offsets, log ends and lag per partition.
fn lag_per_partition(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let (topic, other, group) = (unique("orders"), unique("payments"), unique("billing"));
    broker.create_topic(&topic, 3);
    broker.create_topic(&other, 1);
    produce(bootstrap, &topic, &[5, 3, 2], now_ms());
    produce(bootstrap, &other, &[4], now_ms());
    // Partition 0 half read, partition 1 read to its end, partition 2 never committed.
    commit(bootstrap, &group, &topic, &[(0, 2), (1, 3)]);

    let (ok, v, err) = run_json(&["lag", "--bootstrap", bootstrap, "--group", &group]);
    assert!(ok, "{v}\nstderr:\n{err}");
    // Without --topic: only the topic the group has committed offsets on.
    assert_eq!(v["topics"], serde_json::json!([topic]), "{v}");
    assert_eq!(v["topics_from"], "group", "{v}");
    assert_eq!(column(&v, "partition"), [0, 1, 2].map(Value::from));
    assert_eq!(
        column(&v, "committed"),
        [Value::from(2), Value::from(3), Value::Null]
    );
    assert_eq!(column(&v, "log_start"), [0, 0, 0].map(Value::from));
    assert_eq!(column(&v, "log_end"), [5, 3, 2].map(Value::from));
    assert_eq!(column(&v, "lag"), [3, 0, 2].map(Value::from));
    assert_eq!(
        column(&v, "lag_from"),
        ["committed", "committed", "log_start"].map(Value::from)
    );
    assert_eq!(v["total_lag"], 5, "{v}");
    assert_eq!(v["partitions_without_commit"], 1, "{v}");
    if broker.is_embedded() {
        assert_eq!(v["group_state"], Value::Null, "{v}");
        assert!(
            v["group_note"]
                .as_str()
                .is_some_and(|n| n.contains("does not support listing consumer groups")),
            "{v}"
        );
    } else {
        // Kafka and tansu list the group (it has commits) and it has no members.
        assert_eq!(v["group_state"], "Empty", "{v}");
        assert_eq!(v["members"], 0, "{v}");
    }

    // The table, on the two topics named.
    let (ok, out, err) = run(
        &[
            "lag",
            "--bootstrap",
            bootstrap,
            "--group",
            &group,
            "--topic",
            &format!("{topic},{other}"),
        ],
        LIMIT,
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("nothing committed: counted from the log start 0"),
        "{out}"
    );
    assert!(
        out.contains("total lag: 9 over 4 partitions (2 without a committed offset)\n"),
        "{out}"
    );
}

on_both_brokers!(lag_per_partition => lag_shows_committed_offset_log_end_and_lag_per_partition);

/// An unknown group, and an unknown topic of a known group, are clear errors.
fn lag_refusals(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let (topic, group, stranger) = (unique("orders"), unique("billing"), unique("nobody"));
    broker.create_topic(&topic, 1);
    produce(bootstrap, &topic, &[2], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 1)]);

    let (ok, out, err) = run(
        &["lag", "--bootstrap", bootstrap, "--group", &stranger],
        LIMIT,
    );
    assert!(!ok, "stdout:\n{out}");
    assert!(
        err.contains(&format!("group `{stranger}`"))
            && err.contains("no committed offsets on any topic"),
        "{err}"
    );

    let (ok, out, err) = run(
        &[
            "lag",
            "--bootstrap",
            bootstrap,
            "--group",
            &group,
            "--topic",
            "no-such-topic",
        ],
        LIMIT,
    );
    assert!(!ok, "stdout:\n{out}");
    assert!(
        err.contains("topic `no-such-topic` does not exist"),
        "{err}"
    );
}

on_both_brokers!(lag_refusals => lag_refuses_an_unknown_group_or_topic);

/// Without `--topic`, lag also covers the topics the group's members are assigned, counted from
/// the log start where nothing is committed: only Apache Kafka reports assignments.
#[test]
fn lag_covers_the_topics_members_are_assigned_on_kafka() {
    let broker = Broker::kafka();
    let bootstrap = broker.bootstrap();
    let (assigned, committed_on, group) =
        (unique("assigned"), unique("committed"), unique("billing"));
    broker.create_topic(&assigned, 2);
    broker.create_topic(&committed_on, 1);
    produce(bootstrap, &assigned, &[2, 1], now_ms());
    produce(bootstrap, &committed_on, &[4], now_ms());
    commit(bootstrap, &group, &committed_on, &[(0, 1)]);
    let _member = joined_consumer(bootstrap, &group, &assigned, "ops-lag-member");

    let (ok, v, err) = run_json(&["lag", "--bootstrap", bootstrap, "--group", &group]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(v["topics_from"], "group", "{v}");
    let mut topics = vec![assigned.clone(), committed_on.clone()];
    topics.sort();
    assert_eq!(v["topics"], serde_json::json!(topics), "{v}");
    assert_eq!(
        (v["group_state"].clone(), v["members"].clone()),
        ("Stable".into(), 1.into())
    );
    let rows: Vec<(String, i64, Value, i64, String)> = v["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap_or_default().to_string(),
                p["partition"].as_i64().unwrap_or(-1),
                p["committed"].clone(),
                p["lag"].as_i64().unwrap_or(-1),
                p["lag_from"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for row in [
        (assigned.clone(), 0, Value::Null, 2, "log_start".to_string()),
        (assigned.clone(), 1, Value::Null, 1, "log_start".to_string()),
        (
            committed_on.clone(),
            0,
            Value::from(1),
            3,
            "committed".to_string(),
        ),
    ] {
        assert!(rows.contains(&row), "no {row:?} in {v}");
    }
    assert_eq!(v["total_lag"], 6, "{v}");
}

// ---- diagnose --------------------------------------------------------------------------------

#[test]
fn diagnose_passes_a_healthy_embedded_broker_and_warns_what_it_cannot_tell() {
    let broker = Broker::embedded();
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    produce(bootstrap, &topic, &[3, 2], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 1), (1, 2)]);

    let args = [
        "diagnose",
        "--bootstrap",
        bootstrap,
        "--group",
        &group,
        "--topic",
        &topic,
    ];
    let (ok, v, err) = run_json(&args);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(
        (v["ok"].clone(), v["failed"].clone()),
        (true.into(), 0.into())
    );
    assert_eq!(check(&v, "bootstrap")["verdict"], "OK", "{v}");
    assert_eq!(check(&v, "broker 1")["verdict"], "OK", "{v}");
    let apis = check(&v, "api versions");
    assert_eq!(apis["verdict"], "WARN", "{v}");
    assert!(
        apis["message"].as_str().is_some_and(|m| m.contains(
            "but not ListGroups, DescribeGroups, CreateTopics, DescribeConfigs: consumers work"
        )),
        "{apis}"
    );
    expect_check(
        &v,
        &format!("topic {topic}"),
        "OK",
        Message::StartsWith("2 partitions, each with a leader"),
    );
    expect_check(
        &v,
        &format!("group {group}"),
        "WARN",
        Message::Contains("does not support ListGroups/DescribeGroups"),
    );
    let lag = check(&v, &format!("lag {group}"));
    assert_eq!(lag["verdict"], "OK", "{v}");
    assert_eq!(lag["details"]["total_lag"], 2, "{lag}");

    let (ok, out, err) = run(&args, LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("\nOK    bootstrap "), "{out}");
    assert!(
        out.ends_with("result: OK (0 failed, 2 warnings, 4 OK)\n"),
        "{out}"
    );
}

#[test]
fn diagnose_passes_a_healthy_tansu_with_a_running_member() {
    let Some(broker) = Broker::tansu() else {
        return;
    };
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    produce(bootstrap, &topic, &[3, 2], now_ms());
    // tansu lists only groups with committed offsets.
    commit(bootstrap, &group, &topic, &[(0, 3), (1, 1)]);
    let _member = joined_consumer(bootstrap, &group, &topic, "ops-diagnose-member");

    let (ok, v, err) = run_json(&[
        "diagnose",
        "--bootstrap",
        bootstrap,
        "--group",
        &group,
        "--topic",
        &topic,
    ]);
    assert!(ok, "{v}\nstderr:\n{err}");
    for c in v["checks"].as_array().expect("checks") {
        assert_eq!(c["verdict"], "OK", "{c}");
    }
    let group_check = check(&v, &format!("group {group}"));
    let message = group_check["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("state Stable, 1 member: ops-diagnose-member")
            && message.ends_with("(the broker does not report assignments)"),
        "{group_check}"
    );
    assert_eq!(
        check(&v, &format!("lag {group}"))["details"]["total_lag"],
        1,
        "{v}"
    );
}

#[test]
fn diagnose_passes_a_healthy_kafka_and_shows_each_member_with_its_assignment() {
    let broker = Broker::kafka();
    let bootstrap = broker.bootstrap();
    let (topic, group) = (unique("orders"), unique("billing"));
    broker.create_topic(&topic, 2);
    produce(bootstrap, &topic, &[3, 2], now_ms());
    commit(bootstrap, &group, &topic, &[(0, 3), (1, 1)]);
    let _member = joined_consumer(bootstrap, &group, &topic, "ops-diagnose-member");

    let args = [
        "diagnose",
        "--bootstrap",
        bootstrap,
        "--group",
        &group,
        "--topic",
        &topic,
    ];
    let (ok, v, err) = run_json(&args);
    assert!(ok, "{v}\nstderr:\n{err}");
    for c in v["checks"].as_array().expect("checks") {
        assert_eq!(c["verdict"], "OK", "{c}");
    }
    // Every API the commands use, the admin ones too.
    let apis = check(&v, "api versions")["message"]
        .as_str()
        .unwrap_or_default();
    for api in [
        "OffsetCommit v",
        ", and ListGroups v",
        "DescribeGroups v",
        "CreateTopics v",
        "DescribeConfigs v",
    ] {
        assert!(apis.contains(api), "no `{api}` in {apis}");
    }
    expect_check(
        &v,
        &format!("topic {topic}"),
        "OK",
        Message::StartsWith("2 partitions, each with a leader and its "),
    );
    // The member with its client id, its host and the partitions it was assigned.
    let group_check = check(&v, &format!("group {group}"));
    let message = group_check["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("state Stable, 1 member: ")
            && message.contains(" (client ops-diagnose-member, host ")
            && message.ends_with(&format!(" assigned {topic}[0, 1]")),
        "{group_check}"
    );
    let member = &group_check["details"]["members"][0];
    assert_eq!(member["client_id"], "ops-diagnose-member", "{group_check}");
    assert_eq!(
        member["assignment"],
        serde_json::json!([{ "topic": topic, "partitions": [0, 1] }]),
        "{group_check}"
    );
    let lag = check(&v, &format!("lag {group}"));
    assert_eq!(lag["details"]["total_lag"], 1, "{lag}");
    assert_eq!(lag["details"]["group_state"], "Stable", "{lag}");

    let (ok, out, err) = run(&args, LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.ends_with("result: OK (0 failed, 0 warnings, 6 OK)\n"),
        "{out}"
    );
}

/// A topic that does not exist fails its check and the command.
fn diagnose_missing_topic(broker: &Broker) {
    let (ok, v, err) = run_json(&[
        "diagnose",
        "--bootstrap",
        broker.bootstrap(),
        "--topic",
        "no-such-topic",
    ]);
    assert!(!ok, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["failed"], 1, "{v}");
    expect_check(
        &v,
        "topic no-such-topic",
        "FAIL",
        Message::StartsWith("topic `no-such-topic` does not exist"),
    );
    assert!(
        err.contains("FAILED: topic no-such-topic: topic `no-such-topic` does not exist"),
        "{err}"
    );
    assert_eq!(check(&v, "bootstrap")["verdict"], "OK", "{v}");
}

on_both_brokers!(diagnose_missing_topic => diagnose_fails_for_a_missing_topic);

// ---- unreachable brokers ---------------------------------------------------------------------

/// Each command against `bootstrap`: fails, within `--timeout-secs 2` and a margin, saying
/// `expected` (which names the address).
fn every_command_fails_in_time(bootstrap: &str, expected: &str) {
    let timeout = Duration::from_secs(2);
    let margin = Duration::from_secs(3);
    let commands: [&[&str]; 5] = [
        &["lag", "--group", "billing"],
        &["topics", "list"],
        &["topics", "describe", "orders"],
        &["topics", "create", "orders", "--partitions", "1"],
        &["diagnose", "--group", "billing"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--bootstrap", bootstrap, "--timeout-secs", "2"]);
        let started = Instant::now();
        let (ok, out, err) = run(&args, LIMIT);
        let took = started.elapsed();
        assert!(!ok, "{command:?} succeeded:\n{out}");
        assert!(
            took < timeout + margin,
            "{command:?} took {took:?}, more than --timeout-secs 2 and {margin:?}"
        );
        let said = if command[0] == "diagnose" { &out } else { &err };
        assert!(
            said.contains(expected),
            "{command:?} does not say `{expected}`:\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
}

#[test]
fn every_command_fails_fast_naming_a_closed_port() {
    let bootstrap = closed_port();
    every_command_fails_in_time(
        &bootstrap,
        &format!("no bootstrap server accepts a connection ({bootstrap}: "),
    );
    let (ok, v, _) = run_json(&["diagnose", "--bootstrap", &bootstrap]);
    assert!(!ok);
    assert_eq!(check(&v, "bootstrap")["verdict"], "FAIL", "{v}");
    assert_eq!(check(&v, "brokers")["verdict"], "SKIP", "{v}");
}

#[test]
fn every_command_gives_up_within_its_timeout_on_a_port_that_never_answers() {
    // Connections are accepted (by the kernel, into the backlog), and nothing is ever read.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let bootstrap = silent.local_addr().expect("address").to_string();
    every_command_fails_in_time(
        &bootstrap,
        &format!("{bootstrap} accepts connections but answered no metadata request within 2 s"),
    );
}

// ---- topics ----------------------------------------------------------------------------------

#[test]
fn topics_create_then_describe_and_list_show_it_on_tansu() {
    let Some(broker) = Broker::tansu() else {
        return;
    };
    let bootstrap = broker.bootstrap();
    let topic = unique("orders");

    let (ok, v, err) = run_json(&[
        "topics",
        "create",
        &topic,
        "--bootstrap",
        bootstrap,
        "--partitions",
        "3",
        "--topic-config",
        "retention.ms=3600000",
    ]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(v["topic"], topic.as_str(), "{v}");
    assert_eq!(v["partitions"], 3, "{v}");
    assert_eq!(v["replication_factor"], Value::Null, "{v}");

    produce(bootstrap, &topic, &[2, 0, 1], now_ms());
    let (ok, v, err) = run_json(&["topics", "describe", &topic, "--bootstrap", bootstrap]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(column(&v, "partition"), [0, 1, 2].map(Value::from), "{v}");
    assert!(
        column(&v, "leader").iter().all(Value::is_i64),
        "every partition has a leader: {v}"
    );
    assert_eq!(column(&v, "log_start"), [0, 0, 0].map(Value::from), "{v}");
    assert_eq!(column(&v, "log_end"), [2, 0, 1].map(Value::from), "{v}");
    let configs = v["configs"].as_array().expect("tansu describes configs");
    assert!(
        configs
            .iter()
            .any(|c| c["name"] == "retention.ms" && c["value"] == "3600000"),
        "{v}"
    );

    let (ok, out, err) = run(
        &["topics", "describe", &topic, "--bootstrap", bootstrap],
        LIMIT,
    );
    assert!(ok, "stderr:\n{err}");
    assert!(
        out.starts_with(&format!("topic `{topic}`: 3 partitions\n")),
        "{out}"
    );
    assert!(out.contains("  retention.ms = 3600000"), "{out}");

    let (ok, v, err) = run_json(&["topics", "list", "--bootstrap", bootstrap]);
    assert!(ok, "{v}\nstderr:\n{err}");
    let listed = v["topics"]
        .as_array()
        .and_then(|topics| topics.iter().find(|t| t["name"] == topic.as_str()))
        .unwrap_or_else(|| panic!("`{topic}` is not listed: {v}"));
    assert_eq!(listed["partitions"], 3, "{v}");

    let (ok, out, err) = run(
        &[
            "topics",
            "create",
            &topic,
            "--bootstrap",
            bootstrap,
            "--partitions",
            "1",
        ],
        LIMIT,
    );
    assert!(!ok, "a second create succeeded:\n{out}");
    assert!(
        err.contains(&format!(
            "topic `{topic}` already exists (3 partitions); nothing was changed"
        )),
        "{err}"
    );
}

#[test]
fn topics_create_then_describe_and_list_show_it_on_kafka() {
    let Broker::Kafka(kafka) = Broker::kafka() else {
        unreachable!()
    };
    let bootstrap = kafka.bootstrap.as_str();
    let (topic, group) = (unique("orders"), unique("billing"));

    let (ok, v, err) = run_json(&[
        "topics",
        "create",
        &topic,
        "--bootstrap",
        bootstrap,
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        "--topic-config",
        "retention.ms=3600000",
    ]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(v["topic"], topic.as_str(), "{v}");
    assert_eq!(v["partitions"], 3, "{v}");
    assert_eq!(v["replication_factor"], 1, "{v}");

    produce(bootstrap, &topic, &[2, 0, 1], now_ms());
    let (ok, v, err) = run_json(&["topics", "describe", &topic, "--bootstrap", bootstrap]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(column(&v, "partition"), [0, 1, 2].map(Value::from), "{v}");
    for p in v["partitions"].as_array().expect("partitions") {
        let leader = p["leader"]
            .as_i64()
            .unwrap_or_else(|| panic!("no leader: {v}"));
        // One replica (as asked), the leader, in sync.
        assert_eq!(p["replicas"], serde_json::json!([leader]), "{v}");
        assert_eq!(p["isr"], serde_json::json!([leader]), "{v}");
    }
    if kafka.is_ours() {
        assert_eq!(column(&v, "leader"), [1, 1, 1].map(Value::from), "{v}");
    }
    assert_eq!(column(&v, "log_start"), [0, 0, 0].map(Value::from), "{v}");
    assert_eq!(column(&v, "log_end"), [2, 0, 1].map(Value::from), "{v}");
    // The config set at creation, and the broker's defaults marked as such.
    let configs = v["configs"].as_array().expect("Kafka describes configs");
    let config = |name: &str| {
        configs
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no config {name}: {v}"))
    };
    assert_eq!(
        (
            config("retention.ms")["value"].clone(),
            config("retention.ms")["is_default"].clone()
        ),
        ("3600000".into(), false.into()),
        "{v}"
    );
    assert_eq!(
        (
            config("cleanup.policy")["value"].clone(),
            config("cleanup.policy")["is_default"].clone()
        ),
        ("delete".into(), true.into()),
        "{v}"
    );

    let (ok, out, err) = run(
        &["topics", "describe", &topic, "--bootstrap", bootstrap],
        LIMIT,
    );
    assert!(ok, "stderr:\n{err}");
    assert!(
        out.starts_with(&format!("topic `{topic}`: 3 partitions\n")),
        "{out}"
    );
    assert!(out.contains("\n  retention.ms = 3600000\n"), "{out}");
    assert!(
        out.contains("\n  cleanup.policy = delete  (default)\n"),
        "{out}"
    );

    // A group commit makes sure the internal offsets topic exists: hidden unless --all.
    commit(bootstrap, &group, &topic, &[(0, 1)]);
    let listed = |all: bool| {
        let mut args = vec!["topics", "list", "--bootstrap", bootstrap];
        if all {
            args.push("--all");
        }
        let (ok, v, err) = run_json(&args);
        assert!(ok, "{v}\nstderr:\n{err}");
        v
    };
    let v = listed(false);
    let find = |v: &Value, name: &str| {
        v["topics"]
            .as_array()
            .and_then(|topics| topics.iter().find(|t| t["name"] == name).cloned())
    };
    let ours = find(&v, &topic).unwrap_or_else(|| panic!("`{topic}` is not listed: {v}"));
    assert_eq!(ours["partitions"], 3, "{v}");
    assert!(find(&v, "__consumer_offsets").is_none(), "{v}");
    assert!(v["hidden_internal"].as_u64().unwrap_or(0) >= 1, "{v}");
    let v = listed(true);
    assert!(
        find(&v, "__consumer_offsets").is_some(),
        "--all shows it: {v}"
    );

    let (ok, out, err) = run(
        &[
            "topics",
            "create",
            &topic,
            "--bootstrap",
            bootstrap,
            "--partitions",
            "1",
        ],
        LIMIT,
    );
    assert!(!ok, "a second create succeeded:\n{out}");
    assert!(
        err.contains(&format!(
            "topic `{topic}` already exists (3 partitions); nothing was changed"
        )),
        "{err}"
    );
}

#[test]
fn topics_on_the_embedded_broker_describe_and_list_but_cannot_create() {
    let broker = Broker::embedded();
    let bootstrap = broker.bootstrap();
    let (topic, internal) = (unique("orders"), unique("__sluicegate-internal"));

    let started = Instant::now();
    let (ok, out, err) = run(
        &[
            "topics",
            "create",
            &topic,
            "--bootstrap",
            bootstrap,
            "--partitions",
            "2",
        ],
        LIMIT,
    );
    assert!(!ok, "the mock created a topic:\n{out}");
    assert!(
        err.contains(
            "does not support creating topics (its ApiVersions answer lists no \
                      CreateTopics"
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal waited for a timeout: {:?}",
        started.elapsed()
    );

    broker.create_topic(&topic, 2);
    broker.create_topic(&internal, 1);
    produce(bootstrap, &topic, &[2, 1], now_ms());
    let (ok, v, err) = run_json(&["topics", "describe", &topic, "--bootstrap", bootstrap]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert_eq!(column(&v, "partition"), [0, 1].map(Value::from), "{v}");
    assert_eq!(column(&v, "leader"), [1, 1].map(Value::from), "{v}");
    assert_eq!(
        column(&v, "replicas"),
        [[1], [1]].map(|r| Value::from(r.to_vec()))
    );
    assert_eq!(
        column(&v, "isr"),
        [[1], [1]].map(|r| Value::from(r.to_vec()))
    );
    assert_eq!(column(&v, "log_end"), [2, 1].map(Value::from), "{v}");
    assert_eq!(v["configs"], Value::Null, "{v}");
    assert!(
        v["configs_note"]
            .as_str()
            .is_some_and(|n| n.contains("does not support DescribeConfigs")),
        "{v}"
    );

    let names = |v: &Value| -> Vec<String> {
        v["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (ok, v, err) = run_json(&["topics", "list", "--bootstrap", bootstrap]);
    assert!(ok, "{v}\nstderr:\n{err}");
    assert!(names(&v).contains(&topic), "{v}");
    assert!(
        !names(&v).contains(&internal),
        "internal topics are hidden: {v}"
    );
    assert_eq!(v["hidden_internal"], 1, "{v}");
    let (ok, v, _) = run_json(&["topics", "list", "--all", "--bootstrap", bootstrap]);
    assert!(ok);
    assert!(names(&v).contains(&internal), "--all shows them: {v}");

    let (ok, _, err) = run(
        &[
            "topics",
            "describe",
            "no-such-topic",
            "--bootstrap",
            bootstrap,
        ],
        LIMIT,
    );
    assert!(!ok);
    assert!(
        err.contains("topic `no-such-topic` does not exist"),
        "{err}"
    );
}

// ---- logs ------------------------------------------------------------------------------------

#[test]
fn logs_are_json_when_asked_and_never_show_secret_settings() {
    let broker = Broker::embedded();
    let bootstrap = broker.bootstrap();
    let args = [
        "topics",
        "list",
        "--bootstrap",
        bootstrap,
        "-X",
        "client.id=ops-log-test",
        "-X",
        "sasl.password=hunter2",
    ];
    let debug = ("RUST_LOG", "sluicegate=debug");

    let mut with_flag = vec!["--log-format", "json"];
    with_flag.extend(args);
    for (args, env) in [
        (with_flag, vec![debug]),
        (
            args.to_vec(),
            vec![debug, ("SLUICEGATE_LOG_FORMAT", "json")],
        ),
    ] {
        let (ok, out, err) = run_with_env(&args, &env, LIMIT);
        assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
        let lines: Vec<Value> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let settings = lines
            .iter()
            .find(|l| l["fields"]["message"] == "client settings")
            .unwrap_or_else(|| panic!("no `client settings` log line:\n{err}"));
        // Every effective setting, the configuration's and -X's, secrets redacted.
        let shown = settings["fields"]["settings"].as_str().unwrap_or_default();
        for part in [
            &format!("bootstrap.servers={bootstrap}"),
            "client.id=ops-log-test",
            "sasl.password=[redacted]",
        ] {
            assert!(shown.contains(part), "`{part}` missing: {settings}");
        }
        assert!(
            !err.contains("hunter2") && !out.contains("hunter2"),
            "{err}"
        );
    }

    // Without the flag: lines for people, redacted the same way.
    let (ok, out, err) = run_with_env(&args, &[debug], LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let line = err
        .lines()
        .find(|l| l.contains("client settings"))
        .unwrap_or_else(|| panic!("no `client settings` log line:\n{err}"));
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(line.contains("sasl.password=[redacted]"), "{line}");
    assert!(!err.contains("hunter2"), "{err}");
}
