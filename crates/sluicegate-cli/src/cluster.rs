//! The broker a command talks to (embedded or external), and the few admin look-ups the
//! commands need: topic creation, watermarks, a group's committed offsets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluicegate::EmbeddedKafka;

/// How long one admin look-up may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

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
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka client")
}

/// Waits (bounded) until the metadata of `topic` lists its partitions; returns their count.
pub fn wait_for_topic(bootstrap: &str, topic: &str) -> Result<i32> {
    let client = lookup_client(bootstrap, "sluicegate-cli-lookup")?;
    let deadline = Instant::now() + LOOKUP_TIMEOUT;
    loop {
        let metadata = client
            .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
            .with_context(|| format!("cannot read the metadata of topic `{topic}`"))?;
        if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
            if t.error().is_none() && !t.partitions().is_empty() {
                return Ok(t.partitions().len() as i32);
            }
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
    (0..partitions)
        .map(|p| {
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
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = client
        .committed_offsets(list, LOOKUP_TIMEOUT)
        .with_context(|| format!("cannot read the offsets committed by group `{group}`"))?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect())
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
    fn unique_names_carry_the_prefix() {
        assert!(unique_name("sluicegate-demo").starts_with("sluicegate-demo-"));
    }
}
