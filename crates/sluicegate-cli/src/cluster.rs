//! The broker a command talks to (embedded or external), and the admin look-ups the commands
//! need: metadata, topic creation and configs, partition counts, watermarks, a group's
//! committed offsets and its state, members and assignments.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use sluicegate::config::ClientKind;
use sluicegate::interop::SecureContext;
use sluicegate::security::ClientSecurity;
use sluicegate::EmbeddedKafka;

use crate::consumer_protocol::{self, TopicPartitions};
use crate::reach::{explain, require_bootstrap};
use crate::settings::Connection;
use crate::ClusterArgs;

/// A client for look-ups and offsets: connected as the command's configuration says, keeping
/// TLS and authentication failures.
pub type Client = BaseConsumer<SecureContext>;

/// A client context that keeps TLS and authentication failures (see [`ClientSecurity`]).
pub trait Watched: ConsumerContext {
    /// The client's security watch.
    fn watch(&self) -> &ClientSecurity;
}

impl Watched for SecureContext {
    fn watch(&self) -> &ClientSecurity {
        self.security()
    }
}

/// How long one wait of a request polls before looking at the client's errors again.
const SLICE: Duration = Duration::from_millis(250);

/// How long one admin look-up may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// When a command stops waiting for the broker: each look-up may wait only the time left, so
/// a command that makes several ends within its `--timeout-secs` however they are spread.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// The deadline `total` from now.
    pub fn after(total: Duration) -> Self {
        Deadline {
            at: Instant::now() + total,
            total,
        }
    }

    /// The time left (zero once passed).
    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The whole time given, for messages.
    pub fn total(&self) -> Duration {
        self.total
    }
}

/// The cluster a command runs against.
pub enum Cluster {
    /// librdkafka's mock cluster, in this process, and the connection to it.
    Embedded(EmbeddedKafka, Connection),
    /// A cluster given with `--bootstrap`, `--config`, the environment or `--set`.
    External(Connection),
}

impl Cluster {
    /// Connects as `args` say (failing within [`LOOKUP_TIMEOUT`] when the cluster cannot be
    /// reached or refuses the credentials), or starts an embedded single-broker cluster when
    /// they name no bootstrap servers.
    pub fn start(args: &crate::ConnectArgs) -> Result<Self> {
        let named = args.bootstrap.is_some()
            || args.config.is_some()
            || args
                .set
                .iter()
                .any(|(k, _)| k.strip_prefix("kafka.").unwrap_or(k) == "bootstrap_servers")
            || std::env::var("KAFKA_BOOTSTRAP_SERVERS").is_ok_and(|v| !v.trim().is_empty());
        Ok(if named {
            let connection = Connection::load(args, std::env::vars(), &[])?;
            require_kafka(&connection, LOOKUP_TIMEOUT)?;
            Cluster::External(connection)
        } else {
            let kafka = EmbeddedKafka::start(1).context("cannot start the embedded broker")?;
            let connection = Connection::to(kafka.bootstrap_servers(), &[]);
            Cluster::Embedded(kafka, connection)
        })
    }

    /// How clients connect to the cluster.
    pub fn connection(&self) -> &Connection {
        match self {
            Cluster::Embedded(_, c) | Cluster::External(c) => c,
        }
    }

    /// Whether this is the embedded broker.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Cluster::Embedded(..))
    }

    /// Creates `topic` with `partitions` partitions unless it exists, and returns the
    /// partition count it has once its metadata is visible.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<i32> {
        match self {
            Cluster::Embedded(kafka, _) => kafka
                .create_topic(topic, partitions)
                .with_context(|| format!("cannot create topic `{topic}`"))?,
            Cluster::External(connection) => {
                let spec = TopicSpec {
                    name: topic.to_string(),
                    partitions,
                    replication_factor: None,
                    configs: Vec::new(),
                };
                match create_topic(connection, &spec, LOOKUP_TIMEOUT).await? {
                    Ok(()) | Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
                    Err(code) => bail!("cannot create topic `{topic}`: {code}"),
                }
            }
        }
        let connection = self.connection().clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || wait_for_topic(&connection, &topic)).await?
    }
}

/// A client connected as `connection` says for look-ups and for reading or committing
/// `group`'s offsets: it never subscribes, and commits only when told to.
pub fn client(connection: &Connection, group: &str) -> Result<Client> {
    let mut config = connection.client_config(ClientKind::Consumer);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    config
        .create_with_context(connection.context(&config))
        .context("cannot create a Kafka client")
}

/// A client for look-ups that need no group.
fn lookup_client(connection: &Connection) -> Result<Client> {
    client(connection, "sluicegate-cli-lookup")
}

/// An admin client connected as `connection` says.
fn admin_client(connection: &Connection) -> Result<AdminClient<SecureContext>> {
    let config = connection.client_config(ClientKind::Admin);
    config
        .create_with_context(connection.context(&config))
        .context("cannot create the admin client")
}

/// The partition count of `topic`, from one metadata look-up; `None` when the broker does not
/// know the topic (or lists it without partitions).
pub fn partition_count(client: &Client, topic: &str) -> Result<Option<i32>> {
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
pub fn wait_for_topic(connection: &Connection, topic: &str) -> Result<i32> {
    let client = lookup_client(connection)?;
    await_topic(&client, topic, Deadline::after(LOOKUP_TIMEOUT))
}

/// Waits until the metadata `client` gets lists the partitions of `topic`, at most until
/// `deadline`; returns their count.
pub fn await_topic(client: &Client, topic: &str, deadline: Deadline) -> Result<i32> {
    loop {
        let found = client
            .fetch_metadata(Some(topic), deadline.left())
            .with_context(|| format!("cannot read the metadata of topic `{topic}`"))?;
        if let Some(t) = found
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        {
            return Ok(t.partitions().len() as i32);
        }
        if deadline.left().is_zero() {
            bail!(
                "topic `{topic}` did not appear in the metadata within {:?}",
                deadline.total()
            );
        }
        // Metadata changes announce themselves to no one: asking again is the only way.
        std::thread::sleep(Duration::from_millis(100).min(deadline.left()));
    }
}

/// A broker, as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Broker {
    /// Its broker id.
    pub id: i32,
    /// The host it advertises.
    pub host: String,
    /// The port it advertises.
    pub port: i32,
}

impl Broker {
    /// `host:port` (IPv6 hosts in brackets), to connect to.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic, as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionLayout {
    /// The partition number.
    pub partition: i32,
    /// The broker leading it (`None`: no leader).
    pub leader: Option<i32>,
    /// The brokers holding a replica.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader.
    pub isr: Vec<i32>,
    /// The error the broker reported for the partition, if any.
    pub error: Option<String>,
}

impl PartitionLayout {
    /// Whether some replica is out of sync (only where the broker lists replicas and ISR).
    pub fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }
}

/// A topic, as the metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicLayout {
    /// The topic name.
    pub name: String,
    /// The error the broker reported for the topic (an unknown topic has one), if any.
    pub error: Option<String>,
    /// Its partitions, in partition order.
    pub partitions: Vec<PartitionLayout>,
}

impl TopicLayout {
    /// Whether the topic is one of Kafka's own (`__consumer_offsets`, ...), by the convention
    /// that their names start with two underscores.
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }
}

/// The brokers and topics of a cluster, from one metadata request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterMetadata {
    /// The brokers, in broker id order.
    pub brokers: Vec<Broker>,
    /// The topics asked for (every topic when none was named), in name order.
    pub topics: Vec<TopicLayout>,
}

impl ClusterMetadata {
    /// `name`, when the broker knows it: listed without an error and with partitions.
    pub fn topic(&self, name: &str) -> Option<&TopicLayout> {
        self.topics
            .iter()
            .find(|t| t.name == name && t.error.is_none() && !t.partitions.is_empty())
    }
}

/// A broker's error code, for people ("Broker: Unknown topic or partition").
fn error_text(code: RDKafkaRespErr) -> String {
    RDKafkaErrorCode::from(code).to_string()
}

/// The metadata of `topic`, or of every topic when `None`, waiting at most `timeout`. Fails at
/// once, with the library's error naming the mechanism and user, or the TLS reason, when the
/// client's connection fails authentication or TLS (librdkafka would retry until `timeout`).
/// Serves the client's events while it waits (OAUTHBEARER token requests among them).
pub fn metadata<C: Watched>(
    client: &BaseConsumer<C>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<ClusterMetadata> {
    let context = || match topic {
        Some(t) => format!("cannot read the metadata of topic `{t}`"),
        None => "cannot read the cluster's metadata".to_string(),
    };
    let deadline = Deadline::after(timeout);
    let found = loop {
        match client.fetch_metadata(topic, SLICE.min(deadline.left())) {
            Ok(found) => break found,
            Err(e) => {
                // Errors reach the context only through polling.
                let _ = client.poll(Duration::ZERO);
                if let Some(failure) = client.context().watch().failure() {
                    return Err(anyhow!(failure)).with_context(context);
                }
                if deadline.left().is_zero() {
                    // The error's text already names its code: keep it, not its source.
                    return Err(anyhow!("{e}")).with_context(context);
                }
            }
        }
    };
    let mut brokers: Vec<Broker> = found
        .brokers()
        .iter()
        .map(|b| Broker {
            id: b.id(),
            host: b.host().to_string(),
            port: b.port(),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let mut topics: Vec<TopicLayout> = found
        .topics()
        .iter()
        .map(|t| {
            let mut partitions: Vec<PartitionLayout> = t
                .partitions()
                .iter()
                .map(|p| PartitionLayout {
                    partition: p.id(),
                    leader: (p.leader() >= 0).then_some(p.leader()),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                    error: p.error().map(error_text),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicLayout {
                name: t.name().to_string(),
                error: t.error().map(error_text),
                partitions,
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ClusterMetadata { brokers, topics })
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Its name.
    pub name: String,
    /// How many partitions.
    pub partitions: i32,
    /// How many replicas of each partition (`None`: the broker's default, on Kafka 2.4 and
    /// later).
    pub replication_factor: Option<i32>,
    /// Topic configs, like `retention.ms`.
    pub configs: Vec<(String, String)>,
}

/// Creates the topic `spec` describes through the CreateTopics admin API with a client made
/// from `config`, waiting at most `timeout`. The outer error is a failed request; the inner one
/// is the broker's refusal, like [`RDKafkaErrorCode::TopicAlreadyExists`].
pub async fn create_topic(
    connection: &Connection,
    spec: &TopicSpec,
    timeout: Duration,
) -> Result<Result<(), RDKafkaErrorCode>> {
    let admin = admin_client(connection)?;
    // -1: the broker's default replication factor.
    let replication = TopicReplication::Fixed(spec.replication_factor.unwrap_or(-1));
    let mut new = NewTopic::new(&spec.name, spec.partitions, replication);
    for (key, value) in &spec.configs {
        new = new.set(key, value);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .context("the CreateTopics request failed")?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(Ok(())),
        Some(Err((_, code))) => Ok(Err(code)),
        None => bail!("the broker did not answer for topic `{}`", spec.name),
    }
}

/// One config of a topic, as DescribeConfigs tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicConfig {
    /// The config name, like `retention.ms`.
    pub name: String,
    /// Its value (`None`: sensitive, or not set).
    pub value: Option<String>,
    /// Whether it is the default (not set on the topic).
    pub is_default: bool,
}

/// The configs of `topic` from DescribeConfigs with a client made from `config`, waiting at
/// most `timeout`, in name order.
pub async fn topic_configs(
    connection: &Connection,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<TopicConfig>> {
    let admin = admin_client(connection)?;
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .with_context(|| format!("the DescribeConfigs request for topic `{topic}` failed"))?;
    let resource = results
        .into_iter()
        .next()
        .with_context(|| format!("the broker did not answer for topic `{topic}`"))?
        .map_err(|code| anyhow::anyhow!("the broker refused DescribeConfigs: {code}"))?;
    let mut configs: Vec<TopicConfig> = resource
        .entries
        .into_iter()
        .map(|e| TopicConfig {
            is_default: e.is_default,
            value: if e.is_sensitive { None } else { e.value },
            name: e.name,
        })
        .collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(configs)
}

/// The (low, high) watermarks of partitions `0..partitions` of `topic`, retried for up to
/// [`LOOKUP_TIMEOUT`]: on Apache Kafka a topic just created can answer "not leader for
/// partition" for a moment after its metadata is visible.
pub fn watermarks(
    connection: &Connection,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i64, i64)>> {
    let client = lookup_client(connection)?;
    let all: Vec<i32> = (0..partitions).collect();
    let deadline = Deadline::after(LOOKUP_TIMEOUT);
    loop {
        match watermarks_of(&client, topic, &all, LOOKUP_TIMEOUT) {
            Err(e) if !deadline.left().is_zero() => {
                tracing::debug!(error = %format!("{e:#}"), "watermarks not readable yet; retrying");
                // Waiting for the broker to elect the leaders: polling is the only way to know.
                std::thread::sleep(Duration::from_millis(200));
            }
            done => return done,
        }
    }
}

/// The (low, high) watermarks of `partitions` of `topic`, in the order given; each look-up
/// waits at most `timeout`.
///
/// A partition whose leadership is still moving (NotLeaderForPartition, LeaderNotAvailable) is
/// asked again until `timeout`: right after a topic is created, Apache Kafka lists the leader in
/// its metadata a moment before that leader answers ListOffsets for the partition.
pub fn watermarks_of(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i64, i64)>> {
    partitions
        .iter()
        .map(|&p| {
            let deadline = Deadline::after(timeout);
            loop {
                match client.fetch_watermarks(topic, p, deadline.left()) {
                    Err(e) if leader_moving(&e) && !deadline.left().is_zero() => {
                        // Leadership changes announce themselves to no one: asking again is
                        // the only way.
                        std::thread::sleep(Duration::from_millis(100).min(deadline.left()));
                    }
                    found => {
                        return found
                            .with_context(|| format!("cannot read the watermarks of {topic}/{p}"))
                    }
                }
            }
        })
        .collect()
}

/// Whether `e` says a partition's leader is not (yet) known or not (yet) leading.
fn leader_moving(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable)
    )
}

/// The offsets `group` has committed for partitions `0..partitions` of `topic`, as the broker
/// reports them (next offset to consume; `None` where nothing is committed).
pub fn committed_offsets(
    connection: &Connection,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<i64>>> {
    let client = client(connection, group)?;
    let all: Vec<i32> = (0..partitions).collect();
    committed_offsets_of(&client, group, topic, &all, LOOKUP_TIMEOUT)
}

/// The offsets committed for `partitions` of `topic` (in the order given) by the group of
/// `client`, which is `group`: next offset to consume, `None` where nothing is committed.
pub fn committed_offsets_of(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<Option<i64>>> {
    let wanted: Vec<(&str, i32)> = partitions.iter().map(|&p| (topic, p)).collect();
    committed_offsets_in(client, group, &wanted, timeout)
}

/// The offsets committed by `group` (the group of `client`) for `partitions`, given as (topic,
/// partition) and answered in that order, from one request: next offset to consume, `None`
/// where nothing is committed.
pub fn committed_offsets_in(
    client: &Client,
    group: &str,
    partitions: &[(&str, i32)],
    timeout: Duration,
) -> Result<Vec<Option<i64>>> {
    let mut list = TopicPartitionList::new();
    for &(topic, p) in partitions {
        list.add_partition(topic, p);
    }
    let committed = client
        .committed_offsets(list, timeout)
        .with_context(|| format!("cannot read the offsets committed by group `{group}`"))?;
    Ok(partitions
        .iter()
        .map(
            |&(topic, p)| match committed.find_partition(topic, p).map(|e| e.offset()) {
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
        /// Its members.
        members: Vec<GroupMember>,
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

/// A member of a consumer group, as DescribeGroups tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// The member id the coordinator gave it.
    pub id: String,
    /// Its `client.id` (empty when the broker does not say).
    pub client_id: String,
    /// The host it connected from (empty when the broker does not say).
    pub host: String,
    /// The partitions assigned to it, by topic; `None` when the broker did not send an
    /// assignment (tansu 0.6 never does) or the group does not use the consumer protocol.
    pub assignment: Option<Vec<TopicPartitions>>,
}

impl fmt::Display for GroupMember {
    /// `ID`, plus the client id and host where the broker gives them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut about = Vec::new();
        if !self.client_id.is_empty() {
            about.push(format!("client {}", self.client_id));
        }
        if !self.host.is_empty() {
            about.push(format!("host {}", self.host));
        }
        if about.is_empty() {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{} ({})", self.id, about.join(", "))
        }
    }
}

/// The state and members of `group`, from ListGroups and DescribeGroups.
pub fn describe_group(client: &Client, group: &str, timeout: Duration) -> Result<GroupLookup> {
    let list = match client.fetch_group_list(Some(group), timeout) {
        Ok(list) => list,
        Err(KafkaError::GroupListFetch(RDKafkaErrorCode::UnsupportedFeature)) => {
            return Ok(GroupLookup::Unsupported)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot describe group `{group}`")),
    };
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(GroupLookup::Unknown);
    };
    // Only the consumer protocol's assignments have a known layout.
    let consumer_protocol = info.protocol_type() == "consumer";
    let members = info
        .members()
        .iter()
        .map(|m| GroupMember {
            id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().to_string(),
            assignment: m
                .assignment()
                .filter(|_| consumer_protocol)
                .and_then(consumer_protocol::decode_assignment),
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

/// Fails, naming the bootstrap addresses and what is wrong, unless the cluster accepts a TCP
/// connection and answers a metadata request from a client connected as `connection` says
/// within `timeout` (failing at once when the credentials or TLS settings are refused). For
/// commands whose first requests would otherwise wait for librdkafka's own timeouts (and fail
/// with its bare error) when the cluster cannot be reached.
pub fn require_kafka(connection: &Connection, timeout: Duration) -> Result<()> {
    let deadline = Deadline::after(timeout);
    require_bootstrap(connection.bootstrap(), deadline.left())?;
    let client = client(connection, "sluicegate-cli-probe")?;
    metadata(&client, None, deadline.left())
        .map_err(|e| explain(e, connection.bootstrap(), timeout.as_secs()))?;
    Ok(())
}

impl ClusterArgs {
    /// The command's time budget, starting now.
    pub fn deadline(&self) -> Deadline {
        Deadline::after(Duration::from_secs(self.timeout_secs))
    }

    /// How the command's clients connect: the configuration (`--config`, the environment,
    /// `--set`, `--bootstrap`) and every `-X`.
    pub fn connection(&self) -> Result<Connection> {
        Connection::load(&self.connect, std::env::vars(), &self.properties)
    }

    /// Fails unless a bootstrap server accepts a connection before `deadline`; then the
    /// connection.
    pub fn reach(&self, deadline: &Deadline) -> Result<Connection> {
        let connection = self.connection()?;
        require_bootstrap(connection.bootstrap(), deadline.left())?;
        Ok(connection)
    }

    /// `e`, the failure of a first request to the cluster, with [`no_answer`](crate::reach::no_answer)'s explanation,
    /// unless it already says why (credentials or TLS settings refused).
    pub fn unanswered(&self, connection: &Connection, e: anyhow::Error) -> anyhow::Error {
        explain(e, connection.bootstrap(), self.timeout_secs)
    }
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
            members: members.iter().map(|m| member(m, "", "")).collect(),
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

    fn member(id: &str, client_id: &str, host: &str) -> GroupMember {
        GroupMember {
            id: id.into(),
            client_id: client_id.into(),
            host: host.into(),
            assignment: None,
        }
    }

    #[test]
    fn members_show_their_client_and_host_where_known() {
        assert_eq!(member("m-1", "", "").to_string(), "m-1");
        assert_eq!(
            member("m-1", "app", "/10.0.0.1").to_string(),
            "m-1 (client app, host /10.0.0.1)"
        );
        assert_eq!(
            member("m-1", "", "/10.0.0.1").to_string(),
            "m-1 (host /10.0.0.1)"
        );
    }

    #[test]
    fn broker_addresses_bracket_ipv6_hosts() {
        let broker = |host: &str| Broker {
            id: 1,
            host: host.into(),
            port: 9092,
        };
        assert_eq!(broker("kafka-1").address(), "kafka-1:9092");
        assert_eq!(broker("::1").address(), "[::1]:9092");
    }

    #[test]
    fn unique_names_carry_the_prefix() {
        assert!(unique_name("sluicegate-demo").starts_with("sluicegate-demo-"));
    }
}
