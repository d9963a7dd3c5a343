//! Seeking a running consumer: back to an offset, to the beginning, to the end; the new
//! position is committed at once; a partition it does not own is refused.
//!
//! Seeking by timestamp is not tested here: librdkafka's mock cluster answers every offset
//! look-up by time with -1 (a FIXME in its source) and tansu 0.6 answers 0, so neither can
//! tell a right answer from a wrong one. Seeking to the end is tested on the embedded broker
//! only: tansu 0.6 answers the "latest offset" look-up with a high watermark below the log end
//! (1 for these 300 records).

#[macro_use]
mod common;

use std::time::Duration;

use anyhow::ensure;
use sluicegate::{handler_fn, Error, Message, SeekTo};

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
    if broker.kind() != common::Kind::Embedded {
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
