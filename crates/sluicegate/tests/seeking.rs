//! Seeking a running consumer: back to an offset, to the beginning, to the end, to a time; the
//! new position is committed at once; a partition it does not own is refused.
//!
//! Seeking by timestamp is tested on Apache Kafka only: librdkafka's mock cluster answers every
//! offset look-up by time with -1 (a FIXME in its source) and tansu 0.6 answers 0, so neither
//! can tell a right answer from a wrong one. Seeking to the end is tested on the embedded
//! broker and Apache Kafka, not on tansu: tansu 0.6 answers the "latest offset" look-up with a
//! high watermark below the log end (1 for these 300 records).

#[macro_use]
mod common;

use std::time::Duration;

use std::sync::Arc;

use anyhow::{anyhow, ensure};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluicegate::{handler_fn, BufferLimits, ConsumerHandle, Error, Message, SeekTo};
use tokio::sync::Semaphore;

use common::{stop, tp, unique, wait_status, Recorder, TestBroker};

const PHASE: Duration = Duration::from_secs(60);

on_both_brokers!(seeks_move_a_partition_and_commit_the_new_position);

async fn seeks_move_a_partition_and_commit_the_new_position(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("seek");
    let group = unique("seek-group");
    let (produced, end) = broker.fill_topic(&topic, 1, 300).await?;
    let recorder = Recorder::default();
    let handle = broker
        .consumer(&group, &topic)
        .commit_interval(Duration::from_millis(100))
        .build(handler_fn({
            let recorder = recorder.clone();
            move |msg: Message| {
                recorder.record(&msg);
                std::future::ready(Ok(()))
            }
        }))?
        .spawn()?;
    let mut status = handle.status();
    let at_end = |s: &sluicegate::ConsumerStatus| s.committed.get(&tp(&topic, 0)) == end.get(&0);
    recorder.wait_for(300, PHASE).await?;
    wait_status(&mut status, PHASE, "commits at the log end", at_end).await?;

    // Back to offset 100: 100..300 are handled again, and the group commits to the end again.
    ensure!(handle.seek(&topic, 0, SeekTo::Offset(100)).await? == 100);
    recorder.wait_for(500, PHASE).await?;
    let again: Vec<i64> = recorder.handled()[300..].iter().map(|h| h.offset).collect();
    ensure!(
        again == (100..300).collect::<Vec<_>>(),
        "after seeking to 100: {:?}...",
        &again[..5]
    );
    wait_status(&mut status, PHASE, "commits at the log end", at_end).await?;

    // To the beginning: everything again.
    ensure!(handle.seek(&topic, 0, SeekTo::Beginning).await? == 0);
    recorder.wait_for(800, PHASE).await?;
    ensure!(recorder.handled()[500].offset == 0);

    // A partition this consumer does not own.
    match handle.seek(&topic, 7, SeekTo::Beginning).await {
        Err(Error::NotAssigned(p)) => ensure!(p.contains(&topic), "{p}"),
        other => anyhow::bail!("seek of an unowned partition: {other:?}"),
    }
    // To the end, committed at once: nothing more until new records arrive; only they are
    // handled.
    wait_status(&mut status, PHASE, "commits at the log end", at_end).await?;
    if broker.kind() == common::Kind::Tansu {
        return stop(handle).await;
    }
    ensure!(handle.seek(&topic, 0, SeekTo::End).await? == 300);
    ensure!(broker.committed_offsets(&group, &topic).await?.get(&0) == Some(&300));
    let more = broker.produce_to_partitions(&topic, 1, 10).await?;
    recorder.wait_for(810, PHASE).await?;
    let last: Vec<i64> = recorder.handled()[800..].iter().map(|h| h.offset).collect();
    ensure!(
        last == more.iter().map(|p| p.offset).collect::<Vec<_>>(),
        "after seeking to the end: {last:?}"
    );

    ensure!(produced.len() == 300);
    stop(handle).await
}

/// Produces `count` records to partition 0 of `topic`, record `i` with the timestamp
/// `first_ms + step_ms * i`, in four slices (so in several record batches); returns their
/// offsets.
async fn produce_timed(
    broker: &TestBroker,
    topic: &str,
    count: i64,
    first_ms: i64,
    step_ms: i64,
) -> anyhow::Result<Vec<i64>> {
    let producer: FutureProducer = broker.client().set("linger.ms", "5").create()?;
    let mut offsets = Vec::new();
    for slice in (0..count)
        .collect::<Vec<_>>()
        .chunks((count as usize / 4).max(1))
    {
        let mut pending = Vec::new();
        for &i in slice {
            let payload = format!("{topic}:0:{i}");
            let record = FutureRecord::to(topic)
                .partition(0)
                .key("timed")
                .payload(&payload)
                .timestamp(first_ms + step_ms * i);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| anyhow!("enqueue a record for {topic}: {e}"))?;
            pending.push(delivery);
        }
        for delivery in pending {
            let d = tokio::time::timeout(PHASE, delivery)
                .await
                .map_err(|_| anyhow!("delivery report timed out"))?
                .map_err(|_| anyhow!("producer dropped the delivery report"))?
                .map_err(|(e, _)| anyhow!("produce to {topic}: {e}"))?;
            offsets.push(d.offset);
        }
    }
    Ok(offsets)
}

/// Seeks `handle`'s partition 0 of `topic` to `to`, and checks that it lands on `expected`,
/// which the group's commit on the broker then holds.
async fn seek_lands_on(
    broker: &TestBroker,
    handle: &ConsumerHandle,
    group: &str,
    topic: &str,
    to: SeekTo,
    expected: i64,
) -> anyhow::Result<()> {
    let landed = handle.seek(topic, 0, to).await?;
    ensure!(
        landed == expected,
        "{to:?} landed on {landed}, not {expected}"
    );
    let committed = broker.committed_offsets(group, topic).await?;
    ensure!(
        committed.get(&0) == Some(&expected),
        "after {to:?}: committed {committed:?}"
    );
    Ok(())
}

/// Offsets the recorder saw from the `from`-th handled message on.
fn handled_since(recorder: &Recorder, from: usize) -> Vec<i64> {
    recorder.handled()[from..]
        .iter()
        .map(|h| h.offset)
        .collect()
}

/// Apache Kafka (or `SLUICEGATE_TEST_BOOTSTRAP`) only: the other test brokers cannot look up
/// offsets by time. Record `i` carries the time `base + 10 ms * i`; a seek to a time lands on
/// the first record at or after it, and a time after the last record means the log end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_seeks_land_on_the_first_record_at_or_after_the_time() -> anyhow::Result<()> {
    const RECORDS: i64 = 200;
    const STEP_MS: i64 = 10;
    let broker = TestBroker::kafka()?;
    let topic = unique("seek-time");
    let group = unique("seek-time-group");
    broker.create_topic(&topic, 1).await?;
    // Ten minutes ago: within what brokers accept (`log.message.timestamp.*.max.ms`) and far
    // from retention.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 600_000;
    let offsets = produce_timed(&broker, &topic, RECORDS, base, STEP_MS).await?;
    ensure!(offsets == (0..RECORDS).collect::<Vec<_>>(), "{offsets:?}");
    let recorder = Recorder::default();
    let handle = broker
        .consumer(&group, &topic)
        .commit_interval(Duration::from_millis(100))
        .build(handler_fn({
            let recorder = recorder.clone();
            move |msg: Message| {
                recorder.record(&msg);
                std::future::ready(Ok(()))
            }
        }))?
        .spawn()?;
    let mut status = handle.status();
    recorder.wait_for(RECORDS as usize, PHASE).await?;
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        s.committed.get(&tp(&topic, 0)) == Some(&RECORDS)
    })
    .await?;

    // Exactly a record's time: that record. Between two records' times: the later one.
    let mut seen = recorder.count();
    for (time, expected) in [(base + STEP_MS * 50, 50), (base + STEP_MS * 120 + 3, 121)] {
        let to = SeekTo::Timestamp(time);
        seek_lands_on(&broker, &handle, &group, &topic, to, expected).await?;
        recorder
            .wait_for(seen + (RECORDS - expected) as usize, PHASE)
            .await?;
        let again = handled_since(&recorder, seen);
        ensure!(
            again == (expected..RECORDS).collect::<Vec<_>>(),
            "after {to:?}: {again:?}"
        );
        seen = recorder.count();
    }
    // Before the first record: the first record.
    let to = SeekTo::Timestamp(base - 60_000);
    seek_lands_on(&broker, &handle, &group, &topic, to, 0).await?;
    recorder.wait_for(seen + RECORDS as usize, PHASE).await?;
    seen = recorder.count();
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        s.committed.get(&tp(&topic, 0)) == Some(&RECORDS)
    })
    .await?;
    // After the last record: the log end; only records written later are handled.
    let to = SeekTo::Timestamp(base + STEP_MS * RECORDS + 1);
    seek_lands_on(&broker, &handle, &group, &topic, to, RECORDS).await?;
    let now = base + 600_000;
    let more = produce_timed(&broker, &topic, 5, now, 1).await?;
    recorder.wait_for(seen + more.len(), PHASE).await?;
    let last = handled_since(&recorder, seen);
    ensure!(last == more, "after {to:?}: {last:?}, written {more:?}");
    stop(handle).await
}

/// Apache Kafka (or `SLUICEGATE_TEST_BOOTSTRAP`) only (tansu 0.6 misreports its log ends; the
/// embedded broker runs the shorter check in the test above). The consumer is far behind and
/// paused by backpressure, so it has not fetched the last records: a seek to the end lands on
/// the log end the broker reports, not on where the consumer is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_seek_lands_on_the_log_end_while_the_consumer_is_behind() -> anyhow::Result<()> {
    let broker = TestBroker::kafka()?;
    let topic = unique("seek-end");
    let group = unique("seek-end-group");
    broker.fill_topic(&topic, 1, 200).await?;
    let recorder = Recorder::default();
    let gate = Arc::new(Semaphore::new(0));
    let limits = BufferLimits {
        partition_messages: 10,
        ..BufferLimits::default()
    };
    let handle = broker
        .consumer(&group, &topic)
        .commit_interval(Duration::from_millis(100))
        .buffer_limits(limits)
        .build(handler_fn({
            let (recorder, gate) = (recorder.clone(), gate.clone());
            move |msg: Message| {
                let (recorder, gate) = (recorder.clone(), gate.clone());
                async move {
                    gate.acquire().await.expect("never closed").forget();
                    recorder.record(&msg);
                    Ok(())
                }
            }
        }))?
        .spawn()?;
    let mut status = handle.status();
    // The first record is held in its handler; the partition's buffer is full, so it is paused.
    wait_status(&mut status, PHASE, "a full buffer", |s| {
        s.buffered_messages >= limits.partition_messages
    })
    .await?;
    // Records the consumer has not fetched: the log end moves past anything it has seen.
    broker.produce_to_partitions(&topic, 1, 100).await?;
    let end = broker.high_watermarks(&topic).await?[&0];
    ensure!(end == 300, "log end {end}");
    seek_lands_on(&broker, &handle, &group, &topic, SeekTo::End, end).await?;

    // From the end on, only records written after the seek are handled (besides the first
    // record, whose handler was running at the seek and may still finish).
    gate.add_permits(Semaphore::MAX_PERMITS);
    let more = broker.produce_to_partitions(&topic, 1, 10).await?;
    let wanted: Vec<i64> = more.iter().map(|p| p.offset).collect();
    recorder
        .wait_until(PHASE, "the records written after the seek", |h| {
            h.iter().filter(|h| h.offset >= end).count() == wanted.len()
        })
        .await?;
    let handled: Vec<i64> = recorder.handled().iter().map(|h| h.offset).collect();
    let (before, after): (Vec<i64>, Vec<i64>) = handled.iter().partition(|o| **o < end);
    ensure!(
        before.iter().all(|o| *o == 0),
        "handled before the end: {before:?}"
    );
    ensure!(
        after == wanted,
        "handled after the seek {after:?}, written {wanted:?}"
    );
    wait_status(&mut status, PHASE, "commits at the new log end", |s| {
        s.committed.get(&tp(&topic, 0)) == Some(&(end + 10))
    })
    .await?;
    stop(handle).await
}
