//! Run with: cargo run --example metrics
//!
//! Starts an embedded broker and a consumer that serves `/metrics`, `/health/live` and
//! `/health/ready`, counts a metric of its own in the same registry, and prints what a scrape
//! and the health check say once 1,000 records are handled and committed.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::metrics::prometheus_client::metrics::counter::Counter;
use sluicegate::metrics::Metrics;
use sluicegate::{handler_fn, Consumer, EmbeddedKafka, Message};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("orders", 4)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    for i in 0..1_000 {
        let payload = format!(r#"{{"order_id":{i},"amount_cents":{}}}"#, i * 7 % 5_000);
        producer
            .send(
                FutureRecord::<(), _>::to("orders").payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let metrics = Metrics::new();
    let revenue = Counter::<u64>::default();
    metrics.register(
        "shop_revenue_cents",
        "Revenue of handled orders",
        revenue.clone(),
    );
    let consumer = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("metrics-example")
        .topic("orders")
        .metrics(metrics.clone())
        .http_endpoint(([127, 0, 0, 1], 0).into())
        .build(handler_fn(move |msg: Message| {
            let revenue = revenue.clone();
            async move {
                let order: serde_json::Value = msg.json()?;
                revenue.inc_by(order["amount_cents"].as_u64().unwrap_or(0));
                Ok(())
            }
        }))?
        .spawn()?;
    if let Some(addr) = consumer.http_addr() {
        println!("try: curl http://{addr}/metrics  or  curl http://{addr}/health/ready");
    }

    let mut status = consumer.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.committed.values().sum::<i64>() == 1_000),
    )
    .await??;
    let scrape = metrics.encode_prometheus();
    for line in scrape.lines().filter(|l| {
        l.starts_with("sluicegate_messages_processed_total") || l.starts_with("shop_revenue")
    }) {
        println!("{line}");
    }
    let health = consumer.health();
    println!("live: {}, ready: {}", health.live, health.ready);
    consumer.shutdown();
    consumer.wait().await?;
    Ok(())
}
