//! [`Reconnect`]: when the runtime gives up on its Kafka client and builds a new one.

use std::time::Duration;

use super::Backoff;

/// When and how the runtime re-creates its Kafka client.
///
/// librdkafka reconnects to brokers on its own, and that is enough for a broker restart. But a
/// client that hit a fatal error cannot go on, and one that has reached no broker for a long
/// time may hold stale state (a DNS change, an expired session). Then the runtime abandons its
/// uncommitted work (re-delivered, as after a crash: at-least-once holds), drops the client and
/// builds a new one, waiting [`backoff`](Self::backoff) between attempts (1 s doubling to
/// 64 s by default).
///
/// A static member (one with a `group.instance.id`, see
/// [`ConsumerBuilder::group_instance_id`](crate::ConsumerBuilder::group_instance_id)) is
/// *fenced* when another member joins the group with the same instance id: its client hits a
/// fatal error. A new client joins with the same id again, and so fences the other member in
/// turn; two members misconfigured with one id would fence each other for ever. So fences count
/// apart: the [`max_fenced`](Self::max_fenced)-th fence in a row stops the consumer with
/// [`Error::Fatal`](crate::Error::Fatal) (the first fence, when [`on_fatal`](Self::on_fatal)
/// is off). The member fenced first reaches the limit first, so the other keeps the instance id
/// and the group settles. Every fence is logged at `error` level naming the group and the
/// instance id.
///
/// ```
/// use std::time::Duration;
/// use sluicegate::policy::Reconnect;
///
/// let reconnect = Reconnect::default().with_unreachable_after(Duration::from_secs(30));
/// # let _ = reconnect;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Reconnect {
    /// Re-create the client after no broker was reachable this long (60 s by default);
    /// `None` to leave reconnection to librdkafka alone.
    pub unreachable_after: Option<Duration>,
    /// Re-create the client after a fatal client error (yes by default); otherwise the consumer
    /// stops with [`Error::Fatal`](crate::Error::Fatal).
    pub on_fatal: bool,
    /// The delays before each new client; they start again from the first once a client has
    /// lived longer than the longest delay.
    pub backoff: Backoff,
    /// How many times in a row a static member may be fenced by another member with the same
    /// `group.instance.id` before it stops with [`Error::Fatal`](crate::Error::Fatal) (3 by
    /// default; 0 counts as 1). The count starts again once a client has lived longer than
    /// the longest backoff delay.
    pub max_fenced: u32,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            unreachable_after: Some(Duration::from_secs(60)),
            on_fatal: true,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(64),
                multiplier: 2.0,
                jitter: 0.2,
            },
            max_fenced: 3,
        }
    }
}

impl Reconnect {
    /// Never re-create the client: librdkafka's own reconnects only, and a fatal error stops the
    /// consumer.
    pub fn never() -> Self {
        Reconnect {
            unreachable_after: None,
            on_fatal: false,
            ..Self::default()
        }
    }

    /// Re-creates the client after no broker was reachable for `after`.
    pub fn with_unreachable_after(mut self, after: Duration) -> Self {
        self.unreachable_after = Some(after);
        self
    }

    /// Sets the delays before each new client.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how many fences in a row a static member takes before it stops; see
    /// [`max_fenced`](Self::max_fenced).
    pub fn with_max_fenced(mut self, fences: u32) -> Self {
        self.max_fenced = fences;
        self
    }
}
