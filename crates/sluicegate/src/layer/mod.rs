//! [`Layer`]: a policy that wraps a handler, in the spirit of tower's `Layer`, and the two
//! layers that stack others ([`Identity`], [`Stack`]).
//!
//! A layer turns a handler into another handler that does something around each call: count
//! it, time it, rate-limit it, skip a record already handled, open a tracing span. Add layers
//! with [`ConsumerBuilder::layer`](crate::ConsumerBuilder::layer); the consumer wraps the
//! handler once, when it is built, so a layer costs one function call per attempt, with static
//! dispatch, and a consumer without layers calls the handler directly.
//!
//! # Where user layers sit
//!
//! From the outside in, a message goes through:
//!
//! 1. the dead-letter write (once the retries give up on a single record),
//! 2. the retry policy with its back-off (and, for a batch, the bisection that isolates the
//!    failing records),
//! 3. the circuit breaker,
//! 4. the handler timeout, and the catching of panics,
//! 5. **the user layers**, the first one added outermost (as tower's `ServiceBuilder`),
//! 6. the handler.
//!
//! So a layer sees every *attempt*: a retried message enters it again, and an idempotency
//! check or a rate limit applies per attempt. What a layer answers is treated exactly as a
//! handler's answer: an error of kind [`Retryable`](crate::ErrorKind::Retryable) is retried,
//! [`Skip`](crate::ErrorKind::Skip) finishes the message, a panic is a
//! [`Panic`](crate::ErrorKind::Panic), and time a layer spends counts in the handler timeout.
//! The same holds in exactly-once mode, where the outputs an attempt sends are dropped if it
//! fails.
//!
//! # The built-in layers
//!
//! Steps 1 to 4 are layers of the library, one type each, built around the user's stack once,
//! when the consumer starts; each *applies* one policy, while the policy types of
//! [`crate::policy`] (and the dead-letter writer) *decide*:
//!
//! - `WithDeadLetter` (outermost) settles each message: when the retry policy gives up on a
//!   batch it bisects it (each half tried once more, single records get the whole policy); a
//!   single record given up on is written to the dead-letter topic, retried with the
//!   [`DeadLetter::retry_backoff`](crate::dead_letter::DeadLetter::retry_backoff) until the
//!   broker acknowledges it, or, with no dead-letter topic, stops its partition;
//! - `WithRetry` calls the attempt again after a failure, waiting what
//!   [`RetryPolicy::decide`](crate::policy::RetryPolicy::decide) says;
//! - `WithBreaker` holds each attempt while the [`CircuitBreaker`](crate::policy::CircuitBreaker)
//!   is open, and counts each handler call (one message, or one batch) as a success or a
//!   failure;
//! - `WithTimeout` (innermost) calls the user's stack, cancels a call over the
//!   [handler timeout](crate::ConsumerBuilder::handler_timeout), turns a panic into an error,
//!   and measures the call.
//!
//! Around them runs a *scope*: the lane, which reports each outcome (and pauses a partition
//! whose retry waits a second or more). Waits (a back-off, the open breaker, a failed
//! dead-letter write) end when the message's partition is released or the consumer shuts
//! down; a running handler call is left to finish. In exactly-once mode `WithTimeout` also
//! gives each call an [`OutputScope`](crate::OutputScope): its outputs are kept for the
//! messages' commit only if it succeeds. On success no layer allocates: a call costs the
//! layers' function calls, with static dispatch.
//!
//! A layer wraps a [`Handler`](crate::Handler) for [`build`](crate::ConsumerBuilder::build)
//! and a [`BatchHandler`](crate::BatchHandler) for
//! [`build_batch`](crate::ConsumerBuilder::build_batch); one wrapper type may implement both.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use sluicegate::{handler_fn, Consumer, Handler, HandlerResult, Layer, Message};
//!
//! /// Counts the attempts of the handler it wraps.
//! #[derive(Clone, Default)]
//! struct CountAttempts(Arc<AtomicU64>);
//!
//! struct Counted<H> {
//!     inner: H,
//!     attempts: Arc<AtomicU64>,
//! }
//!
//! impl<H> Layer<H> for CountAttempts {
//!     type Handler = Counted<H>;
//!     fn layer(&self, inner: H) -> Counted<H> {
//!         Counted { inner, attempts: self.0.clone() }
//!     }
//! }
//!
//! impl<H: Handler> Handler for Counted<H> {
//!     async fn handle(&self, message: Message) -> HandlerResult {
//!         self.attempts.fetch_add(1, Ordering::Relaxed);
//!         self.inner.handle(message).await
//!     }
//! }
//!
//! let count = CountAttempts::default();
//! let consumer = Consumer::builder()
//!     .bootstrap_servers("localhost:9092")
//!     .group_id("billing")
//!     .topic("orders")
//!     .layer(count.clone())
//!     .build(handler_fn(|_: Message| async { Ok(()) }));
//! assert!(consumer.is_ok());
//!
//! // A layer is a plain value: it can be tried on a handler directly.
//! let counted = count.layer(handler_fn(|_: Message| async { Ok(()) }));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! counted.handle(Message::new("orders", 0, 7, None, None)).await.unwrap();
//! # });
//! assert_eq!(count.0.load(Ordering::Relaxed), 1);
//! ```

mod attempt;
mod breaker;
mod dead_letter;
#[cfg(test)]
mod fakes;
mod retry;
mod timeout;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use attempt::Scope;
pub(crate) use breaker::WithBreaker;
pub(crate) use dead_letter::WithDeadLetter;
pub(crate) use retry::WithRetry;
pub(crate) use timeout::WithTimeout;

use crate::dead_letter::DeadLetterWriter;
use crate::metrics::ConsumerMetrics;
use crate::policy::{Breaker, RetryPolicy};

/// A policy that wraps a handler `H` in another handler.
///
/// `H` is a [`Handler`](crate::Handler) when the consumer is built with
/// [`build`](crate::ConsumerBuilder::build), a [`BatchHandler`](crate::BatchHandler) with
/// [`build_batch`](crate::ConsumerBuilder::build_batch); [`Handler`](Layer::Handler) must be
/// the same kind. See the [module documentation](self) for where layers sit among the built-in
/// policies.
pub trait Layer<H> {
    /// The wrapped handler.
    type Handler;

    /// Wraps `inner`. Called once, when the consumer is built.
    fn layer(&self, inner: H) -> Self::Handler;
}

/// The layer that changes nothing: the handler as given. A builder without layers holds it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl<H> Layer<H> for Identity {
    type Handler = H;

    fn layer(&self, inner: H) -> H {
        inner
    }
}

/// Two layers, `Outer` around `Inner`: made by
/// [`ConsumerBuilder::layer`](crate::ConsumerBuilder::layer), where the layer added first is
/// the outer one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// `outer` around `inner`.
    pub fn new(inner: Inner, outer: Outer) -> Self {
        Stack { inner, outer }
    }
}

impl<H, Inner, Outer> Layer<H> for Stack<Inner, Outer>
where
    Inner: Layer<H>,
    Outer: Layer<Inner::Handler>,
{
    type Handler = Outer::Handler;

    fn layer(&self, inner: H) -> Self::Handler {
        self.outer.layer(self.inner.layer(inner))
    }
}

/// The built-in layers around `W` (the handler inside the user's layers), from the outside in:
/// dead-letter write (with the bisection of a batch given up on), retry with back-off, circuit
/// breaker, handler timeout and panic catching. See [`built_in`].
pub(crate) type BuiltIn<W> = WithDeadLetter<WithBreaker<WithTimeout<W>>>;

/// What the built-in layers apply: each policy's configuration, decided elsewhere.
pub(crate) struct Policies {
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    pub breaker: Option<Arc<Breaker>>,
    pub dead_letter: Option<Arc<DeadLetterWriter>>,
    pub metrics: Option<ConsumerMetrics>,
    /// Exactly-once mode: each handler call's outputs are kept only if it succeeds.
    pub scoped_outputs: bool,
}

/// Wraps `work` in the built-in layers, in the order the [module documentation](self) gives.
pub(crate) fn built_in<W>(work: W, policies: Policies) -> BuiltIn<W> {
    let timeout = WithTimeout {
        work,
        limit: policies.timeout,
        metrics: policies.metrics,
        scoped_outputs: policies.scoped_outputs,
    };
    let breaker = WithBreaker {
        breaker: policies.breaker,
        inner: timeout,
    };
    WithDeadLetter {
        writer: policies.dead_letter,
        inner: WithRetry {
            policy: policies.retry,
            inner: breaker,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{handler_fn, Handler, HandlerResult, Message};

    /// Writes its name to a shared log before and after the call it wraps.
    #[derive(Clone)]
    struct Named(&'static str, Arc<Mutex<Vec<String>>>);

    struct Logged<H>(Named, H);

    impl<H> Layer<H> for Named {
        type Handler = Logged<H>;
        fn layer(&self, inner: H) -> Logged<H> {
            Logged(self.clone(), inner)
        }
    }

    impl<H: Handler> Handler for Logged<H> {
        async fn handle(&self, message: Message) -> HandlerResult {
            let Named(name, log) = &self.0;
            log.lock().unwrap().push(format!("{name} in"));
            let result = self.1.handle(message).await;
            log.lock().unwrap().push(format!("{name} out"));
            result
        }
    }

    #[tokio::test]
    async fn a_stack_puts_its_outer_layer_around_its_inner_one() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stack = Stack::new(
            Named("inner", log.clone()),
            Stack::new(Identity, Named("outer", log.clone())),
        );
        let calls = log.clone();
        let handler = stack.layer(handler_fn(move |_: Message| {
            calls.lock().unwrap().push("handler".into());
            async { Ok(()) }
        }));
        handler
            .handle(Message::new("t", 0, 0, None, None))
            .await
            .unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["outer in", "inner in", "handler", "inner out", "outer out"]
        );
    }
}
