//! [`EmbeddedKafka`]: librdkafka's in-process mock cluster, for demos and for your own tests.

use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::KafkaResult;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DefaultProducerContext, DeliveryResult, Producer as _,
    ProducerContext,
};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::{ClientContext, Message as _};

use crate::{Error, ErrorCode};

/// A kind of Kafka request, for [`EmbeddedKafka::request_errors`]: the requests a consumer, a
/// producer and a transaction make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiKey {
    /// Writing records.
    Produce,
    /// Reading records.
    Fetch,
    /// Looking up offsets by time or the log ends.
    ListOffsets,
    /// Cluster and topic metadata.
    Metadata,
    /// Committing a group's offsets.
    OffsetCommit,
    /// Reading a group's committed offsets.
    OffsetFetch,
    /// Finding a group's or a transaction's coordinator.
    FindCoordinator,
    /// Joining a group (the classic protocol).
    JoinGroup,
    /// A group member's heartbeat (the classic protocol).
    Heartbeat,
    /// Leaving a group.
    LeaveGroup,
    /// Receiving an assignment (the classic protocol).
    SyncGroup,
    /// Starting a producer id, for idempotence and transactions.
    InitProducerId,
    /// Adding partitions to a transaction.
    AddPartitionsToTxn,
    /// Adding a group's offsets to a transaction.
    AddOffsetsToTxn,
    /// Committing or aborting a transaction.
    EndTxn,
    /// Committing a group's offsets within a transaction.
    TxnOffsetCommit,
}

impl ApiKey {
    fn client(self) -> RDKafkaApiKey {
        match self {
            ApiKey::Produce => RDKafkaApiKey::Produce,
            ApiKey::Fetch => RDKafkaApiKey::Fetch,
            ApiKey::ListOffsets => RDKafkaApiKey::ListOffsets,
            ApiKey::Metadata => RDKafkaApiKey::Metadata,
            ApiKey::OffsetCommit => RDKafkaApiKey::OffsetCommit,
            ApiKey::OffsetFetch => RDKafkaApiKey::OffsetFetch,
            ApiKey::FindCoordinator => RDKafkaApiKey::FindCoordinator,
            ApiKey::JoinGroup => RDKafkaApiKey::JoinGroup,
            ApiKey::Heartbeat => RDKafkaApiKey::Heartbeat,
            ApiKey::LeaveGroup => RDKafkaApiKey::LeaveGroup,
            ApiKey::SyncGroup => RDKafkaApiKey::SyncGroup,
            ApiKey::InitProducerId => RDKafkaApiKey::InitProducerId,
            ApiKey::AddPartitionsToTxn => RDKafkaApiKey::AddPartitionsToTxn,
            ApiKey::AddOffsetsToTxn => RDKafkaApiKey::AddOffsetsToTxn,
            ApiKey::EndTxn => RDKafkaApiKey::EndTxn,
            ApiKey::TxnOffsetCommit => RDKafkaApiKey::TxnOffsetCommit,
        }
    }
}

/// What [`EmbeddedKafka::produce`]'s producer learns of each record: its partition and offset,
/// or why it was not written.
#[derive(Default)]
struct Acks(Mutex<Vec<Option<Ack>>>);

/// A record's partition and offset, or why it was not written.
type Ack = Result<(i32, i64), String>;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, record: usize) {
        let ack = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        if let Some(slot) = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(record)
        {
            *slot = Some(ack);
        }
    }
}

type Cluster = MockCluster<'static, DefaultProducerContext>;
type Command = Box<dyn FnOnce(&Cluster) -> KafkaResult<()> + Send>;

/// A Kafka cluster that runs inside this process: librdkafka's mock cluster, listening on
/// loopback TCP ports, so any Kafka client (not only Sluicegate) can connect to
/// [`bootstrap_servers`](Self::bootstrap_servers). It supports produce, fetch, consumer groups
/// and transactions, and can inject faults.
///
/// What the mock cluster does *not* do, so you meet it here rather than in a failing test:
/// - each partition keeps at most 5 MiB and 100,000 message sets, dropping the *oldest* data
///   beyond that; size test data to stay below, or consume while producing;
/// - the CreateTopics admin API is not supported: create topics with
///   [`create_topic`](Self::create_topic) (topics are also auto-created on first use, with the
///   default partition count);
/// - data lives in memory and is gone when this value is dropped.
///
/// ```
/// # fn main() -> Result<(), sluicegate::Error> {
/// let kafka = sluicegate::EmbeddedKafka::start(1)?;
/// kafka.create_topic("orders", 8)?;
/// println!("bootstrap servers: {}", kafka.bootstrap_servers());
/// # Ok(()) }
/// ```
pub struct EmbeddedKafka {
    bootstrap: String,
    brokers: i32,
    commands: Option<mpsc::Sender<(Command, mpsc::Sender<KafkaResult<()>>)>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` brokers (ids `1..=brokers`).
    pub fn start(brokers: i32) -> Result<Self, Error> {
        let (commands, inbox) = mpsc::channel::<(Command, mpsc::Sender<KafkaResult<()>>)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        // The mock cluster's handle is not `Send`: it lives on a thread of its own, and every
        // request travels there.
        let thread = std::thread::Builder::new()
            .name("sluicegate-embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for (command, reply) in inbox {
                    let _ = reply.send(command(&cluster));
                }
            })
            .map_err(|e| Error::Embedded(format!("cannot start the broker thread: {e}")))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| Error::Embedded("the broker thread ended during start-up".into()))?
            .map_err(|e| Error::Embedded(format!("cannot start the mock cluster: {e}")))?;
        Ok(EmbeddedKafka {
            bootstrap,
            brokers,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// The `bootstrap.servers` list of this cluster (`127.0.0.1:PORT,...`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The number of brokers, with ids `1..=broker_count()`.
    pub fn broker_count(&self) -> i32 {
        self.brokers
    }

    fn run(&self, what: &str, command: Command) -> Result<(), Error> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands
            .as_ref()
            .and_then(|c| c.send((command, reply_tx)).ok())
            .ok_or_else(|| Error::Embedded("the broker has stopped".into()))?;
        reply_rx
            .recv()
            .map_err(|_| Error::Embedded("the broker has stopped".into()))?
            .map_err(|e| Error::Embedded(format!("{what}: {e}")))
    }

    /// Creates `topic` with `partitions` partitions, replicated to every broker (up to 3).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), Error> {
        let name = topic.to_string();
        let replication = self.brokers.min(3);
        self.run(
            &format!("create topic `{topic}`"),
            Box::new(move |c| c.create_topic(&name, partitions, replication)),
        )
    }

    /// Writes `records` (key, value: `None` for none) to `topic` and waits until every one is
    /// acknowledged; returns each record's partition and offset, in order. Records go to
    /// `partition` if given, else by key as any producer would. For tests, demos and
    /// examples: each call makes a producer of its own.
    ///
    /// ```
    /// # fn main() -> Result<(), sluicegate::Error> {
    /// let kafka = sluicegate::EmbeddedKafka::start(1)?;
    /// kafka.create_topic("orders", 2)?;
    /// let placed = kafka.produce("orders", Some(1), [(Some("k1"), Some("a")), (None, Some("b"))])?;
    /// assert_eq!(placed, vec![(1, 0), (1, 1)]);
    /// # Ok(()) }
    /// ```
    pub fn produce<K, V>(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: impl IntoIterator<Item = (Option<K>, Option<V>)>,
    ) -> Result<Vec<(i32, i64)>, Error>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let failed = |why: String| Error::Embedded(format!("produce to `{topic}`: {why}"));
        let producer: BaseProducer<Acks> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .create_with_context(Acks::default())
            .map_err(|e| failed(e.to_string()))?;
        for (i, (key, value)) in records.into_iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(topic, i);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(k) = &key {
                record = record.key(k.as_ref());
            }
            if let Some(v) = &value {
                record = record.payload(v.as_ref());
            }
            producer
                .context()
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(None);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(failed(e.to_string())),
                }
            }
        }
        producer
            .flush(Duration::from_secs(30))
            .map_err(|e| failed(e.to_string()))?;
        let acks = std::mem::take(
            &mut *producer
                .context()
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        acks.into_iter()
            .map(|ack| {
                ack.unwrap_or_else(|| Err("not acknowledged".into()))
                    .map_err(failed)
            })
            .collect()
    }

    /// Takes a broker down: its listener closes and its connections drop, as in a crash.
    pub fn broker_down(&self, broker: i32) -> Result<(), Error> {
        self.run(
            &format!("broker {broker} down"),
            Box::new(move |c| c.broker_down(broker)),
        )
    }

    /// Brings a broker taken down by [`broker_down`](Self::broker_down) back.
    pub fn broker_up(&self, broker: i32) -> Result<(), Error> {
        self.run(
            &format!("broker {broker} up"),
            Box::new(move |c| c.broker_up(broker)),
        )
    }

    /// Adds `delay` to every response of a broker.
    pub fn broker_round_trip_time(&self, broker: i32, delay: Duration) -> Result<(), Error> {
        self.run(
            &format!("broker {broker} round-trip time"),
            Box::new(move |c| c.broker_round_trip_time(broker, delay)),
        )
    }

    /// Makes the next requests of kind `api` fail with `errors`, one error per request, in
    /// order. [`ErrorCode::TRANSPORT`] disconnects the client instead.
    pub fn request_errors(&self, api: ApiKey, errors: &[ErrorCode]) -> Result<(), Error> {
        let errors = errors
            .iter()
            .map(|e| e.response())
            .collect::<Result<Vec<_>, _>>()?;
        self.run(
            "push request errors",
            Box::new(move |c| {
                c.request_errors(api.client(), &errors);
                Ok(())
            }),
        )
    }

    /// Forgets errors pushed by [`request_errors`](Self::request_errors) not yet returned.
    pub fn clear_request_errors(&self, api: ApiKey) -> Result<(), Error> {
        self.run(
            "clear request errors",
            Box::new(move |c| {
                c.clear_request_errors(api.client());
                Ok(())
            }),
        )
    }

    /// Moves the leadership of a partition to `broker` (`None`: no leader). Clients notice at
    /// their next metadata refresh.
    pub fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
        broker: Option<i32>,
    ) -> Result<(), Error> {
        let name = topic.to_string();
        self.run(
            &format!("move leader of {topic}/{partition}"),
            Box::new(move |c| c.partition_leader(&name, partition, broker)),
        )
    }

    /// Makes `broker` the coordinator of consumer group `group`.
    pub fn group_coordinator(&self, group: &str, broker: i32) -> Result<(), Error> {
        let group = group.to_string();
        self.run(
            &format!("move coordinator of group {group}"),
            Box::new(move |c| c.coordinator(MockCoordinator::Group(group), broker)),
        )
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}
