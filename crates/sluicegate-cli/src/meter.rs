//! [`Meter`]: counts messages and bytes from many threads and times the window from the first
//! message to the last, with the process CPU time used in between and each message's
//! end-to-end latency.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use crate::cpu::process_cpu_secs;

/// Latency histograms, one per shard, so handler threads rarely wait for each other.
const LATENCY_SHARDS: usize = 16;

/// A new latency histogram in microseconds, from 1 µs to one hour at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Microseconds from a record's timestamp (ms since the epoch) to now; 0 if it is in the future.
pub fn micros_since(timestamp_ms: i64) -> u64 {
    now_micros()
        .saturating_sub(timestamp_ms.saturating_mul(1_000))
        .max(0) as u64
}

thread_local! {
    /// This thread's latency shard.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % LATENCY_SHARDS
    };
}

/// Counts finished messages. Cheap enough to call once per message from every handler.
pub struct Meter {
    expected: u64,
    base: Instant,
    count: AtomicU64,
    bytes: AtomicU64,
    /// Nanoseconds after `base` of the first and the latest message (`u64::MAX`, 0: none yet).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    /// Process CPU seconds at the first and at the `expected`-th message.
    cpu: Mutex<(Option<f64>, Option<f64>)>,
    complete: Notify,
    latency_us: Vec<Mutex<Histogram<u64>>>,
    /// Records written before this (ms since the epoch) are left out of the latencies.
    latency_from_ms: AtomicI64,
    /// Records left out of the latencies that way.
    latency_excluded: AtomicU64,
}

/// What a [`Meter`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measurement {
    pub messages: u64,
    pub bytes: u64,
    /// From the first message to the last.
    pub secs: f64,
    /// CPU seconds (user + system, whole process) from the first to the `expected`-th message.
    pub cpu_secs: Option<f64>,
    /// From the meter's creation to the first message.
    pub first_message_secs: Option<f64>,
}

impl Meter {
    /// A meter that signals [`complete`](Self::complete) once `expected` messages are counted.
    pub fn new(expected: u64) -> Self {
        Meter {
            expected,
            base: Instant::now(),
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            cpu: Mutex::new((None, None)),
            complete: Notify::new(),
            latency_us: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
            latency_from_ms: AtomicI64::new(i64::MIN),
            latency_excluded: AtomicU64::new(0),
        }
    }

    /// Leaves records written before `timestamp_ms` (a warm-up) out of the latencies; they
    /// still count as messages.
    pub fn measure_latency_from(&self, timestamp_ms: i64) {
        self.latency_from_ms.store(timestamp_ms, Relaxed);
    }

    /// Counts one finished message of `bytes` bytes whose record was written at `timestamp_ms`
    /// (ms since the epoch), and records its end-to-end latency; `true` if it was the
    /// `expected`-th.
    pub fn record_at(&self, bytes: u64, timestamp_ms: Option<i64>) -> bool {
        match timestamp_ms {
            Some(ts) if ts >= self.latency_from_ms.load(Relaxed) => {
                let shard = SHARD.with(|s| *s);
                if let Ok(mut h) = self.latency_us[shard].lock() {
                    h.saturating_record(micros_since(ts));
                }
            }
            Some(_) => {
                self.latency_excluded.fetch_add(1, Relaxed);
            }
            None => {}
        }
        self.record(bytes)
    }

    /// Messages left out of the latencies as written during the warm-up (see
    /// [`measure_latency_from`](Self::measure_latency_from)).
    pub fn latency_excluded(&self) -> u64 {
        self.latency_excluded.load(Relaxed)
    }

    /// The end-to-end latencies recorded by [`record_at`](Self::record_at), in microseconds.
    pub fn latency_us(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for shard in &self.latency_us {
            if let Ok(h) = shard.lock() {
                // Same bounds on both sides: adding cannot fail.
                let _ = all.add(&*h);
            }
        }
        all
    }

    /// Counts one finished message of `bytes` bytes; `true` if it was the `expected`-th.
    pub fn record(&self, bytes: u64) -> bool {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        self.bytes.fetch_add(bytes, Relaxed);
        let now = self.base.elapsed().as_nanos() as u64;
        self.first_ns.fetch_min(now, Relaxed);
        self.last_ns.fetch_max(now, Relaxed);
        if n == 1 {
            self.cpu_mark(|c, v| c.0 = v);
        }
        if n == self.expected {
            self.cpu_mark(|c, v| c.1 = v);
            self.complete.notify_one();
        }
        n == self.expected
    }

    fn cpu_mark(&self, set: impl FnOnce(&mut (Option<f64>, Option<f64>), Option<f64>)) {
        let now = process_cpu_secs();
        if let Ok(mut cpu) = self.cpu.lock() {
            set(&mut cpu, now);
        }
    }

    /// Messages counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Whether `expected` messages were counted.
    pub fn is_complete(&self) -> bool {
        self.count() >= self.expected
    }

    /// Resolves once `expected` messages were counted (at once if they already were).
    pub async fn complete(&self) {
        if !self.is_complete() {
            self.complete.notified().await;
        }
    }

    /// The measurement so far.
    pub fn measurement(&self) -> Measurement {
        let (first, last) = (self.first_ns.load(Relaxed), self.last_ns.load(Relaxed));
        let secs = if first == u64::MAX {
            0.0
        } else {
            Duration::from_nanos(last.saturating_sub(first)).as_secs_f64()
        };
        let cpu = self.cpu.lock().map(|c| *c).unwrap_or_default();
        Measurement {
            messages: self.count(),
            bytes: self.bytes.load(Relaxed),
            secs,
            cpu_secs: match cpu {
                (Some(a), Some(b)) => Some((b - a).max(0.0)),
                _ => None,
            },
            first_message_secs: (first != u64::MAX)
                .then(|| Duration::from_nanos(first).as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_and_bytes_and_flags_the_last() {
        let m = Meter::new(3);
        assert!(!m.record(10));
        assert!(!m.record(10));
        assert!(m.record(5));
        let r = m.measurement();
        assert_eq!((r.messages, r.bytes), (3, 25));
        assert!(r.secs >= 0.0);
        if cfg!(target_os = "linux") {
            assert!(r.cpu_secs.is_some());
        }
    }

    #[test]
    fn an_empty_meter_measures_nothing() {
        let r = Meter::new(3).measurement();
        assert_eq!((r.messages, r.secs, r.cpu_secs), (0, 0.0, None));
        assert_eq!(r.first_message_secs, None);
    }

    #[test]
    fn latencies_from_every_thread_are_merged() {
        let m = std::sync::Arc::new(Meter::new(400));
        let ts = now_micros() / 1_000 - 2_000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        m.record_at(1, Some(ts));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(m.is_complete());
        let h = m.latency_us();
        assert_eq!(h.len(), 400);
        // Written 2 s ago, give or take the test's own run time.
        assert!(
            (2_000_000..3_000_000).contains(&h.value_at_quantile(0.5)),
            "{}",
            h.value_at_quantile(0.5)
        );
        // Without a timestamp, or written during the warm-up, there is nothing to measure.
        let m = Meter::new(2);
        m.measure_latency_from(ts + 1);
        m.record_at(1, Some(ts));
        assert!(m.latency_us().is_empty());
        assert_eq!(m.latency_excluded(), 1);
        let m = Meter::new(1);
        m.record_at(1, None);
        assert!(m.latency_us().is_empty());
    }

    #[test]
    fn a_timestamp_in_the_future_is_zero_latency() {
        assert_eq!(micros_since(now_micros() / 1_000 + 60_000), 0);
    }

    #[tokio::test]
    async fn complete_resolves_even_when_awaited_late() {
        let m = Meter::new(1);
        m.record(1);
        tokio::time::timeout(Duration::from_secs(5), m.complete())
            .await
            .expect("already complete");
    }
}
