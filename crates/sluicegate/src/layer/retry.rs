//! [`WithRetry`]: applies the retry policy ([`RetryPolicy::decide`]) around an attempt.

use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::dead_letter::Failure;
use crate::handler::{ErrorKind, Outcome};
use crate::policy::{RetryDecision, RetryPolicy};
use crate::Message;

use super::attempt::{all_released, Attempt, Attempted, Scope, Stages};

/// Calls the inner attempt again after each failure, waiting the back-off the policy decides,
/// until a call settles the messages (a success or a skip) or the policy gives up.
pub(crate) struct WithRetry<A> {
    pub policy: RetryPolicy,
    pub inner: A,
}

/// How a retried call ended.
#[derive(Debug)]
pub(crate) enum Settled {
    Finished(Outcome),
    GaveUp(Failure),
    /// Every message was released while it waited (for the breaker or a back-off).
    Released,
}

impl<A: Attempt> WithRetry<A> {
    /// Calls the handler with `messages` until it succeeds or the policy gives up; with `once`,
    /// gives up after the first failure (a half of a bisected batch). `first` says no call of
    /// these messages came before: their ages at handler start are counted. Their ages at
    /// handler end are counted when the last call settles them: a success or skip, or a single
    /// message given up on. Each attempt is one the `scope` begins, and a failed one it is
    /// told of before the policy decides; a back-off wait long enough to pause is announced.
    pub async fn settle<S: Scope>(
        &self,
        messages: &[Message],
        released: &[&CancellationToken],
        scope: &mut S,
        once: bool,
        first: bool,
    ) -> Result<Settled, S::Halt> {
        let mut attempts = 0u32;
        let mut first_failure: Option<(Instant, SystemTime)> = None;
        loop {
            attempts += 1;
            let stages = Stages {
                start: first && attempts == 1,
                end: true,
            };
            let Some(Attempted { result, ended }) =
                self.inner.attempt(messages, released, stages).await
            else {
                return Ok(Settled::Released);
            };
            // A success or skip counted its age at handler end already (see `WithTimeout`).
            let error = match result {
                Ok(()) => return Ok(Settled::Finished(Outcome::Handled { attempts })),
                Err(e) if e.kind() == ErrorKind::Skip => {
                    return Ok(Settled::Finished(Outcome::Skipped))
                }
                Err(e) => e,
            };
            let (first, first_at) =
                *first_failure.get_or_insert_with(|| (Instant::now(), SystemTime::now()));
            let (topic, partition, offset) = {
                let m = &messages[0];
                (m.topic(), m.partition(), m.offset())
            };
            let decision = if once {
                RetryDecision::GiveUp
            } else {
                self.policy
                    .decide(error.kind(), attempts, first.elapsed(), rand::random())
            };
            let delay = match decision {
                RetryDecision::RetryAfter(delay) => {
                    warn!(topic, partition, offset, messages = messages.len(), attempts, ?delay,
                          %error, "handler failed; retrying");
                    delay
                }
                RetryDecision::GiveUp => {
                    // A batch's messages are called again, bisected: their last call is later.
                    if messages.len() == 1 {
                        self.inner.handler_ended(messages, ended);
                    }
                    return Ok(Settled::GaveUp(Failure {
                        error,
                        attempts,
                        first: first_at,
                        last: SystemTime::now(),
                    }));
                }
            };
            scope.waiting(messages, delay);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = all_released(released) => return Ok(Settled::Released),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handler::HandlerError;
    use crate::layer::fakes::{messages, Calls, Recorder, Told};
    use crate::policy::Backoff;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy::default()
            .with_max_attempts(max_attempts)
            .with_backoff(Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
                multiplier: 2.0,
                jitter: 0.0,
            })
    }

    /// Fails with a retryable error the first `n` calls, then succeeds.
    fn failing_first(n: usize) -> Calls<impl Fn(&[i64], usize) -> crate::HandlerResult> {
        Calls::new(move |_: &[i64], call: usize| {
            if call <= n {
                Err(HandlerError::retryable("down"))
            } else {
                Ok(())
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_fails_n_times_is_retried_with_the_back_off_and_finishes() {
        let retry = WithRetry {
            policy: policy(10),
            inner: failing_first(3),
        };
        let batch = messages(1);
        let token = CancellationToken::new();
        let mut scope = Recorder::default();
        let settled = retry
            .settle(&batch, &[&token], &mut scope, false, true)
            .await;
        assert!(matches!(
            settled,
            Ok(Settled::Finished(Outcome::Handled { attempts: 4 }))
        ));
        assert_eq!(retry.inner.count(), 4);
        // Each failed attempt's wait is told, and doubles.
        let ms = Duration::from_millis;
        assert_eq!(
            scope.told,
            [
                Told::Waiting(ms(100)),
                Told::Waiting(ms(200)),
                Told::Waiting(ms(400)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_policy_gives_up_after_its_attempts_and_permanent_errors_are_not_retried() {
        let retry = WithRetry {
            policy: policy(3),
            inner: failing_first(usize::MAX),
        };
        let batch = messages(1);
        let token = CancellationToken::new();
        let mut scope = Recorder::default();
        match retry
            .settle(&batch, &[&token], &mut scope, false, true)
            .await
        {
            Ok(Settled::GaveUp(f)) => {
                assert_eq!((f.attempts, f.error.kind()), (3, ErrorKind::Retryable))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(retry.inner.count(), 3);

        let permanent = WithRetry {
            policy: policy(10),
            inner: Calls::new(|_: &[i64], _| Err(HandlerError::permanent("bad"))),
        };
        let settled = permanent
            .settle(&batch, &[&token], &mut scope, false, true)
            .await;
        assert!(matches!(settled, Ok(Settled::GaveUp(f)) if f.attempts == 1));
        assert_eq!(permanent.inner.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn once_gives_up_at_the_first_failure_and_a_skip_finishes() {
        let retry = WithRetry {
            policy: policy(10),
            inner: failing_first(usize::MAX),
        };
        let batch = messages(4);
        let token = CancellationToken::new();
        let tokens = [&token; 4];
        let mut scope = Recorder::default();
        let settled = retry.settle(&batch, &tokens, &mut scope, true, false).await;
        assert!(matches!(settled, Ok(Settled::GaveUp(f)) if f.attempts == 1));
        assert_eq!(retry.inner.count(), 1);

        let skipping = WithRetry {
            policy: policy(10),
            inner: Calls::new(|_: &[i64], _| Err(HandlerError::skip("not mine"))),
        };
        let settled = skipping.settle(&batch, &tokens, &mut scope, false, true);
        assert!(matches!(
            settled.await,
            Ok(Settled::Finished(Outcome::Skipped))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_back_off_ends_when_every_message_is_released() {
        let retry = WithRetry {
            policy: policy(10),
            inner: failing_first(usize::MAX),
        };
        let batch = messages(2);
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        a.cancel();
        let mut scope = Recorder::default();
        let released = [&a, &b];
        let settle = retry.settle(&batch, &released, &mut scope, false, true);
        let release = async {
            // One token is not enough: the wait goes on while the other message is owned.
            tokio::time::sleep(Duration::from_secs(5)).await;
            b.cancel();
        };
        let (settled, ()) = tokio::join!(settle, release);
        assert!(matches!(settled, Ok(Settled::Released)));
        // 100 + 200 + 400 + 800 + 1600 ms passed before the release, and the wait after the
        // sixth attempt was cut short.
        assert_eq!(retry.inner.count(), 6);
    }
}
