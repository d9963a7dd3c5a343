//! `sluicegate offsets reset`: move a consumer group's committed offsets on a topic while the
//! group has no active members — to each partition's earliest or latest offset, to a given
//! offset (clamped to what the partition holds), or to the first record at or after a time.

use std::fmt;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::on_blocking_thread;
use crate::cluster::{self, Client, GroupLookup, LOOKUP_TIMEOUT};
use crate::report::print_summary;
use crate::settings::Connection;
use crate::OffsetsResetArgs;

/// Where `--to` moves each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The low watermark: the oldest record still held.
    Earliest,
    /// The high watermark: past the newest record, so only new records are consumed.
    Latest,
    /// This offset, clamped to [low, high] per partition.
    Offset(i64),
    /// The first record whose timestamp is at or after this time (ms since the epoch); the high
    /// watermark where there is none.
    Time(i64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Earliest => write!(f, "earliest"),
            Target::Latest => write!(f, "latest"),
            Target::Offset(o) => write!(f, "offset {o}"),
            Target::Time(ms) => match chrono::DateTime::from_timestamp_millis(*ms) {
                Some(t) => write!(
                    f,
                    "time {} (ms:{ms})",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                None => write!(f, "time ms:{ms}"),
            },
        }
    }
}

/// Parses `--to`: `earliest`, `latest`, an offset (a plain integer), an RFC 3339 time
/// (`2024-05-01T12:00:00Z`) or `ms:` and milliseconds since the epoch (`ms:1714564800000`).
/// A plain integer is an offset, never a time: epoch milliseconds need the `ms:` prefix.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    let forms = "give earliest, latest, an offset (like 1234), an RFC 3339 time (like \
                 2024-05-01T12:00:00Z) or ms: and milliseconds since the epoch (like \
                 ms:1714564800000)";
    if s.eq_ignore_ascii_case("earliest") {
        return Ok(Target::Earliest);
    }
    if s.eq_ignore_ascii_case("latest") {
        return Ok(Target::Latest);
    }
    if let Ok(offset) = s.parse::<i64>() {
        if offset < 0 {
            return Err(format!("offset {offset} is negative; offsets start at 0"));
        }
        return Ok(Target::Offset(offset));
    }
    let ms = match s.strip_prefix("ms:") {
        Some(millis) => millis.trim().parse::<i64>().map_err(|_| {
            format!("`{s}`: after `ms:` give milliseconds since the epoch, like ms:1714564800000")
        })?,
        // Integers were taken as offsets above, so this accepts RFC 3339 only.
        None => super::dlq::parse_time(s)
            .map_err(|_| format!("`{s}` is not a place to reset to: {forms}"))?,
    };
    if ms < 0 {
        return Err(format!(
            "`{s}` is before 1970-01-01T00:00:00Z; Kafka timestamps start there"
        ));
    }
    Ok(Target::Time(ms))
}

/// One partition of a reset: where it was, where it goes.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionReset {
    pub topic: String,
    pub partition: i32,
    /// The low watermark when the reset was planned.
    pub low: i64,
    /// The high watermark when the reset was planned.
    pub high: i64,
    /// The committed offset before the reset (`None`: nothing committed).
    pub current: Option<i64>,
    /// The offset the reset commits.
    pub new: i64,
    /// Whether the offset asked for (or found by time) lay outside [low, high] and was moved
    /// to the nearest end.
    pub clamped: bool,
    /// The offset asked for (or found by time) before clamping, when it was clamped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<i64>,
    /// The committed offset read back after the commit (`None` in a dry run).
    pub committed: Option<i64>,
}

impl PartitionReset {
    /// Why `new` differs from what was asked, for people.
    fn note(&self) -> String {
        match self.requested {
            Some(r) if r > self.high => {
                format!("clamped: {r} is above the high watermark {}", self.high)
            }
            Some(r) => format!("clamped: {r} is below the low watermark {}", self.low),
            None => String::new(),
        }
    }
}

/// The offset `target` puts a partition with watermarks `(low, high)` at, and the unclamped
/// offset when it had to be clamped. `by_time` is the broker's answer to the time look-up
/// (only for [`Target::Time`]): an offset, or [`Offset::End`] when no record is that recent.
pub fn resolve(
    target: Target,
    (low, high): (i64, i64),
    by_time: Option<Offset>,
) -> Result<(i64, Option<i64>)> {
    let wanted = match target {
        Target::Earliest => return Ok((low, None)),
        Target::Latest => return Ok((high, None)),
        Target::Offset(o) => o,
        Target::Time(_) => match by_time {
            Some(Offset::Offset(o)) => o,
            Some(Offset::End) => return Ok((high, None)),
            other => bail!("the broker answered the time look-up with {other:?}"),
        },
    };
    let new = wanted.clamp(low, high);
    Ok((new, (new != wanted).then_some(wanted)))
}

/// What a reset did (or, in a dry run, would do), as printed with `--json`.
#[derive(Serialize, Debug)]
pub struct ResetSummary {
    pub ok: bool,
    pub dry_run: bool,
    pub group: String,
    pub topic: String,
    /// `--to` as understood: `earliest`, `latest`, `offset N` or `time ... (ms:N)`.
    pub to: String,
    /// The group's state as the broker described it (`None`: the broker does not list the
    /// group, or cannot list groups at all).
    pub group_state: Option<String>,
    pub partitions: Vec<PartitionReset>,
    /// Partitions whose read-back offset differs from the one committed.
    pub mismatches: Vec<String>,
}

impl ResetSummary {
    /// The summary for people: one line per partition, then the verdict.
    pub fn render(&self) -> String {
        let dash = |o: Option<i64>| o.map_or_else(|| "none".to_string(), |o| o.to_string());
        let mut out = format!(
            "offsets reset of group `{}` on `{}` to {}{}\n",
            self.group,
            self.topic,
            self.to,
            if self.dry_run { " (dry run)" } else { "" }
        );
        out += &format!(
            "{:>9}  {:>12}  {:>12}  {:>12}  {:>12}  {}\n",
            "partition", "low", "high", "current", "new", "note"
        );
        for p in &self.partitions {
            out += format!(
                "{:>9}  {:>12}  {:>12}  {:>12}  {:>12}  {}",
                p.partition,
                p.low,
                p.high,
                dash(p.current),
                p.new,
                p.note()
            )
            .trim_end();
            out.push('\n');
        }
        if self.dry_run {
            out += "dry run: nothing was changed\n";
        } else if self.ok {
            out += &format!(
                "OK: committed for group `{}` and read back: {} partition(s) at their new offsets\n",
                self.group,
                self.partitions.len()
            );
        } else {
            out += "FAILED: the offsets read back differ from the ones committed:\n";
            for m in &self.mismatches {
                out += &format!("  {m}\n");
            }
        }
        out
    }
}

/// The partitions to reset (or, for `consume`, to read): those given (each checked against the
/// topic), or all of them.
pub fn chosen_partitions(topic: &str, count: i32, given: &[i32]) -> Result<Vec<i32>> {
    if given.is_empty() {
        return Ok((0..count).collect());
    }
    let mut chosen = given.to_vec();
    chosen.sort_unstable();
    chosen.dedup();
    if let Some(bad) = chosen.iter().find(|p| !(0..count).contains(*p)) {
        bail!(
            "topic `{topic}` has {count} partition(s), numbered 0 to {}; there is no partition \
             {bad}",
            count - 1
        );
    }
    Ok(chosen)
}

/// The broker's answer to "first offset at or after `ms`" for each of `partitions`.
pub fn offsets_for_time(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    ms: i64,
) -> Result<Vec<Offset>> {
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition_offset(topic, p, Offset::Offset(ms))?;
    }
    let found = client
        .offsets_for_times(list, LOOKUP_TIMEOUT)
        .with_context(|| format!("cannot look up offsets by time in `{topic}`"))?;
    partitions
        .iter()
        .map(|&p| {
            let e = found
                .find_partition(topic, p)
                .with_context(|| format!("the time look-up did not answer for {topic}/{p}"))?;
            e.error()
                .with_context(|| format!("cannot look up an offset by time in {topic}/{p}"))?;
            Ok(e.offset())
        })
        .collect()
}

/// Stops the reset when the group has members; says so when nobody can tell.
fn refuse_if_active(group: &str, lookup: &GroupLookup) -> Result<()> {
    match lookup {
        GroupLookup::Described { state, members } if lookup.is_active() => {
            let state = if state.is_empty() { "unknown" } else { state };
            let listed = if members.is_empty() {
                String::new()
            } else {
                let members: Vec<String> = members.iter().map(ToString::to_string).collect();
                format!(": {}", members.join(", "))
            };
            bail!(
                "group `{group}` is active (state {state}, {} member{}{listed}); stop its \
                 consumers first. Nothing was changed.",
                members.len(),
                if members.len() == 1 { "" } else { "s" }
            )
        }
        GroupLookup::Unsupported => {
            eprintln!(
                "warning: the broker does not list consumer groups (ListGroups/DescribeGroups), \
                 so whether group `{group}` has active members cannot be checked here; the \
                 broker refuses the commit if it has (librdkafka's mock cluster, the embedded \
                 broker, does not list groups)"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a commit failed because the broker takes the group to have members.
fn refused_for_membership(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    )
}

/// Plans the reset, and unless a dry run, commits it and reads it back. Blocking.
fn reset_blocking(args: &OffsetsResetArgs) -> Result<ResetSummary> {
    let (group, topic) = (args.group.as_str(), args.topic.as_str());
    let connection = Connection::load(&args.connect, std::env::vars(), &args.properties)?;
    cluster::require_kafka(&connection, LOOKUP_TIMEOUT)?;
    let client = cluster::client(&connection, group)?;

    let Some(count) = cluster::partition_count(&client, topic)? else {
        bail!("topic `{topic}` does not exist (or has no partitions); nothing was changed");
    };
    let partitions = chosen_partitions(topic, count, &args.partitions)?;
    let lookup = cluster::describe_group(&client, group, LOOKUP_TIMEOUT)?;
    refuse_if_active(group, &lookup)?;

    let marks = cluster::watermarks_of(&client, topic, &partitions, LOOKUP_TIMEOUT)?;
    let current =
        cluster::committed_offsets_of(&client, group, topic, &partitions, LOOKUP_TIMEOUT)?;
    let by_time = match args.to {
        Target::Time(ms) => offsets_for_time(&client, topic, &partitions, ms)?
            .into_iter()
            .map(Some)
            .collect(),
        _ => vec![None; partitions.len()],
    };
    let mut resets = Vec::with_capacity(partitions.len());
    for (i, &partition) in partitions.iter().enumerate() {
        let (new, requested) = resolve(args.to, marks[i], by_time[i])
            .with_context(|| format!("cannot place {topic}/{partition}"))?;
        resets.push(PartitionReset {
            topic: topic.to_string(),
            partition,
            low: marks[i].0,
            high: marks[i].1,
            current: current[i],
            new,
            clamped: requested.is_some(),
            requested,
            committed: None,
        });
    }
    let mut summary = ResetSummary {
        ok: true,
        dry_run: args.dry_run,
        group: group.to_string(),
        topic: topic.to_string(),
        to: args.to.to_string(),
        group_state: match &lookup {
            GroupLookup::Described { state, .. } => Some(state.clone()),
            GroupLookup::Unknown | GroupLookup::Unsupported => None,
        },
        partitions: resets,
        mismatches: Vec::new(),
    };
    if args.dry_run {
        return Ok(summary);
    }

    let mut list = TopicPartitionList::new();
    for r in &summary.partitions {
        // `commit` takes the next offset to consume, as `new` is.
        list.add_partition_offset(topic, r.partition, Offset::Offset(r.new))?;
    }
    if let Err(e) = client.commit(&list, CommitMode::Sync) {
        let after =
            cluster::committed_offsets_of(&client, group, topic, &partitions, LOOKUP_TIMEOUT);
        let changed = match &after {
            Ok(after) if *after == current => "Nothing was changed (offsets read back).",
            Ok(_) => "Some committed offsets changed: check them with --dry-run.",
            Err(_) => "The committed offsets could not be read back.",
        };
        if refused_for_membership(&e) {
            bail!(
                "the broker refused the commit for group `{group}` ({e}): the group has active \
                 members or is rebalancing; stop its consumers first. {changed}"
            );
        }
        return Err(e).with_context(|| format!("cannot commit for group `{group}`. {changed}"));
    }

    let read_back =
        cluster::committed_offsets_of(&client, group, topic, &partitions, LOOKUP_TIMEOUT)
            .context("the commit was accepted, but reading it back failed")?;
    for (r, committed) in summary.partitions.iter_mut().zip(read_back) {
        r.committed = committed;
        if committed != Some(r.new) {
            let shown = committed.map_or_else(|| "none".to_string(), |o| o.to_string());
            summary.mismatches.push(format!(
                "{topic}/{}: committed {}, read back {shown}",
                r.partition, r.new
            ));
        }
    }
    summary.ok = summary.mismatches.is_empty();
    Ok(summary)
}

/// Runs `sluicegate offsets reset`; `Ok(false)` when the read-back differs from the commit.
pub async fn reset(args: OffsetsResetArgs) -> Result<bool> {
    let (args, summary) = on_blocking_thread(args, reset_blocking).await?;
    let summary = summary?;
    print_summary(
        args.json,
        &summary,
        &summary.mismatches,
        ResetSummary::render,
    )?;
    Ok(summary.ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::GroupMember;

    #[test]
    fn targets_parse_as_keywords_offsets_or_times() {
        assert_eq!(parse_target("earliest"), Ok(Target::Earliest));
        assert_eq!(parse_target("LATEST"), Ok(Target::Latest));
        assert_eq!(parse_target("1234"), Ok(Target::Offset(1234)));
        assert_eq!(parse_target("0"), Ok(Target::Offset(0)));
        assert_eq!(
            parse_target("ms:1714564800000"),
            Ok(Target::Time(1_714_564_800_000))
        );
        assert_eq!(
            parse_target("2024-05-01T12:00:00Z"),
            Ok(Target::Time(1_714_564_800_000))
        );
        assert_eq!(
            parse_target("2024-05-01T14:00:00.5+02:00"),
            Ok(Target::Time(1_714_564_800_500))
        );
    }

    #[test]
    fn a_bare_integer_is_an_offset_and_epoch_millis_need_their_prefix() {
        // The same digits: an offset without the prefix, a time with it.
        assert_eq!(
            parse_target("1714564800000"),
            Ok(Target::Offset(1_714_564_800_000))
        );
        assert_eq!(
            parse_target("ms:1714564800000"),
            Ok(Target::Time(1_714_564_800_000))
        );
    }

    #[test]
    fn bad_targets_say_what_is_accepted() {
        let err = parse_target("yesterday").unwrap_err();
        assert!(
            err.contains("earliest") && err.contains("RFC 3339") && err.contains("ms:"),
            "{err}"
        );
        assert!(parse_target("ms:soon").unwrap_err().contains("after `ms:`"));
        assert!(parse_target("-5").unwrap_err().contains("negative"));
        assert!(parse_target("ms:-5").unwrap_err().contains("1970"));
        assert!(parse_target("1969-12-31T23:59:59Z")
            .unwrap_err()
            .contains("1970"));
    }

    #[test]
    fn earliest_and_latest_are_the_watermarks() {
        assert_eq!(resolve(Target::Earliest, (3, 10), None).unwrap(), (3, None));
        assert_eq!(resolve(Target::Latest, (3, 10), None).unwrap(), (10, None));
    }

    #[test]
    fn offsets_outside_the_watermarks_are_clamped_to_the_nearest_end() {
        assert_eq!(
            resolve(Target::Offset(5), (3, 10), None).unwrap(),
            (5, None)
        );
        assert_eq!(
            resolve(Target::Offset(3), (3, 10), None).unwrap(),
            (3, None)
        );
        assert_eq!(
            resolve(Target::Offset(10), (3, 10), None).unwrap(),
            (10, None)
        );
        assert_eq!(
            resolve(Target::Offset(11), (3, 10), None).unwrap(),
            (10, Some(11))
        );
        assert_eq!(
            resolve(Target::Offset(1), (3, 10), None).unwrap(),
            (3, Some(1))
        );
        assert_eq!(resolve(Target::Offset(0), (0, 0), None).unwrap(), (0, None));
    }

    #[test]
    fn a_time_goes_to_the_offset_found_or_to_the_high_watermark() {
        let t = Target::Time(1_000);
        assert_eq!(
            resolve(t, (3, 10), Some(Offset::Offset(7))).unwrap(),
            (7, None)
        );
        assert_eq!(resolve(t, (3, 10), Some(Offset::End)).unwrap(), (10, None));
        assert!(resolve(t, (3, 10), Some(Offset::Invalid)).is_err());
        assert!(resolve(t, (3, 10), None).is_err());
    }

    #[test]
    fn chosen_partitions_are_checked_sorted_and_unique() {
        assert_eq!(chosen_partitions("t", 3, &[]).unwrap(), vec![0, 1, 2]);
        assert_eq!(chosen_partitions("t", 3, &[2, 0, 2]).unwrap(), vec![0, 2]);
        let err = chosen_partitions("t", 3, &[3]).unwrap_err().to_string();
        assert!(
            err.contains("has 3 partition(s)") && err.contains("no partition 3"),
            "{err}"
        );
    }

    #[test]
    fn an_active_group_is_refused_with_its_state_and_members() {
        let member = |id: &str, client_id: &str, host: &str| GroupMember {
            id: id.into(),
            client_id: client_id.into(),
            host: host.into(),
            assignment: None,
        };
        let lookup = GroupLookup::Described {
            state: "Stable".into(),
            members: vec![member("m-1", "app", "/10.0.0.1"), member("m-2", "", "")],
        };
        let err = refuse_if_active("billing", &lookup)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "group `billing` is active (state Stable, 2 members: m-1 (client app, host \
             /10.0.0.1), m-2); stop its consumers first. Nothing was changed."
        );
        let empty = GroupLookup::Described {
            state: "Empty".into(),
            members: Vec::new(),
        };
        assert!(refuse_if_active("billing", &empty).is_ok());
        assert!(refuse_if_active("billing", &GroupLookup::Unknown).is_ok());
    }

    #[test]
    fn the_table_shows_none_and_clamping() {
        let summary = ResetSummary {
            ok: true,
            dry_run: true,
            group: "g".into(),
            topic: "t".into(),
            to: Target::Offset(12).to_string(),
            group_state: None,
            partitions: vec![PartitionReset {
                topic: "t".into(),
                partition: 0,
                low: 0,
                high: 10,
                current: None,
                new: 10,
                clamped: true,
                requested: Some(12),
                committed: None,
            }],
            mismatches: Vec::new(),
        };
        let text = summary.render();
        assert!(text.contains("to offset 12 (dry run)"), "{text}");
        assert!(
            text.contains("none            10  clamped: 12 is above the high watermark 10"),
            "{text}"
        );
        assert!(text.contains("dry run: nothing was changed"), "{text}");
    }

    #[test]
    fn times_are_shown_in_both_forms() {
        assert_eq!(
            Target::Time(1_714_564_800_000).to_string(),
            "time 2024-05-01T12:00:00.000Z (ms:1714564800000)"
        );
    }
}
