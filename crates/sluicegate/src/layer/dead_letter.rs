//! [`WithDeadLetter`]: the outermost built-in layer: what follows when the retry policy gives
//! up. A batch is bisected; a single record is written to the dead-letter topic
//! ([`DeadLetterWriter`]), or, with none, stops its partition.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::dead_letter::{DeadLetterWriter, Failure};
use crate::handler::Outcome;
use crate::Message;

use super::attempt::{Attempt, Scope};
use super::retry::{Settled, WithRetry};

/// Handles messages (one, or a batch) under the retry policy of `inner` and settles each of
/// them in the [`Scope`]: finished, dead-lettered, left to the next owner, or stuck.
///
/// When the policy gives up on a batch, the batch is bisected: each half is tried once more
/// and, if it fails, bisected again, down to single messages, which get the whole retry policy.
/// So only records that fail on their own are given up on, and isolating one costs about two
/// calls per halving, without back-off waits. A single record given up on is written to its
/// dead-letter topic, each write its own attempt in the scope, retried with the dead-letter
/// back-off until the broker acknowledges it; with no dead-letter topic it is *stuck*.
pub(crate) struct WithDeadLetter<A> {
    pub writer: Option<Arc<DeadLetterWriter>>,
    pub inner: WithRetry<A>,
}

impl<A: Attempt> WithDeadLetter<A> {
    /// Handles `messages`, whose partitions release each message's token in `released` (a
    /// released message's waits end, and it is left to its next owner), settling every one
    /// of them in `scope` in offset order, unless the scope halts the stack first.
    pub async fn handle<S: Scope>(
        &self,
        messages: &[Message],
        released: &[&CancellationToken],
        scope: &mut S,
    ) -> Result<(), S::Halt> {
        match self
            .inner
            .settle(messages, released, scope, false, true)
            .await?
        {
            Settled::Finished(outcome) => scope.settled(messages, Some(outcome)),
            Settled::Released => scope.settled(messages, None),
            Settled::GaveUp(failure) => self.give_up(messages, released, scope, failure).await,
        }
    }

    /// What follows a give-up: bisection of a batch, the dead-letter write (or the stop) of a
    /// single message. Boxed: it recurses, and runs only after failures.
    fn give_up<'a, S: Scope>(
        &'a self,
        messages: &'a [Message],
        released: &'a [&'a CancellationToken],
        scope: &'a mut S,
        failure: Failure,
    ) -> BoxFuture<'a, Result<(), S::Halt>> {
        Box::pin(async move {
            let n = messages.len();
            if n > 1 {
                warn!(messages = n, error = %failure.error,
                      "batch failed; bisecting it to isolate the failing records");
                let half = n.div_ceil(2);
                for (part, tokens) in messages.chunks(half).zip(released.chunks(half)) {
                    let once = part.len() > 1;
                    match self.inner.settle(part, tokens, scope, once, false).await? {
                        Settled::Finished(outcome) => scope.settled(part, Some(outcome))?,
                        Settled::Released => scope.settled(part, None)?,
                        Settled::GaveUp(f) => self.give_up(part, tokens, scope, f).await?,
                    }
                }
                return Ok(());
            }
            let message = &messages[0];
            let Some(writer) = &self.writer else {
                return scope.stuck(message, failure);
            };
            error!(topic = message.topic(), partition = message.partition(),
                   offset = message.offset(), attempts = failure.attempts, error = %failure.error,
                   "handler gave up; dead-lettering");
            write(writer, message, &failure, released[0], scope).await
        })
    }
}

/// Writes `message` to its dead-letter topic and waits for the acknowledgement, retrying with
/// the writer's back-off until the broker takes it; settles it as dead-lettered, or as left to
/// the next owner if `released` is cancelled first.
async fn write<S: Scope>(
    writer: &DeadLetterWriter,
    message: &Message,
    failure: &Failure,
    released: &CancellationToken,
    scope: &mut S,
) -> Result<(), S::Halt> {
    let one = std::slice::from_ref(message);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = tokio::select! {
            r = writer.send_once(message, failure) => r,
            _ = released.cancelled() => return scope.settled(one, None),
        };
        let error = match sent {
            Ok(()) => {
                let attempts = failure.attempts;
                return scope.settled(one, Some(Outcome::DeadLettered { attempts }));
            }
            Err(e) => e,
        };
        let delay = writer.backoff().delay(attempt, rand::random());
        warn!(topic = writer.topic_for(message.topic()), source = message.topic(),
              partition = message.partition(), offset = message.offset(), attempt, ?delay,
              error = %error, "dead-letter write failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = released.cancelled() => return scope.settled(one, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::dead_letter::DeadLetter;
    use crate::handler::{ErrorKind, HandlerError, HandlerResult};
    use crate::kafka::client::high_watermark;
    use crate::layer::fakes::{messages, Calls, Recorder, Told};
    use crate::policy::RetryPolicy;
    use crate::properties::Properties;
    use crate::EmbeddedKafka;

    /// A batch call fails (permanently) when it holds any of `failing`.
    fn failing_on(failing: BTreeSet<i64>) -> Calls<impl Fn(&[i64], usize) -> HandlerResult> {
        Calls::new(move |offsets: &[i64], _| {
            if offsets.iter().any(|o| failing.contains(o)) {
                Err(HandlerError::permanent("bad record"))
            } else {
                Ok(())
            }
        })
    }

    fn without_dead_letters<A>(calls: A) -> WithDeadLetter<A> {
        WithDeadLetter {
            writer: None,
            inner: WithRetry {
                policy: RetryPolicy::default(),
                inner: calls,
            },
        }
    }

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    proptest! {
        #[test]
        fn bisection_isolates_exactly_the_failing_records(
            n in 1usize..64, failing in proptest::collection::btree_set(0i64..64, 0..6),
        ) {
            let failing: BTreeSet<i64> = failing.into_iter().filter(|o| *o < n as i64).collect();
            let stack = without_dead_letters(failing_on(failing.clone()));
            let batch = messages(n);
            let token = CancellationToken::new();
            let released = vec![&token; n];
            let mut scope = Recorder::default();
            prop_assert!(run(stack.handle(&batch, &released, &mut scope)).is_ok());
            // Every record is settled once, in offset order; the failing ones, and only
            // they, are given up on; the others are handled.
            prop_assert_eq!(scope.finished_in_order(), (0..n as i64).collect::<Vec<_>>());
            prop_assert_eq!(scope.stuck(), failing.iter().copied().collect::<Vec<_>>());
            let handled = scope.settled(Some(Outcome::Handled { attempts: 1 }));
            prop_assert!(handled.iter().all(|o| !failing.contains(o)));
            prop_assert_eq!(handled.len() + failing.len(), n);
            // About two calls per halving for each failing record, never one per record.
            let depth = n.next_power_of_two().trailing_zeros() as usize;
            prop_assert!(stack.inner.inner.count() <= 1 + 2 * depth * failing.len().max(1));
        }

        #[test]
        fn an_ordered_scope_stops_at_the_first_failing_record(
            n in 2usize..64, failing in proptest::collection::btree_set(0i64..64, 1..6),
        ) {
            let failing: BTreeSet<i64> = failing.into_iter().filter(|o| *o < n as i64).collect();
            prop_assume!(!failing.is_empty());
            let first = *failing.first().unwrap();
            let stack = without_dead_letters(failing_on(failing));
            let batch = messages(n);
            let token = CancellationToken::new();
            let released = vec![&token; n];
            let mut scope = Recorder { halt_on_stuck: true, ..Recorder::default() };
            prop_assert!(run(stack.handle(&batch, &released, &mut scope)).is_err());
            prop_assert_eq!(scope.finished_in_order(), (0..=first).collect::<Vec<_>>());
            prop_assert_eq!(scope.stuck(), vec![first]);
            // Nothing after the stuck record was called on its own.
            let calls = stack.inner.inner.calls.lock().unwrap();
            prop_assert!(calls.iter().all(|c| c.len() > 1 || c[0] <= first));
        }
    }

    #[tokio::test]
    async fn a_single_record_gets_the_whole_retry_policy_before_it_is_given_up_on() {
        let mut stack = without_dead_letters(Calls::new(|_: &[i64], _| {
            Err(HandlerError::retryable("down"))
        }));
        stack.inner.policy =
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_backoff(crate::policy::Backoff {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(1),
                    ..Default::default()
                });
        let batch = messages(2);
        let token = CancellationToken::new();
        let mut scope = Recorder::default();
        stack
            .handle(&batch, &[&token, &token], &mut scope)
            .await
            .unwrap();
        // The batch: 3 attempts; each half, alone: 3 attempts.
        assert_eq!(stack.inner.inner.count(), 9);
        let stuck: Vec<&Told> = scope
            .told
            .iter()
            .filter(|t| matches!(t, Told::Stuck(..)))
            .collect();
        assert_eq!(
            stuck,
            [
                &Told::Stuck(0, ErrorKind::Retryable, 3),
                &Told::Stuck(1, ErrorKind::Retryable, 3)
            ]
        );
    }

    /// A dead-letter writer to `t.dlq` on `kafka`.
    fn writer(kafka: &EmbeddedKafka) -> Arc<DeadLetterWriter> {
        let mut client = Properties::new();
        client.set("bootstrap.servers", kafka.bootstrap_servers());
        let config = DeadLetter::to_topic("t.dlq").create_missing(false);
        Arc::new(DeadLetterWriter::new(config, &client, "g", None, None).unwrap())
    }

    #[tokio::test]
    async fn a_record_given_up_on_is_dead_lettered_and_settled_once_the_broker_has_it() {
        let kafka = EmbeddedKafka::start(1).unwrap();
        kafka.create_topic("t.dlq", 1).unwrap();
        let stack = WithDeadLetter {
            writer: Some(writer(&kafka)),
            inner: WithRetry {
                policy: RetryPolicy::default(),
                inner: failing_on([1].into()),
            },
        };
        let batch = messages(3);
        let token = CancellationToken::new();
        let mut scope = Recorder::default();
        stack
            .handle(&batch, &[&token; 3], &mut scope)
            .await
            .unwrap();
        assert_eq!(
            scope.settled(Some(Outcome::DeadLettered { attempts: 1 })),
            [1]
        );
        assert_eq!(scope.finished_in_order(), [0, 1, 2]);
        let high = high_watermark(kafka.bootstrap_servers(), "t.dlq", 0);
        assert_eq!(high, 1);
    }

    #[tokio::test]
    async fn a_dead_letter_write_the_broker_cannot_take_ends_when_its_record_is_released() {
        let kafka = EmbeddedKafka::start(1).unwrap();
        kafka.create_topic("t.dlq", 1).unwrap();
        kafka.broker_down(1).unwrap();
        let stack = WithDeadLetter {
            writer: Some(writer(&kafka)),
            inner: WithRetry {
                policy: RetryPolicy::default(),
                inner: failing_on([0].into()),
            },
        };
        let batch = messages(1);
        let token = CancellationToken::new();
        // Released already: the write (which the broker cannot acknowledge) is not waited on.
        token.cancel();
        let mut scope = Recorder::default();
        stack.handle(&batch, &[&token], &mut scope).await.unwrap();
        assert_eq!(scope.told, [Told::Settled(vec![0], None)]);
    }
}
