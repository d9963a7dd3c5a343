//! What a commit holds ([`CommitEntry`]) and when tracked offsets are committed
//! ([`CommitSchedule`]).
//!
//! [`OffsetTracker`](crate::OffsetTracker) speaks "next offset to consume", and so does a
//! [`CommitEntry`]; the Kafka adapter's `commit_list` (in `kafka::consumer`) is the one place
//! that hands it to rdkafka.

use std::time::{Duration, Instant};

/// One partition's commit: the next offset to consume, and the offset map (see
/// [`crate::offset_map`]) as metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    pub metadata: String,
}

/// Decides when the periodic asynchronous commit is due.
#[derive(Debug)]
pub(crate) struct CommitSchedule {
    interval: Duration,
    last: Instant,
}

impl CommitSchedule {
    pub fn new(interval: Duration) -> Self {
        CommitSchedule {
            interval,
            last: Instant::now(),
        }
    }

    /// `true` (and restarts the interval) when a periodic commit is due at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        if now.duration_since(self.last) >= self.interval {
            self.last = now;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_fires_once_per_interval() {
        let start = Instant::now();
        let mut s = CommitSchedule {
            interval: Duration::from_secs(1),
            last: start,
        };
        assert!(!s.due(start + Duration::from_millis(500)));
        assert!(s.due(start + Duration::from_millis(1000)));
        assert!(!s.due(start + Duration::from_millis(1500)));
        assert!(s.due(start + Duration::from_millis(2000)));
    }
}
