//! End-to-end: every command connects as the library does, on the secured listeners of the
//! Apache Kafka started by this test binary (SASL SCRAM, TLS, SASL over TLS with the test PKI):
//! the settings come from a configuration file (`--config`), from the `KAFKA_*` environment, or
//! from `--set`; wrong credentials fail fast, naming the mechanism and the user.
//!
//! These need the broker's own listeners: against a broker given by `SLUICEGATE_TEST_BOOTSTRAP`
//! they pass without running (the library's tests reach such a broker's security settings
//! through `SLUICEGATE_TEST_CONFIG`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::kafka::{shared_kafka, unique};
use common::kafka_broker::{user_for, KafkaBroker};
use common::records::{high_watermarks, produce_records, read_all, Record};
use common::{last_json_line, run_with_env};
use sluicegate::dead_letter::headers;

const LIMIT: Duration = Duration::from_secs(90);

/// The broker this binary started, or `None` (with a note) for an external one.
fn kafka() -> Option<&'static KafkaBroker> {
    let broker = shared_kafka().started.as_ref();
    if broker.is_none() {
        eprintln!("skipped: needs the test broker's secured listeners");
    }
    broker
}

/// Writes `yaml` to a new file and returns its path.
fn config_file(yaml: &str) -> String {
    let path: PathBuf = std::env::temp_dir().join(format!("{}.yaml", unique("sluicegate-cfg")));
    std::fs::write(&path, yaml).expect("write the configuration");
    path.display().to_string()
}

/// A configuration for the SASL_PLAINTEXT listener as the test user of `mechanism`, with
/// `password` (the right one when `None`).
fn sasl_file(kafka: &KafkaBroker, mechanism: &str, password: Option<&str>) -> String {
    let (user, right) = user_for(mechanism);
    config_file(&format!(
        "kafka:\n  bootstrap_servers: {}\n  security:\n    protocol: sasl_plaintext\n    \
         sasl_mechanism: {mechanism}\n    sasl_username: {user}\n    sasl_password: \"{}\"\n",
        kafka.sasl,
        password.unwrap_or(right)
    ))
}

/// The environment for the SASL_SSL listener as carol (SCRAM-SHA-512), trusting the test CA.
fn sasl_ssl_env(kafka: &KafkaBroker) -> Vec<(&'static str, String)> {
    let (user, password) = user_for("SCRAM-SHA-512");
    vec![
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.sasl_ssl.clone()),
        ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl".into()),
        ("KAFKA_SSL_CA_LOCATION", kafka.pki.ca.display().to_string()),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".into()),
        ("KAFKA_SASL_USERNAME", user.into()),
        ("KAFKA_SASL_PASSWORD", password.into()),
        ("RUST_LOG", "warn".into()),
    ]
}

fn run(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_with_env(args, &env, LIMIT)
}

fn quiet() -> Vec<(&'static str, String)> {
    vec![("RUST_LOG", "warn".into())]
}

#[test]
fn topics_commands_take_scram_credentials_from_a_config_file() {
    let Some(kafka) = kafka() else { return };
    let file = sasl_file(kafka, "SCRAM-SHA-256", None);
    let topic = unique("secured-topics");
    let (ok, out, err) = run(
        &[
            "topics",
            "create",
            &topic,
            "--config",
            &file,
            "--partitions",
            "2",
            "--json",
        ],
        &quiet(),
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_json_line(&out, &err)["partitions"], 2);

    let (ok, out, err) = run(&["topics", "list", "-c", &file, "--json"], &quiet());
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("\"{topic}\"")), "{out}");

    let (ok, out, err) = run(
        &["topics", "describe", &topic, "--config", &file, "--json"],
        &quiet(),
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let v = last_json_line(&out, &err);
    assert_eq!(v["partitions"].as_array().map(Vec::len), Some(2), "{v}");
    // DescribeConfigs went through the admin client, over SASL too.
    assert!(v["configs"].is_array(), "{v}");
}

#[test]
fn bench_offsets_reset_and_lag_take_sasl_ssl_settings_from_the_environment() {
    let Some(kafka) = kafka() else { return };
    let env = sasl_ssl_env(kafka);
    let (topic, group) = (unique("secured-lag"), unique("secured-group"));
    // bench produce: its admin client creates the topic, its producer writes over SASL_SSL.
    let (ok, out, err) = run(
        &[
            "bench",
            "produce",
            "--topic",
            &topic,
            "--messages",
            "300",
            "--partitions",
            "3",
            "--json",
        ],
        &env,
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_json_line(&out, &err)["delivered"], 300, "{out}");

    let (ok, out, err) = run(
        &[
            "offsets", "reset", "--group", &group, "--topic", &topic, "--to", "latest", "--json",
        ],
        &env,
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");

    let (ok, out, err) = run(
        &["lag", "--group", &group, "--topic", &topic, "--json"],
        &env,
    );
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let v = last_json_line(&out, &err);
    assert_eq!(v["total_lag"], 0, "{v}");
    let committed: i64 = v["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["committed"].as_i64().expect("committed"))
        .sum();
    assert_eq!(committed, 300, "{v}");
}

#[test]
fn diagnose_and_dlq_replay_take_tls_settings_from_set() {
    let Some(kafka) = kafka() else { return };
    let ca = format!("security.ssl_ca_location={}", kafka.pki.ca.display());
    let tls = [
        "--bootstrap",
        kafka.ssl.as_str(),
        "--set",
        "security.protocol=ssl",
        "--set",
        ca.as_str(),
    ];
    let mut args = vec!["diagnose", "--json"];
    args.extend(tls);
    let (ok, out, err) = run(&args, &quiet());
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");

    // Dead letters written over PLAINTEXT, replayed over TLS: reader and producer both.
    let original = unique("secured-orders");
    let dlq = format!("{original}.dlq");
    let letters: Vec<Record> = (0..3)
        .map(|i| {
            let mut h: Vec<(String, Option<Vec<u8>>)> = Vec::new();
            for (name, v) in [
                (headers::ORIGINAL_TOPIC, original.clone()),
                (headers::ORIGINAL_PARTITION, "0".to_string()),
                (headers::ORIGINAL_OFFSET, i.to_string()),
                (headers::ERROR_KIND, "retryable".to_string()),
                (headers::ERROR_MESSAGE, "boom".to_string()),
                (headers::ATTEMPTS, "3".to_string()),
                (headers::ORIGINAL_TIMESTAMP, "1700000000000".to_string()),
                (headers::GROUP, "billing".to_string()),
                (headers::FIRST_FAILURE, "1700000000000".to_string()),
                (headers::LAST_FAILURE, "1700000000050".to_string()),
            ] {
                h.push((name.to_string(), Some(v.into_bytes())));
            }
            (
                format!("key-{i}").into_bytes(),
                format!("value-{i}").into_bytes(),
                h,
            )
        })
        .collect();
    produce_records(&kafka.bootstrap, &dlq, &letters);
    let mut args = vec!["dlq", "replay", "--topic", dlq.as_str(), "--json"];
    args.extend(tls);
    let (ok, out, err) = run(&args, &quiet());
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_json_line(&out, &err)["sent"], 3, "{out}");
    let replayed = read_all(&kafka.bootstrap, &original, 1, 3);
    assert_eq!(replayed.len(), 3);
    assert_eq!(high_watermarks(&kafka.bootstrap, &original, 1), vec![3]);
}

#[test]
fn wrong_credentials_fail_fast_naming_the_mechanism_and_the_user() {
    let Some(kafka) = kafka() else { return };
    let file = sasl_file(kafka, "SCRAM-SHA-256", Some("not-Bobs-password"));
    for args in [
        vec!["lag", "--config", &file, "--group", "g"],
        vec!["topics", "list", "--config", &file],
        vec![
            "offsets", "reset", "--config", &file, "--group", "g", "--topic", "t", "--to",
            "earliest",
        ],
        vec!["bench", "produce", "--config", &file, "--messages", "10"],
    ] {
        let started = Instant::now();
        let (ok, out, err) = run(&args, &quiet());
        let took = started.elapsed();
        assert!(!ok, "{args:?} succeeded:\n{out}");
        assert!(
            err.contains("authentication failed (SASL mechanism SCRAM-SHA-256, user `bob`)"),
            "{args:?}:\n{err}"
        );
        assert!(!err.contains("not-Bobs-password"), "{err}");
        // librdkafka alone would retry until the command's 10 s budget is spent.
        assert!(
            took < Duration::from_secs(8),
            "{args:?} took {took:?}:\n{err}"
        );
    }
    // The environment (and then --set) win over the file: the right password logs in.
    let (_, right) = user_for("SCRAM-SHA-256");
    let mut env = quiet();
    env.push(("KAFKA_SASL_PASSWORD", "still-wrong".into()));
    let set = format!("security.sasl_password={right}");
    let (ok, out, err) = run(&["topics", "list", "--config", &file, "--set", &set], &env);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    let (ok, _, err) = run(&["topics", "list", "--config", &file], &env);
    assert!(!ok && err.contains("authentication failed"), "{err}");
}
