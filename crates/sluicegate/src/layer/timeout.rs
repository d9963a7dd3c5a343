//! [`WithTimeout`]: the innermost built-in layer: the handler call, bounded by the handler
//! timeout, a panic turned into an error, and the call measured.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::handler::{ErrorKind, HandlerError, HandlerResult, Work};
use crate::metrics::{wall, ConsumerMetrics, Stage};
use crate::Message;
use crate::{output, upcoming};

use super::attempt::{Attempt, Attempted, Stages};

/// Calls the handler (with the user's layers) once per attempt: a call running longer than
/// `limit` is cancelled as an [`ErrorKind::Timeout`] failure, and a panic becomes an
/// [`ErrorKind::Panic`] failure. With metrics on, it counts the call's duration, its failures
/// and the messages' ages at handler start and end. In exactly-once mode each call gets an
/// [`OutputScope`](crate::OutputScope) of its own, whose outputs are kept for the messages'
/// commit only when the call succeeds.
pub(crate) struct WithTimeout<W> {
    pub work: W,
    pub limit: Option<Duration>,
    pub metrics: Option<ConsumerMetrics>,
    /// Exactly-once mode: scope each call's outputs.
    pub scoped_outputs: bool,
}

impl<W: Work> Attempt for WithTimeout<W> {
    async fn attempt(
        &self,
        messages: &[Message],
        _released: &[&CancellationToken],
        stages: Stages,
    ) -> Option<Attempted> {
        upcoming::calling();
        let call = invoke(&self.work, messages);
        let call = async {
            match self.limit {
                Some(limit) => tokio::time::timeout(limit, call)
                    .await
                    .unwrap_or_else(|_| Err(HandlerError::timeout(limit))),
                None => call.await,
            }
        };
        let call = async {
            match self.scoped_outputs {
                true => output::in_call_scope(call, HandlerResult::is_ok).await,
                false => call.await,
            }
        };
        let Some(metrics) = &self.metrics else {
            return Some(Attempted {
                result: call.await,
                ended: None,
            });
        };
        // Read on every call: quanta's clock costs half of the standard one's here.
        let started = quanta::Instant::now();
        let result = call.await;
        let ended = quanta::Instant::now();
        let took = ended - started;
        // One look-up of the topic's handles per call: each costs a hash of its name.
        metrics.with_topic(messages[0].topic(), |topic| {
            topic.handler_duration.observe(took);
            if stages.start {
                topic.reached(Stage::HandlerStart, messages, wall(started));
            }
            let settled = match &result {
                Ok(()) => true,
                Err(e) => e.kind() == ErrorKind::Skip,
            };
            if stages.end && settled {
                topic.reached(Stage::HandlerEnd, messages, wall(ended));
            }
            match &result {
                Err(e) if e.kind() != ErrorKind::Skip => {
                    metrics.failed(topic, e.kind(), messages.len())
                }
                _ => {}
            }
        });
        Some(Attempted {
            result,
            ended: Some(ended),
        })
    }

    fn handler_ended(&self, messages: &[Message], ended: Option<quanta::Instant>) {
        if let (Some(metrics), Some(ended)) = (&self.metrics, ended) {
            metrics.with_topic(messages[0].topic(), |topic| {
                topic.reached(Stage::HandlerEnd, messages, wall(ended));
            });
        }
    }
}

/// Calls the handler, turning a panic into a [`HandlerError`] of kind [`ErrorKind::Panic`].
async fn invoke<W: Work>(work: &W, messages: &[Message]) -> HandlerResult {
    match AssertUnwindSafe(work.call(messages)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(HandlerError::panic(format!("handler panicked: {text}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::handler_fn;

    const STAGES: Stages = Stages {
        start: true,
        end: true,
    };

    async fn answer<W: Work>(work: W, limit: Option<Duration>) -> HandlerResult {
        let layer = WithTimeout {
            work,
            limit,
            metrics: None,
            scoped_outputs: false,
        };
        let one = [Message::new("t", 0, 0, None, None)];
        let attempted = layer.attempt(&one, &[], STAGES).await.unwrap();
        attempted.result
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_limit_is_a_timeout_and_one_within_it_is_its_answer() {
        let slow = handler_fn(|_: Message| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        });
        let limit = Some(Duration::from_secs(1));
        let error = answer(slow, limit).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Timeout);
        let quick = handler_fn(|_: Message| async { Ok(()) });
        assert!(answer(quick, limit).await.is_ok());
        let slow_unbounded = handler_fn(|_: Message| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Err(HandlerError::permanent("late"))
        });
        let error = answer(slow_unbounded, None).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Permanent);
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_of_kind_panic_with_its_text() {
        let panicking = handler_fn(|m: Message| async move {
            if m.offset() == 0 {
                panic!("offset {} is cursed", m.offset());
            }
            Ok(())
        });
        let error = answer(panicking, None).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Panic);
        assert!(error.to_string().contains("offset 0 is cursed"), "{error}");
    }
}
