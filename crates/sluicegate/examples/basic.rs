//! Run with: cargo run --example basic
//!
//! Starts an embedded broker, produces 1,000 records, consumes them with a handler that
//! counts them, and shuts down once every one was handled and committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::{handler_fn, Consumer, EmbeddedKafka, Message};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("orders", 4)?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    for i in 0..1_000 {
        let payload = format!(r#"{{"order_id":{i},"amount_cents":{}}}"#, i * 7 % 5_000);
        let key = format!("customer-{}", i % 50);
        producer
            .send(
                FutureRecord::to("orders").key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let consumer = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("basic-example")
        .topic("orders")
        .build(handler_fn(move |msg: Message| {
            let counter = counter.clone();
            async move {
                // A value that is not JSON is a decode error: never retried. With no
                // dead-letter topic it stops its partition there, visibly (README, "When a
                // record fails"); examples/dead_letter.rs sets one.
                let order: serde_json::Value = msg.json()?;
                tracing::debug!(%order, partition = msg.partition(), "handled");
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }))?
        .spawn()?;

    // Wait until the group has committed every record: 1,000 over the four partitions.
    let mut status = consumer.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.committed.values().sum::<i64>() == 1_000),
    )
    .await??;
    consumer.shutdown();
    consumer.wait().await?;
    println!(
        "handled {} records, all committed",
        handled.load(Ordering::Relaxed)
    );
    Ok(())
}
