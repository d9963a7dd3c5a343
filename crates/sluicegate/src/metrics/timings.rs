//! [`Timings`]: a histogram of durations that many threads record into at once without
//! contending: each thread adds to its own shard, and a scrape sums the shards. Its
//! [`Distribution`] is what it held at one moment, with quantiles estimated from the buckets.

use std::iter::once;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket upper bounds in seconds of durations (handler calls, commits): 100 µs, quadrupling,
/// to about 7 minutes.
const DURATIONS: &[f64] = &[
    0.0001, 0.0004, 0.0016, 0.0064, 0.0256, 0.1024, 0.4096, 1.6384, 6.5536, 26.2144, 104.8576,
    419.4304,
];
/// Bucket upper bounds in seconds of record ages (and end-to-end latency): fine enough in
/// milliseconds to tell a 5 ms p99 and a ratio of 1.2 between two, up to 5 minutes so that a
/// backlog's ages still land in a bucket.
const AGES: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Room for the longest set of bounds, and +Inf.
const MAX_BUCKETS: usize = 24;
/// Enough shards that the worker threads and the poll thread rarely share one.
const SHARDS: usize = 8;

/// A histogram of durations, encoded like `prometheus-client`'s `Histogram` (buckets, sum in
/// seconds, count). A shared histogram behind a lock costs a contended lock per observation
/// when every handler call records one; here an observation is two uncontended atomic adds.
/// The default has the bounds of durations; [`Timings::ages`] those of record ages.
#[derive(Clone, Debug)]
pub(crate) struct Timings {
    bounds: &'static [f64],
    shards: Arc<[Shard; SHARDS]>,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            bounds: DURATIONS,
            shards: Arc::default(),
        }
    }
}

/// One thread's part, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    /// Observations per bucket (not cumulative); the one after the last bound is +Inf.
    buckets: [AtomicU64; MAX_BUCKETS],
    sum_nanos: AtomicU64,
}

impl Timings {
    /// A histogram with the bounds of record ages: milliseconds up to minutes.
    pub fn ages() -> Self {
        Timings {
            bounds: AGES,
            shards: Arc::default(),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // The first bound at or above `secs` (the +Inf bucket if none), in a few comparisons.
        let bucket = self.bounds.partition_point(|b| *b < secs);
        let shard = &self.shards[shard_of_this_thread()];
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard
            .sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// What the histogram holds now.
    pub fn snapshot(&self) -> Distribution {
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        let mut sum_nanos = 0u64;
        for shard in self.shards.iter() {
            for (total, b) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += b.load(Relaxed);
            }
            sum_nanos = sum_nanos.saturating_add(shard.sum_nanos.load(Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        Distribution {
            buckets,
            sum_secs: sum_nanos as f64 / 1e9,
            count,
        }
    }
}

/// What a histogram of durations held at one moment: observations per bucket, their sum and
/// count. Read quantiles from it with [`quantile`](Self::quantile), and take what happened
/// between two moments with [`since`](Self::since).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    /// `(upper bound in seconds, observations)` per bucket, not cumulative; the last bound is
    /// infinite.
    buckets: Vec<(f64, u64)>,
    sum_secs: f64,
    count: u64,
}

impl Distribution {
    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of its observations.
    pub fn sum(&self) -> Duration {
        Duration::from_secs_f64(self.sum_secs.max(0.0))
    }

    /// `(upper bound in seconds, observations)` per bucket, not cumulative, the last bound
    /// infinite.
    pub fn buckets(&self) -> &[(f64, u64)] {
        &self.buckets
    }

    /// The `q` quantile (0 to 1), estimated as Prometheus' `histogram_quantile` does: by
    /// linear interpolation inside the bucket it falls in (from 0 in the first), and as the
    /// highest finite bound if it falls in the +Inf bucket. `None` when empty, or for a `q`
    /// outside 0 to 1. So it is exact to the width of a bucket.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for &(upper, n) in &self.buckets {
            if n > 0 && (below + n) as f64 >= rank {
                if upper.is_infinite() {
                    return Some(Duration::from_secs_f64(lower));
                }
                let within = (rank - below as f64).max(0.0) / n as f64;
                return Some(Duration::from_secs_f64(lower + (upper - lower) * within));
            }
            below += n;
            if upper.is_finite() {
                lower = upper;
            }
        }
        Some(Duration::from_secs_f64(lower))
    }

    /// What was observed after `earlier`, a snapshot of the same histogram.
    pub fn since(&self, earlier: &Distribution) -> Distribution {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &(bound, n))| {
                let before = earlier.buckets.get(i).map_or(0, |b| b.1);
                (bound, n.saturating_sub(before))
            })
            .collect();
        Distribution {
            buckets,
            sum_secs: (self.sum_secs - earlier.sum_secs).max(0.0),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// Adds the observations of `other`, a histogram with the same bounds.
    pub(crate) fn add(&mut self, other: &Distribution) {
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.sum_secs += other.sum_secs;
        self.count += other.count;
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
        let d = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(d.sum_secs, d.count, &d.buckets, None)
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
        let d = t.snapshot();
        let (buckets, sum, count) = (d.buckets, d.sum_secs, d.count);
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
        let d = t.snapshot();
        assert_eq!(d.count, 60_000);
        assert!((d.sum_secs - 15.0).abs() < 1e-6, "{}", d.sum_secs);
    }

    #[test]
    fn every_set_of_bounds_fits_the_shards_and_rises() {
        for bounds in [DURATIONS, AGES] {
            assert!(bounds.len() < MAX_BUCKETS);
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn age_buckets_resolve_milliseconds() {
        let t = Timings::ages();
        for us in [100, 400, 900, 4_000, 4_900, 70_000_000] {
            t.observe(Duration::from_micros(us));
        }
        let d = t.snapshot();
        let at = |bound: f64| d.buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!(
            (at(0.00025), at(0.0005), at(0.001), at(0.005), at(300.0)),
            (1, 1, 1, 2, 1)
        );
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket_as_prometheus_does() {
        let t = Timings::ages();
        // 100 observations between 1 and 2 ms, 900 between 2 and 3 ms.
        for _ in 0..100 {
            t.observe(Duration::from_micros(1_500));
        }
        for _ in 0..900 {
            t.observe(Duration::from_micros(2_500));
        }
        let d = t.snapshot();
        let ms = |q| d.quantile(q).unwrap().as_secs_f64() * 1e3;
        // Rank 50 of the 100 in (1, 2]: halfway.
        assert!((ms(0.05) - 1.5).abs() < 1e-9, "{}", ms(0.05));
        // Rank 550: 450 of the 900 in (2, 3].
        assert!((ms(0.55) - 2.5).abs() < 1e-9, "{}", ms(0.55));
        assert!((ms(1.0) - 3.0).abs() < 1e-9, "{}", ms(1.0));
        assert_eq!(d.quantile(1.5), None);
        assert_eq!(Timings::ages().snapshot().quantile(0.5), None);
        // Beyond the last bound: the last bound, as histogram_quantile says.
        let far = Timings::ages();
        far.observe(Duration::from_secs(1_000));
        assert_eq!(
            far.snapshot().quantile(0.99),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn since_keeps_what_came_after_the_earlier_snapshot() {
        let t = Timings::ages();
        t.observe(Duration::from_secs(20));
        let before = t.snapshot();
        t.observe(Duration::from_micros(800));
        let after = t.snapshot().since(&before);
        assert_eq!(after.count(), 1);
        assert!((after.sum().as_secs_f64() - 0.0008).abs() < 1e-9);
        assert_eq!(after.quantile(1.0), Some(Duration::from_millis(1)));
        let mut both = after.clone();
        both.add(&before);
        let now = t.snapshot();
        assert_eq!((both.buckets, both.count), (now.buckets, now.count));
    }
}
