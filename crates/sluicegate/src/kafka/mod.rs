//! What the library needs of librdkafka beyond rust-rdkafka's safe API.

mod fetch_queue;

pub(crate) use fetch_queue::{FetchQueue, Record};
