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
}
