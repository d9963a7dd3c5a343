//! [`CircuitBreaker`]: stops calling a failing downstream for a cool-down, then probes it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// When to stop calling the handler because its downstream is failing.
///
/// The breaker *opens* after `consecutive_failures` failed attempts in a row, or when at least
/// `min_calls` attempts in the last `window` failed at `failure_rate` or more. While open, no
/// handler is called and every partition is paused (polling and heartbeats go on). After
/// `cool_down` it is *half-open*: one probe message is handled; if it succeeds the breaker
/// closes, if it fails the breaker opens for another cool-down.
///
/// Only failures that retrying may fix count (retryable errors, panics and timeouts): a
/// permanent or decode error says something about one message, not about the downstream.
///
/// ```
/// use std::time::Duration;
/// use sluicegate::policy::CircuitBreaker;
///
/// let breaker = CircuitBreaker::default()
///     .with_consecutive_failures(5)
///     .with_cool_down(Duration::from_secs(10));
/// # let _ = breaker;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitBreaker {
    /// Failed attempts in a row that open the breaker (20 by default).
    pub consecutive_failures: u32,
    /// The fraction of failed attempts within `window` that opens the breaker (0.5 by default).
    pub failure_rate: f64,
    /// The span the failure rate is measured over (30 s by default).
    pub window: Duration,
    /// The fewest attempts within `window` for the rate to count (20 by default).
    pub min_calls: u32,
    /// How long the breaker stays open before it probes (30 s by default).
    pub cool_down: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            consecutive_failures: 20,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 20,
            cool_down: Duration::from_secs(30),
        }
    }
}

impl CircuitBreaker {
    /// Opens after this many failed attempts in a row: at least 1 (0 is refused when the
    /// consumer is built).
    pub fn with_consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Opens when `rate` (0 to 1) of at least `min_calls` (at least 1) attempts within
    /// `window` failed. Values outside those bounds are refused when the consumer is built.
    pub fn with_failure_rate(mut self, rate: f64, window: Duration, min_calls: u32) -> Self {
        self.failure_rate = rate;
        self.window = window;
        self.min_calls = min_calls;
        self
    }

    /// Stays open this long before probing.
    pub fn with_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }
}

/// The state of a [`CircuitBreaker`], as shown in
/// [`ConsumerStatus::circuit`](crate::ConsumerStatus::circuit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Handlers are called as usual.
    #[default]
    Closed,
    /// Too many failures: no handler is called and partitions are paused until the cool-down
    /// ends.
    Open,
    /// The cool-down ended: one probe is handled to see whether the downstream recovered.
    HalfOpen,
}

impl CircuitState {
    /// A stable lower-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// What the breaker lets a lane do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    Go,
    Probe,
    WaitUntil(Instant),
    WaitForProbe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker's decisions, without clocks or waiting: times are passed in.
#[derive(Debug)]
struct Logic {
    config: CircuitBreaker,
    phase: Phase,
    consecutive: u32,
    /// Attempts in the window, as `(bucket start, calls, failures)`, oldest first; ten buckets
    /// per window keep memory constant whatever the message rate.
    buckets: VecDeque<(Instant, u32, u32)>,
}

impl Logic {
    fn new(config: CircuitBreaker) -> Self {
        Logic {
            config,
            phase: Phase::Closed,
            consecutive: 0,
            buckets: VecDeque::new(),
        }
    }

    fn state(&self, now: Instant) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now < until => CircuitState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn admit(&mut self, now: Instant) -> Admit {
        match self.phase {
            Phase::Closed => Admit::Go,
            Phase::Open { until } if now < until => Admit::WaitUntil(until),
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                self.phase = Phase::HalfOpen { probing: true };
                Admit::Probe
            }
            Phase::HalfOpen { probing: true } => Admit::WaitForProbe,
        }
    }

    /// Records an attempt's result; `probe` when it was the half-open probe.
    fn record(&mut self, now: Instant, probe: bool, failed: bool) {
        if probe {
            self.buckets.clear();
            self.consecutive = 0;
            self.phase = if failed {
                Phase::Open {
                    until: now + self.config.cool_down,
                }
            } else {
                Phase::Closed
            };
            return;
        }
        if self.phase != Phase::Closed {
            return; // A call admitted before the breaker opened.
        }
        self.consecutive = if failed { self.consecutive + 1 } else { 0 };
        let span = self.config.window / 10;
        while self
            .buckets
            .front()
            .is_some_and(|(start, ..)| now.saturating_duration_since(*start) > self.config.window)
        {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((start, calls, failures)) if now.saturating_duration_since(*start) < span => {
                *calls += 1;
                *failures += u32::from(failed);
            }
            _ => self.buckets.push_back((now, 1, u32::from(failed))),
        }
        let (calls, failures) = self
            .buckets
            .iter()
            .fold((0, 0), |(c, f), (_, bc, bf)| (c + bc, f + bf));
        let rate_tripped = calls >= self.config.min_calls
            && f64::from(failures) >= self.config.failure_rate * f64::from(calls);
        if self.consecutive >= self.config.consecutive_failures || rate_tripped {
            self.phase = Phase::Open {
                until: now + self.config.cool_down,
            };
            self.consecutive = 0;
            self.buckets.clear();
        }
    }

    /// A probe ended without a result (its message was revoked): let another one go.
    fn release_probe(&mut self) {
        if self.phase == (Phase::HalfOpen { probing: true }) {
            self.phase = Phase::HalfOpen { probing: false };
        }
    }
}

/// A breaker shared by a consumer's lanes (which wait on it) and its poll loop (which pauses
/// partitions while it is open).
#[derive(Debug)]
pub(crate) struct Breaker {
    logic: Mutex<Logic>,
    changed: Notify,
}

/// Permission to call the handler once; report the result with [`Breaker::record`].
pub(crate) struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    pub fn new(config: CircuitBreaker) -> Arc<Self> {
        Arc::new(Breaker {
            logic: Mutex::new(Logic::new(config)),
            changed: Notify::new(),
        })
    }

    fn logic(&self) -> std::sync::MutexGuard<'_, Logic> {
        self.logic.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> CircuitState {
        self.logic().state(Instant::now())
    }

    /// Waits until the breaker lets a handler call go.
    pub async fn admit(&self) -> Ticket<'_> {
        loop {
            let changed = self.changed.notified();
            let admit = self.logic().admit(Instant::now());
            match admit {
                Admit::Go | Admit::Probe => {
                    return Ticket {
                        breaker: self,
                        probe: admit == Admit::Probe,
                        recorded: false,
                    }
                }
                Admit::WaitUntil(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = changed => {}
                    }
                }
                Admit::WaitForProbe => changed.await,
            }
        }
    }

    /// Records the result of the call `ticket` allowed.
    pub fn record(&self, mut ticket: Ticket<'_>, failed: bool) {
        ticket.recorded = true;
        let changed = {
            let mut logic = self.logic();
            let before = logic.phase;
            logic.record(Instant::now(), ticket.probe, failed);
            before != logic.phase
        };
        if changed {
            self.changed.notify_waiters();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.logic().release_probe();
            self.breaker.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CircuitBreaker {
        CircuitBreaker::default()
            .with_consecutive_failures(3)
            .with_failure_rate(0.5, Duration::from_secs(10), 10)
            .with_cool_down(Duration::from_secs(5))
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let t0 = Instant::now();
        let mut l = Logic::new(config());
        for _ in 0..2 {
            l.record(t0, false, true);
        }
        assert_eq!(l.state(t0), CircuitState::Closed);
        l.record(t0, false, true);
        assert_eq!(l.state(t0), CircuitState::Open);
        assert_eq!(l.admit(t0), Admit::WaitUntil(t0 + Duration::from_secs(5)));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.state(later), CircuitState::HalfOpen);
        assert_eq!(l.admit(later), Admit::Probe);
        assert_eq!(l.admit(later), Admit::WaitForProbe, "one probe at a time");
        l.record(later, true, false);
        assert_eq!(l.state(later), CircuitState::Closed);
        assert_eq!(l.admit(later), Admit::Go);
    }

    #[test]
    fn a_failed_probe_opens_for_another_cool_down() {
        let t0 = Instant::now();
        let mut l = Logic::new(config());
        (0..3).for_each(|_| l.record(t0, false, true));
        let later = t0 + Duration::from_secs(6);
        assert_eq!(l.admit(later), Admit::Probe);
        l.record(later, true, true);
        assert_eq!(l.state(later), CircuitState::Open);
        assert_eq!(
            l.admit(later),
            Admit::WaitUntil(later + Duration::from_secs(5))
        );
    }

    #[test]
    fn successes_in_between_keep_it_closed_until_the_rate_trips() {
        let t0 = Instant::now();
        let mut l = Logic::new(config());
        // Alternating results never make 3 in a row, but half of 10 calls failing does.
        for i in 0..9 {
            l.record(t0 + Duration::from_millis(i), false, i % 2 == 0);
            assert_eq!(l.state(t0), CircuitState::Closed, "call {i}");
        }
        l.record(t0 + Duration::from_millis(9), false, true);
        assert_eq!(l.state(t0 + Duration::from_millis(9)), CircuitState::Open);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let t0 = Instant::now();
        let mut l = Logic::new(config().with_consecutive_failures(100));
        (0..9).for_each(|_| l.record(t0, false, true));
        // Twenty seconds later those nine are outside the 10 s window.
        let later = t0 + Duration::from_secs(20);
        for _ in 0..9 {
            l.record(later, false, false);
        }
        l.record(later, false, true);
        assert_eq!(l.state(later), CircuitState::Closed);
    }

    #[test]
    fn an_abandoned_probe_lets_another_one_go() {
        let t0 = Instant::now();
        let mut l = Logic::new(config());
        (0..3).for_each(|_| l.record(t0, false, true));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.admit(later), Admit::Probe);
        l.release_probe();
        assert_eq!(l.admit(later), Admit::Probe);
    }
}
