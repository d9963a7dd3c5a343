//! Run with: cargo run --example exactly_once
//!
//! A consume-transform-produce pipeline: orders are read in batches of up to 100, and each
//! batch's invoices, sent through the consumer's transactional `Output`, are written by the
//! Kafka transaction that commits the orders' offsets (one per commit interval), and only if
//! the batch's handler call succeeds. (The embedded broker speaks the transaction protocol but
//! does not enforce it; run it against Kafka with `--bootstrap`-style settings for the real
//! guarantee.)

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::{batch_handler_fn, BatchLimits, Consumer, EmbeddedKafka, Message, OutputRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("orders", 2)?;
    kafka.create_topic("invoices", 2)?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    for i in 0..500 {
        let payload = format!(r#"{{"order_id":{i},"amount_cents":{}}}"#, i * 7 % 5_000);
        producer
            .send(
                FutureRecord::to("orders")
                    .key(&format!("customer-{}", i % 20))
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let mut builder = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("invoicing")
        .topic("orders")
        .batch_limits(BatchLimits::default().max_messages(100))
        // The same id for this instance across restarts; another id for each other instance.
        .exactly_once("invoicing-0");
    let output = builder.output()?;
    let consumer = builder
        .build_batch(batch_handler_fn(move |orders: Vec<Message>| {
            let output = output.clone();
            async move {
                for order in &orders {
                    let value: serde_json::Value = order.json()?;
                    let invoice = serde_json::json!({
                        "order_id": value["order_id"],
                        "total_cents": value["amount_cents"].as_i64().unwrap_or(0) * 120 / 100,
                    });
                    output
                        .send(
                            OutputRecord::to("invoices")
                                .key(order.key().unwrap_or_default().to_vec())
                                .payload(invoice.to_string()),
                        )
                        .await?;
                }
                Ok(())
            }
        }))?
        .spawn()?;

    let mut status = consumer.status();
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.committed.values().sum::<i64>() == 500),
    )
    .await??;
    consumer.shutdown();
    consumer.wait().await?;
    println!(
        "500 orders invoiced in {} transactions ({} aborted)",
        done.transactions_committed, done.transactions_aborted
    );
    Ok(())
}
