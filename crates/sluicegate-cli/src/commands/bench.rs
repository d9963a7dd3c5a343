//! `sluicegate bench consume`: fill a topic once, then read all of it twice in the same run,
//! with a plain rdkafka poll loop (the baseline) and with the Sluicegate runtime, doing the
//! same work per message; report rates, CPU and the runtime-to-baseline ratio.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluicegate::metrics::Metrics;
use sluicegate::{handler_fn, Consumer, HandlerError, Message, Ordering};

use crate::cluster::{self, Cluster};
use crate::meter::{Measurement, Meter};
use crate::produce::produce_all;
use crate::progress::Progress;
use crate::report::{mb_per_sec, per_sec, print_json_line, ratio, round, thousands};
use crate::BenchConsumeArgs;

/// How long a graceful shutdown of the runtime may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct record keys in the filled topic (what key ordering spreads over).
const KEYS: u64 = 1_024;

/// The work done per message, by the baseline and by the runtime's handler alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Look at the payload, nothing more.
    Noop,
    /// Decode the payload as the bench's JSON record.
    Json,
    /// Wait this long (a slow downstream call): the baseline blocks, the runtime awaits.
    Sleep(Duration),
}

impl FromStr for Work {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "noop" => Ok(Work::Noop),
            "json" => Ok(Work::Json),
            _ => s
                .strip_prefix("sleep:")
                .and_then(|ms| ms.parse().ok())
                .map(|ms| Work::Sleep(Duration::from_millis(ms)))
                .ok_or_else(|| format!("unknown handler `{s}`; expected noop, json or sleep:MS")),
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Noop => f.write_str("noop"),
            Work::Json => f.write_str("json"),
            Work::Sleep(d) => write!(f, "sleep:{}", d.as_millis()),
        }
    }
}

/// The record the bench writes: a JSON object padded to the requested size.
#[derive(Deserialize)]
struct BenchRecord<'a> {
    #[allow(dead_code)]
    id: u64,
    #[serde(borrow)]
    #[allow(dead_code)]
    pad: &'a str,
}

impl Work {
    /// The CPU part of the work; what is left to wait is returned.
    fn compute(self, payload: &[u8]) -> Result<Option<Duration>, serde_json::Error> {
        match self {
            Work::Noop => {
                std::hint::black_box(payload);
                Ok(None)
            }
            Work::Json => {
                std::hint::black_box(serde_json::from_slice::<BenchRecord>(payload)?);
                Ok(None)
            }
            Work::Sleep(d) => Ok(Some(d)),
        }
    }
}

/// Record `seq` of the bench: `{"id":SEQ,"pad":"..."}`, padded to `size` bytes when the
/// envelope fits in it.
pub fn bench_payload(seq: u64, size: usize) -> Vec<u8> {
    const PAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let head = format!(r#"{{"id":{seq},"pad":""#);
    let mut out = Vec::with_capacity(size.max(head.len() + 2));
    out.extend_from_slice(head.as_bytes());
    let pad = size.saturating_sub(head.len() + 2);
    out.extend(PAD.iter().cycle().take(pad));
    out.extend_from_slice(b"\"}");
    out
}

/// One consume pass, as reported.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PassReport {
    pub messages: u64,
    pub bytes: u64,
    /// From the first message to the last.
    pub secs: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub cpu_secs: Option<f64>,
    pub cpu_us_per_msg: Option<f64>,
    /// `false` if the pass timed out before reading everything.
    pub complete: bool,
    /// Resident memory when the pass started, in MB (the embedded broker's data included).
    pub rss_start_mb: Option<f64>,
    /// The highest resident memory during the pass, in MB.
    pub peak_rss_mb: Option<f64>,
}

impl PassReport {
    pub fn new(m: &Measurement, expected: u64) -> Self {
        PassReport {
            messages: m.messages,
            bytes: m.bytes,
            secs: round(m.secs, 4),
            msgs_per_sec: round(per_sec(m.messages, m.secs), 1),
            mb_per_sec: round(mb_per_sec(m.bytes, m.secs), 2),
            cpu_secs: m.cpu_secs.map(|c| round(c, 2)),
            cpu_us_per_msg: m
                .cpu_secs
                .filter(|_| m.messages > 0)
                .map(|c| round(c * 1e6 / m.messages as f64, 2)),
            complete: m.messages >= expected,
            rss_start_mb: None,
            peak_rss_mb: None,
        }
    }
}

/// The bench's result, as printed with `--json`.
#[derive(Serialize, Debug)]
pub struct BenchReport {
    pub broker: &'static str,
    pub topic: String,
    pub messages: u64,
    pub size: u64,
    pub partitions: i32,
    pub handler: String,
    pub ordering: &'static str,
    pub max_in_flight: u64,
    pub compression: &'static str,
    pub fill_secs: f64,
    pub dropped_by_broker: i64,
    /// `None` with `--skip-baseline`.
    pub raw: Option<PassReport>,
    pub runtime: PassReport,
    /// With `--observed`: the runtime with metrics and the HTTP endpoint on.
    pub observed: Option<PassReport>,
    /// Runtime msg/s divided by baseline msg/s.
    pub ratio: Option<f64>,
    /// Observed runtime msg/s divided by runtime msg/s (without metrics).
    pub observed_ratio: Option<f64>,
    /// Runtime CPU per message divided by baseline CPU per message.
    pub cpu_ratio: Option<f64>,
}

impl BenchReport {
    pub fn render(&self) -> String {
        let mut out = format!(
            "bench consume: {} messages of {} B over {} partitions ({} broker, {} producer \
             compression), handler {}, runtime ordering {}, max in flight {}\n\n",
            thousands(self.messages),
            self.size,
            self.partitions,
            self.broker,
            self.compression,
            self.handler,
            self.ordering,
            self.max_in_flight
        );
        out += &format!(
            "  {:<14} {:>11} {:>9} {:>12} {:>9} {:>8} {:>10} {:>9}\n",
            "consumer", "messages", "seconds", "msg/s", "MB/s", "CPU s", "CPU µs/msg", "peak RSS"
        );
        let passes = [
            ("raw rdkafka", self.raw.as_ref()),
            ("sluicegate", Some(&self.runtime)),
            ("+ metrics", self.observed.as_ref()),
        ];
        for (name, p) in passes.into_iter().filter_map(|(n, p)| Some((n, p?))) {
            let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
            out += &format!(
                "  {:<14} {:>11} {:>9.3} {:>12} {:>9.1} {:>8} {:>10} {:>6} MB{}\n",
                name,
                thousands(p.messages),
                p.secs,
                thousands(p.msgs_per_sec as u64),
                p.mb_per_sec,
                opt(p.cpu_secs, 2),
                opt(p.cpu_us_per_msg, 2),
                opt(p.peak_rss_mb, 0),
                if p.complete { "" } else { "  (timed out)" }
            );
        }
        out += &format!(
            "\n  sluicegate / raw: {} of the throughput, {} of the CPU per message\n",
            self.ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            self.cpu_ratio.map_or("-".into(), |r| format!("{r:.2}x")),
        );
        if let Some(r) = self.observed_ratio {
            out += &format!(
                "  with metrics and the HTTP endpoint on / off: {r:.3}x of the throughput\n"
            );
        }
        out += &format!(
            "  (time runs from the first message to the last; CPU is this whole process's{}; \
             MB = 10^6 payload bytes)\n",
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
    let cluster = Cluster::start(args.bootstrap.clone())?;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| cluster::unique_name("sluicegate-bench"));
    let partitions = cluster.ensure_topic(&topic, args.partitions).await?;
    let bootstrap = cluster.bootstrap().to_string();

    // Fill.
    let (b, t, n, size) = (
        bootstrap.clone(),
        topic.clone(),
        args.messages,
        args.size as usize,
    );
    let fill = tokio::task::spawn_blocking(move || -> Result<_> {
        let before = cluster::watermarks(&b, &t, partitions)?;
        let produced = produce_all(&b, &t, n, |i| {
            (format!("key-{:04}", i % KEYS), bench_payload(i, size))
        })?;
        let after = cluster::watermarks(&b, &t, partitions)?;
        Ok((before, produced, after))
    });
    if !args.json {
        eprintln!(
            "filling {topic} with {} messages...",
            thousands(args.messages)
        );
    }
    let (before, produced, marks) = fill.await??;
    if produced.failed > 0 {
        bail!(
            "{} of {} messages could not be produced: {}",
            produced.failed,
            args.messages,
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
    // What was there before plus what was delivered: some brokers (tansu) report high
    // watermarks that lag behind acknowledged writes for a moment.
    let expected = messages_in(&before) + produced.delivered;
    let timeout = Duration::from_secs(args.timeout_secs);

    // Baseline: a plain poll loop over assigned partitions.
    let raw = if args.skip_baseline {
        None
    } else {
        let raw_meter = Arc::new(Meter::new(expected));
        let progress = follow("raw", expected, &raw_meter);
        let (b, t, m) = (bootstrap.clone(), topic.clone(), raw_meter.clone());
        let (assignment, raw_args) = (marks.clone(), args.clone());
        let memory = MemoryWatch::start();
        tokio::task::spawn_blocking(move || raw_pass(&raw_args, &b, &t, &assignment, &m, timeout))
            .await??;
        progress.finish();
        Some(memory.finish(PassReport::new(&raw_meter.measurement(), expected)))
    };

    // The runtime, with a fresh group.
    let runtime_meter = Arc::new(Meter::new(expected));
    let progress = follow("sluicegate", expected, &runtime_meter);
    let memory = MemoryWatch::start();
    runtime_pass(
        &args,
        &bootstrap,
        &topic,
        runtime_meter.clone(),
        timeout,
        false,
    )
    .await?;
    progress.finish();
    let runtime = memory.finish(PassReport::new(&runtime_meter.measurement(), expected));

    // The same, observed.
    let observed = if args.observed {
        let meter = Arc::new(Meter::new(expected));
        let progress = follow("observed", expected, &meter);
        let memory = MemoryWatch::start();
        runtime_pass(&args, &bootstrap, &topic, meter.clone(), timeout, true).await?;
        progress.finish();
        Some(memory.finish(PassReport::new(&meter.measurement(), expected)))
    } else {
        None
    };
    let report = BenchReport {
        broker: if cluster.is_embedded() {
            "embedded"
        } else {
            "external"
        },
        topic,
        messages: expected,
        size: args.size,
        partitions,
        handler: args.handler.to_string(),
        ordering: Ordering::from(args.ordering).as_str(),
        max_in_flight: args.max_in_flight,
        compression: "lz4",
        fill_secs: round(produced.secs, 3),
        dropped_by_broker: dropped,
        ratio: raw
            .as_ref()
            .and_then(|raw| ratio(runtime.msgs_per_sec, raw.msgs_per_sec))
            .map(|r| round(r, 3)),
        cpu_ratio: match (
            runtime.cpu_us_per_msg,
            raw.as_ref().and_then(|r| r.cpu_us_per_msg),
        ) {
            (Some(a), Some(b)) => ratio(a, b).map(|r| round(r, 3)),
            _ => None,
        },
        observed_ratio: observed
            .as_ref()
            .and_then(|o| ratio(o.msgs_per_sec, runtime.msgs_per_sec))
            .map(|r| round(r, 3)),
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

/// Memory during one pass: the resident size at its start and the peak during it.
struct MemoryWatch {
    start_mb: Option<f64>,
    peak_reset: bool,
}

impl MemoryWatch {
    fn start() -> Self {
        MemoryWatch {
            peak_reset: crate::mem::reset_peak_rss(),
            start_mb: crate::mem::rss_mb(),
        }
    }

    fn finish(self, mut pass: PassReport) -> PassReport {
        pass.rss_start_mb = self.start_mb.map(|m| round(m, 1));
        // Without a reset the kernel's peak would include the fill: better none than wrong.
        pass.peak_rss_mb = crate::mem::peak_rss_mb()
            .filter(|_| self.peak_reset)
            .map(|m| round(m, 1));
        pass
    }
}

/// Messages between the low and high watermarks of every partition.
fn messages_in(marks: &[(i64, i64)]) -> u64 {
    marks
        .iter()
        .map(|(low, high)| (high - low).max(0) as u64)
        .sum()
}

fn follow(label: &'static str, total: u64, meter: &Arc<Meter>) -> Progress {
    let meter = meter.clone();
    Progress::follow(label, total, move || meter.count())
}

/// The baseline: one thread polls a `BaseConsumer` assigned to every partition from its low
/// watermark and does the work inline, as a hand-written consumer would. Stops when the meter
/// has counted everything or at `timeout`.
fn raw_pass(
    args: &BenchConsumeArgs,
    bootstrap: &str,
    topic: &str,
    marks: &[(i64, i64)],
    meter: &Meter,
    timeout: Duration,
) -> Result<()> {
    let work = args.handler;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", cluster::unique_name("sluicegate-bench-raw"))
        .set("enable.auto.commit", "false")
        // The runtime's own default (see `ConsumerBuilder::set`): the baseline gets the same
        // fetch settings, so the ratio compares the loops, not librdkafka's configuration.
        .set("fetch.queue.backoff.ms", "20");
    for (key, value) in &args.consumer_config {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config
        .create()
        .context("cannot create the baseline consumer")?;
    let mut list = TopicPartitionList::new();
    for (p, (low, _)) in marks.iter().enumerate() {
        list.add_partition_offset(topic, p as i32, Offset::Offset(*low))?;
    }
    consumer.assign(&list)?;
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
                meter.record(payload.len() as u64);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "baseline consumer error"),
            None => {}
        }
    }
    if decode_errors > 0 {
        tracing::warn!(decode_errors, "baseline could not decode some payloads");
    }
    Ok(())
}

/// The Sluicegate runtime with a no-op (or the chosen) handler, in a fresh group; stops once
/// the meter has counted everything or at `timeout`.
async fn runtime_pass(
    args: &BenchConsumeArgs,
    bootstrap: &str,
    topic: &str,
    meter: Arc<Meter>,
    timeout: Duration,
    observed: bool,
) -> Result<()> {
    let work = args.handler;
    let counter = meter.clone();
    let mut builder = Consumer::builder()
        .bootstrap_servers(bootstrap)
        .group_id(cluster::unique_name("sluicegate-bench"))
        .topic(topic)
        .ordering(args.ordering.into())
        .max_in_flight(args.max_in_flight as usize)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (key, value) in &args.consumer_config {
        builder = builder.set(key, value);
    }
    let metrics = Metrics::new();
    if observed {
        builder = builder
            .metrics(metrics.clone())
            .http_endpoint(([127, 0, 0, 1], 0).into());
    }
    let consumer = builder
        .build(handler_fn(move |msg: Message| {
            let meter = counter.clone();
            async move {
                let payload = msg.payload().unwrap_or_default();
                if let Some(wait) = work.compute(payload).map_err(HandlerError::permanent)? {
                    tokio::time::sleep(wait).await;
                }
                meter.record(payload.len() as u64);
                Ok(())
            }
        }))
        .context("cannot build the Sluicegate consumer")?
        .spawn()
        .context("cannot start the Sluicegate consumer")?;
    let mut status = consumer.status();
    // What a scraper costs: the whole text, once a second.
    let scraper = observed.then(|| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                std::hint::black_box(metrics.encode());
            }
        })
    });
    tokio::select! {
        _ = meter.complete() => {}
        _ = status.wait_for(|s| s.stopped) => {}
        _ = tokio::time::sleep(timeout) => tracing::warn!(?timeout, "runtime pass timed out"),
    }
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    consumer.shutdown();
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, consumer.wait()).await {
        Ok(r) => r.context("the Sluicegate consumer failed"),
        Err(_) => bail!("the Sluicegate consumer did not stop within {SHUTDOWN_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_parses_its_forms_and_names_the_choices() {
        assert_eq!("noop".parse::<Work>(), Ok(Work::Noop));
        assert_eq!("json".parse::<Work>(), Ok(Work::Json));
        assert_eq!(
            "sleep:5".parse::<Work>(),
            Ok(Work::Sleep(Duration::from_millis(5)))
        );
        assert!("sleep:x"
            .parse::<Work>()
            .unwrap_err()
            .contains("noop, json or sleep:MS"));
        assert_eq!(Work::Sleep(Duration::from_millis(5)).to_string(), "sleep:5");
    }

    #[test]
    fn payloads_have_the_requested_size_and_decode() {
        for size in [32, 100, 1_000] {
            let p = bench_payload(123_456, size);
            assert_eq!(p.len(), size);
            assert_eq!(Work::Json.compute(&p).unwrap(), None);
        }
        // Too small for the envelope: still valid JSON, just longer.
        let p = bench_payload(1, 4);
        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_ok());
    }

    #[test]
    fn pass_report_computes_rates_and_cpu_per_message() {
        let m = Measurement {
            messages: 1_000_000,
            bytes: 100_000_000,
            secs: 2.0,
            cpu_secs: Some(3.0),
        };
        let r = PassReport::new(&m, 1_000_000);
        assert_eq!(r.msgs_per_sec, 500_000.0);
        assert_eq!(r.mb_per_sec, 50.0);
        assert_eq!(r.cpu_us_per_msg, Some(3.0));
        assert!(r.complete);
        assert!(!PassReport::new(&m, 2_000_000).complete);
    }

    #[test]
    fn report_json_and_table_show_both_passes_and_the_ratio() {
        let pass = |rate: f64| PassReport {
            messages: 10,
            bytes: 1_000,
            secs: 1.0,
            msgs_per_sec: rate,
            mb_per_sec: 0.001,
            cpu_secs: Some(0.5),
            cpu_us_per_msg: Some(50_000.0),
            complete: true,
            rss_start_mb: Some(10.0),
            peak_rss_mb: Some(20.0),
        };
        let r = BenchReport {
            broker: "embedded",
            topic: "t".into(),
            messages: 10,
            size: 100,
            partitions: 8,
            handler: "noop".into(),
            ordering: "partition",
            max_in_flight: 1_000,
            compression: "lz4",
            fill_secs: 0.1,
            dropped_by_broker: 0,
            raw: Some(pass(10.0)),
            runtime: pass(8.0),
            observed: Some(pass(7.8)),
            ratio: ratio(8.0, 10.0),
            cpu_ratio: Some(1.0),
            observed_ratio: ratio(7.8, 8.0),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ratio"], 0.8);
        assert_eq!(v["raw"]["msgs_per_sec"], 10.0);
        let table = r.render();
        assert!(table.contains("raw rdkafka") && table.contains("sluicegate"));
        assert!(table.contains("0.80x"), "{table}");
        assert!(table.contains("on / off: 0.975x"), "{table}");
    }
}
