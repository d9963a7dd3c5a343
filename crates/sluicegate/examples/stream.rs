//! Run with: cargo run --example stream
//!
//! The consumer's messages as a stream, for a program that writes its own loop: starts an
//! embedded broker, produces 1,000 orders (one of them not JSON), takes them with
//! `ConsumerBuilder::messages`, acks each order it can read and fails the one it cannot (a
//! decode error: dead-lettered, never retried), and stops once everything is committed.

use std::time::Duration;

use futures::StreamExt as _;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::{Consumer, EmbeddedKafka, HandlerError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("orders", 4)?;
    let orders = (0..1_000).map(|i| {
        let payload = match i {
            500 => "not json".to_string(),
            _ => format!(r#"{{"order_id":{i},"amount_cents":{}}}"#, i * 7 % 5_000),
        };
        (Some(format!("customer-{}", i % 50)), Some(payload))
    });
    kafka.produce("orders", None, orders)?;

    let mut messages = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("stream-example")
        .topic("orders")
        .dead_letter(DeadLetter::default())
        .messages()?;
    let status = messages.handle().status();
    let mut cents = 0;
    let mut orders = 0;
    let mut all_committed = status.clone();
    let mut done = std::pin::pin!(tokio::time::timeout(
        Duration::from_secs(30),
        all_committed.wait_for(|s| s.committed.values().sum::<i64>() == 1_000),
    ));
    loop {
        tokio::select! {
            delivery = messages.next() => {
                let Some(delivery) = delivery else { break };
                let delivery = delivery?;
                match delivery.json::<serde_json::Value>() {
                    Ok(order) => {
                        cents += order["amount_cents"].as_i64().unwrap_or(0);
                        orders += 1;
                        delivery.ack();
                    }
                    Err(e) => delivery.finish(Err(HandlerError::from(e))),
                }
            }
            committed = &mut done => {
                committed??;
                break;
            }
        }
    }
    messages.shutdown();
    while let Some(delivery) = messages.next().await {
        delivery?.ack();
    }
    println!(
        "{orders} orders, {cents} cents in all; {} dead-lettered; all committed",
        status.current().dead_lettered
    );
    Ok(())
}
