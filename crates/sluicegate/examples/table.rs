//! Run with: cargo run --example table
//!
//! A lookup table from a compacted topic: a reader from the beginning (no group, no commits)
//! applies every record of `prices` to a map, the latest value per key, a tombstone (a record
//! without a value) deleting its key. `caught_up()` says when the map holds everything the
//! topic held at start; records written later keep flowing in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::{handler_fn, Consumer, EmbeddedKafka, Message};
use tokio::sync::watch;

/// The table: product -> price. A watch channel, so that the program can wait for a change.
type Prices = Arc<watch::Sender<BTreeMap<String, String>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let kafka = EmbeddedKafka::start(1)?;
    // On a real cluster: `cleanup.policy=compact`, so that old versions are cleaned away.
    kafka.create_topic("prices", 2)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()?;
    let updates = [
        ("apple", Some("1.10")),
        ("banana", Some("0.50")),
        ("pear", Some("0.95")),
        ("apple", Some("1.20")),
        ("cherry", Some("7.00")),
        ("banana", None), // a tombstone: banana is no longer sold
    ];
    for (product, price) in updates {
        send(&producer, product, price).await?;
    }

    let prices: Prices = Arc::new(watch::channel(BTreeMap::new()).0);
    let table = prices.clone();
    let reader = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .topic("prices")
        .read_from_beginning()
        .build(handler_fn(move |msg: Message| {
            let table = table.clone();
            async move {
                let product = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
                if msg.is_tombstone() {
                    table.send_modify(|t| {
                        t.remove(&product);
                    });
                } else {
                    let price = msg.text()?.to_owned(); // not UTF-8: a decode error
                    table.send_modify(|t| {
                        t.insert(product, price);
                    });
                }
                Ok(())
            }
        }))?
        .spawn()?;

    // Every record the topic held at start is in the table now.
    tokio::time::timeout(Duration::from_secs(30), reader.caught_up()).await??;
    let table = prices.borrow().clone();
    let listed: Vec<String> = table.iter().map(|(p, v)| format!("{p} {v}")).collect();
    let deleted = if table.contains_key("banana") {
        ""
    } else {
        "; banana deleted"
    };
    println!(
        "caught up: {} prices ({}){deleted}",
        table.len(),
        listed.join(", ")
    );

    // Later records flow in as they come.
    send(&producer, "apple", Some("1.25")).await?;
    let mut changes = prices.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        changes.wait_for(|t| t.get("apple").map(String::as_str) == Some("1.25")),
    )
    .await??;
    println!("later: apple {}", prices.borrow()["apple"]);

    reader.shutdown();
    reader.wait().await?;
    Ok(())
}

async fn send(producer: &FutureProducer, key: &str, value: Option<&str>) -> anyhow::Result<()> {
    let mut record: FutureRecord<'_, str, str> = FutureRecord::to("prices").key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}
