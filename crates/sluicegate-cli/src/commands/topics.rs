//! `sluicegate topics list|describe|create`: the topics of a cluster, one topic's partitions
//! (leader, replicas, in-sync replicas, watermarks) and configs, and creating a topic.

use anyhow::{bail, Context, Result};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use crate::api_versions::{self, key, Probe};
use crate::cluster::{self, Deadline, TopicConfig, TopicSpec};
use crate::report::print_summary;
use crate::settings::Connection;
use crate::{TopicsCreateArgs, TopicsDescribeArgs, TopicsListArgs};

/// A group id for look-ups that read no group's offsets.
const LOOKUP_GROUP: &str = "sluicegate-cli-lookup";

/// Whether the broker lists API `key` in its ApiVersions answer (`None`: no answer was seen).
fn supports(probe: &Probe, key: i16) -> Option<bool> {
    probe.apis.first().map(|apis| apis.get(key).is_some())
}

// ---- list ------------------------------------------------------------------------------------

/// One topic in the list.
#[derive(Clone, Debug, Serialize)]
pub struct ListedTopic {
    pub name: String,
    pub partitions: usize,
    /// A name starting with `__`: one of Kafka's own topics.
    pub internal: bool,
}

/// `topics list`, as printed with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct TopicList {
    pub topics: Vec<ListedTopic>,
    /// Internal topics left out (0 with `--all`).
    pub hidden_internal: usize,
}

impl TopicList {
    /// The list for people.
    pub fn render(&self) -> String {
        let width = self
            .topics
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0)
            .max("topic".len());
        let mut out = format!("{:<width$}  {:>10}\n", "topic", "partitions");
        for t in &self.topics {
            out += &format!("{:<width$}  {:>10}\n", t.name, t.partitions);
        }
        out += &format!(
            "{} topic{}",
            self.topics.len(),
            if self.topics.len() == 1 { "" } else { "s" }
        );
        if self.hidden_internal > 0 {
            out += &format!(
                " ({} internal topic{} hidden: --all shows {})",
                self.hidden_internal,
                if self.hidden_internal == 1 { "" } else { "s" },
                if self.hidden_internal == 1 {
                    "it"
                } else {
                    "them"
                }
            );
        }
        out.push('\n');
        out
    }
}

fn list_blocking(args: &TopicsListArgs) -> Result<TopicList> {
    let deadline = args.cluster.deadline();
    let connection = args.cluster.reach(&deadline)?;
    let client = cluster::client(&connection, LOOKUP_GROUP)?;
    let metadata = cluster::metadata(&client, None, deadline.left())
        .map_err(|e| args.cluster.unanswered(&connection, e))?;
    let (shown, hidden): (Vec<_>, Vec<_>) = metadata
        .topics
        .into_iter()
        .filter(|t| t.error.is_none())
        .partition(|t| args.all || !t.is_internal());
    Ok(TopicList {
        topics: shown
            .into_iter()
            .map(|t| ListedTopic {
                internal: t.is_internal(),
                partitions: t.partitions.len(),
                name: t.name,
            })
            .collect(),
        hidden_internal: hidden.len(),
    })
}

/// Runs `sluicegate topics list`.
pub async fn list(args: TopicsListArgs) -> Result<bool> {
    let (args, listed) = tokio::task::spawn_blocking(move || {
        let listed = list_blocking(&args);
        (args, listed)
    })
    .await?;
    print_summary(args.json, &listed?, &[], TopicList::render)?;
    Ok(true)
}

// ---- describe --------------------------------------------------------------------------------

/// One partition of a described topic.
#[derive(Clone, Debug, Serialize)]
pub struct DescribedPartition {
    pub partition: i32,
    /// The leading broker (`None`: no leader).
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The low watermark.
    pub log_start: i64,
    /// The high watermark.
    pub log_end: i64,
    /// The broker's error for the partition, if any.
    pub error: Option<String>,
}

/// `topics describe`, as printed with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct TopicDescription {
    pub topic: String,
    pub partitions: Vec<DescribedPartition>,
    /// The topic's configs (`None`: the broker could not say; `configs_note` says why).
    pub configs: Option<Vec<TopicConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configs_note: Option<String>,
}

impl TopicDescription {
    /// The description for people.
    pub fn render(&self) -> String {
        let ids = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let mut out = format!(
            "topic `{}`: {} partition{}\n",
            self.topic,
            self.partitions.len(),
            if self.partitions.len() == 1 { "" } else { "s" }
        );
        out += &format!(
            "{:>9}  {:>6}  {:<12}  {:<12}  {:>12}  {:>12}\n",
            "partition", "leader", "replicas", "isr", "log start", "log end"
        );
        for p in &self.partitions {
            let leader = p.leader.map_or("none".to_string(), |l| l.to_string());
            let line = format!(
                "{:>9}  {:>6}  {:<12}  {:<12}  {:>12}  {:>12}  {}",
                p.partition,
                leader,
                ids(&p.replicas),
                ids(&p.isr),
                p.log_start,
                p.log_end,
                p.error.as_deref().unwrap_or("")
            );
            out += line.trim_end();
            out.push('\n');
        }
        match (&self.configs, &self.configs_note) {
            (Some(configs), _) if configs.is_empty() => {
                out += "configs: none reported by the broker\n";
            }
            (Some(configs), _) => {
                out += "configs:\n";
                for c in configs {
                    out += &format!(
                        "  {} = {}{}\n",
                        c.name,
                        c.value.as_deref().unwrap_or("(sensitive or unset)"),
                        if c.is_default { "  (default)" } else { "" }
                    );
                }
            }
            (None, note) => {
                out += &format!(
                    "configs: not shown: {}\n",
                    note.as_deref().unwrap_or("unknown")
                );
            }
        }
        out
    }
}

/// Partitions and watermarks of `args.topic`, and whether the broker can describe configs.
fn describe_partitions(
    args: &TopicsDescribeArgs,
    deadline: Deadline,
) -> Result<(TopicDescription, Option<bool>, Connection)> {
    let connection = args.cluster.reach(&deadline)?;
    let probe = api_versions::probe(&connection, deadline)
        .map_err(|e| args.cluster.unanswered(&connection, e))?;
    let topic = &args.topic;
    let Some(layout) = probe.metadata.topic(topic) else {
        bail!("topic `{topic}` does not exist (or has no partitions)");
    };
    let client = cluster::client(&connection, LOOKUP_GROUP)?;
    let numbers: Vec<i32> = layout.partitions.iter().map(|p| p.partition).collect();
    let marks = cluster::watermarks_of(&client, topic, &numbers, deadline.left())?;
    let partitions = layout
        .partitions
        .iter()
        .zip(marks)
        .map(|(p, (log_start, log_end))| DescribedPartition {
            partition: p.partition,
            leader: p.leader,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            log_start,
            log_end,
            error: p.error.clone(),
        })
        .collect();
    let description = TopicDescription {
        topic: topic.clone(),
        partitions,
        configs: None,
        configs_note: None,
    };
    Ok((
        description,
        supports(&probe, key::DESCRIBE_CONFIGS),
        connection,
    ))
}

/// Runs `sluicegate topics describe`.
pub async fn describe(args: TopicsDescribeArgs) -> Result<bool> {
    let started = args.cluster.deadline();
    let (args, found) = tokio::task::spawn_blocking(move || {
        let found = describe_partitions(&args, started);
        (args, found)
    })
    .await?;
    let (mut description, describes_configs, connection) = found?;
    if describes_configs == Some(false) {
        description.configs_note = Some(
            "the broker does not support DescribeConfigs (its ApiVersions answer does not list \
             it)"
            .to_string(),
        );
    } else {
        match cluster::topic_configs(&connection, &args.topic, started.left()).await {
            Ok(configs) => description.configs = Some(configs),
            Err(e) => description.configs_note = Some(format!("{e:#}")),
        }
    }
    print_summary(args.json, &description, &[], TopicDescription::render)?;
    Ok(true)
}

// ---- create ----------------------------------------------------------------------------------

/// `topics create`, as printed with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct CreatedTopic {
    pub topic: String,
    /// The partition count the metadata shows once the topic appeared.
    pub partitions: i32,
    /// The replication factor asked for (`None`: the broker's default).
    pub replication_factor: Option<i32>,
    pub configs: Vec<(String, String)>,
}

impl CreatedTopic {
    /// The outcome for people.
    pub fn render(&self) -> String {
        let replication = self
            .replication_factor
            .map_or("the broker's default".to_string(), |r| r.to_string());
        let mut out = format!(
            "created topic `{}`: {} partition{}, replication factor {replication}",
            self.topic,
            self.partitions,
            if self.partitions == 1 { "" } else { "s" }
        );
        if !self.configs.is_empty() {
            let configs: Vec<String> = self
                .configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out += &format!(", configs {}", configs.join(", "));
        }
        out.push('\n');
        out
    }
}

/// Checks the broker can create topics and the topic does not exist yet. Blocking.
fn check_creatable(
    args: &TopicsCreateArgs,
    deadline: Deadline,
) -> Result<(Option<bool>, Connection)> {
    let cluster = args.cluster();
    let connection = cluster.reach(&deadline)?;
    let probe = api_versions::probe(&connection, deadline)
        .map_err(|e| cluster.unanswered(&connection, e))?;
    let topic = &args.topic;
    if let Some(existing) = probe.metadata.topic(topic) {
        bail!(
            "topic `{topic}` already exists ({} partitions); nothing was changed",
            existing.partitions.len()
        );
    }
    let creates = supports(&probe, key::CREATE_TOPICS);
    if creates == Some(false) {
        bail!(
            "the broker at {} does not support creating topics (its ApiVersions answer lists no \
             CreateTopics; librdkafka's mock cluster, the embedded broker, is such a broker); \
             nothing was created",
            connection.bootstrap()
        );
    }
    Ok((creates, connection))
}

/// Runs `sluicegate topics create`.
pub async fn create(args: TopicsCreateArgs) -> Result<bool> {
    let deadline = args.cluster().deadline();
    let (args, creatable) = tokio::task::spawn_blocking(move || {
        let creatable = check_creatable(&args, deadline);
        (args, creatable)
    })
    .await?;
    let (creates, connection) = creatable?;
    let topic = args.topic.clone();
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs: args.topic_config.clone(),
    };
    let refused = match cluster::create_topic(&connection, &spec, deadline.left()).await {
        Ok(refused) => refused,
        Err(e) if creates.is_none() => {
            return Err(e).with_context(|| {
                format!(
                    "cannot create topic `{topic}` (the broker's supported APIs are unknown: it \
                     may not support CreateTopics)"
                )
            })
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create topic `{topic}`")),
    };
    match refused {
        Ok(()) => {}
        Err(RDKafkaErrorCode::TopicAlreadyExists) => {
            bail!("topic `{topic}` already exists; nothing was changed")
        }
        Err(code) => bail!("the broker refused to create topic `{topic}`: {code}"),
    }
    let partitions = tokio::task::spawn_blocking(move || {
        let client = cluster::client(&connection, LOOKUP_GROUP)?;
        cluster::await_topic(&client, &spec.name, deadline)
    })
    .await?
    .with_context(|| format!("topic `{topic}` was created, but its metadata did not appear"))?;
    let created = CreatedTopic {
        topic,
        partitions,
        replication_factor: args.replication_factor,
        configs: args.topic_config.clone(),
    };
    print_summary(args.json, &created, &[], CreatedTopic::render)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_says_how_many_internal_topics_it_hides() {
        let list = TopicList {
            topics: vec![ListedTopic {
                name: "orders".into(),
                partitions: 3,
                internal: false,
            }],
            hidden_internal: 2,
        };
        assert_eq!(
            list.render(),
            "topic   partitions\norders           3\n1 topic (2 internal topics hidden: --all \
             shows them)\n"
        );
    }

    #[test]
    fn a_description_shows_partitions_and_why_configs_are_missing() {
        let description = TopicDescription {
            topic: "orders".into(),
            partitions: vec![DescribedPartition {
                partition: 0,
                leader: Some(1),
                replicas: vec![1, 2],
                isr: vec![1],
                log_start: 0,
                log_end: 7,
                error: None,
            }],
            configs: None,
            configs_note: Some("the broker does not support DescribeConfigs".into()),
        };
        let text = description.render();
        assert!(text.starts_with("topic `orders`: 1 partition\n"), "{text}");
        assert!(
            text.contains(
                "        0       1  1,2           1                        0             7\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("configs: not shown: the broker does not support DescribeConfigs\n"),
            "{text}"
        );
    }
}
