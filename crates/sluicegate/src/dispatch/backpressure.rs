//! Buffer bounds and the pause/resume decisions that keep buffered work within them.

/// Bounds on messages received but not yet finished (queued or being handled).
///
/// Two brakes keep buffers within them:
/// - while the total is over half its bound, the poll loop *holds*: it takes no new messages
///   for a moment (at most 100 ms at a time, while it keeps serving lane reports), and
///   librdkafka's own bounded prefetch queue absorbs the flow. This is cheap, and enough when
///   handlers are merely slower than fetching.
/// - a partition over its bound, or any partition while the total is over its bound, is
///   *paused*, and resumed once back under half of every bound it crossed. Pausing makes
///   librdkafka drop what it prefetched for the partition and fetch it again on resume, so it
///   is the brake for handlers that are slow for long; polling goes on meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLimits {
    /// Messages per partition.
    pub partition_messages: usize,
    /// Bytes (key, value and headers) per partition.
    pub partition_bytes: usize,
    /// Messages over all partitions.
    pub total_messages: usize,
    /// Bytes over all partitions.
    pub total_bytes: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits {
            partition_messages: 15_000,
            partition_bytes: 24 << 20,
            total_messages: 20_000,
            total_bytes: 32 << 20,
        }
    }
}

/// Messages and bytes buffered for one partition, or in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Buffered {
    pub messages: usize,
    pub bytes: usize,
}

impl Buffered {
    fn add(&mut self, bytes: usize) {
        self.messages += 1;
        self.bytes += bytes;
    }

    fn remove(&mut self, bytes: usize) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    fn over(&self, messages: usize, bytes: usize) -> bool {
        self.messages >= messages || self.bytes >= bytes
    }

    fn under_half(&self, messages: usize, bytes: usize) -> bool {
        self.messages <= messages / 2 && self.bytes <= bytes / 2
    }
}

/// The buffer accounting of a whole consumer: the total, and the rules applied to each
/// partition's own [`Buffered`].
#[derive(Debug)]
pub(crate) struct Backpressure {
    limits: BufferLimits,
    total: Buffered,
    peak: Buffered,
}

impl Backpressure {
    pub fn new(limits: BufferLimits) -> Self {
        Backpressure {
            limits,
            total: Buffered::default(),
            peak: Buffered::default(),
        }
    }

    /// Counts a received message; `true` when its partition must now be paused.
    pub fn admit(&mut self, partition: &mut Buffered, bytes: usize) -> bool {
        partition.add(bytes);
        self.total.add(bytes);
        self.peak.messages = self.peak.messages.max(self.total.messages);
        self.peak.bytes = self.peak.bytes.max(self.total.bytes);
        self.must_pause(partition)
    }

    /// Counts a message leaving the buffer (finished or abandoned).
    pub fn release(&mut self, partition: &mut Buffered, bytes: usize) {
        partition.remove(bytes);
        self.total.remove(bytes);
    }

    /// Drops a partition's whole buffer from the total (its work was abandoned).
    pub fn forget(&mut self, partition: Buffered) {
        self.total.messages = self.total.messages.saturating_sub(partition.messages);
        self.total.bytes = self.total.bytes.saturating_sub(partition.bytes);
    }

    /// Whether a partition holding `partition` must be paused.
    pub fn must_pause(&self, partition: &Buffered) -> bool {
        let l = &self.limits;
        partition.over(l.partition_messages, l.partition_bytes)
            || self.total.over(l.total_messages, l.total_bytes)
    }

    /// Whether the poll loop should hold off taking new messages: the total is over half of
    /// its bound.
    pub fn should_hold(&self) -> bool {
        let l = &self.limits;
        !self.total.under_half(l.total_messages, l.total_bytes)
    }

    /// Whether a paused partition holding `partition` may resume.
    pub fn may_resume(&self, partition: &Buffered) -> bool {
        let l = &self.limits;
        partition.under_half(l.partition_messages, l.partition_bytes)
            && self.total.under_half(l.total_messages, l.total_bytes)
    }

    /// The current total.
    pub fn total(&self) -> Buffered {
        self.total
    }

    /// The highest total seen.
    pub fn peak(&self) -> Buffered {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: BufferLimits = BufferLimits {
        partition_messages: 10,
        partition_bytes: 1_000,
        total_messages: 25,
        total_bytes: 10_000,
    };

    #[test]
    fn pauses_at_the_bound_and_resumes_at_half() {
        let mut bp = Backpressure::new(LIMITS);
        let mut p = Buffered::default();
        let paused: Vec<bool> = (0..10).map(|_| bp.admit(&mut p, 1)).collect();
        assert_eq!(paused.iter().position(|p| *p), Some(9));
        for _ in 0..4 {
            bp.release(&mut p, 1);
        }
        assert!(!bp.may_resume(&p));
        bp.release(&mut p, 1);
        assert!(bp.may_resume(&p));
    }

    proptest! {
        /// If the runtime stops admitting to a partition once told to pause (as it does), no
        /// partition and no total ever goes past its bound by more than one message.
        #[test]
        fn paused_partitions_keep_buffers_bounded(
            ops in prop::collection::vec((0usize..4, 1usize..300, any::<bool>()), 1..500)
        ) {
            let mut bp = Backpressure::new(LIMITS);
            let mut parts = [Buffered::default(); 4];
            let mut paused = [false; 4];
            let mut sizes: Vec<Vec<usize>> = vec![Vec::new(); 4];
            for (p, bytes, receive) in ops {
                if receive {
                    if paused[p] { continue; }
                    paused[p] = bp.admit(&mut parts[p], bytes);
                    sizes[p].push(bytes);
                } else if let Some(b) = sizes[p].pop() {
                    bp.release(&mut parts[p], b);
                    if paused[p] && bp.may_resume(&parts[p]) { paused[p] = false; }
                }
                for part in &parts {
                    prop_assert!(part.messages <= LIMITS.partition_messages);
                    prop_assert!(part.bytes < LIMITS.partition_bytes + 300);
                }
                prop_assert!(bp.total().messages <= LIMITS.total_messages + 3);
            }
        }
    }
}
