//! Exactly-once mode: the outputs of a partition's finished messages, waiting for the
//! transaction that commits past them.

use std::collections::BTreeMap;

use crate::output::OutputRecord;

/// One partition's outputs not yet committed, by the offset they wait for: a group made by
/// messages up to offset `o` is written by the first transaction that commits an offset above
/// `o`, which commits every one of those messages with it.
#[derive(Debug, Default)]
pub(super) struct PendingOutputs {
    by_offset: BTreeMap<i64, Vec<OutputRecord>>,
    bytes: usize,
}

impl PendingOutputs {
    /// Adds the outputs of messages up to `last`.
    pub fn add(&mut self, last: i64, records: Vec<OutputRecord>) {
        self.bytes += records.iter().map(OutputRecord::size).sum::<usize>();
        self.by_offset.entry(last).or_default().extend(records);
    }

    /// Copies of the outputs a commit of `next` (the offset after the last one committed)
    /// writes.
    pub fn below(&self, next: i64) -> impl Iterator<Item = &OutputRecord> {
        self.by_offset
            .range(..next)
            .flat_map(|(_, records)| records)
    }

    /// A commit of `next` is acknowledged: what it wrote is done.
    pub fn committed(&mut self, next: i64) {
        let kept = self.by_offset.split_off(&next);
        let done = std::mem::replace(&mut self.by_offset, kept);
        self.bytes -= done
            .values()
            .flatten()
            .map(OutputRecord::size)
            .sum::<usize>();
    }

    /// About how many bytes wait.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(n: i64) -> OutputRecord {
        OutputRecord::to("out").payload(n.to_string())
    }

    fn payloads<'a>(records: impl Iterator<Item = &'a OutputRecord>) -> Vec<i64> {
        records.map(|r| r.payload_text().parse().unwrap()).collect()
    }

    #[test]
    fn a_commit_writes_the_groups_it_passes_and_only_those() {
        let mut pending = PendingOutputs::default();
        pending.add(3, vec![record(3)]);
        pending.add(5, vec![record(50), record(51)]);
        assert!(
            payloads(pending.below(3)).is_empty(),
            "3 itself is not committed"
        );
        assert_eq!(payloads(pending.below(4)), [3]);
        assert_eq!(payloads(pending.below(6)), [3, 50, 51]);
        pending.committed(4);
        assert_eq!(payloads(pending.below(6)), [50, 51]);
        assert_eq!(pending.bytes(), 2 * (3 + 2));
    }

    proptest! {
        /// Whatever the order groups come in and commits move, every output is written by
        /// exactly one acknowledged commit: the first whose offset passes its group.
        #[test]
        fn each_output_is_written_by_one_commit(
            groups in proptest::collection::vec((0i64..50, 1usize..3), 1..30),
            commits in proptest::collection::vec(0i64..60, 1..10),
        ) {
            let mut pending = PendingOutputs::default();
            let mut written: Vec<i64> = Vec::new();
            let mut expected: Vec<i64> = Vec::new();
            let mut next = 0;
            for (i, (last, n)) in groups.iter().enumerate() {
                // Groups only come for messages not committed yet.
                let last = last.max(&next);
                let records: Vec<_> = (0..*n).map(|k| record((i * 10 + k) as i64)).collect();
                expected.extend((0..*n).map(|k| (i * 10 + k) as i64));
                pending.add(*last, records);
                if let Some(c) = commits.get(i) {
                    next = next.max(*c);
                    written.extend(payloads(pending.below(next)));
                    pending.committed(next);
                }
            }
            written.extend(payloads(pending.below(i64::MAX)));
            pending.committed(i64::MAX);
            written.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(written, expected);
            prop_assert_eq!(pending.bytes(), 0);
        }
    }
}
