//! The Kafka adapter: the only module that names rdkafka. It offers what the library needs of
//! librdkafka in Sluicegate's words: clients from [`Properties`](crate::settings::Properties)
//! and their context ([`client`]), the consumer and its callbacks ([`consumer`]), the producer ([`producer`]), topic creation ([`admin`]),
//! error mapping ([`error`]), the embedded broker, the batch fetch beyond rust-rdkafka's safe
//! API ([`FetchQueue`]), and, with the `rdkafka-interop` feature, the surface for rdkafka
//! clients of your own.

pub(crate) mod admin;
pub(crate) mod client;
pub(crate) mod consumer;
mod embedded;
pub(crate) mod error;
mod fetch_queue;
#[cfg(feature = "rdkafka-interop")]
pub mod interop;
pub(crate) mod producer;

pub use embedded::{ApiKey, EmbeddedKafka};
pub(crate) use fetch_queue::{FetchError, FetchQueue, Record};
