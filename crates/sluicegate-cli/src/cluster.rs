//! The broker a command talks to (embedded or external), and the few admin look-ups the
//! commands need: topic creation, partition counts, watermarks, a group's committed offsets
//! and its state.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluicegate::EmbeddedKafka;

/// How long one admin look-up may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster a command runs against.
pub enum Cluster {
    /// librdkafka's mock cluster, in this process.
    Embedded(EmbeddedKafka),
    /// A cluster given with `--bootstrap`.
    External(String),
}

impl Cluster {
    /// Connects to `bootstrap`, or starts an embedded single-broker cluster when it is `None`.
    pub fn start(bootstrap: Option<String>) -> Result<Self> {
        Ok(match bootstrap {
            Some(b) => Cluster::External(b),
            None => Cluster::Embedded(
                EmbeddedKafka::start(1).context("cannot start the embedded broker")?,
            ),
        })
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Cluster::Embedded(k) => k.bootstrap_servers(),
            Cluster::External(b) => b,
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Cluster::Embedded(_))
    }

    /// Creates `topic` with `partitions` partitions unless it exists, and returns the
    /// partition count it has once its metadata is visible.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32> {
        match self {
            Cluster::Embedded(kafka) => kafka
                .create_topic(topic, partitions)
                .with_context(|| format!("cannot create topic `{topic}`"))?,
            Cluster::External(bootstrap) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .create()
                    .context("cannot create the admin client")?;
                // -1: the broker's default replication factor (Kafka 2.4 and later).
                let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
                let opts = AdminOptions::new().operation_timeout(Some(LOOKUP_TIMEOUT));
                for result in admin
                    .create_topics([&new], &opts)
                    .await
                    .context("CreateTopics request failed")?
                {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => bail!("cannot create topic `{name}`: {code}"),
                    }
                }
            }
        }
        let bootstrap = self.bootstrap().to_string();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || wait_for_topic(&bootstrap, &topic)).await?
    }
}

/// A client for admin look-ups. `group` is only needed to read a group's offsets.
fn lookup_client(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    client(config, group)
}

/// A client made from `config` (connection settings) for look-ups and for reading or
/// committing `group`'s offsets: it never subscribes, and commits only when told to.
pub fn client(mut config: ClientConfig, group: &str) -> Result<BaseConsumer> {
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka client")
}

/// The partition count of `topic`, from one metadata look-up; `None` when the broker does not
/// know the topic (or lists it without partitions).
pub fn partition_count(client: &BaseConsumer, topic: &str) -> Result<Option<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of topic `{topic}`"))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Waits (bounded) until the metadata of `topic` lists its partitions; returns their count.
pub fn wait_for_topic(bootstrap: &str, topic: &str) -> Result<i32> {
    let client = lookup_client(bootstrap, "sluicegate-cli-lookup")?;
    let deadline = Instant::now() + LOOKUP_TIMEOUT;
    loop {
        if let Some(partitions) = partition_count(&client, topic)? {
            return Ok(partitions);
        }
        if Instant::now() > deadline {
            bail!("topic `{topic}` did not appear in the metadata within {LOOKUP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The (low, high) watermarks of partitions `0..partitions` of `topic`.
pub fn watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>> {
    let client = lookup_client(bootstrap, "sluicegate-cli-lookup")?;
    let all: Vec<i32> = (0..partitions).collect();
    watermarks_of(&client, topic, &all)
}

/// The (low, high) watermarks of `partitions` of `topic`, in the order given.
pub fn watermarks_of(
    client: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i64, i64)>> {
    partitions
        .iter()
        .map(|&p| {
            client
                .fetch_watermarks(topic, p, LOOKUP_TIMEOUT)
                .with_context(|| format!("cannot read the watermarks of {topic}/{p}"))
        })
        .collect()
}

/// The offsets `group` has committed for partitions `0..partitions` of `topic`, as the broker
/// reports them (next offset to consume; `None` where nothing is committed).
pub fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<i64>>> {
    let client = lookup_client(bootstrap, group)?;
    let all: Vec<i32> = (0..partitions).collect();
    committed_offsets_of(&client, group, topic, &all)
}

/// The offsets committed for `partitions` of `topic` (in the order given) by the group of
/// `client`, which is `group`: next offset to consume, `None` where nothing is committed.
pub fn committed_offsets_of(
    client: &BaseConsumer,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<Option<i64>>> {
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition(topic, p);
    }
    let committed = client
        .committed_offsets(list, LOOKUP_TIMEOUT)
        .with_context(|| format!("cannot read the offsets committed by group `{group}`"))?;
    Ok(partitions
        .iter()
        .map(
            |&p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect())
}

/// What the broker says about a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupLookup {
    /// The broker does not list the group: it has neither members nor committed offsets.
    /// (tansu 0.6 lists only groups with committed offsets, so there it may have members.)
    Unknown,
    /// The group as the broker describes it.
    Described {
        /// `Empty`, `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Dead`, ...
        state: String,
        /// Its members, each as `ID` plus the client id and host where the broker gives them.
        members: Vec<String>,
    },
    /// The broker does not answer group listings (ListGroups and DescribeGroups): librdkafka's
    /// mock cluster, and so [`EmbeddedKafka`], does not implement them.
    Unsupported,
}

impl GroupLookup {
    /// Whether the group has members or is between generations: anything but unknown, `Empty`
    /// or `Dead`. (`Unsupported` is not active: nobody knows.)
    pub fn is_active(&self) -> bool {
        match self {
            GroupLookup::Described { state, members } => {
                !members.is_empty() || !matches!(state.as_str(), "Empty" | "Dead")
            }
            GroupLookup::Unknown | GroupLookup::Unsupported => false,
        }
    }
}

/// The state and members of `group`, from ListGroups and DescribeGroups.
pub fn describe_group(client: &BaseConsumer, group: &str) -> Result<GroupLookup> {
    let list = match client.fetch_group_list(Some(group), LOOKUP_TIMEOUT) {
        Ok(list) => list,
        Err(KafkaError::GroupListFetch(RDKafkaErrorCode::UnsupportedFeature)) => {
            return Ok(GroupLookup::Unsupported)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot describe group `{group}`")),
    };
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(GroupLookup::Unknown);
    };
    let members = info
        .members()
        .iter()
        .map(|m| {
            let mut about = Vec::new();
            if !m.client_id().is_empty() {
                about.push(format!("client {}", m.client_id()));
            }
            if !m.client_host().is_empty() {
                about.push(format!("host {}", m.client_host()));
            }
            if about.is_empty() {
                m.id().to_string()
            } else {
                format!("{} ({})", m.id(), about.join(", "))
            }
        })
        .collect();
    Ok(GroupLookup::Described {
        state: info.state().to_string(),
        members,
    })
}

/// A name unique to this run: `prefix-<unix millis>-<pid>`.
pub fn unique_name(prefix: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}-{millis}-{}", std::process::id())
}

/// Messages the broker removed from the start of partitions (by retention) between two
/// watermark readings of the same partitions.
pub fn dropped_by_broker(before: &[(i64, i64)], after: &[(i64, i64)]) -> i64 {
    after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&(0, 0))))
        .map(|((low_after, _), (low_before, _))| (low_after - low_before).max(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_counts_only_moves_of_the_low_watermark() {
        assert_eq!(dropped_by_broker(&[], &[(0, 10), (0, 5)]), 0);
        assert_eq!(dropped_by_broker(&[], &[(3, 10), (0, 5)]), 3);
        assert_eq!(dropped_by_broker(&[(2, 4), (0, 0)], &[(5, 10), (0, 5)]), 3);
    }

    #[test]
    fn a_group_is_active_when_it_has_members_or_is_rebalancing() {
        let described = |state: &str, members: &[&str]| GroupLookup::Described {
            state: state.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        assert!(!GroupLookup::Unknown.is_active());
        assert!(!GroupLookup::Unsupported.is_active());
        assert!(!described("Empty", &[]).is_active());
        assert!(!described("Dead", &[]).is_active());
        assert!(described("Stable", &["m-1"]).is_active());
        assert!(described("PreparingRebalance", &[]).is_active());
        assert!(
            described("", &[]).is_active(),
            "an unknown state is not taken as inactive"
        );
    }

    #[test]
    fn unique_names_carry_the_prefix() {
        assert!(unique_name("sluicegate-demo").starts_with("sluicegate-demo-"));
    }
}
