//! [`Health`]: whether a consumer is alive and ready, with the reasons, as the
//! `/health/live` and `/health/ready` endpoints report them.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::policy::CircuitState;
use crate::status::{CatchUp, ConsumerStatus};

/// How many partitions still catching up the readiness detail names; the rest are counted.
const CATCH_UP_NAMED: usize = 5;

/// The poll loop counts as stuck when it has not turned for this long. Its longest legitimate
/// waits (draining revoked partitions, a final commit) are bounded by the drain timeout, 10 s
/// by default; the margin keeps a slow rebalance from reading as a dead consumer. In
/// exactly-once mode the loop turns between batches, so a batch handled for longer than this
/// reads as stalled too.
pub const LIVENESS_STALL: Duration = Duration::from_secs(60);

/// A consumer's liveness and readiness.
///
/// *Live*: the poll loop is running and turned within [`LIVENESS_STALL`]. A consumer that is
/// not live should be restarted.
///
/// *Ready*: live, in its group (it owns partitions, or the group gave it none and is stable),
/// a broker is reachable, the circuit breaker is not open, no partition is stopped at a
/// record the handler gave up on (see [`StuckPartition`](crate::StuckPartition)), and, for a
/// reader from the beginning, every partition is handled up to the log end seen at start
/// (see [`CatchUp`]; the `catch_up` check, present only for such readers). A consumer
/// that is not ready is working on it (rebalancing, reconnecting, cooling down) or needs an
/// operator (a stuck partition); traffic routing and alerts use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The poll loop is running and turned recently.
    pub live: bool,
    /// Every readiness check passes.
    pub ready: bool,
    /// Each check with its verdict, in a fixed order.
    pub checks: Vec<Check>,
}

/// One health check's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `poll_loop`, `group`, `brokers`, `circuit_breaker`, `stuck_partitions` or (readers
    /// from the beginning only) `catch_up`.
    pub name: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// What was seen, in a sentence.
    pub detail: String,
}

impl Health {
    /// Judges `status`, whose poll loop last turned at `last_poll`, as of `now`.
    pub fn of(status: &ConsumerStatus, last_poll: Option<SystemTime>, now: SystemTime) -> Self {
        let since_poll = last_poll.map(|t| now.duration_since(t).unwrap_or_default());
        let poll_loop = match since_poll {
            _ if status.stopped => Check::fail("poll_loop", "the consumer has stopped".into()),
            None => Check::fail("poll_loop", "the poll loop has not started".into()),
            Some(d) if d > LIVENESS_STALL => Check::fail(
                "poll_loop",
                format!("the poll loop has not turned for {} s", d.as_secs()),
            ),
            Some(d) => Check::pass(
                "poll_loop",
                format!("the poll loop turned {} ms ago", d.as_millis()),
            ),
        };
        let group = if let Some(lost) = &status.client_lost {
            Check::fail(
                "group",
                format!("the Kafka client was lost, and its partitions with it: {lost}"),
            )
        } else if !status.assigned.is_empty() {
            Check::pass(
                "group",
                format!("{} partitions assigned", status.assigned.len()),
            )
        } else if status.joined {
            Check::pass(
                "group",
                "in the group with no partitions (more members than partitions)".into(),
            )
        } else {
            Check::fail(
                "group",
                "no partitions assigned: joining the group or rebalancing".into(),
            )
        };
        let brokers = if status.brokers_unreachable {
            Check::fail("brokers", "no broker is reachable".into())
        } else {
            Check::pass("brokers", "a broker is reachable".into())
        };
        let circuit = match status.circuit {
            CircuitState::Open => Check::fail(
                "circuit_breaker",
                "open: the handler failed too often; cooling down".into(),
            ),
            state => Check::pass("circuit_breaker", state.as_str().into()),
        };
        let stuck = if status.stuck.is_empty() {
            Check::pass(
                "stuck_partitions",
                "no partition is stopped at a failed record".into(),
            )
        } else {
            let each: Vec<String> = status
                .stuck
                .iter()
                .map(|(tp, stuck)| format!("{tp} {stuck}"))
                .collect();
            Check::fail(
                "stuck_partitions",
                format!(
                    "{}; no dead-letter topic is configured, so each stays stopped until the \
                     consumer restarts or the partition is reassigned or moved by a seek: \
                     configure a dead-letter topic to set such records aside, or fix the handler",
                    each.join("; ")
                ),
            )
        };
        let live = poll_loop.ok;
        let mut checks = vec![poll_loop, group, brokers, circuit, stuck];
        if let Some(catch_up) = catch_up_check(&status.catch_up) {
            checks.push(catch_up);
        }
        Health {
            live,
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// The failing checks' details, joined: why the consumer is not ready.
    pub fn reasons(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The `catch_up` check of a reader from the beginning: how far it still is from the log ends
/// it saw at start.
fn catch_up_check(catch_up: &CatchUp) -> Option<Check> {
    Some(match catch_up {
        CatchUp::Untracked => return None,
        CatchUp::CaughtUp => Check::pass(
            "catch_up",
            "caught up: every partition handled up to the log end seen at start".into(),
        ),
        CatchUp::CatchingUp(behind) if behind.is_empty() => Check::fail(
            "catch_up",
            "catching up: looking up the log ends to read up to".into(),
        ),
        CatchUp::CatchingUp(behind) => {
            let mut each: Vec<String> = behind
                .iter()
                .take(CATCH_UP_NAMED)
                .map(|(tp, p)| format!("{tp} {p}"))
                .collect();
            if behind.len() > CATCH_UP_NAMED {
                each.push(format!("{} more", behind.len() - CATCH_UP_NAMED));
            }
            let s = if behind.len() == 1 { "" } else { "s" };
            Check::fail(
                "catch_up",
                format!(
                    "catching up: {} partition{s} not yet handled up to the log end seen at \
                     start, at most {} offsets to go ({})",
                    behind.len(),
                    catch_up.remaining(),
                    each.join(", ")
                ),
            )
        }
    })
}

impl Check {
    fn pass(name: &'static str, detail: String) -> Self {
        Check {
            name,
            ok: true,
            detail,
        }
    }

    fn fail(name: &'static str, detail: String) -> Self {
        Check {
            name,
            ok: false,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Progress, StuckPartition, TopicPartition};

    fn running() -> ConsumerStatus {
        let mut s = ConsumerStatus::default();
        s.assigned.insert(TopicPartition::new("t", 0));
        s
    }

    fn judge(s: &ConsumerStatus, polled_ago: Option<Duration>) -> Health {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        Health::of(s, polled_ago.map(|d| now - d), now)
    }

    #[test]
    fn a_polling_assigned_consumer_is_live_and_ready() {
        let h = judge(&running(), Some(Duration::from_millis(5)));
        assert!(h.live && h.ready, "{h:?}");
        assert_eq!(h.reasons(), "");
    }

    #[test]
    fn each_failing_check_makes_it_unready_and_says_why() {
        let mut unreachable = running();
        unreachable.brokers_unreachable = true;
        let mut open = running();
        open.circuit = CircuitState::Open;
        let alone = ConsumerStatus::default();
        for (s, reason) in [
            (&unreachable, "brokers: no broker is reachable"),
            (&open, "circuit_breaker: open"),
            (&alone, "group: no partitions assigned"),
        ] {
            let h = judge(s, Some(Duration::from_millis(5)));
            assert!(h.live, "{h:?}");
            assert!(!h.ready, "{h:?}");
            assert!(h.reasons().starts_with(reason), "{}", h.reasons());
        }
    }

    #[test]
    fn a_stuck_partition_makes_it_unready_naming_the_record_and_the_cause() {
        let mut s = running();
        s.stuck.insert(
            TopicPartition::new("orders", 3),
            StuckPartition {
                offset: 1200,
                kind: crate::ErrorKind::Decode,
                error: "decode error: cannot decode the value of orders/3 at offset 1200".into(),
                attempts: 1,
                since: SystemTime::UNIX_EPOCH,
            },
        );
        let h = judge(&s, Some(Duration::from_millis(5)));
        assert!(h.live && !h.ready, "{h:?}");
        let reasons = h.reasons();
        assert!(
            reasons.starts_with(
                "stuck_partitions: orders/3 stopped at offset 1200 after 1 attempt: decode error: \
                 cannot decode"
            ),
            "{reasons}"
        );
        assert!(
            reasons.contains("configure a dead-letter topic"),
            "{reasons}"
        );
    }

    #[test]
    fn a_reader_is_unready_until_caught_up_and_says_how_far_it_is() {
        let mut s = running();
        assert!(
            judge(&s, Some(Duration::ZERO))
                .checks
                .iter()
                .all(|c| c.name != "catch_up"),
            "other consumers have no catch_up check"
        );
        s.catch_up = CatchUp::CatchingUp(Default::default());
        let h = judge(&s, Some(Duration::ZERO));
        assert!(!h.ready, "{h:?}");
        assert_eq!(
            h.reasons(),
            "catch_up: catching up: looking up the log ends to read up to"
        );
        let behind = (0..7)
            .map(|p| {
                (
                    TopicPartition::new("prices", p),
                    Progress {
                        position: 10,
                        end: 110,
                    },
                )
            })
            .collect();
        s.catch_up = CatchUp::CatchingUp(behind);
        let h = judge(&s, Some(Duration::ZERO));
        assert!(!h.ready, "{h:?}");
        assert_eq!(
            h.reasons(),
            "catch_up: catching up: 7 partitions not yet handled up to the log end seen at \
             start, at most 700 offsets to go (prices/0 at offset 10 of 110, prices/1 at offset \
             10 of 110, prices/2 at offset 10 of 110, prices/3 at offset 10 of 110, prices/4 at \
             offset 10 of 110, 2 more)"
        );
        s.catch_up = CatchUp::CaughtUp;
        let h = judge(&s, Some(Duration::ZERO));
        assert!(h.ready, "{h:?}");
        assert!(h.checks.iter().any(|c| c.name == "catch_up" && c.ok));
    }

    #[test]
    fn a_member_without_partitions_is_ready_once_joined() {
        let s = ConsumerStatus {
            joined: true,
            ..ConsumerStatus::default()
        };
        assert!(judge(&s, Some(Duration::ZERO)).ready);
    }

    #[test]
    fn a_stalled_or_stopped_poll_loop_is_not_live() {
        let stalled = judge(&running(), Some(LIVENESS_STALL + Duration::from_secs(1)));
        assert!(!stalled.live && !stalled.ready);
        assert!(stalled.reasons().contains("has not turned for 61 s"));
        let mut stopped = running();
        stopped.stopped = true;
        assert!(!judge(&stopped, Some(Duration::ZERO)).live);
        assert!(!judge(&running(), None).live);
    }
}
