//! Ledgers: what a consumer finished, per partition, told apart as first finishes, repeats
//! (duplicates) and first finishes out of order. The demo keeps one per partition; the
//! library's reliability checker and soak (`crates/sluicegate/tests/common/checker.rs`,
//! `tests/reliability.rs`) count with the same ones.

use std::collections::HashMap;

/// Which order the ledger checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderCheck {
    /// Offsets of a partition are finished in increasing order.
    Partition,
    /// The records of each key (within its partition) are finished in increasing order.
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

impl OrderCheck {
    /// The name reports use: `partition`, `key` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            OrderCheck::Partition => "partition",
            OrderCheck::Key => "key",
            OrderCheck::None => "none",
        }
    }
}

/// A set of non-negative offsets, one bit each: partitions of a fresh topic are dense from 0,
/// so a ledger costs a bit per record however long the run.
#[derive(Default, Debug)]
pub struct OffsetSet(Vec<u64>);

impl OffsetSet {
    /// Adds `offset`; `true` if it was not there yet (a negative offset is never kept).
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

    /// Whether `offset` is in the set.
    pub fn contains(&self, offset: i64) -> bool {
        usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o / 64).map(|w| w & (1 << (o % 64)) != 0))
            .unwrap_or(false)
    }
}

/// What one finish was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The record's first finish, in order.
    First,
    /// A record finished before: a duplicate (never an order violation).
    Repeat,
    /// A first finish after a later record of its scope (partition, or key) had finished.
    OutOfOrder,
}

/// The record of one partition.
#[derive(Debug, Default)]
pub struct PartitionLedger {
    seen: OffsetSet,
    /// Finishes, repeats included.
    pub processed: u64,
    /// Distinct offsets finished.
    pub distinct: u64,
    /// First finishes of a record after a later record of the same scope (partition, or key in
    /// key order) had finished.
    pub order_violations: u64,
    max_offset: Option<i64>,
    /// Per key, the highest rank (see [`record_ranked`](Self::record_ranked)) finished.
    key_max: HashMap<Vec<u8>, i64>,
}

impl PartitionLedger {
    /// Records that `offset` (record key `key`; no key is a key of its own) was finished; in key
    /// order, a key's records are ranked by their offsets.
    pub fn record(&mut self, check: OrderCheck, offset: i64, key: Option<&[u8]>) -> Finish {
        self.record_ranked(check, offset, Some((key.unwrap_or_default(), offset)))
    }

    /// Records that `offset` was finished. In key order, `key_rank` is the record's key and its
    /// rank among that key's records (its offset, or a sequence number its writer gave it);
    /// `None` leaves it out of the key order check.
    pub fn record_ranked(
        &mut self,
        check: OrderCheck,
        offset: i64,
        key_rank: Option<(&[u8], i64)>,
    ) -> Finish {
        self.processed += 1;
        if !self.seen.insert(offset) {
            return Finish::Repeat;
        }
        self.distinct += 1;
        let (highest, rank) = match (check, key_rank) {
            (OrderCheck::Partition, _) => (self.max_offset.get_or_insert(offset), offset),
            (OrderCheck::Key, Some((key, rank))) => {
                if !self.key_max.contains_key(key) {
                    self.key_max.insert(key.to_vec(), rank);
                }
                (self.key_max.get_mut(key).expect("inserted above"), rank)
            }
            (OrderCheck::Key, None) | (OrderCheck::None, _) => return Finish::First,
        };
        if *highest > rank {
            self.order_violations += 1;
            Finish::OutOfOrder
        } else {
            *highest = rank;
            Finish::First
        }
    }

    /// Whether `offset` was finished at least once.
    pub fn finished(&self, offset: i64) -> bool {
        self.seen.contains(offset)
    }

    /// Finishes beyond each record's first.
    pub fn duplicates(&self) -> u64 {
        self.processed - self.distinct
    }
}

/// The ledgers of all partitions, added up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub processed: u64,
    pub distinct: u64,
    pub order_violations: u64,
}

impl Totals {
    pub fn of<'a>(ledgers: impl IntoIterator<Item = &'a PartitionLedger>) -> Self {
        ledgers.into_iter().fold(Totals::default(), |t, l| Totals {
            processed: t.processed + l.processed,
            distinct: t.distinct + l.distinct,
            order_violations: t.order_violations + l.order_violations,
        })
    }

    /// Finishes beyond each record's first.
    pub fn duplicates(&self) -> u64 {
        self.processed - self.distinct
    }
}
