//! Policies decide what happens to a failed message. They never commit offsets and never
//! touch the consumer; the worker applies their decisions.

mod circuit;
mod reconnect;
mod retry;

pub(crate) use circuit::Breaker;
pub use circuit::{CircuitBreaker, CircuitState};
pub use reconnect::Reconnect;
pub use retry::{Backoff, RetryDecision, RetryPolicy};
