//! User layers (`ConsumerBuilder::layer`): a layer sees every attempt of every message, layers
//! compose in the order they were added (the first outermost), and what a layer answers goes
//! through the same policies as a handler's answer (retry, dead-letter, bisection of batches,
//! transactions in exactly-once mode). Each runs on the embedded broker and Apache Kafka.

#[macro_use]
#[allow(unused_macros)] // on_both_brokers: tansu is left out here.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use rdkafka::message::Message as _;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{
    batch_handler_fn, handler_fn, BatchHandler, BatchLimits, ErrorKind, Handler, HandlerError,
    HandlerResult, Layer, Message, OutputRecord,
};

use common::{committed_to_end, diagnosis, stop, unique, wait_status, Isolation, TestBroker};

/// Bound on one phase of a test (a group join, consuming a few hundred messages, a shutdown).
const PHASE: Duration = Duration::from_secs(60);

on_embedded_and_kafka!(
    a_layer_sees_every_attempt_and_layers_run_in_the_order_added,
    a_layer_error_is_retried_and_dead_lettered_like_a_handler_error,
    a_layer_wraps_a_batch_handler_and_its_bisection,
    a_layer_wraps_each_attempt_in_exactly_once_mode,
);

/// A record by partition and offset.
type Place = (i32, i64);

/// One call: who was called (a layer's name, or `handler`) with which records.
type Call = (&'static str, Vec<Place>);

/// The calls, in the order they were made.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn record(&self, who: &'static str, messages: &[Message]) {
        let places = messages
            .iter()
            .map(|m| (m.partition(), m.offset()))
            .collect();
        self.0.lock().unwrap().push((who, places));
    }

    /// The calls, in order, that `who` got with `place` among their records.
    fn of(&self, who: &'static str, place: Place) -> Vec<Vec<Place>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, places)| *w == who && places.contains(&place))
            .map(|(_, places)| places.clone())
            .collect()
    }

    /// Who was called with `place`, in order.
    fn sequence(&self, place: Place) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, places)| places.contains(&place))
            .map(|(who, _)| *who)
            .collect()
    }
}

/// What a [`Tap`] answers for the records of a call, before calling what it wraps: `None` lets
/// the call through.
type Refusal = Arc<dyn Fn(&[Message]) -> Option<HandlerError> + Send + Sync>;

/// A user layer that records each call it gets under its name, and refuses those `refuse`
/// says (without calling what it wraps). It wraps handlers and batch handlers alike.
#[derive(Clone)]
struct Tap {
    name: &'static str,
    calls: Calls,
    refuse: Refusal,
}

impl Tap {
    fn new(name: &'static str, calls: &Calls) -> Self {
        Tap {
            name,
            calls: calls.clone(),
            refuse: Arc::new(|_| None),
        }
    }

    fn refusing(
        mut self,
        refuse: impl Fn(&[Message]) -> Option<HandlerError> + Send + Sync + 'static,
    ) -> Self {
        self.refuse = Arc::new(refuse);
        self
    }

    fn enter(&self, messages: &[Message]) -> HandlerResult {
        self.calls.record(self.name, messages);
        match (self.refuse)(messages) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

struct Tapped<H> {
    tap: Tap,
    inner: H,
}

impl<H> Layer<H> for Tap {
    type Handler = Tapped<H>;

    fn layer(&self, inner: H) -> Tapped<H> {
        Tapped {
            tap: self.clone(),
            inner,
        }
    }
}

impl<H: Handler> Handler for Tapped<H> {
    async fn handle(&self, message: Message) -> HandlerResult {
        self.tap.enter(std::slice::from_ref(&message))?;
        self.inner.handle(message).await
    }
}

impl<B: BatchHandler> BatchHandler for Tapped<B> {
    async fn handle_batch(&self, batch: Vec<Message>) -> HandlerResult {
        self.tap.enter(&batch)?;
        self.inner.handle_batch(batch).await
    }
}

/// Quick retries without jitter, `attempts` in all.
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            multiplier: 2.0,
            jitter: 0.0,
        })
}

/// Places of the records whose payload is one of `payloads`.
fn places_of(produced: &[common::Produced], payloads: &BTreeSet<String>) -> BTreeSet<Place> {
    produced
        .iter()
        .filter(|r| payloads.contains(&r.payload))
        .map(|r| (r.partition, r.offset))
        .collect()
}

fn payload(m: &Message) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}

/// Two layers added outer then inner around a handler that fails the first attempt of every
/// tenth record: each layer sees each attempt (two for those records, one for the others), and
/// every attempt goes outer -> inner -> handler.
async fn a_layer_sees_every_attempt_and_layers_run_in_the_order_added(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("layers-attempts");
    let (produced, end) = broker.fill_topic(&topic, 2, 50).await?;
    let flaky: BTreeSet<Place> = produced
        .iter()
        .step_by(10)
        .map(|r| (r.partition, r.offset))
        .collect();

    let calls = Calls::default();
    let failed = Arc::new(Mutex::new(BTreeSet::new()));
    let handle = broker
        .consumer(&unique("layers-attempts-group"), &topic)
        .retry_policy(quick_retries(3))
        .commit_interval(Duration::from_millis(100))
        .layer(Tap::new("outer", &calls))
        .layer(Tap::new("inner", &calls))
        .build(handler_fn({
            let (calls, flaky) = (calls.clone(), flaky.clone());
            move |msg: Message| {
                calls.record("handler", std::slice::from_ref(&msg));
                let place = (msg.partition(), msg.offset());
                let fail = flaky.contains(&place) && failed.lock().unwrap().insert(place);
                std::future::ready(match fail {
                    true => Err(HandlerError::retryable("first attempt fails")),
                    false => Ok(()),
                })
            }
        }))?
        .spawn()?;
    let s = wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end)
    })
    .await?;
    stop(handle).await?;

    ensure!(s.retried == flaky.len() as u64, "retried {}", s.retried);
    for r in &produced {
        let place = (r.partition, r.offset);
        let attempts = if flaky.contains(&place) { 2 } else { 1 };
        let expected: Vec<&str> = ["outer", "inner", "handler"]
            .into_iter()
            .cycle()
            .take(3 * attempts)
            .collect();
        let seen = calls.sequence(place);
        ensure!(
            seen == expected,
            "{place:?}: calls {seen:?}, expected {expected:?}"
        );
    }
    Ok(())
}

/// A layer refuses two records without calling the handler: one with a retryable error, one
/// with a permanent one. The first is tried `max_attempts` times, the second once, and both
/// are dead-lettered with the layer's error, as a handler's errors would be; the rest is
/// handled and committed.
async fn a_layer_error_is_retried_and_dead_lettered_like_a_handler_error(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("layers-errors");
    let (produced, end) = broker.fill_topic(&topic, 2, 100).await?;
    let (retryable, permanent) = (produced[17].clone(), produced[160].clone());

    let calls = Calls::default();
    let refuse = {
        let (retryable, permanent) = (retryable.payload.clone(), permanent.payload.clone());
        move |messages: &[Message]| {
            let p = payload(&messages[0]);
            (p == retryable)
                .then(|| HandlerError::retryable("the layer refuses it, for now"))
                .or_else(|| (p == permanent).then(|| HandlerError::permanent("refused for good")))
        }
    };
    let handle = broker
        .consumer(&unique("layers-errors-group"), &topic)
        .retry_policy(quick_retries(3))
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(100))
        .layer(Tap::new("layer", &calls).refusing(refuse))
        .build(handler_fn({
            let calls = calls.clone();
            move |msg: Message| {
                calls.record("handler", std::slice::from_ref(&msg));
                std::future::ready(Ok(()))
            }
        }))?
        .spawn()?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 2
    })
    .await?;
    let dlq = broker
        .read_records(&format!("{topic}.dlq"), 2, PHASE)
        .await?;
    stop(handle).await?;

    for (record, attempts, kind, error) in [
        (&retryable, 3, ErrorKind::Retryable, "the layer refuses it"),
        (&permanent, 1, ErrorKind::Permanent, "refused for good"),
    ] {
        let place = (record.partition, record.offset);
        let seen = calls.sequence(place);
        ensure!(
            seen == vec!["layer"; attempts],
            "{place:?}: calls {seen:?}, expected {attempts} of the layer alone"
        );
        let letter = dlq
            .iter()
            .find(|m| m.payload() == Some(record.payload.as_bytes()))
            .with_context(|| format!("{place:?} not dead-lettered"))?;
        let d = diagnosis(letter)?;
        ensure!(
            (
                d.original_partition,
                d.original_offset,
                d.attempts,
                d.error_kind
            ) == (place.0, place.1, attempts as u32, kind)
                && d.error_message.contains(error),
            "{place:?}: dead-lettered as {d:?}"
        );
    }
    let bad = places_of(
        &produced,
        &BTreeSet::from([retryable.payload.clone(), permanent.payload.clone()]),
    );
    for r in &produced {
        let place = (r.partition, r.offset);
        if !bad.contains(&place) {
            let seen = calls.sequence(place);
            ensure!(seen == ["layer", "handler"], "{place:?}: calls {seen:?}");
        }
    }
    Ok(())
}

/// A layer around a batch handler that refuses every batch holding a poison record: it sees
/// each batch the handler would, the bisected halves included, and the single poison record's
/// `max_attempts` calls; only that record is dead-lettered, the rest reaches the handler.
async fn a_layer_wraps_a_batch_handler_and_its_bisection(broker: TestBroker) -> anyhow::Result<()> {
    let topic = unique("layers-batches");
    let (produced, end) = broker.fill_topic(&topic, 1, 200).await?;
    let poison = produced[77].clone();
    let poison_place = (poison.partition, poison.offset);

    let calls = Calls::default();
    let refuse = {
        let poison = poison.payload.clone();
        move |batch: &[Message]| {
            batch
                .iter()
                .any(|m| payload(m) == poison)
                .then(|| HandlerError::retryable("the batch holds a poison record"))
        }
    };
    let handle = broker
        .consumer(&unique("layers-batches-group"), &topic)
        .batch_limits(
            BatchLimits::default()
                .max_messages(50)
                .max_wait(Duration::from_millis(50)),
        )
        .retry_policy(quick_retries(2))
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(100))
        .layer(Tap::new("layer", &calls).refusing(refuse))
        .build_batch(batch_handler_fn({
            let calls = calls.clone();
            move |batch: Vec<Message>| {
                calls.record("handler", &batch);
                std::future::ready(Ok(()))
            }
        }))?
        .spawn()?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 1
    })
    .await?;
    stop(handle).await?;

    // The layer got batches (not single records) until the bisection came down to the poison
    // record, which then had its 2 attempts alone.
    let with_poison = calls.of("layer", poison_place);
    ensure!(
        with_poison.first().is_some_and(|b| b.len() > 1),
        "the layer's first call with the poison record was not a batch: {with_poison:?}"
    );
    let alone = with_poison.iter().filter(|b| b.len() == 1).count();
    ensure!(
        alone == 2 && with_poison.last().is_some_and(|b| b.len() == 1),
        "the poison record alone: {alone} calls of the layer, expected 2: {with_poison:?}"
    );
    ensure!(calls.of("handler", poison_place).is_empty());
    // Every other record reached the handler, and each handler call went through the layer.
    let handled: BTreeSet<Place> = calls
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(who, _)| *who == "handler")
        .flat_map(|(_, places)| places.iter().copied())
        .collect();
    ensure!(
        handled.len() == produced.len() - 1,
        "{} handled",
        handled.len()
    );
    for r in &produced {
        let place = (r.partition, r.offset);
        let seen = calls.sequence(place);
        ensure!(
            seen.iter().filter(|w| **w == "layer").count()
                >= seen.iter().filter(|w| **w == "handler").count(),
            "{place:?}: handler called without the layer: {seen:?}"
        );
    }
    Ok(())
}

/// In exactly-once mode, a layer that fails the first attempt of every 30th record after the
/// handler sent its output makes that attempt's output dropped, and the record is retried
/// through the layer: the layer sees two attempts of those records, no transaction aborts, and
/// the output topic holds each output once, even for a `read_uncommitted` reader (so on every
/// broker).
async fn a_layer_wraps_each_attempt_in_exactly_once_mode(broker: TestBroker) -> anyhow::Result<()> {
    let input = unique("layers-eos-in");
    let output_topic = unique("layers-eos-out");
    let (produced, end) = broker.fill_topic(&input, 1, 100).await?;
    broker.create_topic(&output_topic, 1).await?;
    let flaky: BTreeSet<Place> = produced
        .iter()
        .skip(5)
        .step_by(30)
        .map(|r| (r.partition, r.offset))
        .collect();

    /// Fails, once per record of `flaky`, the attempt after it went through.
    #[derive(Clone)]
    struct FailAfter {
        flaky: BTreeSet<Place>,
        failed: Arc<Mutex<BTreeSet<Place>>>,
        calls: Calls,
    }
    struct FailingAfter<H>(FailAfter, H);
    impl<H> Layer<H> for FailAfter {
        type Handler = FailingAfter<H>;
        fn layer(&self, inner: H) -> FailingAfter<H> {
            FailingAfter(self.clone(), inner)
        }
    }
    impl<H: Handler> Handler for FailingAfter<H> {
        async fn handle(&self, msg: Message) -> HandlerResult {
            let layer = &self.0;
            layer.calls.record("layer", std::slice::from_ref(&msg));
            let place = (msg.partition(), msg.offset());
            self.1.handle(msg).await?;
            if layer.flaky.contains(&place) && layer.failed.lock().unwrap().insert(place) {
                return Err(HandlerError::retryable("failing after the output, once"));
            }
            Ok(())
        }
    }

    let calls = Calls::default();
    let mut builder = broker
        .consumer(&unique("layers-eos-group"), &input)
        .exactly_once(unique("layers-eos-tx"))
        .retry_policy(quick_retries(5))
        .layer(FailAfter {
            flaky: flaky.clone(),
            failed: Arc::default(),
            calls: calls.clone(),
        });
    let output = builder.output()?;
    let handle = builder
        .build(handler_fn({
            let topic = output_topic.clone();
            move |msg: Message| {
                let (output, topic) = (output.clone(), topic.clone());
                async move {
                    let key = msg.payload().unwrap_or_default().to_vec();
                    output
                        .send(OutputRecord::to(topic).key(key.clone()).payload(key))
                        .await?;
                    Ok(())
                }
            }
        }))?
        .spawn()?;
    let s = wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        committed_to_end(s, &input, &end)
    })
    .await?;
    stop(handle).await?;

    ensure!(
        s.transactions_aborted == 0 && s.retried >= flaky.len() as u64,
        "{} transactions aborted (a layer's failure must abort none), {} retries for {} \
         failures",
        s.transactions_aborted,
        s.retried,
        flaky.len()
    );
    for r in &produced {
        let place = (r.partition, r.offset);
        let attempts = calls.of("layer", place).len();
        ensure!(
            attempts == 2 || (attempts >= 1 && !flaky.contains(&place)),
            "{place:?}: {attempts} attempts seen by the layer"
        );
    }
    let read = broker
        .read_to_end(&output_topic, Isolation::ReadUncommitted, PHASE)
        .await?;
    let mut outputs: BTreeMap<String, usize> = BTreeMap::new();
    for m in &read {
        *outputs.entry(payload_of(m)).or_default() += 1;
    }
    ensure!(
        outputs.len() == produced.len(),
        "{} distinct outputs for {} inputs",
        outputs.len(),
        produced.len()
    );
    let twice: Vec<_> = outputs.iter().filter(|(_, n)| **n != 1).collect();
    ensure!(
        twice.is_empty(),
        "outputs written more than once: {twice:?}"
    );
    Ok(())
}

fn payload_of(m: &rdkafka::message::OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}
