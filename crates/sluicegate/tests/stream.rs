//! The consumer's messages as a stream (`ConsumerBuilder::messages`): each record comes out
//! once, in the order its ordering mode promises, finished deliveries are committed, and a
//! failed one goes through the retry policy and the dead-letter topic as a handler's error
//! would. Each runs on the embedded broker and Apache Kafka; `tests/crash.rs` kills and
//! restarts a stream consumer (`stream_killed_and_restarted`).

#[macro_use]
#[allow(unused_macros)] // on_both_brokers: tansu is left out here.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use futures::StreamExt as _;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{Delivery, HandlerError, Messages, Ordering};

use common::{committed_to_end, unique, wait_status, TestBroker};

/// Bound on one phase of a test (a group join, consuming a few hundred messages, a shutdown).
const PHASE: Duration = Duration::from_secs(60);

on_embedded_and_kafka!(
    partition_order_gives_out_one_delivery_per_partition_at_a_time,
    key_order_gives_out_one_delivery_per_key_at_a_time,
    a_failed_delivery_is_retried_and_dead_lettered_like_a_handler_error,
);

/// The next delivery, within [`PHASE`].
async fn next(messages: &mut Messages) -> anyhow::Result<Delivery> {
    tokio::time::timeout(PHASE, messages.next())
        .await
        .context("no delivery within the phase")?
        .context("the stream ended early")?
        .context("the consumer failed")
}

/// Shuts the consumer down and takes the stream to its end (acking anything still coming),
/// within [`PHASE`]; fails if it ends with an error.
async fn finish(mut messages: Messages) -> anyhow::Result<()> {
    messages.shutdown();
    tokio::time::timeout(PHASE, async {
        while let Some(delivery) = messages.next().await {
            delivery?.ack();
        }
        anyhow::Ok(())
    })
    .await
    .context("the stream did not end after shutdown")?
}

async fn partition_order_gives_out_one_delivery_per_partition_at_a_time(
    broker: TestBroker,
) -> anyhow::Result<()> {
    one_at_a_time(broker, Ordering::Partition).await
}

async fn key_order_gives_out_one_delivery_per_key_at_a_time(
    broker: TestBroker,
) -> anyhow::Result<()> {
    one_at_a_time(broker, Ordering::Key).await
}

/// 400 records over 2 partitions and 8 keys, each delivery finished by a task of its own a
/// moment later: no record comes out while another of its partition (partition order) or key
/// (key order) is out, every record comes out once and in offset order within that unit, and
/// the group commits the log end. In key order several deliveries are out at once.
async fn one_at_a_time(broker: TestBroker, ordering: Ordering) -> anyhow::Result<()> {
    let topic = unique("stream-order");
    broker.create_topic(&topic, 2).await?;
    let produced = broker.produce_keyed(&topic, 0, 400, 8).await?;
    let end = broker.log_end(&topic, &produced).await?;
    let key_of: HashMap<(i32, i64), String> = produced
        .iter()
        .map(|p| ((p.partition, p.offset), p.key.clone()))
        .collect();
    let unit = |partition: i32, key: &str| match ordering {
        Ordering::Key => format!("{partition}/{key}"),
        _ => partition.to_string(),
    };

    let mut messages = broker
        .consumer(&unique("stream-order-group"), &topic)
        .ordering(ordering)
        .max_in_flight(16)
        .commit_interval(Duration::from_millis(100))
        .messages()?;
    // Deliveries out (given out, not yet finished) by unit, and the most out at once.
    let out: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut most_out = 0;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for _ in 0..produced.len() {
        let delivery = next(&mut messages).await?;
        let place = (delivery.partition(), delivery.offset());
        let key = key_of
            .get(&place)
            .with_context(|| format!("{place:?} not written"))?;
        let unit = unit(place.0, key);
        {
            let mut out = out.lock().unwrap();
            let n = out.entry(unit.clone()).or_default();
            ensure!(*n == 0, "{place:?} given out while {n} of {unit} were out");
            *n = 1;
            most_out = most_out.max(out.values().sum::<usize>());
        }
        if let Some(before) = last.insert(unit.clone(), place.1) {
            ensure!(
                before < place.1,
                "{unit}: offset {} after {before}: out of order, or twice",
                place.1
            );
        }
        let out = out.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            *out.lock().unwrap().get_mut(&unit).unwrap() = 0;
            delivery.ack();
        });
    }
    wait_status(
        &mut messages.handle().status(),
        PHASE,
        "commits at the log end",
        |s| committed_to_end(s, &topic, &end),
    )
    .await?;
    if ordering == Ordering::Key {
        ensure!(
            most_out > 2,
            "at most {most_out} deliveries were out at once: keys did not run side by side"
        );
    }
    finish(messages).await
}

/// Of 200 records, one fails twice with a retryable error and then succeeds, one fails with a
/// permanent error, and every other one is dropped after its work instead of acked: the first
/// comes out three times (the retry policy's back-off between), the second is dead-lettered
/// with the error given, and the group commits the log end.
async fn a_failed_delivery_is_retried_and_dead_lettered_like_a_handler_error(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("stream-errors");
    let (produced, end) = broker.fill_topic(&topic, 2, 100).await?;
    let retried = (produced[17].partition, produced[17].offset);
    let refused = (produced[160].partition, produced[160].offset);
    let mut messages = broker
        .consumer(&unique("stream-errors-group"), &topic)
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(5)
                .with_backoff(Backoff {
                    initial: Duration::from_millis(5),
                    max: Duration::from_millis(20),
                    multiplier: 2.0,
                    jitter: 0.0,
                }),
        )
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(100))
        .messages()?;
    let mut seen: BTreeMap<(i32, i64), u32> = BTreeMap::new();
    // Every record once, and the retried one twice more.
    for _ in 0..produced.len() + 2 {
        let delivery = next(&mut messages).await?;
        let place = (delivery.partition(), delivery.offset());
        let n = seen.entry(place).or_default();
        *n += 1;
        if place == retried && *n < 3 {
            delivery.finish(Err(HandlerError::retryable("not yet")));
        } else if place == refused {
            delivery.finish(Err(HandlerError::permanent("refused for good")));
        } else if place.1 % 2 == 0 {
            delivery.ack();
        } else {
            drop(delivery);
        }
    }
    wait_status(
        &mut messages.handle().status(),
        PHASE,
        "commits at the log end with one record dead-lettered",
        |s| committed_to_end(s, &topic, &end) && s.dead_lettered == 1,
    )
    .await?;
    finish(messages).await?;
    ensure!(
        seen.get(&retried) == Some(&3),
        "{retried:?} came out {:?} times",
        seen.get(&retried)
    );
    let twice: Vec<_> = seen
        .iter()
        .filter(|(p, n)| **p != retried && **n > 1)
        .collect();
    ensure!(twice.is_empty(), "came out more than once: {twice:?}");
    ensure!(
        seen.len() == produced.len(),
        "{} of {} records came out",
        seen.len(),
        produced.len()
    );
    let letters = broker
        .dead_letters(&format!("{topic}.dlq"), 1, PHASE)
        .await?;
    ensure!(
        letters.len() == 1
            && (letters[0].original_partition, letters[0].original_offset) == refused
            && letters[0].error_message.contains("refused for good"),
        "dead letters: {letters:?}"
    );
    Ok(())
}
