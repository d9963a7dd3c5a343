//! Bulk producing for the demo and the benchmarks: compressed, batched, every delivery counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// How long the final flush may wait for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Producer settings for bulk loads. Compression and large batches keep the data small and
/// the record batches few, which is what librdkafka's mock cluster keeps within bounds (per
/// partition at most 5 MiB of stored batches and 100,000 batches, dropping the oldest beyond).
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("acks", "all");
    config
}

/// What a produce run achieved, by delivery report.
#[derive(Debug, Default, Clone)]
pub struct Produced {
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records that failed for good.
    pub failed: u64,
    pub first_error: Option<String>,
    pub secs: f64,
}

/// Counts delivery reports.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

#[derive(Clone, Default)]
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Produces `count` records to `topic`, record `i` being `record(i)` = (key, value), and waits
/// for every delivery report (bounded). Blocking: call it from a thread of its own.
pub fn produce_all<F>(bootstrap: &str, topic: &str, count: u64, mut record: F) -> Result<Produced>
where
    F: FnMut(u64) -> (String, Vec<u8>),
{
    let context = Counting::default();
    let producer: BaseProducer<Counting> = producer_config(bootstrap)
        .create_with_context(context.clone())
        .context("cannot create the producer")?;
    let started = Instant::now();
    for i in 0..count {
        let (key, value) = record(i);
        let mut next = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(next) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serving delivery reports makes room.
                    producer.poll(Duration::from_millis(100));
                    next = back;
                }
                Err((e, _)) => {
                    return Err(e).with_context(|| format!("cannot produce record {i} to {topic}"))
                }
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .with_context(|| format!("not every record was delivered within {FLUSH_TIMEOUT:?}"))?;
    let d = &context.0;
    Ok(Produced {
        delivered: d.delivered.load(Relaxed),
        failed: d.failed.load(Relaxed),
        first_error: d.first_error.lock().ok().and_then(|e| e.clone()),
        secs: started.elapsed().as_secs_f64(),
    })
}
