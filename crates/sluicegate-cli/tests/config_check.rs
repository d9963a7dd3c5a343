//! End-to-end: `sluicegate config check` on the shipped example, on a file with secrets, and
//! on a file with many errors.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{last_json_line, run_with_env};

const LIMIT: Duration = Duration::from_secs(60);

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/sluicegate.yaml")
        .display()
        .to_string()
}

/// Writes `yaml` to a file of its own and returns its path.
fn file(name: &str, yaml: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).expect("the test file is written");
    path.display().to_string()
}

#[test]
fn the_example_configuration_passes() {
    let (ok, out, err) = run_with_env(&["config", "check", "--no-env", &example()], &[], LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("valid (environment ignored)"), "{out}");
    assert!(
        out.contains("group_id: \"orders-billing\"  # file, line"),
        "{out}"
    );
    assert!(out.contains("drain_timeout: \"10s\"  # file"), "{out}");
    assert!(out.contains("    max_elapsed: null  # default"), "{out}");
    assert!(
        out.contains("buffer:\n    partition_bytes: 25165824  # file, line"),
        "{out}"
    );
    assert!(out.contains("#   session.timeout.ms=30000"), "{out}");
    // Its output is YAML, too.
    let body: String = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(body.starts_with("kafka:\n"), "{body}");
}

const WITH_SECRETS: &str = "kafka:
  bootstrap_servers: localhost:9092
  group_id: billing
  topics: [orders]
  security:
    protocol: sasl_ssl
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: billing
  librdkafka:
    sasl.oauthbearer.config: principal=file-secret-1
";

#[test]
fn secrets_are_redacted_and_the_environment_wins_and_is_named() {
    let path = file("secrets", WITH_SECRETS);
    let env = [
        ("KAFKA_SASL_PASSWORD", "env-secret-2"),
        ("KAFKA_BATCH_SIZE", "77"),
        ("RUST_LOG", "warn"),
    ];
    let (ok, out, err) = run_with_env(&["config", "check", &path], &env, LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    for secret in ["file-secret-1", "env-secret-2"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{out}\n{err}"
        );
    }
    assert!(
        out.contains("sasl_password: \"[redacted]\"  # env KAFKA_SASL_PASSWORD"),
        "{out}"
    );
    assert!(
        out.contains("sasl.oauthbearer.config: \"[redacted]\""),
        "{out}"
    );
    assert!(out.contains("#   sasl.password=[redacted]"), "{out}");
    assert!(
        out.contains("max_messages: 77  # env KAFKA_BATCH_SIZE"),
        "{out}"
    );

    let (ok, out, err) = run_with_env(&["config", "check", "--json", &path], &env, LIMIT);
    assert!(ok, "{err}");
    let v = last_json_line(&out, &err);
    assert_eq!(v["ok"], true);
    assert_eq!(v["config"]["security"]["sasl_password"], "[redacted]");
    assert_eq!(v["librdkafka"]["sasl.password"], "[redacted]");
    assert_eq!(
        v["sources"]["kafka.batch.max_messages"],
        "env:KAFKA_BATCH_SIZE"
    );
    assert_eq!(v["sources"]["kafka.group_id"], "file:3:13");
    assert_eq!(v["sources"]["kafka.drain_timeout"], "default");
    assert!(!out.contains("env-secret-2") && !out.contains("file-secret-1"));

    // --no-env: the file alone, which lacks the password.
    let (ok, _, err) = run_with_env(&["config", "check", "--no-env", &path], &env, LIMIT);
    assert!(!ok);
    assert!(
        err.contains("kafka.security.sasl_password: required with SASL mechanism SCRAM-SHA-512"),
        "{err}"
    );
}

const BAD: &str = "kafka:
  bootstrap_servers: localhost:9092
  group_id: billing
  topics: [orders]
  retyr: { max_attempts: 3 }
  max_in_flight: many
  heartbeat_interval: 20s
  batch: { max_wait: 0s }
  security:
    ssl_key_password: hunter2
  librdkafka:
    no.such.property: 1
";

#[test]
fn a_bad_file_fails_listing_every_error_with_its_place() {
    let path = file("bad", BAD);
    let (ok, out, err) = run_with_env(&["config", "check", "--no-env", &path], &[], LIMIT);
    assert!(!ok, "stdout:\n{out}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    let expect = [
        "error: kafka.retyr (line 5, column 3): unknown key `retyr`; did you mean `retry`?",
        "error: kafka.max_in_flight = `many` (line 6, column 18): invalid type",
        "error: kafka.heartbeat_interval = `20s` (line 7, column 23): the heartbeat interval (20s) must be at most a third of the session timeout (45s)",
        "error: kafka.batch.max_wait = `0s` (line 8, column 22): must be above zero",
        "error: kafka.security.ssl_key_password = `[redacted]` (line 10, column 23): a key password without kafka.security.ssl_key_location",
        "error: kafka.librdkafka[\"no.such.property\"] = `1` (line 12, column 23): librdkafka: No such configuration property",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|l| l.starts_with(e)),
            "missing `{e}` in:\n{err}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{err}");
    assert!(err.contains(&format!("{path}: 6 errors")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let (ok, out, err) = run_with_env(
        &["config", "check", "--no-env", "--json", &path],
        &[],
        LIMIT,
    );
    assert!(!ok);
    let v = last_json_line(&out, &err);
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 6, "{v}");
    let retyr = errors
        .iter()
        .find(|e| e["path"] == "kafka.retyr")
        .expect("kafka.retyr");
    assert_eq!(
        (retyr["line"].clone(), retyr["column"].clone()),
        (5.into(), 3.into())
    );
}

#[test]
fn environment_errors_name_the_variable() {
    let (ok, _, err) = run_with_env(
        &["config", "check", &example()],
        &[
            ("KAFKA_MAX_IN_FLIGHT", "lots"),
            ("KAFKA_SECURITY_PROTOCOL", "tls"),
        ],
        LIMIT,
    );
    assert!(!ok);
    assert!(err.contains("error: kafka.max_in_flight = `lots` (from KAFKA_MAX_IN_FLIGHT): expected a whole number"), "{err}");
    assert!(err.contains("error: kafka.security.protocol = `tls` (from KAFKA_SECURITY_PROTOCOL): expected one of: plaintext, ssl, sasl_plaintext, sasl_ssl"), "{err}");
}

#[test]
fn the_group_protocol_is_listed_and_the_consumer_protocol_refuses_classic_settings() {
    // The example, with the classic protocol it names.
    let (ok, out, err) = run_with_env(&["config", "check", "--no-env", &example()], &[], LIMIT);
    assert!(ok, "{err}");
    assert!(
        out.contains("group_protocol: \"classic\"  # file, line"),
        "{out}"
    );
    assert!(out.contains("#   group.protocol=classic"), "{out}");

    // Switched to the consumer protocol from the environment, the example's session timeout,
    // heartbeat and assignment strategy are refused, each saying what replaces it.
    let env = [("KAFKA_GROUP_PROTOCOL", "consumer")];
    let (ok, _, err) = run_with_env(&["config", "check", &example()], &env, LIMIT);
    assert!(!ok, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    for (start, words) in [
        (
            "error: kafka.session_timeout = `30s` (line ",
            "group.consumer.session.timeout.ms",
        ),
        (
            "error: kafka.heartbeat_interval = `3s` (line ",
            "group.consumer.heartbeat.interval.ms",
        ),
        (
            "error: kafka.librdkafka[\"partition.assignment.strategy\"] = `cooperative-sticky` (line ",
            "group.remote.assignor",
        ),
    ] {
        assert!(
            errors
                .iter()
                .any(|l| l.starts_with(start)
                    && l.contains("not used with kafka.group_protocol consumer")
                    && l.contains(words)),
            "missing `{start}` ... `{words}` in:\n{err}"
        );
    }
    assert_eq!(errors.len(), 3, "{err}");

    // Without them it passes, and the source of the protocol is named.
    let yaml =
        "kafka:\n  bootstrap_servers: localhost:9092\n  group_id: billing\n  topics: [orders]\n";
    let path = file("consumer-protocol", yaml);
    let (ok, out, err) = run_with_env(&["config", "check", &path], &env, LIMIT);
    assert!(ok, "{err}");
    assert!(
        out.contains("group_protocol: \"consumer\"  # env KAFKA_GROUP_PROTOCOL"),
        "{out}"
    );
    assert!(out.contains("#   group.protocol=consumer"), "{out}");
    let (ok, _, err) = run_with_env(
        &["config", "check", &path],
        &[("KAFKA_GROUP_PROTOCOL", "kip848")],
        LIMIT,
    );
    assert!(!ok);
    assert!(
        err.contains("error: kafka.group_protocol = `kip848` (from KAFKA_GROUP_PROTOCOL): expected one of: classic, consumer"),
        "{err}"
    );
}

#[test]
fn the_group_instance_id_is_shown_with_its_source_and_checked() {
    let yaml =
        "kafka:\n  bootstrap_servers: localhost:9092\n  group_id: billing\n  topics: [orders]\n";
    let path = file("static-member", yaml);
    let env = [("KAFKA_GROUP_INSTANCE_ID", "billing-0")];
    let (ok, out, err) = run_with_env(&["config", "check", &path], &env, LIMIT);
    assert!(ok, "{err}");
    assert!(
        out.contains("group_instance_id: \"billing-0\"  # env KAFKA_GROUP_INSTANCE_ID"),
        "{out}"
    );
    assert!(out.contains("#   group.instance.id=billing-0"), "{out}");
    let (ok, _, err) = run_with_env(
        &["config", "check", &path],
        &[("KAFKA_GROUP_INSTANCE_ID", "billing/0")],
        LIMIT,
    );
    assert!(!ok);
    assert!(
        err.contains("error: kafka.group_instance_id = `billing/0` (from KAFKA_GROUP_INSTANCE_ID): an instance id may hold only ASCII letters, digits"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_error() {
    let (ok, _, err) = run_with_env(
        &["config", "check", "/nonexistent/sluicegate.yaml"],
        &[],
        LIMIT,
    );
    assert!(!ok);
    assert!(
        err.contains("cannot read /nonexistent/sluicegate.yaml"),
        "{err}"
    );
}

/// The CLI is built with both token providers: `oauthbearer` (OIDC) and `msk_iam` settings
/// pass, the client secret from the environment never shows, and a token endpoint without a
/// client id is an error that names it.
#[test]
fn token_provider_settings_are_checked_and_the_secret_redacted() {
    let base = "kafka:
  bootstrap_servers: localhost:9092
  group_id: billing
  topics: [orders]
  security:
    protocol: sasl_ssl
    sasl_mechanism: OAUTHBEARER
";
    let oidc = file(
        "oidc",
        &format!(
            "{base}    oauthbearer:
      token_endpoint: https://login.example.com/oauth2/token
      client_id: billing
      scope: kafka
"
        ),
    );
    let secret = [("KAFKA_OAUTHBEARER_CLIENT_SECRET", "oidc-cli-s3cret")];
    let (ok, out, err) = run_with_env(&["config", "check", &oidc], &secret, LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("client_secret: \"[redacted]\"  # env KAFKA_OAUTHBEARER_CLIENT_SECRET"),
        "{out}"
    );
    assert!(!out.contains("oidc-cli-s3cret") && !err.contains("oidc-cli-s3cret"));

    let msk = file(
        "msk",
        &format!("{base}    msk_iam:\n      region: eu-west-1\n"),
    );
    let (ok, out, err) = run_with_env(&["config", "check", "--no-env", &msk], &[], LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("region: \"eu-west-1\"  # file, line"), "{out}");

    let no_client = file(
        "oidc-no-client",
        &format!("{base}    oauthbearer:\n      token_endpoint: https://idp/token\n"),
    );
    let (ok, out, err) = run_with_env(&["config", "check", "--no-env", &no_client], &[], LIMIT);
    assert!(!ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("kafka.security.oauthbearer.client_id: required with kafka.security.oauthbearer.token_endpoint"),
        "{err}"
    );
}

/// A `sluicegate run` file: the `kafka:` section is checked as a consumer's, and `sink:` as
/// `run` checks it.
#[test]
fn a_run_file_is_checked_with_its_sink() {
    let worker = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workers/echo.yaml")
        .display()
        .to_string();
    let (ok, out, err) = run_with_env(&["config", "check", "--no-env", &worker], &[], LIMIT);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("# sink: exec: `python3 examples/workers/echo.py`"),
        "{out}"
    );
    let bad = file(
        "bad-sink",
        "kafka:\n  bootstrap_servers: k:9092\n  group_id: g\n  topics: [t]\nsink:\n  http: { url: nope }\n",
    );
    let (ok, _, err) = run_with_env(&["config", "check", "--no-env", &bad], &[], LIMIT);
    assert!(!ok);
    assert!(
        err.contains("error: sink.http.url: `nope` is not a URL"),
        "{err}"
    );
}
