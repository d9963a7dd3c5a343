//! The `sink:` section of a `sluicegate run` file: where each message goes (an HTTP service or
//! a child process), read and checked before anything is consumed. Pure: no I/O but reading
//! the TLS files the section names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use sluicegate::policy::CircuitBreaker;

/// How long an HTTP request may take when `sink.http.timeout` is not given.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight to the child process when `sink.exec.in_flight` is not given.
pub const DEFAULT_EXEC_IN_FLIGHT: usize = 16;

/// Where messages go, checked.
#[derive(Debug)]
pub enum Sink {
    /// POSTed to an HTTP service.
    Http(Box<HttpSettings>),
    /// Written to a long-lived child process, as JSON lines.
    Exec(ExecSettings),
}

/// `sink.http`, checked.
#[derive(Debug)]
pub struct HttpSettings {
    /// Where each message (or batch) is POSTed.
    pub url: Url,
    /// The longest a request may take, connection included.
    pub timeout: Duration,
    /// Sent with every request.
    pub headers: HeaderMap,
    /// PEM certificates to trust besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and its key, PEM, one after the other.
    pub identity_pem: Option<Vec<u8>>,
}

/// `sink.exec`, checked.
#[derive(Debug)]
pub struct ExecSettings {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The most requests the child has at once.
    pub in_flight: usize,
}

/// A `sluicegate run` file: the library's `kafka:` section, and `sink:`.
#[derive(Debug)]
pub struct RunFile {
    /// The sink, checked.
    pub sink: Sink,
    /// The circuit breaker, when `sink.circuit_breaker` is given.
    pub breaker: Option<CircuitBreaker>,
    /// `sink.reply_to`: the topic the sink's answers are written to.
    pub reply_to: Option<String>,
    /// `sink.transactional_id`: replies and offsets committed together, exactly once.
    pub transactional_id: Option<String>,
    /// The file for the library's loader: the same text with the `sink:` block blanked.
    pub kafka_yaml: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    #[allow(dead_code)] // The library reads it.
    kafka: Option<IgnoredAny>,
    sink: Option<RawSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    http: Option<RawHttp>,
    exec: Option<RawExec>,
    circuit_breaker: Option<RawBreaker>,
    reply_to: Option<String>,
    transactional_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    url: Option<String>,
    #[serde(default, deserialize_with = "http_timeout")]
    timeout: Option<Duration>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    #[serde(default)]
    command: Vec<String>,
    in_flight: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive_failures: Option<u32>,
    failure_rate: Option<f64>,
    #[serde(default, deserialize_with = "breaker_window")]
    window: Option<Duration>,
    min_calls: Option<u32>,
    #[serde(default, deserialize_with = "breaker_cool_down")]
    cool_down: Option<Duration>,
}

/// The duration at `key`, written like the library's (`30s`, `500ms`).
fn duration<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    let text = match Written::deserialize(d)? {
        Written::Text(t) => t,
        Written::Number(n) => n.to_string(),
    };
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{key}: `{text}` is not a duration ({e}); write it like 500ms, 30s or 5m"
            ))
        })
}

fn http_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d, "sink.http.timeout")
}

fn breaker_window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d, "sink.circuit_breaker.window")
}

fn breaker_cool_down<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d, "sink.circuit_breaker.cool_down")
}

impl RunFile {
    /// Reads and checks the `sink:` section of `yaml`; `kafka:` is left to the library.
    pub fn parse(yaml: &str) -> Result<Self> {
        let raw: Raw = serde_saphyr::from_str(yaml).map_err(|e| {
            // The message names the line and column.
            let message = e.without_snippet().to_string();
            let message = message.lines().next().unwrap_or_default().to_string();
            anyhow!("invalid run file: {message}")
        })?;
        let sink = raw.sink.ok_or_else(|| {
            anyhow!("sink: missing; give `sink: {{http: {{url: ...}}}}` or `sink: {{exec: {{command: [...]}}}}`")
        })?;
        let breaker = sink.circuit_breaker.map(RawBreaker::checked).transpose()?;
        let reply_to = sink.reply_to.map(checked_topic).transpose()?;
        let transactional_id = match (sink.transactional_id, &reply_to) {
            (Some(id), _) if id.trim().is_empty() => {
                bail!("sink.transactional_id: empty; give this worker's own id (the same across its restarts)")
            }
            (Some(_), None) => bail!(
                "sink.transactional_id: exactly-once covers the replies written to Kafka; give \
                 sink.reply_to too (or remove transactional_id)"
            ),
            (id, _) => id,
        };
        let sink = match (sink.http, sink.exec) {
            (Some(http), None) => Sink::Http(Box::new(http.checked()?)),
            (None, Some(exec)) => Sink::Exec(exec.checked()?),
            (Some(_), Some(_)) => bail!("sink: give one of `http` and `exec`, not both"),
            (None, None) => bail!("sink: no sink given; allowed: http, exec"),
        };
        Ok(RunFile {
            sink,
            breaker,
            reply_to,
            transactional_id,
            kafka_yaml: without_sink(yaml),
        })
    }
}

/// A topic name as Kafka accepts it: 1 to 249 of `a-z A-Z 0-9 . _ -`, not `.` or `..`.
fn checked_topic(topic: String) -> Result<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty()
        || topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic.chars().all(allowed)
    {
        bail!(
            "sink.reply_to: `{topic}` is not a topic name (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`)"
        );
    }
    Ok(topic)
}

impl RawHttp {
    fn checked(self) -> Result<HttpSettings> {
        let Some(text) = self.url else {
            bail!(
                "sink.http.url: missing; give the service's URL, like http://localhost:8080/events"
            );
        };
        let url =
            Url::parse(&text).map_err(|e| anyhow!("sink.http.url: `{text}` is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("sink.http.url: `{text}` is not an http:// or https:// URL with a host");
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_HTTP_TIMEOUT);
        if timeout.is_zero() {
            bail!("sink.http.timeout: must be above zero");
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let key = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow!("sink.http.headers.{name}: not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                anyhow!("sink.http.headers.{name}: not a valid HTTP header value (printable ASCII)")
            })?;
            headers.insert(key, value);
        }
        let (mut ca_pem, mut identity_pem) = (None, None);
        if let Some(tls) = self.tls {
            let read = |key: &str, path: &PathBuf| {
                std::fs::read(path).with_context(|| {
                    format!("sink.http.tls.{key}: cannot read `{}`", path.display())
                })
            };
            if let Some(path) = &tls.ca_file {
                ca_pem = Some(read("ca_file", path)?);
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => {
                    let mut pem = read("cert_file", cert)?;
                    pem.push(b'\n');
                    pem.extend(read("key_file", key)?);
                    identity_pem = Some(pem);
                }
                (None, None) => {}
                _ => bail!("sink.http.tls: give cert_file and key_file together"),
            }
            if url.scheme() != "https" {
                bail!("sink.http.tls: set, but sink.http.url `{text}` is not https://");
            }
        }
        Ok(HttpSettings {
            url,
            timeout,
            headers,
            ca_pem,
            identity_pem,
        })
    }
}

impl RawExec {
    fn checked(self) -> Result<ExecSettings> {
        if self.command.first().is_none_or(|p| p.trim().is_empty()) {
            bail!("sink.exec.command: missing; give the program and its arguments, like [python3, worker.py]");
        }
        let in_flight = self.in_flight.unwrap_or(DEFAULT_EXEC_IN_FLIGHT);
        if in_flight == 0 {
            bail!("sink.exec.in_flight: must be at least 1");
        }
        Ok(ExecSettings {
            command: self.command,
            in_flight,
        })
    }
}

impl RawBreaker {
    fn checked(self) -> Result<CircuitBreaker> {
        let d = CircuitBreaker::default();
        let b = CircuitBreaker {
            consecutive_failures: self.consecutive_failures.unwrap_or(d.consecutive_failures),
            failure_rate: self.failure_rate.unwrap_or(d.failure_rate),
            window: self.window.unwrap_or(d.window),
            min_calls: self.min_calls.unwrap_or(d.min_calls),
            cool_down: self.cool_down.unwrap_or(d.cool_down),
        };
        // The library checks the rest when the consumer is built, naming its own keys.
        if b.consecutive_failures == 0 {
            bail!("sink.circuit_breaker.consecutive_failures: must be at least 1");
        }
        Ok(b)
    }
}

impl Sink {
    /// One line saying where messages go.
    pub fn describe(&self) -> String {
        match self {
            Sink::Http(h) => format!("http: POST to {}", h.url),
            Sink::Exec(e) => format!("exec: `{}`", e.command.join(" ")),
        }
    }
}

/// Whether `yaml` has a top-level `sink:` section (is a `sluicegate run` file).
pub fn has_sink(yaml: &str) -> bool {
    without_sink(yaml) != yaml
}

/// `yaml` with its top-level `sink:` block turned into empty lines: what the library's loader,
/// which knows `kafka:` alone, reads. Lines keep their numbers, so its errors point into the
/// file as written.
pub fn without_sink(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut in_sink = false;
    for line in yaml.split_inclusive('\n') {
        let starts_key = !line.starts_with([' ', '\t', '#', '\r', '\n']);
        if starts_key {
            let key = line.split(':').next().unwrap_or_default().trim();
            in_sink = key == "sink";
        }
        if in_sink {
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAFKA: &str = "kafka:\n  bootstrap_servers: localhost:9092\n";

    fn parse(sink: &str) -> Result<RunFile> {
        RunFile::parse(&format!("{KAFKA}{sink}"))
    }

    fn error(sink: &str) -> String {
        format!("{:#}", parse(sink).unwrap_err())
    }

    #[test]
    fn the_sink_block_is_blanked_for_the_library_keeping_line_numbers() {
        let yaml = "kafka:\n  group_id: g\nsink:\n  exec:\n\n    command: [a]\n# note\nother: 1\n";
        let out = without_sink(yaml);
        assert_eq!(out, "kafka:\n  group_id: g\n\n\n\n\n\nother: 1\n");
        assert_eq!(out.lines().count(), yaml.lines().count());
        let flow = "sink: {exec: {command: [a]}}\nkafka:\n  group_id: g";
        assert_eq!(without_sink(flow), "\nkafka:\n  group_id: g");
        assert!(has_sink(flow) && !has_sink("kafka:\n  group_id: g\n"));
    }

    #[test]
    fn an_http_sink_is_read_with_its_defaults() {
        let file = parse(
            "sink:\n  http:\n    url: http://localhost:8080/in\n    headers: {Authorization: Bearer x}\n",
        )
        .unwrap();
        let Sink::Http(http) = file.sink else {
            panic!("not http")
        };
        assert_eq!(http.url.as_str(), "http://localhost:8080/in");
        assert_eq!(http.timeout, DEFAULT_HTTP_TIMEOUT);
        assert_eq!(http.headers["authorization"], "Bearer x");
        assert!(file.breaker.is_none());
        assert_eq!(file.kafka_yaml, format!("{KAFKA}\n\n\n\n"));
    }

    #[test]
    fn an_exec_sink_and_a_breaker_are_read() {
        let file = parse(
            "sink:\n  exec: {command: [python3, w.py], in_flight: 4}\n  circuit_breaker: {consecutive_failures: 3, cool_down: 2s}\n",
        )
        .unwrap();
        let Sink::Exec(exec) = file.sink else {
            panic!("not exec")
        };
        assert_eq!(exec.command, ["python3", "w.py"]);
        assert_eq!(exec.in_flight, 4);
        let breaker = file.breaker.unwrap();
        assert_eq!(breaker.consecutive_failures, 3);
        assert_eq!(breaker.cool_down, Duration::from_secs(2));
    }

    #[test]
    fn a_transactional_id_needs_a_reply_topic() {
        let file =
            parse("sink:\n  exec: {command: [w]}\n  reply_to: answers\n  transactional_id: w-1\n")
                .unwrap();
        assert_eq!(file.transactional_id.as_deref(), Some("w-1"));
        let err = parse("sink:\n  exec: {command: [w]}\n  transactional_id: w-1\n").unwrap_err();
        assert!(err.to_string().contains("sink.reply_to"), "{err}");
        let err = parse("sink:\n  exec: {command: [w]}\n  reply_to: a\n  transactional_id: ' '\n")
            .unwrap_err();
        assert!(err.to_string().contains("sink.transactional_id"), "{err}");
    }

    #[test]
    fn a_reply_topic_is_read_and_checked() {
        let file = parse("sink:\n  exec: {command: [w]}\n  reply_to: answers.v1\n").unwrap();
        assert_eq!(file.reply_to.as_deref(), Some("answers.v1"));
        for bad in ["''", "'a b'", "'..'"] {
            let e = error(&format!(
                "sink:\n  exec: {{command: [w]}}\n  reply_to: {bad}\n"
            ));
            assert!(e.starts_with("sink.reply_to:"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_sinks_are_refused_naming_the_key() {
        assert!(error("").starts_with("sink: missing"), "{}", error(""));
        let unknown = error("sink:\n  kafka_topic: {}\n");
        assert!(unknown.contains("kafka_topic"), "{unknown}");
        assert!(unknown.contains("line 4"), "{unknown}");
        let bad_url = error("sink:\n  http: {url: 'not a url'}\n");
        assert!(
            bad_url.starts_with("sink.http.url: `not a url` is not a URL"),
            "{bad_url}"
        );
        let ftp = error("sink:\n  http: {url: 'ftp://host/x'}\n");
        assert!(ftp.starts_with("sink.http.url: "), "{ftp}");
        assert!(error("sink:\n  http: {}\n").starts_with("sink.http.url: missing"));
        assert!(error("sink:\n  exec: {}\n").starts_with("sink.exec.command: missing"));
        assert!(error("sink:\n  exec: {command: [a], in_flight: 0}\n")
            .starts_with("sink.exec.in_flight"));
        let slow = error("sink:\n  http: {url: 'http://h/', timeout: 30}\n");
        assert!(
            slow.contains("sink.http.timeout: `30` is not a duration"),
            "{slow}"
        );
        let both = error("sink:\n  http: {url: 'http://h/'}\n  exec: {command: [a]}\n");
        assert!(both.contains("not both"), "{both}");
        let tls = error("sink:\n  http: {url: 'http://h/', tls: {ca_file: /nonexistent.pem}}\n");
        assert!(
            tls.starts_with("sink.http.tls.ca_file: cannot read"),
            "{tls}"
        );
    }
}
