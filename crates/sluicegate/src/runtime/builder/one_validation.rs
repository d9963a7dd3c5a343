//! One validation (`Settings::problems`): each value the builder used to clamp silently is
//! refused the same way from code (at `build`, naming the builder method), from a file (naming
//! the path and line) and from the environment (naming the variable).

use std::time::Duration;

use crate::config::testing::{errors_of, BASE};
use crate::config::{ConsumerConfig, Source};
use crate::policy::{Backoff, CircuitBreaker, Reconnect, RetryPolicy};
use crate::{handler_fn, BatchLimits, ConsumerBuilder, Error, Message};

fn builder() -> ConsumerBuilder {
    ConsumerBuilder::default()
        .bootstrap_servers("localhost:9092")
        .group_id("billing")
        .topic("orders")
}

/// The error `build` gives for `b`, which must be a refused setting.
fn refused(b: ConsumerBuilder) -> (String, String, String) {
    match b.build(handler_fn(|_: Message| async { Ok(()) })) {
        Err(Error::Config { key, value, reason }) => (key, value, reason),
        Err(other) => panic!("expected a refused setting, got {other}"),
        Ok(_) => panic!("the setting was accepted"),
    }
}

fn assert_refused_in_code(b: ConsumerBuilder, setting: &str, value: &str, words: &[&str]) {
    let (key, v, reason) = refused(b);
    assert_eq!((key.as_str(), v.as_str()), (setting, value), "{reason}");
    for w in words {
        assert!(reason.contains(w), "`{w}` missing from: {reason}");
    }
}

fn backoff(multiplier: f64, jitter: f64) -> RetryPolicy {
    RetryPolicy::default().with_backoff(Backoff {
        multiplier,
        jitter,
        ..Backoff::default()
    })
}

#[test]
fn values_once_clamped_are_refused_at_build_naming_the_builder_method() {
    let by_retry = "given to ConsumerBuilder::retry_policy";
    assert_refused_in_code(
        builder().retry_policy(RetryPolicy::default().with_max_attempts(0)),
        "retry.max_attempts",
        "0",
        &["must be at least 1", by_retry],
    );
    assert_refused_in_code(
        builder().retry_policy(backoff(0.5, 0.2)),
        "retry.multiplier",
        "0.5",
        &["at least 1", by_retry],
    );
    for jitter in [-0.1, 1.5] {
        assert_refused_in_code(
            builder().retry_policy(backoff(2.0, jitter)),
            "retry.jitter",
            &jitter.to_string(),
            &["from 0 to 1", by_retry],
        );
    }
    assert_refused_in_code(
        builder().commit_interval(Duration::ZERO),
        "commit_interval",
        "0s",
        &["above zero", "given to ConsumerBuilder::commit_interval"],
    );
    assert_refused_in_code(
        builder().handler_timeout(Duration::ZERO),
        "processing_timeout",
        "0s",
        &["above zero", "given to ConsumerBuilder::handler_timeout"],
    );
    assert_refused_in_code(
        builder().batch_limits(BatchLimits::default().max_wait(Duration::ZERO)),
        "batch.max_wait",
        "0s",
        &["above zero", "given to ConsumerBuilder::batch_limits"],
    );
    assert_refused_in_code(
        builder().max_batches_in_flight(0),
        "max_batches_in_flight",
        "0",
        &[
            "at least 1",
            "given to ConsumerBuilder::max_batches_in_flight",
        ],
    );
    assert_refused_in_code(
        builder().circuit_breaker(CircuitBreaker::default().with_consecutive_failures(0)),
        "circuit_breaker.consecutive_failures",
        "0",
        &["at least 1", "given to ConsumerBuilder::circuit_breaker"],
    );
    assert_refused_in_code(
        builder().circuit_breaker(CircuitBreaker::default().with_failure_rate(
            1.5,
            Duration::from_secs(10),
            10,
        )),
        "circuit_breaker.failure_rate",
        "1.5",
        &["from 0 to 1", "given to ConsumerBuilder::circuit_breaker"],
    );
    assert_refused_in_code(
        builder().reconnect(Reconnect::default().with_max_fenced(0)),
        "reconnect.max_fenced",
        "0",
        &["at least 1", "given to ConsumerBuilder::reconnect"],
    );
    assert_refused_in_code(
        builder().dead_letter(crate::dead_letter::DeadLetter::to_topic("orders")),
        "dead_letter.topic",
        "orders",
        &["is one of topics", "given to ConsumerBuilder::dead_letter"],
    );
    // The policy itself keeps the value it was given: the one check is at build.
    assert_eq!(
        RetryPolicy::default().with_max_attempts(0).max_attempts,
        Some(0)
    );
}

#[test]
fn a_later_call_in_code_is_named_over_the_configuration_it_replaces() {
    let mut c = ConsumerConfig {
        bootstrap_servers: "localhost:9092".into(),
        group_id: "billing".into(),
        topics: vec!["orders".into()],
        ..ConsumerConfig::default()
    };
    // A configuration changed in code after loading is checked at build, and named.
    c.retry.max_attempts = Some(0);
    let (key, value, reason) = refused(ConsumerBuilder::from_config(&c));
    assert_eq!((key.as_str(), value.as_str()), ("retry.max_attempts", "0"));
    assert!(
        reason.contains("from the configuration's kafka.retry.max_attempts"),
        "{reason}"
    );
    let (_, _, reason) = refused(
        ConsumerBuilder::from_config(&c).retry_policy(RetryPolicy::default().with_max_attempts(0)),
    );
    assert!(
        reason.contains("given to ConsumerBuilder::retry_policy"),
        "{reason}"
    );
    // And a valid call in code wins over the bad configured value.
    c.commit_interval = Duration::ZERO;
    c.retry.max_attempts = None;
    ConsumerBuilder::from_config(&c)
        .commit_interval(Duration::from_millis(100))
        .build(handler_fn(|_: Message| async { Ok(()) }))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Each refused value in a file: (the YAML under `kafka:`, its path, the value shown).
const FILE_CASES: &[(&str, &str, &str)] = &[
    (
        "  retry:\n    max_attempts: 0\n",
        "kafka.retry.max_attempts",
        "0",
    ),
    (
        "  retry:\n    multiplier: 0.5\n",
        "kafka.retry.multiplier",
        "0.5",
    ),
    ("  retry:\n    jitter: 1.5\n", "kafka.retry.jitter", "1.5"),
    ("  retry:\n    jitter: -0.1\n", "kafka.retry.jitter", "-0.1"),
    ("  commit_interval: 0s\n", "kafka.commit_interval", "0s"),
    (
        "  max_batches_in_flight: 0\n",
        "kafka.max_batches_in_flight",
        "0",
    ),
];

#[test]
fn the_same_values_are_refused_from_a_file_naming_its_path_and_line() {
    for (yaml, path, value) in FILE_CASES {
        let errors = errors_of(&format!("{BASE}{yaml}"), &[]);
        let e = errors
            .at(path)
            .next()
            .unwrap_or_else(|| panic!("no error at {path}: {errors}"));
        assert_eq!(e.value, *value, "{e}");
        assert!(
            matches!(e.source, Some(Source::File { line, .. }) if line >= 5),
            "{e}"
        );
        assert!(e.to_string().contains(", column "), "{e}");
    }
}

#[test]
fn the_same_values_are_refused_from_the_environment_naming_the_variable() {
    for (var, value, path) in [
        ("KAFKA_RETRY_MAX_ATTEMPTS", "0", "kafka.retry.max_attempts"),
        ("KAFKA_RETRY_MULTIPLIER", "0.5", "kafka.retry.multiplier"),
        ("KAFKA_RETRY_JITTER", "1.5", "kafka.retry.jitter"),
        ("KAFKA_RETRY_JITTER", "-0.1", "kafka.retry.jitter"),
        ("KAFKA_COMMIT_INTERVAL_MS", "0", "kafka.commit_interval"),
        (
            "KAFKA_MAX_BATCHES_IN_FLIGHT",
            "0",
            "kafka.max_batches_in_flight",
        ),
    ] {
        let errors = errors_of(BASE, &[(var, value)]);
        let e = errors
            .at(path)
            .next()
            .unwrap_or_else(|| panic!("{var}={value}: no error at {path}: {errors}"));
        assert_eq!(e.source, Some(Source::Env(var.into())), "{e}");
        assert!(e.to_string().contains(&format!("(from {var})")), "{e}");
    }
}

#[test]
fn code_file_and_environment_give_the_same_reason() {
    let (_, _, in_code) = refused(builder().retry_policy(backoff(0.5, 0.2)));
    let errors = errors_of(&format!("{BASE}  retry:\n    multiplier: 0.5\n"), &[]);
    let in_file = errors.at("kafka.retry.multiplier").next().expect("refused");
    assert!(
        in_code.starts_with(&in_file.reason),
        "{in_code} / {in_file}"
    );
    let errors = errors_of(BASE, &[("KAFKA_RETRY_MULTIPLIER", "0.5")]);
    let in_env = errors.at("kafka.retry.multiplier").next().expect("refused");
    assert_eq!(in_env.reason, in_file.reason);
}

#[test]
fn max_in_flight_has_one_job_and_the_others_have_their_own_defaults() {
    use crate::Ordering;
    let s = ConsumerBuilder::default().max_in_flight(10);
    assert_eq!(s.settings().max_in_flight(), 10);
    assert_eq!(
        s.settings().max_in_flight_per_partition(),
        1,
        "partition order"
    );
    assert_eq!(s.settings().max_batches_in_flight(), 5);
    let s = s.ordering(Ordering::Key);
    assert_eq!(s.settings().max_in_flight_per_partition(), 1_024);
    // No more lanes than the global limit lets run.
    assert_eq!(s.settings().lanes_per_partition(), 10);
    let s = s.max_in_flight_per_partition(4).max_batches_in_flight(2);
    assert_eq!(s.settings().max_in_flight_per_partition(), 4);
    assert_eq!(s.settings().lanes_per_partition(), 4);
    assert_eq!(s.settings().max_batches_in_flight(), 2);
    // The file's defaults are the builder's.
    let c = ConsumerConfig::default();
    let d = ConsumerBuilder::default();
    assert_eq!(c.max_in_flight, d.settings().max_in_flight());
    assert_eq!(
        c.max_batches_in_flight,
        d.settings().max_batches_in_flight()
    );
    assert_eq!(c.commit_interval, d.settings().commit_interval());
}
