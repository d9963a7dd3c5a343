//! What the demo's handler saw, per partition: how many messages, which offsets (to tell
//! duplicates from first deliveries), whether order was kept, and end-to-end latencies.

use std::collections::HashMap;

use hdrhistogram::Histogram;

/// Which order the ledger checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderCheck {
    /// Offsets of a partition are handled in increasing order.
    Partition,
    /// Offsets of each key (within its partition) are handled in increasing order.
    Key,
    /// Nothing to check (unordered mode).
    None,
}

impl From<sluicegate::Ordering> for OrderCheck {
    fn from(o: sluicegate::Ordering) -> Self {
        match o {
            sluicegate::Ordering::Partition => OrderCheck::Partition,
            sluicegate::Ordering::Key => OrderCheck::Key,
            _ => OrderCheck::None,
        }
    }
}

/// A set of non-negative offsets, one bit each: partitions of a fresh topic are dense from 0.
#[derive(Default, Debug)]
pub struct OffsetSet(Vec<u64>);

impl OffsetSet {
    /// Adds `offset`; `true` if it was not there yet.
    pub fn insert(&mut self, offset: i64) -> bool {
        let Ok(offset) = usize::try_from(offset) else {
            return true;
        };
        let (word, bit) = (offset / 64, offset % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let new = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        new
    }
}

/// A new latency histogram in microseconds, from 1 µs to one hour at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// The record of one partition.
#[derive(Debug)]
pub struct PartitionLedger {
    seen: OffsetSet,
    /// Handler completions, re-deliveries included.
    pub processed: u64,
    /// Distinct offsets handled.
    pub distinct: u64,
    /// First deliveries of an offset after a higher offset of the same scope (partition, or
    /// key in key mode) was already handled.
    pub order_violations: u64,
    max_offset: Option<i64>,
    key_max: HashMap<Vec<u8>, i64>,
    /// Record timestamp to handler completion, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Default for PartitionLedger {
    fn default() -> Self {
        PartitionLedger {
            seen: OffsetSet::default(),
            processed: 0,
            distinct: 0,
            order_violations: 0,
            max_offset: None,
            key_max: HashMap::new(),
            latency_us: latency_histogram(),
        }
    }
}

impl PartitionLedger {
    /// Records that the handler finished `offset` (record key `key`), `latency_us` after the
    /// record's timestamp. A re-delivery counts as a duplicate, never as an order violation.
    pub fn record(&mut self, check: OrderCheck, offset: i64, key: Option<&[u8]>, latency_us: u64) {
        self.processed += 1;
        self.latency_us.saturating_record(latency_us);
        if !self.seen.insert(offset) {
            return;
        }
        self.distinct += 1;
        let highest = match check {
            OrderCheck::Partition => Some(self.max_offset.get_or_insert(offset)),
            OrderCheck::Key => {
                let key = key.unwrap_or_default();
                if !self.key_max.contains_key(key) {
                    self.key_max.insert(key.to_vec(), offset);
                }
                self.key_max.get_mut(key)
            }
            OrderCheck::None => None,
        };
        if let Some(highest) = highest {
            if *highest > offset {
                self.order_violations += 1;
            } else {
                *highest = offset;
            }
        }
    }
}

/// The ledgers of all partitions, added up.
#[derive(Debug)]
pub struct Totals {
    pub processed: u64,
    pub distinct: u64,
    pub order_violations: u64,
    pub latency_us: Histogram<u64>,
}

impl Totals {
    pub fn of<'a>(ledgers: impl IntoIterator<Item = &'a PartitionLedger>) -> Self {
        let mut t = Totals {
            processed: 0,
            distinct: 0,
            order_violations: 0,
            latency_us: latency_histogram(),
        };
        for l in ledgers {
            t.processed += l.processed;
            t.distinct += l.distinct;
            t.order_violations += l.order_violations;
            t.latency_us
                .add(&l.latency_us)
                .expect("histograms of equal bounds add up");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_set_tells_new_from_seen() {
        let mut s = OffsetSet::default();
        assert!(s.insert(0));
        assert!(s.insert(130));
        assert!(!s.insert(130));
        assert!(!s.insert(0));
        assert!(s.insert(129));
    }

    #[test]
    fn redelivery_is_a_duplicate_not_an_order_violation() {
        let mut l = PartitionLedger::default();
        for o in [0, 1, 2, 3, 1, 2, 3, 4] {
            l.record(OrderCheck::Partition, o, None, 1_000);
        }
        assert_eq!((l.processed, l.distinct, l.order_violations), (8, 5, 0));
    }

    #[test]
    fn a_skipped_back_first_delivery_is_a_violation_in_partition_mode() {
        let mut l = PartitionLedger::default();
        for o in [0, 2, 1, 3] {
            l.record(OrderCheck::Partition, o, None, 1);
        }
        assert_eq!(l.order_violations, 1);
    }

    #[test]
    fn key_mode_checks_order_per_key_only() {
        let mut l = PartitionLedger::default();
        // Keys a and b interleave out of partition order, each in its own order: fine.
        for (o, k) in [(1, "b"), (0, "a"), (2, "a"), (3, "b")] {
            l.record(OrderCheck::Key, o, Some(k.as_bytes()), 1);
        }
        assert_eq!(l.order_violations, 0);
        let mut m = PartitionLedger::default();
        for (o, k) in [(0, "a"), (2, "a"), (1, "a")] {
            m.record(OrderCheck::Key, o, Some(k.as_bytes()), 1);
        }
        assert_eq!(m.order_violations, 1);
    }

    #[test]
    fn unordered_mode_checks_nothing() {
        let mut l = PartitionLedger::default();
        for o in [3, 2, 1, 0] {
            l.record(OrderCheck::None, o, None, 1);
        }
        assert_eq!((l.distinct, l.order_violations), (4, 0));
    }

    #[test]
    fn totals_add_counts_and_latencies() {
        let mut a = PartitionLedger::default();
        let mut b = PartitionLedger::default();
        a.record(OrderCheck::Partition, 0, None, 1_000);
        b.record(OrderCheck::Partition, 0, None, 3_000);
        b.record(OrderCheck::Partition, 0, None, 3_000);
        let t = Totals::of([&a, &b]);
        assert_eq!((t.processed, t.distinct), (3, 2));
        assert_eq!(t.latency_us.len(), 3);
    }
}
