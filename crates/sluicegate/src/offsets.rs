//! [`OffsetTracker`]: which offsets of one partition are finished, and what may be committed.
//!
//! Pure logic, no I/O. It speaks only "next offset to consume", the value Kafka stores as a
//! committed offset; the Kafka adapter (`kafka::consumer`) alone translates to rdkafka.

use std::collections::VecDeque;

/// Tracks the offsets of one partition from the moment they are received until they are
/// finished, and answers the *watermark*: one past the highest offset such that it and every
/// offset received before it are finished. That watermark is the only offset ever committed.
///
/// Offsets may finish in any order. Offsets that never arrive (removed by compaction, or taken
/// by transaction markers) are simply never tracked, so they cannot stall the watermark.
///
/// ```
/// use sluicegate::OffsetTracker;
///
/// let mut t = OffsetTracker::new();
/// for offset in [10, 11, 13] {           // 12 was compacted away
///     assert!(t.track(offset));
/// }
/// t.finish(11);
/// assert_eq!(t.watermark(), Some(10));   // 10 is still in flight
/// t.finish(10);
/// assert_eq!(t.watermark(), Some(13));   // 13 is next to consume
/// t.finish(13);
/// assert_eq!(t.watermark(), Some(14));
/// ```
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// Offsets received and not yet passed by the watermark, increasing, with their state.
    window: VecDeque<Entry>,
    /// One past the highest offset ever tracked.
    next: Option<i64>,
    unfinished: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    finished: bool,
}

impl OffsetTracker {
    /// An empty tracker: nothing received, nothing to commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` was received for processing.
    ///
    /// Returns `false`, and records nothing, when `offset` is not above every offset tracked
    /// before: the record was already received (for example, re-fetched after a seek), so it is
    /// either in flight or finished, and handling it again would be a duplicate.
    pub fn track(&mut self, offset: i64) -> bool {
        if self.next.is_some_and(|next| offset < next) {
            return false;
        }
        self.window.push_back(Entry {
            offset,
            finished: false,
        });
        self.next = Some(offset + 1);
        self.unfinished += 1;
        true
    }

    /// Marks `offset` finished. Returns `false` when the offset is not tracked or was finished
    /// already; such a call changes nothing.
    pub fn finish(&mut self, offset: i64) -> bool {
        // In partition order, and mostly otherwise, the oldest offset in flight finishes.
        let i = match self.window.front() {
            Some(e) if e.offset == offset => 0,
            _ => match self.window.binary_search_by_key(&offset, |e| e.offset) {
                Ok(i) => i,
                Err(_) => return false,
            },
        };
        let entry = &mut self.window[i];
        if entry.finished {
            return false;
        }
        entry.finished = true;
        self.unfinished -= 1;
        while self.window.front().is_some_and(|e| e.finished) {
            self.window.pop_front();
        }
        true
    }

    /// The next offset to consume after every finished offset whose predecessors are all
    /// finished: the offset that may be committed. `None` until an offset was tracked.
    pub fn watermark(&self) -> Option<i64> {
        match self.window.front() {
            Some(e) => Some(e.offset),
            None => self.next,
        }
    }

    /// Offsets tracked and not yet finished.
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// Finished offsets above the watermark, increasing: work done out of order that a commit
    /// alone cannot record.
    pub fn finished_above_watermark(&self) -> impl Iterator<Item = i64> + '_ {
        self.window.iter().filter(|e| e.finished).map(|e| e.offset)
    }
}

/// The version tag of the offset map Sluicegate writes into commit metadata.
const OFFSET_MAP_TAG: &str = "sg1";

/// Encodes `finished` offsets above `watermark` as commit metadata: work finished out of order
/// that the committed offset alone cannot record, so that a restart can skip it (as the
/// Confluent Parallel Consumer does). The text stays within `max_len` bytes by leaving out the
/// highest ranges, which only means they are handled again, never that anything is lost.
///
/// ```
/// use sluicegate::offset_map;
///
/// let meta = offset_map::encode(100, [102, 103, 104, 110], 64);
/// assert_eq!(offset_map::decode(100, &meta), vec![102, 103, 104, 110]);
/// // Metadata written with another committed offset says nothing about this one.
/// assert!(offset_map::decode(101, &meta).is_empty());
/// ```
pub mod offset_map {
    use super::OFFSET_MAP_TAG;
    use std::fmt::Write;

    /// Encodes increasing `finished` offsets, all above `watermark`, in at most `max_len` bytes.
    pub fn encode(
        watermark: i64,
        finished: impl IntoIterator<Item = i64>,
        max_len: usize,
    ) -> String {
        let mut out = format!("{OFFSET_MAP_TAG}:{watermark}:");
        let head = out.len();
        let mut finished = finished.into_iter().filter(|o| *o > watermark).peekable();
        while let Some(start) = finished.next() {
            let mut end = start;
            while finished.peek() == Some(&(end + 1)) {
                end = finished.next().unwrap_or(end);
            }
            let mut range = String::new();
            let sep = if out.len() > head { "," } else { "" };
            if end == start {
                let _ = write!(range, "{sep}{}", start - watermark);
            } else {
                let _ = write!(range, "{sep}{}-{}", start - watermark, end - watermark);
            }
            if out.len() + range.len() > max_len {
                break;
            }
            out.push_str(&range);
        }
        out
    }

    /// The finished offsets recorded in `metadata`, if it was written together with
    /// `committed`; empty for anything else (other tools' metadata, an older commit, garbage).
    pub fn decode(committed: i64, metadata: &str) -> Vec<i64> {
        parse(committed, metadata).unwrap_or_default()
    }

    fn parse(committed: i64, metadata: &str) -> Option<Vec<i64>> {
        let mut parts = metadata.splitn(3, ':');
        if parts.next()? != OFFSET_MAP_TAG || parts.next()?.parse::<i64>().ok()? != committed {
            return None;
        }
        let mut offsets = Vec::new();
        for range in parts.next()?.split(',').filter(|r| !r.is_empty()) {
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?),
                None => {
                    let a = range.parse::<i64>().ok()?;
                    (a, a)
                }
            };
            if a < 1 || b < a || b - a > 1_000_000 {
                return None;
            }
            offsets.extend((a..=b).map(|d| committed + d));
        }
        Some(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn nothing_tracked_means_nothing_to_commit() {
        assert_eq!(OffsetTracker::new().watermark(), None);
    }

    #[test]
    fn watermark_waits_for_the_oldest_unfinished_offset() {
        let mut t = OffsetTracker::new();
        (0..5).for_each(|o| assert!(t.track(o)));
        assert_eq!(t.watermark(), Some(0));
        t.finish(4);
        t.finish(1);
        assert_eq!(t.watermark(), Some(0));
        t.finish(0);
        assert_eq!(t.watermark(), Some(2));
        assert_eq!(t.finished_above_watermark().collect::<Vec<_>>(), vec![4]);
        t.finish(2);
        t.finish(3);
        assert_eq!(t.watermark(), Some(5));
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn redelivered_and_unknown_offsets_are_refused() {
        let mut t = OffsetTracker::new();
        assert!(t.track(7));
        assert!(!t.track(7));
        assert!(!t.track(3));
        assert!(!t.finish(8));
        assert!(t.finish(7));
        assert!(!t.finish(7), "finishing twice changes nothing");
        assert_eq!(t.watermark(), Some(8));
    }

    /// Offsets received in increasing order with random gaps (compaction, transaction markers).
    fn offsets() -> impl Strategy<Value = Vec<i64>> {
        (0i64..1_000, prop::collection::vec(1i64..4, 1..200)).prop_map(|(start, gaps)| {
            gaps.iter()
                .scan(start, |o, g| {
                    let cur = *o;
                    *o += g;
                    Some(cur)
                })
                .collect()
        })
    }

    proptest! {
        /// For any completion order, the watermark is exactly the smallest unfinished offset
        /// (or one past the last offset), never passes an unfinished offset and never moves back.
        #[test]
        fn watermark_never_passes_an_unfinished_offset(
            offsets in offsets(),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..200),
            interleave in prop::collection::vec(any::<bool>(), 0..400),
        ) {
            let mut t = OffsetTracker::new();
            let mut unfinished = BTreeSet::new();
            let mut received = offsets.iter().copied().peekable();
            let mut order = order.into_iter();
            let mut last = None;
            let mut last_received = None;
            for receive in interleave {
                if receive {
                    if let Some(o) = received.next() {
                        prop_assert!(t.track(o));
                        unfinished.insert(o);
                        last_received = Some(o);
                    }
                } else if let Some(pick) = order.next() {
                    if unfinished.is_empty() { continue; }
                    let o = *unfinished.iter().nth(pick.index(unfinished.len())).unwrap();
                    prop_assert!(t.finish(o));
                    unfinished.remove(&o);
                }
                let w = t.watermark();
                let expected = unfinished.first().copied().or(last_received.map(|o| o + 1));
                prop_assert_eq!(w, expected);
                prop_assert!(w >= last, "watermark moved back: {:?} -> {:?}", last, w);
                prop_assert_eq!(t.unfinished(), unfinished.len());
                last = w;
            }
        }
    }

    /// One step of a partition's life as the runtime drives its tracker.
    #[derive(Debug, Clone)]
    enum Step {
        /// The next fetched record arrives.
        Receive,
        /// A record in flight finishes (picked among those in flight).
        Finish(prop::sample::Index),
        /// The fetch position moves back by up to this many offsets (a seek or a re-fetch).
        SeekBack(u8),
        /// The partition is revoked and assigned again: the watermark is committed, work in
        /// flight is abandoned (its late completions go nowhere) and a new tracker starts at the
        /// committed offset.
        Reassign,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                6 => Just(Step::Receive),
                5 => any::<prop::sample::Index>().prop_map(Step::Finish),
                1 => any::<u8>().prop_map(Step::SeekBack),
                1 => Just(Step::Reassign),
            ],
            0..300,
        )
    }

    proptest! {
        /// Across seeks and revocations, whatever is committed was handled (nothing is skipped)
        /// and a record is handled again only if it was in flight or finished above the
        /// watermark when its partition moved: commits never lose a record.
        #[test]
        fn commits_stay_safe_across_seeks_and_revocations(
            log in offsets(),
            steps in steps(),
        ) {
            let mut tracker = OffsetTracker::new();
            let mut fetch = 0usize; // index into `log` of the next record to fetch
            let mut committed = log[0];
            let mut in_flight: Vec<i64> = Vec::new();
            let mut handled = BTreeSet::new();
            for step in steps {
                match step {
                    Step::Receive => {
                        let Some(&o) = log.get(fetch) else { continue };
                        fetch += 1;
                        if tracker.track(o) {
                            in_flight.push(o);
                        }
                    }
                    Step::Finish(pick) => {
                        if in_flight.is_empty() { continue; }
                        let o = in_flight.swap_remove(pick.index(in_flight.len()));
                        prop_assert!(tracker.finish(o));
                        handled.insert(o);
                    }
                    Step::SeekBack(back) => {
                        fetch = fetch.saturating_sub(back as usize);
                        // Records before the committed offset are never fetched again.
                        fetch = fetch.max(log.partition_point(|&o| o < committed));
                    }
                    Step::Reassign => {
                        if let Some(w) = tracker.watermark() {
                            committed = w;
                        }
                        tracker = OffsetTracker::new();
                        in_flight.clear();
                        fetch = log.partition_point(|&o| o < committed);
                    }
                }
                if let Some(w) = tracker.watermark() {
                    prop_assert!(w >= committed, "watermark {} behind commit {}", w, committed);
                    for &o in log.iter().take_while(|&&o| o < w) {
                        prop_assert!(handled.contains(&o), "{} committed unhandled", o);
                    }
                }
            }
            // Whatever happened, fetching and finishing the rest completes the partition.
            for &o in &log[log.partition_point(|&o| o < committed)..] {
                if tracker.track(o) {
                    in_flight.push(o);
                }
            }
            for o in in_flight.drain(..) {
                tracker.finish(o);
                handled.insert(o);
            }
            prop_assert_eq!(tracker.watermark().unwrap_or(committed), log[log.len() - 1] + 1);
            prop_assert!(log.iter().all(|o| handled.contains(o)), "a record was lost");
        }
    }

    proptest! {
        /// What the offset map carries back is exactly what was finished, or a prefix of it
        /// when the size bound cut it short; never an offset that was not finished.
        #[test]
        fn offset_map_round_trips_within_its_size_bound(
            watermark in 0i64..1_000_000,
            deltas in prop::collection::btree_set(1i64..5_000, 0..400),
            max_len in 16usize..4096,
        ) {
            let finished: Vec<i64> = deltas.iter().map(|d| watermark + d).collect();
            let meta = offset_map::encode(watermark, finished.iter().copied(), max_len);
            prop_assert!(meta.len() <= max_len.max(32));
            let back = offset_map::decode(watermark, &meta);
            prop_assert!(back.len() <= finished.len());
            prop_assert_eq!(&back[..], &finished[..back.len()]);
            if meta.len() + 24 < max_len {
                prop_assert_eq!(back, finished);
            }
        }
    }

    #[test]
    fn foreign_or_broken_metadata_is_ignored() {
        for meta in [
            "",
            "hello",
            "sg1:5:",
            "sg1:5:x",
            "sg1:5:3-1",
            "sg1:5:0",
            "sg2:5:1",
        ] {
            assert!(offset_map::decode(5, meta).is_empty(), "{meta}");
        }
    }
}
