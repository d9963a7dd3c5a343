//! The dead-letter topic: where messages go that the handler gave up on, with headers that say
//! where they came from and why they failed, so that they can be inspected and replayed.
//!
//! A dead-lettered message keeps its original key, value and headers, and gains the
//! [`headers`] below. Its offset is finished (and so may be committed) only once the broker
//! acknowledged the dead-letter write; until then the write is retried and nothing after it
//! in its partition is committed.
//!
//! Reading back: [`DeadLetterRecord`] reads Sluicegate's headers, [`spring::SpringDeadLetter`]
//! those of Spring Kafka's `DeadLetterPublishingRecoverer`, and [`AnyDeadLetter`] either.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{info, warn};

use crate::handler::{ErrorKind, HandlerError};
use crate::kafka::admin::{self, TopicCreation};
use crate::kafka::client::ProducerLog;
use crate::kafka::producer::{self, Outgoing};
use crate::output::{producer_config, OutputRecord, Producer};
use crate::policy::Backoff;
use crate::properties::Properties;
use crate::security::OAuth;
use crate::{ClientError, Error, Header, Message};

pub mod spring;

use spring::SpringDeadLetter;

/// The names of the diagnostic headers added to every dead-lettered message. Times are
/// milliseconds since the Unix epoch, numbers are decimal text.
pub mod headers {
    /// The topic the message was consumed from.
    pub const ORIGINAL_TOPIC: &str = "sluicegate.original.topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "sluicegate.original.partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "sluicegate.original.offset";
    /// Its timestamp, when it had one.
    pub const ORIGINAL_TIMESTAMP: &str = "sluicegate.original.timestamp";
    /// The last error's message.
    pub const ERROR_MESSAGE: &str = "sluicegate.error.message";
    /// The last error's kind ([`ErrorKind::as_str`](crate::ErrorKind::as_str)).
    pub const ERROR_KIND: &str = "sluicegate.error.kind";
    /// How many times the handler was called.
    pub const ATTEMPTS: &str = "sluicegate.attempts";
    /// The consumer group that gave up.
    pub const GROUP: &str = "sluicegate.group";
    /// When the first attempt failed.
    pub const FIRST_FAILURE: &str = "sluicegate.failure.first";
    /// When the last attempt failed.
    pub const LAST_FAILURE: &str = "sluicegate.failure.last";

    /// Every header above.
    pub const ALL: [&str; 10] = [
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        ERROR_MESSAGE,
        ERROR_KIND,
        ATTEMPTS,
        GROUP,
        FIRST_FAILURE,
        LAST_FAILURE,
    ];
}

/// Where and how messages are dead-lettered. Set it with
/// [`ConsumerBuilder::dead_letter`](crate::ConsumerBuilder::dead_letter); without it a
/// message the handler gives up on stops its partition at its offset (see
/// [`StuckPartition`](crate::StuckPartition)).
///
/// ```
/// use sluicegate::dead_letter::DeadLetter;
///
/// let dlq = DeadLetter::default()          // `<topic>.dlq`, created when missing
///     .set("compression.type", "zstd");    // a producer property
/// let single = DeadLetter::to_topic("all-failures").create_missing(false);
/// # let _ = (dlq, single);
/// ```
#[derive(Clone, Debug)]
pub struct DeadLetter {
    topic: Option<String>,
    suffix: String,
    create_missing: bool,
    replication: i32,
    producer: BTreeMap<String, String>,
    pub(crate) backoff: Backoff,
}

impl Default for DeadLetter {
    fn default() -> Self {
        DeadLetter {
            topic: None,
            suffix: ".dlq".into(),
            create_missing: true,
            replication: -1,
            producer: BTreeMap::new(),
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
                ..Backoff::default()
            },
        }
    }
}

impl DeadLetter {
    /// Dead-letters every topic's messages to one `topic`.
    pub fn to_topic(topic: impl Into<String>) -> Self {
        DeadLetter {
            topic: Some(topic.into()),
            ..Self::default()
        }
    }

    /// Names each dead-letter topic `<topic><suffix>` (`.dlq` by default).
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// Whether missing dead-letter topics are created at start (yes by default), with the
    /// partition count of their source topic.
    pub fn create_missing(mut self, create: bool) -> Self {
        self.create_missing = create;
        self
    }

    /// The replication factor of created dead-letter topics (-1, the broker's default, by
    /// default).
    pub fn replication(mut self, factor: i32) -> Self {
        self.replication = factor;
        self
    }

    /// Sets a librdkafka producer property of the dead-letter producer. Connection and security
    /// settings are taken from the consumer's; the producer is idempotent with `acks=all`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer.insert(key.into(), value.into());
        self
    }

    /// The delays between attempts to write a dead letter that the broker did not accept.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The dead-letter topic of messages from `source`.
    pub fn topic_for(&self, source: &str) -> String {
        match &self.topic {
            Some(t) => t.clone(),
            None => format!("{source}{}", self.suffix),
        }
    }
}

/// Why a message was dead-lettered: what the handler's retries ended with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: HandlerError,
    pub attempts: u32,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// Writes dead letters for one consumer and waits for the acknowledgement.
pub(crate) struct DeadLetterWriter {
    config: DeadLetter,
    group: String,
    /// The producer's settings, also used for the admin client that creates topics.
    client: Properties,
    producer: Arc<Producer>,
    oauth: Option<OAuth>,
    /// Exactly-once mode: a dead letter is kept with the message's outputs and written by the
    /// transaction that commits its offset.
    with_commit: bool,
}

impl DeadLetterWriter {
    /// Creates the producer from the consumer's client settings; in exactly-once mode uses
    /// `shared` (the transactional producer) for metadata, and leaves the writes to the commit
    /// (see [`send_once`](Self::send_once)).
    pub fn new(
        config: DeadLetter,
        consumer: &Properties,
        group: &str,
        shared: Option<Arc<Producer>>,
        oauth: Option<OAuth>,
    ) -> Result<Self, Error> {
        let mut client = producer_config(consumer, &config.producer);
        if !config.producer.contains_key("linger.ms") {
            // A dead letter is awaited by its lane (and in ordered modes by its partition).
            client.set("linger.ms", "0");
        }
        let with_commit = shared.is_some();
        let producer = match shared {
            Some(p) => p,
            None => Arc::new(producer::create(
                &client,
                ProducerLog {
                    oauth: oauth.clone(),
                    errors: None,
                },
            )?),
        };
        Ok(DeadLetterWriter {
            config,
            group: group.to_owned(),
            client,
            producer,
            oauth,
            with_commit,
        })
    }

    /// Creates the dead-letter topics of `sources` that do not exist, when allowed. A failure
    /// is logged, not returned: writes to a missing topic fail and are retried, holding
    /// commits back, so nothing is lost either way.
    pub async fn ensure_topics(&self, sources: &[String]) {
        if let Err(e) = self.try_ensure_topics(sources).await {
            warn!(error = %e, "cannot create dead-letter topics; relying on the broker to \
                   create them on first write");
        }
    }

    async fn try_ensure_topics(&self, sources: &[String]) -> Result<(), Error> {
        if !self.config.create_missing {
            return Ok(());
        }
        let timeout = Duration::from_secs(10);
        let topics = producer::topics(&self.producer, timeout)?;
        let exists = |t: &str| topics.iter().any(|m| m.name == t && !m.errored);
        let mut wanted: BTreeMap<String, i32> = BTreeMap::new();
        for source in sources {
            let dlq = self.config.topic_for(source);
            if exists(&dlq) {
                continue;
            }
            let partitions = topics
                .iter()
                .find(|m| m.name == *source)
                .map_or(1, |m| m.partitions.max(1) as i32);
            let e = wanted.entry(dlq).or_insert(partitions);
            *e = (*e).max(partitions);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let new: Vec<(String, i32, i32)> = wanted
            .into_iter()
            .map(|(name, partitions)| (name, partitions, self.config.replication))
            .collect();
        let log = ProducerLog {
            oauth: self.oauth.clone(),
            errors: None,
        };
        for result in admin::create_topics(&self.client, log, &new, timeout).await? {
            match result {
                TopicCreation::Created(topic) => info!(topic, "dead-letter topic created"),
                TopicCreation::Existed => {}
                TopicCreation::Refused(topic, error) => {
                    warn!(
                        topic,
                        error,
                        "cannot create the dead-letter topic; relying \
                          on the broker to create it on first write"
                    );
                }
            }
        }
        Ok(())
    }

    /// The dead-letter topic of messages from `source`.
    pub fn topic_for(&self, source: &str) -> String {
        self.config.topic_for(source)
    }

    /// The delays between attempts to write a dead letter the broker did not accept (the
    /// dead-letter layer applies them).
    pub fn backoff(&self) -> &Backoff {
        &self.config.backoff
    }

    /// Writes `message` to its dead-letter topic once and waits for the acknowledgement. In
    /// exactly-once mode, keeps the dead letter with the message's outputs instead: the
    /// transaction that commits the message's offset writes it.
    pub async fn send_once(&self, message: &Message, failure: &Failure) -> Result<(), ClientError> {
        let topic = self.config.topic_for(message.topic());
        let added = self.headers(message, failure);
        if self.with_commit {
            let mut record = OutputRecord::to(topic);
            if let Some(k) = message.key() {
                record = record.key(Bytes::copy_from_slice(k));
            }
            if let Some(v) = message.payload() {
                record = record.payload(Bytes::copy_from_slice(v));
            }
            for h in message.headers() {
                record = record.header_value(h.key.clone(), h.value.clone());
            }
            for (k, v) in added {
                record = record.header(k, v);
            }
            crate::output::keep_for_commit([record]);
            return Ok(());
        }
        let headers = message
            .headers()
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .chain(added.iter().map(|(k, v)| (*k, Some(v.as_bytes()))));
        let record = Outgoing {
            topic: &topic,
            partition: None,
            key: message.key(),
            payload: message.payload(),
            headers,
        };
        producer::send(&self.producer, record, Duration::from_secs(30))
            .await
            .map(drop)
    }

    /// The headers a dead letter gains, after the message's own.
    fn headers(&self, message: &Message, failure: &Failure) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(headers::ALL.len());
        let mut add = |key: &'static str, value: String| out.push((key, value));
        add(headers::ORIGINAL_TOPIC, message.topic().to_owned());
        add(headers::ORIGINAL_PARTITION, message.partition().to_string());
        add(headers::ORIGINAL_OFFSET, message.offset().to_string());
        if let Some(ts) = message.timestamp() {
            add(headers::ORIGINAL_TIMESTAMP, ts.to_string());
        }
        add(headers::ERROR_MESSAGE, failure.error.source().to_string());
        add(
            headers::ERROR_KIND,
            failure.error.kind().as_str().to_owned(),
        );
        add(headers::ATTEMPTS, failure.attempts.to_string());
        add(headers::GROUP, self.group.clone());
        add(headers::FIRST_FAILURE, millis(failure.first).to_string());
        add(headers::LAST_FAILURE, millis(failure.last).to_string());
        out
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A dead-lettered message read back: where it came from, why it failed, and its original
/// headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRecord {
    /// The topic it was consumed from.
    pub original_topic: String,
    /// Its partition there.
    pub original_partition: i32,
    /// Its offset there.
    pub original_offset: i64,
    /// Its timestamp there (ms since the epoch), when it had one.
    pub original_timestamp: Option<i64>,
    /// The last error's kind.
    pub error_kind: ErrorKind,
    /// The last error's message.
    pub error_message: String,
    /// How many times the handler was called.
    pub attempts: u32,
    /// The consumer group that gave up.
    pub group: String,
    /// When the first attempt failed (ms since the epoch).
    pub first_failure: i64,
    /// When the last attempt failed (ms since the epoch).
    pub last_failure: i64,
    /// The message's own headers, without the diagnostic ones.
    pub original_headers: Vec<Header>,
}

impl DeadLetterRecord {
    /// Reads the diagnostic headers of a message from a dead-letter topic. The error names
    /// the first header that is missing or malformed.
    pub fn from_headers(message_headers: &[Header]) -> Result<Self, String> {
        let text = |name: &str| -> Result<String, String> {
            message_headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value.as_deref())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .ok_or_else(|| format!("header `{name}` is missing"))
        };
        fn number<T: std::str::FromStr>(name: &str, value: String) -> Result<T, String> {
            value
                .parse()
                .map_err(|_| format!("header `{name}` is not a number: `{value}`"))
        }
        Ok(DeadLetterRecord {
            original_topic: text(headers::ORIGINAL_TOPIC)?,
            original_partition: number(
                headers::ORIGINAL_PARTITION,
                text(headers::ORIGINAL_PARTITION)?,
            )?,
            original_offset: number(headers::ORIGINAL_OFFSET, text(headers::ORIGINAL_OFFSET)?)?,
            original_timestamp: match text(headers::ORIGINAL_TIMESTAMP) {
                Ok(v) => Some(number(headers::ORIGINAL_TIMESTAMP, v)?),
                Err(_) => None,
            },
            error_kind: text(headers::ERROR_KIND)?
                .parse()
                .map_err(|e| format!("header `{}`: {e}", headers::ERROR_KIND))?,
            error_message: text(headers::ERROR_MESSAGE)?,
            attempts: number(headers::ATTEMPTS, text(headers::ATTEMPTS)?)?,
            group: text(headers::GROUP)?,
            first_failure: number(headers::FIRST_FAILURE, text(headers::FIRST_FAILURE)?)?,
            last_failure: number(headers::LAST_FAILURE, text(headers::LAST_FAILURE)?)?,
            original_headers: message_headers
                .iter()
                .filter(|h| !headers::ALL.contains(&h.key.as_str()))
                .cloned()
                .collect(),
        })
    }
}

/// A dead letter read back, written by Sluicegate or by Spring Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyDeadLetter {
    /// Written by Sluicegate (its `sluicegate.*` [`headers`]).
    Sluicegate(DeadLetterRecord),
    /// Written by Spring Kafka's `DeadLetterPublishingRecoverer` (its `kafka_dlt-*`
    /// [`spring::headers`]).
    Spring(SpringDeadLetter),
}

impl AnyDeadLetter {
    /// Reads the diagnostic headers of a message from a dead-letter topic: Sluicegate's when
    /// it has `sluicegate.original.topic`, otherwise Spring Kafka's when it has any
    /// `kafka_dlt-*` header. The error names the header that is missing or malformed.
    ///
    /// ```
    /// use sluicegate::dead_letter::AnyDeadLetter;
    /// use sluicegate::Header;
    ///
    /// let record = AnyDeadLetter::from_headers(&[
    ///     Header::new("kafka_dlt-original-topic", Some(b"orders")),
    ///     Header::new("kafka_dlt-original-partition", Some(&2i32.to_be_bytes())),
    ///     Header::new("kafka_dlt-original-offset", Some(&42i64.to_be_bytes())),
    /// ]).unwrap();
    /// assert_eq!(record.original_topic(), "orders");
    /// assert_eq!((record.original_partition(), record.original_offset()), (Some(2), Some(42)));
    /// assert!(AnyDeadLetter::from_headers(&[]).is_err());
    /// ```
    pub fn from_headers(message_headers: &[Header]) -> Result<Self, String> {
        if message_headers
            .iter()
            .any(|h| h.key == headers::ORIGINAL_TOPIC)
        {
            DeadLetterRecord::from_headers(message_headers).map(AnyDeadLetter::Sluicegate)
        } else if SpringDeadLetter::is_spring(message_headers) {
            SpringDeadLetter::from_headers(message_headers).map(AnyDeadLetter::Spring)
        } else {
            Err(format!(
                "no dead-letter headers: neither Sluicegate's (`{}`, ...) nor Spring Kafka's \
                 (`{}`, ...)",
                headers::ORIGINAL_TOPIC,
                spring::headers::ORIGINAL_TOPIC
            ))
        }
    }

    /// Who wrote it: `sluicegate` or `spring-kafka`.
    pub fn writer(&self) -> &'static str {
        match self {
            AnyDeadLetter::Sluicegate(_) => "sluicegate",
            AnyDeadLetter::Spring(_) => "spring-kafka",
        }
    }

    /// The topic it was consumed from.
    pub fn original_topic(&self) -> &str {
        match self {
            AnyDeadLetter::Sluicegate(r) => &r.original_topic,
            AnyDeadLetter::Spring(r) => &r.original_topic,
        }
    }

    /// Its partition there, when known.
    pub fn original_partition(&self) -> Option<i32> {
        match self {
            AnyDeadLetter::Sluicegate(r) => Some(r.original_partition),
            AnyDeadLetter::Spring(r) => r.original_partition,
        }
    }

    /// Its offset there, when known.
    pub fn original_offset(&self) -> Option<i64> {
        match self {
            AnyDeadLetter::Sluicegate(r) => Some(r.original_offset),
            AnyDeadLetter::Spring(r) => r.original_offset,
        }
    }

    /// The last error's kind (Sluicegate's records only).
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            AnyDeadLetter::Sluicegate(r) => Some(r.error_kind),
            AnyDeadLetter::Spring(_) => None,
        }
    }

    /// The last error's message (empty when Spring recorded none).
    pub fn error_message(&self) -> &str {
        match self {
            AnyDeadLetter::Sluicegate(r) => &r.error_message,
            AnyDeadLetter::Spring(r) => r.exception_message.as_deref().unwrap_or_default(),
        }
    }

    /// When the last attempt failed, ms since the epoch (Sluicegate's records only; Spring
    /// Kafka does not record it, the dead-letter record's own timestamp stands in for it).
    pub fn last_failure(&self) -> Option<i64> {
        match self {
            AnyDeadLetter::Sluicegate(r) => Some(r.last_failure),
            AnyDeadLetter::Spring(_) => None,
        }
    }

    /// The message's own headers, without the diagnostic ones.
    pub fn original_headers(&self) -> &[Header] {
        match self {
            AnyDeadLetter::Sluicegate(r) => &r.original_headers,
            AnyDeadLetter::Spring(r) => &r.original_headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sluicegate_headers() -> Vec<Header> {
        [
            (headers::ORIGINAL_TOPIC, "orders"),
            (headers::ORIGINAL_PARTITION, "1"),
            (headers::ORIGINAL_OFFSET, "9"),
            (headers::ERROR_MESSAGE, "boom"),
            (headers::ERROR_KIND, "timeout"),
            (headers::ATTEMPTS, "3"),
            (headers::GROUP, "billing"),
            (headers::FIRST_FAILURE, "10"),
            (headers::LAST_FAILURE, "20"),
        ]
        .into_iter()
        .map(|(k, v)| Header::new(k, Some(v.as_bytes())))
        .collect()
    }

    #[test]
    fn sluicegate_headers_win_over_spring_ones_left_from_an_earlier_hop() {
        let mut hs = vec![Header::new(
            spring::headers::ORIGINAL_TOPIC,
            Some(b"elsewhere"),
        )];
        hs.extend(sluicegate_headers());
        let r = AnyDeadLetter::from_headers(&hs).unwrap();
        assert_eq!(r.writer(), "sluicegate");
        assert_eq!(r.original_topic(), "orders");
        assert_eq!(r.error_kind(), Some(ErrorKind::Timeout));
        assert_eq!(r.last_failure(), Some(20));
        assert_eq!(r.original_headers(), &hs[..1]);
    }

    #[test]
    fn a_record_without_dead_letter_headers_names_both_writers_headers() {
        let err = AnyDeadLetter::from_headers(&[Header::new("trace-id", Some(b"x"))]).unwrap_err();
        assert!(err.contains("`sluicegate.original.topic`"), "{err}");
        assert!(err.contains("`kafka_dlt-original-topic`"), "{err}");
    }

    #[test]
    fn a_spring_record_has_no_kind_nor_failure_time() {
        let r = AnyDeadLetter::from_headers(&[
            Header::new(spring::headers::ORIGINAL_TOPIC, Some(b"orders")),
            Header::new(spring::headers::EXCEPTION_MESSAGE, Some(b"boom")),
        ])
        .unwrap();
        assert_eq!(r.writer(), "spring-kafka");
        assert_eq!((r.error_kind(), r.last_failure()), (None, None));
        assert_eq!((r.original_partition(), r.original_offset()), (None, None));
        assert_eq!(r.error_message(), "boom");
    }
}
