//! Record ages: the [`Stage`]s at which a record's age (now minus its Kafka timestamp) is
//! measured, and the wall clock they are read from.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime};

/// How long a thread maps `quanta` instants to wall time from one reading of the system clock.
/// `quanta` counts CPU cycles at a rate it calibrates at start, which can be off by 100 ppm and
/// more (seen here: 0.1 ms a second), and NTP slews the wall clock by up to 500 ppm: re-reading
/// every 50 ms bounds the error to a few µs, far below the buckets' 0.25 ms, and costs 20
/// system clock reads per thread and second.
const ANCHOR_FOR: Duration = Duration::from_millis(50);

/// Where in its way through a consumer a record's age is measured, the `stage` label of
/// `sluicegate_record_age_seconds`. The age at [`Finished`](Stage::Finished) is
/// `sluicegate_end_to_end_latency_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Taken from librdkafka by the poll loop.
    Polled,
    /// The first handler call of the record began.
    HandlerStart,
    /// The record's last handler call returned (the one that settled it: success, skip, or
    /// the last failure before it is dead-lettered or the partition stops).
    HandlerEnd,
    /// Finished (handled, dead-lettered and acknowledged, or skipped), so its offset may be
    /// committed.
    Finished,
}

impl Stage {
    /// Every stage, in the order a record goes through them.
    pub const ALL: [Stage; 4] = [
        Stage::Polled,
        Stage::HandlerStart,
        Stage::HandlerEnd,
        Stage::Finished,
    ];

    /// Its name, as in the `stage` label (`polled`, `handler_start`, `handler_end`,
    /// `finished`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Polled => "polled",
            Stage::HandlerStart => "handler_start",
            Stage::HandlerEnd => "handler_end",
            Stage::Finished => "finished",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wall time of `at`, from this thread's anchor (a `quanta` instant and the system time
/// read together), re-read once it is [`ANCHOR_FOR`] old. A `quanta` reading costs a fraction
/// of a system clock reading, and the handler's instants are read anyway.
pub(crate) fn wall(at: quanta::Instant) -> SystemTime {
    thread_local!(static ANCHOR: Cell<Option<(quanta::Instant, SystemTime)>> = const { Cell::new(None) });
    ANCHOR.with(|anchor| {
        let (q, sys) = match anchor.get() {
            Some((q, sys)) if at.saturating_duration_since(q) < ANCHOR_FOR => (q, sys),
            _ => {
                let fresh = anchor_now();
                anchor.set(Some(fresh));
                fresh
            }
        };
        match at.checked_duration_since(q) {
            Some(after) => sys + after,
            None => sys - q.duration_since(at),
        }
    })
}

/// A `quanta` instant and the system time of the same moment: the system clock read between
/// two `quanta` readings, taken at their midpoint, again if the thread was interrupted between
/// them (which would shift every age of the next second).
fn anchor_now() -> (quanta::Instant, SystemTime) {
    let mut best = None;
    for _ in 0..3 {
        let before = quanta::Instant::now();
        let sys = SystemTime::now();
        let gap = quanta::Instant::now().duration_since(before);
        let at = (before + gap / 2, sys);
        if gap < MAX_ANCHOR_GAP {
            return at;
        }
        best = match best {
            Some((g, _)) if g <= gap => best,
            _ => Some((gap, at)),
        };
    }
    best.map(|(_, at)| at).expect("three tries")
}

/// The longest two `quanta` readings around a system clock reading may be apart for an anchor.
const MAX_ANCHOR_GAP: Duration = Duration::from_micros(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quanta_instants_map_to_the_system_clock() {
        for _ in 0..3 {
            let before = SystemTime::now();
            let at = wall(quanta::Instant::now());
            let after = SystemTime::now();
            // Within a millisecond of the system clock read around it.
            assert!(at + Duration::from_millis(1) >= before, "{at:?} {before:?}");
            assert!(at <= after + Duration::from_millis(1), "{at:?} {after:?}");
        }
        // An instant read before the anchor maps to before it.
        let early = quanta::Instant::now();
        let later = wall(quanta::Instant::now() + Duration::from_millis(5));
        assert!(wall(early) < later);
    }

    #[test]
    fn stages_are_named_as_their_label_in_order() {
        let names: Vec<_> = Stage::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["polled", "handler_start", "handler_end", "finished"]
        );
        assert!(Stage::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
