//! What the built-in layers wrap ([`Attempt`]: one call of the handler) and what they answer to
//! ([`Scope`]: the code that runs the stack, a lane).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::dead_letter::Failure;
use crate::handler::{HandlerResult, Outcome};
use crate::Message;

/// Which ages of the messages a call counts in the stage metrics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stages {
    /// At handler start: the first call of these messages.
    pub start: bool,
    /// At handler end, if the call settles them (a success or a skip).
    pub end: bool,
}

/// How one call of the handler ended.
pub(crate) struct Attempted {
    pub result: HandlerResult,
    /// When the call ended, where metrics are on: a single message given up on counts its age
    /// at handler end then.
    pub ended: Option<quanta::Instant>,
}

/// One attempt at handling `messages`: the inner part of the stack (handler timeout and panic
/// catching, the circuit breaker) that the retry layer calls again.
pub(crate) trait Attempt: Send + Sync {
    /// Calls the handler once. `None` when every message was released (`released`: each
    /// message's token) before the call could start; the handler was not called.
    fn attempt(
        &self,
        messages: &[Message],
        released: &[&CancellationToken],
        stages: Stages,
    ) -> impl Future<Output = Option<Attempted>> + Send;

    /// Counts the ages of `messages` at handler end, their last call having ended at `ended`.
    fn handler_ended(&self, messages: &[Message], ended: Option<quanta::Instant>);
}

impl<A: Attempt> Attempt for &A {
    fn attempt(
        &self,
        messages: &[Message],
        released: &[&CancellationToken],
        stages: Stages,
    ) -> impl Future<Output = Option<Attempted>> + Send {
        (**self).attempt(messages, released, stages)
    }

    fn handler_ended(&self, messages: &[Message], ended: Option<quanta::Instant>) {
        (**self).handler_ended(messages, ended)
    }
}

/// Where the stack runs, told what the policies decided: a lane, which collects the outcomes
/// and reports them. A policy never commits offsets itself.
pub(crate) trait Scope: Send {
    /// Why the scope stops the stack early: the rest of the messages are left untried.
    type Halt: Send;

    /// `messages` are finished with `outcome`, or left to their next owner (`None`): released
    /// while they waited for a retry, the breaker or a dead-letter write.
    fn settled(&mut self, messages: &[Message], outcome: Option<Outcome>)
        -> Result<(), Self::Halt>;

    /// The policies gave up on `message` and no dead-letter topic takes it: it stays
    /// unfinished, and stops its partition.
    fn stuck(&mut self, message: &Message, failure: Failure) -> Result<(), Self::Halt>;

    /// A retry of `messages` is about to wait `delay`; the scope may pause their partitions
    /// until the stack returns.
    fn waiting(&mut self, messages: &[Message], delay: Duration);
}

/// Resolves once every token in `released` is cancelled.
pub(crate) async fn all_released(released: &[&CancellationToken]) {
    futures::future::join_all(released.iter().map(|t| t.cancelled())).await;
}
