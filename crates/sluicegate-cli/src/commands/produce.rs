//! `sluicegate produce TOPIC`: write lines from stdin to a topic, as kcat -P and
//! kafka-console-producer do, and wait for every delivery.

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::ClientConfig;
use serde::Serialize;
use sluicegate::config::ClientKind;

use super::on_blocking_thread;
use crate::cluster::{self, LOOKUP_TIMEOUT};
use crate::produce::{send_waiting, DeliveryLog, Subject, MAX_KEPT_FAILURES};
use crate::report::print_summary;
use crate::settings::Connection;
use crate::ProduceArgs;

/// Parses `-H NAME=VALUE`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE (a header), got `{s}`")),
    }
}

/// The stdin line (1-based) a record was read from, as its delivery report names it.
pub struct Line(usize);

impl Subject for Box<Line> {
    fn describe(&self, error: &KafkaError) -> String {
        format!("line {}: {error}", self.0)
    }
}

type LineLog = DeliveryLog<Box<Line>>;

/// What a produce run did, as printed with `--json`.
#[derive(Serialize, Debug, Default)]
pub struct ProduceSummary {
    pub ok: bool,
    pub topic: String,
    /// Lines read from stdin.
    pub lines: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Lines not written: not split at the key separator, refused by the producer, or not
    /// acknowledged.
    pub failed: u64,
    /// The first failures, each naming its line.
    pub failures: Vec<String>,
}

impl ProduceSummary {
    /// The summary for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "produced {} of {} line(s) to `{}`\n",
            self.delivered, self.lines, self.topic
        );
        if !self.ok {
            out += &format!("FAILED: {} line(s) not written:\n", self.failed);
            for f in &self.failures {
                out += &format!("  {f}\n");
            }
        }
        out
    }
}

/// The producer, connected as `connection` says: `acks=all` and `message.timeout.ms` from
/// `--timeout-secs` unless the configuration or `-X` set them.
fn producer(
    connection: &Connection,
    timeout: Duration,
) -> Result<(BaseProducer<LineLog>, LineLog)> {
    let mut config = ClientConfig::new();
    config
        .set("acks", "all")
        .set("message.timeout.ms", timeout.as_millis().to_string());
    let connected = connection.client_config(ClientKind::Producer);
    // `config_map` shows secrets as a placeholder: copy each value through `get`.
    for key in connected.config_map().keys() {
        if let Some(value) = connected.get(key) {
            config.set(*key, value);
        }
    }
    let log = LineLog::new(connection.security(&config));
    let producer = config
        .create_with_context(log.clone())
        .context("cannot create the producer")?;
    Ok((producer, log))
}

/// `line` without its line ending (`\n` or `\r\n`).
fn trim_line_end(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
    }
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits `line` at the first `separator`: (key, value).
fn split_key<'a>(line: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = line.windows(separator.len()).position(|w| w == separator)?;
    Some((&line[..at], &line[at + separator.len()..]))
}

/// Produces every line of `input`; blocking.
fn produce_blocking(args: &ProduceArgs, input: impl BufRead) -> Result<ProduceSummary> {
    let topic = args.topic.as_str();
    let connection = Connection::load(&args.connect, std::env::vars(), &args.properties)?;
    cluster::require_kafka(&connection, LOOKUP_TIMEOUT)?;
    let client = cluster::client(&connection, "sluicegate-cli-lookup")?;
    let Some(count) = cluster::partition_count(&client, topic)? else {
        bail!("topic `{topic}` does not exist (or has no partitions); nothing was written");
    };
    if let Some(p) = args.partition.filter(|p| *p >= count) {
        bail!(
            "topic `{topic}` has {count} partition(s), numbered 0 to {}; there is no partition \
             {p}; nothing was written",
            count - 1
        );
    }
    let timeout = Duration::from_secs(args.timeout_secs);
    let (producer, log) = producer(&connection, timeout)?;
    let mut headers = OwnedHeaders::new_with_capacity(args.headers.len());
    for (name, value) in &args.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut summary = ProduceSummary {
        topic: topic.to_string(),
        ..ProduceSummary::default()
    };
    let mut refused = Vec::new();
    let mut refuse = |reason: String| {
        if refused.len() < MAX_KEPT_FAILURES {
            refused.push(reason);
        }
    };
    let mut not_sent = 0u64;
    for (n, line) in input.split(b'\n').enumerate() {
        let n = n + 1;
        let line = line.context("cannot read stdin")?;
        let line = trim_line_end(&line);
        summary.lines += 1;
        let (key, value) = match separator {
            None => (None, line),
            Some(sep) => match split_key(line, sep) {
                Some((key, value)) => (Some(key), value),
                None => {
                    not_sent += 1;
                    refuse(format!(
                        "line {n}: no key separator `{}`",
                        String::from_utf8_lossy(sep)
                    ));
                    continue;
                }
            },
        };
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(Line(n)))
            .payload(value)
            .headers(headers.clone());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        if let Err(e) = send_waiting(&producer, record) {
            not_sent += 1;
            refuse(format!("line {n}: {e}"));
        }
        producer.poll(Duration::ZERO);
    }
    // Every record sent is acknowledged or failed by then: librdkafka gives up on each after
    // message.timeout.ms.
    let flush_limit = timeout + Duration::from_secs(10);
    let started = Instant::now();
    let flushed = producer.flush(flush_limit);
    let deliveries = &log.0;
    summary.delivered = deliveries.delivered();
    let unanswered = summary.lines - not_sent - summary.delivered - deliveries.failed();
    summary.failed = not_sent + deliveries.failed() + unanswered;
    summary.failures = refused;
    summary.failures.extend(deliveries.failures());
    if let Err(e) = flushed {
        summary.failures.push(format!(
            "{unanswered} record(s) not acknowledged within {:?}: {e}",
            started.elapsed()
        ));
    }
    summary.ok = summary.failed == 0;
    Ok(summary)
}

/// Runs `sluicegate produce`; `Ok(false)` when a line was not written.
pub async fn run(args: ProduceArgs) -> Result<bool> {
    let (args, summary) =
        on_blocking_thread(args, |a| produce_blocking(a, std::io::stdin().lock())).await?;
    let summary = summary?;
    print_summary(
        args.json,
        &summary,
        &summary.failures,
        ProduceSummary::render,
    )?;
    Ok(summary.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_split_at_the_first_separator() {
        assert_eq!(split_key(b"k1:v:1", b":"), Some((&b"k1"[..], &b"v:1"[..])));
        assert_eq!(split_key(b"::v", b"::"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_key(b"novalue", b":"), None);
    }

    #[test]
    fn line_ends_are_dropped() {
        assert_eq!(trim_line_end(b"a\r\n"), b"a");
        assert_eq!(trim_line_end(b"a\n"), b"a");
        assert_eq!(trim_line_end(b"a"), b"a");
    }

    #[test]
    fn headers_need_a_name() {
        assert_eq!(
            parse_header("trace=a=b"),
            Ok(("trace".to_string(), "a=b".to_string()))
        );
        assert!(parse_header("=x").is_err());
        assert!(parse_header("trace").is_err());
    }
}
