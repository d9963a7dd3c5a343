//! The one validation of [`Settings`]: pure, used by
//! [`ConsumerBuilder::build`](crate::ConsumerBuilder::build) and by the configuration loader, so
//! that a value is refused the same way from code, file or environment.

use std::time::Duration;

use crate::policy::Backoff;

use super::Settings;

/// Where a group of settings was given, for the error that refuses one of its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A builder method, by name (`retry_policy`).
    Code(&'static str),
    /// A [`ConsumerConfig`](crate::config::ConsumerConfig) applied with
    /// [`ConsumerBuilder::config`](crate::ConsumerBuilder::config).
    Config,
}

/// One refused value: the setting by its path under `kafka:` in the file (`retry.max_attempts`),
/// the value as given, and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub setting: String,
    pub value: String,
    pub reason: String,
}

/// The group a setting's origin is recorded under, and the builder method that sets it.
pub(crate) fn group_of(setting: &str) -> (&str, &'static str) {
    let group = setting.split('.').next().unwrap_or(setting);
    let method = match group {
        "max_in_flight" => "max_in_flight",
        "max_in_flight_per_partition" => "max_in_flight_per_partition",
        "max_batches_in_flight" => "max_batches_in_flight",
        "buffer" => "buffer_limits",
        "batch" => "batch_limits",
        "retry" => "retry_policy",
        "processing_timeout" => "handler_timeout",
        "circuit_breaker" => "circuit_breaker",
        "reconnect" => "reconnect",
        "commit_interval" => "commit_interval",
        "drain_timeout" => "drain_timeout",
        "dead_letter" => "dead_letter",
        _ => "",
    };
    (group, method)
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Settings {
    /// Every value these settings refuse (no I/O). The rules: counts at least 1; durations
    /// above zero; a backoff's first delay at most its longest, its multiplier at least 1, its
    /// jitter from 0 to 1; a circuit breaker's counts at least 1 and its failure rate from 0
    /// to 1; no dead-letter topic among the consumed topics.
    /// A reason that names another setting names it with `name` (`kafka.retry.max_backoff` in
    /// a file).
    pub(crate) fn problems(&self, name: &dyn Fn(&str) -> String) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut err = |setting: &str, value: String, reason: &str| {
            out.push(Problem {
                setting: setting.into(),
                value,
                reason: reason.into(),
            })
        };
        let r = &self.retry;
        let counts = [
            ("max_in_flight", Some(self.max_in_flight as u64)),
            (
                "max_in_flight_per_partition",
                self.max_in_flight_per_partition.map(|n| n as u64),
            ),
            (
                "max_batches_in_flight",
                Some(self.max_batches_in_flight as u64),
            ),
            ("batch.max_messages", Some(self.batch.max_messages as u64)),
            ("batch.max_bytes", Some(self.batch.max_bytes as u64)),
            (
                "buffer.partition_messages",
                Some(self.limits.partition_messages as u64),
            ),
            (
                "buffer.partition_bytes",
                Some(self.limits.partition_bytes as u64),
            ),
            (
                "buffer.total_messages",
                Some(self.limits.total_messages as u64),
            ),
            ("buffer.total_bytes", Some(self.limits.total_bytes as u64)),
            ("retry.max_attempts", r.max_attempts.map(u64::from)),
            (
                "circuit_breaker.consecutive_failures",
                self.circuit_breaker
                    .as_ref()
                    .map(|b| u64::from(b.consecutive_failures)),
            ),
            (
                "circuit_breaker.min_calls",
                self.circuit_breaker
                    .as_ref()
                    .map(|b| u64::from(b.min_calls)),
            ),
            (
                "reconnect.max_fenced",
                Some(u64::from(self.reconnect.max_fenced)),
            ),
        ];
        for (setting, value) in counts {
            if value == Some(0) {
                err(setting, "0".into(), "must be at least 1");
            }
        }

        let durations = [
            ("batch.max_wait", Some(self.batch.max_wait)),
            ("commit_interval", Some(self.commit_interval)),
            ("processing_timeout", self.handler_timeout),
            ("retry.max_elapsed", r.max_elapsed),
        ];
        for (setting, value) in durations {
            if value == Some(Duration::ZERO) {
                err(setting, "0s".into(), "must be above zero, like 100ms or 5s");
            }
        }

        backoff_problems("retry", &r.backoff, name, &mut err);
        backoff_problems("reconnect.backoff", &self.reconnect.backoff, name, &mut err);

        if let Some(d) = &self.dead_letter {
            // A dead-letter topic consumed again would loop a poison record forever.
            if let Some(dlq) = self
                .topics
                .iter()
                .map(|t| d.topic_for(t))
                .find(|dlq| self.topics.contains(dlq))
            {
                err(
                    "dead_letter.topic",
                    dlq,
                    &format!(
                        "is one of {}: dead letters would be consumed again; pick another \
                         topic, or leave it unset for `<topic>.dlq`",
                        name("topics")
                    ),
                );
            }
        }

        if let Some(b) = &self.circuit_breaker {
            if !(0.0..=1.0).contains(&b.failure_rate) {
                err(
                    "circuit_breaker.failure_rate",
                    b.failure_rate.to_string(),
                    "must be from 0 to 1 (the fraction of failed attempts that opens it)",
                );
            }
        }
        out
    }

    /// Where the value of `setting` was given, in words: `ConsumerBuilder::retry_policy`, or
    /// the configuration's `kafka.retry.max_attempts`; `None` for a default.
    pub(crate) fn origin_of(&self, setting: &str) -> Option<String> {
        let (group, method) = group_of(setting);
        match self.origins.get(group)? {
            Origin::Code(m) => Some(format!("given to ConsumerBuilder::{m}")),
            Origin::Config => Some(format!(
                "from the configuration's kafka.{setting} (ConsumerBuilder::config; or set it \
                 with ConsumerBuilder::{method})"
            )),
        }
    }
}

/// A backoff's rules, its settings named under `prefix` as the file names the retry's:
/// `initial_backoff`, `max_backoff`, `multiplier`, `jitter`.
fn backoff_problems(
    prefix: &str,
    b: &Backoff,
    name: &dyn Fn(&str) -> String,
    err: &mut impl FnMut(&str, String, &str),
) {
    if b.initial > b.max {
        err(
            &format!("{prefix}.initial_backoff"),
            show(b.initial),
            &format!(
                "must be at most {} ({})",
                name(&format!("{prefix}.max_backoff")),
                show(b.max)
            ),
        );
    }
    if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
        err(
            &format!("{prefix}.multiplier"),
            b.multiplier.to_string(),
            "must be a number of at least 1 (1 keeps the delay constant)",
        );
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        err(
            &format!("{prefix}.jitter"),
            b.jitter.to_string(),
            "must be from 0 to 1 (the randomized fraction of each delay)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Ordering;

    #[test]
    fn the_defaults_pass_their_own_validation() {
        let problems = Settings::default().problems(&|s| s.to_owned());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_reason_names_the_other_setting_as_the_caller_names_settings() {
        let mut s = Settings::default();
        s.retry.backoff.initial = Duration::from_secs(60);
        let problems = s.problems(&|s| format!("kafka.{s}"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].setting, "retry.initial_backoff");
        assert!(problems[0]
            .reason
            .contains("at most kafka.retry.max_backoff (30s)"));
    }

    #[test]
    fn the_per_partition_limit_does_not_follow_the_global_one() {
        let mut s = Settings {
            ordering: Ordering::Unordered,
            max_in_flight: 10,
            ..Settings::default()
        };
        assert_eq!(s.max_in_flight_per_partition(), 1_024);
        assert_eq!(s.lanes_per_partition(), 10);
        s.ordering = Ordering::Partition;
        assert_eq!(s.max_in_flight_per_partition(), 1);
        assert_eq!(s.lanes_per_partition(), 1);
    }
}
