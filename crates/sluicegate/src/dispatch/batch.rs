//! Batch bounds, and the [`Batcher`] that cuts arriving messages into batches within them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Message;

/// Bounds on the batches a [`BatchHandler`](crate::BatchHandler) is called with: a batch is
/// handed over once it holds `max_messages`, once adding the next message would take it over
/// `max_bytes`, or once its first message has waited `max_wait`, whichever comes first.
///
/// A single message larger than `max_bytes` makes a batch of its own.
///
/// ```
/// use std::time::Duration;
/// use sluicegate::BatchLimits;
///
/// let limits = BatchLimits::default()           // 200 messages, 100 ms, 16 MiB
///     .max_messages(500)
///     .max_wait(Duration::from_millis(250));
/// # let _ = limits;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub(crate) max_messages: usize,
    pub(crate) max_wait: Duration,
    pub(crate) max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_messages: 200,
            max_wait: Duration::from_millis(100),
            max_bytes: 16 << 20,
        }
    }
}

impl BatchLimits {
    /// The most messages in one batch (200 by default).
    pub fn max_messages(mut self, n: usize) -> Self {
        self.max_messages = n;
        self
    }

    /// How long the first message of a batch waits for more (100 ms by default).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The most bytes (keys, values and headers) in one batch (16 MiB by default).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The largest batch in messages.
    pub fn messages(&self) -> usize {
        self.max_messages
    }
}

/// Collects messages in arrival order and cuts them into batches within [`BatchLimits`].
#[derive(Debug)]
pub(crate) struct Batcher<T = Message> {
    limits: BatchLimits,
    waiting: VecDeque<(T, usize)>,
    bytes: usize,
    /// When the oldest waiting message's wait began.
    since: Option<Instant>,
}

impl<T> Batcher<T> {
    pub fn new(limits: BatchLimits) -> Self {
        Batcher {
            limits,
            waiting: VecDeque::new(),
            bytes: 0,
            since: None,
        }
    }

    /// Adds an item of `size` bytes that arrived at `now`.
    pub fn push(&mut self, item: T, size: usize, now: Instant) {
        self.since.get_or_insert(now);
        self.bytes += size;
        self.waiting.push_back((item, size));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// When the waiting items are due as a batch even if it is not full.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.limits.max_wait)
    }

    /// The next batch, if one is full or due at `now`; `flush` takes a batch even if neither.
    pub fn next_batch(&mut self, now: Instant, flush: bool) -> Option<Vec<T>> {
        if self.waiting.is_empty() {
            return None;
        }
        let (mut count, mut bytes) = (0, 0);
        for (_, size) in &self.waiting {
            if count == self.limits.max_messages
                || (count > 0 && bytes + size > self.limits.max_bytes)
            {
                break;
            }
            count += 1;
            bytes += size;
        }
        let full = count < self.waiting.len()
            || count == self.limits.max_messages
            || bytes >= self.limits.max_bytes;
        let due = self.deadline().is_some_and(|d| now >= d);
        if !(full || due || flush) {
            return None;
        }
        let batch: Vec<T> = self.waiting.drain(..count).map(|(item, _)| item).collect();
        self.bytes -= bytes;
        // What is left was cut off by a full batch: its wait starts over.
        self.since = (!self.waiting.is_empty()).then_some(now);
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(messages: usize, bytes: usize) -> BatchLimits {
        BatchLimits::default()
            .max_messages(messages)
            .max_bytes(bytes)
            .max_wait(Duration::from_millis(100))
    }

    #[test]
    fn a_batch_is_handed_over_when_full_or_when_its_first_message_has_waited() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits(3, 1000));
        b.push(1, 10, t0);
        b.push(2, 10, t0 + Duration::from_millis(50));
        assert_eq!(b.next_batch(t0 + Duration::from_millis(99), false), None);
        assert_eq!(
            b.next_batch(t0 + Duration::from_millis(100), false),
            Some(vec![1, 2])
        );
        for i in 3..=6 {
            b.push(i, 10, t0 + Duration::from_millis(200));
        }
        assert_eq!(
            b.next_batch(t0 + Duration::from_millis(200), false),
            Some(vec![3, 4, 5])
        );
        // The rest waits from the cut on.
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(300)));
        assert_eq!(
            b.next_batch(t0 + Duration::from_millis(200), true),
            Some(vec![6])
        );
        assert!(b.is_empty());
    }

    #[test]
    fn bytes_bound_the_batch_and_an_oversized_message_goes_alone() {
        let t0 = Instant::now();
        let mut b = Batcher::new(limits(100, 100));
        b.push("a", 60, t0);
        b.push("b", 60, t0);
        b.push("huge", 500, t0);
        b.push("c", 10, t0);
        assert_eq!(b.next_batch(t0, false), Some(vec!["a"]));
        assert_eq!(b.next_batch(t0, false), Some(vec!["b"]));
        assert_eq!(b.next_batch(t0, false), Some(vec!["huge"]));
        assert_eq!(
            b.next_batch(t0, false),
            None,
            "c alone is neither full nor due"
        );
    }

    proptest! {
        /// Whatever arrives, batches keep arrival order, lose and repeat nothing, and stay
        /// within the bounds (a single oversized item excepted).
        #[test]
        fn batches_partition_the_input_within_bounds(
            sizes in proptest::collection::vec(1usize..400, 0..300),
            max_messages in 1usize..50,
            max_bytes in 1usize..2000,
            flush_every in 1usize..40,
        ) {
            let t0 = Instant::now();
            let mut b = Batcher::new(limits(max_messages, max_bytes));
            let mut out: Vec<Vec<(usize, usize)>> = Vec::new();
            for (i, size) in sizes.iter().copied().enumerate() {
                b.push((i, size), size, t0);
                while let Some(batch) = b.next_batch(t0, i % flush_every == 0) {
                    out.push(batch);
                }
            }
            while let Some(batch) = b.next_batch(t0, true) {
                out.push(batch);
            }
            prop_assert!(b.is_empty());
            let flat: Vec<usize> = out.iter().flatten().map(|(i, _)| *i).collect();
            prop_assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
            for batch in &out {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= max_messages);
                let bytes: usize = batch.iter().map(|(_, s)| s).sum();
                prop_assert!(batch.len() == 1 || bytes <= max_bytes, "{} bytes in {:?}", bytes, batch);
            }
        }
    }
}
