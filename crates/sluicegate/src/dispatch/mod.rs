//! Dispatch rules: when a message may run (the ordering mode), how messages are cut into
//! batches, and
//! when a partition must be paused or resumed to keep buffered work within bounds.
//!
//! Pure decisions only; the runtime owns the lanes and the consumer and applies them.

mod backpressure;
mod batch;
mod keys;

pub use backpressure::BufferLimits;
pub(crate) use backpressure::{Backpressure, Buffered};
pub use batch::BatchLimits;
pub(crate) use batch::Batcher;
pub(crate) use keys::{KeyGate, Ready};

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
    /// How many workers serve one partition allowed `width` handlers at once. Every partition
    /// has one queue; key mode puts a [`KeyGate`] in front of it.
    pub(crate) fn workers(self, width: usize) -> usize {
        match self {
            Ordering::Partition => 1,
            Ordering::Key | Ordering::Unordered => width.max(1),
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
    fn only_partition_mode_is_limited_to_one_worker() {
        assert_eq!(Ordering::Partition.workers(16), 1);
        assert_eq!(Ordering::Key.workers(16), 16);
        assert_eq!(Ordering::Unordered.workers(0), 1);
    }

    #[test]
    fn ordering_parses_its_names_and_names_the_choices_on_error() {
        assert_eq!("key".parse::<Ordering>().unwrap(), Ordering::Key);
        let err = "keys".parse::<Ordering>().unwrap_err();
        assert!(err.contains("partition, key, unordered"), "{err}");
    }
}
