//! [`Output`]: the producer handlers write their results with. A handler awaits each send, so
//! an input is finished (and may be committed) only once the broker has acknowledged every
//! record it produced; in exactly-once mode the records and the input's offset are committed in
//! one transaction.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::kafka::client::ProducerLog;
pub(crate) use crate::kafka::producer::Producer;
use crate::kafka::producer::{self, Outgoing};
use crate::properties::Properties;
use crate::security::{ClientErrors, OAuth, SecurityWatch};
use crate::{ClientError, Error, HandlerError, Header};

/// Consumer settings that mean nothing to a producer (and make librdkafka warn).
pub(crate) const CONSUMER_ONLY: &[&str] = &[
    "group.",
    "fetch.",
    "queued.",
    "auto.",
    "enable.auto.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
];

/// A producer configuration with the consumer's connection and security settings: idempotent,
/// `acks=all`, then `overrides`.
pub(crate) fn producer_config<'a>(
    consumer: &Properties,
    overrides: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Properties {
    let mut client: Properties = consumer
        .iter()
        .filter(|(key, _)| !CONSUMER_ONLY.iter().any(|p| key.starts_with(p)))
        .collect();
    client
        .remove("group.id")
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (key, value) in overrides {
        client.set(key, value);
    }
    client
}

/// A record for [`Output::send`].
///
/// ```
/// use sluicegate::OutputRecord;
///
/// let record = OutputRecord::to("invoices")
///     .key("customer-7")
///     .payload(r#"{"total":42}"#)
///     .header("trace-id", "abc123");
/// # let _ = record;
/// ```
#[derive(Clone, Debug)]
pub struct OutputRecord {
    topic: String,
    partition: Option<i32>,
    key: Option<Bytes>,
    payload: Option<Bytes>,
    headers: Vec<Header>,
}

impl OutputRecord {
    /// A record for `topic`, partitioned by key (or spread, without a key).
    pub fn to(topic: impl Into<String>) -> Self {
        OutputRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    /// Sends to this partition instead of the key's.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The record's key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The record's value.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
}

/// Where a sent record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The consumer's producer, for handlers to write results with; get it from
/// [`ConsumerBuilder::output`](crate::ConsumerBuilder::output) and move clones into the handler.
///
/// [`send`](Self::send) returns once the broker has acknowledged the record (`acks=all`,
/// idempotent). Await it inside the handler: the input is finished only when the handler
/// returns, so it is never committed before its outputs are safe. A failed send is a retryable
/// [`HandlerError`], so `?` hands it to the retry policy. In exactly-once mode the records are
/// part of the transaction that commits the input's offset.
///
/// ```no_run
/// use sluicegate::{handler_fn, Consumer, Message, OutputRecord};
///
/// # async fn run() -> Result<(), sluicegate::Error> {
/// let mut builder = Consumer::builder()
///     .bootstrap_servers("localhost:9092")
///     .group_id("enricher")
///     .topic("orders");
/// let output = builder.output()?;
/// builder
///     .build(handler_fn(move |msg: Message| {
///         let output = output.clone();
///         async move {
///             let enriched = OutputRecord::to("orders.enriched")
///                 .key(msg.key().unwrap_or_default().to_vec())
///                 .payload(msg.payload().unwrap_or_default().to_vec());
///             output.send(enriched).await?;
///             Ok(())
///         }
///     }))?
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Output {
    producer: Arc<Producer>,
    transactional: bool,
    /// The transactional producer's TLS and authentication failures.
    errors: Option<Arc<ClientErrors>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("transactional", &self.transactional)
            .finish_non_exhaustive()
    }
}

/// How long a send may wait in the producer's queue when it is full.
const QUEUE_WAIT: Duration = Duration::from_secs(30);

impl Output {
    pub(crate) fn new(
        config: &Properties,
        transactional: bool,
        oauth: Option<OAuth>,
    ) -> Result<Self, Error> {
        // The exactly-once loop waits on this producer (`init_transactions`, commits): it must
        // learn when the producer cannot connect.
        let errors = transactional.then(|| Arc::new(ClientErrors::new(SecurityWatch::new(config))));
        let producer = producer::create(
            config,
            ProducerLog {
                oauth,
                errors: errors.clone(),
            },
        )?;
        Ok(Output {
            producer: Arc::new(producer),
            transactional,
            errors,
        })
    }

    /// What the error callback of a transactional producer saw; `None` for another one.
    pub(crate) fn errors(&self) -> Option<&Arc<ClientErrors>> {
        self.errors.as_ref()
    }

    pub(crate) fn producer(&self) -> &Arc<Producer> {
        &self.producer
    }

    pub(crate) fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Sends `record` and waits for the broker's acknowledgement.
    pub async fn send(&self, record: OutputRecord) -> Result<Delivered, HandlerError> {
        let headers = record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()));
        let outgoing = Outgoing {
            topic: &record.topic,
            partition: record.partition,
            key: record.key.as_deref(),
            payload: record.payload.as_deref(),
            headers,
        };
        match producer::send(&self.producer, outgoing, QUEUE_WAIT).await {
            Ok((partition, offset)) => Ok(Delivered { partition, offset }),
            Err(e) => Err(HandlerError::retryable(OutputError {
                topic: record.topic,
                source: e,
            })),
        }
    }
}

/// A record the broker did not take.
#[derive(Debug, thiserror::Error)]
#[error("cannot send to `{topic}`: {source}")]
struct OutputError {
    topic: String,
    source: ClientError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_get_the_consumers_secrets_not_placeholders() {
        let mut consumer = Properties::new();
        consumer
            .set("sasl.password", "pw-123")
            .set("ssl.key.password", "kp-456")
            .set("group.id", "g");
        let producer = producer_config(&consumer, []);
        assert_eq!(producer.get("sasl.password"), Some("pw-123"));
        assert_eq!(producer.get("ssl.key.password"), Some("kp-456"));
        assert_eq!(producer.get("group.id"), None);
    }
}
