//! [`Timings`]: a histogram of durations that many threads record into at once without
//! contending: each thread adds to its own shard, and a scrape sums the shards.

use std::iter::once;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket upper bounds in seconds: 100 µs, quadrupling, to about 7 minutes, so that
/// minutes-long end-to-end latencies still land in a bucket.
const BOUNDS: [f64; 12] = [
    0.0001, 0.0004, 0.0016, 0.0064, 0.0256, 0.1024, 0.4096, 1.6384, 6.5536, 26.2144, 104.8576,
    419.4304,
];
/// Enough shards that the worker threads and the poll thread rarely share one.
const SHARDS: usize = 8;

/// A histogram of durations, encoded like `prometheus-client`'s `Histogram` (buckets, sum in
/// seconds, count). A shared histogram behind a lock costs a contended lock per observation
/// when every handler call records one; here an observation is two uncontended atomic adds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timings(Arc<[Shard; SHARDS]>);

/// One thread's part, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Timings {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        let shard = &self.0[shard_of_this_thread()];
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard
            .sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// `(upper bound, observations)` per bucket, the sum in seconds and the count.
    fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain(once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let mut sum_nanos = 0u64;
        for shard in self.0.iter() {
            for (total, b) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += b.load(Relaxed);
            }
            sum_nanos = sum_nanos.saturating_add(shard.sum_nanos.load(Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (buckets, sum_nanos as f64 / 1e9, count)
    }
}

fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS);
    SHARD.with(|s| *s)
}

impl TypedMetric for Timings {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timings {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, sum, count) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let t = Timings::default();
        for ms in [0, 1, 1, 50, 1_000, 3_600_000] {
            t.observe(Duration::from_millis(ms));
        }
        let (buckets, sum, count) = t.snapshot();
        assert_eq!(count, 6);
        assert!((sum - 3_601.052).abs() < 1e-9, "{sum}");
        let at = |bound: f64| buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!(at(0.0001), 1);
        assert_eq!(at(0.0016), 2);
        assert_eq!(at(0.1024), 1);
        assert_eq!(at(1.6384), 1);
        assert_eq!(at(f64::INFINITY), 1);
    }

    #[test]
    fn threads_recording_at_once_lose_nothing() {
        let t = Timings::default();
        std::thread::scope(|s| {
            for i in 0..6 {
                let t = &t;
                s.spawn(move || {
                    for _ in 0..10_000 {
                        t.observe(Duration::from_micros(i * 100));
                    }
                });
            }
        });
        let (_, sum, count) = t.snapshot();
        assert_eq!(count, 60_000);
        assert!((sum - 15.0).abs() < 1e-6, "{sum}");
    }
}
