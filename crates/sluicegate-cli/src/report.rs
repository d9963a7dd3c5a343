//! Numbers for people and for machines: percentiles, rates, ratios, and formatting.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The percentiles of a histogram of microseconds; `None` when it is empty.
pub fn latency_ms(micros: &Histogram<u64>) -> Option<Latency> {
    if micros.is_empty() {
        return None;
    }
    let ms = |us: u64| round(us as f64 / 1_000.0, 3);
    Some(Latency {
        p50_ms: ms(micros.value_at_quantile(0.50)),
        p99_ms: ms(micros.value_at_quantile(0.99)),
        p999_ms: ms(micros.value_at_quantile(0.999)),
        max_ms: ms(micros.max()),
    })
}

/// `count` per second over `secs`; 0 for an empty window.
pub fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_sec(bytes: u64, secs: f64) -> f64 {
    per_sec(bytes, secs) / 1e6
}

/// `value / baseline`, when both are positive.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (value > 0.0 && baseline > 0.0).then(|| value / baseline)
}

/// `x` rounded to `digits` decimals, for readable JSON.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// `n` with thousands separators: 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json_line(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Prints a command's summary: as one JSON line (its `problems` on stderr) with `json`, else as
/// `text` renders it.
pub fn print_summary<S: Serialize>(
    json: bool,
    summary: &S,
    problems: &[String],
    text: impl FnOnce(&S) -> String,
) -> anyhow::Result<()> {
    if json {
        for p in problems {
            eprintln!("FAILED: {p}");
        }
        print_json_line(summary)
    } else {
        print!("{}", text(summary));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::latency_histogram;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = latency_histogram();
        for us in 1..=10_000u64 {
            h.record(us * 100).unwrap();
        }
        let l = latency_ms(&h).unwrap();
        assert!((l.p50_ms - 500.0).abs() < 0.5, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.p999_ms - 999.0).abs() < 1.0, "{l:?}");
        assert!((l.max_ms - 1_000.0).abs() < 1.0, "{l:?}");
        assert_eq!(latency_ms(&latency_histogram()), None);
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_sec(1_000, 2.0), 500.0);
        assert_eq!(per_sec(1_000, 0.0), 0.0);
        assert_eq!(mb_per_sec(3_000_000, 1.5), 2.0);
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(50.0, 0.0), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(round(1.23456, 2), 1.23);
    }
}
