//! Exactly-once consume-transform-produce: outputs and input offsets commit in one transaction,
//! a failing handler's outputs are never written, and a pipeline crashed at random points and
//! restarted leaves each input's output committed once.
//!
//! Outputs are read back twice (`ReadBack`): with `isolation.level=read_committed`, as the
//! pipeline's downstream must read them, and with `read_uncommitted`, which also shows the
//! records of aborted transactions, so that a test sees the aborts a crash leaves stay hidden,
//! and that a failed handler call wrote nothing at all (its outputs are dropped before any
//! transaction: that holds on every broker).
//!
//! What the test brokers lack (found by these tests; see also the crate's docs):
//! - librdkafka's mock cluster (embedded) answers the transaction requests but implements none
//!   of their effects: `TxnOffsetCommit` stores no offset, `EndTxn` writes no commit or abort
//!   marker, and fetches report no aborted transactions (last stable offset = high watermark).
//! - tansu 0.6 stores transactional offset commits and writes the markers, but its fetch
//!   reports no aborted transactions and no last stable offset, so a `read_committed` reader
//!   also sees aborted records and records of open transactions.
//!
//! So on these two brokers the tests assert what they can (no loss, offsets committed with the
//! transactions, aborts happening) and report exactly-once delivery as not checkable, unless
//! [`hides_aborted_records`] finds the broker does hide them. On Apache Kafka (the one the tests
//! start, or `SLUICEGATE_TEST_BOOTSTRAP`) everything is asserted, and two scenarios run there
//! only: a consumer process killed with SIGKILL mid-transaction and restarted
//! (`examples/transform.rs`), and a zombie instance fenced by its replacement.
//!
//! Each scenario prints a `RELIABILITY | exactly-once | ...` line (run with `--nocapture`;
//! RELIABILITY.md collects them).

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Message as _, TopicPartitionList};
use sluicegate::metrics::Metrics;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{
    batch_handler_fn, handler_fn, BatchLimits, ConsumerHandle, HandlerError, Message, OutputRecord,
};
use tokio::task::block_in_place;

use common::http::sample;
use common::process::{example_binary, tail, ExampleProcess};
use common::{unique, wait_status, Isolation, Kind, TestBroker};

const PHASE: Duration = Duration::from_secs(60);
/// How long one request of the watch to the broker may take.
const REQUEST: Duration = Duration::from_secs(10);

on_both_brokers!(
    outputs_and_offsets_commit_together,
    crashed_and_restarted_pipeline_commits_each_result_once,
);
// The other test brokers cannot show exactly-once delivery (see the module's docs).
on_kafka!(
    zombie_with_the_same_transactional_id_is_fenced,
    a_rebalance_between_two_instances_commits_each_output_once,
    process_killed_mid_transaction_commits_each_output_once,
);

/// An input -> output pipeline: each input `topic:p:i` becomes one output keyed by it. Fails
/// the first attempt of every `fail_every`-th input (0: never) after sending its output, which
/// must then never be written.
fn pipeline(
    broker: &TestBroker,
    group: &str,
    input: &str,
    output_topic: &str,
    transactional_id: &str,
    fail_every: usize,
    metrics: &Metrics,
) -> anyhow::Result<ConsumerHandle> {
    let mut builder = broker
        .consumer(group, input)
        .metrics(metrics.clone())
        .exactly_once(transactional_id)
        // Transactions often, so that crashes find some open.
        .commit_interval(Duration::from_millis(100))
        .retry_policy(RetryPolicy::default().with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: 0.0,
        }));
    let output = builder.output()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let output_topic = output_topic.to_string();
    Ok(builder
        .build(handler_fn(move |msg: Message| {
            let (output, topic, calls, failed) = (
                output.clone(),
                output_topic.clone(),
                calls.clone(),
                failed.clone(),
            );
            async move {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                let key = msg.payload().unwrap_or_default().to_vec();
                output
                    .send(OutputRecord::to(topic).key(key.clone()).payload(key))
                    .await?;
                if fail_every > 0
                    && n % fail_every == 0
                    && failed.lock().unwrap().insert(msg.offset())
                {
                    return Err(HandlerError::retryable("failing after sending, once"));
                }
                Ok(())
            }
        }))?
        .spawn()?)
}

/// An output topic read back twice: by a `read_committed` reader, which a pipeline's downstream
/// uses, and by a `read_uncommitted` one, which also sees the records of aborted transactions.
struct ReadBack {
    /// Output keys as the `read_committed` reader saw them, with how often.
    committed: BTreeMap<String, usize>,
    /// The records the `read_uncommitted` reader saw and the `read_committed` one did not (by
    /// partition and offset): outputs of aborted transactions, as (partition, offset, key,
    /// value).
    aborted: Vec<(i32, i64, String, String)>,
    /// Records the `read_uncommitted` reader saw.
    uncommitted: usize,
}

impl ReadBack {
    /// Reads `topic` both ways, to its end.
    async fn read(broker: &TestBroker, topic: &str) -> anyhow::Result<ReadBack> {
        let committed = broker
            .read_to_end(topic, Isolation::ReadCommitted, PHASE)
            .await?;
        let all = broker
            .read_to_end(topic, Isolation::ReadUncommitted, PHASE)
            .await?;
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let place = |m: &OwnedMessage| (m.partition(), m.offset());
        let seen: BTreeSet<(i32, i64)> = all.iter().map(place).collect();
        let visible: BTreeSet<(i32, i64)> = committed.iter().map(place).collect();
        let unknown: Vec<_> = visible.difference(&seen).collect();
        ensure!(
            unknown.is_empty(),
            "the read_committed reader saw records the read_uncommitted one did not: {:?}",
            &unknown[..unknown.len().min(5)]
        );
        let mut keys = BTreeMap::new();
        for m in &committed {
            *keys.entry(text(m.key())).or_insert(0) += 1;
        }
        Ok(ReadBack {
            committed: keys,
            aborted: all
                .iter()
                .filter(|m| !visible.contains(&place(m)))
                .map(|m| (m.partition(), m.offset(), text(m.key()), text(m.payload())))
                .collect(),
            uncommitted: all.len(),
        })
    }
}

/// Whether a `read_committed` reader of this broker skips records of aborted transactions:
/// writes one aborted and one committed record and reads them back.
async fn hides_aborted_records(broker: &TestBroker) -> anyhow::Result<bool> {
    let topic = unique("txn-probe");
    broker.create_topic(&topic, 1).await?;
    let mut client = broker.client();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let producer: BaseProducer = client.set("transactional.id", unique("probe")).create()?;
        producer.init_transactions(Duration::from_secs(10))?;
        for (payload, commit) in [("aborted", false), ("committed", true)] {
            producer.begin_transaction()?;
            producer
                .send(BaseRecord::to(&t).key(payload).payload(payload))
                .map_err(|(e, _)| e)?;
            producer.flush(Duration::from_secs(10))?;
            if commit {
                producer.commit_transaction(Duration::from_secs(10))?;
            } else {
                producer.abort_transaction(Duration::from_secs(10))?;
            }
        }
        Ok(())
    })
    .await??;
    Ok(!ReadBack::read(broker, &topic)
        .await?
        .committed
        .contains_key("aborted"))
}

fn input_keys(produced: &[common::Produced]) -> Vec<String> {
    produced.iter().map(|p| p.payload.clone()).collect()
}

/// Checks the outputs against the inputs, read back `read_committed`: each input's output at
/// least once, and exactly once (no other record either) where `read_committed` readers are
/// known to hide aborted records: on Apache Kafka and an external broker always, elsewhere when
/// [`hides_aborted_records`] finds they do. Returns the read-back and whether exactly-once was
/// checked.
async fn check_outputs(
    broker: &TestBroker,
    output_topic: &str,
    inputs: &[String],
) -> anyhow::Result<(ReadBack, bool)> {
    let back = ReadBack::read(broker, output_topic).await?;
    let seen = &back.committed;
    let missing: Vec<&String> = inputs.iter().filter(|k| !seen.contains_key(*k)).collect();
    ensure!(
        missing.is_empty(),
        "{} inputs have no output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let exact = match broker.kind() {
        Kind::Kafka | Kind::External => true,
        Kind::Embedded | Kind::Tansu => hides_aborted_records(broker).await?,
    };
    if exact {
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(
            twice.is_empty(),
            "{} outputs committed more than once, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(3)]
        );
        ensure!(
            seen.len() == inputs.len(),
            "{} outputs for {} inputs",
            seen.len(),
            inputs.len()
        );
    } else {
        eprintln!(
            "NOT CHECKED on {:?}: its read_committed readers see aborted records, so exactly-once \
             delivery of outputs cannot be observed ({} distinct outputs, {} records)",
            broker.kind(),
            seen.len(),
            seen.values().sum::<usize>()
        );
    }
    Ok((back, exact))
}

/// The group's offsets, as the broker stores them, reach the log end: the transactions
/// committed them. (The mock cluster stores no transactional offset commit.)
async fn check_group_offsets(
    broker: &TestBroker,
    group: &str,
    input: &str,
    end: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    if broker.kind() == Kind::Embedded {
        return Ok(());
    }
    let committed = broker.committed_offsets(group, input).await?;
    ensure!(
        &committed == end,
        "group offsets {committed:?}, log end {end:?}"
    );
    Ok(())
}

/// A pipeline with a handler failing once every 97 inputs after sending its output: every
/// input reaches the output once, the failed calls' outputs are never written (on every
/// broker: the `read_uncommitted` reader sees one record per input), no transaction aborts,
/// and the group's offsets are committed by the transactions.
async fn outputs_and_offsets_commit_together(broker: TestBroker) -> anyhow::Result<()> {
    let (input, output_topic, group) = (unique("eos-in"), unique("eos-out"), unique("eos"));
    let (produced, end) = broker.fill_topic(&input, 2, 300).await?;
    broker.create_topic(&output_topic, 2).await?;
    let metrics = Metrics::new();
    let handle = pipeline(
        &broker,
        &group,
        &input,
        &output_topic,
        &unique("tx"),
        97,
        &metrics,
    )?;
    let status = wait_status(
        &mut handle.status(),
        PHASE,
        "commits at the log end, the failures retried",
        |s| {
            // Every 97th call fails, at most once per offset: 6 or 7 of the 600.
            s.retried >= 6
                && end
                    .iter()
                    .all(|(p, e)| s.committed.get(&common::tp(&input, *p)) == Some(e))
        },
    )
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;
    ensure!(
        status.transactions_aborted == 0,
        "{} aborted transactions: a handler failure must abort none",
        status.transactions_aborted
    );
    ensure!(
        status.transactions_committed >= 1,
        "{} transactions committed",
        status.transactions_committed
    );
    // The metrics count what the status counts; each input is processed once, by the one
    // transaction that committed it.
    let text = metrics.encode_prometheus();
    let by_group = ("group", group.as_str());
    for (name, label, want) in [
        (
            "sluicegate_transactions_total",
            ("result", "committed"),
            status.transactions_committed,
        ),
        (
            "sluicegate_transactions_total",
            ("result", "aborted"),
            status.transactions_aborted,
        ),
        (
            "sluicegate_messages_processed_total",
            ("topic", input.as_str()),
            produced.len() as u64,
        ),
    ] {
        // A series is only written once counted: none for no aborted transaction.
        let got = sample(&text, name, &[by_group, label]).or((want == 0).then_some(0.0));
        ensure!(
            got == Some(want as f64),
            "{name}{label:?} = {got:?}, want {want}\n{text}"
        );
    }
    check_group_offsets(&broker, &group, &input, &end).await?;
    let (back, exact) = check_outputs(&broker, &output_topic, &input_keys(&produced)).await?;
    only_committed_outputs_written(&back, produced.len())?;
    report(
        &broker,
        "handler failures write nothing, retries commit",
        produced.len(),
        &back,
        exact,
        &format!(
            "transactions {} committed, {} aborted",
            status.transactions_committed, status.transactions_aborted
        ),
    );
    Ok(())
}

/// On a broker that can show it: the group committed the input's log end, and the output
/// topic holds each input's output exactly once and nothing else (see
/// [`only_committed_outputs_written`]). Returns the read-back.
async fn check_exactly_once(
    broker: &TestBroker,
    group: &str,
    input: &str,
    end: &BTreeMap<i32, i64>,
    output_topic: &str,
    produced: &[common::Produced],
) -> anyhow::Result<ReadBack> {
    check_group_offsets(broker, group, input, end).await?;
    let (back, exact) = check_outputs(broker, output_topic, &input_keys(produced)).await?;
    ensure!(
        exact,
        "exactly-once delivery is always checked on {:?}",
        broker.kind()
    );
    only_committed_outputs_written(&back, produced.len())?;
    Ok(back)
}

/// Nothing but each input's one output reached the output topic, even for a
/// `read_uncommitted` reader: the outputs of failed handler calls were never written. Checkable
/// on every broker, since no transaction aborted.
fn only_committed_outputs_written(back: &ReadBack, inputs: usize) -> anyhow::Result<()> {
    ensure!(
        back.aborted.is_empty() && back.uncommitted == inputs,
        "{} records for {inputs} inputs, {} of them not committed: outputs of failed handler \
         calls reached the broker",
        back.uncommitted,
        back.aborted.len()
    );
    Ok(())
}

/// Prints the `RELIABILITY |` line of an exactly-once scenario (RELIABILITY.md collects them).
fn report(
    broker: &TestBroker,
    scenario: &str,
    inputs: usize,
    back: &ReadBack,
    exact: bool,
    more: &str,
) {
    let outputs: usize = back.committed.values().sum();
    let duplicates: usize = back.committed.values().map(|n| n - 1).sum();
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(" | {more}")
    };
    eprintln!(
        "RELIABILITY | exactly-once | {scenario} | {} | inputs {inputs} | committed outputs \
         {outputs} (read_committed) | missing {} | duplicates {} | aborted records {} (seen \
         read_uncommitted only; {} records in all){more}",
        broker.kind().name(),
        inputs.saturating_sub(back.committed.len()),
        if exact {
            duplicates.to_string()
        } else {
            format!("{duplicates} (not checkable)")
        },
        back.aborted.len(),
        back.uncommitted,
    );
}

/// The pipeline is aborted (as a crash: no commit, no abort, transaction left open) at random
/// moments five times and restarted with the same transactional id, which fences the dead
/// instance and aborts what it left open. In the end every input has its output, and — where
/// the broker can show it — each exactly once.
async fn crashed_and_restarted_pipeline_commits_each_result_once(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let (input, output_topic, group) = (unique("crash-in"), unique("crash-out"), unique("crash"));
    let transactional_id = unique("tx");
    broker.create_topic(&input, 2).await?;
    broker.create_topic(&output_topic, 2).await?;
    // Each round gets new inputs, so that it has work to crash in.
    let mut produced = Vec::new();
    let add_inputs = |round: usize| {
        broker.produce_records(
            &input,
            (0..200).map(move |i| (Some(i % 2), format!("key-{i}"), format!("{round}:{i}"))),
        )
    };
    let mut rng = rand::rng();
    let start = || {
        let metrics = Metrics::new();
        pipeline(
            &broker,
            &group,
            &input,
            &output_topic,
            &transactional_id,
            0,
            &metrics,
        )
    };
    for round in 0..5 {
        produced.extend(add_inputs(round).await?);
        let handle = start()?;
        // Crash once the instance has committed something new, at a random moment after.
        let before = handle.status().current().transactions_committed;
        wait_status(&mut handle.status(), PHASE, "a transaction", |s| {
            s.transactions_committed > before || s.stopped
        })
        .await
        .with_context(|| format!("round {round}"))?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        handle.abort();
        tokio::time::timeout(PHASE, handle.wait()).await??;
    }
    produced.extend(add_inputs(5).await?);
    let end = broker.log_end(&input, &produced).await?;
    let handle = start()?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        end.iter()
            .all(|(p, e)| s.committed.get(&common::tp(&input, *p)) == Some(e))
    })
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;
    check_group_offsets(&broker, &group, &input, &end).await?;
    let (back, exact) = check_outputs(&broker, &output_topic, &input_keys(&produced)).await?;
    report(
        &broker,
        "pipeline aborted 5 times in-process",
        produced.len(),
        &back,
        exact,
        "",
    );
    Ok(())
}

/// A retry waiting out its back-off ends when the pipeline shuts down: the shutdown does not
/// wait for the back-off (ten minutes here), and the handler is not called again. On the
/// embedded broker: the lanes are the same on every broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_wait_ends_when_the_pipeline_shuts_down() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let (input, output_topic, group) = (unique("held-in"), unique("held-out"), unique("held"));
    broker.fill_topic(&input, 1, 1).await?;
    broker.create_topic(&output_topic, 1).await?;
    let mut builder = broker
        .consumer(&group, &input)
        .exactly_once(unique("tx"))
        .retry_policy(RetryPolicy::default().with_backoff(Backoff {
            initial: Duration::from_secs(600),
            max: Duration::from_secs(600),
            multiplier: 1.0,
            jitter: 0.0,
        }));
    let _output = builder.output()?;
    let (called, mut calls) = tokio::sync::mpsc::unbounded_channel();
    let handle = builder
        .build(handler_fn(move |_: Message| {
            let called = called.clone();
            async move {
                let _ = called.send(());
                Err(HandlerError::retryable("downstream down"))
            }
        }))?
        .spawn()?;
    tokio::time::timeout(PHASE, calls.recv())
        .await?
        .context("the handler was never called")?;
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .context("the shutdown waited for the retry's back-off")??;
    ensure!(calls.try_recv().is_err(), "the handler was called again");
    Ok(())
}

/// A retry waiting a second or more pauses its partition until the message is done: nothing
/// fetched before or after the pause is lost, and every input is handled and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_wait_pauses_and_resumes_without_losing_records() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let (input, group) = (unique("paused-in"), unique("paused"));
    let (produced, end) = broker.fill_topic(&input, 2, 200).await?;
    let mut builder = broker
        .consumer(&group, &input)
        .exactly_once(unique("tx"))
        .retry_policy(RetryPolicy::default().with_backoff(Backoff {
            initial: Duration::from_millis(1200),
            max: Duration::from_millis(1200),
            multiplier: 1.0,
            jitter: 0.0,
        }));
    let _output = builder.output()?;
    let handled = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let (seen, fails) = (handled.clone(), failed.clone());
    let handle = builder
        .build(handler_fn(move |msg: Message| {
            let (seen, fails) = (seen.clone(), fails.clone());
            async move {
                let at = (msg.partition(), msg.offset());
                if at == (0, 30) && fails.fetch_add(1, Ordering::Relaxed) == 0 {
                    return Err(HandlerError::retryable("failing once"));
                }
                seen.lock().unwrap().insert(at);
                Ok(())
            }
        }))?
        .spawn()?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        common::committed_to_end(s, &input, &end)
    })
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;
    ensure!(
        failed.load(Ordering::Relaxed) >= 1,
        "the record never failed"
    );
    let handled = handled.lock().unwrap();
    ensure!(
        handled.len() == produced.len(),
        "{} of {} inputs handled",
        handled.len(),
        produced.len()
    );
    Ok(())
}

on_embedded_and_kafka!(a_batch_retrying_past_max_poll_interval_keeps_its_membership);

/// A batch whose handler fails for longer than `max.poll.interval.ms` (sending the outputs of
/// the whole batch before each failure): the poll thread never waits for a handler, so the
/// member is never evicted and nothing rebalances; the failed attempts' outputs are never
/// written, every input's output is committed once (read back `read_committed`, and
/// `read_uncommitted` sees nothing else), no transaction aborts, and the offsets reach the log
/// end.
async fn a_batch_retrying_past_max_poll_interval_keeps_its_membership(
    broker: TestBroker,
) -> anyhow::Result<()> {
    const MAX_POLL_INTERVAL: Duration = Duration::from_secs(6);
    let (input, output_topic, group) = (unique("slow-in"), unique("slow-out"), unique("slow"));
    let (produced, end) = broker.fill_topic(&input, 2, 100).await?;
    broker.create_topic(&output_topic, 2).await?;
    let all: BTreeSet<_> = (0..2).map(|p| common::tp(&input, p)).collect();
    let mut builder = broker
        .consumer(&group, &input)
        .set(
            "max.poll.interval.ms",
            MAX_POLL_INTERVAL.as_millis().to_string(),
        )
        .exactly_once(unique("tx"))
        .batch_limits(
            BatchLimits::default()
                .max_messages(20)
                .max_wait(Duration::from_millis(50)),
        )
        .retry_policy(RetryPolicy::default().with_backoff(Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_millis(1500),
            multiplier: 2.0,
            jitter: 0.0,
        }));
    let output = builder.output()?;
    let first_failure = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let failing_for = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let (first, longest, topic) = (
        first_failure.clone(),
        failing_for.clone(),
        output_topic.clone(),
    );
    let handle = builder
        .build_batch(batch_handler_fn(move |batch: Vec<Message>| {
            let (output, first, longest, topic) = (
                output.clone(),
                first.clone(),
                longest.clone(),
                topic.clone(),
            );
            async move {
                for msg in &batch {
                    let key = msg.payload().unwrap_or_default().to_vec();
                    output
                        .send(
                            OutputRecord::to(topic.clone())
                                .key(key.clone())
                                .payload(key),
                        )
                        .await?;
                }
                if batch.iter().any(|m| (m.partition(), m.offset()) == (0, 30)) {
                    let since = *first.lock().unwrap().get_or_insert_with(Instant::now);
                    let failing = since.elapsed();
                    if failing < MAX_POLL_INTERVAL + Duration::from_secs(3) {
                        return Err(HandlerError::retryable("still failing"));
                    }
                    *longest.lock().unwrap() = failing;
                }
                Ok(())
            }
        }))?
        .spawn()?;
    let mut status = handle.status();
    let assigned = wait_status(&mut status, PHASE, "the first assignment", |s| {
        s.assigned == all
    })
    .await?;
    let done = wait_status(&mut status, PHASE, "commits at the log end", |s| {
        common::committed_to_end(s, &input, &end)
    })
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;
    let failing = *failing_for.lock().unwrap();
    ensure!(
        failing > MAX_POLL_INTERVAL,
        "the batch failed for {failing:?}, not longer than max.poll.interval.ms"
    );
    ensure!(
        done.rebalances == assigned.rebalances && done.client_restarts == 0,
        "the member was evicted or rebalanced while the batch retried: {done:?}"
    );
    ensure!(done.transactions_aborted == 0, "{done:?}");
    let (back, _) = check_outputs(&broker, &output_topic, &input_keys(&produced)).await?;
    only_committed_outputs_written(&back, produced.len())?;
    check_group_offsets(&broker, &group, &input, &end).await?;
    Ok(())
}

/// A zombie: instance A stalls in its handlers, their outputs sent (waiting for their commit),
/// and a second instance B starts with the same transactional id (as a replacement started
/// while the old one seems dead). B's start fences A's producer; when A wakes up, its next
/// transaction cannot commit and A stops with the fencing error. B does all the work, and each
/// input's output is committed once: A's outputs are never written.
async fn zombie_with_the_same_transactional_id_is_fenced(broker: TestBroker) -> anyhow::Result<()> {
    let (input, output_topic, group) =
        (unique("zombie-in"), unique("zombie-out"), unique("zombie"));
    let transactional_id = unique("tx");
    let (produced, end) = broker.fill_topic(&input, 2, 100).await?;
    broker.create_topic(&output_topic, 2).await?;
    let watch = block_in_place(|| Watch::new(&broker, &group, &input, &output_topic, 2))?;

    // A sends the output of its first input, then stalls until released.
    let (stalled_tx, mut stalled) = tokio::sync::watch::channel(false);
    let (release, gate) = tokio::sync::watch::channel(false);
    let mut builder = broker
        .consumer(&group, &input)
        .exactly_once(&transactional_id)
        .commit_interval(Duration::from_millis(100))
        // B's arrival revokes A's partitions: A waits this long for its stalled handlers.
        .drain_timeout(Duration::from_secs(1));
    let output = builder.output()?;
    let topic = output_topic.clone();
    let zombie = builder
        .build(handler_fn(move |msg: Message| {
            let (output, topic, stalled_tx, mut gate) = (
                output.clone(),
                topic.clone(),
                stalled_tx.clone(),
                gate.clone(),
            );
            async move {
                let key = msg.payload().unwrap_or_default().to_vec();
                output
                    .send(OutputRecord::to(topic).key(key.clone()).payload(key))
                    .await?;
                stalled_tx.send_replace(true);
                let _ = gate.wait_for(|released| *released).await;
                Ok(())
            }
        }))?
        .spawn()?;
    tokio::time::timeout(PHASE, stalled.wait_for(|s| *s))
        .await
        .context("A never handled an input")??;
    ensure!(
        !block_in_place(|| watch.open())?,
        "A's output is written before its handler returned"
    );

    let metrics = Metrics::new();
    let replacement = pipeline(
        &broker,
        &group,
        &input,
        &output_topic,
        &transactional_id,
        0,
        &metrics,
    )?;
    // B's init_transactions fences A before B subscribes: once B has partitions, A is fenced.
    wait_status(
        &mut replacement.status(),
        PHASE,
        "B's first partitions",
        |s| !s.assigned.is_empty(),
    )
    .await?;
    release.send_replace(true);
    let ended = tokio::time::timeout(PHASE, zombie.wait())
        .await
        .context("the fenced instance did not stop")?;
    let error = match ended {
        Ok(()) => anyhow::bail!("the fenced instance A ended without an error"),
        Err(e) => e.to_string(),
    };
    ensure!(
        error.to_lowercase().contains("fenced"),
        "A ended with an error, but not for being fenced: {error}"
    );

    wait_status(
        &mut replacement.status(),
        PHASE,
        "commits at the log end",
        |s| {
            end.iter()
                .all(|(p, e)| s.committed.get(&common::tp(&input, *p)) == Some(e))
        },
    )
    .await?;
    common::stop(replacement).await?;
    let back = check_exactly_once(&broker, &group, &input, &end, &output_topic, &produced).await?;
    report(
        &broker,
        "zombie with the same transactional id fenced",
        produced.len(),
        &back,
        true,
        &format!("the zombie stopped with: {error}"),
    );
    Ok(())
}

/// Two exactly-once instances with different transactional ids in one group: B joins while A
/// is mid-stream, so A's partitions are revoked with work finished and not yet committed (its
/// revocation commits that work's outputs and offsets in a transaction before B may start on
/// them), and later B leaves and A takes everything again. Each input's output is committed
/// exactly once, and nothing else reaches the output topic.
async fn a_rebalance_between_two_instances_commits_each_output_once(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let (input, output_topic, group) = (unique("rb-in"), unique("rb-out"), unique("rb"));
    let (produced, end) = broker.fill_topic(&input, 4, 1000).await?;
    broker.create_topic(&output_topic, 4).await?;
    let start = |id: &str| -> anyhow::Result<ConsumerHandle> {
        let mut builder = broker
            .consumer(&group, &input)
            .exactly_once(unique(id))
            // Rare transactions, so that a revocation finds finished work uncommitted.
            .commit_interval(Duration::from_secs(5));
        let output = builder.output()?;
        let topic = output_topic.clone();
        Ok(builder
            .build(handler_fn(move |msg: Message| {
                let (output, topic) = (output.clone(), topic.clone());
                async move {
                    // Slow enough (about 800 inputs a second) that the rebalances come mid-stream.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let key = msg.payload().unwrap_or_default().to_vec();
                    output
                        .send(OutputRecord::to(topic).key(key.clone()).payload(key))
                        .await?;
                    Ok(())
                }
            }))?
            .spawn()?)
    };
    let a = start("rb-a")?;
    wait_status(&mut a.status(), PHASE, "A's first inputs handled", |s| {
        s.assigned.len() == 4 && s.buffered_messages > 0
    })
    .await?;
    let b = start("rb-b")?;
    let mid = wait_status(&mut a.status(), PHASE, "A giving partitions to B", |s| {
        (1..4).contains(&s.assigned.len())
    })
    .await?;
    ensure!(
        mid.transactions_committed >= 1,
        "A gave partitions up without committing its finished work: {mid:?}"
    );
    wait_status(&mut b.status(), PHASE, "B's partitions", |s| {
        !s.assigned.is_empty()
    })
    .await?;
    // B leaves halfway through what is left: A takes its partitions back.
    wait_status(&mut b.status(), PHASE, "B's first transaction", |s| {
        s.transactions_committed >= 1
    })
    .await?;
    common::stop(b).await?;
    // The group's offsets come from both instances' commits: read them from the broker.
    let deadline = Instant::now() + PHASE;
    while broker.committed_offsets(&group, &input).await? != end {
        ensure!(
            Instant::now() < deadline,
            "no commits at the log end within {PHASE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::stop(a).await?;
    let back = check_exactly_once(&broker, &group, &input, &end, &output_topic, &produced).await?;
    report(
        &broker,
        "two instances, rebalanced twice mid-stream",
        produced.len(),
        &back,
        true,
        &format!(
            "A gave up {} of 4 partitions to B, then took them back",
            4 - mid.assigned.len()
        ),
    );
    Ok(())
}

/// Partitions of the SIGKILL scenario's topics, and inputs written before each run.
const KILL_PARTITIONS: i32 = 2;
const KILL_SLICE: usize = 1000;
/// SIGKILLs before the last run.
const KILLS: usize = 4;
/// A kill comes this long (ms, at random) after the run's first commit, as soon as a
/// transaction is open.
const KILL_DELAY_MS: std::ops::Range<u64> = 0..800;

/// The `transform` example (an exactly-once consumer process writing one output per input) is
/// killed with SIGKILL [`KILLS`] times, each time at a random moment after its first commit
/// while a transaction of it is open (records written, not yet committed), and restarted with
/// the same transactional id, which fences the dead producer and aborts what it left open. The
/// last run finishes every input and is stopped with SIGTERM. Read back `read_committed`, the
/// output topic holds each input's output exactly once; a `read_uncommitted` reader also sees
/// the killed runs' aborted outputs.
async fn process_killed_mid_transaction_commits_each_output_once(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("eos-kill"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let log = dir.join("transform.log");
    let result = killed_mid_transaction(&broker, &log).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("the consumer's log is kept in {}", log.display()),
    }
    result
}

async fn killed_mid_transaction(broker: &TestBroker, log: &std::path::Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let bin = example_binary("transform", "SLUICEGATE_TRANSFORM_BIN")?;
    let (input, output_topic, group) = (unique("kill-in"), unique("kill-out"), unique("kill"));
    broker.create_topic(&input, KILL_PARTITIONS).await?;
    broker.create_topic(&output_topic, KILL_PARTITIONS).await?;
    let args: Vec<String> = [
        "--bootstrap",
        broker.bootstrap(),
        "--group",
        &group,
        "--topic",
        &input,
        "--output",
        &output_topic,
        "--transactional-id",
        &unique("transform"),
        // A transaction every 50 ms, so that kills often find one open.
        "--commit-ms",
        "50",
        // At most 200 inputs a second per partition: a run of KILL_SLICE inputs outlasts its kill.
        "--work-ms",
        "5",
        // A restart's join waits for the killed member's session to run out: keep it short
        // (the test Kafka allows 1 s).
        "--set",
        "session.timeout.ms=2000",
        "--set",
        "heartbeat.interval.ms=300",
    ]
    .map(String::from)
    .to_vec();
    let watch =
        block_in_place(|| Watch::new(broker, &group, &input, &output_topic, KILL_PARTITIONS))?;
    let delays: Vec<Duration> = {
        let mut rng = rand::rng();
        (0..KILLS)
            .map(|_| Duration::from_millis(rng.random_range(KILL_DELAY_MS)))
            .collect()
    };
    let mut written = Vec::new();
    let mut killed = Vec::new();
    let mut kills_mid_transaction = 0;
    let mut runs = Vec::new();
    let mut run = 0;
    let mut last = loop {
        // Each run gets new inputs, so that it has work to be killed in.
        let slice = (0..KILL_SLICE).map(|i| {
            let p = i as i32 % KILL_PARTITIONS;
            (
                Some(p),
                format!("key-{run}-{i}"),
                format!("{input}:{run}:{i}"),
            )
        });
        written.extend(broker.produce_records(&input, slice).await?);
        let before = block_in_place(|| watch.committed())?;
        let started_run = Instant::now();
        let mut consumer = ExampleProcess::spawn(&bin, &args, log, "").await?;
        if run == KILLS {
            break consumer;
        }
        let what = || format!("run {run}; consumer log:\n{}", tail(log));
        // The run's first commit: it got the partitions and finished a batch.
        until(&mut consumer, PHASE, "commit of this run", || {
            Ok(watch.committed()? > before)
        })
        .await
        .with_context(what)?;
        let first_commit = started_run.elapsed();
        tokio::time::sleep(delays[run]).await;
        // Then a moment a transaction is open (records in the log, not committed): the
        // process is frozen at random moments until one finds a transaction open, and killed
        // there. Killed anyway if none shows within a few seconds; the check below tells.
        let freezing = Instant::now();
        while freezing.elapsed() < Duration::from_secs(5) {
            consumer.freeze().await.with_context(what)?;
            if block_in_place(|| watch.open())? {
                break;
            }
            consumer.resume().await.with_context(what)?;
            let pause = Duration::from_millis(rand::rng().random_range(1..20));
            // A random moment of another process: there is no event to await.
            tokio::time::sleep(pause).await;
        }
        consumer.kill().await.with_context(what)?;
        killed.push(consumer.pid);
        // Nothing writes now: a transaction still open was left open by the kill.
        let open = block_in_place(|| watch.open())?;
        kills_mid_transaction += usize::from(open);
        runs.push(format!(
            "run {run}: first commit after {:.1} s, killed {} ms later {}",
            first_commit.as_secs_f64(),
            (started_run.elapsed() - first_commit).as_millis(),
            if open {
                "with a transaction open"
            } else {
                "between transactions"
            }
        ));
        run += 1;
    };
    let last_run = Instant::now();
    let end = broker.log_end(&input, &written).await?;
    let total: i64 = end.values().sum();
    until(&mut last, PHASE, "commits at the log end", || {
        Ok(watch.committed()? == total)
    })
    .await
    .with_context(|| format!("last run; consumer log:\n{}", tail(log)))?;
    last.terminate(PHASE)
        .await
        .with_context(|| format!("last run; consumer log:\n{}", tail(log)))?;
    let last_run = last_run.elapsed();

    check_group_offsets(broker, &group, &input, &end).await?;
    let (back, exact) = check_outputs(broker, &output_topic, &input_keys(&written)).await?;
    ensure!(
        exact,
        "exactly-once delivery is always checked on {:?}",
        broker.kind()
    );
    ensure!(
        kills_mid_transaction > 0,
        "none of the {KILLS} kills came while a transaction was open: {runs:#?}"
    );
    // Each transaction a kill left open held records; the restart aborted them.
    ensure!(
        back.aborted.len() >= kills_mid_transaction,
        "{kills_mid_transaction} kills left a transaction open, but the read_uncommitted reader \
         sees only {} records the read_committed reader does not",
        back.aborted.len()
    );
    let by_killed = back
        .aborted
        .iter()
        .filter(|(_, _, _, value)| {
            killed
                .iter()
                .any(|pid| value.ends_with(&format!(" by {pid}")))
        })
        .count();
    report(
        broker,
        "consumer process killed (SIGKILL) mid-transaction and restarted",
        written.len(),
        &back,
        exact,
        &format!(
            "kills {KILLS}, {kills_mid_transaction} with a transaction open; {by_killed} aborted \
             records written by killed processes"
        ),
    );
    eprintln!(
        "  {}; the last run {:.1} s; {:.1} s in all",
        runs.join("; "),
        last_run.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until `done` holds, at most `limit`, failing as soon as the consumer exits.
async fn until(
    consumer: &mut ExampleProcess,
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if block_in_place(&mut done)? {
            return Ok(());
        }
        consumer.ensure_running()?;
        ensure!(Instant::now() < deadline, "no {what} within {limit:?}");
        // Another process's progress, seen through the broker: there is no event to await.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the broker shows of a pipeline running in another process: its group's committed
/// offsets on the input topic, and the output topic's log ends as a `read_committed` reader
/// sees them (last stable offsets) and as a `read_uncommitted` one does (high watermarks).
struct Watch {
    group: BaseConsumer,
    inputs: TopicPartitionList,
    stable: BaseConsumer,
    high: BaseConsumer,
    output: String,
    partitions: Vec<i32>,
}

impl Watch {
    /// For `input` and `output`, of `partitions` partitions each.
    fn new(
        broker: &TestBroker,
        group: &str,
        input: &str,
        output: &str,
        partitions: i32,
    ) -> anyhow::Result<Watch> {
        let client = |isolation: Isolation| {
            broker
                .client()
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("isolation.level", isolation.as_str())
                .create::<BaseConsumer>()
        };
        let mut inputs = TopicPartitionList::new();
        for p in 0..partitions {
            inputs.add_partition(input, p);
        }
        Ok(Watch {
            group: client(Isolation::ReadUncommitted)?,
            inputs,
            stable: client(Isolation::ReadCommitted)?,
            high: client(Isolation::ReadUncommitted)?,
            output: output.to_string(),
            partitions: (0..partitions).collect(),
        })
    }

    /// The inputs the group has committed, over all partitions.
    fn committed(&self) -> anyhow::Result<i64> {
        // A coordinator loading or moving answers NotCoordinator for a moment: asked again.
        let mut tries = 0;
        let list = loop {
            match self.group.committed_offsets(self.inputs.clone(), REQUEST) {
                Ok(list) => break list,
                Err(_) if tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e).context("read the group's committed offsets"),
            }
        };
        Ok(list
            .elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => 0,
            })
            .sum())
    }

    /// Whether a transaction is open on the output topic: a partition's last stable offset is
    /// below its high watermark.
    fn open(&self) -> anyhow::Result<bool> {
        for p in &self.partitions {
            let (_, stable) = self.stable.fetch_watermarks(&self.output, *p, REQUEST)?;
            let (_, high) = self.high.fetch_watermarks(&self.output, *p, REQUEST)?;
            if stable < high {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
