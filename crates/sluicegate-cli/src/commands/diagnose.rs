//! `sluicegate diagnose`: check a cluster (and optionally a consumer group) from the client's
//! side, one verdict per check: bootstrap connectivity, each broker, the APIs the brokers
//! support, topic metadata, the group's state and members, and its lag.
//!
//! Every check says OK, WARN (works, with a limit worth knowing) or FAIL (something a
//! consumer needs is broken), or SKIP when an earlier failure leaves nothing to check. Where a
//! broker cannot answer a question (a test broker without group listing, say), the check says
//! so as a WARN instead of failing.

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api_versions::{self, BrokerApis, ADMIN_APIS, CONSUMER_APIS};
use crate::cluster::{self, ClusterMetadata, GroupLookup, GroupMember, TopicLayout};
use crate::commands::lag;
use crate::report::print_summary;
use crate::settings::Connection;
use crate::{reach, DiagnoseArgs};

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works, with a limit worth knowing.
    Warn,
    /// Broken: consumers will fail or stall.
    Fail,
    /// Not checked: an earlier check failed.
    Skip,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

/// One check: what was checked, the verdict, one sentence why, and the data behind it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub verdict: Verdict,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Check {
    fn new(check: impl Into<String>, verdict: Verdict, message: impl Into<String>) -> Self {
        Check {
            check: check.into(),
            verdict,
            message: message.into(),
            details: None,
        }
    }

    fn with(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// Everything `diagnose` found, as printed with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    /// No check failed.
    pub ok: bool,
    pub bootstrap: String,
    pub timeout_secs: u64,
    pub checks: Vec<Check>,
    pub failed: usize,
    pub warnings: usize,
}

impl Diagnosis {
    fn of(bootstrap: &str, timeout_secs: u64, checks: Vec<Check>) -> Self {
        let count = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
        let (failed, warnings) = (count(Verdict::Fail), count(Verdict::Warn));
        Diagnosis {
            ok: failed == 0,
            bootstrap: bootstrap.to_string(),
            timeout_secs,
            checks,
            failed,
            warnings,
        }
    }

    /// The messages of the failed checks.
    fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| format!("{}: {}", c.check, c.message))
            .collect()
    }

    /// The diagnosis for people: one line per check, then the overall verdict.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        let mut out = format!(
            "diagnose {} (timeout {} s)\n",
            self.bootstrap, self.timeout_secs
        );
        for c in &self.checks {
            out += &format!(
                "{:<5} {:<width$}  {}\n",
                c.verdict.to_string(),
                c.check,
                c.message
            );
        }
        let passed = self
            .checks
            .iter()
            .filter(|c| c.verdict == Verdict::Ok)
            .count();
        out += &format!(
            "result: {} ({} failed, {} warning{}, {} OK)\n",
            if self.ok { "OK" } else { "FAIL" },
            self.failed,
            self.warnings,
            if self.warnings == 1 { "" } else { "s" },
            passed
        );
        out
    }
}

/// The bootstrap check when no bootstrap server accepts a connection.
fn unreachable_bootstrap(reached: &[reach::Reach]) -> Check {
    let why: Vec<String> = reached.iter().map(reach::Reach::describe).collect();
    let message = if why.is_empty() {
        "--bootstrap is empty: give host:port[,host:port...]".to_string()
    } else {
        format!(
            "no bootstrap server accepts a connection ({}): no Kafka request can be made",
            why.join("; ")
        )
    };
    Check::new("bootstrap", Verdict::Fail, message).with(json!({ "connections": reached }))
}

/// One check per broker listed in the metadata: does it accept a TCP connection?
fn broker_checks(metadata: &ClusterMetadata, timeout: Duration) -> Vec<Check> {
    let addresses: Vec<String> = metadata.brokers.iter().map(|b| b.address()).collect();
    let reached = reach::connect_all(&addresses, timeout);
    metadata
        .brokers
        .iter()
        .zip(reached)
        .map(|(broker, reached)| {
            let name = format!("broker {}", broker.id);
            match (&reached.error, reached.connect_ms) {
                (None, ms) => Check::new(
                    name,
                    Verdict::Ok,
                    format!(
                        "{} accepts connections ({:.1} ms)",
                        reached.address,
                        ms.unwrap_or(0.0)
                    ),
                ),
                (Some(e), _) => Check::new(
                    name,
                    Verdict::Fail,
                    format!(
                        "{} does not accept connections ({e}): clients cannot reach the \
                         partitions it leads",
                        reached.address
                    ),
                ),
            }
            .with(json!({ "broker": broker, "connection": reached }))
        })
        .collect()
}

/// `Name vMIN..MAX` for each of `wanted` the broker supports.
fn ranges(apis: &BrokerApis, wanted: &[(i16, &str)]) -> String {
    wanted
        .iter()
        .filter_map(|(key, name)| {
            apis.get(*key)
                .map(|r| format!("{name} v{}..{}", r.min, r.max))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The API versions check, from the ApiVersions answers librdkafka saw.
fn api_check(apis: &[BrokerApis]) -> Check {
    let Some(first) = apis.first() else {
        return Check::new(
            "api versions",
            Verdict::Warn,
            "no ApiVersions answer was seen (api.version.request=false, or a broker older than \
             Kafka 0.10): librdkafka assumes the versions of broker.version.fallback",
        );
    };
    let details = json!({ "brokers": apis });
    let missing_consumer = first.missing(CONSUMER_APIS);
    if !missing_consumer.is_empty() {
        return Check::new(
            "api versions",
            Verdict::Fail,
            format!(
                "{} does not support {}: consumer groups cannot work against it",
                first.broker,
                missing_consumer.join(", ")
            ),
        )
        .with(details);
    }
    let supported = format!(
        "{} supports {} APIs, among them {}",
        first.broker,
        first.apis.len(),
        ranges(first, CONSUMER_APIS)
    );
    let missing_admin = first.missing(ADMIN_APIS);
    if missing_admin.is_empty() {
        Check::new(
            "api versions",
            Verdict::Ok,
            format!("{supported}, and {}", ranges(first, ADMIN_APIS)),
        )
        .with(details)
    } else {
        Check::new(
            "api versions",
            Verdict::Warn,
            format!(
                "{supported}, but not {}: consumers work, but {}",
                missing_admin.join(", "),
                admin_consequences(&missing_admin)
            ),
        )
        .with(details)
    }
}

/// What the operations commands cannot do without the `missing` admin APIs.
fn admin_consequences(missing: &[String]) -> String {
    let has = |name: &str| missing.iter().any(|m| m == name);
    let mut lost = Vec::new();
    if has("ListGroups") || has("DescribeGroups") {
        lost.push("group states and members cannot be shown");
    }
    if has("CreateTopics") {
        lost.push("topics cannot be created through the admin API");
    }
    if has("DescribeConfigs") {
        lost.push("topic configs cannot be shown");
    }
    lost.join(", ")
}

/// Partition numbers as `0, 2, 5`.
fn numbers(partitions: &[i32]) -> String {
    partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The metadata check of one topic named with `--topic`.
fn topic_check(name: &str, metadata: &ClusterMetadata) -> Check {
    let check = format!("topic {name}");
    let Some(topic) = metadata.topic(name) else {
        let why = metadata
            .topics
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.error.clone())
            .unwrap_or_else(|| "not in the metadata".to_string());
        return Check::new(
            check,
            Verdict::Fail,
            format!("topic `{name}` does not exist ({why})"),
        );
    };
    let (verdict, message) = layout_verdict(topic);
    Check::new(check, verdict, message).with(json!({ "topic": topic }))
}

/// The verdict on one topic's partitions: leaders, errors, replicas in sync.
fn layout_verdict(topic: &TopicLayout) -> (Verdict, String) {
    let name = &topic.name;
    let count = topic.partitions.len();
    let pick = |f: &dyn Fn(&cluster::PartitionLayout) -> bool| -> Vec<i32> {
        topic
            .partitions
            .iter()
            .filter(|p| f(p))
            .map(|p| p.partition)
            .collect()
    };
    let leaderless = pick(&|p| p.leader.is_none());
    let erroneous = pick(&|p| p.error.is_some());
    let under = pick(&|p| p.under_replicated());
    if !leaderless.is_empty() {
        return (
            Verdict::Fail,
            format!(
                "partition(s) {} of `{name}` have no leader: nothing can be read from them",
                numbers(&leaderless)
            ),
        );
    }
    if !erroneous.is_empty() {
        return (
            Verdict::Fail,
            format!(
                "the broker reports errors for partition(s) {} of `{name}`",
                numbers(&erroneous)
            ),
        );
    }
    if !under.is_empty() {
        return (
            Verdict::Warn,
            format!(
                "partition(s) {} of `{name}` are under-replicated (fewer in-sync replicas than \
                 replicas)",
                numbers(&under)
            ),
        );
    }
    let replication = topic
        .partitions
        .iter()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0);
    (
        Verdict::Ok,
        format!(
            "{count} partition{}, each with a leader and its {replication} replica(s) in sync",
            if count == 1 { "" } else { "s" }
        ),
    )
}

/// The metadata check over every topic, when none was named.
fn all_topics_check(metadata: &ClusterMetadata) -> Check {
    let mut worst = (Verdict::Ok, String::new());
    for topic in metadata.topics.iter().filter(|t| t.error.is_none()) {
        let (verdict, message) = layout_verdict(topic);
        let rank = |v: Verdict| {
            [Verdict::Ok, Verdict::Warn, Verdict::Fail]
                .iter()
                .position(|x| *x == v)
        };
        if rank(verdict) > rank(worst.0) {
            worst = (verdict, message);
        }
    }
    let partitions: usize = metadata.topics.iter().map(|t| t.partitions.len()).sum();
    let message = match worst.0 {
        Verdict::Ok => format!(
            "{} topic{}, {partitions} partition{}: every partition has a leader and its \
             replicas in sync",
            metadata.topics.len(),
            if metadata.topics.len() == 1 { "" } else { "s" },
            if partitions == 1 { "" } else { "s" }
        ),
        _ => worst.1,
    };
    Check::new("topics", worst.0, message).with(json!({
        "topics": metadata.topics.len(),
        "partitions": partitions,
    }))
}

/// A member and what it is assigned, for messages.
fn member_line(member: &GroupMember) -> String {
    match &member.assignment {
        Some(assigned) if !assigned.is_empty() => {
            let parts: Vec<String> = assigned
                .iter()
                .map(|t| format!("{}[{}]", t.topic, numbers(&t.partitions)))
                .collect();
            format!("{member} assigned {}", parts.join(" "))
        }
        Some(_) => format!("{member} assigned nothing"),
        None => member.to_string(),
    }
}

/// The group check, from what the broker said about the group.
fn group_check(group: &str, lookup: &GroupLookup) -> Check {
    let check = format!("group {group}");
    match lookup {
        GroupLookup::Unsupported => Check::new(
            check,
            Verdict::Warn,
            format!(
                "the broker does not support ListGroups/DescribeGroups, so the state, members \
                 and assignments of `{group}` cannot be shown"
            ),
        ),
        GroupLookup::Unknown => Check::new(
            check,
            Verdict::Warn,
            format!(
                "the broker does not list group `{group}`: it has no members (or the broker \
                 lists only groups with committed offsets, as tansu 0.6 does)"
            ),
        ),
        GroupLookup::Described { state, members } => {
            let details = json!({ "state": state, "members": members });
            let listed: Vec<String> = members.iter().map(member_line).collect();
            let unassigned_note = if members.iter().any(|m| m.assignment.is_none()) {
                " (the broker does not report assignments)"
            } else {
                ""
            };
            let (verdict, message) = match state.as_str() {
                "Stable" if !members.is_empty() => (
                    Verdict::Ok,
                    format!(
                        "state Stable, {} member{}: {}{unassigned_note}",
                        members.len(),
                        if members.len() == 1 { "" } else { "s" },
                        listed.join("; ")
                    ),
                ),
                "Empty" => (
                    Verdict::Warn,
                    "state Empty: no consumer of the group is running".to_string(),
                ),
                "Dead" => (
                    Verdict::Warn,
                    format!("state Dead: group `{group}` has no members and no stored state"),
                ),
                "PreparingRebalance" | "CompletingRebalance" => (
                    Verdict::Warn,
                    format!("state {state}: the group is rebalancing, consumption waits for it"),
                ),
                other => (
                    Verdict::Warn,
                    format!(
                        "state {other}, {} member(s): {}",
                        members.len(),
                        listed.join("; ")
                    ),
                ),
            };
            Check::new(check, verdict, message).with(details)
        }
    }
}

/// The lag check, from a measured lag.
fn lag_check(group: &str, report: &lag::LagReport) -> Check {
    let check = format!("lag {group}");
    let details = serde_json::to_value(report).unwrap_or(Value::Null);
    let summary = format!(
        "total lag {} over {} partition(s) of {}",
        report.total_lag,
        report.partitions.len(),
        report.topics.join(", ")
    );
    if report.partitions_without_commit > 0 {
        Check::new(
            check,
            Verdict::Warn,
            format!(
                "{summary}; the group has committed nothing on {} partition(s), counted from \
                 the log start",
                report.partitions_without_commit
            ),
        )
        .with(details)
    } else {
        Check::new(check, Verdict::Ok, summary).with(details)
    }
}

/// Runs the checks, within `--timeout-secs`. Blocking.
fn diagnose_blocking(args: &DiagnoseArgs, connection: &Connection) -> Vec<Check> {
    let deadline = args.cluster.deadline();
    let mut checks = Vec::new();
    let skip_rest = |checks: &mut Vec<Check>, why: &str| {
        let mut rest = vec!["brokers", "api versions", "topics"];
        if args.group.is_some() {
            rest.extend(["group", "lag"]);
        }
        for name in rest {
            checks.push(Check::new(name, Verdict::Skip, why));
        }
    };

    let reached = reach::connect_all(
        &reach::bootstrap_addresses(connection.bootstrap()),
        deadline.left(),
    );
    if !reached.iter().any(reach::Reach::ok) {
        checks.push(unreachable_bootstrap(&reached));
        skip_rest(&mut checks, "no broker can be reached");
        return checks;
    }
    let probe = match api_versions::probe(connection, deadline) {
        Ok(probe) => probe,
        Err(e) => {
            checks.push(
                Check::new(
                    "bootstrap",
                    Verdict::Fail,
                    format!("{:#}", args.cluster.unanswered(connection, e)),
                )
                .with(json!({ "connections": reached })),
            );
            skip_rest(&mut checks, "the cluster answered no metadata request");
            return checks;
        }
    };
    let metadata = &probe.metadata;
    checks.push(
        Check::new(
            "bootstrap",
            Verdict::Ok,
            format!(
                "metadata from {} in {:.1} ms: {} broker(s), {} topic(s)",
                connection.bootstrap(),
                probe.metadata_time.as_secs_f64() * 1e3,
                metadata.brokers.len(),
                metadata.topics.len()
            ),
        )
        .with(json!({ "connections": reached, "brokers": metadata.brokers })),
    );
    checks.extend(broker_checks(metadata, deadline.left()));
    checks.push(api_check(&probe.apis));
    if args.topics.is_empty() {
        checks.push(all_topics_check(metadata));
    } else {
        for topic in &args.topics {
            checks.push(topic_check(topic, metadata));
        }
    }

    let Some(group) = &args.group else {
        return checks;
    };
    let client = match cluster::client(connection, group) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::new(
                format!("group {group}"),
                Verdict::Fail,
                format!("{e:#}"),
            ));
            return checks;
        }
    };
    let lookup = match cluster::describe_group(&client, group, deadline.left()) {
        Ok(lookup) => {
            checks.push(group_check(group, &lookup));
            lookup
        }
        Err(e) => {
            checks.push(Check::new(
                format!("group {group}"),
                Verdict::Fail,
                format!("{e:#}"),
            ));
            GroupLookup::Unsupported
        }
    };
    // Topics named but missing already failed above; measure the lag on those that exist.
    let topics: Vec<String> = args
        .topics
        .iter()
        .filter(|t| metadata.topic(t).is_some())
        .cloned()
        .collect();
    if !args.topics.is_empty() && topics.is_empty() {
        checks.push(Check::new(
            format!("lag {group}"),
            Verdict::Skip,
            "none of the topics given exists",
        ));
        return checks;
    }
    match lag::measure(&client, group, &lookup, metadata, &topics, deadline) {
        Ok(report) => checks.push(lag_check(group, &report)),
        Err(e) => checks.push(Check::new(
            format!("lag {group}"),
            Verdict::Fail,
            format!("{e:#}"),
        )),
    }
    checks
}

/// Runs `sluicegate diagnose`; `Ok(false)` when a check failed.
pub async fn run(args: DiagnoseArgs) -> Result<bool> {
    let connection = args.cluster.connection()?;
    let (args, connection, checks) = tokio::task::spawn_blocking(move || {
        let checks = diagnose_blocking(&args, &connection);
        (args, connection, checks)
    })
    .await?;
    let diagnosis = Diagnosis::of(connection.bootstrap(), args.cluster.timeout_secs, checks);
    print_summary(
        args.json,
        &diagnosis,
        &diagnosis.failures(),
        Diagnosis::render,
    )?;
    Ok(diagnosis.ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_versions::ApiRange;
    use crate::cluster::{Broker, PartitionLayout};
    use crate::consumer_protocol::TopicPartitions;

    fn partition(
        partition: i32,
        leader: Option<i32>,
        replicas: &[i32],
        isr: &[i32],
    ) -> PartitionLayout {
        PartitionLayout {
            partition,
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            error: None,
        }
    }

    fn cluster_of(partitions: Vec<PartitionLayout>) -> ClusterMetadata {
        ClusterMetadata {
            brokers: vec![Broker {
                id: 1,
                host: "localhost".into(),
                port: 9092,
            }],
            topics: vec![TopicLayout {
                name: "orders".into(),
                error: None,
                partitions,
            }],
        }
    }

    #[test]
    fn a_topic_with_leaders_and_full_isr_is_ok_and_a_missing_one_fails() {
        let metadata = cluster_of(vec![partition(0, Some(1), &[1, 2], &[1, 2])]);
        let check = topic_check("orders", &metadata);
        assert_eq!(check.verdict, Verdict::Ok, "{check:?}");
        assert_eq!(
            check.message,
            "1 partition, each with a leader and its 2 replica(s) in sync"
        );
        let check = topic_check("payments", &metadata);
        assert_eq!(check.verdict, Verdict::Fail);
        assert_eq!(
            check.message,
            "topic `payments` does not exist (not in the metadata)"
        );
        assert_eq!(all_topics_check(&metadata).verdict, Verdict::Ok);
    }

    #[test]
    fn a_leaderless_partition_fails_and_a_short_isr_warns() {
        let metadata = cluster_of(vec![
            partition(0, Some(1), &[1, 2], &[1]),
            partition(1, None, &[1, 2], &[]),
        ]);
        let check = topic_check("orders", &metadata);
        assert_eq!(check.verdict, Verdict::Fail);
        assert!(check
            .message
            .starts_with("partition(s) 1 of `orders` have no leader"));
        assert_eq!(all_topics_check(&metadata).verdict, Verdict::Fail);
        let metadata = cluster_of(vec![partition(0, Some(1), &[1, 2], &[1])]);
        let check = topic_check("orders", &metadata);
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(check.message.contains("under-replicated"), "{check:?}");
    }

    fn apis(keys: &[i16]) -> BrokerApis {
        BrokerApis {
            broker: "localhost:9092/1".into(),
            apis: keys
                .iter()
                .map(|&key| ApiRange {
                    key,
                    name: format!("api{key}"),
                    min: 0,
                    max: 5,
                })
                .collect(),
        }
    }

    #[test]
    fn missing_admin_apis_warn_and_missing_consumer_apis_fail() {
        let consumer: Vec<i16> = CONSUMER_APIS.iter().map(|(k, _)| *k).collect();
        let admin: Vec<i16> = ADMIN_APIS.iter().map(|(k, _)| *k).collect();
        let everything: Vec<i16> = consumer.iter().chain(&admin).copied().collect();
        assert_eq!(api_check(&[apis(&everything)]).verdict, Verdict::Ok);

        let check = api_check(&[apis(&consumer)]);
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(
            check.message.contains(
                "but not ListGroups, DescribeGroups, CreateTopics, DescribeConfigs: consumers \
                 work, but group states and members cannot be shown"
            ),
            "{}",
            check.message
        );
        let check = api_check(&[apis(&admin)]);
        assert_eq!(check.verdict, Verdict::Fail);
        assert!(
            check.message.contains("does not support Fetch"),
            "{}",
            check.message
        );
        assert_eq!(api_check(&[]).verdict, Verdict::Warn);
    }

    #[test]
    fn group_verdicts_follow_state_and_show_assignments() {
        let member = GroupMember {
            id: "m-1".into(),
            client_id: "app".into(),
            host: "/10.0.0.1".into(),
            assignment: Some(vec![TopicPartitions {
                topic: "orders".into(),
                partitions: vec![0, 2],
            }]),
        };
        let stable = GroupLookup::Described {
            state: "Stable".into(),
            members: vec![member],
        };
        let check = group_check("billing", &stable);
        assert_eq!(check.verdict, Verdict::Ok);
        assert_eq!(
            check.message,
            "state Stable, 1 member: m-1 (client app, host /10.0.0.1) assigned orders[0, 2]"
        );
        let empty = GroupLookup::Described {
            state: "Empty".into(),
            members: Vec::new(),
        };
        assert_eq!(group_check("billing", &empty).verdict, Verdict::Warn);
        let check = group_check("billing", &GroupLookup::Unsupported);
        assert_eq!(check.verdict, Verdict::Warn);
        assert!(check
            .message
            .contains("does not support ListGroups/DescribeGroups"));
    }

    #[test]
    fn the_diagnosis_fails_when_any_check_fails() {
        let checks = vec![
            Check::new("bootstrap", Verdict::Ok, "fine"),
            Check::new("api versions", Verdict::Warn, "limited"),
            Check::new("topic t", Verdict::Fail, "topic `t` does not exist"),
        ];
        let diagnosis = Diagnosis::of("b:9092", 10, checks);
        assert!(!diagnosis.ok);
        assert_eq!((diagnosis.failed, diagnosis.warnings), (1, 1));
        assert_eq!(diagnosis.failures(), ["topic t: topic `t` does not exist"]);
        let text = diagnosis.render();
        assert!(
            text.contains("FAIL  topic t       topic `t` does not exist\n"),
            "{text}"
        );
        assert!(
            text.ends_with("result: FAIL (1 failed, 1 warning, 1 OK)\n"),
            "{text}"
        );
    }
}
