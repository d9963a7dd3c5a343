//! `sluicegate bench consume`: the same records read by a plain rdkafka poll loop (the
//! baseline) and by the Sluicegate runtime, one pass after the other in the same run, each
//! doing the same work per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sluicegate::config::ClientKind;
use sluicegate::interop::SecureContext;
use sluicegate::metrics::{Distribution, Metrics, Stage};
use sluicegate::{
    batch_handler_fn, handler_fn, BatchLimits, Consumer, ConsumerBuilder, ConsumerHandle,
    HandlerError, Message, Ordering,
};

use super::{
    follow, LatencyBasis, MemoryWatch, PassReport, ProducerBatching, Stages, WarmUp, Work,
};
use crate::cluster::{self, Cluster};
use crate::meter::Meter;
use crate::produce::{produce_paced, producer_config, Amount};
use crate::report::{print_json_line, ratio, round, thousands};
use crate::settings::Connection;
use crate::workload::records::{bench_key, bench_payload};
use crate::BenchConsumeArgs;

/// How long a graceful shutdown of the runtime may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Records filled when no count is given.
const DEFAULT_MESSAGES: u64 = 1_000_000;
/// The fill producer's `linger.ms` unless `--producer-linger-ms` says otherwise: batches as
/// large as the bulk producer's (latency in a backlog is mostly the wait in it).
const FILL_LINGER_MS: u64 = 5;
/// The live stream producer's `linger.ms` unless `--producer-linger-ms` says otherwise.
/// Latency counts from the record's timestamp, taken when it is handed to the producer: little
/// lingering. (None at all makes nearly every record a message set of its own, and the
/// embedded broker scans a partition's message sets from the start on every fetch: at 10,000
/// msg/s it falls behind.)
const LIVE_LINGER_MS: u64 = 1;

/// What the passes read.
enum Feed {
    /// A topic holding the records before the passes start; each pass reads it from `marks`'
    /// low watermarks.
    Backlog(Backlog),
    /// A fresh topic per pass, written at `rate` per second for `secs` while the pass reads it.
    Live { rate: u64, secs: u64 },
}

struct Backlog {
    topic: String,
    partitions: i32,
    /// (low, high) watermark per partition.
    marks: Vec<(i64, i64)>,
    /// Messages each pass reads.
    expected: u64,
    /// How long filling took (`None`: found as it was).
    fill_secs: Option<f64>,
    /// The batching of the producer that filled it (`None`: found as it was).
    producer: Option<ProducerBatching>,
    dropped_by_broker: i64,
}

/// Which consumer a pass runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Raw,
    Runtime,
    /// The runtime with metrics and the HTTP endpoint on, and its metrics scraped.
    Observed,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Runtime => "sluicegate",
            Side::Observed => "observed",
        }
    }
}

/// The bench's result, as printed with `--json`.
#[derive(Serialize, Debug)]
pub struct BenchReport {
    pub broker: &'static str,
    /// `backlog` (read what is there) or `live` (read while writing at `rate`).
    pub mode: &'static str,
    /// The topic read (live: one fresh topic per pass, named after this one).
    pub topic: String,
    /// Messages each pass reads.
    pub messages: u64,
    /// Payload size and distinct keys written (`None` for a topic read as it was found).
    pub size: Option<u64>,
    pub keys: Option<u64>,
    pub partitions: i32,
    pub handler: String,
    pub ordering: &'static str,
    pub max_in_flight: u64,
    /// Messages per batch handler call, if the runtime ran a batch handler.
    pub batch: Option<u64>,
    /// Whether the runtime read without a consumer group.
    pub assign: bool,
    /// Live: records per second written during each pass, and for how long.
    pub rate: Option<u64>,
    pub duration_secs: Option<u64>,
    /// Backlog: how long filling took (`None` with `--no-fill`).
    pub fill_secs: Option<f64>,
    pub dropped_by_broker: i64,
    /// `None` with `--skip-baseline`.
    pub raw: Option<PassReport>,
    pub runtime: PassReport,
    /// With `--observed`: the runtime with metrics and the HTTP endpoint on, scraped once a
    /// second.
    pub observed: Option<PassReport>,
    /// Runtime msg/s divided by baseline msg/s.
    pub ratio: Option<f64>,
    /// Runtime CPU per message divided by baseline CPU per message.
    pub cpu_ratio: Option<f64>,
    /// Runtime p99 latency divided by the baseline's.
    pub p99_ratio: Option<f64>,
    /// Observed runtime msg/s divided by runtime msg/s (without the HTTP endpoint, and without
    /// metrics unless `stages`).
    /// Whether the runtime pass had metrics on, to report the records' ages at each stage
    /// (not with `--no-stages`).
    pub stages: bool,
    pub observed_ratio: Option<f64>,
}

impl BenchReport {
    pub fn render(&self) -> String {
        let source = match (self.rate, self.duration_secs) {
            (Some(rate), Some(secs)) => format!(
                "a live stream of {} msg/s for {secs} s per pass",
                thousands(rate)
            ),
            _ if self.fill_secs.is_none() => format!("topic {} as it was", self.topic),
            _ => "a backlog".to_string(),
        };
        let shape = match (self.size, self.keys) {
            (Some(size), Some(keys)) => format!(" of {size} B over {} keys", thousands(keys)),
            _ => String::new(),
        };
        let mut out = format!(
            "bench consume: {} messages{shape} in {} partitions, from {source} ({} broker)\n  \
             runtime: handler {}, ordering {}, max in flight {}{}{}\n\n",
            thousands(self.messages),
            self.partitions,
            self.broker,
            self.handler,
            self.ordering,
            self.max_in_flight,
            self.batch
                .map_or(String::new(), |b| format!(", batches of {b}")),
            if self.assign {
                ", no group (assigned)"
            } else {
                ""
            },
        );
        out += &format!(
            "  {:<11} {:>10} {:>10} {:>7} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>15}\n",
            "consumer",
            "messages",
            "msg/s",
            "MB/s",
            "CPU s",
            "µs/msg",
            "join s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "RSS start→peak"
        );
        let passes = [
            ("raw rdkafka", self.raw.as_ref()),
            ("sluicegate", Some(&self.runtime)),
            ("+ metrics", self.observed.as_ref()),
        ];
        let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        for (name, p) in passes.into_iter().filter_map(|(n, p)| Some((n, p?))) {
            out += &format!(
                "  {:<11} {:>10} {:>10} {:>7.1} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>12} MB{}\n",
                name,
                thousands(p.messages),
                thousands(p.msgs_per_sec as u64),
                p.mb_per_sec,
                opt(p.cpu_secs, 2),
                opt(p.cpu_us_per_msg, 2),
                opt(p.join_secs, 2),
                opt(p.latency.map(|l| l.p50_ms), 1),
                opt(p.latency.map(|l| l.p99_ms), 1),
                opt(p.latency.map(|l| l.p999_ms), 1),
                format!("{}→{}", opt(p.rss_start_mb, 0), opt(p.peak_rss_mb, 0)),
                if p.complete { "" } else { "  (timed out)" }
            );
            if p.decode_errors > 0 {
                out += &format!(
                    "  {:<11} {} payloads were not bench JSON\n",
                    "",
                    thousands(p.decode_errors)
                );
            }
        }
        // Beside the latencies: what the producer's batching put in them and what the warm-up
        // left out, pass by pass.
        for (name, p) in passes.into_iter().filter_map(|(n, p)| Some((n, p?))) {
            if let Some(b) = &p.latency_basis {
                out += &format!(
                    "  {:<11} latency: producer linger {} ms, batches up to {} records / {} B; \
                     warm-up {:.1} s left out ({} messages), {} measured\n",
                    name,
                    b.producer_linger_ms,
                    thousands(b.producer_batch_records),
                    thousands(b.producer_batch_bytes),
                    b.warm_up_secs,
                    thousands(b.warm_up_excluded),
                    thousands(b.measured),
                );
            }
        }
        // Where the time goes: the runtime's record ages at each stage.
        for (name, p) in passes.into_iter().filter_map(|(n, p)| Some((n, p?))) {
            if let Some(stages) = &p.stages {
                out += &format!(
                    "  {:<11} record age at each stage, ms p50 / p99 / p999:",
                    name
                );
                for (stage, a) in stages.each() {
                    out += &format!(
                        " {stage} {} / {} / {};",
                        opt(a.p50_ms, 2),
                        opt(a.p99_ms, 2),
                        opt(a.p999_ms, 2)
                    );
                }
                out += &format!(" {} records\n", thousands(stages.finished.count));
            }
        }
        let x = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
        if self.raw.is_some() {
            out += &format!(
                "\n  sluicegate / raw: {} of the throughput, {} of the CPU per message, {} of the \
                 p99 latency\n",
                x(self.ratio),
                x(self.cpu_ratio),
                x(self.p99_ratio),
            );
        }
        if let Some(r) = self.observed_ratio {
            out += &format!(
                "  with {} on / off: {r:.3}x of the throughput\n",
                if self.stages {
                    "the HTTP endpoint (metrics on in both)"
                } else {
                    "metrics and the HTTP endpoint"
                }
            );
        }
        out += &format!(
            "  (msg/s from the first message to the last; latency from the record's timestamp to \
             the handler's end{}; CPU is this whole process's{}; MB = 10^6 payload bytes)\n",
            if self.mode == "backlog" {
                ", so in a backlog mostly the time spent waiting in it"
            } else {
                ", the stream's first tenth (at most 2 s) left out as warm-up"
            },
            if self.broker == "embedded" {
                ", the embedded broker's included"
            } else {
                ""
            }
        );
        out
    }
}

/// Runs `bench consume`; `Ok(false)` when a pass did not read everything.
pub async fn consume(args: BenchConsumeArgs) -> Result<bool> {
    let cluster = Cluster::start(&args.connect)?;
    let feed = match (args.rate, args.duration_secs) {
        (Some(rate), Some(secs)) => Feed::Live { rate, secs },
        _ => Feed::Backlog(backlog(&cluster, &args).await?),
    };
    let raw = match args.skip_baseline {
        true => None,
        false => Some(run_pass(Side::Raw, &cluster, &args, &feed).await?),
    };
    let runtime = run_pass(Side::Runtime, &cluster, &args, &feed).await?;
    let observed = match args.observed {
        true => Some(run_pass(Side::Observed, &cluster, &args, &feed).await?),
        false => None,
    };
    let (topic, messages, partitions, fill_secs, dropped) = match &feed {
        Feed::Backlog(b) => (
            b.topic.clone(),
            b.expected,
            b.partitions,
            b.fill_secs,
            b.dropped_by_broker,
        ),
        Feed::Live { rate, secs } => (
            "(one fresh topic per pass)".into(),
            rate * secs,
            args.record.partitions,
            None,
            0,
        ),
    };
    let against_raw = |f: fn(&PassReport) -> Option<f64>| {
        let raw = raw.as_ref().and_then(f)?;
        ratio(f(&runtime)?, raw).map(|r| round(r, 3))
    };
    let report = BenchReport {
        broker: if cluster.is_embedded() {
            "embedded"
        } else {
            "external"
        },
        mode: match feed {
            Feed::Backlog(_) => "backlog",
            Feed::Live { .. } => "live",
        },
        topic,
        messages,
        size: (!args.no_fill).then_some(args.record.size),
        keys: (!args.no_fill).then_some(args.record.keys),
        partitions,
        handler: args.handler.to_string(),
        ordering: Ordering::from(args.ordering).as_str(),
        max_in_flight: args.max_in_flight,
        batch: args.batch,
        assign: args.assign,
        rate: args.rate,
        duration_secs: args.duration_secs,
        fill_secs,
        dropped_by_broker: dropped,
        ratio: against_raw(|p| Some(p.msgs_per_sec)),
        cpu_ratio: against_raw(|p| p.cpu_us_per_msg),
        p99_ratio: against_raw(|p| p.latency.map(|l| l.p99_ms)),
        observed_ratio: observed
            .as_ref()
            .and_then(|o| ratio(o.msgs_per_sec, runtime.msgs_per_sec))
            .map(|r| round(r, 3)),
        stages: !args.no_stages,
        raw,
        runtime,
        observed,
    };
    if args.json {
        print_json_line(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(report.raw.as_ref().is_none_or(|r| r.complete)
        && report.runtime.complete
        && report.observed.as_ref().is_none_or(|o| o.complete))
}

/// The topic every pass reads: filled now, or (`--no-fill`) as it is.
async fn backlog(cluster: &Cluster, args: &BenchConsumeArgs) -> Result<Backlog> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| cluster::unique_name("sluicegate-bench"));
    let connection = cluster.connection().clone();
    if args.no_fill {
        let (b, t) = (connection.clone(), topic.clone());
        let (partitions, marks) = tokio::task::spawn_blocking(move || -> Result<_> {
            let partitions = cluster::wait_for_topic(&b, &t)?;
            Ok((partitions, cluster::watermarks(&b, &t, partitions)?))
        })
        .await??;
        let held = messages_in(&marks);
        let expected = match args.messages {
            Some(n) if n > held => {
                bail!("--messages {n}: topic `{topic}` holds only {held} messages")
            }
            Some(n) => n,
            None if held == 0 => bail!("topic `{topic}` is empty: nothing to read"),
            None => held,
        };
        return Ok(Backlog {
            topic,
            partitions,
            marks,
            expected,
            fill_secs: None,
            producer: None,
            dropped_by_broker: 0,
        });
    }
    let partitions = cluster.ensure_topic(&topic, args.record.partitions).await?;
    let n = args.messages.unwrap_or(DEFAULT_MESSAGES);
    let config = bench_producer(&connection, args.producer_linger_ms, FILL_LINGER_MS);
    let producer = ProducerBatching::of(&config);
    let (b, t, size, keys) = (
        connection,
        topic.clone(),
        args.record.size as usize,
        args.record.keys,
    );
    if !args.json {
        eprintln!("filling {topic} with {} messages...", thousands(n));
    }
    let (before, produced, marks) = tokio::task::spawn_blocking(move || -> Result<_> {
        let before = cluster::watermarks(&b, &t, partitions)?;
        let produced = produce_paced(&b, &config, &t, Amount::Count(n), None, |i| {
            (bench_key(i, keys), bench_payload(i, size))
        })?;
        let after = cluster::watermarks(&b, &t, partitions)?;
        Ok((before, produced, after))
    })
    .await??;
    if produced.failed > 0 {
        bail!(
            "{} of {n} messages could not be produced: {}",
            produced.failed,
            produced.first_error.unwrap_or_default()
        );
    }
    let dropped = cluster::dropped_by_broker(&before, &marks);
    if dropped > 0 {
        bail!(
            "BROKER RETENTION DROP: the broker discarded {dropped} messages of the topic while it \
             was being filled (low watermark moved), so a full read is impossible. The embedded \
             broker keeps at most 5 MiB and 100,000 batches per partition: use more --partitions, \
             a smaller --size or fewer --messages."
        );
    }
    Ok(Backlog {
        topic,
        partitions,
        marks: marks.clone(),
        // What was there before plus what was delivered: some brokers (tansu) report high
        // watermarks that lag behind acknowledged writes for a moment.
        expected: messages_in(&before) + produced.delivered,
        fill_secs: Some(round(produced.secs, 3)),
        producer: Some(producer),
        dropped_by_broker: dropped,
    })
}

/// Messages between the low and high watermarks of every partition.
fn messages_in(marks: &[(i64, i64)]) -> u64 {
    marks
        .iter()
        .map(|(low, high)| (high - low).max(0) as u64)
        .sum()
}

/// Where a pass starts reading each partition of its topic.
fn start_offsets(topic: &str, starts: &[Offset]) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (p, offset) in starts.iter().enumerate() {
        list.add_partition_offset(topic, p as i32, *offset)?;
    }
    Ok(list)
}

/// Runs one pass of `side` over `feed` and measures it.
async fn run_pass(
    side: Side,
    cluster: &Cluster,
    args: &BenchConsumeArgs,
    feed: &Feed,
) -> Result<PassReport> {
    let (topic, starts, expected, live) = match feed {
        Feed::Backlog(b) => (
            b.topic.clone(),
            b.marks
                .iter()
                .map(|(low, _)| Offset::Offset(*low))
                .collect(),
            b.expected,
            None,
        ),
        Feed::Live { rate, secs } => {
            let topic = cluster::unique_name(&format!("sluicegate-bench-{}", side.label()));
            let partitions = cluster.ensure_topic(&topic, args.record.partitions).await?;
            let starts = vec![Offset::Beginning; partitions as usize];
            (topic, starts, rate * secs, Some((*rate, *secs)))
        }
    };
    let stream = live.map_or(Duration::ZERO, |(_, secs)| Duration::from_secs(secs));
    let timeout = Duration::from_secs(args.timeout_secs) + stream;
    let mut consumer_config = args.consumer_config.clone();
    if cluster.is_embedded()
        && !consumer_config
            .iter()
            .any(|(k, _)| k == "fetch.wait.max.ms")
    {
        // The mock broker answers an empty fetch only after the full fetch wait (500 ms by
        // default) even when data arrives meanwhile; a short wait keeps latency honest.
        consumer_config.push(("fetch.wait.max.ms".into(), "10".into()));
    }

    let meter = Arc::new(Meter::new(expected));
    let progress = follow(side.label(), expected, &meter);
    let memory = MemoryWatch::start();
    let started = Instant::now();
    let running = match side {
        Side::Raw => {
            let (list, m, work) = (start_offsets(&topic, &starts)?, meter.clone(), args.handler);
            let (b, config) = (cluster.connection().clone(), consumer_config.clone());
            let (ready_tx, ready) = tokio::sync::oneshot::channel();
            Running::Raw {
                thread: tokio::task::spawn_blocking(move || {
                    raw_pass(&b, &config, list, work, &m, timeout, ready_tx)
                }),
                ready,
            }
        }
        Side::Runtime | Side::Observed => Running::Runtime(Box::new(start_runtime(
            args,
            &consumer_config,
            cluster.connection(),
            &topic,
            meter.clone(),
            side == Side::Observed,
        )?)),
    };
    let mut running = running;
    let join_secs = running.joined(started, timeout).await?;

    // What the latencies include and leave out, by the same rule for every pass.
    let (warm_up, producer) = match live {
        Some((_, secs)) => (
            WarmUp::of_stream(secs),
            Some(bench_producer(
                cluster.connection(),
                args.producer_linger_ms,
                LIVE_LINGER_MS,
            )),
        ),
        None => (WarmUp::none(), None),
    };
    let batching = match (feed, &producer) {
        (_, Some(config)) => Some(ProducerBatching::of(config)),
        (Feed::Backlog(b), None) => b.producer,
        (Feed::Live { .. }, None) => None,
    };
    // Live: write the stream now that the consumer is in place.
    let writer = live.zip(producer).map(|((rate, _), config)| {
        warm_up.start(&meter);
        let connection = cluster.connection().clone();
        let (t, size, keys) = (topic.clone(), args.record.size as usize, args.record.keys);
        tokio::task::spawn_blocking(move || {
            produce_paced(
                &connection,
                &config,
                &t,
                Amount::Count(expected),
                Some(rate),
                |i| (bench_key(i, keys), bench_payload(i, size)),
            )
        })
    });
    if let Running::Runtime(pass) = &mut running {
        pass.mark_warm_up(warm_up.duration());
    }
    let (decode_errors, stages) = running.finish(&meter, timeout).await?;
    if let Some(writer) = writer {
        let produced = writer.await??;
        if produced.delivered < expected {
            tracing::warn!(
                delivered = produced.delivered,
                expected,
                first_error = ?produced.first_error,
                "the live stream was not fully written"
            );
        }
    }
    progress.finish();
    let mut report = memory.finish(PassReport::new(&meter, expected));
    report.latency_basis = batching.map(|b| LatencyBasis::new(b, warm_up, &meter));
    report.join_secs = join_secs.map(|s| round(s, 3));
    report.decode_errors = decode_errors;
    report.stages = stages;
    Ok(report)
}

/// The bench's producer, with `linger.ms` as `--producer-linger-ms` says (`default_ms`
/// without it).
fn bench_producer(
    connection: &Connection,
    linger_ms: Option<u64>,
    default_ms: u64,
) -> ClientConfig {
    let mut config = producer_config(connection);
    config.set("linger.ms", linger_ms.unwrap_or(default_ms).to_string());
    config
}

/// A pass under way.
enum Running {
    /// The baseline's poll loop, on a thread of its own; returns its decode errors. `ready`
    /// fires once it is assigned and connected to the partitions' leaders.
    Raw {
        thread: tokio::task::JoinHandle<Result<u64>>,
        ready: tokio::sync::oneshot::Receiver<()>,
    },
    Runtime(Box<RuntimePass>),
}

impl Running {
    /// Waits (within `timeout`) until the consumer has partitions; the seconds since `started`
    /// (`None` for the baseline, which assigns itself and has no group to join).
    async fn joined(&mut self, started: Instant, timeout: Duration) -> Result<Option<f64>> {
        let pass = match self {
            Running::Raw { ready, .. } => {
                return match tokio::time::timeout(timeout, ready).await {
                    Ok(Ok(())) => Ok(None),
                    // The thread ended early: `finish` reports why.
                    Ok(Err(_)) => Ok(None),
                    Err(_) => bail!("the baseline consumer was not ready within {timeout:?}"),
                };
            }
            Running::Runtime(pass) => pass,
        };
        let mut status = pass.handle.status();
        match tokio::time::timeout(timeout, status.wait_for(|s| !s.assigned.is_empty())).await {
            Ok(Ok(_)) => Ok(Some(started.elapsed().as_secs_f64())),
            Ok(Err(_)) => bail!("the Sluicegate consumer stopped before it was assigned"),
            Err(_) => bail!("the Sluicegate consumer was not assigned within {timeout:?}"),
        }
    }

    /// Waits until the meter is complete (or `timeout`), stops the consumer; its decode errors
    /// and (the runtime's) record ages at each stage.
    async fn finish(self, meter: &Meter, timeout: Duration) -> Result<(u64, Option<Stages>)> {
        match self {
            Running::Raw { thread, .. } => Ok((thread.await??, None)),
            Running::Runtime(pass) => pass.finish(meter, timeout).await,
        }
    }
}

/// The baseline: one thread polls a `BaseConsumer` assigned to `list` and does the work
/// inline, as a hand-written consumer would. Stops when the meter has counted everything or at
/// `timeout`; returns how many payloads the work could not decode.
fn raw_pass(
    connection: &Connection,
    overrides: &[(String, String)],
    list: TopicPartitionList,
    work: Work,
    meter: &Meter,
    timeout: Duration,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<u64> {
    let mut config = connection.client_config(ClientKind::Consumer);
    config
        .set("group.id", cluster::unique_name("sluicegate-bench-raw"))
        .set("enable.auto.commit", "false")
        // The runtime's own default (see `ConsumerBuilder::set`): the baseline gets the same
        // fetch settings, so the ratio compares the loops, not librdkafka's configuration.
        .set("fetch.queue.backoff.ms", "20");
    for (key, value) in overrides {
        config.set(key, value);
    }
    let consumer: BaseConsumer<SecureContext> = config
        .create_with_context(connection.context(&config))
        .context("cannot create the baseline consumer")?;
    consumer.assign(&list)?;
    // Connected to the leaders before a live stream starts, as the runtime is once assigned:
    // startup is not latency.
    for e in list.elements() {
        consumer
            .fetch_watermarks(e.topic(), e.partition(), timeout)
            .context("the baseline consumer cannot reach the partition leaders")?;
    }
    let _ = ready.send(());
    let deadline = Instant::now() + timeout;
    let mut decode_errors = 0u64;
    while !meter.is_complete() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let payload = rdkafka::Message::payload(&m).unwrap_or_default();
                match work.compute(payload) {
                    Ok(Some(wait)) => std::thread::sleep(wait),
                    Ok(None) => {}
                    Err(_) => decode_errors += 1,
                }
                meter.record_at(
                    payload.len() as u64,
                    rdkafka::Message::timestamp(&m).to_millis(),
                );
            }
            Some(Err(e)) => tracing::warn!(error = %e, "baseline consumer error"),
            None => {}
        }
    }
    Ok(decode_errors)
}

/// The runtime under measurement.
struct RuntimePass {
    handle: ConsumerHandle,
    decode_errors: Arc<AtomicU64>,
    /// Observed: what a scraper costs, the whole text once a second.
    scraper: Option<tokio::task::JoinHandle<()>>,
    /// The runtime's metrics, for the record ages at each stage (`None`: metrics off).
    metrics: Option<Metrics>,
    group: String,
    /// The record ages when the warm-up ended, once it has.
    warm_up: Option<tokio::task::JoinHandle<BTreeMap<Stage, Distribution>>>,
}

/// Starts the Sluicegate runtime, with the chosen handler, in a fresh group.
fn start_runtime(
    args: &BenchConsumeArgs,
    overrides: &[(String, String)],
    connection: &Connection,
    topic: &str,
    meter: Arc<Meter>,
    observed: bool,
) -> Result<RuntimePass> {
    let work = args.handler;
    let group = cluster::unique_name("sluicegate-bench");
    let mut builder: ConsumerBuilder = connection
        .consumer(Consumer::builder())
        .group_id(&group)
        .topic(topic)
        .ordering(args.ordering.into())
        .max_in_flight(args.max_in_flight as usize)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    if args.assign {
        builder = builder.static_assignment();
    }
    for (key, value) in overrides {
        builder = builder.set(key, value);
    }
    // Metrics on for the record ages at each stage (unless `--no-stages`): their cost is then
    // part of the runtime's figures.
    let metrics = Metrics::new();
    let measured = observed || !args.no_stages;
    if measured {
        builder = builder.metrics(metrics.clone());
    }
    if observed {
        builder = builder.http_endpoint(([127, 0, 0, 1], 0).into());
    }
    let decode_errors = Arc::new(AtomicU64::new(0));
    let handle = move |msg: &Message, errors: &AtomicU64| {
        let payload = msg.payload().unwrap_or_default();
        let wait = work.compute(payload).unwrap_or_else(|_| {
            errors.fetch_add(1, Relaxed);
            None
        });
        (wait, payload.len() as u64, msg.timestamp())
    };
    let consumer = match args.batch {
        None => {
            let errors = decode_errors.clone();
            builder.build(handler_fn(move |msg: Message| {
                let (meter, (wait, bytes, ts)) = (meter.clone(), handle(&msg, &errors));
                async move {
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    meter.record_at(bytes, ts);
                    Ok::<_, HandlerError>(())
                }
            }))
        }
        .context("cannot build the Sluicegate consumer")?
        .spawn(),
        Some(n) => {
            let errors = decode_errors.clone();
            builder
                .batch_limits(BatchLimits::default().max_messages(n as usize))
                // As many batches at once as `--max-in-flight` holds (the library's rule before
                // `max_batches_in_flight` was a setting), so that figures stay comparable.
                .max_batches_in_flight(
                    args.max_in_flight.checked_div(n).unwrap_or(1).max(1) as usize
                )
                .build_batch(batch_handler_fn(move |batch: Vec<Message>| {
                    let meter = meter.clone();
                    let done: Vec<_> = batch.iter().map(|m| handle(m, &errors)).collect();
                    async move {
                        for (wait, bytes, ts) in done {
                            if let Some(wait) = wait {
                                tokio::time::sleep(wait).await;
                            }
                            meter.record_at(bytes, ts);
                        }
                        Ok::<_, HandlerError>(())
                    }
                }))
                .context("cannot build the Sluicegate consumer")?
                .spawn()
        }
    }
    .context("cannot start the Sluicegate consumer")?;
    let scraper = observed.then(|| {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                std::hint::black_box(metrics.encode());
            }
        })
    });
    Ok(RuntimePass {
        handle: consumer,
        decode_errors,
        scraper,
        metrics: measured.then_some(metrics),
        group,
        warm_up: None,
    })
}

impl RuntimePass {
    /// Reads the record ages once `warm_up` has passed (from now, the stream's start), so
    /// that the stage figures leave out what the latency figures leave out.
    fn mark_warm_up(&mut self, warm_up: Duration) {
        let Some(metrics) = self.metrics.clone().filter(|_| !warm_up.is_zero()) else {
            return;
        };
        let group = self.group.clone();
        self.warm_up = Some(tokio::spawn(async move {
            tokio::time::sleep(warm_up).await;
            metrics.record_ages(&group)
        }));
    }

    async fn finish(self, meter: &Meter, timeout: Duration) -> Result<(u64, Option<Stages>)> {
        let mut status = self.handle.status();
        tokio::select! {
            _ = meter.complete() => {}
            _ = status.wait_for(|s| s.stopped) => {}
            _ = tokio::time::sleep(timeout) => tracing::warn!(?timeout, "runtime pass timed out"),
        }
        if let Some(scraper) = self.scraper {
            scraper.abort();
        }
        self.handle.shutdown();
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.handle.wait()).await {
            Ok(r) => r.context("the Sluicegate consumer failed")?,
            Err(_) => bail!("the Sluicegate consumer did not stop within {SHUTDOWN_TIMEOUT:?}"),
        }
        let start = match self.warm_up {
            Some(task) => Some(task.await?),
            None => None,
        };
        let stages = self.metrics.map(|m| {
            let end = m.record_ages(&self.group);
            Stages::between(start.as_ref(), &end)
        });
        Ok((self.decode_errors.load(Relaxed), stages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::StageAges;
    use crate::report::Latency;

    fn pass(rate: f64, p99_ms: f64) -> PassReport {
        PassReport {
            messages: 10,
            bytes: 1_000,
            secs: 1.0,
            msgs_per_sec: rate,
            mb_per_sec: 0.001,
            cpu_secs: Some(0.5),
            cpu_us_per_msg: Some(50_000.0),
            complete: true,
            join_secs: Some(0.2),
            first_message_secs: Some(0.3),
            latency: Some(Latency {
                p50_ms: 1.0,
                p99_ms,
                p999_ms: p99_ms * 2.0,
                max_ms: 10.0,
            }),
            latency_basis: Some(LatencyBasis {
                producer_linger_ms: 1.0,
                producer_batch_records: 10_000,
                producer_batch_bytes: 1_000_000,
                warm_up_secs: 2.0,
                warm_up_excluded: 20_000,
                measured: 580_000,
            }),
            decode_errors: 0,
            rss_start_mb: Some(10.0),
            peak_rss_mb: Some(20.0),
            stages: None,
        }
    }

    /// Stages of 1,000 records, older at each.
    fn stages() -> Stages {
        let at = |ms: f64| StageAges {
            count: 1_000,
            p50_ms: Some(ms),
            p99_ms: Some(ms * 2.0),
            p999_ms: Some(ms * 3.0),
        };
        Stages {
            polled: at(1.0),
            handler_start: at(1.25),
            handler_end: at(2.0),
            finished: at(2.5),
        }
    }

    #[test]
    fn report_json_and_table_show_every_pass_and_the_ratios() {
        let r = BenchReport {
            broker: "embedded",
            mode: "live",
            topic: "t".into(),
            messages: 10,
            size: Some(100),
            keys: Some(1_024),
            partitions: 8,
            handler: "noop".into(),
            ordering: "partition",
            max_in_flight: 1_000,
            batch: None,
            assign: false,
            rate: Some(10_000),
            duration_secs: Some(60),
            fill_secs: None,
            dropped_by_broker: 0,
            raw: Some(pass(10.0, 2.0)),
            runtime: PassReport {
                stages: Some(stages()),
                ..pass(8.0, 3.0)
            },
            observed: Some(pass(7.8, 3.0)),
            ratio: ratio(8.0, 10.0),
            cpu_ratio: Some(1.0),
            p99_ratio: ratio(3.0, 2.0),
            observed_ratio: ratio(7.8, 8.0),
            stages: true,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ratio"], 0.8);
        assert_eq!(v["p99_ratio"], 1.5);
        assert_eq!(v["raw"]["msgs_per_sec"], 10.0);
        assert_eq!(v["runtime"]["latency"]["p999_ms"], 6.0);
        assert_eq!(v["runtime"]["join_secs"], 0.2);
        let table = r.render();
        assert!(table.contains("raw rdkafka") && table.contains("sluicegate"));
        assert!(table.contains("0.80x of the throughput"), "{table}");
        assert!(table.contains("1.50x of the p99"), "{table}");
        assert!(
            table.contains("with the HTTP endpoint (metrics on in both) on / off: 0.975x"),
            "{table}"
        );
        assert_eq!(v["runtime"]["stages"]["handler_end"]["p99_ms"], 4.0);
        assert_eq!(v["runtime"]["stages"]["polled"]["count"], 1_000);
        assert!(v["raw"]["stages"].is_null(), "{v}");
        assert!(
            table.contains(
                "sluicegate  record age at each stage, ms p50 / p99 / p999: polled 1.00 / 2.00 / \
                 3.00; handler start 1.25 / 2.50 / 3.75; handler end 2.00 / 4.00 / 6.00; \
                 finished 2.50 / 5.00 / 7.50; 1,000 records"
            ),
            "{table}"
        );
        assert!(table.contains("10,000 msg/s for 60 s"), "{table}");
        assert_eq!(v["raw"]["latency_basis"]["producer_linger_ms"], 1.0);
        assert_eq!(v["runtime"]["latency_basis"]["warm_up_excluded"], 20_000);
        assert!(
            table.contains(
                "sluicegate  latency: producer linger 1 ms, batches up to 10,000 records / \
                 1,000,000 B; warm-up 2.0 s left out (20,000 messages), 580,000 measured"
            ),
            "{table}"
        );
    }

    #[test]
    fn backlog_size_is_what_lies_between_the_watermarks() {
        assert_eq!(messages_in(&[(0, 10), (5, 7), (3, 3)]), 12);
        assert_eq!(messages_in(&[(9, 4)]), 0);
    }
}
