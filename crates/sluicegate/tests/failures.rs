//! Failure handling: poison messages go to the dead-letter topic with their diagnosis and the
//! rest goes on; panics, timeouts and undecodable payloads are caught; the circuit breaker stops
//! calling a failing downstream; broker outages and injected request errors lose nothing and
//! never let a commit pass unfinished work.
//!
//! Tests named in `on_both_brokers!` run against the embedded broker and tansu; the fault
//! injection tests need the embedded broker's controls.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rdkafka::message::Message as _;
use serde::Deserialize;
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, CircuitBreaker, CircuitState, Reconnect, RetryPolicy};
use sluicegate::{
    handler_fn, json_handler, ApiKey, ConsumerStatus, ErrorCode, ErrorKind, HandlerError, Message,
};

use common::{
    committed_to_end, diagnosis, stop, tp, unique, wait_status, Produced, Recorder, TestBroker,
};

/// Bound on one phase of a test (a group join, consuming a few thousand messages, a shutdown).
const PHASE: Duration = Duration::from_secs(60);

on_both_brokers!(
    poison_message_is_dead_lettered_and_everything_else_committed,
    panics_timeouts_and_undecodable_payloads_are_dead_lettered,
    retried_message_keeps_its_place_in_its_partition,
);

on_embedded_and_kafka!(
    a_record_written_while_its_partition_waits_on_a_retry_after_its_end_is_handled
);

/// Delays from `initial_ms` doubling to `max_ms` (fixed if equal), without jitter.
fn backoff(initial_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

/// Quick retries, so that tests reach the dead-letter topic fast.
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(attempts)
        .with_backoff(Backoff {
            jitter: 0.2,
            ..backoff(5, 20)
        })
}

/// A handler that records each message it handles, and fails (retryably) the first `failures`
/// attempts at the message whose payload is `flaky`, telling `failed` of each.
fn flaky_handler(
    flaky: String,
    failures: usize,
    recorder: &Recorder,
    failed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) -> impl sluicegate::Handler {
    let failures_left = AtomicUsize::new(failures);
    let recorder = recorder.clone();
    handler_fn(move |msg: Message| {
        let fail = text(msg.payload()) == flaky
            && failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        match (fail, &failed) {
            (true, Some(failed)) => {
                let _ = failed.send(());
            }
            (true, None) => {}
            (false, _) => recorder.record(&msg),
        }
        async move {
            match fail {
                true => Err(HandlerError::retryable("not yet")),
                false => Ok(()),
            }
        }
    })
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

/// A handler that fails every message whose payload is in `poison` and records the rest.
fn failing_on(
    poison: BTreeSet<String>,
    recorder: &Recorder,
) -> impl Fn(Message) -> std::future::Ready<sluicegate::HandlerResult> {
    let recorder = recorder.clone();
    move |msg: Message| {
        let payload = text(msg.payload());
        std::future::ready(if poison.contains(&payload) {
            Err(HandlerError::retryable(format!("cannot handle {payload}")))
        } else {
            recorder.record(&msg);
            Ok(())
        })
    }
}

/// One poison message among 10,000: it lands in the dead-letter topic with its key, value and
/// a correct diagnosis after its retries; every other message is handled; the group commits
/// past it to the log end.
async fn poison_message_is_dead_lettered_and_everything_else_committed(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("poison");
    let group = unique("poison-group");
    let (produced, end) = broker.fill_topic(&topic, 4, 2_500).await?;
    let poison: &Produced = &produced[3_777];

    let recorder = Recorder::default();
    let handle = broker
        .consumer(&group, &topic)
        .retry_policy(quick_retries(3))
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(200))
        .build(handler_fn(failing_on(
            BTreeSet::from([poison.payload.clone()]),
            &recorder,
        )))?
        .spawn()?;
    let mut status = handle.status();
    let started = std::time::SystemTime::now();

    recorder.wait_for(produced.len() - 1, PHASE).await?;
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 1
    })
    .await?;
    let dlq = broker
        .read_records(&format!("{topic}.dlq"), 1, PHASE)
        .await?;
    stop(handle).await?;

    let handled: BTreeSet<(i32, i64)> = recorder
        .handled()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect();
    for r in &produced {
        ensure!(
            handled.contains(&(r.partition, r.offset)) != (r == poison),
            "{r:?}: handled {}",
            handled.contains(&(r.partition, r.offset))
        );
    }
    let letter = &dlq[0];
    ensure!(text(letter.key()) == poison.key && text(letter.payload()) == poison.payload);
    let d = diagnosis(letter)?;
    ensure!(
        (
            d.original_topic.as_str(),
            d.original_partition,
            d.original_offset
        ) == (topic.as_str(), poison.partition, poison.offset),
        "{d:?}"
    );
    ensure!(
        d.error_kind == ErrorKind::Retryable && d.attempts == 3,
        "{d:?}"
    );
    ensure!(
        d.error_message == format!("cannot handle {}", poison.payload),
        "{d:?}"
    );
    ensure!(d.group == group, "{d:?}");
    let started_ms = started.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    ensure!(
        started_ms <= d.first_failure && d.first_failure <= d.last_failure,
        "failure times out of order: started {started_ms}, {d:?}"
    );
    ensure!(d.original_timestamp.is_some(), "{d:?}");
    // What the broker holds for the group agrees with what the consumer saw acknowledged.
    ensure!(broker.committed_offsets(&group, &topic).await? == end);
    Ok(())
}

/// In partition order, a message that fails twice and then succeeds keeps its place: nothing
/// after it in its partition is handled before it, and every message is handled once.
async fn retried_message_keeps_its_place_in_its_partition(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("retry-order");
    let (produced, end) = broker.fill_topic(&topic, 2, 300).await?;
    let recorder = Recorder::default();
    let handler = flaky_handler(produced[100].payload.clone(), 2, &recorder, None);
    let handle = broker
        .consumer(&unique("retry-order-group"), &topic)
        .retry_policy(RetryPolicy::default().with_backoff(backoff(100, 100)))
        .commit_interval(Duration::from_millis(100))
        .build(handler)?
        .spawn()?;
    let mut status = handle.status();
    recorder.wait_for(produced.len(), PHASE).await?;
    let s = wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end)
    })
    .await?;
    stop(handle).await?;
    ensure!(s.retried == 2, "{s:?}");
    for p in 0..2 {
        let offsets: Vec<i64> = recorder
            .handled()
            .iter()
            .filter(|h| h.partition == p)
            .map(|h| h.offset)
            .collect();
        ensure!(
            offsets.iter().copied().eq(0..end[&p]),
            "partition {p} handled out of order or not once each: {:?}...",
            &offsets[..offsets.len().min(20)]
        );
    }
    Ok(())
}

/// A partition paused to wait on a retry resumes at the first record the runtime did not take,
/// with end-of-partition events on (`enable.partition.eof`): the runtime takes messages from
/// librdkafka in batches, which move librdkafka's own resume position past everything in the
/// batch, such events included, so each pause sets the position itself. Here the record
/// written at the log end while the last one waits must be handled, once and in order.
async fn a_record_written_while_its_partition_waits_on_a_retry_after_its_end_is_handled(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("eof-retry");
    let (produced, _) = broker.fill_topic(&topic, 1, 10).await?;
    let last = produced[produced.len() - 1].payload.clone();
    let (failed_tx, mut failed) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder::default();
    let handler = flaky_handler(last, 1, &recorder, Some(failed_tx));
    let handle = broker
        .consumer(&unique("eof-retry-group"), &topic)
        .set("enable.partition.eof", "true")
        // Long enough to pause the partition (waits of 1 s or more do).
        .retry_policy(RetryPolicy::default().with_backoff(backoff(3_000, 3_000)))
        .commit_interval(Duration::from_millis(100))
        .build(handler)?
        .spawn()?;
    tokio::time::timeout(PHASE, failed.recv())
        .await
        .context("the last record's first attempt")?;
    // The partition waits on the retry (paused); a record arrives behind the one waiting.
    let late = broker
        .produce_records(
            &topic,
            std::iter::once((Some(0), "late".into(), "late".into())),
        )
        .await?;
    recorder
        .wait_for(produced.len() + 1, PHASE)
        .await
        .with_context(|| {
            format!(
                "the record written during the wait (offset {}) was never handled",
                late[0].offset
            )
        })?;
    stop(handle).await?;
    let offsets: Vec<i64> = recorder.handled().iter().map(|h| h.offset).collect();
    ensure!(
        offsets.iter().copied().eq(0..=late[0].offset),
        "handled out of order or not once each: {offsets:?}"
    );
    Ok(())
}

#[derive(Deserialize)]
struct Job {
    action: String,
}

/// A panic, a handler that never returns (cut off by the timeout) and a payload that is not
/// JSON are each dead-lettered with their kind (panics and timeouts after their retries, the
/// decode error at once); every other message is handled.
async fn panics_timeouts_and_undecodable_payloads_are_dead_lettered(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let jobs = unique("jobs");
    broker.create_topic(&jobs, 2).await?;
    let records = (0..200).map(|i| {
        let payload = match i {
            10 => r#"{"action":"panic"}"#.to_string(),
            120 => r#"{"action":"hang"}"#.to_string(),
            150 => "not json".to_string(),
            _ => format!(r#"{{"action":"work","id":{i}}}"#),
        };
        (Some(i % 2), format!("key-{i}"), payload)
    });
    let produced_jobs = broker.produce_records(&jobs, records).await?;
    let jobs_end = broker.log_end(&jobs, &produced_jobs).await?;

    let calls = Arc::new(AtomicUsize::new(0));
    let handled = Recorder::default();
    let handler = {
        let (calls, handled) = (calls.clone(), handled.clone());
        json_handler(move |job: Job, msg: Message| {
            let (calls, handled) = (calls.clone(), handled.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match job.action.as_str() {
                    "panic" => panic!("the job asked for it"),
                    "hang" => std::future::pending().await,
                    _ => handled.record(&msg),
                }
                Ok(())
            }
        })
    };
    let handle = broker
        .consumer(&unique("jobs-group"), &jobs)
        .retry_policy(quick_retries(2))
        .handler_timeout(Duration::from_millis(300))
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(200))
        .build(handler)?
        .spawn()?;
    let mut status = handle.status();
    handled.wait_for(produced_jobs.len() - 3, PHASE).await?;
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &jobs, &jobs_end) && s.dead_lettered == 3
    })
    .await?;
    let dlq = broker
        .read_records(&format!("{jobs}.dlq"), 3, PHASE)
        .await?;
    stop(handle).await?;

    let mut kinds = std::collections::HashMap::new();
    for letter in &dlq {
        let d = diagnosis(letter)?;
        kinds.insert(
            d.error_kind,
            (d.attempts, text(letter.payload()), d.error_message),
        );
    }
    let (attempts, payload, message) = &kinds[&ErrorKind::Panic];
    ensure!(*attempts == 2 && payload.contains("panic"), "{kinds:?}");
    ensure!(message.contains("the job asked for it"), "{kinds:?}");
    let (attempts, payload, _) = &kinds[&ErrorKind::Timeout];
    ensure!(*attempts == 2 && payload.contains("hang"), "{kinds:?}");
    let (attempts, payload, _) = &kinds[&ErrorKind::Decode];
    ensure!(
        *attempts == 1 && payload == "not json",
        "decode errors are not retried: {kinds:?}"
    );
    // Two calls each for the panic and the hang; the undecodable payload never reached it.
    ensure!(calls.load(Ordering::SeqCst) == produced_jobs.len() - 3 + 4);
    Ok(())
}

/// Under 100% failure the breaker opens and the handler is called at most once per cool-down
/// (the half-open probe); once the downstream recovers, a probe succeeds, the breaker closes and
/// every message is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_under_total_failure_and_closes_after_recovery() -> anyhow::Result<()>
{
    let broker = TestBroker::embedded()?;
    let topic = unique("breaker");
    let (produced, end) = broker.fill_topic(&topic, 2, 200).await?;

    const TRIP: u32 = 5;
    const COOL_DOWN: Duration = Duration::from_millis(300);
    let healthy = Arc::new(AtomicBool::new(false));
    let (failures, mut failed) = tokio::sync::watch::channel(0usize);
    let failures = Arc::new(failures);
    let recorder = Recorder::default();
    let handler = {
        let (healthy, failures, recorder) = (healthy.clone(), failures.clone(), recorder.clone());
        handler_fn(move |msg: Message| {
            let ok = healthy.load(Ordering::SeqCst);
            if ok {
                recorder.record(&msg);
            } else {
                failures.send_modify(|n| *n += 1);
            }
            async move {
                match ok {
                    true => Ok(()),
                    false => Err(HandlerError::retryable("downstream unavailable")),
                }
            }
        })
    };
    let handle = broker
        .consumer(&unique("breaker-group"), &topic)
        // Without the breaker, these retries would call the handler every few milliseconds.
        .retry_policy(RetryPolicy::default().with_backoff(backoff(5, 5)))
        .circuit_breaker(
            CircuitBreaker::default()
                .with_consecutive_failures(TRIP)
                .with_cool_down(COOL_DOWN),
        )
        .commit_interval(Duration::from_millis(100))
        .build(handler)?
        .spawn()?;
    let mut status = handle.status();

    wait_status(&mut status, PHASE, "the breaker to open", |s| {
        s.circuit == CircuitState::Open
    })
    .await?;
    let opened = Instant::now();
    // Three probes fail: three cool-downs at least.
    let probes = TRIP as usize + 3;
    tokio::time::timeout(PHASE, failed.wait_for(|n| *n >= probes))
        .await
        .context("no probes")??;
    let open_for = opened.elapsed();
    let calls_while_failing = *failed.borrow();
    // At most one probe per cool-down after it opened (and one failure of each partition's
    // lane may have been in flight when it did).
    let allowed = TRIP as usize + 2 + (open_for.as_millis() / COOL_DOWN.as_millis()) as usize;
    ensure!(
        calls_while_failing <= allowed,
        "{calls_while_failing} handler calls in {open_for:?} of total failure; the breaker \
         allows at most {allowed}"
    );
    healthy.store(true, Ordering::SeqCst);
    wait_status(
        &mut status,
        PHASE,
        "the breaker to close and commits to end",
        |s| s.circuit == CircuitState::Closed && committed_to_end(s, &topic, &end),
    )
    .await?;
    stop(handle).await?;
    ensure!(
        recorder.count() == produced.len(),
        "{} handled",
        recorder.count()
    );
    Ok(())
}

/// Produces the records, starts a recording consumer with `build`'s settings, injects `fault`
/// once the first messages were handled, and checks that every message is handled and the
/// group commits to the log end. Returns the final status.
async fn survives(
    broker: &TestBroker,
    name: &str,
    configure: impl FnOnce(sluicegate::ConsumerBuilder) -> sluicegate::ConsumerBuilder,
    fault: impl AsyncFnOnce(&TestBroker, &Recorder) -> anyhow::Result<()>,
) -> anyhow::Result<ConsumerStatus> {
    let topic = unique(name);
    let group = unique(&format!("{name}-group"));
    let (produced, end) = broker.fill_topic(&topic, 4, 500).await?;
    let recorder = Recorder::default();
    let rec = recorder.clone();
    let handle = configure(
        broker
            .consumer(&group, &topic)
            .commit_interval(Duration::from_millis(100)),
    )
    .build(handler_fn(move |msg: Message| {
        rec.record(&msg);
        // Slow enough that the fault strikes mid-run.
        async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
    }))?
    .spawn()?;
    let mut status = handle.status();
    recorder.wait_for(100, PHASE).await?;
    fault(broker, &recorder).await?;
    let last = wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end)
    })
    .await?;
    stop(handle).await?;
    let handled: BTreeSet<(i32, i64)> = recorder
        .handled()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect();
    let lost: Vec<_> = produced
        .iter()
        .filter(|r| !handled.contains(&(r.partition, r.offset)))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} messages lost: {:?}...",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    ensure!(broker.committed_offsets(&group, &topic).await? == end);
    Ok(last)
}

/// Takes the embedded broker down for `length` (the fault itself, not a synchronization), then
/// brings it back.
async fn outage(broker: &TestBroker, length: Duration) -> anyhow::Result<()> {
    let kafka = broker.embedded_kafka().expect("embedded");
    kafka.broker_down(1)?;
    tokio::time::sleep(length).await;
    kafka.broker_up(1)?;
    Ok(())
}

/// The broker goes down for several seconds mid-run and comes back: librdkafka reconnects,
/// nothing is lost and the client is not re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_of_seconds_loses_nothing() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let status = survives(
        &broker,
        "outage",
        |b| b,
        async |broker, _| outage(broker, Duration::from_secs(4)).await,
    )
    .await?;
    ensure!(status.client_restarts == 0, "{status:?}");
    Ok(())
}

/// With no broker reachable for longer than the reconnect policy allows, the runtime drops its
/// client and builds a new one (within the same process); once the broker is back the new client
/// consumes everything, re-delivering what was not committed and losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_is_recreated_when_no_broker_is_reachable_for_long() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let status = survives(
        &broker,
        "recreate",
        |b| {
            b.reconnect(
                Reconnect::default()
                    .with_unreachable_after(Duration::from_secs(2))
                    .with_backoff(backoff(200, 1000)),
            )
        },
        async |broker, _| outage(broker, Duration::from_secs(5)).await,
    )
    .await?;
    ensure!(
        status.client_restarts >= 1,
        "the client was not re-created: {status:?}"
    );
    Ok(())
}

/// Injected errors on OffsetCommit and Fetch lose nothing; commits retry until they land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_fetch_errors_lose_nothing() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    survives(
        &broker,
        "req-errors",
        |b| b,
        async |broker, _| {
            let kafka = broker.embedded_kafka().expect("embedded");
            use ErrorCode as E;
            kafka.request_errors(
                ApiKey::OffsetCommit,
                &[
                    E::REQUEST_TIMED_OUT,
                    E::NOT_COORDINATOR,
                    E::COORDINATOR_LOAD_IN_PROGRESS,
                    E::REQUEST_TIMED_OUT,
                ],
            )?;
            kafka.request_errors(
                ApiKey::Fetch,
                &[
                    E::NOT_LEADER_FOR_PARTITION,
                    E::TRANSPORT,
                    E::UNKNOWN_TOPIC_OR_PARTITION,
                    E::REQUEST_TIMED_OUT,
                ],
            )?;
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// A final commit the broker refuses at shutdown is sent again, so a graceful stop still leaves
/// the group committed at the end of what was handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_final_commit_is_sent_again() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let kafka = broker.embedded_kafka().expect("embedded");
    let topic = unique("final-commit");
    let group = unique("final-commit-group");
    let (produced, end) = broker.fill_topic(&topic, 1, 200).await?;

    let recorder = Recorder::default();
    let handle = broker
        .consumer(&group, &topic)
        // No periodic commit: the final one is the only one.
        .commit_interval(Duration::from_secs(3_600))
        .build(handler_fn(failing_on(BTreeSet::new(), &recorder)))?
        .spawn()?;
    recorder.wait_for(produced.len(), PHASE).await?;
    // Errors librdkafka hands back to the application instead of retrying itself.
    kafka.request_errors(
        ApiKey::OffsetCommit,
        &[ErrorCode::OFFSET_METADATA_TOO_LARGE; 2],
    )?;
    stop(handle).await?;
    let committed = broker.committed_offsets(&group, &topic).await?;
    assert_eq!(committed, end, "broker's committed offsets vs log end");
    Ok(())
}

/// While the dead-letter topic refuses writes, the poison message's partition commits nothing
/// past it, though everything after it was handled; once writes succeed it is dead-lettered
/// and the group commits to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_dead_letter_writes_hold_commits_back() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let kafka = broker.embedded_kafka().expect("embedded");
    let topic = unique("dlq-errors");
    let (produced, end) = broker.fill_topic(&topic, 2, 1_000).await?;
    let poison = produced[300].clone();
    // The dead-letter topic exists already, and every produce fails until cleared.
    kafka.create_topic(&format!("{topic}.dlq"), 2)?;
    kafka.request_errors(
        ApiKey::Produce,
        &[ErrorCode::TOPIC_AUTHORIZATION_FAILED; 10_000],
    )?;

    let recorder = Recorder::default();
    let handle = broker
        .consumer(&unique("dlq-errors-group"), &topic)
        .ordering(sluicegate::Ordering::Unordered)
        .retry_policy(quick_retries(2))
        .dead_letter(DeadLetter::default().retry_backoff(backoff(50, 200)))
        .commit_interval(Duration::from_millis(100))
        .build(handler_fn(failing_on(
            BTreeSet::from([poison.payload.clone()]),
            &recorder,
        )))?
        .spawn()?;
    let mut status = handle.status();
    recorder.wait_for(produced.len() - 1, PHASE).await?;
    // A commit of the other partition at its end comes after every report of this moment.
    let other = 1 - poison.partition;
    let s = wait_status(&mut status, PHASE, "the other partition committed", |s| {
        s.committed.get(&tp(&topic, other)) == end.get(&other)
    })
    .await?;
    let held = s.committed.get(&tp(&topic, poison.partition)).copied();
    ensure!(
        held.is_none_or(|c| c <= poison.offset),
        "committed {held:?} past the poison message at {} while its dead letter was unwritten",
        poison.offset
    );
    ensure!(s.dead_lettered == 0);
    kafka.clear_request_errors(ApiKey::Produce)?;
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 1
    })
    .await?;
    let dlq = broker
        .read_records(&format!("{topic}.dlq"), 1, PHASE)
        .await?;
    ensure!(diagnosis(&dlq[0])?.original_offset == poison.offset);
    stop(handle).await
}

/// How a stuck-partition scenario consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Partition,
    Key,
    Unordered,
    /// A batch handler, in this ordering.
    Batches(sluicegate::Ordering),
    ExactlyOnce,
}

impl Mode {
    /// Whether nothing after a stuck record of its partition may be handled.
    fn stops_the_whole_partition(self) -> bool {
        matches!(
            self,
            Mode::Partition | Mode::Batches(sluicegate::Ordering::Partition) | Mode::ExactlyOnce
        )
    }
}

#[derive(Deserialize)]
struct Order {
    #[allow(dead_code)]
    id: u64,
}

/// Records per partition in the stuck-partition scenarios, and where the bad ones are: the
/// record at offset 10 of partition 1 is not JSON, the one at offset 20 of partition 2 is a
/// tombstone (no value) given to a handler of a typed `Order`.
const PER_PARTITION: i64 = 40;
const NOT_JSON: (i32, i64) = (1, 10);
const TOMBSTONE: (i32, i64) = (2, 20);

/// The key of record `i` of a partition: four keys per partition, so that key order has other
/// keys to go on with.
fn order_key(i: i64) -> Vec<u8> {
    format!("customer-{}", i % 4).into_bytes()
}

/// Each handler call's messages, as (partition, offset).
type Calls = Arc<std::sync::Mutex<Vec<Vec<(i32, i64)>>>>;

/// Handles orders decoded with `msg.json::<Order>()?` (one at a time, or a batch at a time),
/// recording each message it finished, and each handler call of each message in `calls`.
fn build_order_consumer(
    builder: sluicegate::ConsumerBuilder,
    mode: Mode,
    recorder: &Recorder,
    calls: &Calls,
) -> anyhow::Result<sluicegate::ConsumerHandle> {
    let (recorder, calls) = (recorder.clone(), calls.clone());
    let limits = sluicegate::BatchLimits::default()
        .max_messages(16)
        .max_wait(Duration::from_millis(20));
    let handle = match mode {
        Mode::Batches(ordering) => builder
            .ordering(ordering)
            .batch_limits(limits)
            .build_batch(sluicegate::batch_handler_fn(move |batch: Vec<Message>| {
                let ids = batch.iter().map(|m| (m.partition(), m.offset())).collect();
                calls.lock().unwrap().push(ids);
                let decoded: Result<Vec<Order>, _> = batch.iter().map(|m| m.json()).collect();
                let recorder = recorder.clone();
                async move {
                    decoded?;
                    batch.iter().for_each(|m| recorder.record(m));
                    Ok(())
                }
            }))?
            .spawn()?,
        _ => {
            let builder = match mode {
                Mode::Key => builder.ordering(sluicegate::Ordering::Key),
                Mode::Unordered => builder.ordering(sluicegate::Ordering::Unordered),
                Mode::ExactlyOnce => builder
                    .exactly_once(unique("stuck-txn"))
                    .batch_limits(limits),
                _ => builder,
            };
            builder
                .build(handler_fn(move |msg: Message| {
                    calls
                        .lock()
                        .unwrap()
                        .push(vec![(msg.partition(), msg.offset())]);
                    let recorder = recorder.clone();
                    async move {
                        let _order: Order = msg.json()?;
                        recorder.record(&msg);
                        Ok(())
                    }
                }))?
                .spawn()?
        }
    };
    Ok(handle)
}

/// With the default retry policy and no dead-letter topic, a record that is not JSON and a
/// tombstone given to a typed handler are decode errors: tried once, never retried, never
/// skipped. Each stops its partition at its offset: commits stop there (nothing after it is
/// handled where order is kept), `/health/ready` answers 503 naming the partition, the offset
/// and the cause, and `sluicegate_partitions_stuck` counts both partitions; the clean partition
/// is consumed to its end. Restarted with a dead-letter topic, the consumer dead-letters the
/// two records and commits everything: nothing was lost.
async fn bad_records_stop_their_partitions(broker: TestBroker, mode: Mode) -> anyhow::Result<()> {
    let topic = unique("stuck");
    let group = unique("stuck-group");
    broker.create_topic(&topic, 3).await?;
    let mut records = Vec::new();
    for p in 0..3 {
        for i in 0..PER_PARTITION {
            let payload = match (p, i) {
                NOT_JSON => Some(b"{\"id\": 7,".to_vec()),
                TOMBSTONE => None,
                _ => Some(format!(r#"{{"id":{}}}"#, p as i64 * 1000 + i).into_bytes()),
            };
            records.push(common::RawRecord {
                partition: p,
                key: Some(order_key(i)),
                payload,
                headers: Vec::new(),
            });
        }
    }
    let mut produced = broker.produce_raw(&topic, &records).await?;
    let mut end = broker.log_end(&topic, &produced).await?;
    ensure!(end.values().all(|e| *e == PER_PARTITION), "{end:?}");

    let recorder = Recorder::default();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let builder = broker
        .consumer(&group, &topic)
        .commit_interval(Duration::from_millis(100))
        .http_endpoint("127.0.0.1:0".parse()?);
    let handle = build_order_consumer(builder, mode, &recorder, &calls)?;
    let mut status = handle.status();
    let mut stopped_at = BTreeMap::from([(0, PER_PARTITION), (1, NOT_JSON.1), (2, TOMBSTONE.1)]);
    let s = wait_status(&mut status, PHASE, "two partitions stuck", |s| {
        s.stuck.len() == 2 && committed_to_end(s, &topic, &stopped_at)
    })
    .await?;
    let bad_calls = || {
        let calls = calls.lock().unwrap();
        [NOT_JSON, TOMBSTONE].map(|bad| {
            let alone = calls.iter().filter(|c| c.as_slice() == [bad]).count();
            let seen = calls.iter().filter(|c| c.contains(&bad)).count();
            (alone, seen)
        })
    };
    let when_stuck = bad_calls();

    // Where each partition stopped, and why.
    let not_json = &s.stuck[&tp(&topic, NOT_JSON.0)];
    ensure!(
        (not_json.offset, not_json.kind, not_json.attempts) == (NOT_JSON.1, ErrorKind::Decode, 1),
        "{not_json:?}"
    );
    let cause = format!("cannot decode the value of {topic}/1 at offset 10 as JSON");
    ensure!(not_json.error.contains(&cause), "{not_json:?}");
    let tombstone = &s.stuck[&tp(&topic, TOMBSTONE.0)];
    ensure!(
        (tombstone.offset, tombstone.kind, tombstone.attempts)
            == (TOMBSTONE.1, ErrorKind::Decode, 1),
        "{tombstone:?}"
    );
    ensure!(
        tombstone
            .error
            .contains("the record has no value (a tombstone)"),
        "{tombstone:?}"
    );

    // What an operator sees.
    let addr = handle.http_addr().context("no endpoint")?;
    let ready = common::http::get(addr, "/health/ready", None).await?;
    ensure!(ready.status == 503, "{ready:?}");
    let expected = format!("{topic}/1 stopped at offset 10 after 1 attempt: decode error: {cause}");
    ensure!(
        ready.body.contains(&expected),
        "{expected} not in {}",
        ready.body
    );
    ensure!(
        ready
            .body
            .contains(&format!("{topic}/2 stopped at offset 20 after 1 attempt"))
            && ready.body.contains("configure a dead-letter topic"),
        "{}",
        ready.body
    );
    ensure!(handle.health().live, "{:?}", handle.health());
    let metrics = common::http::get(addr, "/metrics", None).await?.body;
    let group_label = [("group", group.as_str())];
    ensure!(
        common::http::sample(&metrics, "sluicegate_partitions_stuck", &group_label) == Some(2.0)
            && common::http::sample(&metrics, "sluicegate_ready", &group_label) == Some(0.0),
        "{metrics}"
    );

    // Everything before the bad records and all of the clean partition was handled; where
    // order is kept, nothing after them (in key order: nothing of their keys).
    let handled: BTreeSet<(i32, i64)> = recorder
        .handled()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect();
    for (p, stop) in &stopped_at {
        for i in 0..*stop {
            ensure!(handled.contains(&(*p, i)), "{p}/{i} not handled ({mode:?})");
        }
    }
    for (p, bad) in [NOT_JSON, TOMBSTONE] {
        ensure!(
            !handled.contains(&(p, bad)),
            "the bad record {p}/{bad} was handled"
        );
        let later = handled.iter().filter(|(hp, i)| *hp == p && *i > bad);
        let out_of_order: Vec<_> = match mode {
            Mode::Key => later
                .filter(|(_, i)| order_key(*i) == order_key(bad))
                .collect(),
            m if m.stops_the_whole_partition() => later.collect(),
            _ => Vec::new(),
        };
        ensure!(
            out_of_order.is_empty(),
            "{mode:?}: handled after the stuck record {p}/{bad}: {out_of_order:?}"
        );
    }
    // Never retried: the policy gave up after one attempt (above), and the handler saw each
    // bad record once in all, or, for a batch handler, once on its own after the bisection
    // that isolated it. (Exactly-once mode calls a handler of one message for each attempt
    // of a batch holding it, bisection included: only the attempts figure applies.)
    for (bad, (alone, seen)) in [NOT_JSON, TOMBSTONE].into_iter().zip(when_stuck) {
        match mode {
            Mode::ExactlyOnce => {}
            Mode::Batches(_) => ensure!(alone == 1, "{bad:?} called alone {alone} times"),
            _ => ensure!(seen == 1, "{bad:?} called {seen} times ({mode:?})"),
        }
    }
    // Nor is it tried again while its partition is stopped, though the consumer goes on: ten
    // more orders on the clean partition are handled and committed meanwhile.
    let more: Vec<common::RawRecord> = (PER_PARTITION..PER_PARTITION + 10)
        .map(|i| common::RawRecord {
            partition: 0,
            key: Some(order_key(i)),
            payload: Some(format!(r#"{{"id":{i}}}"#).into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    produced.extend(broker.produce_raw(&topic, &more).await?);
    end.insert(0, PER_PARTITION + 10);
    stopped_at.insert(0, PER_PARTITION + 10);
    wait_status(&mut status, PHASE, "the clean partition committed", |s| {
        committed_to_end(s, &topic, &stopped_at)
    })
    .await?;
    ensure!(
        bad_calls() == when_stuck,
        "{mode:?}: called again after its partition stopped: {:?}, then {:?}",
        when_stuck,
        bad_calls()
    );
    stop(handle).await?;
    if mode != Mode::ExactlyOnce || broker.kind() != common::Kind::Embedded {
        // (The embedded broker stores no transactional offset commit.)
        ensure!(broker.committed_offsets(&group, &topic).await? == stopped_at);
    }

    // The remedy the log and the health check name: a dead-letter topic. Restarted with one,
    // the consumer takes both records up again, dead-letters them and goes on to the end.
    let builder = broker
        .consumer(&group, &topic)
        .commit_interval(Duration::from_millis(100))
        .dead_letter(DeadLetter::default());
    let handle = build_order_consumer(builder, mode, &recorder, &Arc::default())?;
    let mut status = handle.status();
    // (Partition 0 was committed at its end already: this consumer has nothing to commit.)
    let stopped_ends: BTreeMap<i32, i64> = end
        .iter()
        .filter(|(p, _)| **p != 0)
        .map(|(p, e)| (*p, *e))
        .collect();
    let s = wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &stopped_ends) && s.dead_lettered == 2
    })
    .await?;
    ensure!(s.stuck.is_empty() && handle.health().ready, "{s:?}");
    let dlq = broker
        .read_records(&format!("{topic}.dlq"), 2, PHASE)
        .await?;
    stop(handle).await?;
    if mode != Mode::ExactlyOnce || broker.kind() != common::Kind::Embedded {
        ensure!(broker.committed_offsets(&group, &topic).await? == end);
    }
    let mut letters = BTreeSet::new();
    for letter in &dlq {
        let d = diagnosis(letter)?;
        ensure!(
            d.error_kind == ErrorKind::Decode && d.attempts == 1,
            "{d:?}"
        );
        letters.insert((d.original_partition, d.original_offset));
    }
    ensure!(
        letters == BTreeSet::from([NOT_JSON, TOMBSTONE]),
        "{letters:?}"
    );
    let handled: BTreeSet<(i32, i64)> = recorder
        .handled()
        .iter()
        .map(|h| (h.partition, h.offset))
        .collect();
    let lost: Vec<_> = produced
        .iter()
        .map(|r| (r.partition, r.offset))
        .filter(|r| !handled.contains(r) && !letters.contains(r))
        .collect();
    ensure!(lost.is_empty(), "lost: {lost:?}");
    Ok(())
}

async fn bad_records_stop_their_partitions_in_partition_order(
    broker: TestBroker,
) -> anyhow::Result<()> {
    bad_records_stop_their_partitions(broker, Mode::Partition).await
}

async fn bad_records_stop_their_partitions_in_exactly_once_mode(
    broker: TestBroker,
) -> anyhow::Result<()> {
    bad_records_stop_their_partitions(broker, Mode::ExactlyOnce).await
}

on_embedded_and_kafka!(
    bad_records_stop_their_partitions_in_partition_order,
    bad_records_stop_their_partitions_in_exactly_once_mode,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_stop_their_partitions_in_key_order() -> anyhow::Result<()> {
    bad_records_stop_their_partitions(TestBroker::embedded()?, Mode::Key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_stop_their_partitions_unordered() -> anyhow::Result<()> {
    bad_records_stop_their_partitions(TestBroker::embedded()?, Mode::Unordered).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_stop_their_partitions_in_batches_in_partition_order() -> anyhow::Result<()> {
    let mode = Mode::Batches(sluicegate::Ordering::Partition);
    bad_records_stop_their_partitions(TestBroker::embedded()?, mode).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_stop_their_partitions_in_batches_unordered() -> anyhow::Result<()> {
    let mode = Mode::Batches(sluicegate::Ordering::Unordered);
    bad_records_stop_their_partitions(TestBroker::embedded()?, mode).await
}

/// A partition stopped at a record given up on goes on when the operator seeks past it: the
/// record is skipped on purpose (never handled), the partition is no longer reported stuck,
/// `/health/ready` answers 200 again, and everything after it is handled and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_partition_goes_on_after_a_seek_past_its_record() -> anyhow::Result<()> {
    const BAD: i64 = 5;
    const RECORDS: i64 = 20;
    let broker = TestBroker::embedded()?;
    let topic = unique("stuck-seek");
    broker.create_topic(&topic, 1).await?;
    let records: Vec<common::RawRecord> = (0..RECORDS)
        .map(|i| common::RawRecord {
            partition: 0,
            key: Some(order_key(i)),
            payload: Some(match i {
                BAD => b"not json".to_vec(),
                _ => format!(r#"{{"id":{i}}}"#).into_bytes(),
            }),
            headers: Vec::new(),
        })
        .collect();
    broker.produce_raw(&topic, &records).await?;
    let recorder = Recorder::default();
    let builder = broker
        .consumer(&unique("stuck-seek-group"), &topic)
        .commit_interval(Duration::from_millis(100))
        .http_endpoint("127.0.0.1:0".parse()?);
    let handle = build_order_consumer(builder, Mode::Partition, &recorder, &Calls::default())?;
    let mut status = handle.status();
    wait_status(&mut status, PHASE, "the partition stuck", |s| {
        s.stuck.len() == 1 && committed_to_end(s, &topic, &BTreeMap::from([(0, BAD)]))
    })
    .await?;
    let addr = handle.http_addr().context("no endpoint")?;
    ensure!(common::http::get(addr, "/health/ready", None).await?.status == 503);

    ensure!(
        handle
            .seek(&topic, 0, sluicegate::SeekTo::Offset(BAD + 1))
            .await?
            == BAD + 1
    );
    let s = wait_status(&mut status, PHASE, "commits at the log end", |s| {
        s.stuck.is_empty() && committed_to_end(s, &topic, &BTreeMap::from([(0, RECORDS)]))
    })
    .await?;
    let ready = common::http::get(addr, "/health/ready", None).await?;
    ensure!(ready.status == 200, "{ready:?} {s:?}");
    stop(handle).await?;
    let handled: BTreeSet<i64> = recorder.handled().iter().map(|h| h.offset).collect();
    let expected: BTreeSet<i64> = (0..RECORDS).filter(|i| *i != BAD).collect();
    ensure!(handled == expected, "handled {handled:?}");
    Ok(())
}
