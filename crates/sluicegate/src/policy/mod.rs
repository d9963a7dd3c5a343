//! Policies decide what happens to a failed message. They never commit offsets and never
//! touch the consumer; the worker applies their decisions.

mod retry;

pub use retry::{Backoff, RetryDecision, RetryPolicy};
