//! Run with: cargo run --example dead_letter
//!
//! Typed JSON handling with failure policies: orders are decoded with serde, a flaky
//! downstream is retried with backoff, a payload that is not an order and an order the handler
//! rejects go to `orders.dlq` with their diagnosis, and everything else is committed.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{CircuitBreaker, RetryPolicy};
use sluicegate::{json_handler, Consumer, EmbeddedKafka, HandlerError, Message};

#[derive(Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("orders", 2)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    for i in 0..100i64 {
        let payload = match i {
            13 => "this is not an order".to_string(),
            42 => format!(r#"{{"order_id":{i},"amount_cents":-1}}"#),
            _ => format!(r#"{{"order_id":{i},"amount_cents":{}}}"#, i * 100),
        };
        producer
            .send(
                FutureRecord::to("orders")
                    .key(&i.to_string())
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let consumer = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("dead-letter-example")
        .topic("orders")
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(5)
                .with_max_elapsed(Duration::from_secs(60)),
        )
        .handler_timeout(Duration::from_secs(10))
        .dead_letter(DeadLetter::default()) // `orders.dlq`
        .circuit_breaker(CircuitBreaker::default())
        .build(json_handler(|order: Order, _msg: Message| async move {
            if order.amount_cents < 0 {
                return Err(HandlerError::permanent(format!(
                    "order {} has a negative amount",
                    order.order_id
                )));
            }
            Ok(())
        }))?
        .spawn()?;

    let mut status = consumer.status();
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.committed.values().sum::<i64>() == 100 && s.dead_lettered == 2),
    )
    .await??;
    println!(
        "committed {} orders, {} dead-lettered to orders.dlq",
        done.committed.values().sum::<i64>(),
        done.dead_lettered
    );
    consumer.shutdown();
    consumer.wait().await?;
    Ok(())
}
