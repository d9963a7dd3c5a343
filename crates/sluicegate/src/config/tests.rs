//! Tests of loading, precedence, validation and redaction.

use std::time::Duration;

use proptest::prelude::*;

use super::testing::*;
use super::*;

const OIDC: &str = "  security:\n    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n    \
                    oauthbearer:\n      token_endpoint: https://idp.example.com/oauth2/token\n      \
                    client_id: billing\n      client_secret: oidc-s3cret\n      scope: kafka\n";

#[test]
fn a_full_file_loads_every_setting() {
    let yaml = r#"
kafka:
  bootstrap_servers: ["a:9092", "b:9092"]
  group_id: billing
  topics: [orders, refunds]
  auto_offset_reset: latest
  ordering: key
  max_in_flight: 64
  max_in_flight_per_partition: 8
  batch: { max_messages: 500, max_wait: 250ms, max_bytes: 1048576 }
  retry:
    max_attempts: 5
    max_elapsed: 10m
    initial_backoff: 200ms
    max_backoff: 10s
    multiplier: 1.5
    jitter: 0.1
  dead_letter: { enabled: true, topic: failures }
  processing_timeout: 30s
  commit_interval: 500ms
  drain_timeout: 20s
  session_timeout: 30s
  heartbeat_interval: 3s
  max_poll_interval: 10m
  fetch: { min_bytes: 50000, max_wait: 500ms, max_partition_bytes: 1048576, max_bytes: 52428800 }
  buffer: { partition_messages: 100, partition_bytes: 1000000, total_messages: 1000, total_bytes: 10000000 }
  metrics_addr: 0.0.0.0:9464
  security:
    protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    sasl_username: app
    sasl_password: hunter2
  librdkafka:
    partition.assignment.strategy: cooperative-sticky
    fetch.error.backoff.ms: 100
"#;
    let c = ConsumerConfig::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.bootstrap_servers, "a:9092,b:9092");
    assert_eq!(c.topics, ["orders", "refunds"]);
    assert_eq!(c.ordering, Ordering::Key);
    assert_eq!(c.batch.max_wait, Duration::from_millis(250));
    assert_eq!(c.retry.max_attempts, Some(5));
    assert_eq!(c.retry.max_elapsed, Some(Duration::from_secs(600)));
    assert_eq!(c.security.protocol, Some(SecurityProtocol::SaslSsl));
    assert_eq!(
        c.security.sasl_password.as_ref().map(Secret::expose),
        Some("hunter2")
    );
    assert_eq!(c.librdkafka.0["fetch.error.backoff.ms"], "100");
    let props = c.client_properties();
    assert_eq!(props["session.timeout.ms"], "30000");
    assert_eq!(props["fetch.wait.max.ms"], "500");
    assert_eq!(props["max.partition.fetch.bytes"], "1048576");
    assert_eq!(props["security.protocol"], "sasl_ssl");
    assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(props["sasl.password"], "hunter2");
    assert_eq!(props["auto.offset.reset"], "latest");
    c.check_client().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn environment_overrides_the_file_and_records_the_source() {
    let yaml = format!("{BASE}  batch: {{ max_messages: 10 }}\n  retry: {{ max_attempts: 2 }}\n");
    let env = [
        ("KAFKA_BATCH_SIZE", "500"),
        ("KAFKA_TOPICS", "a, b,c"),
        ("KAFKA_MAX_RETRIES", "3"),
        ("KAFKA_PROCESSING_TIMEOUT_MS", "1500"),
        ("KAFKA_SASL_PASSWORD", "from-env"),
        ("KAFKA_BROKER_ID", "1"), // not ours: ignored (with a warning)
        ("PATH", "/bin"),
    ];
    let loaded = ConsumerConfig::resolve(
        Some(&yaml),
        env.iter().copied().chain([
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "app"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.batch.max_messages, 500);
    assert_eq!(c.topics, ["a", "b", "c"]);
    assert_eq!(c.retry.max_attempts, Some(4), "3 retries = 4 attempts");
    assert_eq!(c.processing_timeout, Some(Duration::from_millis(1500)));
    let s = &loaded.sources;
    assert_eq!(
        s.of("kafka.batch.max_messages"),
        Source::Env("KAFKA_BATCH_SIZE".into())
    );
    assert_eq!(
        s.of("kafka.group_id"),
        Source::File {
            line: 3,
            column: 13
        }
    );
    assert_eq!(s.of("kafka.drain_timeout"), Source::Default);
}

#[test]
fn later_table_entries_win_whatever_the_order_of_the_environment() {
    let env = [
        ("KAFKA_DLQ_ENABLED", "false"),
        ("KAFKA_DLQ_TOPIC", "failures"),
        ("KAFKA_TOPICS", "x,y"),
        ("KAFKA_TOPIC", "z"),
    ];
    let c = ConsumerConfig::load_str(BASE, env).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.dead_letter.enabled, "KAFKA_DLQ_ENABLED wins");
    assert_eq!(c.dead_letter.topic.as_deref(), Some("failures"));
    assert_eq!(c.topics, ["x", "y"], "KAFKA_TOPICS wins over KAFKA_TOPIC");
    let c = ConsumerConfig::load_str(BASE, [("KAFKA_DLQ_TOPIC", "failures")]).unwrap();
    assert!(
        c.dead_letter.enabled,
        "a DLQ topic alone enables dead letters"
    );
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion_and_their_place() {
    let yaml = format!("{BASE}  retyr:\n    max_attempts: 3\n  batch:\n    max_mesages: 5\n");
    let errors = errors_of(&yaml, &[]);
    assert_error(
        &errors,
        "kafka.retyr",
        "",
        &[
            "unknown key `retyr`",
            "did you mean `retry`?",
            "line 5, column 3",
        ],
    );
    assert_error(
        &errors,
        "kafka.batch.max_mesages",
        "",
        &[
            "did you mean `max_messages`?",
            "line 8, column 5",
            "max_wait",
        ],
    );
    let errors = errors_of("kafak:\n  group_id: x\n", &[]);
    assert_error(&errors, "kafak", "", &["did you mean `kafka`?"]);
    let errors = errors_of(&format!("{BASE}  zzzzzz: 1\n"), &[]);
    let e = errors.at("kafka.zzzzzz").next().unwrap().to_string();
    assert!(!e.contains("did you mean"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once_one_line_each() {
    let yaml = r#"
kafka:
  bootstrap_servers: localhost:9092
  group_id: billing
  topics: [orders]
  max_in_flight: lots
  batch:
    max_wait: 0s
  retry:
    max_attempts: 0
    initial_backoff: 1m
    max_backoff: 1s
  session_timeout: 10s
  heartbeat_interval: 5s
  metrics_addr: nowhere
  commit_interval: 5
"#;
    let errors = errors_of(yaml, &[]);
    let text = errors.to_string();
    assert_eq!(text.lines().count(), errors.0.len(), "{text}");
    assert_error(
        &errors,
        "kafka.max_in_flight",
        "lots",
        &["line 6, column 18", "expected a whole number"],
    );
    assert_error(
        &errors,
        "kafka.batch.max_wait",
        "0s",
        &["must be above zero"],
    );
    assert_error(
        &errors,
        "kafka.retry.max_attempts",
        "0",
        &["line 10", "must be at least 1"],
    );
    assert_error(
        &errors,
        "kafka.retry.initial_backoff",
        "1m",
        &["must be at most kafka.retry.max_backoff (1s)"],
    );
    assert_error(
        &errors,
        "kafka.heartbeat_interval",
        "5s",
        &["at most a third of the session timeout (10s)"],
    );
    assert_error(
        &errors,
        "kafka.metrics_addr",
        "nowhere",
        &["expected an address like 0.0.0.0:9464"],
    );
    assert_error(
        &errors,
        "kafka.commit_interval",
        "5",
        &["has no unit", "5ms or 5s"],
    );
    assert_eq!(errors.0.len(), 7, "{text}");
}

#[test]
fn required_settings_are_named() {
    let errors = errors_of("kafka: {}\n", &[]);
    assert_error(
        &errors,
        "kafka.bootstrap_servers",
        "",
        &["required", "KAFKA_BOOTSTRAP_SERVERS"],
    );
    assert_error(&errors, "kafka.group_id", "", &["required"]);
    assert_error(&errors, "kafka.topics", "", &["at least one topic"]);
    // The environment can supply them all.
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", "k:9092"),
        ("KAFKA_CONSUMER_GROUP", "g"),
        ("KAFKA_TOPICS", "t"),
    ];
    ConsumerConfig::load_str("kafka: {}\n", env).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn single_setting_rules() {
    let yaml =
        "kafka:\n  bootstrap_servers: k:9092\n  group_id: g\n  topics: [orders, 'bad topic', orders]\n  retry: { multiplier: 0.5, jitter: 2 }\n  \
         ordering: sideways\n  auto_offset_reset: newest\n  max_in_flight_per_partition: 0\n  \
         buffer: { total_bytes: 0 }\n  session_timeout: 2h\n";
    let errors = errors_of(yaml, &[]);
    assert_error(
        &errors,
        "kafka.topics[1]",
        "bad topic",
        &["ASCII letters, digits"],
    );
    assert_error(&errors, "kafka.topics[2]", "orders", &["listed twice"]);
    assert_error(&errors, "kafka.retry.multiplier", "0.5", &["at least 1"]);
    assert_error(&errors, "kafka.retry.jitter", "2", &["from 0 to 1"]);
    assert_error(
        &errors,
        "kafka.ordering",
        "sideways",
        &["expected one of: partition, key, unordered"],
    );
    assert_error(
        &errors,
        "kafka.auto_offset_reset",
        "newest",
        &["expected one of: earliest, latest, error"],
    );
    assert_error(
        &errors,
        "kafka.max_in_flight_per_partition",
        "0",
        &["at least 1"],
    );
    assert_error(&errors, "kafka.buffer.total_bytes", "0", &["at least 1"]);
    assert_error(&errors, "kafka.session_timeout", "2h", &["at most 1h"]);
}

#[test]
fn group_timeout_rules_use_librdkafka_defaults_where_unset() {
    // 20s heartbeat against the default 45s session.
    let errors = errors_of(&format!("{BASE}  heartbeat_interval: 20s\n"), &[]);
    assert_error(&errors, "kafka.heartbeat_interval", "20s", &["(45s)"]);
    // A 6s session against the default 3s heartbeat: the session is named.
    let errors = errors_of(&format!("{BASE}  session_timeout: 6s\n"), &[]);
    assert_error(
        &errors,
        "kafka.session_timeout",
        "6s",
        &["heartbeat interval (3s)"],
    );
    let errors = errors_of(&format!("{BASE}  max_poll_interval: 30s\n"), &[]);
    assert_error(
        &errors,
        "kafka.max_poll_interval",
        "30s",
        &["at least the session timeout (45s)"],
    );
    // Exactly a third is allowed; a short session is only a warning.
    let c = ConsumerConfig::from_yaml_str(&format!(
        "{BASE}  session_timeout: 3s\n  heartbeat_interval: 1s\n"
    ))
    .unwrap();
    let w = c.warnings();
    assert!(
        w[0].to_string().contains("kafka.session_timeout = `3s`"),
        "{w:?}"
    );
}

#[test]
fn group_instance_id_with_static_assignment_is_a_warning() {
    let c = ConsumerConfig::from_yaml_str(&format!(
        "{BASE}  group_instance_id: billing-0\n  static_assignment: true\n"
    ))
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string().starts_with(
            "kafka.group_instance_id = `billing-0`: ignored with kafka.static_assignment"
        ),
        "{w:?}"
    );
}

#[test]
fn a_bad_group_protocol_names_the_value_and_the_choices() {
    let errors = errors_of(&format!("{BASE}  group_protocol: kip848\n"), &[]);
    assert_error(
        &errors,
        "kafka.group_protocol",
        "kip848",
        &["line 5", "expected one of: classic, consumer"],
    );
    let errors = errors_of(BASE, &[("KAFKA_GROUP_PROTOCOL", "new")]);
    assert_error(
        &errors,
        "kafka.group_protocol",
        "new",
        &["from KAFKA_GROUP_PROTOCOL", "classic, consumer"],
    );
}

#[test]
fn the_consumer_protocol_refuses_the_classic_protocols_settings() {
    let yaml = format!(
        "{BASE}  group_protocol: consumer\n  session_timeout: 6s\n  heartbeat_interval: 5s\n  \
         librdkafka:\n    partition.assignment.strategy: cooperative-sticky\n    \
         group.protocol.type: consumer\n    group.protocol: classic\n"
    );
    let errors = errors_of(&yaml, &[]);
    assert_error(
        &errors,
        "kafka.session_timeout",
        "6s",
        &[
            "line 6",
            "not used with kafka.group_protocol consumer",
            "group.consumer.session.timeout.ms",
            "set kafka.group_protocol to classic",
        ],
    );
    // Refused for the protocol, not measured against a session timeout it does not use.
    assert_eq!(errors.at("kafka.heartbeat_interval").count(), 1, "{errors}");
    assert_error(
        &errors,
        "kafka.heartbeat_interval",
        "5s",
        &["group.consumer.heartbeat.interval.ms"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"partition.assignment.strategy\"]",
        "cooperative-sticky",
        &["group.remote.assignor (uniform or range)"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"group.protocol.type\"]",
        "consumer",
        &["classic group protocol only"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"group.protocol\"]",
        "classic",
        &["also set by kafka.group_protocol"],
    );
    assert_eq!(errors.0.len(), 5, "{errors}");
    // The pass-through session timeout is refused for the protocol, not as a typed setting.
    let errors = errors_of(
        &format!("{BASE}  group_protocol: consumer\n  librdkafka:\n    session.timeout.ms: 6000\n"),
        &[],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"session.timeout.ms\"]",
        "6000",
        &["group.consumer.session.timeout.ms"],
    );

    // The same settings are fine with the classic protocol.
    let classic = format!(
        "{BASE}  session_timeout: 6s\n  heartbeat_interval: 2s\n  librdkafka:\n    \
         partition.assignment.strategy: cooperative-sticky\n"
    );
    ConsumerConfig::from_yaml_str(&classic).unwrap_or_else(|e| panic!("{e}"));
    // A max.poll.interval.ms below librdkafka's default session timeout (45s) is refused with
    // the classic protocol only: with the consumer protocol there is no client session.
    let short_poll = "  max_poll_interval: 10s\n";
    let errors = errors_of(&format!("{BASE}{short_poll}"), &[]);
    assert_error(&errors, "kafka.max_poll_interval", "10s", &["(45s)"]);
    ConsumerConfig::from_yaml_str(&format!("{BASE}{short_poll}  group_protocol: consumer\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The broker's assignor does nothing with the classic protocol: a warning.
    let c = ConsumerConfig::from_yaml_str(&format!(
        "{BASE}  librdkafka:\n    group.remote.assignor: range\n"
    ))
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].to_string()
            .starts_with("kafka.librdkafka[\"group.remote.assignor\"] = `range`: ignored"),
        "{w:?}"
    );
}

#[test]
fn dead_letter_rules() {
    let c = ConsumerConfig::from_yaml_str(&format!("{BASE}  dead_letter: {{ enabled: true }}\n"))
        .unwrap();
    let debug = format!("{:?}", c.dead_letter());
    assert!(
        debug.contains("topic: None") && debug.contains("\".dlq\""),
        "{debug}"
    );
    let errors = errors_of(
        &format!("{BASE}  dead_letter: {{ enabled: true, topic: orders }}\n"),
        &[],
    );
    assert_error(
        &errors,
        "kafka.dead_letter.topic",
        "orders",
        &["is one of kafka.topics"],
    );
    let c =
        ConsumerConfig::from_yaml_str(&format!("{BASE}  dead_letter: {{ topic: dlq }}\n")).unwrap();
    assert!(c.warnings()[0].to_string().contains("enabled is false"));
}

#[test]
fn security_rules() {
    let sec = |body: &str| errors_of(&format!("{BASE}  security:\n{body}"), &[]);
    let e = sec("    sasl_mechanism: PLAIN\n    sasl_username: u\n    sasl_password: p\n");
    assert_error(
        &e,
        "kafka.security.sasl_mechanism",
        "PLAIN",
        &["needs a SASL protocol", "plaintext, the default"],
    );
    let e = sec("    protocol: sasl_ssl\n");
    assert_error(
        &e,
        "kafka.security.sasl_mechanism",
        "",
        &["required with protocol sasl_ssl", "SCRAM-SHA-256"],
    );
    let e = sec("    protocol: sasl_ssl\n    sasl_mechanism: SCRAM-SHA-256\n");
    assert_error(
        &e,
        "kafka.security.sasl_username",
        "",
        &["required with SASL mechanism SCRAM-SHA-256"],
    );
    assert_error(
        &e,
        "kafka.security.sasl_password",
        "",
        &["KAFKA_SASL_PASSWORD"],
    );
    let e = sec("    protocol: ssl\n    ssl_key_password: pw\n");
    assert_error(
        &e,
        "kafka.security.ssl_key_password",
        REDACTED,
        &["without kafka.security.ssl_key_location"],
    );
    let e = sec("    ssl_ca_location: /ca.pem\n");
    assert_error(
        &e,
        "kafka.security.ssl_ca_location",
        "/ca.pem",
        &["only used over TLS"],
    );
    let e = sec("    protocol: ssl\n    ssl_certificate_location: /c.pem\n");
    assert_error(
        &e,
        "kafka.security.ssl_key_location",
        "",
        &["needs its private key"],
    );
    let e = sec("    sasl_username: u\n");
    assert_error(
        &e,
        "kafka.security.sasl_username",
        "",
        &["needs kafka.security.sasl_mechanism"],
    );
    let e = sec("    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n    sasl_password: x\n");
    assert_error(
        &e,
        "kafka.security.sasl_password",
        "",
        &["only used by SASL mechanisms PLAIN"],
    );
    let e = sec("    protocol: tls\n");
    assert_error(
        &e,
        "kafka.security.protocol",
        "tls",
        &["expected one of: plaintext, ssl, sasl_plaintext, sasl_ssl"],
    );
    let e = sec("    protocol: sasl_ssl\n    sasl_mechanism: PLAIN\n    sasl_username: u\n    sasl_password: '[redacted]'\n");
    assert_error(
        &e,
        "kafka.security.sasl_password",
        REDACTED,
        &["placeholder"],
    );
}

#[test]
fn pass_through_rules() {
    let yaml = format!(
        "{BASE}  session_timeout: 30s\n  librdkafka:\n    enable.auto.commit: true\n    \
         session.timeout.ms: 10000\n    sasl.password: hunter2\n    nested: [1]\n"
    );
    let errors = errors_of(&yaml, &[]);
    assert_error(
        &errors,
        "kafka.librdkafka[\"enable.auto.commit\"]",
        "true",
        &["managed by Sluicegate"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"session.timeout.ms\"]",
        "10000",
        &["also set by kafka.session_timeout"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"sasl.password\"]",
        REDACTED,
        &["use kafka.security.sasl_password"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"nested\"]",
        "[1]",
        &["a single value"],
    );
    assert!(!errors.to_string().contains("hunter2"), "{errors}");
}

#[test]
fn librdkafka_refusals_are_all_reported_with_their_reason() {
    let yaml = format!(
        "{BASE}  fetch: {{ max_wait: 400s }}\n  librdkafka:\n    no.such.property: 1\n    \
         fetch.error.backoff.ms: soon\n    ssl.key.pem: secret-key\n"
    );
    let c = ConsumerConfig::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let errors = c.check_client().unwrap_err();
    assert_error(
        &errors,
        "kafka.librdkafka[\"no.such.property\"]",
        "1",
        &["librdkafka: No such configuration property"],
    );
    assert_error(
        &errors,
        "kafka.librdkafka[\"fetch.error.backoff.ms\"]",
        "soon",
        &["librdkafka: "],
    );
    // A derived property is reported at its typed setting.
    assert_error(&errors, "kafka.fetch.max_wait", "400000", &["librdkafka: "]);
    assert!(!errors.to_string().contains("secret-key"), "{errors}");
}

#[test]
fn a_file_that_is_not_yaml_is_reported_with_its_place() {
    let errors = errors_of("kafka:\n  topics: [a\n  group_id: x\n", &[]);
    let e = &errors.0[0];
    assert!(e.reason.contains("not valid YAML"), "{e}");
    assert!(matches!(e.source, Some(Source::File { .. })), "{e}");
    assert_eq!(errors.to_string().lines().count(), 1, "{errors}");
    let errors = errors_of(&format!("{BASE}  group_id: again\n"), &[]);
    assert_error(
        &errors,
        "kafka",
        "",
        &["duplicate mapping key: group_id", "line 5, column 3"],
    );
    let errors = errors_of("- a\n- b\n", &[]);
    assert_error(
        &errors,
        "kafka",
        "[\"a\",\"b\"]",
        &["a mapping with a `kafka:` section"],
    );
}

#[test]
fn environment_values_are_checked_and_named() {
    let errors = errors_of(
        BASE,
        &[
            ("KAFKA_BATCH_SIZE", "many"),
            ("KAFKA_PROCESSING_TIMEOUT_MS", "30s"),
            ("KAFKA_SECURITY_PROTOCOL", "tls"),
            ("KAFKA_DLQ_ENABLED", "perhaps"),
            ("KAFKA_MAX_IN_FLIGHT", "0"),
        ],
    );
    assert_error(
        &errors,
        "kafka.batch.max_messages",
        "many",
        &["from KAFKA_BATCH_SIZE", "whole number"],
    );
    assert_error(
        &errors,
        "kafka.processing_timeout",
        "30s",
        &["whole milliseconds"],
    );
    assert_error(&errors, "kafka.security.protocol", "tls", &["sasl_ssl"]);
    assert_error(
        &errors,
        "kafka.dead_letter.enabled",
        "perhaps",
        &["true or false"],
    );
    assert_error(
        &errors,
        "kafka.max_in_flight",
        "0",
        &["(from KAFKA_MAX_IN_FLIGHT)", "at least 1"],
    );
}

/// The warnings about variables of `env` loaded over [`BASE`], as displayed.
fn variable_warnings(env: &[(&str, &str)]) -> Vec<String> {
    let loaded =
        ConsumerConfig::resolve(Some(BASE), env.iter().copied()).unwrap_or_else(|e| panic!("{e}"));
    loaded.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn unknown_variables_are_warned_about_with_the_closest_known_name() {
    let warnings = variable_warnings(&[
        ("KAFKA_GRUOP_ID", "billing"),
        ("KAFKA_MAX_INFLIGHT", "10"),
        ("SLUICEGATE_GROUP_ID", "billing"),
        ("SLUICEGATE_LOG_FROMAT", "json"),
        ("KAFKA_SASL_PASSWRD", "hunter2"),
        ("KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://k:9092"),
        ("KAFKA_BATCH_SIZE", "5"),
        ("PATH", "/bin"),
    ]);
    assert_eq!(
        warnings,
        [
            "KAFKA_ADVERTISED_LISTENERS: unknown variable, ignored (the variables Sluicegate \
             reads are listed in its README, \"Configuration: file, environment, code\")",
            "KAFKA_GRUOP_ID: unknown variable, ignored; did you mean `KAFKA_GROUP_ID`?",
            "KAFKA_MAX_INFLIGHT: unknown variable, ignored; did you mean `KAFKA_MAX_IN_FLIGHT`?",
            "KAFKA_SASL_PASSWRD: unknown variable, ignored; did you mean `KAFKA_SASL_PASSWORD`?",
            "SLUICEGATE_GROUP_ID: unknown variable, ignored; did you mean `KAFKA_GROUP_ID`?",
            "SLUICEGATE_LOG_FROMAT: unknown variable, ignored; did you mean \
             `SLUICEGATE_LOG_FORMAT`?",
        ]
    );
    assert!(!warnings.concat().contains("hunter2"), "a value was shown");
    let loaded = ConsumerConfig::resolve(Some(BASE), [("KAFKA_GRUOP_ID", "x")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.group_id, "billing",
        "an unknown variable changed nothing"
    );
    assert_eq!(
        loaded.warnings[0].source,
        Some(Source::Env("KAFKA_GRUOP_ID".into()))
    );
}

#[test]
fn known_other_and_empty_variables_are_not_warned_about() {
    let mut env: Vec<(&str, &str)> = OTHER_VARS.iter().map(|name| (*name, "x")).collect();
    env.extend([
        ("KAFKA_BATCH_SIZE", "5"),
        ("KAFKA_GRUOP_ID", ""),
        ("KAFKA_GRUOP_ID", "  "),
        ("KAFKA", "x"),
        ("SLUICEGATE", "x"),
        ("kafka_gruop_id", "x"),
        ("MY_KAFKA_THING", "x"),
    ]);
    assert_eq!(variable_warnings(&env), Vec::<String>::new());
    for name in [
        "KAFKA_HOME",
        "KAFKA_OPTS",
        "KAFKA_HEAP_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_DEBUG",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_CLUSTER_ID",
        "SLUICEGATE_LOG_FORMAT",
        "SLUICEGATE_TEST_BOOTSTRAP",
    ] {
        assert!(OTHER_VARS.contains(&name), "{name}");
    }
    for var in ENV_VARS {
        assert!(!OTHER_VARS.contains(&var.name), "{} is both", var.name);
    }
}

#[test]
fn config_check_reports_unknown_variables_as_warnings_not_errors() {
    let report = ConsumerConfig::check(Some(BASE), [("KAFKA_SESION_TIMEOUT_MS", "10000")]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let shown: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "KAFKA_SESION_TIMEOUT_MS: unknown variable, ignored; did you mean \
          `KAFKA_SESSION_TIMEOUT_MS`?"
        ]
    );
    // Even when the file cannot be read.
    let report = ConsumerConfig::check(Some("kafka: ["), [("KAFKA_SESION_TIMEOUT_MS", "1")]);
    assert!(!report.errors.is_empty());
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

#[test]
fn plain_scalars_are_taken_as_written_where_a_string_is_expected() {
    let yaml = "kafka:\n  bootstrap_servers: k:9092\n  group_id: no\n  topics: [y, 2024]\n  \
                librdkafka:\n    client.id: on\n    fetch.error.backoff.ms: 1e3\n";
    let c = ConsumerConfig::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.group_id, "no");
    assert_eq!(c.topics, ["y", "2024"]);
    assert_eq!(c.librdkafka.0["client.id"], "on");
    assert_eq!(c.librdkafka.0["fetch.error.backoff.ms"], "1e3");
}

#[test]
fn an_empty_section_means_the_defaults() {
    let c = ConsumerConfig::from_yaml_str(&format!("{BASE}  retry:\n  librdkafka:\n")).unwrap();
    assert_eq!(c.retry, RetryConfig::default());
}

/// Any valid configuration: the defaults with a selection of settings changed.
fn valid_config() -> impl Strategy<Value = ConsumerConfig> {
    (
        prop::collection::vec("[a-z][a-z0-9._-]{0,20}", 1..4),
        1usize..10_000,
        prop::option::of(1u32..100),
        (1u64..10_000, 0u64..10_000),
        0.0f64..=1.0,
        prop::option::of(1u64..100_000),
        prop::sample::select(vec![
            Ordering::Partition,
            Ordering::Key,
            Ordering::Unordered,
        ]),
        prop::option::of("[a-z]{1,10}"),
        prop::collection::btree_map("[a-z]{1,8}\\.[a-z]{1,8}", "[a-z0-9]{1,8}", 0..3),
        prop::sample::select(vec![GroupProtocol::Classic, GroupProtocol::Consumer]),
    )
        .prop_map(
            |(
                topics,
                in_flight,
                attempts,
                (initial, extra),
                jitter,
                wait,
                ordering,
                dlq,
                props,
                group_protocol,
            )| {
                let mut topics = topics;
                topics.dedup();
                let mut c = ConsumerConfig {
                    bootstrap_servers: "localhost:9092".into(),
                    group_id: "g".into(),
                    max_in_flight: in_flight,
                    ordering,
                    group_protocol,
                    ..ConsumerConfig::default()
                };
                c.topics = topics.clone();
                c.topics.sort();
                c.topics.dedup();
                c.retry.max_attempts = attempts;
                c.retry.initial_backoff = Duration::from_millis(initial);
                c.retry.max_backoff = Duration::from_millis(initial + extra);
                c.retry.jitter = jitter;
                c.fetch.max_wait = wait.map(Duration::from_millis);
                c.dead_letter.enabled = dlq.is_some();
                c.dead_letter.topic = dlq.map(|t| format!("dlq-{t}"));
                c.librdkafka = Properties(props);
                c
            },
        )
}

proptest! {
    #[test]
    fn any_valid_config_round_trips_through_yaml(c in valid_config()) {
        prop_assert!(c.validate().is_ok(), "{:?}", c.validate());
        let yaml = c.to_yaml();
        let back = ConsumerConfig::from_yaml_str(&yaml)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(back, c);
    }

    #[test]
    fn environment_always_wins_over_the_file(
        file_batch in 1usize..1000, env_batch in 1usize..1000,
        file_group in "[a-z]{1,8}", env_group in "[a-z]{1,8}",
        file_timeout in 1u64..100_000, env_timeout in 1u64..100_000,
    ) {
        let yaml = format!(
            "kafka:\n  bootstrap_servers: k:9092\n  topics: [t]\n  group_id: {file_group}\n  \
             batch: {{ max_messages: {file_batch} }}\n  processing_timeout: {file_timeout}ms\n"
        );
        let batch = env_batch.to_string();
        let timeout = env_timeout.to_string();
        let env = [
            ("KAFKA_BATCH_SIZE", batch.as_str()),
            ("KAFKA_GROUP_ID", env_group.as_str()),
            ("KAFKA_PROCESSING_TIMEOUT_MS", timeout.as_str()),
        ];
        let c = ConsumerConfig::load_str(&yaml, env)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(c.batch.max_messages, env_batch);
        prop_assert_eq!(c.group_id, env_group);
        prop_assert_eq!(c.processing_timeout, Some(Duration::from_millis(env_timeout)));
    }
}

#[test]
fn every_env_var_names_a_real_setting() {
    let schema = serde_json::to_value(ConsumerConfig::default()).unwrap();
    for var in ENV_VARS {
        let mut node = &schema;
        for part in var.path.trim_start_matches("kafka.").split('.') {
            node = node
                .get(part)
                .unwrap_or_else(|| panic!("{} -> {}: no such setting", var.name, var.path));
        }
    }
    let _ = no_env();
}

/// `examples/sluicegate.yaml` is the README's "shows every setting": each setting the
/// configuration has is in it, set or commented out (`# key: value`, which this uncomments).
#[test]
fn the_example_file_shows_every_setting() {
    let example = include_str!("../../../../examples/sluicegate.yaml");
    let known = settings();
    let shown = shown_paths(&uncomment_settings(example));
    let missing: Vec<&String> = known
        .iter()
        .filter(|k| !shown.contains(&format!("kafka.{k}")))
        .collect();
    assert!(
        missing.is_empty(),
        "examples/sluicegate.yaml lacks {missing:?}"
    );
    assert!(known.len() > 30, "{known:?}");
}

/// The dotted path of every `key:` line of `yaml`, by indentation (a setting may be shown in
/// several commented-out variants, which a YAML parser would refuse as duplicate keys).
fn shown_paths(yaml: &str) -> Vec<String> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    let mut out = Vec::new();
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some((key, _)) = line.trim_start().split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        out.push(stack.iter().map(|(_, k)| *k).collect::<Vec<_>>().join("."));
    }
    out
}

/// Turns `  #   key: value` into `    key: value`: a commented-out setting, kept at its depth.
fn uncomment_settings(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            match rest.strip_prefix("# ") {
                Some(setting)
                    if indent > 0
                        && setting.trim_start().split_once(':').is_some_and(|(k, _)| {
                            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    format!("{}{setting}", " ".repeat(indent))
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn overrides_win_over_the_environment_and_the_file() {
    let yaml = format!(
        "{BASE}  security: {{ protocol: sasl_plaintext, sasl_username: file, sasl_password: pw }}\n"
    );
    let env = [
        ("KAFKA_SASL_USERNAME", "env"),
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
    ];
    let overrides = set(&[
        ("security.sasl_username", "first"),
        ("kafka.security.sasl_username", "set"),
        ("session_timeout", "30s"),
        ("commit_interval", "2500"),
        ("bootstrap_servers", "a:1,b:2"),
    ]);
    let loaded =
        ConsumerConfig::resolve_for(Purpose::Consumer, Some(&yaml), env, &overrides).unwrap();
    let c = &loaded.config;
    assert_eq!(c.security.sasl_username.as_deref(), Some("set"));
    assert_eq!(c.security.sasl_mechanism, Some(SaslMechanism::Plain));
    assert_eq!(c.session_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.commit_interval, Duration::from_millis(2500));
    assert_eq!(c.bootstrap_servers, "a:1,b:2");
    assert_eq!(
        loaded.sources.of("kafka.security.sasl_username"),
        Source::Override("kafka.security.sasl_username".into())
    );
    assert_eq!(
        loaded.sources.of("kafka.security.sasl_mechanism"),
        Source::Env("KAFKA_SASL_MECHANISM".into())
    );
    assert!(matches!(
        loaded.sources.of("kafka.security.protocol"),
        Source::File { .. }
    ));
}

#[test]
fn bad_overrides_are_errors_naming_the_key_and_value() {
    let overrides = set(&[
        ("security.sasl_usernme", "x"),
        ("max_in_flight", "many"),
        ("session_timeout", "soon"),
    ]);
    let errors = ConsumerConfig::resolve_for(Purpose::Consumer, Some(BASE), no_env(), &overrides)
        .unwrap_err();
    assert_error(
        &errors,
        "kafka.security.sasl_usernme",
        "",
        &["cannot be overridden", "security.sasl_username", "-X"],
    );
    assert_error(&errors, "kafka.max_in_flight", "many", &["whole number"]);
    assert_error(
        &errors,
        "kafka.session_timeout",
        "soon",
        &["not a duration"],
    );
    assert_eq!(
        errors.at("kafka.max_in_flight").next().unwrap().source,
        Some(Source::Override("max_in_flight".into()))
    );
    assert_eq!(errors.0.len(), 3, "{errors}");
}

#[test]
fn clients_need_only_the_bootstrap_servers() {
    let yaml = "kafka:\n  bootstrap_servers: kafka:9092\n";
    let loaded = ConsumerConfig::resolve_for(Purpose::Clients, Some(yaml), no_env(), &[]);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
    let errors = ConsumerConfig::resolve_for(Purpose::Clients, None, no_env(), &[]).unwrap_err();
    assert_error(&errors, "kafka.bootstrap_servers", "", &["required"]);
    assert_eq!(errors.0.len(), 1, "{errors}");
    let errors =
        ConsumerConfig::resolve_for(Purpose::Consumer, Some(yaml), no_env(), &[]).unwrap_err();
    assert_error(&errors, "kafka.group_id", "", &["required"]);
    assert_error(&errors, "kafka.topics", "", &["required"]);
}

#[test]
fn oidc_settings_are_checked_together() {
    let oauth = "  security:\n    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n    \
                 oauthbearer:\n";
    // An endpoint without client id and secret.
    let e = errors_of(
        &format!("{BASE}{oauth}      token_endpoint: https://idp/token\n"),
        &[],
    );
    assert_error(
        &e,
        "kafka.security.oauthbearer.client_id",
        "",
        &[
            "required with kafka.security.oauthbearer.token_endpoint",
            "KAFKA_OAUTHBEARER_CLIENT_ID",
        ],
    );
    assert_error(
        &e,
        "kafka.security.oauthbearer.client_secret",
        "",
        &["required", "KAFKA_OAUTHBEARER_CLIENT_SECRET"],
    );
    // A client id without an endpoint.
    let e = errors_of(&format!("{BASE}{oauth}      client_id: billing\n"), &[]);
    assert_error(
        &e,
        "kafka.security.oauthbearer.token_endpoint",
        "",
        &["required", "https://"],
    );
    // Not a URL.
    let e = errors_of(
        &format!("{BASE}{oauth}      token_endpoint: idp.example.com/token\n      client_id: a\n      client_secret: b\n"),
        &[("KAFKA_OAUTHBEARER_CLIENT_SECRET", "x")],
    );
    assert_error(
        &e,
        "kafka.security.oauthbearer.token_endpoint",
        "idp.example.com/token",
        &["not an https:// URL"],
    );
    // The wrong mechanism.
    let e = errors_of(
        &format!(
            "{BASE}  security:\n    protocol: sasl_ssl\n    sasl_mechanism: PLAIN\n    \
             sasl_username: u\n    sasl_password: p\n    oauthbearer:\n      \
             token_endpoint: https://idp/token\n      client_id: a\n      client_secret: b\n"
        ),
        &[],
    );
    assert_error(
        &e,
        "kafka.security.oauthbearer.token_endpoint",
        "https://idp/token",
        &["set kafka.security.sasl_mechanism to OAUTHBEARER (it is PLAIN)"],
    );
    // A placeholder secret, and its value never shown from the environment.
    let e = errors_of(
        &format!("{BASE}{OIDC}"),
        &[("KAFKA_OAUTHBEARER_CLIENT_SECRET", REDACTED)],
    );
    assert_error(
        &e,
        "kafka.security.oauthbearer.client_secret",
        REDACTED,
        &["placeholder"],
    );
    // http:// to another machine is a warning; to this one, nothing.
    let c = ConsumerConfig::load_str(
        &format!("{BASE}{OIDC}"),
        [(
            "KAFKA_OAUTHBEARER_TOKEN_ENDPOINT",
            "http://idp.internal/token",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = c.warnings();
    assert!(
        w.iter()
            .any(|w| w.path == "kafka.security.oauthbearer.token_endpoint"
                && w.reason.contains("unencrypted")),
        "{w:?}"
    );
    let c = ConsumerConfig::load_str(
        &format!("{BASE}{OIDC}"),
        [(
            "KAFKA_OAUTHBEARER_TOKEN_ENDPOINT",
            "http://127.0.0.1:8080/token",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn oauthbearer_without_a_configured_provider_warns_that_code_must_set_one() {
    let c = ConsumerConfig::load_str(
        &format!("{BASE}  security:\n    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n"),
        no_env(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = c.warnings();
    assert!(
        w.iter().any(|w| w.path == "kafka.security.sasl_mechanism"
            && w.reason.contains("oauth_token_provider")),
        "{w:?}"
    );
}

#[test]
fn msk_iam_settings_are_checked() {
    let sasl = "  security:\n    protocol: sasl_ssl\n    sasl_mechanism: OAUTHBEARER\n";
    let e = errors_of(
        &format!("{BASE}{sasl}    msk_iam:\n      profile: p\n"),
        &[],
    );
    assert_error(
        &e,
        "kafka.security.msk_iam.region",
        "",
        &["required", "KAFKA_MSK_IAM_REGION"],
    );
    let e = errors_of(
        &format!("{BASE}{sasl}    msk_iam:\n      region: Europe West\n"),
        &[],
    );
    assert_error(
        &e,
        "kafka.security.msk_iam.region",
        "Europe West",
        &["not an AWS region name"],
    );
    // With the OIDC settings too.
    let e = errors_of(
        &format!("{BASE}{OIDC}"),
        &[("KAFKA_MSK_IAM_REGION", "eu-west-1")],
    );
    assert_error(&e, "kafka.security.msk_iam", "", &["one or the other"]);
    // Without OAUTHBEARER.
    let e = errors_of(
        &format!("{BASE}  security:\n    protocol: ssl\n    msk_iam:\n      region: eu-west-1\n"),
        &[],
    );
    assert_error(
        &e,
        "kafka.security.msk_iam.region",
        "eu-west-1",
        &["OAUTHBEARER (it is not set)"],
    );
}
