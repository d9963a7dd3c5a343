// The README's first example ("Use it"): consumes `orders` as group `billing` from the broker
// in KAFKA_BOOTSTRAP_SERVERS (default localhost:9092) until Ctrl-C.
// Run with: cargo run --example quickstart
// tests/quickstart.rs runs this file against a broker and checks that the README shows it.
use sluicegate::{dead_letter::DeadLetter, handler_fn, Consumer, Message};

#[tokio::main]
async fn main() -> Result<(), sluicegate::Error> {
    tracing_subscriber::fmt::init(); // logs each record that fails, and what was done with it
    let brokers = std::env::var("KAFKA_BOOTSTRAP_SERVERS");
    Consumer::builder()
        .bootstrap_servers(brokers.as_deref().unwrap_or("localhost:9092"))
        .group_id("billing")
        .topic("orders")
        .dead_letter(DeadLetter::default()) // records that fail for good go to `orders.dlq`
        .build(handler_fn(|msg: Message| async move {
            let order: serde_json::Value = msg.json()?; // not JSON: dead-lettered, not retried
            println!("order {order}");
            Ok(())
        }))?
        .run() // until SIGINT or SIGTERM; then drains, commits and leaves the group
        .await
}
