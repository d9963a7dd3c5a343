//! Run with: cargo run --example key_ordering
//!
//! A handler that takes 20 ms per message (a call to a slow service). In key mode, messages of
//! the same key run in order while different keys run in parallel, even within one partition:
//! 4,000 messages over 2 partitions finish in well under a second of handler time per key,
//! where partition ordering would need 4,000 x 20 ms / 2 = 40 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::{handler_fn, Consumer, EmbeddedKafka, Message, Ordering};

const MESSAGES: i64 = 4_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kafka = EmbeddedKafka::start(1)?;
    kafka.create_topic("payments", 2)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    for i in 0..MESSAGES {
        let key = format!("account-{}", i % 200);
        let payload = format!(r#"{{"seq":{i}}}"#);
        producer
            .send(
                FutureRecord::to("payments").key(&key).payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    // The last sequence number seen per key: each key's messages must arrive in order.
    let last_seen: Arc<Mutex<HashMap<Vec<u8>, i64>>> = Arc::default();
    let seen = last_seen.clone();
    let started = Instant::now();
    let consumer = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id("key-ordering-example")
        .topic("payments")
        .ordering(Ordering::Key)
        .max_in_flight(400)
        .build(handler_fn(move |msg: Message| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await; // the slow service
                let seq = msg.json::<serde_json::Value>()?["seq"]
                    .as_i64()
                    .unwrap_or(-1);
                let key = msg.key().unwrap_or_default().to_vec();
                let previous = seen.lock().unwrap().insert(key, seq);
                assert!(previous < Some(seq), "key order broken");
                Ok(())
            }
        }))?
        .spawn()?;

    let mut status = consumer.status();
    tokio::time::timeout(
        Duration::from_secs(120),
        status.wait_for(|s| s.committed.values().sum::<i64>() == MESSAGES),
    )
    .await??;
    let elapsed = started.elapsed();
    consumer.shutdown();
    consumer.wait().await?;
    println!(
        "{MESSAGES} messages at 20 ms each, in order per key, in {:.1} s (group join included)",
        elapsed.as_secs_f64()
    );
    Ok(())
}
