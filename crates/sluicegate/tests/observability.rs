//! Metrics, health and lag, read the way operators read them: scraped from the consumer's
//! HTTP endpoint (and checked with `promtool`), with the broker taken away and given back.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use sluicegate::dead_letter::DeadLetter;
use sluicegate::metrics::prometheus_client::metrics::counter::Counter;
use sluicegate::metrics::Metrics;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{handler_fn, HandlerError, Message};
use tokio::sync::Semaphore;

use common::http::{get, promtool_check_metrics, sample};
use common::{committed_to_end, stop, tp, unique, wait_status, TestBroker};

const PHASE: Duration = Duration::from_secs(60);
const ANY_PORT: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

on_both_brokers!(
    scraped_metrics_count_what_happened,
    lag_shows_the_backlog_and_reaches_zero_after_catch_up,
);

// tansu 0.6 reports high watermarks below the log end.
on_embedded_and_kafka!(
    lag_is_the_log_end_minus_the_committed_offset_as_the_broker_says,
    record_ages_are_scraped_at_every_stage_once_per_record,
);

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(3)
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            multiplier: 2.0,
            jitter: 0.0,
        })
}

/// 600 records: 3 fail permanently (dead-lettered), 5 fail once (retried), 4 are skipped by
/// the handler. Every counter scraped at the end says exactly that, and promtool accepts the
/// text, during the run and after it.
async fn scraped_metrics_count_what_happened(broker: TestBroker) -> anyhow::Result<()> {
    let topic = unique("metrics");
    let group = unique("metrics-group");
    let (produced, end) = broker.fill_topic(&topic, 2, 300).await?;
    let pick = |from: usize, n: usize| -> BTreeSet<String> {
        produced[from..from + n]
            .iter()
            .map(|r| r.payload.clone())
            .collect()
    };
    let (poison, flaky, skipped) = (pick(10, 3), pick(100, 5), pick(400, 4));
    let failed_once: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    let metrics = Metrics::new();
    let own = Counter::<u64>::default();
    metrics.register(
        "test_own_events",
        "A metric of the application's",
        own.clone(),
    );
    let handle = broker
        .consumer(&group, &topic)
        .retry_policy(quick_retries())
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(200))
        .metrics(metrics.clone())
        .http_endpoint(ANY_PORT.into())
        .build(handler_fn(move |m: Message| {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            own.inc();
            let result = if poison.contains(&payload) {
                Err(HandlerError::permanent("poison"))
            } else if skipped.contains(&payload) {
                Err(HandlerError::skip("not for us"))
            } else if flaky.contains(&payload) && failed_once.lock().unwrap().insert(payload) {
                Err(HandlerError::retryable("flaky"))
            } else {
                Ok(())
            };
            std::future::ready(result)
        }))?
        .spawn()?;
    let addr = handle.http_addr().context("no HTTP address")?;
    let mut status = handle.status();

    wait_status(&mut status, PHASE, "an assignment", |s| {
        !s.assigned.is_empty()
    })
    .await?;
    let during = get(addr, "/metrics", None).await?;
    ensure!(during.status == 200, "{during:?}");
    ensure!(
        during.content_type.starts_with("text/plain; version=0.0.4"),
        "{during:?}"
    );
    promtool_check_metrics(&during.body)?;

    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 3
    })
    .await?;
    // Every outcome is counted before its offset can be committed: one scrape now is final.
    let text = get(addr, "/metrics", None).await?.body;
    promtool_check_metrics(&text)?;
    let by_topic = [("group", group.as_str()), ("topic", topic.as_str())];
    let value = |name: &str, extra: &[(&str, &str)]| {
        let labels: Vec<_> = by_topic.iter().chain(extra).copied().collect();
        sample(&text, name, &labels).unwrap_or(-1.0)
    };
    let total = produced.len() as f64;
    for (name, extra, want) in [
        ("sluicegate_messages_consumed_total", &[][..], total),
        ("sluicegate_messages_processed_total", &[], total - 7.0),
        ("sluicegate_messages_dead_lettered_total", &[], 3.0),
        ("sluicegate_messages_retried_total", &[], 5.0),
        (
            "sluicegate_messages_failed_total",
            &[("kind", "retryable")],
            5.0,
        ),
        (
            "sluicegate_messages_failed_total",
            &[("kind", "permanent")],
            3.0,
        ),
        (
            "sluicegate_messages_skipped_total",
            &[("reason", "handler")],
            4.0,
        ),
        (
            "sluicegate_handler_duration_seconds_count",
            &[],
            total + 5.0,
        ),
        ("sluicegate_end_to_end_latency_seconds_count", &[], total),
    ] {
        ensure!(
            value(name, extra) == want,
            "{name}{extra:?} = {}, want {want}\n{text}",
            value(name, extra)
        );
    }
    let by_group = ("group", group.as_str());
    for (name, label, at_least, at_most) in [
        ("sluicegate_commits_total", ("result", "ok"), 1.0, f64::MAX),
        (
            "sluicegate_rebalances_total",
            ("kind", "assign"),
            1.0,
            f64::MAX,
        ),
        ("sluicegate_messages_in_flight", by_group, 0.0, 0.0),
    ] {
        let got = sample(&text, name, &[by_group, label]).unwrap_or(-1.0);
        ensure!(
            (at_least..=at_most).contains(&got),
            "{name}{label:?} = {got}\n{text}"
        );
    }
    ensure!(
        sample(&text, "test_own_events_total", &[]) == Some(total + 5.0),
        "{text}"
    );

    // Prometheus asks for OpenMetrics and gets it.
    let open = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await?;
    ensure!(
        open.content_type
            .starts_with("application/openmetrics-text"),
        "{open:?}"
    );
    ensure!(open.body.trim_end().ends_with("# EOF"), "{}", open.body);
    stop(handle).await?;
    ensure!(
        get(addr, "/metrics", None).await.is_err(),
        "the endpoint outlived its consumer"
    );
    Ok(())
}

/// 300 records, a handler that takes 2 ms each, one record retried once and one dead-lettered:
/// the scraped `sluicegate_record_age_seconds` counts every record once at each stage (not once
/// per handler call), and a record is older at each stage than at the one before: polled, then
/// handler start, then (2 ms later at least) handler end, then finished
/// (`sluicegate_end_to_end_latency_seconds`). Compared by the sums of the ages, which add up
/// each record's own ages.
async fn record_ages_are_scraped_at_every_stage_once_per_record(
    broker: TestBroker,
) -> anyhow::Result<()> {
    const HANDLER_TAKES: Duration = Duration::from_millis(2);
    let topic = unique("ages");
    let group = unique("ages-group");
    let (produced, end) = broker.fill_topic(&topic, 2, 150).await?;
    let (poison, flaky) = (produced[20].payload.clone(), produced[200].payload.clone());
    let failed_once = Arc::new(Mutex::new(false));
    let handle = broker
        .consumer(&group, &topic)
        .retry_policy(quick_retries())
        .dead_letter(DeadLetter::default())
        .commit_interval(Duration::from_millis(200))
        .http_endpoint(ANY_PORT.into())
        .build(handler_fn(move |m: Message| {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            let result = if payload == poison {
                Err(HandlerError::permanent("poison"))
            } else if payload == flaky
                && !std::mem::replace(&mut *failed_once.lock().unwrap(), true)
            {
                Err(HandlerError::retryable("flaky"))
            } else {
                Ok(())
            };
            async move {
                tokio::time::sleep(HANDLER_TAKES).await;
                result
            }
        }))?
        .spawn()?;
    let addr = handle.http_addr().context("no HTTP address")?;
    let mut status = handle.status();
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.dead_lettered == 1
    })
    .await?;
    // Every stage of a record is counted before its offset can be committed.
    let text = get(addr, "/metrics", None).await?.body;
    promtool_check_metrics(&text)?;
    let by_topic = [("group", group.as_str()), ("topic", topic.as_str())];
    let at = |name: &str, stage: Option<&str>| {
        let mut labels = by_topic.to_vec();
        labels.extend(stage.map(|s| ("stage", s)));
        sample(&text, name, &labels).unwrap_or(-1.0)
    };
    let total = produced.len() as f64;
    let mut sums = Vec::new();
    for stage in ["polled", "handler_start", "handler_end", "finished"] {
        let (count, sum) = match stage {
            "finished" => (
                at("sluicegate_end_to_end_latency_seconds_count", None),
                at("sluicegate_end_to_end_latency_seconds_sum", None),
            ),
            _ => (
                at("sluicegate_record_age_seconds_count", Some(stage)),
                at("sluicegate_record_age_seconds_sum", Some(stage)),
            ),
        };
        ensure!(
            count == total,
            "{stage}: {count} records, want {total}\n{text}"
        );
        sums.push((stage, sum));
    }
    // Two clocks meet here (the poll thread's and a worker's, each mapped to wall time): allow
    // them 20 µs per record.
    let slack = total * 20e-6;
    for pair in sums.windows(2) {
        let ((before, earlier), (after, later)) = (pair[0], pair[1]);
        ensure!(
            earlier <= later + slack,
            "records were older at {before} ({earlier} s summed) than at {after} ({later} s)\n{text}"
        );
    }
    let (start, end_of_call) = (sums[1].1, sums[2].1);
    ensure!(
        end_of_call - start >= total * HANDLER_TAKES.as_secs_f64(),
        "handler end is not a handler call after its start: {sums:?}"
    );
    // Buckets fine enough for milliseconds.
    ensure!(
        text.contains("sluicegate_record_age_seconds_bucket{")
            && text.contains("le=\"0.00025\"")
            && text.contains("le=\"0.0075\""),
        "{text}"
    );
    stop(handle).await?;
    Ok(())
}

/// While the handler is held back the lag is the whole backlog; once it catches up the lag is
/// 0 on every partition, in the status and in the scraped gauge alike.
async fn lag_shows_the_backlog_and_reaches_zero_after_catch_up(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("lag");
    let (_, end) = broker.fill_topic(&topic, 2, 200).await?;
    let gate = Arc::new(Semaphore::new(0));
    let handle = broker
        .consumer(&unique("lag-group"), &topic)
        .commit_interval(Duration::from_millis(200))
        .set("statistics.interval.ms", "200")
        .http_endpoint(ANY_PORT.into())
        .build(handler_fn({
            let gate = gate.clone();
            move |_: Message| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await.expect("never closed").forget();
                    Ok(())
                }
            }
        }))?
        .spawn()?;
    let addr = handle.http_addr().context("no HTTP address")?;
    let mut status = handle.status();
    let backlog: BTreeMap<_, _> = end.iter().map(|(p, e)| (tp(&topic, *p), *e)).collect();
    wait_status(&mut status, PHASE, "the whole backlog as lag", |s| {
        s.lag == backlog
    })
    .await?;

    gate.add_permits(Semaphore::MAX_PERMITS);
    let zero: BTreeMap<_, _> = backlog.keys().map(|tp| (tp.clone(), 0)).collect();
    wait_status(&mut status, PHASE, "lag 0 at the log end", |s| {
        committed_to_end(s, &topic, &end) && s.lag == zero
    })
    .await?;
    let text = get(addr, "/metrics", None).await?.body;
    for p in end.keys() {
        let partition = p.to_string();
        let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
        ensure!(
            sample(&text, "sluicegate_consumer_lag", &labels) == Some(0.0),
            "partition {p}: {text}"
        );
    }
    stop(handle).await
}

/// Each partition's handler is held at a different offset while the log grows past what was
/// first written: the lag in the status and in the scraped gauge is, per partition, the log
/// end minus the committed offset, both read back from the broker.
async fn lag_is_the_log_end_minus_the_committed_offset_as_the_broker_says(
    broker: TestBroker,
) -> anyhow::Result<()> {
    const HELD: [i64; 2] = [40, 70];
    let topic = unique("lag-mid");
    let group = unique("lag-mid-group");
    broker.fill_topic(&topic, 2, 100).await?;
    let gate = Arc::new(Semaphore::new(0));
    let handle = broker
        .consumer(&group, &topic)
        .commit_interval(Duration::from_millis(100))
        .set("statistics.interval.ms", "200")
        .http_endpoint(ANY_PORT.into())
        .build(handler_fn({
            let gate = gate.clone();
            move |msg: Message| {
                let gate = gate.clone();
                async move {
                    if HELD[msg.partition() as usize] == msg.offset() {
                        gate.acquire().await.expect("never closed").forget();
                    }
                    Ok(())
                }
            }
        }))?
        .spawn()?;
    let addr = handle.http_addr().context("no HTTP address")?;
    let mut status = handle.status();
    let held: BTreeMap<_, _> = (0..2).map(|p| (tp(&topic, p), HELD[p as usize])).collect();
    wait_status(&mut status, PHASE, "commits up to the held records", |s| {
        s.committed == held
    })
    .await?;
    // The log grows while the consumer is held.
    broker.produce_to_partitions(&topic, 2, 25).await?;
    let ends = broker.high_watermarks(&topic).await?;
    let committed = broker.committed_offsets(&group, &topic).await?;
    let expected: BTreeMap<_, _> = ends
        .iter()
        .map(|(p, end)| Ok((tp(&topic, *p), end - committed.get(p).context("no commit")?)))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        expected.values().copied().collect::<Vec<_>>() == [125 - 40, 125 - 70],
        "log ends {ends:?}, committed {committed:?}"
    );
    wait_status(&mut status, PHASE, "the lag the broker implies", |s| {
        s.lag == expected
    })
    .await?;
    let text = get(addr, "/metrics", None).await?.body;
    for (tp, lag) in &expected {
        let partition = tp.partition.to_string();
        let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
        let scraped = sample(&text, "sluicegate_consumer_lag", &labels);
        ensure!(
            scraped == Some(*lag as f64),
            "{tp:?}: scraped {scraped:?}, expected {lag}"
        );
    }

    gate.add_permits(Semaphore::MAX_PERMITS);
    let zero: BTreeMap<_, _> = expected.keys().map(|tp| (tp.clone(), 0)).collect();
    wait_status(&mut status, PHASE, "lag 0 at the log end", |s| {
        s.lag == zero
    })
    .await?;
    stop(handle).await
}

/// The broker goes down: the consumer stays live but is not ready, and says why; the broker
/// comes back: ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_and_liveness_stays() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let kafka = broker.embedded_kafka().context("embedded")?;
    let topic = unique("ready");
    broker.fill_topic(&topic, 1, 10).await?;
    let handle = broker
        .consumer(&unique("ready-group"), &topic)
        .http_endpoint(ANY_PORT.into())
        .build(handler_fn(|_: Message| std::future::ready(Ok(()))))?
        .spawn()?;
    let addr = handle.http_addr().context("no HTTP address")?;
    let mut status = handle.status();
    wait_status(&mut status, PHASE, "an assignment", |s| {
        !s.assigned.is_empty()
    })
    .await?;
    expect_health(addr, 200, 200, "").await?;

    kafka.broker_down(1)?;
    wait_status(&mut status, PHASE, "brokers unreachable", |s| {
        s.brokers_unreachable
    })
    .await?;
    expect_health(addr, 200, 503, "no broker is reachable").await?;
    ensure!(!handle.health().ready && handle.health().live);

    kafka.broker_up(1)?;
    wait_status(&mut status, PHASE, "a broker reachable", |s| {
        !s.brokers_unreachable
    })
    .await?;
    expect_health(addr, 200, 200, "").await?;
    stop(handle).await
}

/// Checks `/health/live` and `/health/ready` answer `live` and `ready`, the latter naming
/// `reason` among its failing checks.
async fn expect_health(
    addr: SocketAddr,
    live: u16,
    ready: u16,
    reason: &str,
) -> anyhow::Result<()> {
    let l = get(addr, "/health/live", None).await?;
    ensure!(l.status == live, "live: {l:?}");
    let r = get(addr, "/health/ready", None).await?;
    ensure!(r.status == ready, "ready: {r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.body)?;
    ensure!(json["ready"] == (ready == 200), "{json}");
    let failing: Vec<&str> = json["checks"]
        .as_array()
        .context("checks")?
        .iter()
        .filter(|c| c["ok"] == false)
        .filter_map(|c| c["detail"].as_str())
        .collect();
    ensure!(
        failing.iter().any(|d| d.contains(reason)) || (reason.is_empty() && failing.is_empty()),
        "failing checks {failing:?}, want {reason:?}"
    );
    Ok(())
}

/// A taken address fails `spawn` with an error naming the setting and the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_endpoint_address_is_a_clear_error() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let result = broker
        .consumer(&unique("g"), &unique("t"))
        .http_endpoint(addr)
        .build(handler_fn(|_: Message| std::future::ready(Ok(()))))?
        .spawn();
    let error = result.err().context("spawned on a taken port")?.to_string();
    ensure!(
        error.contains("http_endpoint") && error.contains(&addr.to_string()),
        "{error}"
    );
    Ok(())
}
