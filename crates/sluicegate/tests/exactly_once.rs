//! Exactly-once consume-transform-produce: outputs and input offsets commit in one transaction,
//! a failing handler aborts its transaction, and a pipeline crashed at random points and
//! restarted leaves each input's output committed once.
//!
//! What the test brokers lack (found by these tests; see also the crate's docs):
//! - librdkafka's mock cluster (embedded) answers the transaction requests but implements none
//!   of their effects: `TxnOffsetCommit` stores no offset, `EndTxn` writes no commit or abort
//!   marker, and fetches report no aborted transactions (last stable offset = high watermark).
//! - tansu 0.6 stores transactional offset commits and writes the markers, but its fetch
//!   reports no aborted transactions and no last stable offset, so a `read_committed` reader
//!   also sees aborted records and records of open transactions.
//!
//! So where a test needs a reader that hides aborted records, it first checks that the broker
//! does ([`hides_aborted_records`]); on these two brokers that part is reported as not
//! checkable and the rest (no loss, offsets committed with the transactions, aborts happening)
//! is asserted. Against a real Kafka (`SLUICEGATE_TEST_BOOTSTRAP`) everything is asserted.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use sluicegate::metrics::Metrics;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{handler_fn, BatchLimits, ConsumerHandle, HandlerError, Message, OutputRecord};

use common::http::sample;
use common::{unique, wait_status, Kind, TestBroker};

const PHASE: Duration = Duration::from_secs(60);

on_both_brokers!(
    outputs_and_offsets_commit_together,
    crashed_and_restarted_pipeline_commits_each_result_once,
);

/// An input -> output pipeline: each input `topic:p:i` becomes one output keyed by it. Fails
/// the first attempt of every `fail_every`-th input (0: never) after sending its output, so
/// that its transaction must be aborted.
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
        .batch_limits(
            BatchLimits::default()
                .max_messages(50)
                .max_wait(Duration::from_millis(50)),
        )
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

/// Every record of `topic` read `read_committed`, as key -> times seen.
async fn outputs(broker: &TestBroker, topic: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let end = broker.high_watermarks(topic).await?;
    let bootstrap = broker.bootstrap().to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<String, usize>> {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("reader"))
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in end.keys() {
            list.add_partition_offset(&topic, *p, Offset::Beginning)?;
        }
        reader.assign(&list)?;
        let mut seen = BTreeMap::new();
        let mut at_end = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + PHASE;
        while at_end.len() < end.len() {
            ensure!(
                std::time::Instant::now() < deadline,
                "reading {topic} timed out"
            );
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    *seen.entry(key).or_insert(0) += 1;
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                _ => {}
            }
        }
        Ok(seen)
    })
    .await?
}

/// Whether a `read_committed` reader of this broker skips records of aborted transactions:
/// writes one aborted and one committed record and reads them back.
async fn hides_aborted_records(broker: &TestBroker) -> anyhow::Result<bool> {
    let topic = unique("txn-probe");
    broker.create_topic(&topic, 1).await?;
    let bootstrap = broker.bootstrap().to_string();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", unique("probe"))
            .create()?;
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
    Ok(!outputs(broker, &topic).await?.contains_key("aborted"))
}

fn input_keys(produced: &[common::Produced]) -> Vec<String> {
    produced.iter().map(|p| p.payload.clone()).collect()
}

/// Checks the outputs against the inputs: each input's output at least once, and exactly once
/// when the broker hides aborted records from `read_committed` readers.
async fn check_outputs(
    broker: &TestBroker,
    output_topic: &str,
    inputs: &[String],
) -> anyhow::Result<()> {
    let seen = outputs(broker, output_topic).await?;
    let missing: Vec<&String> = inputs.iter().filter(|k| !seen.contains_key(*k)).collect();
    ensure!(
        missing.is_empty(),
        "{} inputs have no output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    if hides_aborted_records(broker).await? {
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
    Ok(())
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
/// input reaches the output, failed transactions are aborted and the batch retried, and the
/// group's offsets are committed by the transactions.
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
    let status = wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        end.iter()
            .all(|(p, e)| s.committed.get(&common::tp(&input, *p)) == Some(e))
    })
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;
    ensure!(
        status.transactions_aborted >= 6,
        "{} aborted transactions for 7 failures",
        status.transactions_aborted
    );
    ensure!(
        status.transactions_committed >= 12,
        "{} transactions for 600 inputs in batches of 50",
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
        let got = sample(&text, name, &[by_group, label]);
        ensure!(
            got == Some(want as f64),
            "{name}{label:?} = {got:?}, want {want}\n{text}"
        );
    }
    check_group_offsets(&broker, &group, &input, &end).await?;
    check_outputs(&broker, &output_topic, &input_keys(&produced)).await
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
    let (produced, end) = broker.fill_topic(&input, 2, 500).await?;
    broker.create_topic(&output_topic, 2).await?;
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
    let handle = start()?;
    wait_status(&mut handle.status(), PHASE, "commits at the log end", |s| {
        end.iter()
            .all(|(p, e)| s.committed.get(&common::tp(&input, *p)) == Some(e))
    })
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;
    check_group_offsets(&broker, &group, &input, &end).await?;
    check_outputs(&broker, &output_topic, &input_keys(&produced)).await
}
