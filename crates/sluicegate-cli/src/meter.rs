//! [`Meter`]: counts messages and bytes from many threads and times the window from the first
//! message to the last, with the process CPU time used in between.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cpu::process_cpu_secs;

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
        }
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
