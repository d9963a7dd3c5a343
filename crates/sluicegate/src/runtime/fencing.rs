//! Static membership (KIP-345): what a fatal error about the `group.instance.id` means, in
//! words an operator can act on, and how many fences in a row the runtime takes before it
//! stops (see [`Reconnect::max_fenced`](crate::policy::Reconnect::max_fenced)).

use std::time::Duration;

use crate::{ClientError, ErrorCode};

/// A fatal error caused by another member using the same `group.instance.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InstanceConflict {
    /// `FENCED_INSTANCE_ID` (classic group protocol): another member joined with this instance
    /// id and took this member's place.
    Fenced,
    /// `UNRELEASED_INSTANCE_ID` (consumer group protocol, KIP-848): another member holds the
    /// instance id and has not left; this client was refused, the holder goes on.
    Unreleased,
}

impl InstanceConflict {
    /// The conflict a fatal error stands for, if it is one.
    pub fn of(e: &ClientError) -> Option<Self> {
        let code = e.code()?;
        if code == ErrorCode::FENCED_INSTANCE_ID {
            Some(InstanceConflict::Fenced)
        } else if code == ErrorCode::UNRELEASED_INSTANCE_ID {
            Some(InstanceConflict::Unreleased)
        } else {
            None
        }
    }

    /// What happened and what to do, naming the group and the instance id.
    pub fn explain(self, group: &str, instance: &str) -> String {
        match self {
            InstanceConflict::Fenced => format!(
                "fenced: another member joined group `{group}` with the same group.instance.id \
                 `{instance}` and took this member's place; two workers must never share an \
                 instance id"
            ),
            InstanceConflict::Unreleased => format!(
                "refused: group.instance.id `{instance}` of group `{group}` is held by another \
                 member (with the consumer group protocol the id is free only once its holder \
                 leaves or its session times out); two workers must never share an instance id"
            ),
        }
    }
}

/// Counts the fences a static member takes in a row.
#[derive(Debug)]
pub(crate) struct FenceCount {
    in_row: u32,
    limit: u32,
    /// A client that lived longer than this ends the row.
    fresh_after: Duration,
}

impl FenceCount {
    /// Stops at the `limit`-th fence in a row (at least the first); a client living longer
    /// than `fresh_after` starts the count again.
    pub fn new(limit: u32, fresh_after: Duration) -> Self {
        FenceCount {
            in_row: 0,
            limit: limit.max(1),
            fresh_after,
        }
    }

    /// A client ended after living `lived`, by a fence or not. Returns the fences in the row so
    /// far (0 when it did not end by a fence).
    pub fn client_ended(&mut self, fenced: bool, lived: Duration) -> u32 {
        if lived > self.fresh_after || !fenced {
            self.in_row = 0;
        }
        if fenced {
            self.in_row += 1;
        }
        self.in_row
    }

    /// Whether the fences in the row have reached the limit: stop.
    pub fn exhausted(&self) -> bool {
        self.in_row >= self.limit
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::error::fatal_consumption;

    const FRESH: Duration = Duration::from_secs(64);
    const SHORT: Duration = Duration::from_secs(2);

    #[test]
    fn stops_at_the_limit_of_fences_in_a_row() {
        let mut count = FenceCount::new(3, FRESH);
        assert_eq!(count.client_ended(true, SHORT), 1);
        assert!(!count.exhausted());
        assert_eq!(count.client_ended(true, SHORT), 2);
        assert!(!count.exhausted());
        assert_eq!(count.client_ended(true, SHORT), 3);
        assert!(count.exhausted());
    }

    #[test]
    fn a_long_lived_client_or_another_loss_starts_the_row_again() {
        let mut count = FenceCount::new(2, FRESH);
        count.client_ended(true, SHORT);
        // Fenced again, but after a long quiet life: a new row.
        assert_eq!(count.client_ended(true, FRESH * 2), 1);
        assert!(!count.exhausted());
        // Lost for another reason (no broker reachable): the row ends.
        assert_eq!(count.client_ended(false, SHORT), 0);
        assert_eq!(count.client_ended(true, SHORT), 1);
        assert!(!count.exhausted());
    }

    #[test]
    fn a_limit_of_zero_stops_at_the_first_fence() {
        let mut count = FenceCount::new(0, FRESH);
        assert_eq!(count.limit(), 1);
        count.client_ended(true, SHORT);
        assert!(count.exhausted());
    }

    #[test]
    fn conflicts_are_told_apart_from_other_fatal_errors() {
        let fenced = fatal_consumption(ErrorCode::FENCED_INSTANCE_ID);
        let refused = fatal_consumption(ErrorCode::UNRELEASED_INSTANCE_ID);
        let other = fatal_consumption(ErrorCode::FATAL);
        assert_eq!(
            InstanceConflict::of(&fenced),
            Some(InstanceConflict::Fenced)
        );
        assert_eq!(
            InstanceConflict::of(&refused),
            Some(InstanceConflict::Unreleased)
        );
        assert_eq!(InstanceConflict::of(&other), None);
        let text = InstanceConflict::Fenced.explain("billing", "worker-1");
        assert!(
            text.contains("`worker-1`") && text.contains("`billing`"),
            "{text}"
        );
    }
}
