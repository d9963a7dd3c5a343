//! The Kafka adapter: the only module that names rdkafka. It offers what the library needs of
//! librdkafka in Sluicegate's words: error mapping ([`error`]), the embedded broker, and the
//! batch fetch beyond rust-rdkafka's safe API ([`FetchQueue`]).

mod embedded;
pub(crate) mod error;
mod fetch_queue;

pub use embedded::{ApiKey, EmbeddedKafka};
pub(crate) use fetch_queue::{FetchQueue, Record};
