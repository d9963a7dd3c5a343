//! `sluicegate dlq replay`: read a dead-letter topic back (written by Sluicegate or by Spring
//! Kafka), pick records by error kind or exception class, failure time and original topic,
//! partition and offset, and re-publish their original key, value and headers to the topic
//! they came from (or another), acknowledged by the broker.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _};
use serde::Serialize;
use sluicegate::config::ClientKind;
use sluicegate::dead_letter::AnyDeadLetter;
use sluicegate::ErrorKind;

use super::on_blocking_thread;
use crate::cluster;
use crate::produce::{send_waiting, DeliveryLog, Subject};
use crate::read_back::{headers_of, read_to_end};
use crate::report::{print_summary, thousands};
use crate::settings::Connection;
use crate::DlqReplayArgs;

/// How long the final flush may wait for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long librdkafka keeps trying to deliver one record (unless `-X` says otherwise).
const MESSAGE_TIMEOUT_MS: &str = "30000";

/// Parses a time given on the command line: RFC 3339 (`2024-05-01T12:00:00Z`,
/// `2024-05-01T14:00:00+02:00`) or milliseconds since the Unix epoch. Returns milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!(
                "`{s}` is neither an RFC 3339 time (like 2024-05-01T12:00:00Z) nor milliseconds \
                 since the epoch ({e})"
            )
        })
}

/// Parses `--exception-class`: a Java class name, full or simple.
pub fn parse_class(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(char::is_whitespace) || s.starts_with('.') || s.ends_with('.') {
        return Err(format!(
            "`{s}` is not a Java class name: give it in full (java.lang.IllegalStateException) \
             or by its simple name (IllegalStateException)"
        ));
    }
    Ok(s.to_string())
}

/// Parses `--original-topic`: a non-empty topic name.
pub fn parse_topic(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("a topic name cannot be empty".into());
    }
    Ok(s.to_string())
}

/// Which dead-lettered records to replay. Every bound is optional; all given must hold. A
/// record that does not carry what a bound is about (a Spring Kafka record and an error kind,
/// a Sluicegate record and an exception class, a partition or offset Spring was told not to
/// write) does not match it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// The error kinds to take (any, when empty).
    pub kinds: Vec<ErrorKind>,
    /// The exception classes to take, full or simple names (any, when empty).
    pub exception_classes: Vec<String>,
    /// The original topics to take (any, when empty).
    pub original_topics: Vec<String>,
    /// The original partitions to take (any, when empty).
    pub original_partitions: Vec<i32>,
    /// The last failure at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// The last failure at or before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// The original offset at least this.
    pub from_offset: Option<i64>,
    /// The original offset at most this.
    pub to_offset: Option<i64>,
}

impl Filter {
    /// The filter of `args`; fails on an empty time or offset range, and on error kinds given
    /// with exception classes (no record has both).
    pub fn of(args: &DlqReplayArgs) -> Result<Self> {
        let filter = Filter {
            kinds: args.error_kinds.clone(),
            exception_classes: args.exception_classes.clone(),
            original_topics: args.original_topics.clone(),
            original_partitions: args.original_partitions.clone(),
            since_ms: args.since,
            until_ms: args.until,
            from_offset: args.from_offset,
            to_offset: args.to_offset,
        };
        if let (Some(since), Some(until)) = (filter.since_ms, filter.until_ms) {
            if since > until {
                bail!("--since ({since} ms) is after --until ({until} ms): nothing could match");
            }
        }
        if let (Some(from), Some(to)) = (filter.from_offset, filter.to_offset) {
            if from > to {
                bail!("--from-offset {from} is above --to-offset {to}: nothing could match");
            }
        }
        if !filter.kinds.is_empty() && !filter.exception_classes.is_empty() {
            bail!(
                "--error-kind and --exception-class together match nothing: error kinds are \
                 Sluicegate's, exception classes Spring Kafka's; replay each in a run of its own"
            );
        }
        Ok(filter)
    }

    /// Whether `record` is to be replayed; `written_at` is the dead-letter record's own
    /// timestamp, the failure time of records that do not carry one (Spring Kafka's).
    pub fn matches(&self, record: &AnyDeadLetter, written_at: Option<i64>) -> bool {
        let failed_at = record.last_failure().or(written_at);
        let offset = record.original_offset();
        let within = |bound: Option<i64>, value: Option<i64>, holds: fn(i64, i64) -> bool| {
            bound.is_none_or(|b| value.is_some_and(|v| holds(v, b)))
        };
        (self.kinds.is_empty() || record.error_kind().is_some_and(|k| self.kinds.contains(&k)))
            && (self.exception_classes.is_empty()
                || match record {
                    AnyDeadLetter::Spring(r) => {
                        self.exception_classes.iter().any(|c| r.failed_with(c))
                    }
                    AnyDeadLetter::Sluicegate(_) => false,
                })
            && (self.original_topics.is_empty()
                || self
                    .original_topics
                    .iter()
                    .any(|t| t == record.original_topic()))
            && (self.original_partitions.is_empty()
                || record
                    .original_partition()
                    .is_some_and(|p| self.original_partitions.contains(&p)))
            && within(self.since_ms, failed_at, |v, b| v >= b)
            && within(self.until_ms, failed_at, |v, b| v <= b)
            && within(self.from_offset, offset, |v, b| v >= b)
            && within(self.to_offset, offset, |v, b| v <= b)
    }
}

/// One record picked for replay, as listed by `--dry-run`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Listed {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub target: String,
    /// Who wrote the dead letter: `sluicegate` or `spring-kafka`.
    pub writer: &'static str,
    pub original_topic: String,
    /// Absent when Spring Kafka was told not to write it.
    pub original_partition: Option<i32>,
    /// Absent when Spring Kafka was told not to write it.
    pub original_offset: Option<i64>,
    /// Sluicegate's records only.
    pub error_kind: Option<&'static str>,
    /// Spring Kafka's records only.
    pub exception_class: Option<String>,
    /// Spring Kafka's records only, when the exception had a cause.
    pub exception_cause_class: Option<String>,
    pub error_message: String,
}

impl Listed {
    /// What `record`, read at `dlq_partition`/`dlq_offset`, would be sent to `target` as.
    pub fn of(record: &AnyDeadLetter, dlq_partition: i32, dlq_offset: i64, target: &str) -> Self {
        let (exception_class, exception_cause_class) = match record {
            AnyDeadLetter::Spring(r) => {
                (r.exception_class.clone(), r.exception_cause_class.clone())
            }
            AnyDeadLetter::Sluicegate(_) => (None, None),
        };
        Listed {
            dlq_partition,
            dlq_offset,
            target: target.to_string(),
            writer: record.writer(),
            original_topic: record.original_topic().to_string(),
            original_partition: record.original_partition(),
            original_offset: record.original_offset(),
            error_kind: record.error_kind().map(ErrorKind::as_str),
            exception_class,
            exception_cause_class,
            error_message: record.error_message().to_string(),
        }
    }

    /// The record as one line: where it is, where it would go, where it came from and why
    /// (`?` for what the dead letter does not say).
    pub fn line(&self) -> String {
        let known = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        let why = match (&self.error_kind, &self.exception_class) {
            (Some(kind), _) => kind.to_string(),
            (None, class) => {
                let mut why = known(class.clone());
                if let Some(cause) = &self.exception_cause_class {
                    why += &format!(" (cause {cause})");
                }
                why
            }
        };
        format!(
            "dlq {}/{} -> {}   original {}/{}/{}   {why}: {}",
            self.dlq_partition,
            self.dlq_offset,
            self.target,
            self.original_topic,
            known(self.original_partition.map(|p| p.to_string())),
            known(self.original_offset.map(|o| o.to_string())),
            self.error_message.escape_debug()
        )
    }
}

/// A record of the dead-letter topic without valid diagnostic headers: reported, never sent.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Unparseable {
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub reason: String,
}

/// What a replay did, as printed with `--json`.
#[derive(Serialize, Debug, Default)]
pub struct ReplaySummary {
    pub ok: bool,
    pub dry_run: bool,
    pub dlq_topic: String,
    /// The `--to` topic, when given (otherwise each record goes back to its original topic).
    pub to: Option<String>,
    /// Records read from the dead-letter topic.
    pub read: u64,
    /// Records that passed the filters.
    pub matched: u64,
    /// Records the broker acknowledged.
    pub sent: u64,
    /// Records whose delivery failed or was not confirmed.
    pub failed: u64,
    pub skipped_unparseable: u64,
    pub unparseable: Vec<Unparseable>,
    /// The first delivery failures (at most [`MAX_KEPT_FAILURES`](crate::produce::MAX_KEPT_FAILURES)).
    pub failures: Vec<String>,
    /// With `--dry-run`: what would be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<Listed>>,
}

impl ReplaySummary {
    /// The summary for people.
    pub fn render(&self) -> String {
        let target = self
            .to
            .as_deref()
            .map_or_else(|| "their original topics".to_string(), |t| format!("`{t}`"));
        let mut out = format!(
            "dlq replay of `{}`: read {}, matched {}, {} {}, skipped unparseable {}\n",
            self.dlq_topic,
            thousands(self.read),
            thousands(self.matched),
            if self.dry_run { "would send" } else { "sent" },
            thousands(if self.dry_run {
                self.matched
            } else {
                self.sent
            }),
            thousands(self.skipped_unparseable),
        );
        if self.dry_run {
            out += &format!("dry run: nothing was sent (target: {target})\n");
        } else if self.failed > 0 {
            out += &format!(
                "FAILED: {} of {} deliveries failed or were not confirmed\n",
                thousands(self.failed),
                thousands(self.matched)
            );
            for f in &self.failures {
                out += &format!("  {f}\n");
            }
        } else {
            out +=
                &format!("OK: every matched record was acknowledged by the broker (to {target})\n");
        }
        out
    }
}

/// Which dead-letter record a delivery report is about.
struct Source {
    dlq_partition: i32,
    dlq_offset: i64,
    target: String,
}

impl Subject for Box<Source> {
    fn describe(&self, error: &KafkaError) -> String {
        format!(
            "dlq {}/{} -> {}: {error}",
            self.dlq_partition, self.dlq_offset, self.target
        )
    }
}

type ReplayLog = DeliveryLog<Box<Source>>;

/// The producer of replayed records, connected as `connection` says: idempotent, `acks=all`.
fn producer(connection: &Connection) -> Result<(BaseProducer<ReplayLog>, ReplayLog)> {
    let mut config = ClientConfig::new();
    config
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        .set("linger.ms", "5");
    let connected = connection.client_config(ClientKind::Producer);
    // `config_map` shows secrets as a placeholder: copy each value through `get`.
    for key in connected.config_map().keys() {
        if let Some(value) = connected.get(key) {
            config.set(*key, value);
        }
    }
    // Set last: a replay must not duplicate on retries nor count unreplicated writes as sent.
    config.set("enable.idempotence", "true").set("acks", "all");
    let log = ReplayLog::new(connection.security(&config));
    let producer = config
        .create_with_context(log.clone())
        .context("cannot create the producer")?;
    Ok((producer, log))
}

/// Sends `message`'s key and value with `headers` to `target`, waiting for room in the local
/// queue when it is full.
fn send(
    producer: &BaseProducer<ReplayLog>,
    message: &BorrowedMessage<'_>,
    headers: &[sluicegate::Header],
    target: &str,
) -> Result<()> {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for h in headers {
        owned = owned.insert(KafkaHeader {
            key: &h.key,
            value: h.value.as_deref(),
        });
    }
    let source = Box::new(Source {
        dlq_partition: message.partition(),
        dlq_offset: message.offset(),
        target: target.to_string(),
    });
    let mut record =
        BaseRecord::<[u8], [u8], Box<Source>>::with_opaque_to(target, source).headers(owned);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    send_waiting(producer, record).with_context(|| {
        format!(
            "cannot send dlq record {}/{} to `{target}`",
            message.partition(),
            message.offset()
        )
    })
}

/// Reads, filters and (unless a dry run) re-publishes. Blocking.
fn replay_blocking(args: &DlqReplayArgs, filter: &Filter) -> Result<ReplaySummary> {
    let probe_timeout = Duration::from_secs(args.timeout_secs).min(cluster::LOOKUP_TIMEOUT);
    let connection = Connection::load(&args.connect, std::env::vars(), &args.properties)?;
    cluster::require_kafka(&connection, probe_timeout)?;
    let (producer, log) = if args.dry_run {
        (None, None)
    } else {
        let (producer, log) = producer(&connection)?;
        (Some(producer), Some(log))
    };
    let mut summary = ReplaySummary {
        dry_run: args.dry_run,
        dlq_topic: args.topic.clone(),
        to: args.to.clone(),
        records: args.dry_run.then(Vec::new),
        ..ReplaySummary::default()
    };
    let end = read_to_end(
        &connection,
        &args.topic,
        Duration::from_secs(args.timeout_secs),
        |message| {
            let headers = headers_of(message);
            let record = match AnyDeadLetter::from_headers(&headers) {
                Ok(r) => r,
                Err(reason) => {
                    eprintln!(
                        "skipped dlq {}/{}: not a dead letter: {reason}",
                        message.partition(),
                        message.offset()
                    );
                    summary.unparseable.push(Unparseable {
                        dlq_partition: message.partition(),
                        dlq_offset: message.offset(),
                        reason,
                    });
                    return Ok(());
                }
            };
            if !filter.matches(&record, message.timestamp().to_millis()) {
                return Ok(());
            }
            summary.matched += 1;
            let target = args.to.as_deref().unwrap_or(record.original_topic());
            match &producer {
                Some(producer) => {
                    send(producer, message, record.original_headers(), target)?;
                    producer.poll(Duration::ZERO);
                }
                None => {
                    let listed = Listed::of(&record, message.partition(), message.offset(), target);
                    if !args.json {
                        println!("{}", listed.line());
                    }
                    if let Some(records) = summary.records.as_mut() {
                        records.push(listed);
                    }
                }
            }
            Ok(())
        },
    );
    // Deliver what was handed over even if reading failed, then report the read error.
    let flushed = producer.as_ref().map(|p| p.flush(FLUSH_TIMEOUT));
    let delivered = log.as_ref().map_or(0, |l| l.0.delivered());
    let end = match end {
        Err(e) if delivered > 0 => {
            return Err(e.context(format!(
                "the replay stopped early; {delivered} records were acknowledged before it did \
                 (a new replay would send them again)"
            )))
        }
        other => other?,
    };
    summary.read = end.records;
    summary.skipped_unparseable = summary.unparseable.len() as u64;
    if let Some(log) = &log {
        let d = &log.0;
        summary.sent = d.delivered();
        // Failed, or not reported before the flush gave up.
        summary.failed = summary.matched - summary.sent;
        summary.failures = d.failures();
        if let Some(Err(e)) = flushed {
            summary.failures.push(format!(
                "{} deliveries not confirmed within {FLUSH_TIMEOUT:?}: {e}",
                summary.matched - summary.sent - d.failed()
            ));
        }
    }
    summary.ok = summary.failed == 0;
    Ok(summary)
}

/// Runs `sluicegate dlq replay`; `Ok(false)` when a delivery failed.
pub async fn replay(args: DlqReplayArgs) -> Result<bool> {
    let filter = Filter::of(&args)?;
    let (args, summary) = on_blocking_thread(args, move |a| replay_blocking(a, &filter)).await?;
    let summary = summary?;
    print_summary(
        args.json,
        &summary,
        &summary.failures,
        ReplaySummary::render,
    )?;
    Ok(summary.ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicegate::dead_letter::spring::SpringDeadLetter;
    use sluicegate::dead_letter::DeadLetterRecord;

    fn record(kind: ErrorKind, offset: i64, last_failure: i64) -> AnyDeadLetter {
        AnyDeadLetter::Sluicegate(DeadLetterRecord {
            original_topic: "orders".into(),
            original_partition: 0,
            original_offset: offset,
            original_timestamp: None,
            error_kind: kind,
            error_message: "boom".into(),
            attempts: 3,
            group: "g".into(),
            first_failure: last_failure - 10,
            last_failure,
            original_headers: Vec::new(),
        })
    }

    /// A Spring Kafka dead letter of `topic`/`partition`/`offset` that failed with `class`
    /// (wrapped in Spring's ListenerExecutionFailedException).
    fn spring(
        topic: &str,
        partition: Option<i32>,
        offset: Option<i64>,
        class: &str,
    ) -> AnyDeadLetter {
        AnyDeadLetter::Spring(SpringDeadLetter {
            original_topic: topic.into(),
            original_partition: partition,
            original_offset: offset,
            original_timestamp: None,
            group: None,
            exception_class: Some(
                "org.springframework.kafka.listener.ListenerExecutionFailedException".into(),
            ),
            exception_cause_class: Some(class.into()),
            exception_message: Some("boom".into()),
            original_headers: Vec::new(),
        })
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        let f = Filter::default();
        assert!(f.matches(&record(ErrorKind::Retryable, 0, 0), None));
        assert!(f.matches(&record(ErrorKind::Decode, i64::MAX, i64::MIN + 10), None));
    }

    #[test]
    fn error_kinds_are_alternatives() {
        let f = Filter {
            kinds: vec![ErrorKind::Timeout, ErrorKind::Panic],
            ..Filter::default()
        };
        assert!(f.matches(&record(ErrorKind::Timeout, 0, 0), None));
        assert!(f.matches(&record(ErrorKind::Panic, 0, 0), None));
        assert!(!f.matches(&record(ErrorKind::Retryable, 0, 0), None));
    }

    #[test]
    fn failure_time_bounds_are_inclusive_and_use_the_last_failure() {
        let f = Filter {
            since_ms: Some(1_000),
            until_ms: Some(2_000),
            ..Filter::default()
        };
        let kind = ErrorKind::Retryable;
        assert!(!f.matches(&record(kind, 0, 999), None));
        assert!(f.matches(&record(kind, 0, 1_000), None));
        assert!(f.matches(&record(kind, 0, 2_000), None));
        assert!(!f.matches(&record(kind, 0, 2_001), None));
        // First failure before --since, last failure inside: taken.
        let mut r = record(kind, 0, 1_005);
        if let AnyDeadLetter::Sluicegate(r) = &mut r {
            r.first_failure = 500;
        }
        assert!(f.matches(&r, None));
        // The dead letter's own timestamp is not the failure time of a Sluicegate record.
        assert!(!f.matches(&record(kind, 0, 999), Some(1_500)));
    }

    #[test]
    fn spring_records_are_timed_by_when_the_dead_letter_was_written() {
        let f = Filter {
            since_ms: Some(1_000),
            until_ms: Some(2_000),
            ..Filter::default()
        };
        let r = spring("orders", Some(0), Some(1), "x.Y");
        assert!(!f.matches(&r, Some(999)));
        assert!(f.matches(&r, Some(1_000)));
        assert!(f.matches(&r, Some(2_000)));
        assert!(!f.matches(&r, Some(2_001)));
        assert!(
            !f.matches(&r, None),
            "no time at all: outside any time bound"
        );
        assert!(Filter::default().matches(&r, None));
    }

    #[test]
    fn exception_classes_match_spring_records_by_exception_or_cause() {
        let f = Filter {
            exception_classes: vec!["IllegalStateException".into(), "com.acme.Declined".into()],
            ..Filter::default()
        };
        assert!(f.matches(
            &spring(
                "orders",
                Some(0),
                Some(1),
                "java.lang.IllegalStateException"
            ),
            None
        ));
        assert!(f.matches(
            &spring("orders", Some(0), Some(1), "com.acme.Declined"),
            None
        ));
        assert!(!f.matches(
            &spring("orders", Some(0), Some(1), "org.acme.Declined"),
            None
        ));
        let wrapper = Filter {
            exception_classes: vec!["ListenerExecutionFailedException".into()],
            ..Filter::default()
        };
        assert!(wrapper.matches(&spring("orders", Some(0), Some(1), "x.Y"), None));
        // Sluicegate's records have no class; Spring's have no kind.
        assert!(!f.matches(&record(ErrorKind::Retryable, 0, 0), None));
        let kinds = Filter {
            kinds: vec![ErrorKind::Retryable],
            ..Filter::default()
        };
        assert!(!kinds.matches(&spring("orders", Some(0), Some(1), "x.Y"), None));
    }

    #[test]
    fn original_topics_partitions_and_offsets_apply_to_both_writers() {
        let f = Filter {
            original_topics: vec!["orders".into(), "refunds".into()],
            original_partitions: vec![1],
            from_offset: Some(10),
            to_offset: Some(20),
            ..Filter::default()
        };
        assert!(f.matches(&spring("orders", Some(1), Some(10), "x.Y"), None));
        assert!(f.matches(&spring("refunds", Some(1), Some(20), "x.Y"), None));
        assert!(!f.matches(&spring("payments", Some(1), Some(10), "x.Y"), None));
        assert!(!f.matches(&spring("orders", Some(0), Some(10), "x.Y"), None));
        assert!(!f.matches(&spring("orders", Some(1), Some(21), "x.Y"), None));
        // Not written: outside the bounds on it.
        assert!(!f.matches(&spring("orders", None, Some(10), "x.Y"), None));
        assert!(!f.matches(&spring("orders", Some(1), None, "x.Y"), None));
        let mut r = record(ErrorKind::Retryable, 15, 0);
        assert!(!f.matches(&r, None), "partition 0");
        if let AnyDeadLetter::Sluicegate(r) = &mut r {
            r.original_partition = 1;
        }
        assert!(f.matches(&r, None));
    }

    #[test]
    fn class_and_topic_arguments_are_checked() {
        assert_eq!(
            parse_class(" java.lang.Error "),
            Ok("java.lang.Error".into())
        );
        for bad in ["", " ", "java.lang.", "Illegal State"] {
            let err = parse_class(bad).unwrap_err();
            assert!(err.contains("not a Java class name"), "{bad:?}: {err}");
        }
        assert!(parse_topic("").is_err());
        assert_eq!(parse_topic("orders"), Ok("orders".into()));
    }

    #[test]
    fn original_offset_bounds_are_inclusive() {
        let f = Filter {
            from_offset: Some(10),
            to_offset: Some(20),
            ..Filter::default()
        };
        let kind = ErrorKind::Permanent;
        assert!(!f.matches(&record(kind, 9, 0), None));
        assert!(f.matches(&record(kind, 10, 0), None));
        assert!(f.matches(&record(kind, 20, 0), None));
        assert!(!f.matches(&record(kind, 21, 0), None));
    }

    #[test]
    fn all_given_bounds_must_hold() {
        let f = Filter {
            kinds: vec![ErrorKind::Decode],
            from_offset: Some(5),
            since_ms: Some(100),
            ..Filter::default()
        };
        assert!(f.matches(&record(ErrorKind::Decode, 5, 100), None));
        assert!(!f.matches(&record(ErrorKind::Retryable, 5, 100), None));
        assert!(!f.matches(&record(ErrorKind::Decode, 4, 100), None));
        assert!(!f.matches(&record(ErrorKind::Decode, 5, 99), None));
    }

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Ok(1_500));
        assert_eq!(parse_time("1970-01-01T02:00:00+02:00"), Ok(0));
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn a_listed_record_names_both_places_and_the_reason_on_one_line() {
        let mut r = record(ErrorKind::Retryable, 1042, 0);
        if let AnyDeadLetter::Sluicegate(r) = &mut r {
            r.original_partition = 3;
            r.error_message = "line one\nline two".into();
        }
        let line = Listed::of(&r, 1, 7, "orders").line();
        assert_eq!(
            line,
            "dlq 1/7 -> orders   original orders/3/1042   retryable: line one\\nline two"
        );
        let line = Listed::of(
            &spring("orders", Some(2), None, "com.acme.Declined"),
            0,
            4,
            "x",
        )
        .line();
        assert_eq!(
            line,
            "dlq 0/4 -> x   original orders/2/?   \
             org.springframework.kafka.listener.ListenerExecutionFailedException \
             (cause com.acme.Declined): boom"
        );
    }

    #[test]
    fn a_failed_delivery_fails_the_summary_and_says_so() {
        let s = ReplaySummary {
            dlq_topic: "orders.dlq".into(),
            read: 3,
            matched: 2,
            sent: 1,
            failed: 1,
            failures: vec!["dlq 0/1 -> orders: timed out".into()],
            ..ReplaySummary::default()
        };
        let text = s.render();
        assert!(text.contains("FAILED: 1 of 2"), "{text}");
        assert!(text.contains("dlq 0/1 -> orders"), "{text}");
    }
}
