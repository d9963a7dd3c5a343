//! A real broker crash: the Apache Kafka broker is killed with SIGKILL mid-stream and started
//! again on the same log directory and ports, while a producer keeps writing, two consumer
//! groups (one in partition order with two members, one in key order) keep reading, and their
//! dead-letter producers write the poison records.
//!
//! The test starts its own broker (not the one the other tests of a binary share, and never the
//! broker of `SLUICEGATE_TEST_BOOTSTRAP`: it has to kill it). The checker (`common/checker.rs`)
//! then compares, per group, what was written, finished, dead-lettered and committed: nothing
//! lost, nothing committed past unfinished work, order kept, duplicates within what was in
//! flight or uncommitted at the kill. The group's commits read back from the broker just after
//! the restart must be at least those read just before the kill, and every poison record (and
//! nothing else) must be in the group's dead-letter topic. It prints one
//! `RELIABILITY | broker-crash | ...` line per group, with the outage (kill to the restarted
//! broker answering) and the recovery (from then to the first record finished).

#[allow(unused_macros)] // on_both_brokers!: this test starts its own broker.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{handler_fn, ConsumerHandle, HandlerError, Message};
use tokio_util::sync::CancellationToken;

use common::checker::{check, Evidence, Mode, Verdict};
use common::kafka_broker::KafkaBroker;
use common::records::{due, parse, scenario_record};
use common::{ends_of, stop, unique, wait_status, Produced, Recorder, TestBroker};

/// Bound on one phase (a join, catching up, a restart, a shutdown).
const PHASE: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 4;
const KEYS: u64 = 50;
/// Records written per second, in slices every 50 ms.
const RATE: u64 = 200;
/// How long the broker stays dead before it is started again (its start adds 10 s or more).
const OUTAGE: Duration = Duration::from_secs(3);
/// How long the stream goes on once consumption has resumed after the restart.
const AFTER: Duration = Duration::from_secs(3);
/// Handler calls at once, per member: part of the duplicate window.
const MAX_IN_FLIGHT: usize = 64;
/// How often members commit: the other part of the duplicate window.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Poison: the handler fails these records permanently, so they go to the dead-letter topic.
fn poison(id: u64) -> bool {
    id % 40 == 7
}

fn backoff(initial_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// One consumer group of the scenario.
struct Group {
    mode: Mode,
    name: String,
    dead_letter_topic: String,
    recorder: Recorder,
    members: Vec<ConsumerHandle>,
}

impl Group {
    fn start(
        broker: &TestBroker,
        topic: &str,
        mode: Mode,
        members: usize,
    ) -> anyhow::Result<Group> {
        let suffix = format!(".dlq-{}", mode.name());
        let mut group = Group {
            mode,
            name: unique(&format!("broker-crash-{}", mode.name())),
            dead_letter_topic: format!("{topic}{suffix}"),
            recorder: Recorder::default(),
            members: Vec::new(),
        };
        for _ in 0..members {
            let rec = group.recorder.clone();
            let member = broker
                .consumer(&group.name, topic)
                .ordering(mode.ordering())
                .max_in_flight(MAX_IN_FLIGHT)
                .commit_interval(COMMIT_INTERVAL)
                .drain_timeout(Duration::from_secs(5))
                .retry_policy(
                    RetryPolicy::default()
                        .with_max_attempts(3)
                        .with_backoff(backoff(5, 20)),
                )
                .dead_letter(
                    DeadLetter::default()
                        .suffix(&suffix)
                        .retry_backoff(backoff(50, 500)),
                )
                .build(handler_fn(move |msg: Message| {
                    let rec = rec.clone();
                    async move {
                        let id = msg
                            .payload()
                            .and_then(|p| std::str::from_utf8(p).ok())
                            .and_then(parse)
                            .map(|(id, _, _)| id);
                        if id.is_some_and(poison) {
                            return Err(HandlerError::permanent("poison record"));
                        }
                        rec.record(&msg);
                        Ok(())
                    }
                }))?
                .spawn()?;
            group.members.push(member);
        }
        Ok(group)
    }

    /// Waits until every member owns partitions and has committed each of them.
    async fn committing(&self) -> anyhow::Result<()> {
        for m in &self.members {
            wait_status(
                &mut m.status(),
                PHASE,
                &format!("{} commits on its partitions", self.name),
                |s| {
                    !s.assigned.is_empty()
                        && s.assigned.iter().all(|tp| s.committed.contains_key(tp))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until the members have committed every partition at `end`.
    async fn committed_at(&self, topic: &str, end: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let mut statuses: Vec<_> = self.members.iter().map(|m| m.status()).collect();
        let deadline = tokio::time::Instant::now() + PHASE;
        loop {
            let at_end: BTreeSet<i32> = statuses
                .iter()
                .flat_map(|s| {
                    let s = s.current();
                    s.assigned
                        .iter()
                        .filter(|tp| {
                            tp.topic == topic && s.committed.get(tp) == end.get(&tp.partition)
                        })
                        .map(|tp| tp.partition)
                        .collect::<Vec<_>>()
                })
                .collect();
            if end.keys().all(|p| at_end.contains(p)) {
                return Ok(());
            }
            // Any member's status changing (a commit, a rebalance) is worth a new look.
            let changed =
                futures::future::select_all(statuses.iter_mut().map(|s| Box::pin(s.changed())));
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!(
                    "{}: committed at the log end {end:?} only on {at_end:?} within {PHASE:?}",
                    self.name
                );
            }
        }
    }
}

/// Writes records `r:ID:KEY:SEQ` at [`RATE`] until `stop` is cancelled, without waiting for
/// acknowledgements in between (a producer goes on queueing while the broker is down); then
/// waits for every acknowledgement and returns the records as delivered.
async fn stream(
    bootstrap: String,
    topic: String,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Produced>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The outage and the broker's start take tens of seconds on a loaded machine.
        .set("message.timeout.ms", "300000")
        // As quick to reconnect as the consumers (librdkafka's default backs off up to 10 s),
        // so that the recovery measured is the consumers', not the producer's.
        .set("reconnect.backoff.max.ms", "1000")
        .create()
        .context("create the stream producer")?;
    let per_slice = (RATE / 20).max(1);
    let start = tokio::time::Instant::now();
    let mut pending = Vec::new();
    let mut id = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(start + due(id, RATE)) => {}
            _ = stop.cancelled() => break,
        }
        for _ in 0..per_slice {
            let (key, payload) = scenario_record(id, KEYS);
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                .map_err(|(e, _)| anyhow!("enqueue a record for {topic}: {e}"))?;
            pending.push((key, payload, delivery));
            id += 1;
        }
    }
    let mut written = Vec::with_capacity(pending.len());
    for (key, payload, delivery) in pending {
        let d = tokio::time::timeout(PHASE * 3, delivery)
            .await
            .context("delivery report timed out")?
            .context("producer dropped the delivery report")?
            .map_err(|(e, _)| anyhow!("produce to {topic}: {e}"))?;
        written.push(Produced {
            partition: d.partition,
            offset: d.offset,
            key,
            payload,
        });
    }
    Ok(written)
}

/// Waits until `group` has finished `more` records beyond those it has now.
async fn flowing(group: &Group, more: usize) -> anyhow::Result<()> {
    let now = group.recorder.count();
    group
        .recorder
        .wait_for(now + more, PHASE)
        .await
        .with_context(|| format!("{} is not consuming", group.name))
}

/// The offsets `group` committed on `topic`, read back as soon as the restarted broker's group
/// coordinator answers (while it loads the groups it refuses, for seconds on a busy machine).
async fn committed_once_loaded(
    broker: &TestBroker,
    group: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let deadline = Instant::now() + PHASE;
    loop {
        match broker.committed_offsets(group, topic).await {
            Ok(committed) => return Ok(committed),
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets of {group} not readable yet: {e:#}");
            }
            Err(e) => return Err(e.context("the restarted broker never gave the commits back")),
        }
        // Polling the broker: there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_poison(w: &Produced) -> bool {
    parse(&w.payload).is_some_and(|(id, _, _)| poison(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let mut kafka = tokio::task::block_in_place(KafkaBroker::start).map_err(|e| anyhow!(e))?;
    let broker = TestBroker::on_kafka(&kafka)?;
    let topic = unique("broker-crash");
    broker.create_topic(&topic, PARTITIONS).await?;
    let groups = [
        Group::start(&broker, &topic, Mode::Partition, 2)?,
        Group::start(&broker, &topic, Mode::Key, 1)?,
    ];
    for g in &groups {
        for m in &g.members {
            wait_status(&mut m.status(), PHASE, "an assignment", |s| s.joined).await?;
        }
    }
    let stop_stream = CancellationToken::new();
    let writer = tokio::spawn(stream(
        broker.bootstrap().to_string(),
        topic.clone(),
        stop_stream.clone(),
    ));

    // Mid-stream: every group consuming and committing.
    for g in &groups {
        flowing(g, 300).await?;
        g.committing().await?;
    }
    let mut before = Vec::new();
    for g in &groups {
        before.push(broker.committed_offsets(&g.name, &topic).await?);
    }
    let killed = Instant::now();
    tokio::task::block_in_place(|| kafka.kill());
    tokio::time::sleep(OUTAGE).await; // the outage itself
    tokio::task::block_in_place(|| kafka.restart()).map_err(|e| anyhow!(e))?;
    let restarted = Instant::now();
    let outage = restarted - killed;

    // The commits survived the crash (read before any member could commit again, or at
    // least before they could move backwards).
    for (g, before) in groups.iter().zip(&before) {
        let after = committed_once_loaded(&broker, &g.name, &topic).await?;
        for (p, offset) in before {
            ensure!(
                after.get(p).is_some_and(|a| a >= offset),
                "{}: partition {p} committed {offset} before the kill, {:?} after the restart",
                g.name,
                after.get(p)
            );
        }
    }
    for g in &groups {
        flowing(g, 300).await?;
    }
    tokio::time::sleep(AFTER).await; // the stream goes on for a while
    stop_stream.cancel();
    let written = writer.await.context("the stream task panicked")??;
    let end = ends_of(&written);
    ensure!(
        broker.high_watermarks(&topic).await? == end,
        "the log ends differ from what the broker acknowledged"
    );
    let healthy: BTreeSet<(i32, i64)> = written
        .iter()
        .filter(|w| !is_poison(w))
        .map(|w| (w.partition, w.offset))
        .collect();
    let poisoned: BTreeSet<(i32, i64)> = written
        .iter()
        .filter(|w| is_poison(w))
        .map(|w| (w.partition, w.offset))
        .collect();

    let mut failures = Vec::new();
    for g in groups {
        let caught_up = g
            .recorder
            .wait_until(PHASE, "every healthy record finished", |handled| {
                let done: BTreeSet<_> = handled.iter().map(|h| (h.partition, h.offset)).collect();
                healthy.is_subset(&done)
            })
            .await;
        let at_end = g.committed_at(&topic, &end).await;
        let members = g.members.len();
        for m in g.members {
            stop(m).await?;
        }
        let mut dead_lettered = BTreeSet::new();
        for d in broker.dead_letters(&g.dead_letter_topic, 0, PHASE).await? {
            ensure!(d.group == g.name && d.original_topic == topic, "{d:?}");
            dead_lettered.insert((d.original_partition, d.original_offset));
        }
        let committed = broker.committed_offsets(&g.name, &topic).await?;
        let finished = g.recorder.handled();
        let verdict = check(
            &Evidence {
                written: &written,
                finished: &finished,
                dead_lettered: &dead_lettered,
                committed: &committed,
                faults_ended: &[restarted],
            },
            g.mode.order(),
        );
        report(g.mode, &verdict, outage);
        // What was in flight or finished and not yet committed at the kill, by each member.
        let window = (MAX_IN_FLIGHT * members) as f64
            + RATE as f64 * (outage + 2 * COMMIT_INTERVAL).as_secs_f64();
        let result = (|| {
            caught_up?;
            at_end?;
            verdict.assert_sound(window as usize)?;
            ensure!(committed == end, "committed {committed:?}, log end {end:?}");
            ensure!(
                dead_lettered == poisoned,
                "dead-lettered {} records, {} poison written: missing {:?}, unexpected {:?}",
                dead_lettered.len(),
                poisoned.len(),
                poisoned
                    .difference(&dead_lettered)
                    .take(5)
                    .collect::<Vec<_>>(),
                dead_lettered
                    .difference(&poisoned)
                    .take(5)
                    .collect::<Vec<_>>()
            );
            ensure!(
                verdict.worst_recovery().is_some(),
                "nothing was finished after the restart"
            );
            anyhow::Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{} ({}): {e:#}: {verdict}", g.name, g.mode.name()));
        }
    }
    ensure!(
        failures.is_empty(),
        "{}\n(broker log: {})",
        failures.join("\n"),
        kafka.log.display()
    );
    Ok(())
}

/// One line for RELIABILITY.md.
fn report(mode: Mode, v: &Verdict, outage: Duration) {
    eprintln!(
        "RELIABILITY | broker-crash | {} | kafka | written {} | finished {} | dead-lettered {} | \
         lost {} | duplicates {} | order violations {} | committed past unfinished {} | \
         outage {:.2} s (kill to broker ready) | recovery {}",
        mode.name(),
        v.written,
        v.finished,
        v.dead_lettered,
        v.lost,
        v.duplicates,
        v.order_violations,
        v.committed_past_unfinished,
        outage.as_secs_f64(),
        v.worst_recovery()
            .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
}
