//! The two consumer group protocols side by side: KIP-848's `consumer` protocol
//! (`group.protocol=consumer`, where the broker assigns partitions and moves only those that
//! change owner) in every ordering mode and with a batch handler, and the `classic` protocol on
//! the same scenario, on Apache Kafka (the reference: KIP-848 needs Kafka 4.0 or later).
//!
//! The scenario: a first member joins; a stream of keyed records (`r:ID:KEY:SEQ`, 300 a
//! second) is written while a second and a third member join and the second then leaves
//! gracefully, records finishing between each step; the stream ends with the last step, and
//! the members left catch up and stop. The checker (`common/checker.rs`) then requires nothing
//! lost, no order violation in the ordered modes, nothing committed past unfinished work,
//! duplicates within the in-flight and uncommitted window, and the group's commits at each
//! partition's log end. The broker's view of the group must show the protocol asked for. Each
//! run prints one `RELIABILITY |` line (run with `--nocapture`), with the rebalance count and
//! the join and hand-over times.
//!
//! librdkafka's mock cluster speaks KIP-848 too (its `ConsumerGroupHeartbeat`, with its own
//! range assignor, 3 s heartbeats): one run there, in partition mode. tansu 0.6 does not.

#[macro_use]
#[allow(unused_macros)] // on_both_brokers!: these tests choose their brokers per protocol.
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use futures::future::select_all;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use sluicegate::{
    batch_handler_fn, handler_fn, BatchLimits, ConsumerHandle, ConsumerStatus, GroupProtocol,
    Message, StatusWatch,
};

use common::checker::{check, Evidence, Mode, Verdict};
use common::{stop, unique, wait_status, Kind, Produced, Recorder, TestBroker};

/// Bound on one phase (a join, a hand-over, catching up, a shutdown).
const PHASE: Duration = Duration::from_secs(60);
/// Partitions of the topic: two per member with three members.
const PARTITIONS: i32 = 6;
const KEYS: u64 = 50;
/// Records per second while the members come and go; the stream runs until they are done.
const RATE: u64 = 300;
/// Records finished between two steps of the scenario (half a second of the stream).
const FLOW: usize = RATE as usize / 2;
/// The longest the stream may run (beyond the script's own bounds, which fail first).
const MAX_STREAM: Duration = Duration::from_secs(180);
/// Handler calls at once, per member, and how often members commit: the duplicate window.
const MAX_IN_FLIGHT: usize = 64;
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Runs `$scenario(GroupProtocol, Mode)` as one test per mode, on Apache Kafka.
macro_rules! on_kafka_in_every_mode {
    ($($name:ident => $protocol:expr),+ $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn partition() -> anyhow::Result<()> {
                members_join_and_leave(&TestBroker::kafka()?, $protocol, Mode::Partition).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn key() -> anyhow::Result<()> {
                members_join_and_leave(&TestBroker::kafka()?, $protocol, Mode::Key).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unordered() -> anyhow::Result<()> {
                members_join_and_leave(&TestBroker::kafka()?, $protocol, Mode::Unordered).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batch() -> anyhow::Result<()> {
                members_join_and_leave(&TestBroker::kafka()?, $protocol, Mode::Batch).await
            }
        }
    )+};
}

on_kafka_in_every_mode!(consumer_protocol => GroupProtocol::Consumer);

/// The classic protocol (librdkafka's default eager assignors) on the same scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_protocol_partition() -> anyhow::Result<()> {
    members_join_and_leave(
        &TestBroker::kafka()?,
        GroupProtocol::Classic,
        Mode::Partition,
    )
    .await
}

/// The consumer protocol on librdkafka's mock cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_on_the_embedded_broker() -> anyhow::Result<()> {
    members_join_and_leave(
        &TestBroker::embedded()?,
        GroupProtocol::Consumer,
        Mode::Partition,
    )
    .await
}

/// Starts one member of `group`, recording what its handler finishes.
fn member(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    protocol: GroupProtocol,
    mode: Mode,
    recorder: &Recorder,
) -> anyhow::Result<ConsumerHandle> {
    let b = broker
        .consumer_with(group, topic, protocol)
        .ordering(mode.ordering())
        .max_in_flight(MAX_IN_FLIGHT)
        .commit_interval(COMMIT_INTERVAL)
        .drain_timeout(Duration::from_secs(5));
    let rec = recorder.clone();
    let handle = if mode == Mode::Batch {
        b.batch_limits(BatchLimits::default().max_messages(20))
            .build_batch(batch_handler_fn(move |batch: Vec<Message>| {
                let rec = rec.clone();
                async move {
                    for msg in &batch {
                        rec.record(msg);
                    }
                    Ok(())
                }
            }))?
            .spawn()?
    } else {
        b.build(handler_fn(move |msg: Message| {
            let rec = rec.clone();
            async move {
                rec.record(&msg);
                Ok(())
            }
        }))?
        .spawn()?
    };
    Ok(handle)
}

/// Writes scenario records at [`RATE`] per second, in chunks every 50 ms (the pacing of a
/// stream, not a synchronization), until `done` is set (at most [`MAX_STREAM`]); returns them
/// as delivered.
async fn stream(
    broker: &TestBroker,
    topic: &str,
    done: &AtomicBool,
) -> anyhow::Result<Vec<Produced>> {
    let chunk = RATE / 20;
    let start = tokio::time::Instant::now();
    let mut written = Vec::new();
    for i in 0.. {
        if done.load(AtomicOrdering::Relaxed) {
            break;
        }
        let at = Duration::from_millis(50 * i);
        ensure!(
            at < MAX_STREAM,
            "the members did not finish coming and going within {MAX_STREAM:?}"
        );
        tokio::time::sleep_until(start + at).await;
        written.extend(
            broker
                .produce_scenario(topic, i * chunk, chunk, KEYS)
                .await?,
        );
    }
    Ok(written)
}

/// Waits until `more` records beyond those finished now are finished: the stream is flowing.
async fn flowing(recorder: &Recorder, more: usize) -> anyhow::Result<()> {
    let now = recorder.count();
    recorder.wait_for(now + more, PHASE).await
}

/// Waits until the members' statuses together satisfy `done`, at most [`PHASE`]; the error
/// names `what` and shows what each member owned last.
async fn wait_members(
    watches: &mut [StatusWatch],
    what: &str,
    done: impl Fn(&[ConsumerStatus]) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PHASE;
    loop {
        let now: Vec<ConsumerStatus> = watches.iter().map(StatusWatch::current).collect();
        if done(&now) {
            return Ok(());
        }
        // Any member's next change (a status changed since the look above is seen at once).
        let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
        if tokio::time::timeout_at(deadline, select_all(changes))
            .await
            .is_err()
        {
            let owned: Vec<_> = now.iter().map(owned).collect();
            anyhow::bail!("timed out after {PHASE:?} waiting for {what}; members own {owned:?}");
        }
    }
}

/// The partitions a member owns.
fn owned(s: &ConsumerStatus) -> BTreeSet<i32> {
    s.assigned.iter().map(|tp| tp.partition).collect()
}

/// Whether the members own every partition between them, each one some and none the same.
fn balanced(members: &[ConsumerStatus]) -> bool {
    let mut all = BTreeSet::new();
    let mut count = 0;
    for s in members {
        let o = owned(s);
        if o.is_empty() {
            return false;
        }
        count += o.len();
        all.extend(o);
    }
    count == PARTITIONS as usize && all.len() == PARTITIONS as usize
}

/// The group as the classic protocol's DescribeGroups shows it: `None` where the broker does not
/// answer it (the mock cluster).
#[derive(Debug)]
struct Described {
    protocol_type: String,
    state: String,
    members: usize,
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DescribeGroups: type {:?}, state {}, {} members",
            self.protocol_type, self.state, self.members
        )
    }
}

async fn describe_group(broker: &TestBroker, group: &str) -> anyhow::Result<Option<Described>> {
    if broker.kind() == Kind::Embedded {
        return Ok(None); // the mock cluster has no DescribeGroups
    }
    let (config, group) = (broker.client(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        let list = client
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .context("describe the group")?;
        let g = list
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .with_context(|| format!("DescribeGroups did not answer for {group}"))?;
        Ok(Some(Described {
            protocol_type: g.protocol_type().to_string(),
            state: g.state().to_string(),
            members: g.members().len(),
        }))
    })
    .await?
}

/// Checks that the broker runs the group with `protocol`, as DescribeGroups sees it while its
/// three members own partitions: a classic group is `Stable` with three members of protocol
/// type `consumer`; a KIP-848 group is not a classic group, and DescribeGroups does not find it
/// (librdkafka shows it `Dead`, without members; ConsumerGroupDescribe would describe it).
fn check_protocol(protocol: GroupProtocol, seen: &Option<Described>) -> anyhow::Result<()> {
    let Some(d) = seen else { return Ok(()) };
    let as_asked = match protocol {
        GroupProtocol::Classic => {
            d.protocol_type == "consumer" && d.state == "Stable" && d.members == 3
        }
        GroupProtocol::Consumer => {
            d.protocol_type.is_empty() && d.state == "Dead" && d.members == 0
        }
    };
    ensure!(
        as_asked,
        "the broker does not run the group with the {protocol} protocol: {d}"
    );
    Ok(())
}

/// The scenario (see the file's documentation) with `protocol` in `mode` on `broker`.
async fn members_join_and_leave(
    broker: &TestBroker,
    protocol: GroupProtocol,
    mode: Mode,
) -> anyhow::Result<()> {
    let name = format!("{protocol}-{}", mode.name());
    let topic = unique(&format!("gp-{name}"));
    broker.create_topic(&topic, PARTITIONS).await?;
    let group = unique(&format!("gp-{name}-group"));
    let recorder = Recorder::default();
    let start = || member(broker, &group, &topic, protocol, mode, &recorder);
    let done = AtomicBool::new(false);

    let started = Instant::now();
    let a = start()?;
    wait_status(
        &mut a.status(),
        PHASE,
        "the first member's partitions",
        |s| s.assigned.len() == PARTITIONS as usize,
    )
    .await?;
    let mut joins = vec![started.elapsed()];

    let script = async {
        flowing(&recorder, FLOW).await?;
        // A second member joins, then a third.
        let mut members = vec![a];
        for n in 2..=3 {
            let started = Instant::now();
            members.push(start()?);
            let mut watches: Vec<StatusWatch> = members.iter().map(|m| m.status()).collect();
            wait_members(
                &mut watches,
                &format!("{n} members sharing the partitions"),
                balanced,
            )
            .await?;
            joins.push(started.elapsed());
            flowing(&recorder, FLOW).await?;
        }
        let group_seen = describe_group(broker, &group).await?;
        // The second member leaves gracefully: it drains, commits and leaves the group.
        let b = members.remove(1);
        let b_status = b.status();
        let left = Instant::now();
        stop(b).await?;
        let mut watches: Vec<StatusWatch> = members.iter().map(|m| m.status()).collect();
        wait_members(
            &mut watches,
            "the two members left owning every partition",
            balanced,
        )
        .await?;
        let handover = left.elapsed();
        flowing(&recorder, FLOW).await?;
        anyhow::Ok((members, b_status, group_seen, handover))
    };
    let script = async {
        // Whatever happens, the stream ends with the script.
        let result = script.await;
        done.store(true, AtomicOrdering::Relaxed);
        result
    };
    let (written, script) = tokio::join!(stream(broker, &topic, &done), script);
    // The script's error says more than the stream's.
    let (members, b_status, group_seen, handover) = script?;
    let written = written?;

    // Catch up, then stop: the final commits.
    let places: BTreeSet<(i32, i64)> = written.iter().map(|w| (w.partition, w.offset)).collect();
    let caught_up = recorder
        .wait_until(PHASE, "every record finished", |handled| {
            let done: BTreeSet<_> = handled.iter().map(|h| (h.partition, h.offset)).collect();
            places.is_subset(&done)
        })
        .await;
    let mut statuses = vec![b_status];
    for m in members {
        statuses.push(m.status());
        stop(m).await?;
    }
    let rebalances: u64 = statuses.iter().map(|s| s.current().rebalances).sum();

    let committed = broker.committed_offsets(&group, &topic).await?;
    let mut end = std::collections::BTreeMap::new();
    for w in &written {
        let e = end.entry(w.partition).or_insert(0);
        *e = (*e).max(w.offset + 1);
    }
    let finished = recorder.handled();
    let verdict = check(
        &Evidence {
            written: &written,
            finished: &finished,
            dead_lettered: &BTreeSet::new(),
            committed: &committed,
            faults_ended: &[],
        },
        mode.order(),
    );
    report(
        &name,
        broker.kind(),
        &verdict,
        rebalances,
        &joins,
        handover,
        &group_seen,
    );
    check_protocol(protocol, &group_seen)?;
    caught_up.with_context(|| format!("{verdict}"))?;
    // Each of the three membership changes may cost what was in flight in every member, or
    // finished but not yet committed.
    let window = 3 * MAX_IN_FLIGHT + (RATE as f64 * (2 * COMMIT_INTERVAL).as_secs_f64()) as usize;
    verdict.assert_sound(3 * window)?;
    ensure!(
        committed == end,
        "committed {committed:?}, log end {end:?}: {verdict}"
    );
    ensure!(
        rebalances >= 4,
        "only {rebalances} rebalances for three joins and a leave"
    );
    Ok(())
}

/// One line for RELIABILITY.md.
fn report(
    name: &str,
    broker: Kind,
    v: &Verdict,
    rebalances: u64,
    joins: &[Duration],
    handover: Duration,
    group: &Option<Described>,
) {
    let joins: Vec<String> = joins
        .iter()
        .map(|d| format!("{:.2} s", d.as_secs_f64()))
        .collect();
    eprintln!(
        "RELIABILITY | group-protocol-{name} | {} | written {} | finished {} | lost {} | \
         duplicates {} | order violations {} | committed past unfinished {} | rebalances \
         {rebalances} | joins {} | hand-over after a leave {:.2} s | {}",
        broker.name(),
        v.written,
        v.finished,
        v.lost,
        v.duplicates,
        v.order_violations,
        v.committed_past_unfinished,
        joins.join(", "),
        handover.as_secs_f64(),
        group
            .as_ref()
            .map_or("DescribeGroups: not supported".into(), |d| d.to_string())
    );
}
