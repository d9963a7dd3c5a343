//! Figures for the status: lag from librdkafka's statistics, buffers, counters, and the
//! catch-up of a reader from the beginning.

use std::collections::BTreeMap;

use tracing::{debug, info};

use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer, Statistics};
use crate::status::{CatchUp, TopicPartition};

use super::super::catch_up::{Seen, Targets};
use super::super::status::Figures;
use super::Assignment;

impl Assignment {
    /// Starts tracking whether every partition in `targets` is handled up to its log end (see
    /// [`CatchUp`]).
    pub fn catch_up(&mut self, targets: Targets) {
        self.catch_up = Some(targets);
        self.publish_catch_up();
    }

    /// Drops from the catch-up targets the partitions handled up to their log ends, and
    /// reports it once every one is. Cheap when nothing is tracked; while catching up it asks
    /// librdkafka for positions only when a partition has nothing unfinished and its watermark
    /// alone does not settle it (see [`catch_up::caught_up`](super::catch_up::caught_up)).
    pub fn check_catch_up<C: ConsumerEvents>(&mut self, consumer: &KafkaConsumer<C>) {
        let Some(mut targets) = self.catch_up.take() else {
            return;
        };
        let seen_here = |tp: &TopicPartition| -> Seen {
            let Some(p) = self
                .slot_of(&tp.topic, tp.partition)
                .and_then(|i| self.slots[i].as_ref())
            else {
                return Seen::default();
            };
            Seen {
                watermark: p.offsets.watermark(),
                unfinished: p.offsets.unfinished(),
                position: None,
            }
        };
        let needs_position = targets.behind().any(|(tp, end)| {
            let seen = seen_here(tp);
            seen.unfinished == 0 && seen.watermark.is_none_or(|w| w < end)
        });
        let positions = if needs_position {
            match consumer.positions() {
                Ok(positions) => positions.into_iter().collect(),
                Err(e) => {
                    debug!(error = %e, "no positions to judge the catch-up by");
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        let changed = targets.update(|tp| Seen {
            position: positions.get(tp).copied(),
            ..seen_here(tp)
        });
        self.catch_up = Some(targets);
        if changed {
            self.publish_catch_up();
        }
    }

    /// Publishes the catch-up progress; once every partition is caught up, says so and stops
    /// tracking.
    fn publish_catch_up(&mut self) {
        let Some(targets) = &self.catch_up else {
            return;
        };
        if targets.is_done() {
            self.catch_up = None;
            info!("caught up: every partition handled up to the log end seen at start");
            self.status.catch_up(CatchUp::CaughtUp);
            return;
        }
        let progress = targets.progress(|tp| {
            self.slot_of(&tp.topic, tp.partition)
                .and_then(|i| self.slots[i].as_ref())
                .and_then(|p| p.offsets.watermark())
        });
        self.status.catch_up(CatchUp::CatchingUp(progress));
    }

    /// Takes the log ends (and, until this consumer commits, the committed offsets) of owned
    /// partitions from librdkafka's statistics.
    pub fn statistics(&mut self, stats: &Statistics) {
        for p in self.slots.iter_mut().flatten() {
            let Some(s) = stats.partition(&p.tp.topic, p.tp.partition) else {
                continue;
            };
            if s.log_end.is_some() {
                p.log_end = s.log_end;
            }
            if s.log_start.is_some() {
                p.log_start = s.log_start;
            }
            if let Some(committed) = s.committed {
                p.commits.read_at_assignment(committed);
            }
        }
    }

    /// Publishes buffer, pause, lag and catch-up figures to the status. A partition the group
    /// never committed lags by its whole log; a reader without a group lags from what it has
    /// handled.
    pub fn publish_figures(&mut self) {
        self.publish_catch_up();
        let mut lag = BTreeMap::new();
        for p in self.slots.iter().flatten() {
            let done = match self.commits_enabled {
                true => p.commits.committed(),
                false => p.offsets.watermark(),
            };
            if let Some(behind) = lag_of(p.log_end, done, p.log_start) {
                lag.insert(p.tp.clone(), behind);
            }
        }
        self.status.figures(Figures {
            paused: self.slots.iter().flatten().filter(|p| p.paused).count(),
            lag,
            buffered: self.backpressure.total(),
            peak: self.backpressure.peak(),
            skipped_as_finished: self.skipped_as_finished,
            dead_lettered: self.dead_lettered,
            retried: self.retried,
        });
    }
}

/// How far a partition is behind its log end `end`: from `done` (committed, or handled for a
/// reader without a group), else from the log start; unknown until librdkafka reports the end.
fn lag_of(end: Option<i64>, done: Option<i64>, log_start: Option<i64>) -> Option<i64> {
    Some((end? - done.or(log_start)?).max(0))
}

#[cfg(test)]
mod tests {
    use super::lag_of;

    #[test]
    fn lag_counts_from_what_is_done_else_from_the_log_start() {
        assert_eq!(lag_of(Some(100), Some(60), Some(10)), Some(40));
        assert_eq!(
            lag_of(Some(100), None, Some(10)),
            Some(90),
            "never committed"
        );
        assert_eq!(
            lag_of(Some(100), Some(120), None),
            Some(0),
            "never negative"
        );
        assert_eq!(
            lag_of(None, Some(60), Some(10)),
            None,
            "no log end reported yet"
        );
        assert_eq!(lag_of(Some(100), None, None), None);
    }
}
