//! The README's "Defaults" table states the code's defaults: each row is compared with
//! the value the code uses (in `defaults.rs`, the builder, the configuration and the policies),
//! and every default the code has must have its row. Test-only, above every module it reads.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ConsumerConfig;
use crate::dead_letter::DeadLetter;
use crate::policy::{Backoff, CircuitBreaker, Reconnect};
use crate::settings::defaults::*;
use crate::{BatchLimits, BufferLimits, ConsumerBuilder};

const README: &str = include_str!("../../../README.md");

fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

fn bytes(n: usize) -> String {
    assert_eq!(n % (1 << 20), 0, "{n} bytes is not a whole number of MiB");
    format!("{} MiB", n >> 20)
}

fn backoff(b: &Backoff) -> String {
    format!(
        "{} doubling to {}, jitter {}",
        duration(b.initial),
        duration(b.max),
        b.jitter
    )
}

/// What the code says, keyed as the table's first column.
fn expected() -> BTreeMap<String, String> {
    let config = ConsumerConfig::default();
    let buffer = BufferLimits::default();
    let batch = BatchLimits::default();
    let retry = Backoff::default();
    let breaker = CircuitBreaker::default();
    let reconnect = Reconnect::default();
    assert_eq!(retry.multiplier, 2.0, "the table says `doubling`");
    assert_eq!(
        reconnect.backoff.multiplier, 2.0,
        "the table says `doubling`"
    );
    let mut rows: BTreeMap<String, String> = [
        ("ordering", config.ordering.to_string()),
        ("max_in_flight", count(config.max_in_flight)),
        (
            "max_in_flight_per_partition",
            format!(
                "partition order: 1; key and unordered: {}",
                count(MAX_IN_FLIGHT_PER_PARTITION)
            ),
        ),
        ("max_batches_in_flight", count(config.max_batches_in_flight)),
        (
            "buffer.partition_messages",
            count(buffer.partition_messages),
        ),
        ("buffer.partition_bytes", bytes(buffer.partition_bytes)),
        ("buffer.total_messages", count(buffer.total_messages)),
        ("buffer.total_bytes", bytes(buffer.total_bytes)),
        ("batch.max_messages", count(batch.max_messages)),
        ("batch.max_wait", duration(batch.max_wait)),
        ("batch.max_bytes", bytes(batch.max_bytes)),
        ("retry.max_attempts", "none: no limit".into()),
        ("retry.max_elapsed", "none: no limit".into()),
        ("retry.initial_backoff", duration(retry.initial)),
        ("retry.max_backoff", duration(retry.max)),
        ("retry.multiplier", retry.multiplier.to_string()),
        ("retry.jitter", retry.jitter.to_string()),
        ("processing_timeout", "none".into()),
        (
            "dead_letter.enabled",
            "false: a record given up on stops its partition".into(),
        ),
        ("dead_letter.topic", "`<topic>.dlq`".into()),
        ("commit_interval", duration(COMMIT_INTERVAL)),
        ("drain_timeout", duration(DRAIN_TIMEOUT)),
        ("auto_offset_reset", config.auto_offset_reset.to_string()),
        ("group_protocol", config.group_protocol.to_string()),
        ("static_assignment", config.static_assignment.to_string()),
        (
            "read_from_beginning",
            config.read_from_beginning.to_string(),
        ),
        ("metrics_addr", "none: no endpoint".into()),
        (
            "CircuitBreaker",
            format!(
                "off; when set: opens after {} failures in a row, or a failure rate of {} \
                 over {} with at least {} calls; probes after {}",
                breaker.consecutive_failures,
                breaker.failure_rate,
                duration(breaker.window),
                breaker.min_calls,
                duration(breaker.cool_down)
            ),
        ),
        (
            "Reconnect",
            format!(
                "on a fatal error: {} (a member fenced {} times in a row stops); no broker \
                 reachable for {}; new clients backing off {}",
                if reconnect.on_fatal { "yes" } else { "no" },
                reconnect.max_fenced,
                duration(reconnect.unreachable_after.expect("a default")),
                backoff(&reconnect.backoff)
            ),
        ),
        (
            "DeadLetter",
            format!(
                "`<topic>.dlq`, created when missing; failed writes retried {}",
                backoff(&DeadLetter::default().backoff)
            ),
        ),
        (
            "liveness",
            format!(
                "the poll loop turned within {}",
                duration(crate::health::LIVENESS_STALL)
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (key, value) in CLIENT_PROPERTIES {
        rows.insert((*key).to_string(), (*value).to_string());
    }
    rows.insert(
        "group_instance_id".into(),
        "none: dynamic membership".into(),
    );
    rows
}

/// Settings of the file that need no row: required ones, and those that are librdkafka
/// properties left at librdkafka's (or the broker's) default unless set.
const NO_ROW: &[&str] = &[
    "bootstrap_servers",
    "group_id",
    "topics",
    "session_timeout",
    "heartbeat_interval",
    "max_poll_interval",
    "fetch.",
    "security.",
    "librdkafka",
];

#[test]
fn every_setting_of_the_file_has_its_default_stated() {
    let expected = expected();
    let missing: Vec<String> = crate::config::testing::settings()
        .into_iter()
        .filter(|k| {
            !NO_ROW
                .iter()
                .any(|n| k == n || (n.ends_with('.') && k.starts_with(n)))
        })
        .filter(|k| !expected.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "settings without a row in the README's Defaults table (add them to `expected`): \
         {missing:?}"
    );
}

/// The table's rows: the first back-quoted name of the first cell, and the second cell.
fn stated() -> BTreeMap<String, String> {
    let section = README
        .split("\n### Defaults\n")
        .nth(1)
        .expect("README has a `### Defaults` section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let key = cells[0].split('`').nth(1).expect("a back-quoted name");
            let value = cells
                .get(1)
                .expect("a default")
                .trim()
                .trim_end_matches('|');
            (key.to_string(), value.trim().to_string())
        })
        .collect()
}

#[test]
fn readme_states_the_codes_defaults() {
    let (expected, stated) = (expected(), stated());
    let mut wrong = Vec::new();
    for (key, value) in &expected {
        match stated.get(key) {
            Some(s) if s == value => {}
            Some(s) => wrong.push(format!("`{key}`: README says `{s}`, code: `{value}`")),
            None => wrong.push(format!("`{key}`: no row (code: `{value}`)")),
        }
    }
    for key in stated.keys().filter(|k| !expected.contains_key(*k)) {
        wrong.push(format!("`{key}`: a row the code has no default for"));
    }
    assert!(
        wrong.is_empty(),
        "README ### Defaults:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_builder_and_the_file_share_their_defaults() {
    let built = ConsumerBuilder::default();
    let mut configured = ConsumerBuilder::default().config(&ConsumerConfig::default());
    // The file states its defaults as librdkafka properties; they are the client's own.
    for (key, value) in &configured.settings.client.0 {
        let client_default = CLIENT_PROPERTIES.contains(&(key.as_str(), value.as_str()))
            || (key == "group.protocol" && value == "classic");
        assert!(client_default, "the file's default sets {key}={value}");
    }
    configured.settings.client = built.settings.client.clone();
    assert_eq!(format!("{built:?}"), format!("{configured:?}"));
}

#[test]
fn counts_and_durations_render_as_the_readme_writes_them() {
    assert_eq!(count(1_024), "1,024");
    assert_eq!(count(200), "200");
    assert_eq!(count(1_000_000), "1,000,000");
    assert_eq!(duration(Duration::from_millis(100)), "100 ms");
    assert_eq!(duration(Duration::from_secs(30)), "30 s");
}
