//! [`WithBreaker`]: applies the circuit breaker ([`Breaker`]) around each attempt.

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use tokio_util::sync::CancellationToken;

use crate::policy::Breaker;
use crate::{upcoming, Message};

use super::attempt::{all_released, Attempt, Attempted, Stages};

/// Lets an attempt go only when the breaker admits it (waiting while it is open, or while
/// another call probes it), and tells the breaker whether the attempt failed in a way retrying
/// may fix. Each handler call counts once: one message for a handler, one batch for a batch
/// handler. Without a breaker, the attempt goes at once.
pub(crate) struct WithBreaker<A> {
    pub breaker: Option<Arc<Breaker>>,
    pub inner: A,
}

impl<A: Attempt> Attempt for WithBreaker<A> {
    async fn attempt(
        &self,
        messages: &[Message],
        released: &[&CancellationToken],
        stages: Stages,
    ) -> Option<Attempted> {
        let Some(breaker) = &self.breaker else {
            return self.inner.attempt(messages, released, stages).await;
        };
        let mut admit = pin!(breaker.admit());
        let ticket = match futures::poll!(admit.as_mut()) {
            Poll::Ready(ticket) => ticket,
            Poll::Pending => {
                upcoming::holding_back();
                tokio::select! {
                    biased;
                    ticket = admit => ticket,
                    _ = all_released(released) => return None,
                }
            }
        };
        let attempted = self.inner.attempt(messages, released, stages).await?;
        let failed = attempted
            .result
            .as_ref()
            .is_err_and(|e| e.kind().is_retryable());
        breaker.record(ticket, failed);
        Some(attempted)
    }

    fn handler_ended(&self, messages: &[Message], ended: Option<quanta::Instant>) {
        self.inner.handler_ended(messages, ended)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handler::HandlerError;
    use crate::layer::fakes::{messages, Calls};
    use crate::policy::{CircuitBreaker, CircuitState};

    const STAGES: Stages = Stages {
        start: false,
        end: false,
    };

    // Real time: the breaker reads the standard clock, which a paused Tokio clock does not move.
    #[tokio::test]
    async fn failures_open_the_breaker_which_holds_the_next_attempt_until_its_cool_down() {
        let config = CircuitBreaker::default()
            .with_consecutive_failures(2)
            .with_cool_down(Duration::from_millis(300));
        let layer = WithBreaker {
            breaker: Some(Breaker::new(config)),
            inner: Calls::new(|_: &[i64], call: usize| match call {
                1 | 2 => Err(HandlerError::retryable("down")),
                _ => Ok(()),
            }),
        };
        let one = messages(1);
        let token = CancellationToken::new();
        for _ in 0..2 {
            let attempted = layer.attempt(&one, &[&token], STAGES).await.unwrap();
            assert!(attempted.result.is_err());
        }
        let breaker = layer.breaker.as_ref().unwrap();
        assert_eq!(breaker.state(), CircuitState::Open);
        let started = std::time::Instant::now();
        let attempted = layer.attempt(&one, &[&token], STAGES).await.unwrap();
        assert!(attempted.result.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(300));
        // The probe succeeded.
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(layer.inner.count(), 3);
    }

    #[tokio::test]
    async fn permanent_errors_do_not_count_and_a_released_wait_calls_nothing() {
        let config = CircuitBreaker::default().with_consecutive_failures(1);
        let layer = WithBreaker {
            breaker: Some(Breaker::new(config)),
            inner: Calls::new(|_: &[i64], call: usize| match call {
                1 => Err(HandlerError::permanent("bad record")),
                _ => Err(HandlerError::retryable("down")),
            }),
        };
        let one = messages(1);
        let token = CancellationToken::new();
        layer.attempt(&one, &[&token], STAGES).await.unwrap();
        let breaker = layer.breaker.as_ref().unwrap();
        assert_eq!(breaker.state(), CircuitState::Closed);
        layer.attempt(&one, &[&token], STAGES).await.unwrap();
        assert_eq!(breaker.state(), CircuitState::Open);
        token.cancel();
        assert!(layer.attempt(&one, &[&token], STAGES).await.is_none());
        assert_eq!(layer.inner.count(), 2);
    }
    #[tokio::test]
    async fn a_call_the_breaker_holds_back_stops_the_handlers_work_ahead() {
        let config = CircuitBreaker::default()
            .with_consecutive_failures(1)
            .with_cool_down(Duration::from_secs(60));
        let layer = WithBreaker {
            breaker: Some(Breaker::new(config)),
            inner: Calls::new(|_: &[i64], _| Err(HandlerError::retryable("down"))),
        };
        let all = messages(3);
        let token = CancellationToken::new();
        let mut ahead = upcoming::Ahead::default();
        let told = ahead.after(&all[0], || all[1..].to_vec(), &token);
        let upcoming = told.clone().unwrap();
        // The handler is called (and fails, opening the breaker), working on offset 1 ahead.
        let first = async {
            upcoming::calling();
            layer.attempt(&all[..1], &[&token], STAGES).await
        };
        upcoming::telling(told.clone(), first).await;
        assert!(upcoming.claim(1));
        // The lane's call of offset 1 waits for the breaker: nothing more is claimed meanwhile.
        let released = CancellationToken::new();
        let tokens = [&released];
        let waiting = layer.attempt(&all[1..2], &tokens, STAGES);
        let mut waiting = pin!(upcoming::telling(told, waiting));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert!(!upcoming.claim(2));
        released.cancel();
        assert!(waiting.await.is_none());
        assert_eq!(layer.inner.count(), 1);
    }
}
