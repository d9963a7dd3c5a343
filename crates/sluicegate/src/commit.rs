//! When tracked offsets are committed, and the one adapter that hands them to rdkafka.
//!
//! [`OffsetTracker`](crate::OffsetTracker) speaks "next offset to consume"; so do rdkafka's
//! `commit(list)` and `store_offsets(list)` (while `store_offset_from_message` adds one).
//! Everything committed goes through [`partition_list`], so that translation lives here only.

use std::time::{Duration, Instant};

use rdkafka::{Offset, TopicPartitionList};

/// Builds the list to commit from `(topic, partition, next offset to consume)` entries.
pub(crate) fn partition_list<'a>(
    entries: impl IntoIterator<Item = (&'a str, i32, i64)>,
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition, next) in entries {
        list.add_partition(topic, partition)
            .set_offset(Offset::Offset(next))
            .expect("a concrete offset is always accepted");
    }
    list
}

/// Reads `(topic, partition, next offset to consume)` back from a list rdkafka returned,
/// leaving out partitions without a concrete offset.
pub(crate) fn entries(list: &TopicPartitionList) -> Vec<(String, i32, i64)> {
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
            _ => None,
        })
        .collect()
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
    fn offsets_round_trip_unchanged_through_the_partition_list() {
        let list = partition_list([("a", 0, 10), ("a", 3, 0), ("b", 1, 7)]);
        assert_eq!(
            entries(&list),
            vec![("a".into(), 0, 10), ("a".into(), 3, 0), ("b".into(), 1, 7)]
        );
    }

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
