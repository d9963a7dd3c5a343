//! # Sluicegate
//!
//! A Kafka consumer framework and worker runtime. You write a function that handles one
//! message; Sluicegate polls, dispatches, retries, tracks offsets and commits, so that:
//!
//! - **no message is lost**: an offset is committed only when that message and every earlier
//!   one of its partition is finished (at-least-once);
//! - **duplicates are bounded** to what was in flight or finished-but-uncommitted at a crash;
//! - **slow handlers never get the consumer evicted**: polling runs on its own thread, and
//!   partitions whose buffers fill are paused, not the poll loop;
//! - **order is kept where asked** ([`Ordering`]: per partition, per key, or none).
//!
//! ```no_run
//! use sluicegate::{dead_letter::DeadLetter, handler_fn, Consumer, Message};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), sluicegate::Error> {
//!     tracing_subscriber::fmt::init(); // logs each record that fails, and what was done with it
//!     let brokers = std::env::var("KAFKA_BOOTSTRAP_SERVERS");
//!     Consumer::builder()
//!         .bootstrap_servers(brokers.as_deref().unwrap_or("localhost:9092"))
//!         .group_id("billing")
//!         .topic("orders")
//!         .dead_letter(DeadLetter::default()) // records that fail for good go to `orders.dlq`
//!         .build(handler_fn(|msg: Message| async move {
//!             let order: serde_json::Value = msg.json()?; // not JSON: dead-lettered, not retried
//!             println!("order {order}");
//!             Ok(())
//!         }))?
//!         .run() // until SIGINT or SIGTERM; then drains, commits and leaves the group
//!         .await
//! }
//! ```
//!
//! The flow, one module per step: `runtime` (poll loop, rebalance callbacks) ->
//! [`dispatch`] (ordering, pause/resume) -> lanes running the [`Handler`] wrapped in
//! [`policy`] and in the user's [`layer`]s -> [`OffsetTracker`] -> `commit`.
//! [`EmbeddedKafka`] runs a broker in-process for demos and tests.
#![deny(missing_docs)]
#![deny(unsafe_code)] // allowed in `kafka::fetch_queue` only

mod commit;
pub mod config;
mod config_error;
pub mod dead_letter;
pub mod dispatch;
mod error;
mod handler;
mod health;
mod kafka;
pub mod layer;
mod message;
pub mod metrics;
mod offsets;
mod output;
pub mod policy;
mod properties;
#[cfg(test)]
mod readme;
mod runtime;
mod secret;
pub mod security;
pub mod settings;
mod status;
mod upcoming;

pub use config::GroupProtocol;
pub use dispatch::{BatchLimits, BufferLimits, Ordering};
pub use error::{ClientError, Error, ErrorCode};
pub use handler::{
    batch_handler_fn, handler_fn, json_handler, BatchHandler, BatchHandlerFn, Batched, ErrorKind,
    Handler, HandlerError, HandlerFn, HandlerResult, JsonHandler, Work,
};
pub use health::{Check, Health, LIVENESS_STALL};
/// rdkafka clients of your own with Sluicegate's settings and security (the
/// `rdkafka-interop` feature).
#[cfg(feature = "rdkafka-interop")]
pub use kafka::interop;
pub use kafka::{ApiKey, EmbeddedKafka};
pub use layer::Layer;
pub use message::{DecodeError, Header, Message};
pub use offsets::{offset_map, OffsetTracker};
pub use output::{Delivered, Output, OutputRecord, OutputScope};
pub use runtime::{
    Consumer, ConsumerBuilder, ConsumerHandle, Delivery, Messages, SeekTo, StatusWatch,
    StreamHandler,
};
pub use status::{CatchUp, ConsumerStatus, Progress, StuckPartition, TopicPartition};
pub use upcoming::{RunId, Upcoming};
