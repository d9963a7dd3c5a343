//! Prove it: scenarios that break things on purpose while a consumer runs, and the checker
//! (`common/checker.rs`) counting what came out: lost (must be 0), duplicates (bounded by the
//! in-flight and uncommitted window at each fault), order violations in the ordered modes (must
//! be 0), offsets committed past unfinished records (must be 0), and the recovery time after
//! each fault.
//!
//! Each scenario writes a live stream of keyed records (`r:ID:KEY:SEQ`) while its fault runs,
//! so that faults strike mid-stream and recovery is measured on records still arriving. Short
//! forms run in CI; `SLUICEGATE_LONG=1` runs the long forms (more records, more faults), as
//! `scripts/soak` does. Every scenario prints one `RELIABILITY |` line (run with
//! `--nocapture` to see them; RELIABILITY.md collects them).
//!
//! The crash scenario (SIGKILL of a consumer process) is in `tests/crash.rs`.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{
    batch_handler_fn, handler_fn, json_handler, ApiKey, ConsumerBuilder, ConsumerHandle, ErrorCode,
    HandlerError, Message,
};

use common::checker::{check, Evidence, Mode, OrderCheck, Verdict};
use common::ledger::{PartitionLedger, Totals};
use common::records::{due, parse, payload, records};
use common::{
    diagnosis, ends_of, stop, unique, wait_status, Handled, Produced, Recorder, TestBroker,
};

/// Bound on one phase of a scenario (a join, catching up, a shutdown).
const PHASE: Duration = Duration::from_secs(90);
/// Handler calls at once, per member: part of the duplicate window.
const MAX_IN_FLIGHT: usize = 64;
/// How often members commit: the other part of the duplicate window.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Whether to run the long forms (`SLUICEGATE_LONG=1`).
fn long() -> bool {
    std::env::var("SLUICEGATE_LONG").as_deref() == Ok("1")
}

/// `short` in CI, `long` in the long form.
fn scaled(short: u64, long_form: u64) -> u64 {
    if long() {
        long_form
    } else {
        short
    }
}

/// What the handler does with a record (by its id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Finish,
    /// Finish after this long.
    Slow(Duration),
    /// A permanent error: dead-lettered.
    Fail,
    /// A panic: caught, dead-lettered.
    Panic,
    /// Never returns: cut off by the handler timeout, dead-lettered.
    Hang,
}

impl Outcome {
    fn dead_lettered(self) -> bool {
        matches!(self, Outcome::Fail | Outcome::Panic | Outcome::Hang)
    }

    /// Plays the outcome; `Err` for the failing ones.
    async fn play(self) -> Result<(), HandlerError> {
        match self {
            Outcome::Finish => Ok(()),
            Outcome::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Outcome::Fail => Err(HandlerError::permanent("poison record")),
            Outcome::Panic => panic!("a handler panics (on purpose)"),
            Outcome::Hang => {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                Ok(())
            }
        }
    }
}

type Behaviour = Arc<dyn Fn(u64) -> Outcome + Send + Sync>;

/// The id of a scenario record (`None` for hostile ones).
fn id_of(msg: &Message) -> Option<u64> {
    let payload = std::str::from_utf8(msg.payload()?).ok()?;
    parse(payload).map(|(id, _, _)| id)
}

/// A scenario's settings.
struct Scenario {
    name: String,
    mode: Mode,
    partitions: i32,
    keys: u64,
    /// Records written per second while the fault runs, and for how long.
    rate: u64,
    secs: u64,
    behaviour: Behaviour,
    /// Extra consumer settings.
    configure: fn(ConsumerBuilder) -> ConsumerBuilder,
    /// Replaces the duplicate bound computed from the in-flight and uncommitted window.
    max_duplicates: Option<usize>,
}

impl Scenario {
    fn new(name: &str, mode: Mode) -> Self {
        Scenario {
            name: format!("{name}-{mode:?}").to_lowercase(),
            mode,
            partitions: 4,
            keys: 50,
            rate: 300,
            secs: scaled(8, 120),
            behaviour: Arc::new(|_| Outcome::Finish),
            configure: |b| b,
            max_duplicates: None,
        }
    }

    fn dead_letters(&self) -> bool {
        (0..1_000).any(|id| (self.behaviour)(id).dead_lettered())
    }
}

/// What a fault script works with while the stream runs.
struct Ctx<'a> {
    broker: &'a TestBroker,
    scenario: &'a Scenario,
    topic: String,
    group: String,
    recorder: Recorder,
}

impl Ctx<'_> {
    /// Records in the stream that the handler finishes (not those failing on purpose).
    fn total(&self) -> usize {
        let s = self.scenario;
        (0..s.rate * s.secs)
            .filter(|id| !(s.behaviour)(*id).dead_lettered())
            .count()
    }

    fn kafka(&self) -> &sluicegate::EmbeddedKafka {
        self.broker
            .embedded_kafka()
            .expect("fault injection needs the embedded broker")
    }

    /// Starts one more member of the group, running the scenario's handler.
    fn member(&self) -> anyhow::Result<ConsumerHandle> {
        let s = self.scenario;
        let mut b = (s.configure)(
            self.broker
                .consumer(&self.group, &self.topic)
                .ordering(s.mode.ordering())
                .max_in_flight(MAX_IN_FLIGHT)
                .commit_interval(COMMIT_INTERVAL)
                .drain_timeout(Duration::from_secs(5)),
        );
        if s.dead_letters() {
            b = b
                .retry_policy(quick_retries())
                .dead_letter(DeadLetter::default().retry_backoff(backoff(50, 500)));
        }
        let (rec, behaviour) = (self.recorder.clone(), s.behaviour.clone());
        let handle = if s.mode == Mode::Batch {
            b.batch_limits(sluicegate::BatchLimits::default().max_messages(20))
                .build_batch(batch_handler_fn(move |batch: Vec<Message>| {
                    let (rec, behaviour) = (rec.clone(), behaviour.clone());
                    async move {
                        for msg in &batch {
                            id_of(msg)
                                .map_or(Outcome::Finish, |id| behaviour(id))
                                .play()
                                .await?;
                        }
                        for msg in &batch {
                            rec.record(msg);
                        }
                        Ok(())
                    }
                }))?
                .spawn()?
        } else {
            b.build(handler_fn(move |msg: Message| {
                let (rec, behaviour) = (rec.clone(), behaviour.clone());
                async move {
                    id_of(&msg)
                        .map_or(Outcome::Finish, |id| behaviour(id))
                        .play()
                        .await?;
                    rec.record(&msg);
                    Ok(())
                }
            }))?
            .spawn()?
        };
        Ok(handle)
    }
}

fn backoff(initial_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(3)
        .with_backoff(backoff(5, 20))
}

/// A fault: from `.0` to `.1`.
type Fault = (Instant, Instant);

/// Writes `count` scenario records at `rate` per second, in chunks every 50 ms (the pacing of
/// a stream, not a synchronization); returns them as delivered.
async fn stream(
    broker: &TestBroker,
    topic: &str,
    count: u64,
    rate: u64,
    keys: u64,
) -> anyhow::Result<Vec<Produced>> {
    let chunk = (rate / 20).max(1);
    let start = tokio::time::Instant::now();
    let mut written = Vec::with_capacity(count as usize);
    for first in (0..count).step_by(chunk as usize) {
        tokio::time::sleep_until(start + due(first, rate)).await;
        let n = chunk.min(count - first);
        written.extend(broker.produce_scenario(topic, first, n, keys).await?);
    }
    Ok(written)
}

/// Runs `scenario` on `broker`: a first member joins, the stream is written while `fault`
/// runs, the members catch up and stop, and the checker compares what came out. Fails unless
/// the verdict is sound and the group committed every partition to its end.
async fn run(
    broker: &TestBroker,
    scenario: Scenario,
    fault: impl AsyncFnOnce(&Ctx<'_>) -> anyhow::Result<Vec<Fault>>,
) -> anyhow::Result<Verdict> {
    let topic = unique(&scenario.name);
    broker.create_topic(&topic, scenario.partitions).await?;
    let ctx = Ctx {
        broker,
        scenario: &scenario,
        group: unique(&format!("{}-group", scenario.name)),
        topic,
        recorder: Recorder::default(),
    };
    let first = ctx.member()?;
    wait_status(
        &mut first.status(),
        PHASE,
        "the first member's partitions",
        |s| !s.assigned.is_empty(),
    )
    .await?;
    let count = scenario.rate * scenario.secs;
    let (written, faults) = tokio::join!(
        stream(broker, &ctx.topic, count, scenario.rate, scenario.keys),
        fault(&ctx)
    );
    let (written, faults) = (written?, faults?);

    // Catch up: every record finished, or (failing on purpose) in the dead-letter topic.
    let outcome = |w: &Produced| {
        parse(&w.payload).map_or(Outcome::Finish, |(id, _, _)| (scenario.behaviour)(id))
    };
    let healthy: BTreeSet<(i32, i64)> = written
        .iter()
        .filter(|w| !outcome(w).dead_lettered())
        .map(|w| (w.partition, w.offset))
        .collect();
    let caught_up = ctx
        .recorder
        .wait_until(PHASE, "every healthy record finished", |handled| {
            let done: BTreeSet<_> = handled.iter().map(|h| (h.partition, h.offset)).collect();
            healthy.is_subset(&done)
        })
        .await;
    stop(first).await?;
    let end = ends_of(&written);
    // A record handed over at the last moment may still have been on its way to the
    // dead-letter topic when the members stopped: one more member takes up what is
    // uncommitted (its re-deliveries count as duplicates) until the group is at the end.
    let committed = broker.committed_offsets(&ctx.group, &ctx.topic).await?;
    let short: Vec<i32> = end
        .iter()
        .filter(|(p, e)| committed.get(p) != Some(e))
        .map(|(p, _)| *p)
        .collect();
    if !short.is_empty() {
        let closer = ctx.member()?;
        let topic = ctx.topic.clone();
        wait_status(
            &mut closer.status(),
            PHASE,
            "the group committed at the end",
            |s| {
                short.iter().all(|p| {
                    s.committed
                        .get(&sluicegate::TopicPartition::new(&topic, *p))
                        == end.get(p)
                })
            },
        )
        .await?;
        stop(closer).await?;
    }
    let poison = written
        .iter()
        .filter(|w| outcome(w).dead_lettered())
        .count();
    let dead_lettered: BTreeSet<(i32, i64)> = if poison > 0 {
        broker
            .dead_letters(&format!("{}.dlq", ctx.topic), poison, PHASE)
            .await?
            .iter()
            .map(|d| (d.original_partition, d.original_offset))
            .collect()
    } else {
        BTreeSet::new()
    };
    let committed = broker.committed_offsets(&ctx.group, &ctx.topic).await?;
    let finished = ctx.recorder.handled();
    let ends: Vec<Instant> = faults.iter().map(|(_, end)| *end).collect();
    let verdict = check(
        &Evidence {
            written: &written,
            finished: &finished,
            dead_lettered: &dead_lettered,
            committed: &committed,
            faults_ended: &ends,
        },
        scenario.mode.order(),
    );
    report(
        &format!("{} | {:?}", scenario.name, broker.kind()).to_lowercase(),
        &verdict,
        faults.len(),
    );
    caught_up.with_context(|| format!("{verdict}"))?;
    // Each fault may cost what was in flight or finished but not yet committed when it struck.
    let longest = faults
        .iter()
        .map(|(s, e)| *e - *s)
        .max()
        .unwrap_or_default();
    let window =
        MAX_IN_FLIGHT as f64 + scenario.rate as f64 * (longest + 2 * COMMIT_INTERVAL).as_secs_f64();
    let bound = (faults.len().max(1) as f64 * window) as usize;
    verdict.assert_sound(scenario.max_duplicates.unwrap_or(bound))?;
    ensure!(
        committed == end,
        "committed {committed:?}, log end {end:?}: {verdict}"
    );
    Ok(verdict)
}

/// One line for RELIABILITY.md.
fn report(name: &str, v: &Verdict, faults: usize) {
    eprintln!(
        "RELIABILITY | {name} | written {} | finished {} | dead-lettered {} | lost {} | \
         duplicates {} | order violations {} | committed past unfinished {} | faults {faults} | \
         worst recovery {}",
        v.written,
        v.finished,
        v.dead_lettered,
        v.lost,
        v.duplicates,
        v.order_violations,
        v.committed_past_unfinished,
        v.worst_recovery()
            .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
    );
}

/// Waits until the recorder has `more` records beyond what it has now (the stream is flowing),
/// or as many as the stream holds.
async fn flowing(ctx: &Ctx<'_>, more: usize) -> anyhow::Result<()> {
    let now = ctx.recorder.count();
    ctx.recorder
        .wait_for((now + more).min(ctx.total()), PHASE)
        .await
}

// --- 1 and 11: broker down and up, in every mode --------------------------------------------

/// The broker goes down `outages` times for `length`, each time while records flow.
async fn outages(ctx: &Ctx<'_>, outages: u64, length: Duration) -> anyhow::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for _ in 0..outages {
        flowing(ctx, 50).await?;
        let start = Instant::now();
        ctx.kafka().broker_down(1)?;
        tokio::time::sleep(length).await; // the fault itself
        ctx.kafka().broker_up(1)?;
        faults.push((start, Instant::now()));
    }
    Ok(faults)
}

macro_rules! in_every_mode {
    ($($name:ident => $scenario:ident),+ $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn partition() -> anyhow::Result<()> { $scenario(Mode::Partition).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn key() -> anyhow::Result<()> { $scenario(Mode::Key).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unordered() -> anyhow::Result<()> { $scenario(Mode::Unordered).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batch() -> anyhow::Result<()> { $scenario(Mode::Batch).await }
        }
    )+};
}

in_every_mode!(
    broker_down_and_up_repeatedly => broker_down_and_up,
    rebalance_storm_cooperative => storm_cooperative,
    rebalance_storm_cooperative_on_kafka => storm_cooperative_on_kafka,
);

async fn broker_down_and_up(mode: Mode) -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let n = scaled(3, 30);
    run(&broker, Scenario::new("outages", mode), async |ctx| {
        outages(ctx, n, Duration::from_millis(1_500)).await
    })
    .await?;
    Ok(())
}

// --- 2: injected request errors ---------------------------------------------------------------

/// Errors on every request a consumer group makes, and on the dead-letter writes; a second
/// member joins and leaves meanwhile, so that joins and syncs meet their errors too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_on_fetch_commit_heartbeat_join_sync_coordinator_and_dead_letters(
) -> anyhow::Result<()> {
    use ErrorCode as E;
    let broker = TestBroker::embedded()?;
    let mut scenario = Scenario::new("request-errors", Mode::Partition);
    // Joins and syncs meet errors with either protocol; the incremental one keeps the
    // member's partitions (and commits) through the join of the second member.
    scenario.configure = |b| b.set("partition.assignment.strategy", "cooperative-sticky");
    // 2% poison: dead-letter writes meet the injected Produce errors.
    scenario.behaviour = Arc::new(|id| {
        if id % 50 == 7 {
            Outcome::Fail
        } else {
            Outcome::Finish
        }
    });
    let rounds = scaled(2, 20);
    run(&broker, scenario, async |ctx| {
        let mut faults = Vec::new();
        for _ in 0..rounds {
            flowing(ctx, 50).await?;
            let start = Instant::now();
            let k = ctx.kafka();
            k.request_errors(
                ApiKey::Fetch,
                &[
                    E::NOT_LEADER_FOR_PARTITION,
                    E::REQUEST_TIMED_OUT,
                    E::TRANSPORT,
                ],
            )?;
            k.request_errors(
                ApiKey::OffsetCommit,
                &[
                    E::REQUEST_TIMED_OUT,
                    E::NOT_COORDINATOR,
                    E::COORDINATOR_LOAD_IN_PROGRESS,
                ],
            )?;
            k.request_errors(
                ApiKey::Heartbeat,
                &[E::NOT_COORDINATOR, E::REBALANCE_IN_PROGRESS],
            )?;
            k.request_errors(
                ApiKey::JoinGroup,
                &[E::COORDINATOR_LOAD_IN_PROGRESS, E::NOT_COORDINATOR],
            )?;
            k.request_errors(ApiKey::SyncGroup, &[E::REBALANCE_IN_PROGRESS])?;
            k.request_errors(
                ApiKey::FindCoordinator,
                &[E::COORDINATOR_NOT_AVAILABLE, E::COORDINATOR_NOT_AVAILABLE],
            )?;
            k.request_errors(ApiKey::Produce, &[E::NOT_ENOUGH_REPLICAS; 3])?;
            // A join and a leave: JoinGroup and SyncGroup under errors.
            let second = ctx.member()?;
            wait_status(
                &mut second.status(),
                PHASE,
                "the second member's partitions",
                |s| !s.assigned.is_empty(),
            )
            .await?;
            flowing(ctx, 50).await?;
            stop(second).await?;
            faults.push((start, Instant::now()));
        }
        Ok(faults)
    })
    .await?;
    Ok(())
}

// --- 3: round trips beyond the session and request timeouts ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_beyond_session_and_request_timeouts() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let mut scenario = Scenario::new("slow-network", Mode::Partition);
    scenario.configure = |b| b.set("socket.timeout.ms", "3000");
    scenario.secs = scaled(12, 120);
    let n = scaled(1, 10);
    run(&broker, scenario, async |ctx| {
        let mut faults = Vec::new();
        for _ in 0..n {
            flowing(ctx, 50).await?;
            let start = Instant::now();
            // Beyond socket.timeout.ms (3 s) and session.timeout.ms (6 s).
            ctx.kafka()
                .broker_round_trip_time(1, Duration::from_secs(7))?;
            tokio::time::sleep(Duration::from_secs(8)).await; // the fault itself
            ctx.kafka().broker_round_trip_time(1, Duration::ZERO)?;
            faults.push((start, Instant::now()));
        }
        Ok(faults)
    })
    .await?;
    Ok(())
}

// --- 4 and 5: the coordinator and the partition leaders move ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_coordinator_moves_to_another_broker() -> anyhow::Result<()> {
    let broker = TestBroker::embedded_cluster(3)?;
    let n = scaled(2, 20);
    run(
        &broker,
        Scenario::new("coordinator-moves", Mode::Partition),
        async |ctx| {
            let mut faults = Vec::new();
            for i in 0..n {
                flowing(ctx, 50).await?;
                let at = Instant::now();
                ctx.kafka()
                    .group_coordinator(&ctx.group, 2 + (i as i32 % 2))?;
                faults.push((at, at));
            }
            Ok(faults)
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leaders_move_to_other_brokers() -> anyhow::Result<()> {
    let broker = TestBroker::embedded_cluster(3)?;
    let n = scaled(2, 20);
    run(
        &broker,
        Scenario::new("leaders-move", Mode::Partition),
        async |ctx| {
            let mut faults = Vec::new();
            for i in 0..n {
                flowing(ctx, 50).await?;
                let at = Instant::now();
                for p in 0..ctx.scenario.partitions {
                    let to = 1 + (p + 1 + i as i32) % 3;
                    ctx.kafka().partition_leader(&ctx.topic, p, Some(to))?;
                }
                faults.push((at, at));
            }
            Ok(faults)
        },
    )
    .await?;
    Ok(())
}

// --- 7 and 11: a rebalance storm --------------------------------------------------------------

/// Members join and leave every second or so while the first one stays.
async fn storm(ctx: &Ctx<'_>) -> anyhow::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for _ in 0..scaled(4, 40) {
        if ctx.recorder.count() >= ctx.total() {
            break; // the stream has drained
        }
        flowing(ctx, 30).await?;
        let start = Instant::now();
        let member = ctx.member()?;
        wait_status(
            &mut member.status(),
            PHASE,
            "the new member's partitions",
            |s| !s.assigned.is_empty(),
        )
        .await?;
        flowing(ctx, 30).await?;
        stop(member).await?;
        faults.push((start, Instant::now()));
    }
    Ok(faults)
}

async fn storm_cooperative(mode: Mode) -> anyhow::Result<()> {
    storm_cooperative_on(TestBroker::embedded()?, mode).await
}

async fn storm_cooperative_on_kafka(mode: Mode) -> anyhow::Result<()> {
    storm_cooperative_on(TestBroker::kafka()?, mode).await
}

async fn storm_cooperative_on(broker: TestBroker, mode: Mode) -> anyhow::Result<()> {
    let mut scenario = Scenario::new("storm-cooperative", mode);
    scenario.configure = |b| b.set("partition.assignment.strategy", "cooperative-sticky");
    run(&broker, scenario, async |ctx| storm(ctx).await).await?;
    Ok(())
}

on_both_brokers!(rebalance_storm_eager);

/// The storm with the eager protocol: every join and leave revokes every partition.
async fn rebalance_storm_eager(broker: TestBroker) -> anyhow::Result<()> {
    let mut scenario = Scenario::new("storm-eager", Mode::Partition);
    scenario.configure = |b| b.set("partition.assignment.strategy", "range");
    if broker.embedded_kafka().is_some() {
        // The mock cluster refuses OffsetCommit while a join is under way (Kafka accepts it
        // from the current generation until the group completes the rebalance), so the
        // commit a revoked member makes is lost and the next owner starts again from the
        // commit before: duplicates are only reported here; loss and order still count.
        scenario.max_duplicates = Some(usize::MAX);
    }
    run(&broker, scenario, async |ctx| storm(ctx).await).await?;
    Ok(())
}

// --- 8: a handler slower than max.poll.interval.ms --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_slower_than_max_poll_interval() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let mut scenario = Scenario::new("slow-handler", Mode::Partition);
    scenario.configure = |b| b.set("max.poll.interval.ms", "7000");
    scenario.rate = 100;
    // Two records take longer than max.poll.interval.ms each.
    scenario.behaviour = Arc::new(|id| match id {
        40 | 240 => Outcome::Slow(Duration::from_secs(9)),
        _ => Outcome::Finish,
    });
    run(&broker, scenario, async |_| Ok(Vec::new())).await?;
    Ok(())
}

// --- 9: poison records, panics and timeouts ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_panics_and_timeouts_are_dead_lettered() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let mut scenario = Scenario::new("poison", Mode::Key);
    scenario.configure = |b| b.handler_timeout(Duration::from_millis(300));
    // 10% poison, 3% panics, 2% hangs.
    scenario.behaviour = Arc::new(|id| match id % 100 {
        0..=9 => Outcome::Fail,
        10..=12 => Outcome::Panic,
        13..=14 => Outcome::Hang,
        _ => Outcome::Finish,
    });
    let v = run(&broker, scenario, async |_| Ok(Vec::new())).await?;
    ensure!(v.dead_lettered * 100 >= v.written * 15, "{v}");
    Ok(())
}

// --- 10: hostile records ----------------------------------------------------------------------

/// What the typed handler expects.
#[derive(serde::Deserialize)]
struct Typed {
    #[allow(dead_code)]
    id: u64,
}

on_both_brokers!(hostile_records_are_handled_or_dead_lettered);

/// Oversized values, null keys and values, empty payloads, header values that are not UTF-8,
/// payloads that are not UTF-8, invalid JSON and JSON of the wrong shape, among healthy records,
/// through a typed JSON handler: what decodes is handled (headers intact), the rest is
/// dead-lettered with its bytes, nothing is lost, and the group commits to the end.
async fn hostile_records_are_handled_or_dead_lettered(broker: TestBroker) -> anyhow::Result<()> {
    let topic = unique("hostile");
    let group = unique("hostile-group");
    broker.create_topic(&topic, 2).await?;
    let json = |id: u64| Some(format!(r#"{{"id":{id}}}"#).into_bytes());
    let big = format!(r#"{{"id":1,"pad":"{}"}}"#, "x".repeat(512 * 1024)).into_bytes();
    let not_utf8_header = vec![0xff, 0xfe, 0x00, 0x80];
    let healthy = |partition, key: Option<&[u8]>, payload: Option<Vec<u8>>| common::RawRecord {
        partition,
        key: key.map(<[u8]>::to_vec),
        payload,
        headers: Vec::new(),
    };
    let mut good = vec![
        healthy(0, None, Some(big)),
        healthy(1, None, json(2)),
        common::RawRecord {
            headers: vec![("trace".into(), not_utf8_header.clone())],
            ..healthy(0, Some(b"k"), json(3))
        },
    ];
    good.extend((0..200).map(|i| healthy(i % 2, Some(b"k"), json(100 + i as u64))));
    let bad = [
        healthy(0, Some(b"k"), None),
        healthy(1, None, Some(Vec::new())),
        healthy(0, Some(b"k"), Some(b"{not json".to_vec())),
        healthy(1, Some(b"k"), Some(br#"{"id":"seven"}"#.to_vec())),
        healthy(0, Some(&[0xc3, 0x28]), Some(vec![0xc3, 0x28, 0xff])),
    ];
    // Healthy and hostile interleaved in each partition.
    let mut all = Vec::new();
    for (i, g) in good.iter().enumerate() {
        all.push(g.clone());
        if let Some(b) = bad.get(i) {
            all.push(b.clone());
        }
    }
    let written = broker.produce_raw(&topic, &all).await?;
    let (healthy_places, bad_places): (Vec<_>, Vec<_>) = written
        .iter()
        .zip(&all)
        .map(|(w, r)| {
            (
                (w.partition, w.offset),
                bad.iter().any(|b| b.payload == r.payload && b.key == r.key),
            )
        })
        .partition(|(_, is_bad)| !is_bad);

    let recorder = Recorder::default();
    let headers_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (rec, seen) = (recorder.clone(), headers_seen.clone());
    let handle = broker
        .consumer(&group, &topic)
        .commit_interval(COMMIT_INTERVAL)
        .retry_policy(quick_retries())
        .dead_letter(DeadLetter::default())
        .build(json_handler(move |_: Typed, msg: Message| {
            if let Some(h) = msg.headers().iter().find(|h| h.key == "trace") {
                seen.lock()
                    .unwrap()
                    .push(h.value.as_deref().map(<[u8]>::to_vec));
            }
            rec.record(&msg);
            std::future::ready(Ok(()))
        }))?
        .spawn()?;
    recorder
        .wait_until(PHASE, "every healthy record handled", |h| {
            let done: BTreeSet<_> = h.iter().map(|h| (h.partition, h.offset)).collect();
            healthy_places.iter().all(|(p, _)| done.contains(p))
        })
        .await?;
    let dead = broker
        .read_records(&format!("{topic}.dlq"), bad_places.len(), PHASE)
        .await?;
    stop(handle).await?;
    let dead_lettered: BTreeSet<(i32, i64)> = dead
        .iter()
        .map(|r| diagnosis(r).map(|d| (d.original_partition, d.original_offset)))
        .collect::<anyhow::Result<_>>()?;
    let committed = broker.committed_offsets(&group, &topic).await?;
    let verdict = check(
        &Evidence {
            written: &written,
            finished: &recorder.handled(),
            dead_lettered: &dead_lettered,
            committed: &committed,
            faults_ended: &[],
        },
        OrderCheck::None,
    );
    report(
        &format!("hostile-records | {:?}", broker.kind()).to_lowercase(),
        &verdict,
        0,
    );
    verdict.assert_sound(0)?;
    ensure!(
        dead_lettered == bad_places.iter().map(|(p, _)| *p).collect(),
        "dead-lettered {dead_lettered:?}, expected the hostile records {bad_places:?}"
    );
    // Dead letters keep the original bytes, even those that are not text.
    let values: BTreeSet<Option<Vec<u8>>> = dead
        .iter()
        .map(|r| rdkafka::Message::payload(r).map(<[u8]>::to_vec))
        .collect();
    ensure!(values.contains(&Some(vec![0xc3, 0x28, 0xff])), "{values:?}");
    ensure!(*headers_seen.lock().unwrap() == vec![Some(not_utf8_header)]);
    ensure!(committed == ends_of(&written), "{committed:?}");
    Ok(())
}

// --- The checker itself -----------------------------------------------------------------------

mod checker_logic {
    use super::*;

    fn produced(partition: i32, offset: i64, id: u64, key: &str, seq: u64) -> Produced {
        Produced {
            partition,
            offset,
            key: key.into(),
            payload: payload(id, key, seq),
        }
    }

    fn handled(p: &Produced, at: Instant) -> Handled {
        Handled {
            partition: p.partition,
            offset: p.offset,
            payload: p.payload.clone(),
            at,
        }
    }

    #[test]
    fn payloads_round_trip_and_keys_count_their_own_sequences() {
        assert_eq!(parse(&payload(7, "k:3", 2)), Some((7, "k:3", 2)));
        assert_eq!(parse("hostile"), None);
        let r = records(0, 6, 2);
        assert_eq!(r[4], ("k0".into(), payload(4, "k0", 2)));
        assert_eq!(r[5], ("k1".into(), payload(5, "k1", 2)));
    }

    #[test]
    fn counts_loss_duplicates_order_and_commits_past_unfinished() {
        let t0 = Instant::now();
        let w: Vec<_> = (0..5)
            .map(|i| produced(0, i, i as u64, "k", i as u64))
            .collect();
        let finished = [
            handled(&w[0], t0),
            handled(&w[2], t0 + Duration::from_millis(1)),
            // Offset 1 after 2: out of order in the partition and in the key.
            handled(&w[1], t0 + Duration::from_millis(2)),
            // A re-delivery: a duplicate, not an order violation.
            handled(&w[0], t0 + Duration::from_millis(3)),
            handled(&w[4], t0 + Duration::from_millis(9)),
        ];
        let dead = BTreeSet::new();
        // Offset 3 was never finished, yet the group committed past it.
        let committed = BTreeMap::from([(0, 5)]);
        let faults = [t0 + Duration::from_millis(5), t0 + Duration::from_secs(60)];
        let e = Evidence {
            written: &w,
            finished: &finished,
            dead_lettered: &dead,
            committed: &committed,
            faults_ended: &faults,
        };
        let v = check(&e, OrderCheck::Partition);
        assert_eq!(
            (
                v.lost,
                v.duplicates,
                v.order_violations,
                v.committed_past_unfinished
            ),
            (1, 1, 1, 1),
            "{v}"
        );
        assert_eq!(check(&e, OrderCheck::Key).order_violations, 1);
        assert_eq!(check(&e, OrderCheck::None).order_violations, 0);
        assert_eq!(v.recovery, vec![Some(Duration::from_millis(4)), None]);
        assert_eq!(v.worst_recovery(), Some(Duration::from_millis(4)));
        assert!(v.assert_sound(10).is_err());

        // Dead-lettered records are accounted for, not lost.
        let dead = BTreeSet::from([(0, 3)]);
        let v = check(
            &Evidence {
                dead_lettered: &dead,
                faults_ended: &faults[..1],
                ..e
            },
            OrderCheck::None,
        );
        assert_eq!((v.lost, v.committed_past_unfinished), (0, 0), "{v}");
        assert!(v.assert_sound(1).is_ok(), "{v}");
        assert!(
            v.assert_sound(0).is_err(),
            "one duplicate is over a bound of 0"
        );
    }
}

// --- The soak: a mixed scenario for a duration, RSS over time ----------------------------------

/// The soak's tally: a ledger per partition (a bit per record, so that the process's own
/// bookkeeping does not grow the resident memory being watched), in partition order.
#[derive(Default)]
struct Tally(BTreeMap<i32, PartitionLedger>);

impl Tally {
    fn finish(&mut self, partition: i32, offset: i64) {
        self.0
            .entry(partition)
            .or_default()
            .record(OrderCheck::Partition, offset, None);
    }

    fn totals(&self) -> Totals {
        Totals::of(self.0.values())
    }
}

/// A mixed scenario for `SLUICEGATE_SOAK_SECS` (10 in CI; `scripts/soak --duration` sets it):
/// a stream at 500 records/s over 4 partitions with 1% poison records, and every 10 s one of a
/// broker outage, a burst of request errors, or a member joining and leaving. Prints the
/// figures and the resident memory every 5 s, then the tally; fails on any loss, order
/// violation or commit short of the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() -> anyhow::Result<()> {
    use std::sync::Mutex;
    let secs: u64 = std::env::var("SLUICEGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    const RATE: u64 = 500;
    const PARTITIONS: i32 = 4;
    let poison = |id: u64| id % 100 == 42;
    // On tansu (`SLUICEGATE_SOAK_BROKER=tansu`) the resident memory is the consumer's alone
    // (the embedded broker's log lives in this process), and the only fault is a member
    // joining and leaving.
    let broker = match std::env::var("SLUICEGATE_SOAK_BROKER").as_deref() {
        Ok("tansu") => TestBroker::tansu()?.context("no tansu to soak against")?,
        Ok("kafka") => TestBroker::kafka()?,
        _ => TestBroker::embedded()?,
    };
    let kafka = broker.embedded_kafka();
    let topic = unique("soak");
    let group = unique("soak-group");
    broker.create_topic(&topic, PARTITIONS).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let member = || {
        let tally = tally.clone();
        broker
            .consumer(&group, &topic)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .max_in_flight(MAX_IN_FLIGHT)
            .commit_interval(COMMIT_INTERVAL)
            .retry_policy(quick_retries())
            .dead_letter(DeadLetter::default().retry_backoff(backoff(50, 500)))
            .build(handler_fn(move |msg: Message| {
                let failed = id_of(&msg).is_some_and(poison);
                if !failed {
                    tally.lock().unwrap().finish(msg.partition(), msg.offset());
                }
                std::future::ready(if failed {
                    Err(HandlerError::permanent("poison record"))
                } else {
                    Ok(())
                })
            }))?
            .spawn()
    };
    let first = member()?;
    wait_status(
        &mut first.status(),
        PHASE,
        "the first member's partitions",
        |s| !s.assigned.is_empty(),
    )
    .await?;

    let started = Instant::now();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut id, mut next_fault, mut next_report, mut fault) = (0u64, 10, 0, 0);
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        // One second of the stream, in 50 ms chunks.
        for _ in 0..20 {
            let chunk = broker.produce_scenario(&topic, id, RATE / 20, 50).await?;
            id += RATE / 20;
            for w in chunk {
                let e = ends.entry(w.partition).or_insert(0);
                *e = (*e).max(w.offset + 1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // the stream's pace
        }
        let t = started.elapsed().as_secs();
        if t >= next_report {
            let mb = common::mem::rss_mb().unwrap_or(0.0);
            rss.push((t, mb));
            let n = tally.lock().unwrap().totals().processed;
            eprintln!("SOAK | t {t:>5} s | written {id:>8} | finished {n:>8} | rss {mb:.1} MB");
            next_report += 5;
        }
        if t >= next_fault {
            next_fault += 10;
            fault += 1;
            match (fault % 3, kafka) {
                (0, Some(kafka)) => {
                    kafka.broker_down(1)?;
                    tokio::time::sleep(Duration::from_secs(1)).await; // the fault itself
                    kafka.broker_up(1)?;
                }
                (1, Some(kafka)) => {
                    use ErrorCode as E;
                    kafka.request_errors(ApiKey::Fetch, &[E::NOT_LEADER_FOR_PARTITION; 3])?;
                    kafka.request_errors(ApiKey::OffsetCommit, &[E::REQUEST_TIMED_OUT; 3])?;
                    kafka.request_errors(ApiKey::Produce, &[E::NOT_ENOUGH_REPLICAS; 3])?;
                }
                _ => {
                    let second = member()?;
                    wait_status(
                        &mut second.status(),
                        PHASE,
                        "a second member's partitions",
                        |s| !s.assigned.is_empty(),
                    )
                    .await?;
                    stop(second).await?;
                }
            }
        }
    }

    // Catch up: the group committed at the end of every partition.
    let topic2 = topic.clone();
    let result = wait_status(&mut first.status(), PHASE, "commits at the log end", |s| {
        ends.iter().all(|(p, e)| {
            s.committed
                .get(&sluicegate::TopicPartition::new(&topic2, *p))
                == Some(e)
        })
    })
    .await;
    stop(first).await?;
    let dead: BTreeSet<(i32, i64)> = broker
        .dead_letters(&format!("{topic}.dlq"), 0, PHASE)
        .await?
        .iter()
        .map(|d| (d.original_partition, d.original_offset))
        .collect();
    let tally = tally.lock().unwrap();
    let totals = tally.totals();
    let lost: u64 = ends
        .iter()
        .map(|(p, end)| {
            let ledger = tally.0.get(p);
            (0..*end)
                .filter(|o| !ledger.is_some_and(|l| l.finished(*o)) && !dead.contains(&(*p, *o)))
                .count() as u64
        })
        .sum();
    eprintln!(
        "SOAK | {secs} s | written {id} | finished {} | dead-lettered {} | lost {lost} | \
         duplicates {} | order violations {} | faults {fault} | rss first {:.1} MB, last {:.1} MB",
        totals.distinct,
        dead.len(),
        totals.duplicates(),
        totals.order_violations,
        rss.first().map_or(0.0, |r| r.1),
        rss.last().map_or(0.0, |r| r.1),
    );
    result?;
    ensure!(lost == 0, "LOST {lost} records");
    ensure!(
        totals.order_violations == 0,
        "{} order violations",
        totals.order_violations
    );
    Ok(())
}
