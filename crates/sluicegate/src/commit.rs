//! When tracked offsets are committed, and the one adapter that hands them to rdkafka.
//!
//! [`OffsetTracker`](crate::OffsetTracker) speaks "next offset to consume"; so do rdkafka's
//! `commit(list)` and `store_offsets(list)` (while `store_offset_from_message` adds one).
//! Everything committed goes through [`commit_list`], so that translation lives here only.

use std::time::{Duration, Instant};

use rdkafka::{Offset, TopicPartitionList};

/// One partition's commit: the next offset to consume, and the offset map (see
/// [`crate::offset_map`]) as metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    pub metadata: String,
}

/// Builds the list to commit.
pub(crate) fn commit_list(entries: &[CommitEntry]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(entries.len());
    for e in entries {
        let mut elem = list.add_partition(&e.topic, e.partition);
        elem.set_offset(Offset::Offset(e.next))
            .expect("a concrete offset is always accepted");
        if !e.metadata.is_empty() {
            elem.set_metadata(&e.metadata);
        }
    }
    list
}

/// Reads what a list returned by rdkafka (for example from `committed_offsets`) holds,
/// leaving out partitions without a concrete offset.
pub(crate) fn read_list(list: &TopicPartitionList) -> Vec<CommitEntry> {
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(next) => Some(CommitEntry {
                topic: e.topic().to_string(),
                partition: e.partition(),
                next,
                metadata: e.metadata().to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// A list naming partitions only, for pause, resume and look-ups.
pub(crate) fn partitions<'a>(tps: impl IntoIterator<Item = (&'a str, i32)>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in tps {
        list.add_partition(topic, partition);
    }
    list
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
    fn offsets_and_metadata_round_trip_unchanged_through_the_list() {
        let entry = |topic: &str, partition, next, metadata: &str| CommitEntry {
            topic: topic.into(),
            partition,
            next,
            metadata: metadata.into(),
        };
        let entries = vec![
            entry("a", 0, 10, "sg1:10:2"),
            entry("a", 3, 0, ""),
            entry("b", 1, 7, ""),
        ];
        assert_eq!(read_list(&commit_list(&entries)), entries);
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
