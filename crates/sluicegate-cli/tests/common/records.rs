//! Records with headers, as the dead-letter tests write and read them: produce a list to one
//! partition, read a topic back from its start, its high watermarks.

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::kafka::{unique, LIMIT};
use super::read_back::{read, Until};

/// One record as it travels: key, value and headers (name, value).
pub type Record = (Vec<u8>, Vec<u8>, Vec<(String, Option<Vec<u8>>)>);

/// Counts the deliveries that failed.
#[derive(Default)]
struct Deliveries {
    failed: AtomicUsize,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            eprintln!("delivery failed: {e}");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces `records` to `topic` partition 0 and waits (bounded) for every acknowledgement.
/// (Checked by the delivery reports, not by the log end, which tansu reports in batches.)
pub fn produce_records(bootstrap: &str, topic: &str, records: &[Record]) {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create_with_context(Deliveries::default())
        .expect("producer");
    for (key, value, hs) in records {
        let mut owned = OwnedHeaders::new();
        for (name, v) in hs {
            owned = owned.insert(Header {
                key: name,
                value: v.as_deref(),
            });
        }
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(0)
                    .key(key)
                    .payload(value)
                    .headers(owned),
            )
            .expect("queued");
    }
    producer.flush(LIMIT).expect("every record acknowledged");
    let failed = producer.context().failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} of {} records not delivered",
        records.len()
    );
}

/// The high watermark of each of the first `partitions` partitions of `topic`.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, LIMIT)
                .expect("watermarks")
                .1
        })
        .collect()
}

/// Every record of `topic` (all `partitions`), read from the start until `count` arrived;
/// bounded by `LIMIT`. Records of aborted transactions are skipped (`read_committed`).
pub fn read_all(bootstrap: &str, topic: &str, partitions: i32, count: usize) -> Vec<Record> {
    read_records(bootstrap, topic, partitions, count, "read_committed")
}

/// [`read_all`] with the records of aborted (and open) transactions too.
pub fn read_all_uncommitted(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<Record> {
    read_records(bootstrap, topic, partitions, count, "read_uncommitted")
}

fn read_records(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    isolation: &str,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("records-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut out = Vec::new();
    read(&consumer, topic, Until::Count(count), LIMIT, |m| {
        let hs = m.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        });
        out.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().unwrap_or_default().to_vec(),
            hs,
        ));
        Ok(())
    })
    .expect("every record read back");
    out
}
