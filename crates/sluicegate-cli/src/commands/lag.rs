//! `sluicegate lag`: how far a consumer group is behind, per partition and in total.
//!
//! Lag is the log end (high watermark) minus the committed offset, never below 0. Where the
//! group has committed nothing, it is counted from the log start (low watermark): everything
//! still held is unread, as for a new consumer with `auto.offset.reset=earliest`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::cluster::{self, ClusterMetadata, Deadline, GroupLookup};
use crate::report::{print_summary, thousands};
use crate::LagArgs;

/// Where a partition's lag is counted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LagFrom {
    /// The group's committed offset.
    Committed,
    /// The log start: the group has committed nothing on the partition.
    LogStart,
}

/// The lag of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The committed offset: the next one the group will consume (`None`: nothing committed).
    pub committed: Option<i64>,
    /// The low watermark: the oldest offset still held.
    pub log_start: i64,
    /// The high watermark: one past the newest offset.
    pub log_end: i64,
    /// Records between where the group is and the log end.
    pub lag: i64,
    /// Where `lag` is counted from.
    pub lag_from: LagFrom,
}

/// The lag of a partition with watermarks `(log_start, log_end)`: from the committed offset
/// when there is one (0 when it is at or past the log end), else from the log start.
pub fn partition_lag(committed: Option<i64>, (log_start, log_end): (i64, i64)) -> (i64, LagFrom) {
    match committed {
        Some(c) => ((log_end - c).max(0), LagFrom::Committed),
        None => ((log_end - log_start).max(0), LagFrom::LogStart),
    }
}

/// How the topics measured were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicsFrom {
    /// Named with `--topic`.
    Given,
    /// The topics the group has committed offsets on, and those its members are assigned.
    Group,
}

/// A group's lag, as printed with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct LagReport {
    pub group: String,
    /// The group's state as the broker describes it (`None`: the broker does not list the
    /// group, or cannot list groups).
    pub group_state: Option<String>,
    /// How many members the group has (`None`: unknown).
    pub members: Option<usize>,
    /// What the broker could not tell about the group, when something.
    pub group_note: Option<String>,
    pub topics_from: TopicsFrom,
    pub topics: Vec<String>,
    pub partitions: Vec<PartitionLag>,
    /// The sum of `lag` over `partitions`.
    pub total_lag: i64,
    /// Partitions on which the group has committed nothing.
    pub partitions_without_commit: usize,
}

impl LagReport {
    /// The report for people: a heading, one line per partition, the totals.
    pub fn render(&self) -> String {
        let mut out = format!(
            "lag of group `{}` ({}), on {} topic{} ({})\n",
            self.group,
            self.group_about(),
            self.topics.len(),
            plural(self.topics.len()),
            match self.topics_from {
                TopicsFrom::Given => "as given",
                TopicsFrom::Group => "those it has committed offsets on or is assigned",
            }
        );
        if let Some(note) = &self.group_note {
            out += &format!("note: {note}\n");
        }
        let width = self
            .partitions
            .iter()
            .map(|p| p.topic.len())
            .max()
            .unwrap_or(0)
            .max("topic".len());
        out += &format!(
            "{:<width$}  {:>9}  {:>12}  {:>12}  {:>12}\n",
            "topic", "partition", "committed", "log end", "lag"
        );
        for p in &self.partitions {
            let committed = p.committed.map_or("none".to_string(), |c| c.to_string());
            let note = match p.lag_from {
                LagFrom::Committed => String::new(),
                LagFrom::LogStart => format!(
                    "  nothing committed: counted from the log start {}",
                    p.log_start
                ),
            };
            out += &format!(
                "{:<width$}  {:>9}  {:>12}  {:>12}  {:>12}{note}\n",
                p.topic, p.partition, committed, p.log_end, p.lag
            );
        }
        out += &format!(
            "total lag: {} over {} partition{}",
            thousands(self.total_lag.max(0) as u64),
            self.partitions.len(),
            plural(self.partitions.len())
        );
        if self.partitions_without_commit > 0 {
            out += &format!(
                " ({} without a committed offset)",
                self.partitions_without_commit
            );
        }
        out.push('\n');
        out
    }

    /// The group's state and member count, or why they are unknown.
    fn group_about(&self) -> String {
        match (&self.group_state, self.members) {
            (Some(state), Some(n)) => format!("state {state}, {n} member{}", plural(n)),
            (Some(state), None) => format!("state {state}"),
            _ => "state unknown".to_string(),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What the broker could not tell about `group`, for [`LagReport::group_note`].
fn group_note(group: &str, lookup: &GroupLookup) -> Option<String> {
    match lookup {
        GroupLookup::Described { .. } => None,
        GroupLookup::Unsupported => Some(
            "the broker does not support listing consumer groups (ListGroups/DescribeGroups), \
             so the group's state and members are unknown"
                .to_string(),
        ),
        GroupLookup::Unknown => Some(format!(
            "the broker does not list group `{group}`, so its state and members are unknown"
        )),
    }
}

/// Measures the lag of `group` (the group of `client`) on `topics`, or, when none are given,
/// on the topics it has committed offsets on or its members are assigned. `lookup` is what
/// the broker said about the group; `metadata` lists every topic. Blocking.
///
/// Fails when the group is unknown (no committed offsets, and not described as a live group),
/// when a topic given does not exist, and when the group has no topic to measure.
pub fn measure(
    client: &cluster::Client,
    group: &str,
    lookup: &GroupLookup,
    metadata: &ClusterMetadata,
    topics: &[String],
    deadline: Deadline,
) -> Result<LagReport> {
    // Every partition of every topic in one OffsetFetch: it shows both whether the group
    // exists and which topics it has committed offsets on.
    let all: Vec<(&str, i32)> = metadata
        .topics
        .iter()
        .filter(|t| t.error.is_none())
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition)))
        .collect();
    let committed: BTreeMap<(&str, i32), i64> = all
        .iter()
        .zip(cluster::committed_offsets_in(
            client,
            group,
            &all,
            deadline.left(),
        )?)
        .filter_map(|(&tp, c)| c.map(|c| (tp, c)))
        .collect();

    let described_live = matches!(lookup, GroupLookup::Described { state, .. } if state != "Dead");
    if committed.is_empty() && !described_live {
        match lookup {
            GroupLookup::Unsupported => bail!(
                "group `{group}` has no committed offsets on any topic, and the broker does not \
                 support listing groups (ListGroups/DescribeGroups) to tell whether it has \
                 members: it is unknown here, and there is no lag to measure"
            ),
            _ => bail!(
                "group `{group}` is unknown to the broker: it has no committed offsets on any \
                 topic and no members"
            ),
        }
    }

    let (chosen, topics_from) = if topics.is_empty() {
        let mut chosen: BTreeSet<String> = committed.keys().map(|(t, _)| t.to_string()).collect();
        if let GroupLookup::Described { members, .. } = lookup {
            for assigned in members.iter().flat_map(|m| m.assignment.iter().flatten()) {
                if metadata.topic(&assigned.topic).is_some() {
                    chosen.insert(assigned.topic.clone());
                }
            }
        }
        if chosen.is_empty() {
            bail!(
                "group `{group}` has no committed offsets and no assigned partitions the broker \
                 reports: no topic to measure; give --topic TOPIC to count its lag from the \
                 start of TOPIC"
            );
        }
        (chosen.into_iter().collect::<Vec<_>>(), TopicsFrom::Group)
    } else {
        let mut chosen = topics.to_vec();
        chosen.sort();
        chosen.dedup();
        (chosen, TopicsFrom::Given)
    };

    let mut partitions = Vec::new();
    for topic in &chosen {
        let Some(layout) = metadata.topic(topic) else {
            bail!("topic `{topic}` does not exist (or has no partitions)");
        };
        let numbers: Vec<i32> = layout.partitions.iter().map(|p| p.partition).collect();
        let marks = cluster::watermarks_of(client, topic, &numbers, deadline.left())?;
        for (&partition, marks) in numbers.iter().zip(marks) {
            let committed = committed.get(&(topic.as_str(), partition)).copied();
            let (lag, lag_from) = partition_lag(committed, marks);
            partitions.push(PartitionLag {
                topic: topic.clone(),
                partition,
                committed,
                log_start: marks.0,
                log_end: marks.1,
                lag,
                lag_from,
            });
        }
    }
    let (group_state, members) = match lookup {
        GroupLookup::Described { state, members } => (Some(state.clone()), Some(members.len())),
        _ => (None, None),
    };
    Ok(LagReport {
        group: group.to_string(),
        group_state,
        members,
        group_note: group_note(group, lookup),
        topics_from,
        topics: chosen,
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        partitions_without_commit: partitions.iter().filter(|p| p.committed.is_none()).count(),
        partitions,
    })
}

/// Measures for `sluicegate lag`, within `--timeout-secs`. Blocking.
fn lag_blocking(args: &LagArgs) -> Result<LagReport> {
    let deadline = args.cluster.deadline();
    let connection = args.cluster.reach(&deadline)?;
    let client = cluster::client(&connection, &args.group)?;
    let metadata = cluster::metadata(&client, None, deadline.left())
        .map_err(|e| args.cluster.unanswered(&connection, e))?;
    let lookup = cluster::describe_group(&client, &args.group, deadline.left())?;
    measure(
        &client,
        &args.group,
        &lookup,
        &metadata,
        &args.topics,
        deadline,
    )
}

/// Runs `sluicegate lag`.
pub async fn run(args: LagArgs) -> Result<bool> {
    let (args, report) = tokio::task::spawn_blocking(move || {
        let report = lag_blocking(&args);
        (args, report)
    })
    .await?;
    let report = report?;
    print_summary(args.json, &report, &[], LagReport::render)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_committed_offset_or_else_the_log_start() {
        assert_eq!(partition_lag(Some(2), (0, 5)), (3, LagFrom::Committed));
        assert_eq!(partition_lag(Some(5), (0, 5)), (0, LagFrom::Committed));
        // Committed past the log end (a broker whose log end lags): no negative lag.
        assert_eq!(partition_lag(Some(7), (0, 5)), (0, LagFrom::Committed));
        assert_eq!(partition_lag(None, (3, 10)), (7, LagFrom::LogStart));
        assert_eq!(partition_lag(None, (0, 0)), (0, LagFrom::LogStart));
    }

    #[test]
    fn the_table_shows_none_and_where_lag_is_counted_from() {
        let report = LagReport {
            group: "billing".into(),
            group_state: None,
            members: None,
            group_note: group_note("billing", &GroupLookup::Unsupported),
            topics_from: TopicsFrom::Group,
            topics: vec!["orders".into()],
            partitions: vec![
                PartitionLag {
                    topic: "orders".into(),
                    partition: 0,
                    committed: Some(2),
                    log_start: 0,
                    log_end: 5,
                    lag: 3,
                    lag_from: LagFrom::Committed,
                },
                PartitionLag {
                    topic: "orders".into(),
                    partition: 1,
                    committed: None,
                    log_start: 1,
                    log_end: 4,
                    lag: 3,
                    lag_from: LagFrom::LogStart,
                },
            ],
            total_lag: 6,
            partitions_without_commit: 1,
        };
        let text = report.render();
        assert!(
            text.starts_with("lag of group `billing` (state unknown), on 1 topic"),
            "{text}"
        );
        assert!(
            text.contains("does not support listing consumer groups"),
            "{text}"
        );
        assert!(
            text.contains("orders          0             2             5             3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "none             4             3  nothing committed: counted from the log start 1"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("total lag: 6 over 2 partitions (1 without a committed offset)\n"),
            "{text}"
        );
    }
}
