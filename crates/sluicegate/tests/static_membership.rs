//! Static membership (KIP-345, `group.instance.id`) on Apache Kafka, the reference broker.
//!
//! - A static member that restarts within the session timeout gets its partitions back without
//!   a rebalance: the other member's assignment never changes (its rebalance count stays put)
//!   and the restarted member resumes exactly at the committed offsets. After a graceful stop
//!   and after a crash (abort), with the classic protocol; after a graceful stop with the
//!   consumer protocol (KIP-848).
//! - A second member with the same instance id, the misconfiguration: with the classic protocol
//!   the newer member fences the older one (librdkafka's fatal `FENCED_INSTANCE_ID`). With
//!   `Reconnect::never()` the fenced member stops with `Error::Fatal`; with the default
//!   reconnect its client is re-created, joins with the same id and fences the other in turn,
//!   until the member fenced first has been fenced `max_fenced` times in a row and stops with
//!   `Error::Fatal`, leaving the id to the other. With the consumer protocol the newer member is
//!   refused (`UNRELEASED_INSTANCE_ID`) and keeps retrying with backoff, the holder undisturbed,
//!   until the holder leaves; then it takes over.
//!
//! In every case the checker (`common/checker.rs`) requires nothing lost and nothing committed
//! past unfinished work, and the group consumes to the log end of every partition afterwards.
//! Each run prints one `RELIABILITY |` line (run with `--nocapture`).

#[macro_use]
#[allow(unused_macros)] // These tests run on Apache Kafka only.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use sluicegate::policy::{Backoff, Reconnect};
use sluicegate::{
    handler_fn, ConsumerHandle, ConsumerStatus, Error, ErrorCode, GroupProtocol, Message,
    StatusWatch,
};

use common::checker::{check, Evidence, OrderCheck, Verdict};
use common::{ends_of, stop, unique, wait_status, Produced, Recorder, TestBroker};

/// Bound on one phase (a join, a fight over an instance id, catching up, a shutdown).
const PHASE: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 4;
const KEYS: u64 = 20;
/// Records written in each step of a scenario.
const STEP: u64 = 200;
/// The classic protocol's session timeout here: a restart takes well under it.
const SESSION_TIMEOUT_MS: &str = "10000";
/// How long a restarting member stays away: several heartbeat intervals (500 ms here, for
/// both protocols), so that the group would notice a member leaving, and well within the
/// session timeouts (10 s classic, the test broker's 6 s with the consumer protocol).
const AWAY: Duration = Duration::from_secs(2);
/// Handler calls at once per member, and the commit interval: the duplicate window.
const MAX_IN_FLIGHT: usize = 16;
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// Re-creation after a fatal error, with short delays (300 ms doubling) so that a fight over an
/// instance id plays out in seconds. The longest delay (5 s) is longer than any client of the
/// fight lives, so the fences count as in a row.
fn quick_reconnect() -> Reconnect {
    Reconnect::default().with_backoff(Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.0,
    })
}

/// A member of `group`: a static one if `instance` is given. Its handler records to every
/// recorder of `recorders`.
fn member(
    broker: &TestBroker,
    protocol: GroupProtocol,
    group: &str,
    topic: &str,
    instance: Option<&str>,
    reconnect: Reconnect,
    recorders: &[&Recorder],
) -> anyhow::Result<ConsumerHandle> {
    let mut b = broker
        .consumer_with(group, topic, protocol)
        .max_in_flight(MAX_IN_FLIGHT)
        .commit_interval(COMMIT_INTERVAL)
        .drain_timeout(Duration::from_secs(5))
        .reconnect(reconnect);
    if protocol == GroupProtocol::Classic {
        b = b.set("session.timeout.ms", SESSION_TIMEOUT_MS);
    }
    if let Some(id) = instance {
        b = b.group_instance_id(id);
    }
    let recorders: Vec<Recorder> = recorders.iter().map(|r| (*r).clone()).collect();
    Ok(b.build(handler_fn(move |msg: Message| {
        let recorders = recorders.clone();
        async move {
            for r in &recorders {
                r.record(&msg);
            }
            Ok(())
        }
    }))?
    .spawn()?)
}

/// Writes the next [`STEP`] scenario records (ids from `written.len()`), keyed over [`KEYS`].
async fn write_step(
    broker: &TestBroker,
    topic: &str,
    written: &mut Vec<Produced>,
) -> anyhow::Result<()> {
    let first = written.len() as u64;
    written.extend(broker.produce_scenario(topic, first, STEP, KEYS).await?);
    Ok(())
}

/// The partitions a member owns.
fn owned(s: &ConsumerStatus) -> BTreeSet<i32> {
    s.assigned.iter().map(|tp| tp.partition).collect()
}

/// Waits until the members own every partition between them, each some and none twice.
async fn wait_balanced(watches: &mut [StatusWatch]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PHASE;
    loop {
        let now: Vec<BTreeSet<i32>> = watches.iter().map(|w| owned(&w.current())).collect();
        let all: BTreeSet<i32> = now.iter().flatten().copied().collect();
        let count: usize = now.iter().map(BTreeSet::len).sum();
        if now.iter().all(|o| !o.is_empty())
            && count == PARTITIONS as usize
            && all.len() == PARTITIONS as usize
        {
            return Ok(());
        }
        let changes = watches.iter_mut().map(|w| Box::pin(w.changed()));
        if tokio::time::timeout_at(deadline, futures::future::select_all(changes))
            .await
            .is_err()
        {
            bail!("timed out after {PHASE:?} waiting for the members to share the partitions; they own {now:?}");
        }
    }
}

/// Waits until every record of `written` is finished (in `recorder`) and `group` has committed
/// each partition's log end on the broker.
async fn wait_consumed(
    broker: &TestBroker,
    group: &str,
    topic: &str,
    written: &[Produced],
    recorder: &Recorder,
) -> anyhow::Result<()> {
    let places: BTreeSet<(i32, i64)> = written.iter().map(|w| (w.partition, w.offset)).collect();
    recorder
        .wait_until(PHASE, "every record finished", |handled| {
            let done: BTreeSet<_> = handled.iter().map(|h| (h.partition, h.offset)).collect();
            places.is_subset(&done)
        })
        .await?;
    let end = ends_of(written);
    let deadline = Instant::now() + PHASE;
    loop {
        let committed = broker.committed_offsets(group, topic).await?;
        if committed == end {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the group committed {committed:?}, not the log end {end:?}, within {PHASE:?}"
        );
        // Commits are periodic (200 ms): the broker is asked again, there is no event to await.
        tokio::time::sleep(COMMIT_INTERVAL).await;
    }
}

/// The checker's verdict on the whole scenario, and one line for RELIABILITY.md.
async fn verdict(
    name: &str,
    broker: &TestBroker,
    group: &str,
    topic: &str,
    written: &[Produced],
    recorder: &Recorder,
    notes: &str,
) -> anyhow::Result<Verdict> {
    let committed = broker.committed_offsets(group, topic).await?;
    let v = check(
        &Evidence {
            written,
            finished: &recorder.handled(),
            dead_lettered: &BTreeSet::new(),
            committed: &committed,
            faults_ended: &[],
        },
        OrderCheck::Partition,
    );
    eprintln!(
        "RELIABILITY | static-membership-{name} | kafka | written {} | finished {} | lost {} | \
         duplicates {} | order violations {} | committed past unfinished {} | {notes}",
        v.written,
        v.finished,
        v.lost,
        v.duplicates,
        v.order_violations,
        v.committed_past_unfinished
    );
    ensure!(
        committed == ends_of(written),
        "committed {committed:?}, log end {:?}: {v}",
        ends_of(written)
    );
    Ok(v)
}

/// How a static member goes away before it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// Graceful shutdown: drained and committed (a static member does not leave the group).
    Graceful,
    /// Aborted, as a crash: no drain, no final commit.
    Crash,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_graceful_stop_keeps_the_assignment() -> anyhow::Result<()> {
    restart_within_session_timeout(GroupProtocol::Classic, Restart::Graceful).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_crash_keeps_the_assignment() -> anyhow::Result<()> {
    restart_within_session_timeout(GroupProtocol::Classic, Restart::Crash).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_graceful_stop_keeps_the_assignment_with_the_consumer_protocol(
) -> anyhow::Result<()> {
    restart_within_session_timeout(GroupProtocol::Consumer, Restart::Graceful).await
}

/// Static members `a` and `b` share a topic; `a` stops (gracefully or not) and comes back
/// while records keep arriving: `b` never sees a rebalance, `a` gets the same partitions back
/// and resumes at the committed offsets.
async fn restart_within_session_timeout(
    protocol: GroupProtocol,
    restart: Restart,
) -> anyhow::Result<()> {
    let broker = TestBroker::kafka()?;
    let name = format!("restart-{protocol}-{restart:?}").to_lowercase();
    let topic = unique(&format!("static-{name}"));
    broker.create_topic(&topic, PARTITIONS).await?;
    let group = unique(&format!("static-{name}-group"));
    let all = Recorder::default();
    let first_life = Recorder::default();
    let second_life = Recorder::default();
    let reconnect = Reconnect::default;
    let start_a = |rec: &Recorder| {
        member(
            &broker,
            protocol,
            &group,
            &topic,
            Some("worker-a"),
            reconnect(),
            &[&all, rec],
        )
    };

    let a = start_a(&first_life)?;
    let b = member(
        &broker,
        protocol,
        &group,
        &topic,
        Some("worker-b"),
        reconnect(),
        &[&all],
    )?;
    wait_balanced(&mut [a.status(), b.status()]).await?;
    let mut written = Vec::new();
    write_step(&broker, &topic, &mut written).await?;
    all.wait_for(written.len(), PHASE).await?;

    // `b`'s view from now on must not change: no revocation, no assignment.
    let b_before = b.status().current();
    let a_owned = owned(&a.status().current());
    let went = Instant::now();
    match restart {
        Restart::Graceful => stop(a).await?,
        Restart::Crash => {
            // Some of the latest work finished but is not committed yet: it comes again.
            write_step(&broker, &topic, &mut written).await?;
            all.wait_for(written.len() - STEP as usize / 2, PHASE)
                .await?;
            a.abort();
            a.wait().await.context("aborted member")?;
        }
    }
    // Records arrive while `a` is away; `b` does not take them. The time away is the
    // scenario's (a restart that takes this long), not a synchronization.
    write_step(&broker, &topic, &mut written).await?;
    tokio::time::sleep_until((went + AWAY).into()).await;
    let committed_at_restart = broker.committed_offsets(&group, &topic).await?;
    let a = start_a(&second_life)?;
    let back = wait_status(
        &mut a.status(),
        PHASE,
        "the restarted member's partitions",
        |s| !s.assigned.is_empty(),
    )
    .await?;
    let away = went.elapsed();
    ensure!(
        owned(&back) == a_owned,
        "the restarted member owns {:?}, before the restart {a_owned:?}",
        owned(&back)
    );
    write_step(&broker, &topic, &mut written).await?;
    wait_consumed(&broker, &group, &topic, &written, &all).await?;

    let b_after = b.status().current();
    ensure!(
        b_after.rebalances == b_before.rebalances && b_after.assigned == b_before.assigned,
        "the other member saw a rebalance while `a` restarted: {} rebalances and {:?} before, \
         {} and {:?} after",
        b_before.rebalances,
        owned(&b_before),
        b_after.rebalances,
        owned(&b_after)
    );
    // The restarted member resumed at the committed offsets: its first record of each of its
    // partitions is the one at the offset committed when it came back.
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    for h in second_life.handled() {
        first_seen.entry(h.partition).or_insert(h.offset);
    }
    let expected: BTreeMap<i32, i64> = a_owned
        .iter()
        .map(|p| (*p, committed_at_restart.get(p).copied().unwrap_or(0)))
        .collect();
    ensure!(
        first_seen == expected,
        "the restarted member started at {first_seen:?}, the committed offsets were {expected:?}"
    );
    ensure!(
        first_life.count() > 0,
        "the first life of `a` finished nothing: the test proves nothing"
    );
    stop(a).await?;
    stop(b).await?;

    let v = verdict(
        &name,
        &broker,
        &group,
        &topic,
        &written,
        &all,
        &format!(
            "other member's rebalances during the restart 0 | away {:.2} s",
            away.as_secs_f64()
        ),
    )
    .await?;
    // A graceful stop commits everything finished; a crash may repeat what was in flight or
    // finished since the last commit.
    let window = match restart {
        Restart::Graceful => 0,
        Restart::Crash => MAX_IN_FLIGHT + 2 * STEP as usize,
    };
    v.assert_sound(window)
}

/// What the fenced member's `wait` must end with: `Error::Fatal` for a fatal error of `code`.
fn fatal_with(result: Result<(), Error>, code: ErrorCode) -> anyhow::Result<()> {
    match result {
        Err(Error::Fatal(e)) if e.code() == Some(code) => Ok(()),
        other => bail!("expected Error::Fatal with {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_member_stops_with_a_fatal_error_without_reconnect() -> anyhow::Result<()> {
    same_instance_id_twice(Reconnect::never()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_members_fight_until_the_first_fenced_stops() -> anyhow::Result<()> {
    same_instance_id_twice(quick_reconnect()).await
}

/// `a` (instance `x`) and `c` (instance `y`) share a topic; then `b` starts with instance `x`
/// too. The classic protocol: `b` fences `a`. With `reconnect.on_fatal` off, `a` stops at once
/// with `Error::Fatal`; otherwise `a` and `b` fence each other until `a`, fenced first, has been
/// fenced `max_fenced` times in a row and stops. Records are written before, during and after;
/// `c` and whoever keeps `x` consume them all.
async fn same_instance_id_twice(reconnect: Reconnect) -> anyhow::Result<()> {
    let broker = TestBroker::kafka()?;
    let fights = reconnect.on_fatal;
    let name = if fights {
        "fenced-fight"
    } else {
        "fenced-stop"
    };
    let topic = unique(&format!("static-{name}"));
    broker.create_topic(&topic, PARTITIONS).await?;
    let group = unique(&format!("static-{name}-group"));
    let all = Recorder::default();
    let start = |instance: &str| {
        member(
            &broker,
            GroupProtocol::Classic,
            &group,
            &topic,
            Some(instance),
            reconnect.clone(),
            &[&all],
        )
    };

    let a = start("x")?;
    let c = start("y")?;
    wait_balanced(&mut [a.status(), c.status()]).await?;
    let mut written = Vec::new();
    write_step(&broker, &topic, &mut written).await?;
    all.wait_for(written.len(), PHASE).await?;
    let c_before = c.status().current();
    let x_owned = owned(&a.status().current());

    let a_status = a.status();
    let started = Instant::now();
    let b = start("x")?;
    // Records arrive while the two fight over `x`.
    write_step(&broker, &topic, &mut written).await?;
    let a_ended = tokio::time::timeout(PHASE, a.wait())
        .await
        .context("the fenced member did not stop")?;
    let settled = started.elapsed();
    fatal_with(a_ended, ErrorCode::FENCED_INSTANCE_ID)?;
    let a_last = a_status.current();
    let expected_fences = if fights { reconnect.max_fenced } else { 1 };
    ensure!(
        a_last.fenced == u64::from(expected_fences)
            && a_last.client_restarts == u64::from(expected_fences - 1),
        "the fenced member was fenced {} times and re-created {} times; expected {expected_fences} \
         and {}",
        a_last.fenced,
        a_last.client_restarts,
        expected_fences - 1
    );
    // The status and `/health/ready` name the instance id and the group.
    let why = a_last.client_lost.clone().unwrap_or_default();
    ensure!(
        why.contains("group.instance.id `x`") && why.contains(&format!("`{group}`")),
        "the stopped member's status does not say why: {a_last:?}"
    );
    let health = a_status.health();
    ensure!(
        !health.ready && health.reasons().contains("group.instance.id `x`"),
        "health does not name the instance id: {}",
        health.reasons()
    );

    // `b` keeps `x` and its partitions; `c` goes on with its own.
    let b_has_x = wait_status(&mut b.status(), PHASE, "`b` owning x's partitions", |s| {
        owned(s) == x_owned
    })
    .await?;
    ensure!(
        b_has_x.fenced == u64::from(expected_fences - 1),
        "`b` was fenced {} times, expected {}: {b_has_x:?}",
        b_has_x.fenced,
        expected_fences - 1
    );
    write_step(&broker, &topic, &mut written).await?;
    wait_consumed(&broker, &group, &topic, &written, &all).await?;
    let c_after = c.status().current();
    ensure!(
        c_after.assigned == c_before.assigned,
        "the other member's partitions changed: {:?} before, {:?} after",
        owned(&c_before),
        owned(&c_after)
    );
    let b_last = b.status().current();
    stop(b).await?;
    stop(c).await?;

    let v = verdict(
        name,
        &broker,
        &group,
        &topic,
        &written,
        &all,
        &format!(
            "fenced member: {} fences, {} clients re-created, stopped with Error::Fatal after \
             {:.2} s | other holder of x: {} fences | third member: {} rebalances during",
            a_last.fenced,
            a_last.client_restarts,
            settled.as_secs_f64(),
            b_last.fenced,
            c_after.rebalances - c_before.rebalances
        ),
    )
    .await?;
    // Each fence abandons what the fenced client had in flight or finished uncommitted.
    v.assert_sound((2 * expected_fences as usize) * (MAX_IN_FLIGHT + STEP as usize))
}

/// The consumer protocol (KIP-848) with the same misconfiguration: the broker refuses the newer
/// member (`UNRELEASED_INSTANCE_ID`) instead of fencing the older one. The refused member
/// re-creates its client with backoff (a refusal is not counted as a fence: the holder is not
/// disturbed, and the id is free once the holder leaves or its session times out); the holder
/// consumes undisturbed; once it stops, the refused member takes the id and its partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_protocol_refuses_the_second_member_until_the_first_leaves(
) -> anyhow::Result<()> {
    let broker = TestBroker::kafka()?;
    let topic = unique("static-refused");
    broker.create_topic(&topic, PARTITIONS).await?;
    let group = unique("static-refused-group");
    let all = Recorder::default();
    let start = |instance: &str| {
        member(
            &broker,
            GroupProtocol::Consumer,
            &group,
            &topic,
            Some(instance),
            quick_reconnect(),
            &[&all],
        )
    };

    let a = start("x")?;
    let c = start("y")?;
    wait_balanced(&mut [a.status(), c.status()]).await?;
    let mut written = Vec::new();
    write_step(&broker, &topic, &mut written).await?;
    all.wait_for(written.len(), PHASE).await?;
    let a_before = a.status().current();
    let x_owned = owned(&a_before);

    let b = start("x")?;
    // Refused several times: more than `max_fenced` would allow if refusals counted.
    let refused = wait_status(&mut b.status(), PHASE, "`b` refused 4 times", |s| {
        s.fenced >= 4
    })
    .await?;
    let why = refused.client_lost.clone().unwrap_or_default();
    ensure!(
        why.contains("group.instance.id `x`") && why.contains("held by another member"),
        "the refused member's status does not say why: {refused:?}"
    );
    ensure!(
        refused.assigned.is_empty() && !refused.stopped,
        "{refused:?}"
    );
    write_step(&broker, &topic, &mut written).await?;
    all.wait_for(written.len(), PHASE).await?;
    let a_during = a.status().current();
    ensure!(
        a_during.fenced == 0
            && a_during.rebalances == a_before.rebalances
            && a_during.assigned == a_before.assigned,
        "the holder of x was disturbed: {a_before:?} then {a_during:?}"
    );

    // The holder leaves: the refused member gets the id and its partitions.
    let left = Instant::now();
    stop(a).await?;
    wait_status(&mut b.status(), PHASE, "`b` owning x's partitions", |s| {
        owned(s) == x_owned
    })
    .await?;
    let took_over = left.elapsed();
    write_step(&broker, &topic, &mut written).await?;
    wait_consumed(&broker, &group, &topic, &written, &all).await?;
    let b_last = b.status().current();
    stop(b).await?;
    stop(c).await?;
    let v = verdict(
        "refused-consumer-protocol",
        &broker,
        &group,
        &topic,
        &written,
        &all,
        &format!(
            "refused member: {} refusals, {} clients re-created, took over {:.2} s after the \
             holder stopped",
            b_last.fenced,
            b_last.client_restarts,
            took_over.as_secs_f64()
        ),
    )
    .await?;
    v.assert_sound(0)
}
