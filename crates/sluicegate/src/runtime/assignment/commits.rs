//! Asking the committer for commits of what finished, and applying its acknowledgements.

use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::commit::CommitEntry;
use crate::offset_map;

use super::super::commit::CommitError;
use super::super::committer::CommitRequest;
use super::Assignment;

/// The most bytes of commit metadata used for the offset map; brokers accept 4,096 by default
/// (`offset.metadata.max.bytes`).
const OFFSET_MAP_MAX_LEN: usize = 3_000;

/// Pause before re-sending a refused final commit, and how many times to send it.
const FINAL_COMMIT_RETRY: Duration = Duration::from_millis(200);
const FINAL_COMMIT_ATTEMPTS: usize = 5;

impl Assignment {
    /// Asks the committer to commit the watermark of every partition (or of `only`) that
    /// moved since its last request. Does nothing while an earlier request is in flight.
    pub fn request_commit(&mut self, only: Option<&[usize]>) -> Option<u64> {
        if self.aborted || !self.commits_enabled || self.commit_in_flight.is_some() {
            return None;
        }
        let mut offsets = Vec::new();
        let mut outputs = Vec::new();
        for (i, p) in self.slots.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let Some(w) = p.offsets.watermark() else {
                continue;
            };
            // A transaction writes the outputs of what it commits, and an offset map would
            // mark finished messages whose outputs wait for a later one: none in that mode.
            let above = match self.routing.transactional {
                true => 0,
                false => p.offsets.finished_above_watermark().count(),
            };
            if p.commits.due(w, above) {
                outputs.extend(p.outputs.below(w).cloned());
                offsets.push(CommitEntry {
                    topic: p.tp.topic.clone(),
                    partition: p.tp.partition,
                    next: w,
                    metadata: if above == 0 {
                        String::new()
                    } else {
                        offset_map::encode(
                            w,
                            p.offsets.finished_above_watermark(),
                            OFFSET_MAP_MAX_LEN,
                        )
                    },
                });
            }
        }
        if offsets.is_empty() {
            return None;
        }
        self.next_commit_id += 1;
        let id = self.next_commit_id;
        debug!(id, ?offsets, "commit requested");
        self.commits
            .as_ref()?
            .send(CommitRequest {
                id,
                offsets,
                outputs,
            })
            .ok()?;
        self.commit_in_flight = Some(id);
        Some(id)
    }

    /// Commits the watermarks of `which` and waits for the result until `deadline`.
    pub(super) fn commit_and_wait(&mut self, which: &[usize], deadline: Instant) {
        // An earlier request lands first, so a partition's commits never go backwards.
        while self.commit_in_flight.is_some() {
            if !self.wait_event(deadline) {
                return;
            }
        }
        // A refused commit (e.g. mid-rebalance) clears its request, so asking again resends it;
        // nothing left to request means every offset is acknowledged.
        for _ in 0..FINAL_COMMIT_ATTEMPTS {
            let Some(id) = self.request_commit(Some(which)) else {
                return;
            };
            while self.commit_in_flight == Some(id) {
                if !self.wait_event(deadline) {
                    warn!(
                        "final commit did not complete in time; uncommitted work will be re-delivered"
                    );
                    return;
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            let failed = which.iter().any(|i| {
                self.slots[*i]
                    .as_ref()
                    .is_some_and(|p| p.commits.unsent(p.offsets.watermark()))
            });
            if !failed {
                return;
            }
            // Back off before asking again, still applying any late lane reports.
            self.wait_event(deadline.min(Instant::now() + FINAL_COMMIT_RETRY));
        }
        warn!("final commit refused repeatedly; uncommitted work will be re-delivered");
    }

    pub(super) fn commit_result(
        &mut self,
        id: u64,
        offsets: Vec<CommitEntry>,
        result: Result<(), CommitError>,
        latency: Duration,
    ) {
        if self.commit_in_flight == Some(id) {
            self.commit_in_flight = None;
        }
        if let Some(m) = self.status.metrics() {
            m.commit(result.is_ok(), latency);
        }
        match result {
            Ok(()) => {
                debug!(id, ?latency, "committed");
                for e in &offsets {
                    if let Some(i) = self.slot_of(&e.topic, e.partition) {
                        let p = self.slots[i].as_mut().expect("indexed slots exist");
                        p.commits.acknowledged(e.next);
                        p.outputs.committed(e.next);
                    }
                }
                if self.routing.transactional {
                    self.status.transaction(Some(&offsets));
                }
                self.status.committed(&offsets);
            }
            Err(e) => {
                if self.routing.transactional {
                    // The transaction was aborted; its outputs wait for the next one.
                    self.status.transaction(None);
                }

                match &e {
                    CommitError::Retriable(_) => {
                        warn!(error = %e, ?offsets, "commit failed; will retry")
                    }
                    // Asked again all the same: it costs one refusal, and the partitions are
                    // usually revoked first.
                    CommitError::Refused(_) => {
                        warn!(error = %e, ?offsets, "commit refused; unfinished work goes to the next owner")
                    }
                    CommitError::Fatal(_) | CommitError::Missing(_) => {
                        error!(error = %e, ?offsets, "commit failed")
                    }
                }
                for e in offsets {
                    if let Some(i) = self.slot_of(&e.topic, e.partition) {
                        let p = self.slots[i].as_mut().expect("indexed slots exist");
                        p.commits.refused(e.next);
                    }
                }
                // A transactional producer that failed fatally (fenced) can commit nothing any
                // more: the consumer stops.
                if self.routing.transactional
                    && matches!(e, CommitError::Fatal(_) | CommitError::Missing(_))
                {
                    self.fatal.get_or_insert(e);
                }
            }
        }
    }
}

/// One partition's commits: what was last asked of the committer, and what the group
/// acknowledged. A request is sent when the watermark or the set of work finished above it
/// moved; a refused one is sent again on the next request.
#[derive(Debug, Default)]
pub(super) struct CommitMark {
    /// The watermark and the count of finished offsets above it last sent for commit.
    requested: Option<(i64, usize)>,
    /// The group's committed offset (next to consume) as last known: acknowledged to us, or
    /// as librdkafka read it at assignment.
    committed: Option<i64>,
}

impl CommitMark {
    /// Whether a commit of `watermark`, with `above` offsets finished past it, is to be asked
    /// for now; if so it counts as asked.
    pub fn due(&mut self, watermark: i64, above: usize) -> bool {
        let due = self.requested != Some((watermark, above));
        self.requested = Some((watermark, above));
        due
    }

    /// The commit of `next` failed: the next request asks again, unless a later one was sent
    /// since.
    pub fn refused(&mut self, next: i64) {
        if self.requested.is_some_and(|(w, _)| w == next) {
            self.requested = None;
        }
    }

    /// The group acknowledged a commit of `next`.
    pub fn acknowledged(&mut self, next: i64) {
        self.committed = Some(next);
    }

    /// The committed offset librdkafka read when the partition was assigned, until this
    /// consumer commits one of its own.
    pub fn read_at_assignment(&mut self, next: i64) {
        self.committed.get_or_insert(next);
    }

    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Whether work up to `watermark` finished and no commit of it is on its way: a refused
    /// one, to ask for again.
    pub fn unsent(&self, watermark: Option<i64>) -> bool {
        self.requested.is_none() && watermark.is_some()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::CommitMark;

    #[test]
    fn asks_once_per_move_and_again_after_a_refusal() {
        let mut mark = CommitMark::default();
        assert!(mark.due(10, 0));
        assert!(
            !mark.due(10, 0),
            "the same watermark is not asked for twice"
        );
        assert!(mark.due(10, 2), "more work finished above the watermark");
        mark.refused(10);
        assert!(mark.unsent(Some(10)));
        assert!(mark.due(10, 2), "a refused commit is asked for again");
        assert!(!mark.unsent(Some(10)));
    }

    #[test]
    fn a_late_refusal_does_not_cancel_a_newer_request() {
        let mut mark = CommitMark::default();
        assert!(mark.due(10, 0));
        assert!(mark.due(20, 0));
        mark.refused(10);
        assert!(!mark.due(20, 0), "the request for 20 still stands");
    }

    #[test]
    fn own_acknowledgements_win_over_what_was_read_at_assignment() {
        let mut mark = CommitMark::default();
        mark.read_at_assignment(5);
        assert_eq!(mark.committed(), Some(5));
        mark.acknowledged(30);
        mark.read_at_assignment(7);
        assert_eq!(mark.committed(), Some(30));
    }

    proptest! {
        /// Whatever the order of requests and refusals, a watermark that moved is always
        /// asked for, and after any refusal the latest watermark is asked for again before
        /// the partition counts as settled.
        #[test]
        fn the_latest_watermark_is_never_left_unasked(
            steps in proptest::collection::vec((0i64..4, any::<bool>()), 1..60)
        ) {
            let mut mark = CommitMark::default();
            let mut watermark = 0;
            let mut asked = None;
            for (advance, refuse) in steps {
                watermark += advance;
                if mark.due(watermark, 0) {
                    asked = Some(watermark);
                }
                prop_assert_eq!(asked, Some(watermark));
                if refuse {
                    mark.refused(watermark);
                    prop_assert!(mark.unsent(Some(watermark)));
                    asked = None;
                }
            }
        }
    }
}
