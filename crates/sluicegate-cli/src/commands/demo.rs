//! `sluicegate demo`: produce realistic events while a Sluicegate consumer handles them, then
//! prove it: nothing lost, duplicates counted, order kept, offsets committed, latency measured.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::Message as _;
use serde::Serialize;
use sluicegate::dead_letter::{DeadLetter, DeadLetterRecord};
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{
    batch_handler_fn, handler_fn, BatchLimits, Consumer, ConsumerStatus, HandlerError, Message,
    Ordering,
};

use crate::cluster::{self, Cluster};
use crate::meter::{now_micros, Meter};
use crate::produce::{produce_paced, producer_config, Amount};
use crate::progress::Progress;
use crate::read_back::{headers_of, read_to_end};
use crate::report::{latency_ms, per_sec, print_json_line, ratio, round, thousands};
use crate::settings::Connection;
use crate::workload::ledger::{OrderCheck, PartitionLedger, Totals};
use crate::workload::records::{event, is_poison, user_key, Event};
use crate::DemoArgs;

/// How long the consumer may take to join its group and get every partition.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown (drain, final commit, leave) may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the dead-letter topic back may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the consumer's figures (dead-lettered, retried) may lag its last commit: they are
/// published once per commit interval.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(5);
/// Handler calls per poison event before it is dead-lettered.
const POISON_ATTEMPTS: u32 = 3;

/// The retry policy of the demo consumer: [`POISON_ATTEMPTS`] attempts, short waits.
fn demo_retry_policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(POISON_ATTEMPTS)
        .with_backoff(Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            ..Backoff::default()
        })
}

/// What the sample handler shares between its calls.
struct DemoState {
    ledgers: Vec<Mutex<PartitionLedger>>,
    check: OrderCheck,
    sleep: Duration,
    meter: Meter,
    orders: AtomicU64,
    clicks: AtomicU64,
    /// The fraction of poison events (see [`is_poison`]).
    fail_rate: f64,
    /// Handler calls so far per poison event.
    poison_attempts: Mutex<HashMap<u64, u32>>,
}

impl DemoState {
    /// The sample handler: decode the event, do a little bookkeeping, optionally wait like a
    /// slow downstream call, then record what was seen.
    async fn handle(&self, msg: Message) -> Result<(), HandlerError> {
        let event = self.decode(&msg)?;
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        self.record(&msg, &event);
        Ok(())
    }

    /// The sample batch handler: all or nothing, like one bulk write. Decodes every event
    /// first (a poison event fails the whole batch), waits once, then records them all.
    async fn handle_batch(&self, batch: Vec<Message>) -> Result<(), HandlerError> {
        let events = batch
            .iter()
            .map(|msg| self.decode(msg))
            .collect::<Result<Vec<_>, _>>()?;
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        for (msg, event) in batch.iter().zip(&events) {
            self.record(msg, event);
        }
        Ok(())
    }

    /// Decodes an event, failing poison events.
    fn decode(&self, msg: &Message) -> Result<Event, HandlerError> {
        let event: Event = msg.json()?; // not an event: a decode error, never retried
        match event.seq().filter(|&seq| is_poison(seq, self.fail_rate)) {
            Some(seq) => Err(self.fail_poison(seq, msg)),
            None => Ok(event),
        }
    }

    /// Counts a handled event, records it in its partition's ledger and its latency (record
    /// timestamp to handler done) in the meter.
    fn record(&self, msg: &Message, event: &Event) {
        match event {
            Event::Order { .. } => self.orders.fetch_add(1, Relaxed),
            Event::Click { .. } => self.clicks.fetch_add(1, Relaxed),
        };
        if let Some(ledger) = usize::try_from(msg.partition())
            .ok()
            .and_then(|p| self.ledgers.get(p))
        {
            if let Ok(mut ledger) = ledger.lock() {
                ledger.record(self.check, msg.offset(), msg.key());
            }
        }
        self.meter
            .record_at(msg.payload().map_or(0, <[u8]>::len) as u64, msg.timestamp());
    }
}

impl DemoState {
    /// Fails poison event `seq`, counting it as finished by the handler (in the meter, not the
    /// ledger) at its first attempt: the runtime retries it, then dead-letters it (a batch
    /// holding it is bisected first, so it may be attempted more than `POISON_ATTEMPTS` times).
    fn fail_poison(&self, seq: u64, msg: &Message) -> HandlerError {
        let attempts = self.poison_attempts.lock().map_or(0, |mut a| {
            let n = a.entry(seq).or_insert(0);
            *n += 1;
            *n
        });
        if attempts == 1 {
            self.meter
                .record(msg.payload().map_or(0, <[u8]>::len) as u64);
        }
        HandlerError::retryable(format!(
            "poison event {seq}: the demo handler always fails it (attempt {attempts})"
        ))
    }
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
    /// The most events per batch handler call (`--batch`); absent for the one-message handler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
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
    /// The fraction of events made poison (`--fail-rate`).
    pub fail_rate: f64,
    /// Poison events produced: the handler always fails them.
    pub poison: u64,
    /// The dead-letter topic, when there are poison events.
    pub dlq_topic: Option<String>,
    /// Records found in the dead-letter topic, read back after the run.
    pub dead_lettered: u64,
    /// Records of the dead-letter topic that are not a distinct poison event of this run.
    pub dlq_unexpected: u64,
    /// Handler calls beyond the first, as the consumer counted them.
    pub retried: u64,
    /// Throughput of a pass of the same size without poison, run first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_free_msgs_per_sec: Option<f64>,
    /// `msgs_per_sec / fault_free_msgs_per_sec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_ratio: Option<f64>,
    /// What went wrong in the fault-free pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fault_free_problems: Vec<String>,
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
        if self.dead_lettered != self.poison || self.dlq_unexpected > 0 {
            p.push(format!(
                "DEAD-LETTER MISMATCH: {} records in the dead-letter topic {}, for {} poison \
                 events ({} of them not a distinct poison event of this run)",
                self.dead_lettered,
                self.dlq_topic.as_deref().unwrap_or("(none)"),
                self.poison,
                self.dlq_unexpected
            ));
        }
        for f in &self.fault_free_problems {
            p.push(format!("fault-free pass: {f}"));
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
        if self.fail_rate > 0.0 {
            out += &format!(
                "  poison            {}   (fail rate {}: the handler always fails them)\n",
                n(self.poison),
                self.fail_rate
            );
            out += &format!(
                "  dead-lettered     {}   (read back from {})\n",
                n(self.dead_lettered),
                self.dlq_topic.as_deref().unwrap_or("-")
            );
            out += &format!(
                "  retried           {}   (handler calls beyond the first)\n",
                n(self.retried)
            );
        }
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
        if let Some(ff) = self.fault_free_msgs_per_sec {
            out.pop();
            out += &format!(
                "  fault-free        {} msg/s   (same run without poison; ratio {})\n\n",
                n(ff as u64),
                self.throughput_ratio
                    .map_or("-".into(), |r| format!("{r:.3}"))
            );
        }
        let problems = self.problems();
        if problems.is_empty() {
            out += if self.poison > 0 {
                "OK: every event was processed or dead-lettered, and committed; nothing lost"
            } else {
                "OK: every event was processed and committed; nothing lost"
            };
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

fn committed_sum(status: &ConsumerStatus, topic: &str) -> i64 {
    status
        .committed
        .iter()
        .filter(|(tp, _)| tp.topic == topic)
        .map(|(_, o)| *o)
        .sum()
}

/// What reading the dead-letter topic back found.
#[derive(Debug, Default)]
struct DlqCheck {
    /// Records in the topic.
    records: u64,
    /// Distinct poison events among them (dead-lettered from the demo topic, headers intact).
    poison_found: u64,
    /// Records that are something else: a healthy event, a duplicate, or a malformed record.
    unexpected: u64,
}

/// Reads the dead-letter topic back and checks each record against the poison events.
fn check_dead_letters(
    connection: &Connection,
    dlq_topic: &str,
    source_topic: &str,
    fail_rate: f64,
) -> Result<DlqCheck> {
    let mut check = DlqCheck::default();
    let mut seen = HashSet::new();
    read_to_end(connection, dlq_topic, READ_BACK_TIMEOUT, |m| {
        check.records += 1;
        let from_source = DeadLetterRecord::from_headers(&headers_of(m))
            .is_ok_and(|r| r.original_topic == source_topic);
        let seq = m
            .payload()
            .and_then(|p| serde_json::from_slice::<Event>(p).ok())
            .and_then(|e| e.seq());
        match seq {
            Some(seq) if from_source && is_poison(seq, fail_rate) && seen.insert(seq) => {
                check.poison_found += 1;
            }
            _ => check.unexpected += 1,
        }
        Ok(())
    })
    .with_context(|| format!("cannot read the dead-letter topic `{dlq_topic}` back"))?;
    Ok(check)
}

/// Runs the demo; `Ok(false)` when the run found a problem. With a fail rate, a fault-free
/// pass of the same size runs first on the same broker, for the throughput ratio.
pub async fn run(args: DemoArgs) -> Result<bool> {
    let cluster = Cluster::start(&args.connect)?;
    let endpoint = (!args.no_http).then_some(args.http);
    let summary = if args.fail_rate > 0.0 {
        let fault_free = pass(&cluster, &args, 0.0, "fault-free", None).await?;
        let faulty = pass(&cluster, &args, args.fail_rate, "processed", endpoint).await?;
        DemoSummary {
            fault_free_msgs_per_sec: Some(fault_free.msgs_per_sec),
            throughput_ratio: ratio(faulty.msgs_per_sec, fault_free.msgs_per_sec)
                .map(|r| round(r, 3)),
            fault_free_problems: fault_free.problems(),
            ..faulty
        }
    } else {
        pass(&cluster, &args, 0.0, "processed", endpoint).await?
    };
    let summary = DemoSummary {
        ok: summary.problems().is_empty(),
        ..summary
    };
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

/// One pass of the demo on a fresh topic and group, with a fraction `fail_rate` of poison
/// events; `label` names its progress bar. The consumer serves its HTTP endpoint on `endpoint`.
async fn pass(
    cluster: &Cluster,
    args: &DemoArgs,
    fail_rate: f64,
    label: &'static str,
    endpoint: Option<SocketAddr>,
) -> Result<DemoSummary> {
    let ordering: Ordering = args.ordering.into();
    let topic = cluster::unique_name("sluicegate-demo");
    let group = format!("{topic}-group");
    let partitions = cluster.ensure_topic(&topic, args.partitions).await?;
    // The events the handler will always fail: known before a single one is produced.
    let poison = (0..args.messages)
        .filter(|&seq| is_poison(seq, fail_rate))
        .count() as u64;
    let dead_letter = DeadLetter::default();
    let dlq_topic = (fail_rate > 0.0).then(|| dead_letter.topic_for(&topic));
    if let Some(dlq) = &dlq_topic {
        // Created here rather than by the consumer: the embedded broker does not support the
        // CreateTopics request.
        cluster.ensure_topic(dlq, partitions).await?;
    }
    let parallelism = match ordering {
        Ordering::Partition => partitions as u64,
        _ => args.max_in_flight,
    };
    let timeout = args.timeout_secs.map_or_else(
        || {
            let producing = args.rate.map_or(0, |r| args.messages / r.max(1));
            // Each poison event holds its lane for its retries and its dead-letter write.
            let poisoned = Duration::from_millis(poison * 200 / parallelism.max(1));
            default_timeout(args.messages, args.handler_sleep_ms, parallelism)
                + Duration::from_secs(producing)
                + poisoned
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
        fail_rate,
        poison_attempts: Mutex::default(),
    });
    let shared = state.clone();
    let mut builder = cluster
        .connection()
        .consumer(Consumer::builder())
        .group_id(&group)
        .topic(&topic)
        .ordering(ordering)
        .max_in_flight(args.max_in_flight as usize)
        .retry_policy(demo_retry_policy())
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    if dlq_topic.is_some() {
        builder = builder.dead_letter(dead_letter);
    }
    if cluster.is_embedded() {
        // The mock broker answers an empty fetch only after the full fetch wait (500 ms by
        // default) even when data arrives meanwhile; a short wait keeps latency honest.
        builder = builder.set("fetch.wait.max.ms", "10");
    }
    if let Some(addr) = endpoint {
        builder = builder.http_endpoint(addr);
    }
    let consumer = match args.batch {
        None => builder
            .build(handler_fn(move |msg: Message| {
                let state = shared.clone();
                async move { state.handle(msg).await }
            }))
            .context("cannot build the consumer")?
            .spawn(),
        Some(n) => builder
            .batch_limits(BatchLimits::default().max_messages(n as usize))
            // As many batches at once as `--max-in-flight` holds (the library's rule before
            // `max_batches_in_flight` was a setting), so that figures stay comparable.
            .max_batches_in_flight(args.max_in_flight.checked_div(n).unwrap_or(1).max(1) as usize)
            .build_batch(batch_handler_fn(move |batch: Vec<Message>| {
                let state = shared.clone();
                async move { state.handle_batch(batch).await }
            }))
            .context("cannot build the consumer")?
            .spawn(),
    }
    .context("cannot start the consumer")?;
    if let Some(addr) = consumer.http_addr() {
        eprintln!("metrics and health: http://{addr}/metrics, /health/live, /health/ready");
    }
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
    let progress = Progress::follow(label, args.messages, move || counter.meter.count());
    let started = Instant::now();
    let (connection, produce_topic, keys, rate, messages) = (
        cluster.connection().clone(),
        topic.clone(),
        args.keys,
        args.rate,
        args.messages,
    );
    let produced = tokio::task::spawn_blocking(move || {
        let config = producer_config(&connection);
        let amount = Amount::Count(messages);
        produce_paced(&connection, &config, &produce_topic, amount, rate, |seq| {
            let ts = now_micros() / 1_000;
            let e = event(seq, keys, ts);
            let key = user_key(seq, keys);
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
    if poison > 0 && !timed_out {
        // The dead-lettered and retried figures follow the commits by up to one interval.
        let _ = tokio::time::timeout(
            FIGURES_TIMEOUT,
            status.wait_for(|s| s.stopped || s.dead_lettered >= poison),
        )
        .await;
    }
    consumer.shutdown();
    let consumer_error = match tokio::time::timeout(SHUTDOWN_TIMEOUT, consumer.wait()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("did not shut down within {SHUTDOWN_TIMEOUT:?}")),
    };
    progress.finish();
    let retried = status.current().retried;

    let (connection, lookup_topic, lookup_group, lookup_dlq) = (
        cluster.connection().clone(),
        topic.clone(),
        group.clone(),
        dlq_topic.clone(),
    );
    let (committed, marks, dlq) = tokio::task::spawn_blocking(move || -> Result<_> {
        let dlq = match &lookup_dlq {
            Some(dlq) => check_dead_letters(&connection, dlq, &lookup_topic, fail_rate)?,
            None => DlqCheck::default(),
        };
        Ok((
            cluster::committed_offsets(&connection, &lookup_group, &lookup_topic, partitions)?,
            cluster::watermarks(&connection, &lookup_topic, partitions)?,
            dlq,
        ))
    })
    .await??;

    let ledgers: Vec<PartitionLedger> = state
        .ledgers
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let totals = Totals::of(&ledgers);
    let latency = latency_ms(&state.meter.latency_us());
    let window = state.meter.measurement();
    if let Some(e) = &produced.first_error {
        tracing::warn!(error = %e, "a produce request failed");
    }
    Ok(DemoSummary {
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
        batch: args.batch,
        max_in_flight: args.max_in_flight,
        handler_sleep_ms: args.handler_sleep_ms,
        keys: args.keys,
        requested: args.messages,
        produced: produced.delivered,
        produce_failed: produced.failed,
        processed: totals.processed,
        distinct: totals.distinct,
        committed: committed.iter().flatten().sum(),
        // Every produced event must be handled, or (poison) found in the dead-letter topic.
        lost: produced
            .delivered
            .saturating_sub(totals.distinct + dlq.poison_found),
        duplicates: totals.duplicates(),
        dropped_by_broker: cluster::dropped_by_broker(&[], &marks),
        order_check: state.check.name(),
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
        fail_rate,
        poison,
        dlq_topic,
        dead_lettered: dlq.records,
        dlq_unexpected: dlq.unexpected,
        retried,
        fault_free_msgs_per_sec: None,
        throughput_ratio: None,
        fault_free_problems: Vec::new(),
    })
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
            batch: None,
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
            fail_rate: 0.0,
            poison: 0,
            dlq_topic: None,
            dead_lettered: 0,
            dlq_unexpected: 0,
            retried: 0,
            fault_free_msgs_per_sec: None,
            throughput_ratio: None,
            fault_free_problems: Vec::new(),
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

    fn poisoned() -> DemoSummary {
        DemoSummary {
            processed: 98,
            distinct: 98,
            fail_rate: 0.02,
            poison: 2,
            dlq_topic: Some("t.dlq".into()),
            dead_lettered: 2,
            retried: 4,
            fault_free_msgs_per_sec: Some(2_000.0),
            throughput_ratio: Some(0.5),
            ..clean()
        }
    }

    #[test]
    fn poison_found_in_the_dead_letter_topic_is_a_clean_run() {
        let s = poisoned();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        let text = s.render();
        for part in [
            "poison",
            "dead-lettered",
            "t.dlq",
            "retried",
            "fault-free",
            "ratio 0.500",
        ] {
            assert!(text.contains(part), "missing {part}:\n{text}");
        }
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "poison",
            "dead_lettered",
            "retried",
            "fault_free_msgs_per_sec",
            "throughput_ratio",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn a_dead_letter_count_other_than_the_poison_count_is_a_problem() {
        let missing = DemoSummary {
            dead_lettered: 1,
            lost: 1,
            ..poisoned()
        };
        let text = missing.problems().join("\n");
        assert!(text.contains("DEAD-LETTER MISMATCH: 1 records"), "{text}");
        let stray = DemoSummary {
            dead_lettered: 3,
            dlq_unexpected: 1,
            ..poisoned()
        };
        assert!(!stray.problems().is_empty());
        let ff = DemoSummary {
            fault_free_problems: vec!["LOST: 1".into()],
            ..poisoned()
        };
        assert!(
            ff.problems()[0].starts_with("fault-free pass: LOST"),
            "{:?}",
            ff.problems()
        );
    }

    #[test]
    fn default_timeout_grows_with_sleep_and_shrinks_with_parallelism() {
        assert_eq!(default_timeout(0, 0, 8), Duration::from_secs(60));
        let slow = default_timeout(100_000, 10, 8);
        let wide = default_timeout(100_000, 10, 1_000);
        assert!(slow > wide && wide >= Duration::from_secs(60));
    }
}
