//! `sluicegate bench produce`: write records as fast as possible or at a target rate.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::cluster::{self, Cluster};
use crate::cpu::process_cpu_secs;
use crate::produce::{produce_paced, producer_config, Amount, Produced};
use crate::report::{mb_per_sec, per_sec, print_json_line, ratio, round, thousands};
use crate::workload::records::{bench_key, bench_payload};
use crate::BenchProduceArgs;

/// Records written when neither a count nor a duration is given.
const DEFAULT_MESSAGES: u64 = 1_000_000;

/// The result of `bench produce`, as printed with `--json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct ProduceReport {
    pub broker: &'static str,
    pub topic: String,
    pub partitions: i32,
    pub size: u64,
    pub keys: u64,
    /// The rate asked for, if any.
    pub target_rate: Option<u64>,
    /// Records handed to the producer.
    pub sent: u64,
    /// Records the broker acknowledged.
    pub delivered: u64,
    pub failed: u64,
    /// From the first send to the last acknowledgement.
    pub secs: f64,
    /// Acknowledged records per second.
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    /// Achieved rate divided by the target rate.
    pub rate_ratio: Option<f64>,
    pub cpu_secs: Option<f64>,
    pub first_error: Option<String>,
}

impl ProduceReport {
    fn new(
        broker: &'static str,
        topic: String,
        partitions: i32,
        args: &BenchProduceArgs,
        produced: &Produced,
        cpu_secs: Option<f64>,
    ) -> Self {
        let rate = per_sec(produced.delivered, produced.secs);
        ProduceReport {
            broker,
            topic,
            partitions,
            size: args.record.size,
            keys: args.record.keys,
            target_rate: args.rate,
            sent: produced.sent,
            delivered: produced.delivered,
            failed: produced.failed,
            secs: round(produced.secs, 3),
            msgs_per_sec: round(rate, 1),
            mb_per_sec: round(
                mb_per_sec(produced.delivered * args.record.size, produced.secs),
                2,
            ),
            rate_ratio: args
                .rate
                .and_then(|target| ratio(rate, target as f64))
                .map(|r| round(r, 3)),
            cpu_secs: cpu_secs.map(|c| round(c, 2)),
            first_error: produced.first_error.clone(),
        }
    }

    /// The human table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "bench produce: {} records of {} B over {} keys to {} ({} partitions, {} broker)\n\n",
            thousands(self.sent),
            self.size,
            thousands(self.keys),
            self.topic,
            self.partitions,
            self.broker
        );
        out += &format!(
            "  delivered {}   failed {}   in {:.3} s\n  {} msg/s   {:.1} MB/s   CPU {} s\n",
            thousands(self.delivered),
            thousands(self.failed),
            self.secs,
            thousands(self.msgs_per_sec as u64),
            self.mb_per_sec,
            self.cpu_secs.map_or("-".into(), |c| format!("{c:.2}")),
        );
        if let (Some(target), Some(r)) = (self.target_rate, self.rate_ratio) {
            out += &format!(
                "  target {} msg/s: achieved {r:.3}x of it\n",
                thousands(target)
            );
        }
        if let Some(e) = &self.first_error {
            out += &format!("  first failure: {e}\n");
        }
        out
    }
}

/// Runs `bench produce`; `Ok(false)` when some record was not delivered.
pub async fn produce(args: BenchProduceArgs) -> Result<bool> {
    let cluster = Cluster::start(&args.connect)?;
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| cluster::unique_name("sluicegate-bench"));
    let partitions = cluster.ensure_topic(&topic, args.record.partitions).await?;
    let amount = match (args.messages, args.duration_secs) {
        (Some(n), _) => Amount::Count(n),
        (None, Some(secs)) => Amount::For(Duration::from_secs(secs)),
        (None, None) => Amount::Count(DEFAULT_MESSAGES),
    };
    let connection = cluster.connection().clone();
    let mut config = producer_config(&connection);
    for (key, value) in &args.producer_config {
        config.set(key, value);
    }
    if !args.json {
        eprintln!("writing to {topic}...");
    }
    let (t, rate, size, keys) = (
        topic.clone(),
        args.rate,
        args.record.size as usize,
        args.record.keys,
    );
    let cpu_before = process_cpu_secs();
    let produced = tokio::task::spawn_blocking(move || {
        produce_paced(&connection, &config, &t, amount, rate, |i| {
            (bench_key(i, keys), bench_payload(i, size))
        })
    })
    .await??;
    let cpu = process_cpu_secs()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    if produced.delivered == 0 && produced.sent > 0 {
        bail!(
            "none of {} records was delivered to {topic}: {}",
            produced.sent,
            produced.first_error.unwrap_or_default()
        );
    }
    let broker = if cluster.is_embedded() {
        "embedded"
    } else {
        "external"
    };
    let report = ProduceReport::new(broker, topic, partitions, &args, &produced, cpu);
    if args.json {
        print_json_line(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(report.failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BenchRecordArgs;

    #[test]
    fn report_shows_rates_and_how_close_to_the_target() {
        let args = BenchProduceArgs {
            messages: None,
            duration_secs: Some(2),
            rate: Some(1_000),
            record: BenchRecordArgs {
                size: 100,
                keys: 10,
                partitions: 4,
            },
            connect: crate::ConnectArgs::default(),
            topic: None,
            producer_config: Vec::new(),
            json: true,
        };
        let produced = Produced {
            sent: 1_900,
            delivered: 1_900,
            failed: 0,
            first_error: None,
            secs: 2.0,
        };
        let r = ProduceReport::new("embedded", "t".into(), 4, &args, &produced, Some(0.5));
        assert_eq!(r.msgs_per_sec, 950.0);
        assert_eq!(r.mb_per_sec, 0.1);
        assert_eq!(r.rate_ratio, Some(0.95));
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "delivered",
            "failed",
            "msgs_per_sec",
            "mb_per_sec",
            "target_rate",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        let table = r.render();
        assert!(table.contains("950 msg/s"), "{table}");
        assert!(table.contains("achieved 0.950x"), "{table}");
    }
}
