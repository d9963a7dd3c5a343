//! The producer behind [`Output`](crate::Output) and the dead-letter writer: creation from
//! [`Properties`], a send that waits for the broker's acknowledgement, and the topics the
//! cluster knows.

use std::future::Future;
use std::time::Duration;

use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use super::client::{rdkafka_config, ProducerLog};
use super::error::{client_error, kafka_error, CommitError};
use crate::properties::Properties;
use crate::{ClientError, Error};

/// The producer behind [`Output`](crate::Output) and the dead-letter writer; exactly-once
/// mode runs its transactions.
pub(crate) type Producer = FutureProducer<ProducerLog>;

/// A producer with `props`, reporting to `log`.
pub(crate) fn create(props: &Properties, log: ProducerLog) -> Result<Producer, Error> {
    rdkafka_config(props)
        .create_with_context(log)
        .map_err(Error::from_client_creation)
}

/// A record to send: `headers` are (name, value) pairs, in order.
pub(crate) struct Outgoing<'a, H> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: H,
}

/// Sends `record` and waits for the broker's acknowledgement (at most `queue_wait` in the
/// producer's queue when it is full): the record's partition and offset.
pub(crate) fn send<'a, H>(
    producer: &'a Producer,
    record: Outgoing<'a, H>,
    queue_wait: Duration,
) -> impl Future<Output = Result<(i32, i64), ClientError>> + Send + 'a
where
    H: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
{
    // The record is made before the future, which so holds no header iterator: the
    // iterators' closures would make the callers' futures not `Send`.
    let headers = record.headers.into_iter();
    let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.size_hint().0);
    for (key, value) in headers {
        kafka_headers = kafka_headers.insert(KafkaHeader { key, value });
    }
    let mut out = FutureRecord::<[u8], [u8]>::to(record.topic).headers(kafka_headers);
    if let Some(p) = record.partition {
        out = out.partition(p);
    }
    if let Some(k) = record.key {
        out = out.key(k);
    }
    if let Some(v) = record.payload {
        out = out.payload(v);
    }
    async move {
        match producer.send(out, queue_wait).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => Err(client_error(e)),
        }
    }
}

/// A topic as the cluster's metadata shows it.
pub(crate) struct TopicInfo {
    pub name: String,
    pub partitions: usize,
    /// The broker reported an error for it (such as: it does not exist).
    pub errored: bool,
}

/// Every topic the cluster knows, as `producer`'s connection sees it.
pub(crate) fn topics(producer: &Producer, timeout: Duration) -> Result<Vec<TopicInfo>, Error> {
    let metadata = producer
        .client()
        .fetch_metadata(None, timeout)
        .map_err(kafka_error)?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| TopicInfo {
            name: t.name().to_owned(),
            partitions: t.partitions().len(),
            errored: t.error().is_some(),
        })
        .collect())
}

/// The fatal error `producer` is in, if any (such as being fenced by a newer instance with its
/// transactional id): it can produce nothing more.
pub(crate) fn fatal_error(producer: &Producer) -> Option<ClientError> {
    producer.client().fatal_error().map(|(code, reason)| {
        ClientError::new(
            Some(crate::ErrorCode::of(code)),
            format!("the producer failed fatally: {reason}"),
        )
    })
}

/// Fences earlier producers with this producer's transactional id and aborts what they left
/// open; blocks until the transaction coordinator answers, at most `timeout`.
pub(crate) fn init_transactions(producer: &Producer, timeout: Duration) -> Result<(), ClientError> {
    producer.init_transactions(timeout).map_err(client_error)
}

/// Opens a transaction.
pub(crate) fn begin_transaction(producer: &Producer) -> Result<(), ClientError> {
    producer.begin_transaction().map_err(client_error)
}

/// Commits the open transaction: what it holds becomes visible to `read_committed` readers.
pub(crate) fn commit_transaction(
    producer: &Producer,
    timeout: Duration,
) -> Result<(), CommitError> {
    producer
        .commit_transaction(timeout)
        .map_err(CommitError::of)
}

/// Aborts the open transaction: what it holds is never visible to `read_committed` readers.
pub(crate) fn abort_transaction(producer: &Producer, timeout: Duration) -> Result<(), ClientError> {
    producer.abort_transaction(timeout).map_err(client_error)
}
