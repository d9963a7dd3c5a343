//! Batch handlers: batches stay within their count, byte and wait bounds, keep partition order,
//! and a poison record inside a batch is isolated, dead-lettered alone, while the rest finish.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use rdkafka::message::Message as _;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{batch_handler_fn, BatchLimits, HandlerError, Message, Ordering};

use common::{committed_to_end, diagnosis, stop, unique, wait_status, Recorder, TestBroker};

const PHASE: Duration = Duration::from_secs(60);

on_both_brokers!(
    batches_respect_their_count_and_byte_bounds_and_partition_order,
    poison_record_in_a_batch_of_200_is_dead_lettered_alone,
);

/// One call's batch, as `(partition, offset, bytes)` per message.
type Call = Vec<(i32, i64, usize)>;

/// Every call's batch.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn record(&self, batch: &[Message]) {
        let seen = batch
            .iter()
            .map(|m| (m.partition(), m.offset(), m.size()))
            .collect();
        self.0.lock().unwrap().push(seen);
    }

    fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
}

/// Consumes `topic` to its end with a batch handler that records each call; returns the calls.
async fn consume_in_batches(
    broker: &TestBroker,
    topic: &str,
    end: &BTreeMap<i32, i64>,
    total: usize,
    ordering: Ordering,
    limits: BatchLimits,
) -> anyhow::Result<Vec<Call>> {
    let calls = Calls::default();
    let recorder = Recorder::default();
    let handle = broker
        .consumer(&unique("batch-group"), topic)
        .ordering(ordering)
        .batch_limits(limits)
        .commit_interval(Duration::from_millis(200))
        .build_batch(batch_handler_fn({
            let (calls, recorder) = (calls.clone(), recorder.clone());
            move |batch: Vec<Message>| {
                calls.record(&batch);
                batch.iter().for_each(|m| recorder.record(m));
                std::future::ready(Ok(()))
            }
        }))?
        .spawn()?;
    recorder.wait_for(total, PHASE).await?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        committed_to_end(s, topic, end)
    })
    .await?;
    stop(handle).await?;
    let handled: Vec<(i32, i64)> = recorder
        .handled()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect();
    let distinct: BTreeSet<_> = handled.iter().collect();
    ensure!(
        handled.len() == total && distinct.len() == total,
        "{} handled, {} distinct, {total} produced",
        handled.len(),
        distinct.len()
    );
    Ok(calls.all())
}

/// A backlog is handed over in full batches of the count bound, each from one partition and in
/// offset order; with a byte bound, no batch exceeds it; the tail is handed over by the wait
/// bound, not held back for a full batch.
async fn batches_respect_their_count_and_byte_bounds_and_partition_order(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("batches");
    // 1,050 per partition: five full batches of 200, then a tail of 50 that only the wait
    // bound can hand over.
    let (produced, end) = broker.fill_topic(&topic, 2, 1_050).await?;
    let by_count = BatchLimits::default()
        .max_messages(200)
        .max_wait(Duration::from_millis(200));
    let calls = consume_in_batches(
        &broker,
        &topic,
        &end,
        produced.len(),
        Ordering::Partition,
        by_count,
    )
    .await?;
    ensure!(
        calls.iter().all(|b| !b.is_empty() && b.len() <= 200),
        "a batch over 200"
    );
    ensure!(
        calls.iter().filter(|b| b.len() == 200).count() >= 2,
        "no full batches from a backlog of 2 x 1,050: sizes {:?}",
        calls.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for batch in &calls {
        let partition = batch[0].0;
        ensure!(
            batch.iter().all(|m| m.0 == partition),
            "a batch mixes partitions in partition order"
        );
        for (p, offset, _) in batch {
            let expected = next.entry(*p).or_insert(0);
            ensure!(
                *offset == *expected,
                "partition {p}: offset {offset} handed over when {expected} was next"
            );
            *expected += 1;
        }
    }

    let size = calls[0][0].2;
    let max_bytes = size * 25 + size / 2;
    let by_bytes = BatchLimits::default()
        .max_messages(200)
        .max_bytes(max_bytes)
        .max_wait(Duration::from_millis(200));
    let calls = consume_in_batches(
        &broker,
        &topic,
        &end,
        produced.len(),
        Ordering::Partition,
        by_bytes,
    )
    .await?;
    let largest = calls
        .iter()
        .flatten()
        .map(|m| m.2)
        .max()
        .unwrap_or_default();
    let bytes = |b: &Call| b.iter().map(|m| m.2).sum::<usize>();
    for batch in &calls {
        ensure!(
            bytes(batch) <= max_bytes,
            "a batch of {} bytes over the bound of {max_bytes}",
            bytes(batch)
        );
    }
    ensure!(
        calls
            .iter()
            .filter(|b| bytes(b) + largest > max_bytes)
            .count()
            >= calls.len() / 2,
        "the byte bound rarely filled a batch: sizes {:?}",
        calls.iter().map(Vec::len).collect::<Vec<_>>()
    );
    Ok(())
}

/// In the unordered mode batches are cut across partitions: a backlog on four partitions is
/// handed over in batches that mix them, and everything is handled once and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_batches_mix_partitions() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let topic = unique("mixed");
    // 530 per partition, not a multiple of the batch size, and a wait long enough for the
    // backlog to fill every batch by count: even when the fetches hand partitions over one
    // after another, a batch boundary falls inside a partition's run and the next one mixes.
    let (produced, end) = broker.fill_topic(&topic, 4, 530).await?;
    let limits = BatchLimits::default()
        .max_messages(100)
        .max_wait(Duration::from_secs(2));
    let calls = consume_in_batches(
        &broker,
        &topic,
        &end,
        produced.len(),
        Ordering::Unordered,
        limits,
    )
    .await?;
    ensure!(calls.iter().all(|b| b.len() <= 100), "a batch over 100");
    ensure!(
        calls
            .iter()
            .any(|b| b.iter().map(|m| m.0).collect::<BTreeSet<_>>().len() > 1),
        "no batch mixed partitions"
    );
    Ok(())
}

/// One poison record among the first 200 of a partition: the batch of 200 it is in fails, is
/// bisected down to the record, which alone goes to the dead-letter topic with its diagnosis;
/// the other 199 of that batch and everything after finish, and the group commits to the end.
async fn poison_record_in_a_batch_of_200_is_dead_lettered_alone(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("batch-poison");
    let (produced, end) = broker.fill_topic(&topic, 1, 600).await?;
    let poison = produced[137].payload.clone();

    let calls = Calls::default();
    let recorder = Recorder::default();
    let handle = broker
        .consumer(&unique("batch-poison-group"), &topic)
        .batch_limits(BatchLimits::default().max_messages(200))
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(2)
                .with_backoff(Backoff {
                    initial: Duration::from_millis(5),
                    max: Duration::from_millis(5),
                    multiplier: 1.0,
                    jitter: 0.0,
                }),
        )
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(200))
        .build_batch(batch_handler_fn({
            let (calls, recorder, poison) = (calls.clone(), recorder.clone(), poison.clone());
            move |batch: Vec<Message>| {
                calls.record(&batch);
                let bad = batch.iter().any(|m| m.payload() == Some(poison.as_bytes()));
                std::future::ready(if bad {
                    Err(HandlerError::retryable("the batch holds a poison record"))
                } else {
                    batch.iter().for_each(|m| recorder.record(m));
                    Ok(())
                })
            }
        }))?
        .spawn()?;
    recorder.wait_for(produced.len() - 1, PHASE).await?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 1
    })
    .await?;
    let dlq = broker
        .read_records(&format!("{topic}.dlq"), 1, PHASE)
        .await?;
    stop(handle).await?;

    let first = &calls.all()[0];
    ensure!(
        first.len() == 200 && first.iter().any(|m| m.1 == produced[137].offset),
        "the poison record was not in a first batch of 200 (it had {})",
        first.len()
    );
    let handled: BTreeSet<i64> = recorder.handled().iter().map(|h| h.offset).collect();
    let expected: BTreeSet<i64> = produced
        .iter()
        .filter(|p| p.payload != poison)
        .map(|p| p.offset)
        .collect();
    ensure!(
        handled == expected,
        "handled offsets differ from all but the poison record"
    );
    ensure!(dlq.len() == 1, "{} dead letters", dlq.len());
    let record = &dlq[0];
    ensure!(
        record.payload() == Some(poison.as_bytes()),
        "the dead letter is not the poison record"
    );
    let diagnosis = diagnosis(record)?;
    ensure!(
        diagnosis.original_offset == produced[137].offset && diagnosis.attempts == 2,
        "{diagnosis:?}"
    );
    Ok(())
}
