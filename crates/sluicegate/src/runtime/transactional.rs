//! Exactly-once mode: consume, transform and produce in Kafka transactions.
//!
//! One thread polls, cuts batches (see [`Batcher`]) and runs each batch in a transaction that
//! holds the handler's outputs (sent through the transactional [`Output`](crate::Output)) and
//! the batch's offsets (`send_offsets_to_transaction` with the group's metadata). A handler
//! failure aborts the transaction, so `read_committed` readers never see an output of a failed
//! attempt; the batch is retried from memory, and bisected down to single records when the
//! retry policy gives up, by the same built-in layers as at-least-once mode (see
//! [`crate::layer`]), each attempt and each dead-letter write in a transaction of its own.
//!
//! A single record the handler gives up on with no dead-letter topic stops its partition: the
//! partition is paused and rewound to the record, and its messages are dropped until it is
//! released (see [`StuckPartition`](crate::StuckPartition)); the other partitions go on.
//!
//! While a batch is handled (a slow handler, a retry's wait) the loop goes on polling, so
//! `max.poll.interval.ms` never evicts the member; what those polls fetch waits for the next
//! batches (bounded: past the batch size it is fetched again later), and a rebalance that lands
//! inside a transaction makes its offsets refused, so it aborts. Fencing
//! is the broker's: a producer whose transactional id another instance has initialised since
//! is fenced (a fatal error: this consumer stops), and offsets sent with the metadata of an
//! older group generation are refused (the transaction aborts and the batch is re-fetched, if
//! the partitions are still ours).

use std::collections::BTreeMap;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use tracing::{info, warn};

use crate::commit::CommitEntry;
use crate::dead_letter::Failure;
use crate::dispatch::{BatchLimits, Batcher};
use crate::handler::{ErrorKind, Outcome, Work};
use crate::kafka::consumer::{ConsumerEvents, KafkaConsumer, Statistics};
use crate::kafka::producer::{abort_transaction, begin_transaction, init_transactions};
use crate::kafka::{FetchError, Record as _};
use crate::layer::{Attempt, Attempted, Scope, Stages, WithBreaker, WithDeadLetter, WithTimeout};
use crate::output::Producer;
use crate::properties::Properties;
use crate::security::{generate_oauth_token, ClientErrors, OAuthToken, SecurityWatch};
use crate::status::TopicPartition;
use crate::{ClientError, Error, Message};

use super::commit::{CommitError, CommitOffsets as _, TransactionCommit};
use super::poll::Control;
use super::seek::{self, SeekTo};
use super::status::{Figures, StatusPublisher};
use super::worker::{log_stuck, stuck_partition, Worker, PAUSE_RETRIES_FROM};

/// How long a transaction call (init, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a poll blocks when no batch is due sooner.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// The exactly-once loop and what it needs.
pub(crate) struct Pipeline<W> {
    pub worker: Arc<Worker<W>>,
    pub producer: Arc<Producer>,
    /// TLS and authentication failures of the producer's connections.
    pub producer_errors: Option<Arc<ClientErrors>>,
    pub limits: BatchLimits,
    pub status: StatusPublisher,
    pub runtime: tokio::runtime::Handle,
    pub control: Control,
    pub oauth: Option<crate::security::OAuth>,
}

/// What the rebalance and error callbacks tell the loop.
struct PipelineContext {
    /// TLS and authentication failures stop the loop, as in at-least-once mode.
    errors: ClientErrors,
    revoked: Mutex<Vec<TopicPartition>>,
    status: StatusPublisher,
    /// Log ends (high watermarks) from librdkafka's statistics, for the lag figures.
    log_ends: Mutex<BTreeMap<TopicPartition, i64>>,
    oauth: Option<crate::security::OAuth>,
}

/// The exactly-once loop's client.
type Client = KafkaConsumer<PipelineContext>;

impl ConsumerEvents for PipelineContext {
    fn assigning(&self, _: &Client, _: &[TopicPartition]) {}

    fn assigned(&self, consumer: &Client, partitions: &[TopicPartition]) {
        // A partition stopped (paused) before an earlier revoke may come back paused.
        if let Err(e) = consumer.resume(partitions) {
            warn!(error = %e, "could not resume newly assigned partitions");
        }
        info!(partitions = ?partitions, "partitions assigned");
        self.status.assigned(partitions.to_vec(), true);
    }

    fn revoking(&self, _: &Client, partitions: &[TopicPartition]) {
        info!(partitions = ?partitions, "partitions revoked");
        self.status.revoked(partitions, true);
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(partitions);
    }

    fn statistics(&self, statistics: &Statistics) {
        let mut ends = self.log_ends.lock().unwrap_or_else(|p| p.into_inner());
        ends.extend(statistics.log_ends());
    }

    fn error(&self, error: ClientError, reason: &str) {
        self.errors.error(error, reason);
    }

    fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        generate_oauth_token(self.oauth.as_ref(), Some(&self.errors))
    }
}

/// What the loop does after a batch.
enum Flow {
    /// Take the next batch.
    Next,
    /// The transaction could not commit: fetch these partitions again from these offsets.
    Rewind(BTreeMap<TopicPartition, i64>),
    /// Aborted, as a crash: stop now, leaving any transaction open.
    Stop,
    /// The handler gave up on this message and no dead-letter topic takes it: its partition
    /// stops there, and the rest of the batch is fetched again.
    Stuck(Message, Failure),
}

impl<W: Work> Pipeline<W> {
    /// Runs until stopped. A fatal error (such as being fenced by a newer instance with the
    /// same transactional id) ends it with that error.
    pub fn run(self, client: &Properties, topics: &[String]) -> Result<(), Error> {
        // Timers made on this thread (retry back-offs) belong to the handlers' runtime.
        let _runtime = self.runtime.enter();
        let context = PipelineContext {
            errors: ClientErrors::new(SecurityWatch::new(client)),
            revoked: Mutex::new(Vec::new()),
            status: self.status.clone(),
            log_ends: Mutex::new(BTreeMap::new()),
            oauth: self.oauth.clone(),
        };
        let consumer = Client::new(client, context)?;
        if !self.init_transactions(&consumer)? {
            return Ok(());
        }
        // Subscribed only now, so that nothing is fetched before transactions can run.
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let mut counters = Counters::default();
        // The same policies as the lanes', around the transaction's handler calls.
        let stack = self.worker.stack.around(EachMessage {
            batch: self.worker.batch.is_some(),
            calls: self.worker.stack.calls(),
        });
        let mut batcher: Batcher<Message> = Batcher::new(self.limits);
        let mut topic_names: Vec<Arc<str>> = Vec::new();
        // Partitions stopped at a record given up on: their messages are dropped until they
        // are released.
        let mut stuck: Vec<TopicPartition> = Vec::new();
        loop {
            self.status.heartbeat();
            if self.control.abort.is_cancelled() || self.control.shutdown.is_cancelled() {
                // Between transactions nothing is open; what waits in the batcher was not
                // committed and goes to the next owner.
                return Ok(());
            }
            self.check_security(&consumer)?;
            let now = Instant::now();
            let wait = batcher.deadline().map_or(POLL_WAIT, |d| {
                d.saturating_duration_since(now).min(POLL_WAIT)
            });
            match consumer.poll(wait) {
                Some(Ok(m))
                    if stuck
                        .iter()
                        .any(|tp| tp.partition == m.partition() && tp.topic == m.topic()) => {}
                Some(Ok(m)) => {
                    let topic = match topic_names.iter().find(|t| &***t == m.topic()) {
                        Some(t) => t.clone(),
                        None => {
                            topic_names.push(Arc::from(m.topic()));
                            topic_names[topic_names.len() - 1].clone()
                        }
                    };
                    if let Some(metrics) = self.status.metrics() {
                        metrics.topic(&topic).consumed.inc();
                    }
                    let message = m.to_message(topic);
                    let size = message.size();
                    batcher.push(message, size, Instant::now());
                }
                Some(Err(FetchError::Fatal(e))) => return Err(Error::Fatal(e)),
                Some(Err(FetchError::PartitionEnd(_))) | None => {}
                Some(Err(FetchError::Other(e))) => warn!(error = %e, "consumer error"),
            }
            drop_revoked(&consumer, &mut batcher, &mut stuck);
            for request in self.control.seeks.take() {
                let moved = seek_partition(&consumer, &mut batcher, &request.tp, request.to);
                if let Ok(entry) = &moved {
                    self.status.committed(std::slice::from_ref(entry));
                    if let Some(i) = stuck.iter().position(|tp| *tp == request.tp) {
                        stuck.swap_remove(i);
                        let _ = consumer.resume(std::slice::from_ref(&request.tp));
                        self.status.unstuck(&request.tp);
                    }
                }
                let _ = request.reply.send(moved.map(|e| e.next));
            }
            while let Some(batch) = batcher.next_batch(Instant::now(), false) {
                let mut next = first_offsets(&batch);
                let mut meanwhile = Meanwhile::new(self.limits.max_messages);
                let flow = self.settle(
                    &stack,
                    &consumer,
                    &batch,
                    &mut next,
                    &mut counters,
                    &mut meanwhile,
                );
                // What was fetched while the batch ran goes after it, then the flow applies
                // to all of it (a rewind drops what it fetches again).
                if let Some(e) = meanwhile.fatal {
                    return Err(Error::Fatal(e));
                }
                for m in meanwhile.messages {
                    if !stuck.contains(&TopicPartition::new(m.topic(), m.partition())) {
                        let size = m.size();
                        batcher.push(m, size, Instant::now());
                    }
                }
                meanwhile.dropped.seek_back(&consumer);
                drop_revoked(&consumer, &mut batcher, &mut stuck);
                match flow? {
                    Flow::Next => {}
                    Flow::Stop => return Ok(()),
                    Flow::Rewind(from) => rewind(&consumer, &mut batcher, &from),
                    Flow::Stuck(message, failure) => {
                        let tp = TopicPartition::new(message.topic(), message.partition());
                        log_stuck(&message, &failure);
                        if let Err(e) = consumer.pause(std::slice::from_ref(&tp)) {
                            warn!(topic = %tp.topic, partition = tp.partition, error = %e,
                                  "could not pause a stuck partition; its messages are dropped");
                        }
                        self.status.stuck(&tp, stuck_partition(&message, &failure));
                        // The batch's other partitions are fetched again from what it left
                        // uncommitted; the stuck one from the record, once released.
                        next.insert(tp.clone(), message.offset());
                        rewind(&consumer, &mut batcher, &next);
                        stuck.push(tp);
                    }
                }
            }
        }
    }

    /// Fences earlier producers with this transactional id and aborts what they left open.
    /// `init_transactions` blocks until the transaction coordinator answers (at most
    /// [`TXN_TIMEOUT`]), which a broker that refuses our certificate or credentials never
    /// does: it runs on a thread of its own while this one serves the consumer's callbacks and
    /// watches both clients' errors, so that such a failure stops the consumer at once (the
    /// thread ends by itself when the call times out). `false` when stopped while waiting.
    fn init_transactions(&self, consumer: &Client) -> Result<bool, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let producer = self.producer.clone();
        std::thread::Builder::new()
            .name("sluicegate-init-txn".into())
            .spawn(move || {
                let _ = tx.send(init_transactions(&producer, TXN_TIMEOUT));
            })
            .map_err(|e| Error::Thread(e.to_string()))?;
        loop {
            self.status.heartbeat();
            if self.control.abort.is_cancelled() || self.control.shutdown.is_cancelled() {
                return Ok(false);
            }
            // Not subscribed yet: this serves callbacks (errors) and returns no message.
            let _ = consumer.poll(Duration::ZERO);
            self.check_security(consumer)?;
            match rx.recv_timeout(POLL_WAIT) {
                Ok(Ok(())) => return Ok(true),
                Ok(Err(e)) => {
                    // A security failure explains a failed init better than its timeout.
                    self.check_security(consumer)?;
                    return Err(Error::Fatal(e));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Thread(
                        "init_transactions ended without an answer".into(),
                    ))
                }
            }
        }
    }

    /// The TLS or authentication failure, of the consumer or of the producer, that stops the
    /// loop (see [`crate::security`]).
    fn check_security(&self, consumer: &Client) -> Result<(), Error> {
        let failure = consumer.context().errors.security_failure().or_else(|| {
            self.producer_errors
                .as_ref()
                .and_then(|e| e.security_failure())
        });
        match failure {
            Some(failure) => Err(failure.into()),
            None => Ok(()),
        }
    }

    /// Runs `batch` through the built-in layers (`stack`, the same policies as at-least-once
    /// mode) until every message of it is committed: each handler attempt and each dead-letter
    /// write in a transaction of its own, aborted if it fails, and each group of messages that
    /// settles (the batch, or a half of it bisected) committed in its transaction. `next`
    /// holds, per partition, the first offset of the batch not yet committed. A retry or
    /// dead-letter wait ends when the consumer shuts down, leaving the rest to the next owner.
    fn settle(
        &self,
        stack: &Stack<'_, W>,
        consumer: &Client,
        batch: &[Message],
        next: &mut BTreeMap<TopicPartition, i64>,
        counters: &mut Counters,
        meanwhile: &mut Meanwhile,
    ) -> Result<Flow, Error> {
        let released = vec![&self.control.shutdown; batch.len()];
        let mut transaction = Transaction {
            pipeline: self,
            consumer,
            next,
            counters,
            paused: Vec::new(),
        };
        let handled = self.until_aborted(
            consumer,
            meanwhile,
            stack.handle(batch, &released, &mut transaction),
        );
        transaction.resume();
        match handled {
            None | Some(Err(Halt::Flow(Flow::Stop))) => Ok(Flow::Stop),
            Some(Ok(())) => Ok(Flow::Next),
            Some(Err(Halt::Flow(flow))) => Ok(flow),
            Some(Err(Halt::Failed(e))) => Err(e),
        }
    }

    /// Commits the open transaction with the offsets after `batch`, whose messages ended with
    /// `outcome`.
    fn commit(
        &self,
        consumer: &Client,
        batch: &[Message],
        outcome: Outcome,
        next: &mut BTreeMap<TopicPartition, i64>,
        counters: &mut Counters,
    ) -> Result<Flow, Error> {
        if self.control.abort.is_cancelled() {
            return Ok(Flow::Stop);
        }
        let offsets = offsets_after(batch);
        // A partition of the batch revoked while it ran (the consumer is polled meanwhile) may
        // already be another member's, which starts from the offsets committed before: the
        // transaction must not commit.
        let revoked_meanwhile = {
            let revoked = consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            offsets
                .iter()
                .any(|e| revoked.contains(&TopicPartition::new(&e.topic, e.partition)))
        };
        if revoked_meanwhile {
            warn!("partitions of the batch were revoked while it ran; aborting its transaction");
            self.abort_transaction()?;
            return Ok(Flow::Rewind(next.clone()));
        }
        let result = TransactionCommit {
            consumer,
            producer: &self.producer,
        }
        .commit(&offsets);
        match result {
            Ok(()) => {
                for e in &offsets {
                    next.insert(TopicPartition::new(&e.topic, e.partition), e.next);
                }
                self.status.transaction(Some(&offsets));
                if let Some(metrics) = self.status.metrics() {
                    let now = SystemTime::now();
                    for m in batch {
                        metrics.topic(m.topic()).finished(outcome, m.age(now));
                    }
                }
                let lag = self.status.lag(
                    &consumer
                        .context()
                        .log_ends
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                self.status.figures(Figures {
                    dead_lettered: counters.dead_lettered,
                    retried: counters.retried,
                    lag,
                    ..Figures::default()
                });
                Ok(Flow::Next)
            }
            Err(e @ (CommitError::Fatal(_) | CommitError::Missing(_))) => Err(e.into_error()),
            Err(e) => {
                warn!(error = %e, "transaction commit failed; aborting it and fetching the batch again");
                self.abort_transaction()?;
                Ok(Flow::Rewind(next.clone()))
            }
        }
    }

    fn abort_transaction(&self) -> Result<(), Error> {
        abort_transaction(&self.producer, TXN_TIMEOUT).map_err(Error::Fatal)?;
        self.status.transaction(None);
        Ok(())
    }

    /// Runs `future` on the Tokio runtime unless the consumer is aborted first (`None`). While
    /// it runs (a slow handler, a retry's wait), the consumer is polled every [`POLL_WAIT`]:
    /// that keeps `max.poll.interval.ms` met, so a long batch never costs the group membership,
    /// and serves rebalances (a transaction whose partitions were revoked meanwhile cannot
    /// commit its offsets: it aborts, and the next owner handles the batch). What the polls
    /// return is kept in `meanwhile` for the next batches.
    fn until_aborted<T>(
        &self,
        consumer: &Client,
        meanwhile: &mut Meanwhile,
        future: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let abort = self.control.abort.clone();
        self.runtime.block_on(async move {
            tokio::pin!(future);
            let mut polls = tokio::time::interval(POLL_WAIT);
            polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once: the loop polled just before the batch.
            polls.tick().await;
            loop {
                tokio::select! {
                    biased;
                    _ = abort.cancelled() => return None,
                    r = &mut future => return Some(r),
                    _ = polls.tick() => {
                        self.status.heartbeat();
                        meanwhile.poll(consumer);
                    }
                }
            }
        })
    }
}

/// Messages the consumer returned while a batch was being handled, up to a bound; past it, a
/// partition's messages are dropped and fetched again afterwards ([`Refetch`]).
struct Meanwhile {
    messages: Vec<Message>,
    bound: usize,
    dropped: Refetch,
    /// A fatal consumer error: the loop stops with it once the batch is done.
    fatal: Option<ClientError>,
}

impl Meanwhile {
    fn new(bound: usize) -> Self {
        Meanwhile {
            messages: Vec::new(),
            bound,
            dropped: Refetch::default(),
            fatal: None,
        }
    }

    /// Takes what the consumer has now, without waiting.
    fn poll(&mut self, consumer: &Client) {
        while let Some(result) = consumer.poll(Duration::ZERO) {
            match result {
                Ok(m) => {
                    let tp = TopicPartition::new(m.topic(), m.partition());
                    // Once one of a partition's messages is dropped, so are those after it.
                    if self.messages.len() >= self.bound || self.dropped.has(&tp) {
                        self.dropped.from(tp, m.offset());
                    } else {
                        let topic = Arc::from(m.topic());
                        self.messages.push(m.to_message(topic));
                    }
                }
                Err(FetchError::Fatal(e)) => {
                    self.fatal.get_or_insert(e);
                }
                Err(FetchError::PartitionEnd(_)) => {}
                Err(FetchError::Other(e)) => warn!(error = %e, "consumer error"),
            }
        }
    }
}

/// Per partition, the first offset dropped: where fetching starts again.
#[derive(Default)]
struct Refetch(BTreeMap<TopicPartition, i64>);

impl Refetch {
    fn has(&self, tp: &TopicPartition) -> bool {
        self.0.contains_key(tp)
    }

    fn from(&mut self, tp: TopicPartition, offset: i64) {
        self.0.entry(tp).or_insert(offset);
    }

    /// Moves each partition's fetch position back to its first dropped offset.
    fn seek_back(self, consumer: &Client) {
        for (tp, offset) in self.0 {
            if let Err(e) = consumer.seek(&tp, offset, TXN_TIMEOUT) {
                info!(topic = %tp.topic, partition = tp.partition, error = %e,
                      "not fetched again; the partition is probably no longer ours");
            }
        }
    }
}

/// Drops what waits for partitions revoked since the last look, and forgets that they were
/// stuck.
fn drop_revoked(
    consumer: &Client,
    batcher: &mut Batcher<Message>,
    stuck: &mut Vec<TopicPartition>,
) {
    let revoked = std::mem::take(
        &mut *consumer
            .context()
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    if !revoked.is_empty() {
        batcher.retain(|m| !revoked.contains(&TopicPartition::new(m.topic(), m.partition())));
        stuck.retain(|tp| !revoked.contains(tp));
    }
}

/// The built-in layers as exactly-once mode applies them (see [`EachMessage`]).
type Stack<'a, W> = WithDeadLetter<EachMessage<&'a WithBreaker<WithTimeout<W>>>>;

/// The calls of one transaction's attempt: the batch in one call for a batch handler, or one
/// call per message for a handler, up to the first failure (a skip goes on). Each call goes
/// through the breaker and the handler timeout, as in a lane.
struct EachMessage<A> {
    batch: bool,
    calls: A,
}

impl<A: Attempt> Attempt for EachMessage<A> {
    async fn attempt(
        &self,
        messages: &[Message],
        released: &[&CancellationToken],
        stages: Stages,
    ) -> Option<Attempted> {
        if self.batch {
            return self.calls.attempt(messages, released, stages).await;
        }
        let mut last = None;
        for (i, message) in messages.iter().enumerate() {
            let one = std::slice::from_ref(message);
            let attempted = self.calls.attempt(one, &released[i..=i], stages).await?;
            match &attempted.result {
                Err(e) if e.kind() != ErrorKind::Skip => return Some(attempted),
                _ => last = attempted.ended,
            }
        }
        Some(Attempted {
            result: Ok(()),
            ended: last,
        })
    }

    fn handler_ended(&self, messages: &[Message], ended: Option<quanta::Instant>) {
        self.calls.handler_ended(messages, ended)
    }
}

/// Why the layers stop a batch early in exactly-once mode.
enum Halt {
    /// What the loop does next instead.
    Flow(Flow),
    /// A fatal error: the consumer stops with it.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Failed(e)
    }
}

/// The [`Scope`] of a batch in exactly-once mode: each attempt runs in a transaction, and what
/// settles is committed in it.
struct Transaction<'a, W> {
    pipeline: &'a Pipeline<W>,
    consumer: &'a Client,
    next: &'a mut BTreeMap<TopicPartition, i64>,
    counters: &'a mut Counters,
    /// Partitions paused while a retry waits, resumed when the batch is done.
    paused: Vec<TopicPartition>,
}

impl<W> Transaction<'_, W> {
    /// Resumes the partitions paused for retry waits.
    fn resume(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.resume(&self.paused) {
            warn!(error = %e, "could not resume partitions paused for a retry");
        }
        self.paused.clear();
    }
}

impl<W: Work> Scope for Transaction<'_, W> {
    type Halt = Halt;

    const STAGES: bool = false;

    fn begin(&mut self) -> Result<(), Halt> {
        begin_transaction(&self.pipeline.producer).map_err(|e| Halt::Failed(Error::Fatal(e)))
    }

    fn failed(&mut self) -> Result<(), Halt> {
        Ok(self.pipeline.abort_transaction()?)
    }

    fn settled(&mut self, messages: &[Message], outcome: Option<Outcome>) -> Result<(), Halt> {
        let Some(outcome) = outcome else {
            // Released: the consumer is shutting down, and nothing is open.
            return Err(Halt::Flow(Flow::Stop));
        };
        match outcome {
            Outcome::Handled { attempts } => {
                self.counters.retried += u64::from(attempts - 1) * messages.len() as u64;
            }
            Outcome::DeadLettered { attempts } => {
                self.counters.dead_lettered += 1;
                self.counters.retried += u64::from(attempts - 1);
            }
            Outcome::Skipped => {}
        }
        let flow =
            self.pipeline
                .commit(self.consumer, messages, outcome, self.next, self.counters)?;
        match flow {
            Flow::Next => Ok(()),
            other => Err(Halt::Flow(other)),
        }
    }

    fn stuck(&mut self, message: &Message, failure: Failure) -> Result<(), Halt> {
        Err(Halt::Flow(Flow::Stuck(message.clone(), failure)))
    }

    fn waiting(&mut self, messages: &[Message], delay: Duration) {
        if delay < PAUSE_RETRIES_FROM {
            return;
        }
        let mut added = Vec::new();
        for m in messages {
            let tp = TopicPartition::new(m.topic(), m.partition());
            if !self.paused.contains(&tp) && !added.contains(&tp) {
                added.push(tp);
            }
        }
        if added.is_empty() {
            return;
        }
        match self.consumer.pause(&added) {
            Ok(()) => self.paused.extend(added),
            Err(e) => warn!(error = %e, "could not pause partitions for a retry"),
        }
    }
}

/// Fetches the partitions of `from` again from the offsets given, dropping what waits in the
/// batcher for them.
fn rewind(consumer: &Client, batcher: &mut Batcher<Message>, from: &BTreeMap<TopicPartition, i64>) {
    batcher.retain(|m| !from.contains_key(&TopicPartition::new(m.topic(), m.partition())));
    for (tp, offset) in from {
        // Fails for partitions no longer ours: their new owner has them.
        if let Err(e) = consumer.seek(tp, *offset, TXN_TIMEOUT) {
            info!(topic = %tp.topic, partition = tp.partition, error = %e,
                  "not rewound; the partition is probably no longer ours");
        }
    }
}

/// Moves an owned partition between transactions: what waits in the batcher for it is dropped.
fn seek_partition(
    consumer: &Client,
    batcher: &mut Batcher<Message>,
    tp: &TopicPartition,
    to: SeekTo,
) -> Result<CommitEntry, Error> {
    if !consumer.owns(tp)? {
        return Err(Error::NotAssigned(tp.to_string()));
    }
    let offset = seek::resolve(consumer, tp, to)?;
    batcher.retain(|m| !(m.topic() == tp.topic && m.partition() == tp.partition));
    seek::move_to(consumer, tp, offset)
}

/// Dead letters and retries so far, for the status.
#[derive(Default)]
struct Counters {
    dead_lettered: u64,
    retried: u64,
}

/// Per partition, the first offset in `batch`.
fn first_offsets(batch: &[Message]) -> BTreeMap<TopicPartition, i64> {
    let mut first = BTreeMap::new();
    for m in batch {
        first
            .entry(TopicPartition::new(m.topic(), m.partition()))
            .or_insert(m.offset());
    }
    first
}

/// Per partition, the offset after the last one in `batch`: what its transaction commits.
fn offsets_after(batch: &[Message]) -> Vec<CommitEntry> {
    let mut after: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = after.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    after
        .into_iter()
        .map(|((topic, partition), next)| CommitEntry {
            topic: topic.to_owned(),
            partition,
            next,
            metadata: String::new(),
        })
        .collect()
}
