//! [`Consumer`]: the builder, `run`, and the handle of a running consumer.
//!
//! The runtime owns the Kafka consumer (`kafka::consumer::KafkaConsumer`, the adapter's handle)
//! on a dedicated poll thread (see `poll`), routes messages to lanes (Tokio tasks, see
//! `worker`) and commits what the offset trackers allow.

mod assignment;
mod builder;
mod catch_up;
mod commit;
mod committer;
mod context;
mod event;
mod fencing;
mod http;
mod poll;
mod seek;
mod status;
mod stream;
mod wakeup;
mod worker;

pub use builder::ConsumerBuilder;
pub use seek::SeekTo;
pub use status::StatusWatch;
pub use stream::{Delivery, Messages, StreamHandler};

use std::net::SocketAddr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::dead_letter::DeadLetterWriter;
use crate::dispatch::{BatchLimits, Ordering};
use crate::handler::Work;
use crate::health::Health;
use crate::kafka::consumer::{KafkaConsumer, StartAt};
use crate::kafka::producer;
use crate::layer::{self, Policies};
use crate::metrics::Metrics;
use crate::output::Output;
use crate::policy::{Breaker, CircuitState, Reconnect};
use crate::properties::Properties;
use crate::security::{OAuth, SecurityWatch};
use crate::settings::Settings;
use crate::status::{CatchUp, TopicPartition};
use crate::{ClientError, Error, ErrorCode};

use assignment::{Assignment, LaneSpawner, Routing};
use catch_up::Targets;
use commit::CommitWay;
use context::{Client, RuntimeConsumer, RuntimeContext};
use fencing::{FenceCount, InstanceConflict};
use poll::{Control, SessionEnd};
use status::StatusPublisher;
use worker::Worker;

/// How long a static assignment waits for the topics' partitions.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait for `init_transactions` looks at a stop and at the producer's errors.
const INIT_LOOK: Duration = Duration::from_millis(50);

/// A Kafka consumer that runs a [`Handler`](crate::Handler) with at-least-once commits.
///
/// ```no_run
/// use sluicegate::{handler_fn, Consumer, Message};
///
/// # async fn run() -> Result<(), sluicegate::Error> {
/// Consumer::builder()
///     .bootstrap_servers("localhost:9092")
///     .group_id("billing")
///     .topic("orders")
///     .build(handler_fn(|msg: Message| async move {
///         println!("{}: {:?}", msg.offset(), msg.payload());
///         Ok(())
///     }))?
///     .run() // until SIGINT or SIGTERM
///     .await
/// # }
/// ```
pub struct Consumer<W> {
    settings: Settings,
    client: Properties,
    work: W,
    batch: Option<BatchLimits>,
}

impl Consumer<()> {
    /// Starts building a consumer.
    pub fn builder() -> ConsumerBuilder {
        ConsumerBuilder::default()
    }
}

impl<W: Work> Consumer<W> {
    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<(), Error> {
        let shutdown = CancellationToken::new();
        let mut handle = self.spawn_with(Control {
            shutdown: shutdown.clone(),
            ..Control::default()
        })?;
        tokio::select! {
            _ = shutdown_signal() => {
                info!("shutdown signal received");
                shutdown.cancel();
                handle.wait().await
            }
            r = &mut handle.done => r.unwrap_or(Err(Error::PollThreadLost)),
        }
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), Error> {
        let handle = self.spawn_with(Control {
            shutdown,
            ..Control::default()
        })?;
        handle.wait().await
    }

    /// Starts the consumer and returns a handle to watch and stop it. Must be called within a
    /// Tokio runtime, whose tasks run the handlers.
    pub fn spawn(self) -> Result<ConsumerHandle, Error> {
        self.spawn_with(Control::default())
    }

    fn spawn_with(self, control: Control) -> Result<ConsumerHandle, Error> {
        let s = self.settings;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::MissingConfig("a Tokio runtime to run handlers on"))?;
        let width = match self.batch {
            // A batch lane, or a partition's forwarder to the shared batch lanes.
            Some(_) => 1,
            None => s.lanes_per_partition(),
        };
        let group = s.group_id.clone().unwrap_or_default();
        let oauth = s.current_oauth();
        // Exactly-once mode writes outputs and dead letters with the transactional producer.
        let transactional = match &s.exactly_once {
            Some(_) => s.output.clone(),
            None => None,
        };
        let dead_letter = match s.dead_letter.clone() {
            Some(d) => Some(Arc::new(DeadLetterWriter::new(
                d,
                &self.client,
                &group,
                transactional.as_ref().map(|o| o.producer().clone()),
                oauth.clone(),
            )?)),
            None => None,
        };
        let breaker = s.circuit_breaker.clone().map(Breaker::new);
        let metrics = s
            .metrics
            .clone()
            .or_else(|| s.http_endpoint.map(|_| Metrics::new()));
        let endpoint = match s.http_endpoint {
            Some(addr) => Some(http::bind(addr)?),
            None => None,
        };
        let max_in_flight = u32::try_from(s.max_in_flight).unwrap_or(u32::MAX);
        let in_flight = Arc::new(Semaphore::new(max_in_flight as usize));
        let (publisher, status) =
            StatusPublisher::new(metrics.as_ref().map(|m| m.consumer(&group)));
        if s.read_from_beginning {
            // Not ready until the log ends are known and reached.
            publisher.catch_up(CatchUp::CatchingUp(Default::default()));
        }
        let publisher = publisher.with_in_flight(in_flight.clone(), max_in_flight as usize);
        if breaker.is_some() {
            publisher.circuit(CircuitState::Closed);
        }
        let http_addr = match (endpoint, metrics) {
            (Some(listener), Some(metrics)) => {
                let addr = listener.local_addr().ok();
                runtime.spawn(http::serve(listener, metrics, status.clone()));
                addr
            }
            _ => None,
        };
        let policies = Policies {
            retry: s.retry.clone(),
            timeout: s.handler_timeout,
            breaker: breaker.clone(),
            dead_letter: dead_letter.clone(),
            metrics: publisher.metrics().cloned(),
            scoped_outputs: transactional.is_some(),
        };
        let ordered = s.ordering != Ordering::Unordered;
        let worker = Arc::new(Worker {
            stack: layer::built_in(self.work, policies),
            batch: self.batch,
            ordered,
            in_flight,
            max_in_flight,
            abort: control.abort.clone(),
            exactly_once: transactional.is_some(),
            // Unordered: messages of a lane's chunk may go to other lanes at any time.
            upcoming: s.upcoming && ordered,
        });
        if let Some(d) = &dead_letter {
            let (d, topics) = (d.clone(), s.topics.clone());
            runtime.spawn(async move { d.ensure_topics(&topics).await });
        }
        let lane_runtime = runtime.clone();
        let spawn_lane: LaneSpawner = match self.batch {
            // Batches across partitions: each partition forwards to shared batch lanes. Not in
            // exactly-once mode, whose outputs wait for their partition's commit: there each
            // partition has its batches.
            Some(limits) if s.ordering == Ordering::Unordered && transactional.is_none() => {
                let (shared, routed) = async_channel::bounded(limits.max_messages);
                for _ in 0..s.max_batches_in_flight {
                    runtime.spawn(worker.clone().run_shared_batches(routed.clone()));
                }
                Arc::new(move |slot, queue, revoked, events| {
                    lane_runtime.spawn(Worker::<W>::forward(
                        slot,
                        queue.chunks,
                        revoked,
                        events,
                        shared.clone(),
                    ));
                })
            }
            _ => Arc::new(move |slot, queue, revoked, events| {
                lane_runtime.spawn(worker.clone().run_lane(slot, queue, revoked, events));
            }),
        };
        let session = Session {
            client: self.client,
            topics: s.topics.clone(),
            static_assignment: s.static_assignment,
            read_from_beginning: s.read_from_beginning,
            routing: Routing {
                ordering: s.ordering,
                width,
                limits: s.limits,
                drain_timeout: s.drain_timeout,
                breaker,
                transactional: transactional.is_some(),
            },
            spawn_lane,
            status: publisher.clone(),
            oauth,
            way: match &transactional {
                Some(output) => CommitWay::Transaction {
                    producer: output.producer().clone(),
                    runtime: runtime.clone(),
                },
                None => CommitWay::Group,
            },
        };
        // The first client is made here, so that a bad setting fails the call; in exactly-once
        // mode once transactions can run, so that nothing is fetched before.
        let first = match transactional {
            Some(_) => None,
            None => Some(session.start()?),
        };
        info!(topics = ?s.topics, group, ordering = %s.ordering,
              exactly_once = transactional.is_some(), "consumer started");
        let thread_control = control.clone();
        spawn_poll_thread(control, status, http_addr, move || {
            let run = || {
                let first = match (first, &transactional) {
                    (Some(first), _) => first,
                    (None, Some(output)) => {
                        if !init_transactions(output, &thread_control, &publisher)? {
                            return Ok(()); // stopped while waiting
                        }
                        session.start()?
                    }
                    (None, None) => session.start()?,
                };
                let (interval, reconnect) = (s.commit_interval, &s.reconnect);
                session.run(first, &thread_control, interval, reconnect, &runtime)
            };
            let result = run();
            publisher.stopped();
            result
        })
    }
}

/// Fences earlier producers with `output`'s transactional id and aborts what they left open,
/// before the consumer takes any message. `init_transactions` blocks until the transaction
/// coordinator answers (at most [`commit::TXN_TIMEOUT`]), which a broker that refuses our
/// certificate or credentials never does: it runs on a thread of its own while this one watches the
/// producer's errors, so that such a failure stops the consumer at once (the thread ends by
/// itself when the call times out). `false` when stopped while waiting.
fn init_transactions(
    output: &Output,
    control: &Control,
    status: &StatusPublisher,
) -> Result<bool, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(), ClientError>>(1);
    let producer = output.producer().clone();
    std::thread::Builder::new()
        .name("sluicegate-init-txn".into())
        .spawn(move || {
            let _ = tx.send(producer::init_transactions(&producer, commit::TXN_TIMEOUT));
        })
        .map_err(|e| Error::Thread(e.to_string()))?;
    let security = || match output.errors().and_then(|e| e.security_failure()) {
        Some(failure) => Err(Error::from(failure)),
        None => Ok(()),
    };
    loop {
        status.heartbeat();
        if control.abort.is_cancelled() || control.shutdown.is_cancelled() {
            return Ok(false);
        }
        security()?;
        match rx.recv_timeout(INIT_LOOK) {
            Ok(Ok(())) => return Ok(true),
            Ok(Err(e)) => {
                // A security failure explains a failed init better than its timeout.
                security()?;
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

/// Every partition of `topics`.
fn all_partitions(consumer: &Client, topics: &[String]) -> Result<Vec<TopicPartition>, Error> {
    let mut all = Vec::new();
    for topic in topics {
        let partitions = consumer.partition_ids(topic, METADATA_TIMEOUT)?;
        if partitions.is_empty() {
            return Err(Error::Config {
                key: "topics".into(),
                value: topic.clone(),
                reason: "reading without a group needs the topic's partitions, and the \
                         cluster reports none (does the topic exist?)"
                    .into(),
            });
        }
        all.extend(
            partitions
                .into_iter()
                .map(|p| TopicPartition::new(topic, p)),
        );
    }
    Ok(all)
}

/// Every partition of `topics` from the offset the group committed, or from `reset` where it
/// committed none. The offsets are looked up before assigning, and looked up again while the
/// group's coordinator is not ready: assigned with [`StartAt::Committed`], librdkafka looks
/// them up once, and a partition whose look-up fails (the coordinator moving, a broker just
/// started) is never fetched.
fn from_committed(
    consumer: &Client,
    topics: &[String],
    reset: StartAt,
) -> Result<Vec<(TopicPartition, StartAt)>, Error> {
    let list = all_partitions(consumer, topics)?;
    let deadline = Instant::now() + METADATA_TIMEOUT;
    let mut backoff = Duration::from_millis(100);
    let committed = loop {
        let failed = match consumer.committed(&list, METADATA_TIMEOUT) {
            Ok(mut c) => match c.iter_mut().find_map(|e| e.error.take()) {
                None => break c,
                Some(e) => Error::Kafka(e),
            },
            Err(e) => e,
        };
        if Instant::now() + backoff >= deadline {
            return Err(failed);
        }
        warn!(error = %failed, "could not look up the committed offsets; trying again");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    Ok(committed
        .into_iter()
        .map(|e| (e.tp, e.next.map_or(reset, StartAt::Offset)))
        .collect())
}

/// The log start and end of every partition of `list` now: what a reader from the beginning
/// catches up with.
fn catch_up_targets(consumer: &Client, list: &[TopicPartition]) -> Result<Targets, Error> {
    let mut watermarks = Vec::new();
    for tp in list {
        let (low, high) = consumer.watermarks(tp, METADATA_TIMEOUT)?;
        watermarks.push((tp.clone(), low, high));
    }
    Ok(Targets::new(watermarks))
}

/// A client with its poll loop's state: started, and once lost started again.
struct Session {
    client: Properties,
    topics: Vec<String>,
    /// Assign every partition instead of subscribing.
    static_assignment: bool,
    /// Assign every partition from its beginning, commit nothing, and track the catch-up.
    read_from_beginning: bool,
    routing: Routing,
    spawn_lane: LaneSpawner,
    status: StatusPublisher,
    oauth: Option<OAuth>,
    /// How commits leave the process.
    way: CommitWay,
}

/// A created, subscribed client, its poll loop's reports and its commits.
type Started = (RuntimeConsumer, event::Reports, committer::Committer);

impl Session {
    /// Where a partition without a committed offset starts, as `auto.offset.reset` says.
    fn offset_reset(&self) -> StartAt {
        match self.client.get("auto.offset.reset") {
            Some("latest" | "largest" | "end") => StartAt::End,
            Some("earliest" | "smallest" | "beginning") | None => StartAt::Beginning,
            // `error`: left to librdkafka, which reports it.
            Some(_) => StartAt::Committed,
        }
    }

    /// Creates a client and subscribes it. Each client has its own channels, so that reports
    /// from a lost client's lanes never reach the next one.
    fn start(&self) -> Result<Started, Error> {
        let (reports, events) = event::Reports::channel();
        let (commits_tx, commits_rx) = std::sync::mpsc::channel();
        let assignment = Assignment::new(
            self.routing.clone(),
            self.spawn_lane.clone(),
            reports.clone(),
            events,
            self.status.clone(),
            commits_tx,
        );
        let mut consumer = KafkaConsumer::new(
            &self.client,
            RuntimeContext::new(
                assignment,
                SecurityWatch::new(&self.client),
                self.oauth.clone(),
            ),
        )?;
        // The consumer's queue and the fetch queue both wake the poll loop.
        let (wakeup, fetched) = (reports.wakeup().clone(), reports.wakeup().clone());
        consumer.on_nonempty(move || wakeup.raise());
        let consumer = RuntimeConsumer::new(consumer, move || fetched.raise());
        if self.read_from_beginning {
            let list = all_partitions(&consumer, &self.topics)?;
            // Looked up before reading starts; a new client after a lost one reads everything
            // again, but a catch-up once reached stays reached.
            let targets = match self.status.is_caught_up() {
                true => None,
                false => Some(catch_up_targets(&consumer, &list)?),
            };
            consumer.context().forward(&consumer, &list);
            let from_beginning: Vec<_> = list
                .iter()
                .map(|tp| (tp.clone(), StartAt::Beginning))
                .collect();
            consumer.assign(&from_beginning)?;
            let mut assignment = consumer.context().assignment();
            assignment.without_commits();
            assignment.assign_static(&consumer, &list);
            if let Some(targets) = targets {
                assignment.catch_up(targets);
            }
        } else if self.static_assignment {
            let starts = from_committed(&consumer, &self.topics, self.offset_reset())?;
            let list: Vec<TopicPartition> = starts.iter().map(|(tp, _)| tp.clone()).collect();
            consumer.context().forward(&consumer, &list);
            consumer.assign(&starts)?;
            consumer
                .context()
                .assignment()
                .assign_static(&consumer, &list);
        } else {
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
        }
        let committer = committer::Committer {
            requests: commits_rx,
            way: self.way.clone(),
        };
        Ok((consumer, reports, committer))
    }

    /// Runs poll loops until stopped, re-creating the client as `reconnect` says when one is
    /// lost.
    fn run(
        &self,
        first: Started,
        control: &Control,
        commit_interval: Duration,
        reconnect: &Reconnect,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), Error> {
        let mut next = Some(first);
        let mut attempt = 0;
        let mut fences = FenceCount::new(reconnect.max_fenced, reconnect.backoff.max);
        loop {
            let (consumer, events, commits) = match next.take() {
                Some(started) => started,
                None => self.start()?,
            };
            let began = Instant::now();
            let ended = poll::run(
                consumer,
                control.clone(),
                commit_interval,
                commits,
                events,
                reconnect,
                &self.status,
            );
            let (mut reason, fatal) = match ended {
                Ok(SessionEnd::Stopped) => return Ok(()),
                Ok(SessionEnd::ClientLost { reason, fatal }) => (reason, fatal),
                Err(Error::Fatal(e)) => {
                    if let Some(conflict) = InstanceConflict::of(&e) {
                        let explained = self.explain(conflict);
                        error!("{explained}; stopping (reconnect on fatal errors is off)");
                        self.status.fenced();
                        self.status.client_lost(explained, false);
                    }
                    return Err(Error::Fatal(e));
                }
                Err(e) => return Err(e),
            };
            let lived = began.elapsed();
            if lived > reconnect.backoff.max {
                attempt = 0;
            }
            attempt += 1;
            let conflict = fatal.as_ref().and_then(InstanceConflict::of);
            let in_row = fences.client_ended(conflict == Some(InstanceConflict::Fenced), lived);
            if let Some(conflict) = conflict {
                reason = self.explain(conflict);
                self.status.fenced();
            }
            if fences.exhausted() {
                self.status.client_lost(reason.clone(), false);
                error!(
                    "{reason}; stopping after {in_row} fences in a row (Reconnect::max_fenced), \
                     so that the other member keeps the instance id"
                );
                let e = fatal.unwrap_or_else(|| {
                    crate::kafka::error::fatal_consumption(ErrorCode::FENCED_INSTANCE_ID)
                });
                return Err(Error::Fatal(e));
            }
            let delay = reconnect.backoff.delay(attempt, rand::random());
            if conflict.is_some() {
                error!(
                    reason,
                    ?delay,
                    fences_in_a_row = in_row,
                    max_fenced = fences.limit(),
                    "the kafka client is lost; creating a new one, which joins with the same \
                     instance id"
                );
            } else {
                warn!(
                    reason,
                    ?delay,
                    "the kafka client is lost; creating a new one"
                );
            }
            self.status.client_lost(reason, true);
            let stopped = runtime.block_on(async {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => false,
                    _ = control.shutdown.cancelled() => true,
                    _ = control.abort.cancelled() => true,
                }
            });
            if stopped {
                return Ok(());
            }
        }
    }

    /// What an instance id conflict means, naming the group and the instance id.
    fn explain(&self, conflict: InstanceConflict) -> String {
        conflict.explain(
            self.client.get("group.id").unwrap_or_default(),
            self.client.get("group.instance.id").unwrap_or_default(),
        )
    }
}

/// Runs `poll` on the poll thread and returns the handle that watches it.
fn spawn_poll_thread(
    control: Control,
    status: StatusWatch,
    http_addr: Option<SocketAddr>,
    poll: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<ConsumerHandle, Error> {
    let (done_tx, done_rx) = oneshot::channel();
    let seeks = control.seeks.clone();
    std::thread::Builder::new()
        .name("sluicegate-poll".into())
        .spawn(move || {
            let result = poll();
            seeks.close();
            let _ = done_tx.send(result);
        })
        .map_err(|e| Error::Thread(e.to_string()))?;
    Ok(ConsumerHandle {
        control,
        status,
        http_addr,
        done: done_rx,
    })
}

/// A running consumer: watch its [`ConsumerStatus`](crate::ConsumerStatus), stop it, wait for it.
pub struct ConsumerHandle {
    control: Control,
    status: StatusWatch,
    http_addr: Option<SocketAddr>,
    done: oneshot::Receiver<Result<(), Error>>,
}

impl ConsumerHandle {
    /// Asks for a graceful shutdown: stop fetching, let handlers in flight finish (within the
    /// drain timeout), commit what finished, leave the group. Returns at once; see [`wait`].
    ///
    /// [`wait`]: ConsumerHandle::wait
    pub fn shutdown(&self) {
        self.control.shutdown.cancel();
    }

    /// Stops at once, as a crash would: no draining and no final commit, so everything not
    /// yet committed is delivered again to the next consumer of the group. For testing that
    /// your handlers tolerate re-delivery.
    pub fn abort(&self) {
        self.control.abort.cancel();
    }

    /// Moves an assigned partition to `to` (see [`SeekTo`]) and returns the offset it starts
    /// from now. Work of the old position that has not finished is abandoned; the new
    /// position is committed at once, so it holds across restarts and rebalances. Fails with
    /// [`Error::NotAssigned`] for a partition this consumer does not own.
    ///
    /// ```no_run
    /// # async fn replay(handle: &sluicegate::ConsumerHandle) -> Result<(), sluicegate::Error> {
    /// use sluicegate::SeekTo;
    /// // Handle again everything of partition 3 since midnight, 1 May 2024 (UTC).
    /// let from = handle.seek("orders", 3, SeekTo::Timestamp(1_714_521_600_000)).await?;
    /// println!("partition 3 starts over from offset {from}");
    /// # Ok(()) }
    /// ```
    pub async fn seek(&self, topic: &str, partition: i32, to: SeekTo) -> Result<i64, Error> {
        let (reply, answer) = oneshot::channel();
        self.control.seeks.push(seek::SeekRequest {
            tp: TopicPartition::new(topic, partition),
            to,
            reply,
        });
        answer.await.map_err(|_| Error::ConsumerGone)?
    }

    /// Watches the consumer's status: wait on it for an event, such as partitions being
    /// assigned or an offset being committed.
    pub fn status(&self) -> StatusWatch {
        self.status.clone()
    }

    /// Waits until a reader from the beginning ([`ConsumerBuilder::read_from_beginning`]) has
    /// handled every partition up to the log end it saw at start: every record below those
    /// ends is finished (handled, skipped or dead-lettered) when it returns. See
    /// [`StatusWatch::caught_up`] for the errors.
    ///
    /// ```no_run
    /// # async fn wait(handle: &sluicegate::ConsumerHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// tokio::time::timeout(std::time::Duration::from_secs(60), handle.caught_up()).await??;
    /// # Ok(()) }
    /// ```
    pub async fn caught_up(&self) -> Result<(), Error> {
        self.status.caught_up().await
    }

    /// Whether the consumer is alive and ready, and why not: what `/health/live` and
    /// `/health/ready` report.
    pub fn health(&self) -> Health {
        self.status.health()
    }

    /// The address the HTTP endpoint listens on, if one was asked for (with the port picked,
    /// when port 0 was given).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Waits until the consumer has stopped, after [`shutdown`](Self::shutdown),
    /// [`abort`](Self::abort) or a fatal error.
    pub async fn wait(self) -> Result<(), Error> {
        self.done.await.unwrap_or(Err(Error::PollThreadLost))
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
