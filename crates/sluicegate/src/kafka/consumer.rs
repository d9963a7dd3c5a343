//! The consumer in Sluicegate's words: [`ConsumerEvents`], the callbacks the runtime answers
//! (rebalances, statistics, client errors, OAUTHBEARER tokens), with librdkafka's consumer
//! context implemented once over it; and [`KafkaConsumer`], the client handle with the
//! operations the runtime uses, taking and giving partitions as [`TopicPartition`]s and
//! offsets as "next offset to consume".
//!
//! rdkafka's `commit(list)` and `store_offsets(list)` take the next offset to consume as
//! given (while `store_offset_from_message` adds one). Everything committed goes through
//! [`commit_list`], so that translation lives here only.

use std::time::Duration;

use rdkafka::client::{ClientContext, OAuthToken as RdOAuthToken};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};
use ref_cast::RefCast;
use tracing::warn;

use super::client::oauth_token;
use super::error::{client_error, kafka_error as kafka, CommitError};
use super::fetch_queue::{FetchError, FetchQueue, Record};
use super::producer::Producer;
use crate::commit::CommitEntry;
use crate::security::OAuthToken;
use crate::status::TopicPartition;
use crate::{ClientError, Error};

/// What a consumer's client tells its owner. librdkafka calls these on the thread that polls
/// the consumer (rebalances, statistics) or on its own threads (errors, tokens).
pub(crate) trait ConsumerEvents: Send + Sync + Sized + 'static {
    /// `partitions` are about to be assigned: before librdkafka fetches them.
    fn assigning(&self, consumer: &KafkaConsumer<Self>, partitions: &[TopicPartition]);
    /// `partitions` were assigned.
    fn assigned(&self, consumer: &KafkaConsumer<Self>, partitions: &[TopicPartition]);
    /// `partitions` are being revoked: what finished may still be committed now.
    fn revoking(&self, consumer: &KafkaConsumer<Self>, partitions: &[TopicPartition]);
    /// librdkafka's periodic statistics (`statistics.interval.ms`).
    fn statistics(&self, statistics: &Statistics);
    /// A client error from librdkafka's error callback, with its reason.
    fn error(&self, error: ClientError, reason: &str);
    /// An OAUTHBEARER token, when the client needs one.
    fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>>;
}

/// librdkafka's consumer context over [`ConsumerEvents`].
pub(crate) struct Callbacks<E>(E);

impl<E: ConsumerEvents> ClientContext for Callbacks<E> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<RdOAuthToken, Box<dyn std::error::Error>> {
        oauth_token(self.0.oauth_token())
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.0.statistics(&Statistics(statistics));
    }

    fn error(&self, e: KafkaError, reason: &str) {
        self.0.error(client_error(e), reason);
    }
}

impl<E: ConsumerEvents> ConsumerContext for Callbacks<E> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let consumer = KafkaConsumer::of(consumer);
        match rebalance {
            Rebalance::Revoke(list) => self.0.revoking(consumer, &topic_partitions(list)),
            Rebalance::Assign(list) => self.0.assigning(consumer, &topic_partitions(list)),
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.0
                .assigned(KafkaConsumer::of(consumer), &topic_partitions(list));
        }
    }
}

/// Where an assigned partition starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// This offset (the next to consume).
    Offset(i64),
    /// The first offset still in the log.
    Beginning,
    /// The end of the log.
    End,
    /// The group's committed offset, else as `auto.offset.reset` says.
    Committed,
}

impl StartAt {
    fn offset(self) -> Offset {
        match self {
            StartAt::Offset(o) => Offset::Offset(o),
            StartAt::Beginning => Offset::Beginning,
            StartAt::End => Offset::End,
            StartAt::Committed => Offset::Stored,
        }
    }
}

/// A partition's committed offset as the group's coordinator answered for it.
#[derive(Debug)]
pub(crate) struct Committed {
    pub tp: TopicPartition,
    /// The next offset to consume, if one was committed.
    pub next: Option<i64>,
    pub metadata: String,
    /// Why the coordinator gave no answer for this partition.
    pub error: Option<ClientError>,
}

/// One partition's figures from librdkafka's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartitionStatistics {
    /// The low watermark.
    pub log_start: Option<i64>,
    /// The high watermark.
    pub log_end: Option<i64>,
    /// The committed offset librdkafka knows of.
    pub committed: Option<i64>,
}

/// librdkafka's statistics, read by partition.
pub(crate) struct Statistics(rdkafka::statistics::Statistics);

impl Statistics {
    /// The figures of `topic`/`partition`, if the statistics name it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionStatistics> {
        let s = self.0.topics.get(topic)?.partitions.get(&partition)?;
        let known = |v: i64| (v >= 0).then_some(v);
        Some(PartitionStatistics {
            log_start: known(s.lo_offset),
            log_end: known(s.hi_offset),
            committed: known(s.committed_offset),
        })
    }
}

/// A consumer client whose callbacks go to `E`.
#[derive(RefCast)]
#[repr(transparent)]
pub(crate) struct KafkaConsumer<E: ConsumerEvents>(BaseConsumer<Callbacks<E>>);

impl<E: ConsumerEvents> KafkaConsumer<E> {
    /// Creates a consumer from `props`; a refused property is an [`Error::Config`] naming it.
    pub fn new(props: &crate::properties::Properties, events: E) -> Result<Self, Error> {
        super::client::rdkafka_config(props)
            .create_with_context(Callbacks(events))
            .map(KafkaConsumer)
            .map_err(Error::from_client_creation)
    }

    /// The handle of the client rdkafka passes to a rebalance callback.
    fn of(consumer: &BaseConsumer<Callbacks<E>>) -> &Self {
        Self::ref_cast(consumer)
    }

    /// The callbacks' owner.
    #[inline]
    pub fn context(&self) -> &E {
        &self.0.context().0
    }

    /// Calls `nonempty` whenever the consumer's own queue (rebalances, errors, statistics)
    /// goes from empty to not empty.
    pub fn on_nonempty(&mut self, nonempty: impl Fn() + Send + Sync + 'static) {
        self.0.set_nonempty_callback(nonempty);
    }

    /// A queue of this client that partitions' messages can be forwarded to (see
    /// [`FetchQueue::new`]).
    pub fn fetch_queue(&self, nonempty: impl Fn() + Send + Sync + 'static) -> FetchQueue {
        FetchQueue::new(&self.0, nonempty)
    }

    /// Forwards the messages of `partitions` to `queue` (see [`FetchQueue::forward`]).
    pub fn forward(&self, queue: &FetchQueue, partitions: &[TopicPartition]) {
        for tp in partitions {
            queue.forward(&self.0, &tp.topic, tp.partition);
        }
    }

    /// Takes one message or event of the consumer's own queue, waiting up to `timeout`;
    /// rebalance, error and statistics callbacks run inside.
    #[inline]
    pub fn poll(&self, timeout: Duration) -> Option<Result<impl Record + '_, FetchError>> {
        self.0
            .poll(timeout)
            .map(|polled| polled.map_err(FetchError::of))
    }

    /// Joins the group and subscribes to `topics`.
    pub fn subscribe(&self, topics: &[&str]) -> Result<(), Error> {
        self.0.subscribe(topics).map_err(kafka)
    }

    /// Assigns `partitions` without a group, each from where it says.
    pub fn assign(&self, partitions: &[(TopicPartition, StartAt)]) -> Result<(), Error> {
        let mut list = TopicPartitionList::with_capacity(partitions.len());
        for (tp, at) in partitions {
            list.add_partition_offset(&tp.topic, tp.partition, at.offset())
                .map_err(kafka)?;
        }
        self.0.assign(&list).map_err(kafka)
    }

    /// Whether the group took the assignment away without a revoke (the member was evicted).
    pub fn assignment_lost(&self) -> bool {
        self.0.assignment_lost()
    }

    /// Stops fetching `partitions`.
    pub fn pause(&self, partitions: &[TopicPartition]) -> Result<(), Error> {
        self.0.pause(&partition_list(partitions)).map_err(kafka)
    }

    /// Fetches `partitions` again.
    pub fn resume(&self, partitions: &[TopicPartition]) -> Result<(), Error> {
        self.0.resume(&partition_list(partitions)).map_err(kafka)
    }

    /// Moves the fetch position of `tp` to `offset`, waiting up to `timeout` (zero: queued,
    /// without waiting).
    pub fn seek(&self, tp: &TopicPartition, offset: i64, timeout: Duration) -> Result<(), Error> {
        self.0
            .seek(&tp.topic, tp.partition, Offset::Offset(offset), timeout)
            .map_err(kafka)
    }

    /// Commits `offsets` for the group, synchronously.
    pub fn commit(&self, offsets: &[CommitEntry]) -> Result<(), CommitError> {
        self.0
            .commit(&commit_list(offsets), CommitMode::Sync)
            .map_err(CommitError::of)
    }

    /// Sends `offsets` to `producer`'s open transaction with the group's metadata, so that
    /// they are committed with it.
    pub fn send_offsets_to_transaction(
        &self,
        producer: &Producer,
        offsets: &[CommitEntry],
        timeout: Duration,
    ) -> Result<(), CommitError> {
        let metadata = self
            .0
            .group_metadata()
            .ok_or(CommitError::Missing("the consumer group's metadata"))?;
        producer
            .send_offsets_to_transaction(&commit_list(offsets), &metadata, timeout)
            .map_err(CommitError::of)
    }

    /// The group's committed offsets of `partitions`.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Vec<Committed>, Error> {
        let list = self
            .0
            .committed_offsets(partition_list(partitions), timeout)
            .map_err(kafka)?;
        Ok(list
            .elements()
            .iter()
            .map(|e| Committed {
                tp: TopicPartition::new(e.topic(), e.partition()),
                next: match e.offset() {
                    Offset::Offset(next) => Some(next),
                    _ => None,
                },
                metadata: e.metadata().to_owned(),
                error: e.error().err().map(client_error),
            })
            .collect())
    }

    /// The fetch position (next offset to fetch) of each assigned partition that has one.
    pub fn positions(&self) -> Result<Vec<(TopicPartition, i64)>, Error> {
        let list = self.0.position().map_err(kafka)?;
        Ok(read_list(&list)
            .into_iter()
            .map(|e| (TopicPartition::new(e.topic, e.partition), e.next))
            .collect())
    }

    /// The log start and end (low and high watermarks) of `tp` on the broker now.
    pub fn watermarks(&self, tp: &TopicPartition, timeout: Duration) -> Result<(i64, i64), Error> {
        self.0
            .fetch_watermarks(&tp.topic, tp.partition, timeout)
            .map_err(kafka)
    }

    /// The first offset of `tp` whose record's timestamp is at or after `millis`; `None` if
    /// there is none.
    pub fn offset_for_time(
        &self,
        tp: &TopicPartition,
        millis: i64,
        timeout: Duration,
    ) -> Result<Option<i64>, Error> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(millis))
            .map_err(kafka)?;
        let found = self.0.offsets_for_times(list, timeout).map_err(kafka)?;
        Ok(match found.elements().first().map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o),
            _ => None,
        })
    }

    /// The partitions of `topic` the cluster reports (none if it reports the topic with an
    /// error, or not at all).
    pub fn partition_ids(&self, topic: &str, timeout: Duration) -> Result<Vec<i32>, Error> {
        let metadata = self.0.fetch_metadata(Some(topic), timeout).map_err(kafka)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions())
            .map(|p| p.id())
            .collect())
    }

    /// Whether a broker answers a metadata request within `timeout`.
    pub fn reaches_broker(&self, timeout: Duration) -> bool {
        self.0.fetch_metadata(None, timeout).is_ok()
    }

    /// The fatal error the client hit, with its underlying code, if it hit one.
    pub fn fatal_error(&self) -> Option<ClientError> {
        self.0
            .client()
            .fatal_error()
            .map(|(code, _)| client_error(KafkaError::MessageConsumptionFatal(code)))
    }
}

/// The partitions a rebalance names.
fn topic_partitions(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// Builds the list to commit.
fn commit_list(entries: &[CommitEntry]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(entries.len());
    for e in entries {
        let mut elem = list.add_partition(&e.topic, e.partition);
        elem.set_offset(Offset::Offset(e.next))
            .expect("a concrete offset is always accepted");
        if !e.metadata.is_empty() {
            elem.set_metadata(&e.metadata);
        }
    }
    list
}

/// Reads what a list returned by rdkafka (for example from `committed_offsets`) holds,
/// leaving out partitions without a concrete offset.
fn read_list(list: &TopicPartitionList) -> Vec<CommitEntry> {
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(next) => Some(CommitEntry {
                topic: e.topic().to_string(),
                partition: e.partition(),
                next,
                metadata: e.metadata().to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// A list naming partitions only, for pause, resume and look-ups.
fn partitions<'a>(tps: impl IntoIterator<Item = (&'a str, i32)>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in tps {
        list.add_partition(topic, partition);
    }
    list
}

fn partition_list(tps: &[TopicPartition]) -> TopicPartitionList {
    partitions(tps.iter().map(|tp| (tp.topic.as_str(), tp.partition)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_metadata_round_trip_unchanged_through_the_list() {
        let entry = |topic: &str, partition, next, metadata: &str| CommitEntry {
            topic: topic.into(),
            partition,
            next,
            metadata: metadata.into(),
        };
        let entries = vec![
            entry("a", 0, 10, "sg1:10:2"),
            entry("a", 3, 0, ""),
            entry("b", 1, 7, ""),
        ];
        assert_eq!(read_list(&commit_list(&entries)), entries);
    }
}
