//! Dispatch rules: which lane of its partition a message goes to (the ordering mode), and
//! when a partition must be paused or resumed to keep buffered work within bounds.
//!
//! Pure decisions only; the runtime owns the lanes and the consumer and applies them.

mod backpressure;

pub use backpressure::BufferLimits;
pub(crate) use backpressure::{Backpressure, Buffered};

use std::hash::{BuildHasher, BuildHasherDefault};
use std::str::FromStr;

/// How messages of one partition may run in parallel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ordering {
    /// One message at a time per partition, in offset order; partitions in parallel.
    #[default]
    Partition,
    /// Messages with the same key in offset order; different keys in parallel, even within a
    /// partition. Records with a null key are kept in offset order among themselves.
    Key,
    /// No order: messages of a partition run in parallel up to the per-partition limit.
    Unordered,
}

impl Ordering {
    /// The lane (`0..width`) of `key` in a partition served by `width` lanes. `seq` is a
    /// counter the caller increments per message, used to spread unordered work.
    pub(crate) fn lane(self, key: Option<&[u8]>, width: usize, seq: u64) -> usize {
        if width <= 1 {
            return 0;
        }
        match self {
            Ordering::Partition => 0,
            // Null keys all share lane 0, which keeps them in order among themselves.
            Ordering::Key => key.map_or(0, |k| {
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                    .hash_one(k) as usize
                    % width
            }),
            Ordering::Unordered => (seq % width as u64) as usize,
        }
    }

    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Partition => "partition",
            Ordering::Key => "key",
            Ordering::Unordered => "unordered",
        }
    }
}

impl FromStr for Ordering {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "partition" => Ok(Ordering::Partition),
            "key" => Ok(Ordering::Key),
            "unordered" => Ok(Ordering::Unordered),
            other => Err(format!(
                "unknown ordering `{other}`; expected one of: partition, key, unordered"
            )),
        }
    }
}

impl std::fmt::Display for Ordering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_always_gets_the_same_lane() {
        for width in [2, 7, 64] {
            let a = Ordering::Key.lane(Some(b"user-1"), width, 0);
            assert_eq!(a, Ordering::Key.lane(Some(b"user-1"), width, 99));
            assert!(a < width);
        }
        assert_eq!(Ordering::Key.lane(None, 8, 5), 0);
        assert_eq!(Ordering::Partition.lane(Some(b"x"), 8, 5), 0);
    }

    #[test]
    fn unordered_spreads_over_all_lanes() {
        let lanes: std::collections::BTreeSet<_> = (0..8)
            .map(|s| Ordering::Unordered.lane(None, 4, s))
            .collect();
        assert_eq!(lanes.len(), 4);
    }

    #[test]
    fn ordering_parses_its_names_and_names_the_choices_on_error() {
        assert_eq!("key".parse::<Ordering>().unwrap(), Ordering::Key);
        let err = "keys".parse::<Ordering>().unwrap_err();
        assert!(err.contains("partition, key, unordered"), "{err}");
    }
}
