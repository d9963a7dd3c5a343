//! `sluicegate demo`: produce realistic events while a Sluicegate consumer handles them, then
//! prove it: nothing lost, duplicates counted, order kept, offsets committed, latency measured.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use sluicegate::{handler_fn, Consumer, ConsumerStatus, HandlerError, Message, Ordering};

use crate::cluster::{self, Cluster};
use crate::events::{event, Event};
use crate::ledger::{OrderCheck, PartitionLedger, Totals};
use crate::meter::Meter;
use crate::produce::produce_all;
use crate::progress::Progress;
use crate::report::{latency_ms, per_sec, print_json_line, round, thousands};
use crate::DemoArgs;

/// How long the consumer may take to join its group and get every partition.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown (drain, final commit, leave) may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the sample handler shares between its calls.
struct DemoState {
    ledgers: Vec<Mutex<PartitionLedger>>,
    check: OrderCheck,
    sleep: Duration,
    meter: Meter,
    orders: AtomicU64,
    clicks: AtomicU64,
}

impl DemoState {
    /// The sample handler: decode the event, do a little bookkeeping, optionally wait like a
    /// slow downstream call, then record what was seen.
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        let event: Event = msg.json().map_err(HandlerError::permanent)?;
        match &event {
            Event::Order { .. } => self.orders.fetch_add(1, Relaxed),
            Event::Click { .. } => self.clicks.fetch_add(1, Relaxed),
        };
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        let latency_us = msg.timestamp().map_or(0, |ts| {
            now_micros().saturating_sub(ts.saturating_mul(1_000)).max(0) as u64
        });
        if let Some(ledger) = usize::try_from(msg.partition())
            .ok()
            .and_then(|p| self.ledgers.get(p))
        {
            if let Ok(mut ledger) = ledger.lock() {
                ledger.record(self.check, msg.offset(), msg.key(), latency_us);
            }
        }
        self.meter
            .record(msg.payload().map_or(0, <[u8]>::len) as u64);
        Ok(())
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The demo's result, as printed with `--json`.
#[derive(Serialize, Debug)]
pub struct DemoSummary {
    pub ok: bool,
    pub broker: &'static str,
    pub topic: String,
    pub group: String,
    pub partitions: i32,
    pub ordering: &'static str,
    pub max_in_flight: u64,
    pub handler_sleep_ms: u64,
    pub keys: u64,
    pub requested: u64,
    pub produced: u64,
    pub produce_failed: u64,
    pub processed: u64,
    pub distinct: u64,
    pub committed: i64,
    pub lost: u64,
    pub duplicates: u64,
    pub dropped_by_broker: i64,
    pub order_check: &'static str,
    pub order_violations: Option<u64>,
    pub msgs_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub elapsed_secs: f64,
    pub timed_out: bool,
    pub consumer_error: Option<String>,
    pub orders: u64,
    pub clicks: u64,
}

impl DemoSummary {
    /// What went wrong, in words; empty for a clean run.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.dropped_by_broker > 0 {
            p.push(format!(
                "BROKER RETENTION DROP: the broker discarded {} messages from the start of the \
                 topic (low watermark above 0), so this run cannot show whether the consumer lost \
                 anything. The embedded broker keeps at most 5 MiB and 100,000 batches per \
                 partition: use more --partitions or fewer --messages.",
                self.dropped_by_broker
            ));
        }
        if self.produce_failed > 0 || self.produced < self.requested {
            p.push(format!(
                "only {} of {} messages were produced ({} failed)",
                self.produced, self.requested, self.produce_failed
            ));
        }
        if self.lost > 0 {
            p.push(format!(
                "LOST: {} of {} produced messages were never processed",
                self.lost, self.produced
            ));
        }
        if self.committed != self.produced as i64 {
            p.push(format!(
                "the group committed {} offsets, not the {} produced",
                self.committed, self.produced
            ));
        }
        if let Some(v) = self.order_violations.filter(|&v| v > 0) {
            p.push(format!(
                "{v} messages were handled out of {} order",
                self.order_check
            ));
        }
        if self.timed_out {
            p.push("timed out waiting for the consumer to commit everything".into());
        }
        if let Some(e) = &self.consumer_error {
            p.push(format!("the consumer failed: {e}"));
        }
        p
    }

    /// The summary for people.
    pub fn render(&self) -> String {
        let n = |v: u64| format!("{:>12}", thousands(v));
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
        let order = match self.order_violations {
            Some(v) => format!("{}   (per {}, first deliveries)", n(v), self.order_check),
            None => format!("{:>12}   (unordered mode: not checked)", "-"),
        };
        let mut out = format!(
            "Sluicegate demo: {} events, {} partitions, {} broker, ordering {}\n\n",
            thousands(self.requested),
            self.partitions,
            self.broker,
            self.ordering
        );
        out += &format!(
            "  produced          {}   (lz4-compressed batches)\n",
            n(self.produced)
        );
        out += &format!(
            "  processed         {}   ({} orders, {} clicks)\n",
            n(self.processed),
            thousands(self.orders),
            thousands(self.clicks)
        );
        out += &format!(
            "  committed         {}   (read back from the broker for group {})\n",
            n(self.committed.max(0) as u64),
            self.group
        );
        out += &format!("  lost              {}\n", n(self.lost));
        out += &format!("  duplicates        {}\n", n(self.duplicates));
        out += &format!(
            "  dropped by broker {}\n",
            n(self.dropped_by_broker.max(0) as u64)
        );
        out += &format!("  order violations  {order}\n");
        out += &format!(
            "  throughput        {} msg/s   ({:.1} s in all)\n",
            n(self.msgs_per_sec as u64),
            self.elapsed_secs
        );
        out += &format!(
            "  latency           p50 {}   p99 {}   max {}   (record timestamp to handler done)\n\n",
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.max_ms)
        );
        let problems = self.problems();
        if problems.is_empty() {
            out += "OK: every event was processed and committed; nothing lost";
            out += match self.order_violations {
                Some(_) => ", order kept.\n",
                None => ".\n",
            };
        } else {
            for p in problems {
                out += &format!("FAILED: {p}\n");
            }
        }
        out
    }
}

/// How long to wait for the consumer: a minute, plus generous room for the handlers' sleep
/// spread over `parallelism` concurrent calls and a floor rate of 2,000 msg/s.
pub fn default_timeout(messages: u64, sleep_ms: u64, parallelism: u64) -> Duration {
    let sleeping = messages.saturating_mul(sleep_ms) / 1_000 / parallelism.max(1);
    Duration::from_secs(60 + messages / 2_000 + 2 * sleeping)
}

/// How far event `seq` is ahead of a steady `rate` per second, `elapsed` after the start;
/// `None` unless it is at least a millisecond ahead (finer sleeps cost more than they pace).
pub fn pace(seq: u64, rate: u64, elapsed: Duration) -> Option<Duration> {
    let due = Duration::from_secs_f64(seq as f64 / rate.max(1) as f64);
    due.checked_sub(elapsed)
        .filter(|ahead| *ahead >= Duration::from_millis(1))
}

fn committed_sum(status: &ConsumerStatus, topic: &str) -> i64 {
    status
        .committed
        .iter()
        .filter(|(tp, _)| tp.topic == topic)
        .map(|(_, o)| *o)
        .sum()
}

/// Runs the demo; `Ok(false)` when the run found a problem.
pub async fn run(args: DemoArgs) -> Result<bool> {
    let ordering: Ordering = args.ordering.into();
    let cluster = Cluster::start(args.bootstrap.clone())?;
    let topic = cluster::unique_name("sluicegate-demo");
    let group = format!("{topic}-group");
    let partitions = cluster.ensure_topic(&topic, args.partitions).await?;
    let parallelism = match ordering {
        Ordering::Partition => partitions as u64,
        _ => args.max_in_flight,
    };
    let timeout = args.timeout_secs.map_or_else(
        || {
            let producing = args.rate.map_or(0, |r| args.messages / r.max(1));
            default_timeout(args.messages, args.handler_sleep_ms, parallelism)
                + Duration::from_secs(producing)
        },
        Duration::from_secs,
    );

    let state = Arc::new(DemoState {
        ledgers: (0..partitions).map(|_| Mutex::default()).collect(),
        check: ordering.into(),
        sleep: Duration::from_millis(args.handler_sleep_ms),
        meter: Meter::new(args.messages),
        orders: AtomicU64::new(0),
        clicks: AtomicU64::new(0),
    });
    let shared = state.clone();
    let mut builder = Consumer::builder()
        .bootstrap_servers(cluster.bootstrap())
        .group_id(&group)
        .topic(&topic)
        .ordering(ordering)
        .max_in_flight(args.max_in_flight as usize)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    if cluster.is_embedded() {
        // The mock broker answers an empty fetch only after the full fetch wait (500 ms by
        // default) even when data arrives meanwhile; a short wait keeps latency honest.
        builder = builder.set("fetch.wait.max.ms", "10");
    }
    let consumer = builder
        .build(handler_fn(move |msg: Message| {
            let state = shared.clone();
            async move { state.handle(msg).await }
        }))
        .context("cannot build the consumer")?
        .spawn()
        .context("cannot start the consumer")?;
    let mut status = consumer.status();

    // Join the group first, then produce: events are handled while they are being produced.
    let wanted = partitions as usize;
    tokio::time::timeout(
        ASSIGN_TIMEOUT,
        status.wait_for(|s| {
            s.stopped || s.assigned.iter().filter(|tp| tp.topic == topic).count() == wanted
        }),
    )
    .await
    .with_context(|| format!("the consumer got no assignment within {ASSIGN_TIMEOUT:?}"))?
    .context("the consumer stopped")?;

    let counter = state.clone();
    let progress = Progress::follow("processed", args.messages, move || counter.meter.count());
    let started = Instant::now();
    let (bootstrap, produce_topic, keys, rate) = (
        cluster.bootstrap().to_string(),
        topic.clone(),
        args.keys,
        args.rate,
    );
    let produced = tokio::task::spawn_blocking(move || {
        produce_all(&bootstrap, &produce_topic, args.messages, |seq| {
            if let Some(ahead) = rate.and_then(|r| pace(seq, r, started.elapsed())) {
                std::thread::sleep(ahead);
            }
            let ts = now_micros() / 1_000;
            let e = event(seq, keys, ts);
            let key = crate::events::user_key(seq, keys);
            (key, serde_json::to_vec(&e).unwrap_or_default())
        })
    })
    .await??;

    // Done when the group has committed every produced offset (or the consumer stopped).
    let target = produced.delivered as i64;
    let timed_out = tokio::time::timeout(
        timeout.saturating_sub(started.elapsed()),
        status.wait_for(|s| s.stopped || committed_sum(s, &topic) >= target),
    )
    .await
    .is_err();
    let elapsed = started.elapsed().as_secs_f64();
    consumer.shutdown();
    let consumer_error = match tokio::time::timeout(SHUTDOWN_TIMEOUT, consumer.wait()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("did not shut down within {SHUTDOWN_TIMEOUT:?}")),
    };
    progress.finish();

    let (bootstrap, lookup_topic, lookup_group) = (
        cluster.bootstrap().to_string(),
        topic.clone(),
        group.clone(),
    );
    let (committed, marks) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((
            cluster::committed_offsets(&bootstrap, &lookup_group, &lookup_topic, partitions)?,
            cluster::watermarks(&bootstrap, &lookup_topic, partitions)?,
        ))
    })
    .await??;

    let ledgers: Vec<PartitionLedger> = state
        .ledgers
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let totals = Totals::of(&ledgers);
    let latency = latency_ms(&totals.latency_us);
    let window = state.meter.measurement();
    let summary = DemoSummary {
        ok: false,
        broker: if cluster.is_embedded() {
            "embedded"
        } else {
            "external"
        },
        topic,
        group,
        partitions,
        ordering: ordering.as_str(),
        max_in_flight: args.max_in_flight,
        handler_sleep_ms: args.handler_sleep_ms,
        keys: args.keys,
        requested: args.messages,
        produced: produced.delivered,
        produce_failed: produced.failed,
        processed: totals.processed,
        distinct: totals.distinct,
        committed: committed.iter().flatten().sum(),
        lost: produced.delivered.saturating_sub(totals.distinct),
        duplicates: totals.processed - totals.distinct,
        dropped_by_broker: cluster::dropped_by_broker(&[], &marks),
        order_check: match state.check {
            OrderCheck::Partition => "partition",
            OrderCheck::Key => "key",
            OrderCheck::None => "none",
        },
        order_violations: (state.check != OrderCheck::None).then_some(totals.order_violations),
        msgs_per_sec: round(per_sec(window.messages, window.secs), 1),
        p50_ms: latency.map(|l| l.p50_ms),
        p99_ms: latency.map(|l| l.p99_ms),
        max_ms: latency.map(|l| l.max_ms),
        elapsed_secs: round(elapsed, 3),
        timed_out,
        consumer_error,
        orders: state.orders.load(Relaxed),
        clicks: state.clicks.load(Relaxed),
    };
    let summary = DemoSummary {
        ok: summary.problems().is_empty(),
        ..summary
    };
    if let Some(e) = &produced.first_error {
        tracing::warn!(error = %e, "a produce request failed");
    }
    if args.json {
        for p in summary.problems() {
            eprintln!("FAILED: {p}");
        }
        print_json_line(&summary)?;
    } else {
        print!("{}", summary.render());
    }
    Ok(summary.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> DemoSummary {
        DemoSummary {
            ok: true,
            broker: "embedded",
            topic: "t".into(),
            group: "g".into(),
            partitions: 8,
            ordering: "partition",
            max_in_flight: 1_000,
            handler_sleep_ms: 0,
            keys: 1_000,
            requested: 100,
            produced: 100,
            produce_failed: 0,
            processed: 100,
            distinct: 100,
            committed: 100,
            lost: 0,
            duplicates: 0,
            dropped_by_broker: 0,
            order_check: "partition",
            order_violations: Some(0),
            msgs_per_sec: 1_000.0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            max_ms: Some(3.0),
            elapsed_secs: 1.0,
            timed_out: false,
            consumer_error: None,
            orders: 25,
            clicks: 75,
        }
    }

    #[test]
    fn a_clean_run_has_no_problems_and_says_ok() {
        let s = clean();
        assert!(s.problems().is_empty());
        assert!(s.render().contains("OK: every event"));
    }

    #[test]
    fn a_retention_drop_is_blamed_on_the_broker_not_reported_as_no_loss() {
        let s = DemoSummary {
            dropped_by_broker: 10,
            ..clean()
        };
        let problems = s.problems();
        assert!(
            problems[0].contains("BROKER RETENTION DROP"),
            "{problems:?}"
        );
        assert!(!s.render().contains("OK:"));
    }

    #[test]
    fn loss_and_short_commits_are_problems() {
        let s = DemoSummary {
            distinct: 90,
            lost: 10,
            committed: 90,
            ..clean()
        };
        let text = s.problems().join("\n");
        assert!(text.contains("LOST: 10"), "{text}");
        assert!(text.contains("committed 90"), "{text}");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = serde_json::to_value(clean()).unwrap();
        for key in [
            "produced",
            "processed",
            "committed",
            "lost",
            "duplicates",
            "msgs_per_sec",
            "p50_ms",
            "p99_ms",
            "dropped_by_broker",
            "order_violations",
            "elapsed_secs",
            "partitions",
            "ordering",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn pacing_holds_back_only_events_ahead_of_the_rate() {
        let ms = Duration::from_millis;
        assert_eq!(pace(100, 1_000, ms(50)), Some(ms(50)));
        assert_eq!(pace(100, 1_000, ms(100)), None);
        assert_eq!(pace(100, 1_000, ms(150)), None);
        assert_eq!(pace(0, 1_000, ms(0)), None);
    }

    #[test]
    fn default_timeout_grows_with_sleep_and_shrinks_with_parallelism() {
        assert_eq!(default_timeout(0, 0, 8), Duration::from_secs(60));
        let slow = default_timeout(100_000, 10, 8);
        let wide = default_timeout(100_000, 10, 1_000);
        assert!(slow > wide && wide >= Duration::from_secs(60));
    }
}
