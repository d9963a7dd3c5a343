//! Bulk producing for the demo and the benchmarks: compressed, batched, every delivery counted.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::util::IntoOpaque;
use rdkafka::{ClientConfig, ClientContext};
use sluicegate::config::ClientKind;
use sluicegate::security::ClientSecurity;

use crate::settings::Connection;
use crate::workload::records::due;

/// How long the final flush may wait for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Producer settings for bulk loads, connected as `connection` says (its settings win over
/// these defaults). Compression and large batches keep the data small and the record batches
/// few, which is what librdkafka's mock cluster keeps within bounds (per partition at most
/// 5 MiB of stored batches and 100,000 batches, dropping the oldest beyond).
pub fn producer_config(connection: &Connection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("acks", "all");
    let connected = connection.client_config(ClientKind::Producer);
    // `config_map` shows secrets as a placeholder: copy each value through `get`.
    for key in connected.config_map().keys() {
        if let Some(value) = connected.get(key) {
            config.set(*key, value);
        }
    }
    config
}

/// What a produce run achieved, by delivery report.
#[derive(Debug, Default, Clone)]
pub struct Produced {
    /// Records handed to the producer.
    pub sent: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Records that failed for good.
    pub failed: u64,
    pub first_error: Option<String>,
    pub secs: f64,
}

/// Delivery failures kept for reports.
pub const MAX_KEPT_FAILURES: usize = 20;

/// Delivery reports counted, with the first failures described.
#[derive(Default)]
pub struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Deliveries {
    /// Records the broker acknowledged.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Relaxed)
    }

    /// Records that failed for good.
    pub fn failed(&self) -> u64 {
        self.failed.load(Relaxed)
    }

    /// The first failures (at most [`MAX_KEPT_FAILURES`]).
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// What a delivery report is about, as a failure names it.
pub trait Subject: IntoOpaque {
    /// Describes the failure `error` of this record.
    fn describe(&self, error: &KafkaError) -> String;
}

impl Subject for () {
    fn describe(&self, error: &KafkaError) -> String {
        error.to_string()
    }
}

/// A producer context that counts delivery reports into [`Deliveries`]; each record carries a
/// [`Subject`] that names it in failures. Its client's TLS and authentication failures and
/// OAUTHBEARER tokens go through the [`ClientSecurity`].
pub struct DeliveryLog<S>(pub Arc<Deliveries>, ClientSecurity, PhantomData<fn(S)>);

impl<S> DeliveryLog<S> {
    /// A log of a producer with `security`.
    pub fn new(security: ClientSecurity) -> Self {
        DeliveryLog(Arc::default(), security, PhantomData)
    }
}

impl<S> Clone for DeliveryLog<S> {
    fn clone(&self) -> Self {
        DeliveryLog(self.0.clone(), self.1.clone(), PhantomData)
    }
}

impl<S> ClientContext for DeliveryLog<S> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        self.1.observe(error, reason);
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.1.generate_oauth_token()
    }
}

impl<S: Subject> ProducerContext for DeliveryLog<S> {
    type DeliveryOpaque = S;

    fn delivery(&self, result: &DeliveryResult<'_>, subject: S) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Relaxed);
                if let Ok(mut failures) = self.0.failures.lock() {
                    if failures.len() < MAX_KEPT_FAILURES {
                        failures.push(subject.describe(e));
                    }
                }
            }
        }
    }
}

/// Hands `record` to `producer`, serving delivery reports while librdkafka's local queue is
/// full to make room.
pub fn send_waiting<C, K, P>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    C: ProducerContext,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(100));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// How far record `seq` is ahead of a steady `rate` per second, `elapsed` after the start;
/// `None` unless it is at least a millisecond ahead (finer sleeps cost more than they pace, so
/// records go out in bursts of at most a millisecond's worth).
pub fn pace(seq: u64, rate: u64, elapsed: Duration) -> Option<Duration> {
    due(seq, rate)
        .checked_sub(elapsed)
        .filter(|ahead| *ahead >= Duration::from_millis(1))
}

/// How much a produce run writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// This many records.
    Count(u64),
    /// As many as fit in this long (with a rate: `rate * duration`).
    For(Duration),
}

/// Produces records `record(0)`, `record(1)`, ... to `topic` with a producer of `config` (one
/// of `connection`'s [`producer_config`]), at most `rate` per second, until `amount` is
/// reached, and waits for every delivery report (bounded). Blocking: call it from a thread of
/// its own.
pub fn produce_paced<F>(
    connection: &Connection,
    config: &ClientConfig,
    topic: &str,
    amount: Amount,
    rate: Option<u64>,
    mut record: F,
) -> Result<Produced>
where
    F: FnMut(u64) -> (String, Vec<u8>),
{
    let context = DeliveryLog::<()>::new(connection.security(config));
    let producer: BaseProducer<DeliveryLog<()>> = config
        .create_with_context(context.clone())
        .context("cannot create the producer")?;
    let started = Instant::now();
    let mut i = 0;
    loop {
        let more = match amount {
            Amount::Count(n) => i < n,
            Amount::For(d) => started.elapsed() < d,
        };
        if !more {
            break;
        }
        if let Some(ahead) = rate.and_then(|r| pace(i, r, started.elapsed())) {
            std::thread::sleep(ahead);
        }
        let (key, value) = record(i);
        send_waiting(&producer, BaseRecord::to(topic).key(&key).payload(&value))
            .with_context(|| format!("cannot produce record {i} to {topic}"))?;
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
        i += 1;
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .with_context(|| format!("not every record was delivered within {FLUSH_TIMEOUT:?}"))?;
    let d = &context.0;
    Ok(Produced {
        sent: i,
        delivered: d.delivered(),
        failed: d.failed(),
        first_error: d.failures().into_iter().next(),
        secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pacing_holds_back_only_records_ahead_of_the_rate() {
        let ms = Duration::from_millis;
        assert_eq!(pace(100, 1_000, ms(50)), Some(ms(50)));
        assert_eq!(pace(100, 1_000, ms(100)), None);
        assert_eq!(pace(100, 1_000, ms(150)), None);
        assert_eq!(pace(0, 1_000, ms(0)), None);
    }

    proptest! {
        /// A producer that sleeps whenever `pace` says so never runs more than a millisecond's
        /// worth of records ahead of the rate, and never waits once it is behind.
        #[test]
        fn paced_records_never_run_ahead_of_the_rate(
            rate in 1u64..1_000_000,
            seq in 0u64..10_000_000,
            elapsed_us in 0u64..100_000_000,
        ) {
            let elapsed = Duration::from_micros(elapsed_us);
            let due = Duration::from_secs_f64(seq as f64 / rate as f64);
            match pace(seq, rate, elapsed) {
                Some(wait) => {
                    prop_assert!(wait >= Duration::from_millis(1));
                    prop_assert_eq!(elapsed + wait, due);
                }
                None => prop_assert!(due < elapsed + Duration::from_millis(1)),
            }
        }
    }
}
