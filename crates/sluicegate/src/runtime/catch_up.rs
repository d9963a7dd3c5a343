//! Catching up: tracking whether a reader that starts at the beginning of its partitions
//! ([`ConsumerBuilder::read_from_beginning`](crate::ConsumerBuilder::read_from_beginning)) has
//! handled every record up to the log ends it saw at start (the [`CatchUp`](crate::CatchUp) it reports).

use std::collections::BTreeMap;

use crate::status::{Progress, TopicPartition};

/// What the poll thread knows of one partition, to judge whether it is caught up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seen {
    /// The offset tracker's watermark: every record received below it is finished, and it
    /// is one past the last received record or the first unfinished one.
    pub watermark: Option<i64>,
    /// Records received and not finished.
    pub unfinished: usize,
    /// librdkafka's position: one past the last record *or transaction marker* polled
    /// (markers are never handed over, but move the position).
    pub position: Option<i64>,
}

/// Whether a partition whose log ended at `end` at start is caught up.
///
/// Offsets are not contiguous: compaction removes records, transaction markers (and, with
/// `read_committed`, aborted records) take offsets no handler sees. So the end is never waited
/// for as a record: either a record at or past it was received and everything before it is
/// finished (the watermark is at or past the end), or nothing is unfinished and librdkafka's
/// position (which moves past markers) is at or past the end.
pub(crate) fn caught_up(end: i64, seen: Seen) -> bool {
    seen.watermark.is_some_and(|w| w >= end)
        || (seen.unfinished == 0 && seen.position.is_some_and(|p| p >= end))
}

/// The targets of a reader's catch-up, held by the poll thread.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    /// The log end seen at start of each partition not yet caught up.
    ends: BTreeMap<TopicPartition, i64>,
    /// Where each of them started (its log start), for progress before anything is handled.
    starts: BTreeMap<TopicPartition, i64>,
}

impl Targets {
    /// Targets from `(partition, log start, log end)`; partitions with nothing between start
    /// and end are caught up already.
    pub fn new(watermarks: impl IntoIterator<Item = (TopicPartition, i64, i64)>) -> Self {
        let mut t = Targets::default();
        for (tp, low, high) in watermarks {
            if high > low {
                t.starts.insert(tp.clone(), low);
                t.ends.insert(tp, high);
            }
        }
        t
    }

    pub fn is_done(&self) -> bool {
        self.ends.is_empty()
    }

    /// The partitions still behind, with their log ends.
    pub fn behind(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.ends.iter().map(|(tp, end)| (tp, *end))
    }

    /// Drops the partitions `seen` says are caught up; returns whether any was.
    pub fn update(&mut self, mut seen: impl FnMut(&TopicPartition) -> Seen) -> bool {
        let before = self.ends.len();
        self.ends.retain(|tp, end| !caught_up(*end, seen(tp)));
        let starts = &mut self.starts;
        starts.retain(|tp, _| self.ends.contains_key(tp));
        self.ends.len() != before
    }

    /// Each partition still behind with its progress, its position being the watermark where
    /// known, else where it started.
    pub fn progress(
        &self,
        mut watermark: impl FnMut(&TopicPartition) -> Option<i64>,
    ) -> BTreeMap<TopicPartition, Progress> {
        self.ends
            .iter()
            .map(|(tp, end)| {
                let position = watermark(tp)
                    .or_else(|| self.starts.get(tp).copied())
                    .unwrap_or(0);
                (
                    tp.clone(),
                    Progress {
                        position,
                        end: *end,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(watermark: Option<i64>, unfinished: usize, position: Option<i64>) -> Seen {
        Seen {
            watermark,
            unfinished,
            position,
        }
    }

    #[test]
    fn a_partition_is_caught_up_once_everything_below_its_end_is_finished() {
        // Records 0..10, end 10: the last one finished.
        assert!(caught_up(10, seen(Some(10), 0, Some(10))));
        // The last one still in flight: the watermark stops at it.
        assert!(!caught_up(10, seen(Some(9), 1, Some(10))));
        // Nothing received yet.
        assert!(!caught_up(10, seen(None, 0, None)));
    }

    #[test]
    fn gaps_left_by_compaction_are_not_waited_for() {
        // Offsets 3..=8 compacted away: 0, 1, 2, 9 received and finished; end 10.
        assert!(caught_up(10, seen(Some(10), 0, Some(10))));
        // Before 9 arrives the position is 3 and nothing is unfinished: not there yet.
        assert!(!caught_up(10, seen(Some(3), 0, Some(3))));
    }

    #[test]
    fn a_transaction_marker_at_the_end_counts_through_the_position() {
        // Records 0..=8, the commit marker at 9, end 10: the last record handled leaves the
        // watermark at 9, but the position moved past the marker.
        assert!(caught_up(10, seen(Some(9), 0, Some(10))));
        // The marker read, the last record still in flight.
        assert!(!caught_up(10, seen(Some(8), 1, Some(10))));
        // An aborted transaction at the end (its records hidden) is the same.
        assert!(caught_up(10, seen(Some(5), 0, Some(10))));
    }

    #[test]
    fn records_past_the_end_finish_the_catch_up_while_later_ones_are_in_flight() {
        // End 10; 10 and 11 arrived since, 11 still in flight: everything below 11 finished.
        assert!(caught_up(10, seen(Some(11), 1, Some(12))));
    }

    #[test]
    fn empty_partitions_are_caught_up_from_the_start() {
        let tp = |p| TopicPartition::new("t", p);
        let targets = Targets::new([(tp(0), 0, 0), (tp(1), 7, 7), (tp(2), 0, 5)]);
        assert!(!targets.is_done());
        assert_eq!(targets.behind().collect::<Vec<_>>(), vec![(&tp(2), 5)]);
        assert!(Targets::new([(tp(0), 3, 3)]).is_done());
        assert!(Targets::new([]).is_done());
    }

    #[test]
    fn progress_shows_the_start_until_something_is_handled() {
        let tp = TopicPartition::new("t", 0);
        let mut targets = Targets::new([(tp.clone(), 4, 20)]);
        let p = targets.progress(|_| None);
        assert_eq!(
            p[&tp],
            Progress {
                position: 4,
                end: 20
            }
        );
        assert_eq!(p[&tp].remaining(), 16);
        let p = targets.progress(|_| Some(12));
        assert_eq!(p[&tp].to_string(), "at offset 12 of 20");
        assert!(!targets.update(|_| seen(Some(12), 0, Some(12))));
        assert!(targets.update(|_| seen(Some(20), 0, Some(20))));
        assert!(targets.is_done());
    }
}
