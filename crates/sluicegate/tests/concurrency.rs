//! Concurrency beyond partitions: key and unordered modes, out-of-order completion, commit
//! safety, bounded buffers and the offset map, against the embedded broker, Apache Kafka and
//! tansu.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use common::{tp, unique, wait_status, Recorder, TestBroker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use sluicegate::{handler_fn, offset_map, BufferLimits, Message, Ordering, Upcoming};

const LIMIT: Duration = Duration::from_secs(120);

on_both_brokers!(
    key_mode_keeps_per_key_order_with_1000_keys,
    every_mode_commits_only_finished_prefixes,
    buffers_stay_within_bounds_under_a_slow_handler,
    restart_skips_work_finished_above_the_watermark,
    a_handler_is_told_what_its_lane_hands_over_next,
);

// tansu 0.6 drops commit metadata, so it cannot keep an offset map.
on_embedded_and_kafka!(shutdown_past_the_drain_deadline_commits_the_offset_map_of_other_keys);

/// The sequence number `i` that the harness wrote into a payload `"{topic}:{i}"`.
fn seq(payload: &str) -> usize {
    payload
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("harness payload")
}

/// Counts handlers running at once, per partition, and remembers the most seen.
#[derive(Default)]
struct Concurrency {
    running: Mutex<HashMap<i32, usize>>,
    peak: AtomicUsize,
}

impl Concurrency {
    fn enter(&self, partition: i32) {
        let mut running = self.running.lock().unwrap();
        let n = running.entry(partition).or_default();
        *n += 1;
        self.peak.fetch_max(*n, AtomicOrdering::Relaxed);
    }

    fn leave(&self, partition: i32) {
        *self.running.lock().unwrap().get_mut(&partition).unwrap() -= 1;
    }
}

async fn key_mode_keeps_per_key_order_with_1000_keys(broker: TestBroker) -> anyhow::Result<()> {
    const MESSAGES: usize = 20_000;
    const KEYS: usize = 1_000;
    let topic = unique("key-order");
    broker.create_topic(&topic, 4).await?;
    broker.produce_keyed(&topic, 0, MESSAGES, KEYS).await?;

    let recorder = Recorder::default();
    let concurrency = Arc::new(Concurrency::default());
    let (rec, conc) = (recorder.clone(), concurrency.clone());
    let consumer = broker
        .consumer(&unique("key-order"), &topic)
        .ordering(Ordering::Key)
        .max_in_flight(500)
        .build(handler_fn(move |msg: Message| {
            let (rec, conc) = (rec.clone(), conc.clone());
            async move {
                conc.enter(msg.partition());
                let pause = rand::random::<u64>() % 2_000;
                tokio::time::sleep(Duration::from_micros(pause)).await;
                rec.record(&msg);
                conc.leave(msg.partition());
                Ok(())
            }
        }))?
        .spawn()?;
    recorder.wait_for(MESSAGES, LIMIT).await?;
    consumer.shutdown();
    consumer.wait().await?;

    let mut last_seq: HashMap<usize, usize> = HashMap::new();
    for h in recorder.handled() {
        let i = seq(&h.payload);
        if let Some(prev) = last_seq.insert(i % KEYS, i) {
            ensure!(prev < i, "key {} handled {i} after {prev}", i % KEYS);
        }
    }
    ensure!(
        last_seq.len() == KEYS,
        "saw {} keys of {KEYS}",
        last_seq.len()
    );
    let handled: BTreeSet<usize> = recorder.handled().iter().map(|h| seq(&h.payload)).collect();
    ensure!(
        handled.len() == MESSAGES,
        "{} distinct of {MESSAGES} handled",
        handled.len()
    );
    let peak = concurrency.peak.load(AtomicOrdering::Relaxed);
    ensure!(
        peak > 8,
        "key mode ran at most {peak} handlers at once within a partition"
    );
    Ok(())
}

async fn every_mode_commits_only_finished_prefixes(broker: TestBroker) -> anyhow::Result<()> {
    for ordering in [Ordering::Partition, Ordering::Key, Ordering::Unordered] {
        commits_only_finished_prefixes(&broker, ordering)
            .await
            .with_context(|| format!("ordering {ordering}"))?;
    }
    Ok(())
}

/// Under random handler delays, every commit the broker acknowledges covers only offsets whose
/// handler had returned; at the end every message was handled and everything is committed.
async fn commits_only_finished_prefixes(
    broker: &TestBroker,
    ordering: Ordering,
) -> anyhow::Result<()> {
    const MESSAGES: usize = 3_000;
    let topic = unique("commit-safety");
    broker.create_topic(&topic, 3).await?;
    let produced = broker.produce_keyed(&topic, 0, MESSAGES, 50).await?;

    // Finished offsets per partition, recorded as the handler's last act.
    let finished: Arc<Mutex<BTreeMap<i32, BTreeSet<i64>>>> = Arc::default();
    let done = finished.clone();
    let consumer = broker
        .consumer(&unique("commit-safety"), &topic)
        .ordering(ordering)
        .max_in_flight(64)
        .commit_interval(Duration::from_millis(50))
        .build(handler_fn(move |msg: Message| {
            let done = done.clone();
            async move {
                let pause = rand::random::<u64>() % 3_000;
                tokio::time::sleep(Duration::from_micros(pause)).await;
                done.lock()
                    .unwrap()
                    .entry(msg.partition())
                    .or_default()
                    .insert(msg.offset());
                Ok(())
            }
        }))?
        .spawn()?;

    // Check every acknowledged commit as it is published: all offsets below it finished.
    let mut status = consumer.status();
    let checker = {
        let finished = finished.clone();
        tokio::spawn(async move {
            let mut checked = 0usize;
            while let Ok(s) = status.changed().await {
                let committed = s.committed;
                let finished = finished.lock().unwrap();
                for (tp, next) in committed {
                    let done = finished.get(&tp.partition).cloned().unwrap_or_default();
                    if let Some(missing) = (0..next).find(|o| !done.contains(o)) {
                        anyhow::bail!("{tp} committed {next} before offset {missing} finished");
                    }
                    checked += 1;
                }
            }
            Ok(checked)
        })
    };

    // One past the last acknowledged offset of each partition. (Tansu's ListOffsets may lag
    // the acknowledgements for a moment, so the broker's watermarks are not used here.)
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for p in &produced {
        let e = end.entry(p.partition).or_default();
        *e = (*e).max(p.offset + 1);
    }
    let mut status = consumer.status();
    wait_status(&mut status, LIMIT, "everything committed", |s| {
        end.iter()
            .all(|(p, e)| s.committed.get(&tp(&topic, *p)) == Some(e))
    })
    .await
    .with_context(|| format!("log end offsets {end:?}"))?;
    consumer.shutdown();
    consumer.wait().await?;
    let checked = tokio::time::timeout(LIMIT, checker)
        .await??
        .context("commit checker")?;
    ensure!(checked > 3, "only {checked} commits were checked");

    let finished = finished.lock().unwrap();
    for p in &produced {
        ensure!(
            finished
                .get(&p.partition)
                .is_some_and(|f| f.contains(&p.offset)),
            "produced {}/{} was never handled",
            p.partition,
            p.offset
        );
    }
    Ok(())
}

async fn buffers_stay_within_bounds_under_a_slow_handler(broker: TestBroker) -> anyhow::Result<()> {
    const PARTITIONS: i32 = 4;
    const PER_PARTITION: usize = 1_500;
    const LIMITS: BufferLimits = BufferLimits {
        partition_messages: 40,
        partition_bytes: 24 * 1024,
        total_messages: 100,
        total_bytes: 64 * 1024,
    };
    let topic = unique("bounded");
    broker.create_topic(&topic, PARTITIONS).await?;
    let produced = broker
        .produce_to_partitions(&topic, PARTITIONS, PER_PARTITION)
        .await?;
    let largest = produced
        .iter()
        .map(|p| p.key.len() + p.payload.len())
        .max()
        .unwrap_or(0);

    let recorder = Recorder::default();
    let rec = recorder.clone();
    let consumer = broker
        .consumer(&unique("bounded"), &topic)
        .ordering(Ordering::Unordered)
        .max_in_flight(16)
        .buffer_limits(LIMITS)
        .commit_interval(Duration::from_millis(100))
        .build(handler_fn(move |msg: Message| {
            let rec = rec.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                rec.record(&msg);
                Ok(())
            }
        }))?
        .spawn()?;
    recorder.wait_for(produced.len(), LIMIT).await?;
    let mut status = consumer.status();
    let s = wait_status(&mut status, LIMIT, "final figures", |s| {
        s.buffered_messages == 0 && s.peak_buffered_messages > 0
    })
    .await?;
    consumer.shutdown();
    consumer.wait().await?;

    let slack = PARTITIONS as usize; // a partition is paused by the message that crosses a bound
    ensure!(
        s.peak_buffered_messages <= LIMITS.total_messages + slack,
        "buffered {} messages, bound {}",
        s.peak_buffered_messages,
        LIMITS.total_messages
    );
    ensure!(
        s.peak_buffered_bytes <= LIMITS.total_bytes + slack * largest,
        "buffered {} bytes, bound {}",
        s.peak_buffered_bytes,
        LIMITS.total_bytes
    );
    ensure!(
        produced.len() > 20 * LIMITS.total_messages,
        "the backlog must dwarf the bound"
    );
    let distinct: BTreeSet<_> = recorder
        .handled()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect();
    ensure!(
        distinct.len() == produced.len(),
        "{} of {} handled",
        distinct.len(),
        produced.len()
    );
    Ok(())
}

/// The offset and commit metadata the broker holds for `group` on `topic`/`partition`.
async fn committed_metadata(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, String)> {
    let (mut client, group, topic) = (broker.client(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client.set("group.id", &group).create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, partition);
        let list = consumer.committed_offsets(list, Duration::from_secs(10))?;
        let e = list
            .find_partition(&topic, partition)
            .context("partition missing")?;
        Ok((e.offset().to_raw().unwrap_or(-1), e.metadata().to_string()))
    })
    .await?
}

/// Whether the broker gives back the metadata committed with an offset.
async fn broker_keeps_commit_metadata(broker: &TestBroker, topic: &str) -> anyhow::Result<bool> {
    let group = unique("probe");
    let (mut client, probe, probe_topic) = (broker.client(), group.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let consumer: BaseConsumer = client.set("group.id", &probe).create()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&probe_topic, 0, Offset::Offset(0))?;
        list.find_partition(&probe_topic, 0)
            .context("probe partition")?
            .set_metadata("probe");
        consumer.commit(&list, CommitMode::Sync)?;
        Ok(())
    })
    .await??;
    let (_, meta) = committed_metadata(broker, &group, topic, 0).await?;
    Ok(meta == "probe")
}

async fn restart_skips_work_finished_above_the_watermark(broker: TestBroker) -> anyhow::Result<()> {
    const MESSAGES: usize = 200;
    const STUCK: i64 = 10;
    let topic = unique("offset-map");
    let group = unique("offset-map");
    broker.create_topic(&topic, 1).await?;
    broker.produce_to_partitions(&topic, 1, MESSAGES).await?;

    // First run: offset 10 never finishes; everything after it does, out of order.
    let first = Recorder::default();
    let rec = first.clone();
    let consumer = broker
        .consumer(&group, &topic)
        .ordering(Ordering::Unordered)
        .max_in_flight(32)
        .commit_interval(Duration::from_millis(50))
        .build(handler_fn(move |msg: Message| {
            let rec = rec.clone();
            async move {
                if msg.offset() == STUCK {
                    std::future::pending::<()>().await;
                }
                rec.record(&msg);
                Ok(())
            }
        }))?
        .spawn()?;
    first.wait_for(MESSAGES - 1, LIMIT).await?;
    // Wait (bounded) until the broker holds the offset map of everything above offset 10.
    // A broker that drops commit metadata (tansu 0.6 does) can only give at-least-once from the
    // committed offset: then everything from offset 10 on must be handled again.
    let keeps_metadata = broker_keeps_commit_metadata(&broker, &topic).await?;
    let finished_above: Vec<i64> = (STUCK + 1..MESSAGES as i64).collect();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (next, meta) = committed_metadata(&broker, &group, &topic, 0).await?;
        let map = offset_map::decode(next, &meta);
        if next == STUCK && (map == finished_above || !keeps_metadata) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "offset map never committed: {next} {meta:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.abort();
    consumer.wait().await?;
    let (expected_again, expected_skips) = if keeps_metadata {
        (vec![STUCK], finished_above.len() as u64)
    } else {
        eprintln!(
            "NOTE: this broker does not store commit metadata; offset maps cannot work on it"
        );
        ((STUCK..MESSAGES as i64).collect(), 0)
    };

    // Second run: only what was not finished is handled again.
    let second = Recorder::default();
    let rec = second.clone();
    let consumer = broker
        .consumer(&group, &topic)
        .ordering(Ordering::Unordered)
        .commit_interval(Duration::from_millis(50))
        .build(handler_fn(move |msg: Message| {
            let rec = rec.clone();
            async move {
                rec.record(&msg);
                Ok(())
            }
        }))?
        .spawn()?;
    let mut status = consumer.status();
    wait_status(
        &mut status,
        LIMIT,
        "everything committed, the finished work skipped",
        |s| {
            s.committed.get(&tp(&topic, 0)) == Some(&(MESSAGES as i64))
                && s.skipped_as_finished == expected_skips
        },
    )
    .await?;
    consumer.shutdown();
    consumer.wait().await?;
    let mut again: Vec<i64> = second.handled().iter().map(|h| h.offset).collect();
    again.sort_unstable();
    ensure!(
        again == expected_again,
        "handled again after restart: {again:?}"
    );
    Ok(())
}

/// Key order: an early record hangs while the records of the other keys after it finish. A
/// graceful shutdown gives up on it when its drain deadline expires and commits, in that same
/// final commit, the offset below it with an offset map of everything finished above. The
/// broker gives both back; the group's next consumer handles the held record and the records
/// of its key queued behind it, and nothing the map records as finished.
async fn shutdown_past_the_drain_deadline_commits_the_offset_map_of_other_keys(
    broker: TestBroker,
) -> anyhow::Result<()> {
    const MESSAGES: i64 = 60;
    const KEYS: i64 = 6;
    const HELD: i64 = 3;
    const DRAIN: Duration = Duration::from_secs(1);
    let topic = unique("offset-map-key");
    let group = unique("offset-map-key");
    broker.create_topic(&topic, 1).await?;
    // Record i has key k{i % KEYS}: the held record's key comes back every KEYS offsets.
    let records =
        (0..MESSAGES).map(|i| (Some(0), format!("k{}", i % KEYS), format!("{topic}:{i}")));
    broker.produce_records(&topic, records).await?;
    let held_key: Vec<i64> = (HELD..MESSAGES).step_by(KEYS as usize).collect();
    let finished_above: Vec<i64> = (HELD + 1..MESSAGES)
        .filter(|o| !held_key.contains(o))
        .collect();

    // First run: no periodic commit comes before the shutdown, so the shutdown's final commit
    // is the one that must carry the map.
    let first = Recorder::default();
    let rec = first.clone();
    let consumer = broker
        .consumer(&group, &topic)
        .ordering(Ordering::Key)
        .commit_interval(Duration::from_secs(3_600))
        .drain_timeout(DRAIN)
        .build(handler_fn(move |msg: Message| {
            let rec = rec.clone();
            async move {
                if msg.offset() == HELD {
                    std::future::pending::<()>().await;
                }
                rec.record(&msg);
                Ok(())
            }
        }))?
        .spawn()?;
    first
        .wait_for(MESSAGES as usize - held_key.len(), LIMIT)
        .await?;
    let (next, _) = committed_metadata(&broker, &group, &topic, 0).await?;
    ensure!(next < 0, "committed {next} before the shutdown");
    let stopping = std::time::Instant::now();
    consumer.shutdown();
    tokio::time::timeout(LIMIT, consumer.wait())
        .await
        .context("consumer did not stop")??;
    ensure!(
        stopping.elapsed() >= DRAIN,
        "stopped in {:?}: the held record cannot have been drained",
        stopping.elapsed()
    );
    let handled: BTreeSet<i64> = first.handled().iter().map(|h| h.offset).collect();
    let expected: BTreeSet<i64> = (0..HELD).chain(finished_above.iter().copied()).collect();
    ensure!(handled == expected, "first run handled {handled:?}");

    // What the broker holds: the held offset, and the map of what finished above it.
    let (next, meta) = committed_metadata(&broker, &group, &topic, 0).await?;
    ensure!(next == HELD, "committed {next} (metadata {meta:?})");
    ensure!(
        meta.starts_with(&format!("sg1:{HELD}:")),
        "metadata {meta:?}"
    );
    ensure!(
        offset_map::decode(next, &meta) == finished_above,
        "the offset map {meta:?} does not record what finished above {HELD}"
    );

    // Second run: the held record and its key's later records, in order; nothing else.
    let second = Recorder::default();
    let rec = second.clone();
    let consumer = broker
        .consumer(&group, &topic)
        .ordering(Ordering::Key)
        .commit_interval(Duration::from_millis(50))
        .build(handler_fn(move |msg: Message| {
            let rec = rec.clone();
            async move {
                rec.record(&msg);
                Ok(())
            }
        }))?
        .spawn()?;
    let mut status = consumer.status();
    // The skips are counted before the commit that passes them is asked for.
    let last = wait_status(&mut status, LIMIT, "everything committed", |s| {
        s.committed.get(&tp(&topic, 0)) == Some(&MESSAGES)
    })
    .await?;
    consumer.shutdown();
    consumer.wait().await?;
    let again: Vec<i64> = second.handled().iter().map(|h| h.offset).collect();
    ensure!(again == held_key, "handled again after restart: {again:?}");
    ensure!(
        last.skipped_as_finished == finished_above.len() as u64,
        "{} skipped as finished",
        last.skipped_as_finished
    );
    Ok(())
}

/// With `upcoming(true)`, each call learns what its lane hands over next: in partition order
/// the partition's following offsets, in key order the key's, and each forecast's first
/// message is the lane's next call (no failure here changes it); unordered lanes tell nothing.
async fn a_handler_is_told_what_its_lane_hands_over_next(broker: TestBroker) -> anyhow::Result<()> {
    const MESSAGES: usize = 2_000;
    const KEYS: usize = 20;
    let topic = unique("upcoming");
    broker.create_topic(&topic, 2).await?;
    broker.produce_keyed(&topic, 0, MESSAGES, KEYS).await?;
    for ordering in [Ordering::Partition, Ordering::Key, Ordering::Unordered] {
        type Call = (Message, Vec<Message>);
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let recorder = Recorder::default();
        let (rec, seen) = (recorder.clone(), calls.clone());
        let consumer = broker
            .consumer(&unique("upcoming"), &topic)
            .ordering(ordering)
            .upcoming(true)
            .build(handler_fn(move |msg: Message| {
                let (rec, seen) = (rec.clone(), seen.clone());
                async move {
                    let next = Upcoming::current().map_or(vec![], |u| u.messages().to_vec());
                    seen.lock().unwrap().push((msg.clone(), next));
                    rec.record(&msg);
                    Ok(())
                }
            }))?
            .spawn()?;
        recorder.wait_for(MESSAGES, LIMIT).await?;
        consumer.shutdown();
        consumer.wait().await?;
        let calls = calls.lock().unwrap();
        // The unit a lane keeps in order: the partition, or the partition and key.
        let unit = |m: &Message| {
            (
                m.partition(),
                (ordering == Ordering::Key).then(|| m.key().map(<[u8]>::to_vec)),
            )
        };
        let mut told = 0;
        for (i, (msg, next)) in calls.iter().enumerate() {
            if next.is_empty() {
                continue;
            }
            told += 1;
            ensure!(
                ordering != Ordering::Unordered,
                "an unordered call was told {} messages",
                next.len()
            );
            let mut previous = msg.offset();
            for m in next {
                ensure!(
                    unit(m) == unit(msg) && m.offset() > previous,
                    "{ordering:?}: {:?} told after {:?}",
                    m,
                    msg
                );
                previous = m.offset();
            }
            if ordering == Ordering::Partition {
                ensure!(
                    next[0].offset() == msg.offset() + 1,
                    "partition order skipped after {}",
                    msg.offset()
                );
            }
            let after = calls[i + 1..]
                .iter()
                .find(|(m, _)| unit(m) == unit(msg))
                .map(|(m, _)| m.offset());
            ensure!(
                after == Some(next[0].offset()),
                "{ordering:?}: after {} came {after:?}, not {}",
                msg.offset(),
                next[0].offset()
            );
        }
        ensure!(
            ordering == Ordering::Unordered || told > 0,
            "{ordering:?}: no call was told anything"
        );
    }
    Ok(())
}
