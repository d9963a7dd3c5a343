//! `sluicegate bench`: load and measure.
//!
//! - `bench produce` writes records of a chosen size and key spread, as fast as it can or at a
//!   target rate, and reports the rate achieved ([`produce`]).
//! - `bench consume` reads the same records twice in one run, with a plain rdkafka poll loop
//!   (the baseline) and with the Sluicegate runtime, doing the same work per message, and
//!   reports each side's rates, CPU, memory and end-to-end latency next to the baseline's
//!   ([`consume`]). It reads a backlog (filled first, or found in an existing topic), or, with
//!   `--rate`, a live stream that it writes while it reads.
//! - `bench run` reads one backlog with `run`'s HTTP sink and with a hand-written library
//!   handler making the same call, and reports msg/s and p99 per request as ratios ([`run`]).

mod consume;
mod produce;
mod run;

pub use consume::consume;
pub use produce::produce;
pub use run::run;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use sluicegate::metrics::{Distribution, Stage};

use crate::meter::{now_micros, Measurement, Meter};
use crate::progress::Progress;
use crate::report::{latency_ms, mb_per_sec, per_sec, round, Latency};

/// Distinct record keys the bench writes unless told otherwise (what key ordering spreads
/// over).
pub const DEFAULT_KEYS: u64 = 1_024;

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
    /// From starting the consumer to its first assignment (the runtime's group join).
    pub join_secs: Option<f64>,
    /// From starting the consumer to its first finished message.
    pub first_message_secs: Option<f64>,
    /// Record timestamp to finished, over every message but the warm-up's.
    pub latency: Option<Latency>,
    /// What the latency figures include and leave out (`None` for a topic read as it was
    /// found: its producer is unknown).
    pub latency_basis: Option<LatencyBasis>,
    /// Payloads the `json` handler could not decode (counted, not retried).
    pub decode_errors: u64,
    /// Resident memory when the pass started, in MB (the embedded broker's data included).
    pub rss_start_mb: Option<f64>,
    /// The highest resident memory during the pass, in MB.
    pub peak_rss_mb: Option<f64>,
    /// The runtime's passes: the records' ages at each stage, from the runtime's own metrics
    /// (`None` for the baseline).
    pub stages: Option<Stages>,
}

/// A record's age (now minus its timestamp) at each stage of the runtime, from the histograms
/// of `sluicegate_record_age_seconds` and `sluicegate_end_to_end_latency_seconds`, over the
/// records that reached the stage after the warm-up (a live stream's first tenth): so within
/// a few records of those the latency figures measure. Quantiles are exact to the width of a
/// bucket (0.25 ms up to 1 ms, 1 ms up to 3 ms, 2 to 2.5 ms up to 7.5 ms, then wider).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Stages {
    /// Taken from librdkafka by the poll loop.
    pub polled: StageAges,
    /// The record's first handler call began.
    pub handler_start: StageAges,
    /// Its last handler call returned.
    pub handler_end: StageAges,
    /// Finished: its offset may be committed.
    pub finished: StageAges,
}

impl Stages {
    /// The figures of what `end` holds beyond `start` (`None`: from the beginning).
    pub fn between(
        start: Option<&BTreeMap<Stage, Distribution>>,
        end: &BTreeMap<Stage, Distribution>,
    ) -> Self {
        let at = |stage: Stage| {
            let end = end.get(&stage).cloned().unwrap_or_default();
            let d = match start.and_then(|s| s.get(&stage)) {
                Some(start) => end.since(start),
                None => end,
            };
            StageAges::of(&d)
        };
        Stages {
            polled: at(Stage::Polled),
            handler_start: at(Stage::HandlerStart),
            handler_end: at(Stage::HandlerEnd),
            finished: at(Stage::Finished),
        }
    }

    /// Each stage with its name, in the order records go through them.
    pub fn each(&self) -> [(&'static str, &StageAges); 4] {
        [
            ("polled", &self.polled),
            ("handler start", &self.handler_start),
            ("handler end", &self.handler_end),
            ("finished", &self.finished),
        ]
    }
}

/// The ages of the records at one stage: how many, and quantiles in milliseconds (`None` if
/// none reached it).
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct StageAges {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
}

impl StageAges {
    fn of(d: &Distribution) -> Self {
        let ms = |q| d.quantile(q).map(|a| round(a.as_secs_f64() * 1e3, 3));
        StageAges {
            count: d.count(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
        }
    }
}

impl PassReport {
    pub fn new(meter: &Meter, expected: u64) -> Self {
        let m: Measurement = meter.measurement();
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
            join_secs: None,
            first_message_secs: m.first_message_secs.map(|s| round(s, 3)),
            latency: latency_ms(&meter.latency_us()),
            latency_basis: None,
            decode_errors: 0,
            rss_start_mb: None,
            peak_rss_mb: None,
            stages: None,
        }
    }
}

/// The settings of the bench's own producer that hold records back before they are sent, after
/// their timestamps (where latency counts from) were taken.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct ProducerBatching {
    /// `linger.ms`: how long a record may wait for others to fill its batch.
    pub linger_ms: f64,
    /// `batch.num.messages`: the most records per batch.
    pub batch_records: u64,
    /// `batch.size`: the most bytes per batch.
    pub batch_bytes: u64,
}

impl ProducerBatching {
    /// The batching of a producer created from `config` (librdkafka's defaults where unset).
    pub fn of(config: &ClientConfig) -> Self {
        let get = |key: &str, default: f64| {
            config
                .get(key)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(default)
        };
        ProducerBatching {
            linger_ms: get("linger.ms", 5.0),
            batch_records: get("batch.num.messages", 10_000.0) as u64,
            batch_bytes: get("batch.size", 1_000_000.0) as u64,
        }
    }
}

/// The warm-up rule, one for every pass: of a live stream of `secs` seconds, the records written
/// in its first tenth (at most 2 s) are left out of the latencies (the consumer's first fetches,
/// offset look-ups and connections to partition leaders, are startup, not steady state); of a
/// backlog, none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmUp(Duration);

impl WarmUp {
    /// The warm-up of a live stream of `secs` seconds.
    pub fn of_stream(secs: u64) -> Self {
        WarmUp(
            Duration::from_secs(secs)
                .div_f64(10.0)
                .min(Duration::from_secs(2)),
        )
    }

    /// No warm-up: every record counts (a backlog).
    pub fn none() -> Self {
        WarmUp(Duration::ZERO)
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    /// Applies the rule to `meter` for a stream whose first record is written now.
    pub fn start(self, meter: &Meter) {
        if !self.0.is_zero() {
            meter.measure_latency_from(now_micros() / 1_000 + self.0.as_millis() as i64);
        }
    }
}

/// What a pass's latency figures include and leave out: the producer's batching, which is in
/// them, and the warm-up, which is not.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct LatencyBasis {
    /// The producer's `linger.ms`, as [`ProducerBatching::linger_ms`].
    pub producer_linger_ms: f64,
    pub producer_batch_records: u64,
    pub producer_batch_bytes: u64,
    /// Records written in this first part of the stream are left out ([`WarmUp`]).
    pub warm_up_secs: f64,
    /// Messages left out as written during the warm-up.
    pub warm_up_excluded: u64,
    /// Messages whose latency is in the figures.
    pub measured: u64,
}

impl LatencyBasis {
    /// The basis of what `meter` measured, the records written by a producer with `batching`
    /// and the warm-up rule `warm_up` applied.
    pub fn new(batching: ProducerBatching, warm_up: WarmUp, meter: &Meter) -> Self {
        LatencyBasis {
            producer_linger_ms: batching.linger_ms,
            producer_batch_records: batching.batch_records,
            producer_batch_bytes: batching.batch_bytes,
            warm_up_secs: round(warm_up.duration().as_secs_f64(), 3),
            warm_up_excluded: meter.latency_excluded(),
            measured: meter.latency_us().len(),
        }
    }
}

/// Memory during one pass: the resident size at its start and the peak during it.
struct MemoryWatch {
    start_mb: Option<f64>,
    peak_reset: bool,
}

impl MemoryWatch {
    fn start() -> Self {
        MemoryWatch {
            peak_reset: crate::workload::mem::reset_peak_rss(),
            start_mb: crate::workload::mem::rss_mb(),
        }
    }

    fn finish(self, mut pass: PassReport) -> PassReport {
        pass.rss_start_mb = self.start_mb.map(|m| round(m, 1));
        // Without a reset the kernel's peak would include the fill: better none than wrong.
        pass.peak_rss_mb = crate::workload::mem::peak_rss_mb()
            .filter(|_| self.peak_reset)
            .map(|m| round(m, 1));
        pass
    }
}

fn follow(label: &'static str, total: u64, meter: &Arc<Meter>) -> Progress {
    let meter = meter.clone();
    Progress::follow(label, total, move || meter.count())
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
    fn the_json_handler_decodes_the_bench_records() {
        for size in [32, 100, 1_000] {
            let p = crate::workload::records::bench_payload(123_456, size);
            assert_eq!(Work::Json.compute(&p).unwrap(), None);
        }
        assert!(Work::Json.compute(b"not json").is_err());
    }

    #[test]
    fn warm_up_is_a_tenth_of_the_stream_up_to_two_seconds() {
        assert_eq!(WarmUp::of_stream(5).duration(), Duration::from_millis(500));
        assert_eq!(WarmUp::of_stream(60).duration(), Duration::from_secs(2));
        assert_eq!(WarmUp::none().duration(), Duration::ZERO);
    }

    #[test]
    fn warm_up_leaves_out_the_records_written_during_it_and_says_how_many() {
        let meter = Meter::new(3);
        WarmUp::of_stream(20).start(&meter);
        let now_ms = now_micros() / 1_000;
        meter.record_at(1, Some(now_ms));
        meter.record_at(1, Some(now_ms + 1_000));
        meter.record_at(1, Some(now_ms + 2_500));
        let config = crate::produce::producer_config(&crate::settings::Connection::to(
            "127.0.0.1:9092",
            &[],
        ));
        let basis = LatencyBasis::new(ProducerBatching::of(&config), WarmUp::of_stream(20), &meter);
        assert_eq!((basis.warm_up_excluded, basis.measured), (2, 1));
        assert_eq!(basis.warm_up_secs, 2.0);
        assert_eq!(basis.producer_linger_ms, 5.0);
        assert_eq!(
            (basis.producer_batch_records, basis.producer_batch_bytes),
            (10_000, 1_000_000)
        );
        let mut config = ClientConfig::new();
        config.set("linger.ms", "0.5");
        assert_eq!(ProducerBatching::of(&config).linger_ms, 0.5);
    }

    #[test]
    fn pass_report_computes_rates_cpu_per_message_and_latency() {
        let meter = Meter::new(3);
        let ts = crate::meter::now_micros() / 1_000 - 1_000;
        for _ in 0..3 {
            meter.record_at(100, Some(ts));
        }
        let r = PassReport::new(&meter, 3);
        assert_eq!((r.messages, r.bytes), (3, 300));
        assert!(r.complete);
        assert!(!PassReport::new(&meter, 4).complete);
        let l = r.latency.expect("latencies recorded");
        assert!(l.p50_ms >= 1_000.0 && l.p50_ms <= l.p99_ms && l.p99_ms <= l.p999_ms);
        assert!(r.first_message_secs.is_some());
        assert_eq!(PassReport::new(&Meter::new(1), 1).latency, None);
    }
}
