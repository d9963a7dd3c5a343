//! [`Output`]: the producer handlers write their results with. A handler awaits each send, so
//! an input is finished (and may be committed) only once the broker has acknowledged every
//! record it produced.
//!
//! In exactly-once mode a send does not reach the broker at once: it joins the outputs of the
//! handler call that made it ([`OutputScope`]). When the call fails they are dropped, so a
//! failed attempt's outputs are never written, not even into an aborted transaction; when it
//! succeeds they wait beside their input's offset, and the transaction that commits that
//! offset writes them (see the runtime's commit step).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
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
    pub fn header(self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.header_value(key.into(), Some(value.into()))
    }

    /// Adds a header whose value may be null.
    pub(crate) fn header_value(mut self, key: String, value: Option<Bytes>) -> Self {
        self.headers.push(Header { key, value });
        self
    }
}

/// Where a sent record landed.
///
/// In exactly-once mode a record is written later, by the transaction that commits its input,
/// so [`send`](Output::send) cannot know where it lands: both fields are then `-1` (the
/// partition given with [`OutputRecord::partition`], if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

tokio::task_local! {
    /// The outputs of the handler call running on this task, in exactly-once mode.
    static CALL: OutputScope;
    /// The outputs of the messages a lane is settling: those of their successful calls and
    /// their dead letters, taken when they settle.
    static SETTLING: RefCell<Vec<OutputRecord>>;
}

/// The outputs of one handler call in exactly-once mode: what [`Output::send`] adds to, written
/// with the input's offset if the call succeeds and dropped if it fails.
///
/// `send` finds the scope of the call running on its task by itself. A handler that sends from
/// another task (one it spawned, or a language binding's) takes the scope with
/// [`current`](Self::current) inside the call and sends with [`Output::send_in`]. Once the
/// call has ended, its scope takes nothing more.
#[derive(Clone, Debug, Default)]
pub struct OutputScope(Arc<Mutex<Option<Vec<OutputRecord>>>>);

impl OutputScope {
    /// The scope of the handler call running on this task; `None` outside one, or when the
    /// consumer is not in exactly-once mode.
    pub fn current() -> Option<OutputScope> {
        CALL.try_with(Clone::clone).ok()
    }

    fn open() -> Self {
        OutputScope(Arc::new(Mutex::new(Some(Vec::new()))))
    }

    /// Adds `record`; `false` once the call has ended.
    fn add(&self, record: OutputRecord) -> bool {
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(records) => {
                records.push(record);
                true
            }
            None => false,
        }
    }

    /// Ends the call: what it sent, and nothing is taken after.
    fn close(&self) -> Vec<OutputRecord> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }
}

/// Runs one handler call (`call`) with a scope of its own for its outputs, kept for the
/// messages' commit when `succeeded` says so of its result.
pub(crate) async fn in_call_scope<T>(
    call: impl std::future::Future<Output = T>,
    succeeded: impl FnOnce(&T) -> bool,
) -> T {
    let scope = OutputScope::open();
    let result = CALL.scope(scope.clone(), call).await;
    let records = scope.close();
    if succeeded(&result) && !records.is_empty() {
        keep_for_commit(records);
    }
    result
}

/// Adds `records` to the outputs of the messages being settled on this task.
pub(crate) fn keep_for_commit(records: impl IntoIterator<Item = OutputRecord>) {
    // Outside a settling lane (unit tests of the layers) there is nothing to keep them for.
    let _ = SETTLING.try_with(|kept| kept.borrow_mut().extend(records));
}

/// Runs `settle` (the policy stack on some messages) collecting the outputs its calls keep.
pub(crate) async fn settling<T>(settle: impl std::future::Future<Output = T>) -> T {
    SETTLING.scope(RefCell::new(Vec::new()), settle).await
}

/// The outputs kept on this task since the last take: those of the messages settled now.
pub(crate) fn take_kept() -> Vec<OutputRecord> {
    SETTLING
        .try_with(|kept| std::mem::take(&mut *kept.borrow_mut()))
        .unwrap_or_default()
}

/// The consumer's producer, for handlers to write results with; get it from
/// [`ConsumerBuilder::output`](crate::ConsumerBuilder::output) and move clones into the handler.
///
/// [`send`](Self::send) returns once the broker has acknowledged the record (`acks=all`,
/// idempotent). Await it inside the handler: the input is finished only when the handler
/// returns, so it is never committed before its outputs are safe. A failed send is a retryable
/// [`HandlerError`], so `?` hands it to the retry policy. In exactly-once mode `send` returns at
/// once: the record joins the handler call's [`OutputScope`] and is written by the transaction
/// that commits the input's offset, and only if the call succeeds.
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

    /// Sends `record` and waits for the broker's acknowledgement. In exactly-once mode, adds
    /// it to the outputs of the handler call running on this task (see [`OutputScope`]); sent
    /// from outside a handler call, it fails with a [`Permanent`](crate::ErrorKind::Permanent)
    /// error.
    pub async fn send(&self, record: OutputRecord) -> Result<Delivered, HandlerError> {
        if self.transactional {
            return match OutputScope::current() {
                Some(scope) => self.send_in(&scope, record).await,
                None => Err(HandlerError::permanent(NoCall {
                    topic: record.topic,
                })),
            };
        }
        match send(&self.producer, &record).await {
            Ok((partition, offset)) => Ok(Delivered { partition, offset }),
            Err(e) => Err(HandlerError::retryable(OutputError {
                topic: record.topic,
                source: e,
            })),
        }
    }
}

impl Output {
    /// Sends `record` as an output of the handler call whose `scope` it is (taken with
    /// [`OutputScope::current`] inside the call), from any task. Outside exactly-once mode the
    /// same as [`send`](Self::send).
    pub async fn send_in(
        &self,
        scope: &OutputScope,
        record: OutputRecord,
    ) -> Result<Delivered, HandlerError> {
        if !self.transactional {
            return Box::pin(self.send(record)).await;
        }
        let delivered = Delivered {
            partition: record.partition.unwrap_or(-1),
            offset: -1,
        };
        let topic = record.topic.clone();
        match scope.add(record) {
            true => Ok(delivered),
            false => Err(HandlerError::permanent(CallEnded { topic })),
        }
    }
}

/// Sends `record` with `producer` and waits for the broker's acknowledgement: its partition
/// and offset.
pub(crate) async fn send(
    producer: &Producer,
    record: &OutputRecord,
) -> Result<(i32, i64), ClientError> {
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
    producer::send(producer, outgoing, QUEUE_WAIT).await
}

impl OutputRecord {
    /// The value as text, for tests.
    #[cfg(test)]
    pub(crate) fn payload_text(&self) -> String {
        String::from_utf8_lossy(self.payload.as_deref().unwrap_or_default()).into_owned()
    }

    /// About how many bytes the record holds: what bounds the outputs waiting for a commit.
    pub(crate) fn size(&self) -> usize {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum();
        self.topic.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.payload.as_ref().map_or(0, |p| p.len())
            + header_bytes
    }
}

/// An exactly-once output sent outside a handler call.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot send to `{topic}`: in exactly-once mode outputs are sent from inside a handler \
     call (from another task, take OutputScope::current() in the call and use Output::send_in)"
)]
struct NoCall {
    topic: String,
}

/// An exactly-once output sent after its handler call ended.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot send to `{topic}`: the handler call it belongs to has ended (in exactly-once mode \
     an output is written only with the input of the call that sent it: await sends inside it)"
)]
struct CallEnded {
    topic: String,
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
    use crate::ErrorKind;

    /// A transactional output; no broker is needed, nothing reaches one.
    fn transactional() -> Output {
        let mut config = Properties::new();
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("transactional.id", "unit");
        Output::new(&config, true, None).unwrap()
    }

    /// What a lane keeps of one handler call that sends `n` records and answers `ok`.
    async fn kept_of_a_call(output: &Output, n: usize, ok: bool) -> Vec<String> {
        settling(async {
            in_call_scope(
                async {
                    for i in 0..n {
                        let delivered = output
                            .send(OutputRecord::to("out").payload(i.to_string()))
                            .await
                            .unwrap();
                        assert_eq!((delivered.partition, delivered.offset), (-1, -1));
                    }
                    ok
                },
                |ok| *ok,
            )
            .await;
            take_kept().iter().map(OutputRecord::payload_text).collect()
        })
        .await
    }

    #[tokio::test]
    async fn a_calls_outputs_are_kept_if_it_succeeds_and_dropped_if_it_fails() {
        let output = transactional();
        assert_eq!(kept_of_a_call(&output, 2, true).await, ["0", "1"]);
        assert!(kept_of_a_call(&output, 2, false).await.is_empty());
    }

    #[tokio::test]
    async fn exactly_once_sends_outside_a_call_or_after_it_fail_clearly() {
        let output = transactional();
        let outside = output.send(OutputRecord::to("out")).await.unwrap_err();
        assert_eq!(outside.kind(), ErrorKind::Permanent);
        assert!(
            outside.to_string().contains("OutputScope::current"),
            "{outside}"
        );

        let scope = in_call_scope(async { OutputScope::current() }, |_| true)
            .await
            .expect("a call has a scope");
        let late = output
            .send_in(&scope, OutputRecord::to("out"))
            .await
            .unwrap_err();
        assert!(late.to_string().contains("has ended"), "{late}");
    }

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
