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
    /// How a partition allowed `width` handlers at once is served: `(queues, workers per
    /// queue)`. Each queue is handled in order by its workers; one worker keeps its order.
    pub(crate) fn layout(self, width: usize) -> (usize, usize) {
        let width = width.max(1);
        match self {
            Ordering::Partition => (1, 1),
            Ordering::Key => (width, 1),
            Ordering::Unordered => (1, width),
        }
    }

    /// The queue (`0..queues`) a message with `key` goes to.
    pub(crate) fn queue(self, key: Option<&[u8]>, queues: usize) -> usize {
        if queues <= 1 {
            return 0;
        }
        match self {
            Ordering::Partition | Ordering::Unordered => 0,
            // Null keys all share lane 0, which keeps them in order among themselves.
            Ordering::Key => key.map_or(0, |k| {
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                    .hash_one(k) as usize
                    % queues
            }),
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
    fn same_key_always_gets_the_same_queue() {
        for queues in [2, 7, 64] {
            let a = Ordering::Key.queue(Some(b"user-1"), queues);
            assert_eq!(a, Ordering::Key.queue(Some(b"user-1"), queues));
            assert!(a < queues);
        }
        assert_eq!(Ordering::Key.queue(None, 8), 0);
        let spread: std::collections::BTreeSet<_> = (0..200)
            .map(|k| Ordering::Key.queue(Some(format!("k{k}").as_bytes()), 8))
            .collect();
        assert_eq!(spread.len(), 8, "keys spread over every queue");
    }

    #[test]
    fn layouts_give_each_mode_its_concurrency() {
        assert_eq!(Ordering::Partition.layout(16), (1, 1));
        assert_eq!(Ordering::Key.layout(16), (16, 1));
        assert_eq!(Ordering::Unordered.layout(16), (1, 16));
        assert_eq!(Ordering::Key.layout(0), (1, 1));
    }

    #[test]
    fn ordering_parses_its_names_and_names_the_choices_on_error() {
        assert_eq!("key".parse::<Ordering>().unwrap(), Ordering::Key);
        let err = "keys".parse::<Ordering>().unwrap_err();
        assert!(err.contains("partition, key, unordered"), "{err}");
    }
}
