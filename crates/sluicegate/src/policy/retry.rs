//! [`RetryPolicy`]: whether, and when, a failed message is tried again.

use std::time::Duration;

use crate::handler::ErrorKind;

/// Exponential backoff with jitter: `initial * multiplier^(attempt-1)`, capped at `max`, then
/// moved at random by up to `jitter` of itself so that many failing consumers do not retry in
/// step.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The growth factor from one delay to the next: at least 1 (a smaller one is refused
    /// when the consumer is built).
    pub multiplier: f64,
    /// The fraction of each delay that is randomized: from 0 to 1 (others are refused when
    /// the consumer is built).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based); `unit` is a random number in
    /// `[0, 1)` that picks the jitter. A consumer refuses a multiplier below 1 or a jitter
    /// outside 0 to 1 at build; used alone, this reads them as 1 and as 0 or 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluicegate::policy::Backoff;
    ///
    /// let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1),
    ///                   multiplier: 2.0, jitter: 0.0 };
    /// assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
    /// assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
    /// assert_eq!(b.delay(30, 0.5), Duration::from_secs(1));
    /// ```
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * factor).min(self.max.as_secs_f64()))
    }
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop retrying: the message goes to the dead-letter path.
    GiveUp,
}

/// Decides whether a failed message is retried: up to `max_attempts` attempts in all and within
/// `max_elapsed` of the first failure, with [`Backoff`] between attempts. Permanent and decode
/// errors are never retried; skips never reach the policy.
///
/// The default retries retryable failures without limit: a transient outage delays messages
/// but never sets them aside. A message the policy gives up on goes to the dead-letter topic,
/// or, without one, stops its partition (see
/// [`ConsumerBuilder::dead_letter`](crate::ConsumerBuilder::dead_letter)); nothing is skipped.
///
/// ```
/// use std::time::Duration;
/// use sluicegate::policy::{RetryDecision, RetryPolicy};
/// use sluicegate::ErrorKind;
///
/// let policy = RetryPolicy::default().with_max_attempts(3);
/// assert!(matches!(policy.decide(ErrorKind::Retryable, 1, Duration::ZERO, 0.5),
///                  RetryDecision::RetryAfter(_)));
/// assert_eq!(policy.decide(ErrorKind::Retryable, 3, Duration::ZERO, 0.5), RetryDecision::GiveUp);
/// assert_eq!(policy.decide(ErrorKind::Permanent, 1, Duration::ZERO, 0.5), RetryDecision::GiveUp);
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `None` for no limit.
    pub max_attempts: Option<u32>,
    /// How long after the first failure retries may go on; `None` for no limit.
    pub max_elapsed: Option<Duration>,
    /// The delays between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Limits the attempts in all, the first included: at least 1 (0 is refused when the
    /// consumer is built, as from a configuration file).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Limits how long after the first failure retries may go on.
    pub fn with_max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = Some(elapsed);
        self
    }

    /// Sets the delays between attempts.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Decides after failed attempt number `attempts` (1-based), `elapsed` after the first
    /// failure; `unit` in `[0, 1)` picks the jitter.
    pub fn decide(
        &self,
        kind: ErrorKind,
        attempts: u32,
        elapsed: Duration,
        unit: f64,
    ) -> RetryDecision {
        if !kind.is_retryable() || self.max_attempts.is_some_and(|max| attempts >= max) {
            return RetryDecision::GiveUp;
        }
        let delay = self.backoff.delay(attempts, unit);
        if self.max_elapsed.is_some_and(|max| elapsed + delay > max) {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delay_stays_within_jitter_of_the_capped_exponential(
            attempt in 1u32..100, unit in 0.0f64..1.0, jitter in 0.0f64..1.0,
        ) {
            let b = Backoff { initial: Duration::from_millis(50), max: Duration::from_secs(10),
                              multiplier: 2.0, jitter };
            let base = (0.05 * 2f64.powi(attempt as i32 - 1)).min(10.0);
            let d = b.delay(attempt, unit).as_secs_f64();
            prop_assert!(d <= 10.0 + 1e-9);
            prop_assert!(d >= base * (1.0 - jitter) - 1e-9);
            prop_assert!(d <= base * (1.0 + jitter) + 1e-9);
        }

        #[test]
        fn delays_never_shrink_without_jitter(attempt in 1u32..80) {
            let b = Backoff { jitter: 0.0, ..Backoff::default() };
            prop_assert!(b.delay(attempt + 1, 0.0) >= b.delay(attempt, 0.0));
        }
    }

    #[test]
    fn max_elapsed_stops_retries() {
        let p = RetryPolicy::default().with_max_elapsed(Duration::from_secs(1));
        assert_eq!(
            p.decide(ErrorKind::Retryable, 2, Duration::from_secs(1), 0.0),
            RetryDecision::GiveUp
        );
    }
}
