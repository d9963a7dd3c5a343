//! Run with: cargo run --example idempotency
//!
//! A user layer: an idempotency check keyed by topic, partition and offset, added with
//! `ConsumerBuilder::layer`. A first consumer charges 100 payments and crashes before it
//! commits anything (`abort`), so a second consumer of the group gets all 100 again: the layer
//! finds each one done already and skips it, and every payment is charged once. A payment whose
//! first attempt fails is retried through the layer, which lets it in again since it was not
//! done.
//!
//! The set of handled records stands for a table in the database the handler writes to (with a
//! unique key on topic, partition and offset, written in the same transaction as the effect).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{
    handler_fn, Consumer, ConsumerHandle, EmbeddedKafka, Handler, HandlerError, HandlerResult,
    Layer, Message,
};
use tokio::sync::watch;

/// Where a record sits in Kafka: what makes it one record, whatever its payload.
type RecordId = (String, i32, i64);

/// The idempotency layer: skips records handled successfully before, by anyone sharing `done`.
#[derive(Clone, Default)]
struct Idempotent {
    done: Arc<Mutex<HashSet<RecordId>>>,
    skipped: Arc<AtomicU64>,
}

/// A handler wrapped by [`Idempotent`].
struct IdempotentHandler<H> {
    inner: H,
    layer: Idempotent,
}

impl<H> Layer<H> for Idempotent {
    type Handler = IdempotentHandler<H>;

    fn layer(&self, inner: H) -> Self::Handler {
        IdempotentHandler {
            inner,
            layer: self.clone(),
        }
    }
}

impl<H: Handler> Handler for IdempotentHandler<H> {
    async fn handle(&self, message: Message) -> HandlerResult {
        let id = (
            message.topic().to_string(),
            message.partition(),
            message.offset(),
        );
        if self.layer.done.lock().unwrap().contains(&id) {
            self.layer.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(HandlerError::skip(format!(
                "{}/{} at offset {} was handled before",
                id.0, id.1, id.2
            )));
        }
        // Only a success marks the record done: a failed attempt is let in again on retry.
        self.inner.handle(message).await?;
        self.layer.done.lock().unwrap().insert(id);
        Ok(())
    }
}

/// The payment service: charges a payment, counts charges per payment, and fails the first
/// attempt of payment 7.
#[derive(Clone)]
struct Payments {
    charges: Arc<Mutex<BTreeMap<String, u32>>>,
    flaked: Arc<AtomicU64>,
    charged: watch::Sender<usize>,
}

impl Payments {
    fn charge(&self, msg: &Message) -> HandlerResult {
        let payment = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
        if payment == "payment-7" && self.flaked.fetch_add(1, Ordering::Relaxed) == 0 {
            return Err(HandlerError::retryable("payment service unavailable"));
        }
        let mut charges = self.charges.lock().unwrap();
        *charges.entry(payment).or_default() += 1;
        self.charged.send_replace(charges.len());
        Ok(())
    }
}

/// A consumer of the `payments` group that charges through the idempotency layer.
fn consumer(
    kafka: &EmbeddedKafka,
    idempotent: &Idempotent,
    payments: &Payments,
    commit_interval: Duration,
) -> anyhow::Result<ConsumerHandle> {
    let payments = payments.clone();
    Ok(Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("payments")
        .topic("payments")
        .commit_interval(commit_interval)
        // A crashed member holds its partitions until its session times out: keep that short.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .retry_policy(RetryPolicy::default().with_backoff(Backoff {
            initial: Duration::from_millis(10),
            ..Backoff::default()
        }))
        .layer(idempotent.clone())
        .build(handler_fn(move |msg: Message| {
            let charged = payments.charge(&msg);
            async move { charged }
        }))?
        .spawn()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("payments", 2)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    for i in 0..100 {
        let payload = format!("payment-{i}");
        producer
            .send(
                FutureRecord::to("payments").key(&payload).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let idempotent = Idempotent::default();
    let (charged, mut watch_charged) = watch::channel(0);
    let payments = Payments {
        charges: Arc::default(),
        flaked: Arc::default(),
        charged,
    };
    let limit = Duration::from_secs(30);

    // The first consumer charges everything, and crashes before its first commit.
    let first = consumer(&kafka, &idempotent, &payments, Duration::from_secs(3600))?;
    tokio::time::timeout(limit, watch_charged.wait_for(|n| *n == 100)).await??;
    first.abort();
    let _ = first.wait().await;

    // The second one gets every payment again, and commits them all.
    let second = consumer(&kafka, &idempotent, &payments, Duration::from_millis(100))?;
    let mut status = second.status();
    tokio::time::timeout(
        limit,
        status.wait_for(|s| s.committed.values().sum::<i64>() == 100),
    )
    .await??;
    second.shutdown();
    second.wait().await?;

    let charges = payments.charges.lock().unwrap();
    let once = charges.values().all(|&n| n == 1);
    anyhow::ensure!(
        charges.len() == 100 && once,
        "payments charged more than once: {charges:?}"
    );
    println!(
        "charged {} payments, each once; {} redelivered payments skipped by the idempotency \
         layer; payment-7 retried through it after {} failed attempt",
        charges.len(),
        idempotent.skipped.load(Ordering::Relaxed),
        payments.flaked.load(Ordering::Relaxed) - 1,
    );
    Ok(())
}
