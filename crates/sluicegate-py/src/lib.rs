//! The native half of the `sluicegate` Python package: converts and delegates to the library's
//! public API, with no semantics of its own.
//!
//! The consumer runs on a Tokio runtime of its own. Its handler queues each message (or batch,
//! for a batch handler) with a one-shot channel for its outcome and rings a socket when the
//! queue stops being empty; the Python side watches the socket from its event loop
//! (`loop.add_reader`) and takes what is queued in one call, so messages cross into Python in
//! batches and nothing of the consumer (polling, heartbeats, rebalances) waits for the GIL. A
//! Python handler finishes a message with [`Message::_finish`], or the messages that succeeded
//! together with [`finish_ok`], which hand the outcomes back without blocking. The handler
//! queues directly (rather than through the library's message stream and a task moving its
//! deliveries), so a message's round trip wakes one Rust task, not two: in partition order the
//! round trip bounds the throughput.
//!
//! What Python awaits from the runtime (an `Output` send's acknowledgement, a seek) comes
//! back through a callback: the runtime task that got the answer calls it, and the Python side
//! settles its asyncio future with `loop.call_soon_threadsafe`.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use sluicegate::dead_letter::DeadLetter;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{
    batch_handler_fn, handler_fn, ApiKey, BatchLimits, Consumer, ConsumerBuilder, ErrorCode,
    HandlerError, HandlerResult, Ordering, OutputRecord, OutputScope, SeekTo, Upcoming,
};
use tokio::sync::{mpsc, oneshot};

mod logs;
mod runs;
mod settings;
mod tokens;

create_exception!(
    _sluicegate,
    SluicegateError,
    PyException,
    "An error of the consumer: a bad setting, a broker or client failure."
);
create_exception!(
    _sluicegate,
    ConfigError,
    SluicegateError,
    "A setting was refused: the message names the setting and why."
);

/// `s` seconds as a duration; a negative, infinite or NaN value is refused naming `name`.
fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| ConfigError::new_err(format!("{name}: not a duration: {s}")))
}

fn error(e: sluicegate::Error) -> PyErr {
    match e {
        sluicegate::Error::Config { .. } | sluicegate::Error::MissingConfig(_) => {
            ConfigError::new_err(e.to_string())
        }
        other => SluicegateError::new_err(other.to_string()),
    }
}

/// Calls the Python callback `done(value, error)` from a runtime thread with what `make`
/// returns: the value and `None`, or `None` and the exception. The Python side turns the
/// call into the result of the future it awaits (`loop.call_soon_threadsafe`).
fn answer(done: Py<PyAny>, make: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>>) {
    Python::attach(|py| {
        let (value, exception) = match make(py) {
            Ok(value) => (value, py.None().into_bound(py)),
            Err(e) => (
                py.None().into_bound(py),
                e.into_value(py).into_bound(py).into_any(),
            ),
        };
        if let Err(e) = done.bind(py).call1((value, exception)) {
            e.write_unraisable(py, None);
        }
    });
}

/// A seek asked for from Python, for the task that owns the running consumer.
struct SeekAsk {
    topic: String,
    partition: i32,
    to: SeekTo,
    /// `done(offset, error)`.
    done: Py<PyAny>,
}

impl SeekAsk {
    /// Answers with the offset the partition starts from now, or the error.
    fn answer(self, result: Result<i64, sluicegate::Error>) {
        answer(self.done, move |py| match result {
            Ok(offset) => Ok(offset.into_pyobject(py)?.into_any()),
            Err(e) => Err(error(e)),
        });
    }

    /// Answers that the consumer is not running (any more).
    fn refuse(self) {
        answer(self.done, |_| {
            Err(SluicegateError::new_err(
                "cannot seek: the consumer is not running",
            ))
        });
    }
}

/// Answers, refusing them, the seeks still queued once the consumer has stopped.
fn refuse_seeks(mut seeks: mpsc::UnboundedReceiver<SeekAsk>) {
    seeks.close();
    while let Ok(ask) = seeks.try_recv() {
        ask.refuse();
    }
}

/// Work for Python: a message for a handler, or a batch for a batch handler, each with the
/// channel the handler call waits on for the outcome and (exactly-once mode) the scope of the
/// call's outputs.
enum Work {
    One(sluicegate::Message, Call),
    /// A message and those its lane hands over next (see [`runs`]), each with its channel.
    Run(runs::RunMessages, Arc<runs::RunState>),
    Batch(Vec<sluicegate::Message>, Call),
}

/// One handler call waiting for Python: where its outcome goes, and where its outputs go in
/// exactly-once mode (sent from the output producer's tasks, not the call's).
struct Call {
    reply: oneshot::Sender<HandlerResult>,
    outputs: Option<OutputScope>,
}

/// Hands `work` (made with the call's reply channel) to Python and waits for its outcome.
async fn call_python(
    shared: &Shared,
    work: impl FnOnce(Call) -> Work,
    dropped: &'static str,
) -> HandlerResult {
    let (reply, outcome) = oneshot::channel();
    let call = Call {
        reply,
        outputs: OutputScope::current(),
    };
    shared.push(|q| q.deliveries.push_back(work(call)));
    outcome
        .await
        .unwrap_or_else(|_| Err(HandlerError::retryable(dropped)))
}

/// Hands `message` to Python and waits for its outcome: with the messages its lane hands over
/// next, as one run, where the library tells them; one handed over in a run before only waits.
async fn call_message(shared: &Shared, message: sluicegate::Message) -> HandlerResult {
    const DROPPED: &str = "the message was dropped by Python";
    // Exactly-once outputs belong to their message's call: Python may not run ahead of it.
    let upcoming = Upcoming::current().filter(|_| OutputScope::current().is_none());
    let Some(upcoming) = upcoming else {
        return call_python(shared, |call| Work::One(message, call), DROPPED).await;
    };
    let run = upcoming.run();
    if let Some(result) = shared.ahead.outcome(run, &message).await {
        return result;
    }
    if upcoming.messages().is_empty() {
        return call_python(shared, |call| Work::One(message, call), DROPPED).await;
    }
    let (state, messages) = shared.ahead.start_run(message.clone(), upcoming);
    shared.push(|q| q.deliveries.push_back(Work::Run(messages, state)));
    let outcome = shared.ahead.outcome(run, &message).await;
    outcome.unwrap_or_else(|| Err(HandlerError::retryable(DROPPED)))
}

/// What the consumer and the Python side share.
#[derive(Default)]
struct Queue {
    deliveries: VecDeque<Work>,
    /// Set when the consumer stopped: `Some(Err(message))` if it failed.
    ended: Option<Result<(), String>>,
    /// Whether the socket must be rung for the next delivery (the Python side took
    /// everything and waits).
    armed: bool,
}

/// The queue and the socket that says it has something.
struct Shared {
    queue: Mutex<Queue>,
    bell: UnixStream,
    ahead: runs::Ahead,
}

impl Shared {
    /// Wakes the Python side (a full socket buffer already says "something is there").
    fn ring(&self) {
        let _ = (&self.bell).write(&[1]);
    }

    fn push(&self, change: impl FnOnce(&mut Queue)) {
        let ring = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut q);
            std::mem::take(&mut q.armed)
        };
        if ring {
            self.ring();
        }
    }
}

/// A consumer running on its own Tokio runtime, its deliveries queued for Python.
#[pyclass(module = "sluicegate._sluicegate")]
struct Core {
    /// Taken only when the core is dropped.
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    /// The socket's other end, which the Python side watches.
    listener: UnixStream,
    /// The checked settings, built into a consumer at `start`.
    builder: Option<ConsumerBuilder>,
    status: Option<sluicegate::StatusWatch>,
    /// Where `/metrics` and `/health/*` are served, once started with an endpoint.
    http_addr: Option<std::net::SocketAddr>,
    shutdown: Option<Box<dyn Fn() + Send + Sync>>,
    /// Seeks for the task that owns the running consumer, once started.
    seeks: Option<mpsc::UnboundedSender<SeekAsk>>,
}

impl Core {
    /// Keeps `handle`, a consumer whose handler hands its work to Python, until it ends:
    /// carries out the seeks asked for, shuts it down when asked, and queues its end.
    fn watch(
        &mut self,
        runtime: &tokio::runtime::Handle,
        handle: sluicegate::ConsumerHandle,
        stopping: Arc<tokio::sync::Notify>,
        mut seeks: mpsc::UnboundedReceiver<SeekAsk>,
    ) {
        let mut watch = handle.status();
        self.status = Some(handle.status());
        self.http_addr = handle.http_addr();
        let shared = self.shared.clone();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = stopping.notified() => {
                        handle.shutdown();
                        break;
                    }
                    // Stopped on its own (a fatal error), or gone.
                    _ = watch.wait_for(|s| s.stopped) => break,
                    Some(ask) = seeks.recv() => {
                        let result = handle.seek(&ask.topic, ask.partition, ask.to).await;
                        ask.answer(result);
                    }
                }
            }
            refuse_seeks(seeks);
            let ended = handle.wait().await;
            shared.push(|q| {
                q.ended.get_or_insert(ended.map_err(|e| e.to_string()));
            });
        });
    }

    /// The runtime the consumer runs on.
    fn runtime(&self) -> PyResult<&tokio::runtime::Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| SluicegateError::new_err("the consumer's runtime has stopped"))
    }

    /// A consumer of `builder`'s settings, checked now (so that a bad setting is refused
    /// where the consumer is made) and built at `start`.
    fn with(builder: ConsumerBuilder) -> PyResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluicegate")
            .enable_all()
            .build()
            .map_err(|e| SluicegateError::new_err(format!("cannot start a Tokio runtime: {e}")))?;
        let (bell, listener) = UnixStream::pair()
            .and_then(|(a, b)| {
                a.set_nonblocking(true)?;
                b.set_nonblocking(true)?;
                Ok((a, b))
            })
            .map_err(|e| SluicegateError::new_err(format!("cannot make a socket pair: {e}")))?;
        // Checked now, so that a bad setting is refused where the consumer is made.
        builder
            .clone()
            .build(handler_fn(|_| async { Ok(()) }))
            .map_err(error)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                armed: true,
                ..Queue::default()
            }),
            bell,
            ahead: runs::Ahead::default(),
        });
        logs::ring(Arc::downgrade(&shared));
        Ok(Core {
            runtime: Some(runtime),
            shared,
            listener,
            builder: Some(builder),
            status: None,
            http_addr: None,
            shutdown: None,
            seeks: None,
        })
    }
}

#[pymethods]
impl Core {
    /// Checks the settings and builds the consumer (nothing connects until `start`).
    #[new]
    #[pyo3(signature = (
        bootstrap_servers, group_id, topics, ordering, max_in_flight, commit_interval,
        drain_timeout, max_attempts, initial_backoff, max_backoff, multiplier, jitter,
        dead_letter, handler_timeout, config, metrics_addr=None, circuit_breaker=None,
        reconnect=None, security=None, token_provider=None, exactly_once=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        bootstrap_servers: String,
        group_id: Option<String>,
        topics: Vec<String>,
        ordering: &str,
        max_in_flight: usize,
        commit_interval: f64,
        drain_timeout: f64,
        max_attempts: Option<u32>,
        initial_backoff: f64,
        max_backoff: f64,
        multiplier: f64,
        jitter: f64,
        dead_letter: Option<String>,
        handler_timeout: Option<f64>,
        config: Vec<(String, String)>,
        metrics_addr: Option<String>,
        circuit_breaker: Option<Bound<'_, PyAny>>,
        reconnect: Option<Bound<'_, PyAny>>,
        security: Option<Bound<'_, PyAny>>,
        token_provider: Option<Py<PyAny>>,
        exactly_once: Option<String>,
    ) -> PyResult<Self> {
        let ordering: Ordering = ordering.parse().map_err(ConfigError::new_err)?;
        let mut retry = RetryPolicy::default().with_backoff(Backoff {
            initial: seconds("retry.initial_backoff", initial_backoff)?,
            max: seconds("retry.max_backoff", max_backoff)?,
            multiplier,
            jitter,
        });
        if let Some(n) = max_attempts {
            retry = retry.with_max_attempts(n);
        }
        let mut builder = Consumer::builder()
            .bootstrap_servers(bootstrap_servers)
            .topics(topics)
            .ordering(ordering)
            .max_in_flight(max_in_flight)
            .commit_interval(seconds("commit_interval", commit_interval)?)
            .drain_timeout(seconds("drain_timeout", drain_timeout)?)
            .retry_policy(retry);
        if let Some(group) = group_id {
            builder = builder.group_id(group);
        }
        if let Some(t) = handler_timeout {
            builder = builder.handler_timeout(seconds("handler_timeout", t)?);
        }
        builder = match dead_letter.as_deref() {
            None => builder,
            Some("") => builder.dead_letter(DeadLetter::default()),
            Some(topic) => builder.dead_letter(DeadLetter::to_topic(topic)),
        };
        if let Some(addr) = metrics_addr {
            let parsed = addr.parse().map_err(|e| {
                ConfigError::new_err(format!(
                    "metrics_addr: {addr:?} is not a host:port address ({e})"
                ))
            })?;
            builder = builder.http_endpoint(parsed);
        }
        if let Some(b) = circuit_breaker {
            builder = builder.circuit_breaker(settings::circuit_breaker(&b)?);
        }
        if let Some(r) = reconnect {
            builder = builder.reconnect(settings::reconnect(&r)?);
        }
        if let Some(s) = security {
            for (key, value) in settings::security(&s)? {
                builder = builder.set(key, value);
            }
        }
        // Passed-through properties win over `security`, as they would over a file's section.
        for (key, value) in config {
            builder = builder.set(key, value);
        }
        if let Some(id) = &exactly_once {
            builder = builder.exactly_once(id);
        }
        if let Some(f) = token_provider {
            builder = builder.oauth_token_provider(tokens::PythonTokens::new(f));
        }
        Core::with(builder)
    }

    /// Builds the consumer from a configuration file with the `KAFKA_*` environment
    /// variables over it (the library's `ConsumerConfig::load_from_env`: the rules of
    /// `sluicegate config check`), then `config` librdkafka properties over both; OAUTHBEARER
    /// tokens from `token_provider` if given (over the file's provider, if any).
    #[staticmethod]
    #[pyo3(signature = (path, config, token_provider=None))]
    fn from_config(
        path: std::path::PathBuf,
        config: Vec<(String, String)>,
        token_provider: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let file = sluicegate::config::ConsumerConfig::load_from_env(&path)
            .map_err(|e| ConfigError::new_err(format!("{}: {e}", path.display())))?;
        let mut builder = ConsumerBuilder::from_config(&file);
        for (key, value) in config {
            builder = builder.set(key, value);
        }
        if let Some(f) = token_provider {
            builder = builder.oauth_token_provider(tokens::PythonTokens::new(f));
        }
        Core::with(builder)
    }

    /// The socket to watch for readability: deliveries (or the end) are waiting.
    fn fileno(&self) -> i32 {
        self.listener.as_raw_fd()
    }

    /// Starts the consumer: each message (or, with `batch` = `(max_messages, max_wait,
    /// max_bytes)`, each batch) is queued for Python.
    #[pyo3(signature = (batch=None))]
    fn start(&mut self, batch: Option<(usize, f64, usize)>) -> PyResult<()> {
        let Some(builder) = self.builder.take() else {
            return Err(SluicegateError::new_err(
                "a consumer runs once; make a new one to run again",
            ));
        };
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopping = stop.clone();
        let (seek_tx, seeks) = mpsc::unbounded_channel::<SeekAsk>();
        let runtime = self.runtime()?.handle().clone();
        let _entered = runtime.enter();
        let to_python = self.shared.clone();
        match batch {
            None => {
                let handle = builder
                    .upcoming(true)
                    .build(handler_fn(move |message: sluicegate::Message| {
                        let shared = to_python.clone();
                        async move { call_message(&shared, message).await }
                    }))
                    .map_err(error)?
                    .spawn()
                    .map_err(error)?;
                self.watch(&runtime, handle, stopping, seeks);
            }
            Some((max_messages, max_wait, max_bytes)) => {
                let max_wait = seconds("batch max_wait", max_wait)?;
                let limits = BatchLimits::default()
                    .max_messages(max_messages)
                    .max_wait(max_wait)
                    .max_bytes(max_bytes);
                let handle = builder
                    .batch_limits(limits)
                    .build_batch(batch_handler_fn(move |batch: Vec<sluicegate::Message>| {
                        let shared = to_python.clone();
                        async move {
                            let work = |call| Work::Batch(batch, call);
                            call_python(&shared, work, "the batch was dropped by Python").await
                        }
                    }))
                    .map_err(error)?
                    .spawn()
                    .map_err(error)?;
                self.watch(&runtime, handle, stopping, seeks);
            }
        }
        self.shutdown = Some(Box::new(move || stop.notify_one()));
        self.seeks = Some(seek_tx);
        Ok(())
    }

    /// The consumer's output producer (the library's `ConsumerBuilder::output`): the same one
    /// on every call. Only before `start`.
    fn output(&mut self) -> PyResult<Output> {
        let runtime = self.runtime()?.handle().clone();
        let Some(builder) = self.builder.as_mut() else {
            return Err(SluicegateError::new_err(
                "output() is called before run() (or messages()): the consumer is running",
            ));
        };
        // The producer's token provider (if any) runs on the consumer's runtime.
        let _entered = runtime.enter();
        Ok(Output {
            output: Some(builder.output().map_err(error)?),
            runtime,
        })
    }

    /// Moves partition `partition` of `topic` to `to`: `kind` is `"beginning"`, `"end"`,
    /// `"offset"` or `"timestamp"` (then `value` is the offset, or milliseconds since the
    /// epoch). Calls `done(offset, error)` from another thread once the poll thread has moved
    /// it (the offset it starts from now) or refused.
    #[pyo3(signature = (topic, partition, kind, value, done))]
    fn seek(
        &self,
        topic: String,
        partition: i32,
        kind: &str,
        value: Option<i64>,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let to = match (kind, value) {
            ("beginning", _) => SeekTo::Beginning,
            ("end", _) => SeekTo::End,
            ("offset", Some(o)) => SeekTo::Offset(o),
            ("timestamp", Some(ms)) => SeekTo::Timestamp(ms),
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "seek to {kind:?} {value:?}: expected beginning, end, an offset or a time"
                )))
            }
        };
        let Some(seeks) = &self.seeks else {
            return Err(SluicegateError::new_err(
                "cannot seek: the consumer is not running (seek from a handler or while run() runs)",
            ));
        };
        let ask = SeekAsk {
            topic,
            partition,
            to,
            done,
        };
        if let Err(mpsc::error::SendError(ask)) = seeks.send(ask) {
            ask.refuse();
        }
        Ok(())
    }

    /// Takes up to `n` queued messages (or batches, for a batch handler), without waiting:
    /// `(work, ended, error)`. `ended` says nothing more will come, `error` why, if the
    /// consumer failed.
    fn take<'py>(
        &self,
        py: Python<'py>,
        n: usize,
    ) -> PyResult<(Bound<'py, PyList>, bool, Option<String>)> {
        let mut drained = [0u8; 256];
        while matches!((&self.listener).read(&mut drained), Ok(k) if k > 0) {}
        let (taken, ended) = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let k = n.min(q.deliveries.len());
            let taken: Vec<Work> = q.deliveries.drain(..k).collect();
            if q.deliveries.is_empty() {
                q.armed = true;
            }
            let ended = match (&q.ended, q.deliveries.is_empty()) {
                (Some(end), true) => Some(end.clone()),
                _ => None,
            };
            (taken, ended)
        };
        let list = PyList::empty(py);
        for work in taken {
            match work {
                Work::One(m, call) => {
                    list.append(Message::new(m, Some(call.reply), call.outputs))?
                }
                Work::Run(messages, state) => {
                    let messages = messages
                        .into_iter()
                        .map(|(m, reply)| Message::new(m, Some(reply), None));
                    let messages = PyList::new(py, messages)?;
                    list.append(runs::Run::new(messages.unbind(), state))?;
                }
                Work::Batch(messages, call) => {
                    let messages = PyList::new(
                        py,
                        messages.into_iter().map(|m| Message::new(m, None, None)),
                    )?;
                    list.append(Batch {
                        messages: messages.unbind(),
                        reply: Mutex::new(Some(call.reply)),
                        outputs: call.outputs,
                    })?;
                }
            }
        }
        let (ended, error) = match ended {
            None => (false, None),
            Some(Ok(())) => (true, None),
            Some(Err(e)) => (true, Some(e)),
        };
        Ok((list, ended, error))
    }

    /// `host:port` where `/metrics` and `/health/live|ready` are served (the port picked
    /// when 0 was asked for), once started; `None` without `metrics_addr`.
    fn http_addr(&self) -> Option<String> {
        self.http_addr.map(|a| a.to_string())
    }

    /// The runtime's log records queued since the last call, as `(level, logger, text)`
    /// (levels are `logging`'s numbers), and how many were dropped before them.
    fn logs(&self) -> (Vec<logs::Record>, u64) {
        logs::take()
    }

    /// What the consumer reports now: `assigned` (a list of `(topic, partition)`),
    /// `committed` (`{(topic, partition): offset}`), `dead_lettered`, `retried`, `joined`,
    /// `rebalances`, `lag` (`{(topic, partition): records}`), `circuit` (`"closed"`, `"open"` or
    /// `"half_open"`), `brokers_unreachable`, `client_restarts`, `client_lost` (why the last
    /// client was given up, or `None`), `transactions_committed`, `transactions_aborted` and
    /// `stopped`.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = match &self.status {
            Some(watch) => watch.current(),
            // Not started: nothing assigned, committed or counted yet.
            None => sluicegate::ConsumerStatus::default(),
        };
        let offsets = |map: &std::collections::BTreeMap<sluicegate::TopicPartition, i64>| {
            let d = PyDict::new(py);
            for (tp, offset) in map {
                d.set_item((tp.topic.as_str(), tp.partition), offset)?;
            }
            PyResult::Ok(d)
        };
        let d = PyDict::new(py);
        let assigned: Vec<(&str, i32)> = s
            .assigned
            .iter()
            .map(|tp| (tp.topic.as_str(), tp.partition))
            .collect();
        d.set_item("assigned", assigned)?;
        d.set_item("committed", offsets(&s.committed)?)?;
        d.set_item("lag", offsets(&s.lag)?)?;
        d.set_item("dead_lettered", s.dead_lettered)?;
        d.set_item("retried", s.retried)?;
        d.set_item("joined", s.joined)?;
        d.set_item("rebalances", s.rebalances)?;
        d.set_item("circuit", s.circuit.as_str())?;
        d.set_item("brokers_unreachable", s.brokers_unreachable)?;
        d.set_item("client_restarts", s.client_restarts)?;
        d.set_item("client_lost", s.client_lost.clone())?;
        d.set_item("transactions_committed", s.transactions_committed)?;
        d.set_item("transactions_aborted", s.transactions_aborted)?;
        d.set_item("stopped", s.stopped)?;
        Ok(d)
    }

    /// Finishes each of `work` (messages or batches) as done, as `_finish("ok")` on each would.
    /// A task on the consumer's runtime hands the outcomes over: waking a handler call from
    /// this (a foreign) thread costs a wake-up of the runtime each (two system calls, the
    /// larger part of a message's cost), from the runtime's own thread next to nothing.
    fn finish_ok(&self, work: &Bound<'_, PyList>) -> PyResult<()> {
        let mut replies = Vec::with_capacity(work.len());
        for w in work.iter() {
            let reply = match w.cast::<Message>() {
                Ok(m) => m.get().take_reply(),
                Err(_) => w.cast::<Batch>()?.get().take_reply(),
            };
            replies.extend(reply);
        }
        let send = move || {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        };
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(async move { send() })),
            None => send(),
        }
        Ok(())
    }

    /// Asks for a graceful shutdown: deliveries in flight are still finished and committed;
    /// the consumer ends once they are.
    fn shutdown(&self) {
        if let Some(stop) = &self.shutdown {
            stop();
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Dropped with the GIL held: waiting here for the runtime's threads, one of which may be
        // answering Python (an output send, a seek), could wait forever.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // A Kafka client waits for librdkafka's threads when dropped, and one of them may be
        // waiting for the GIL to call a token provider: drop the settings (and the output
        // producer they hold) without it.
        let builder = self.builder.take();
        Python::attach(|py| py.detach(move || drop(builder)));
    }
}

/// The consumer's producer for handlers' results (the library's `Output`).
#[pyclass(module = "sluicegate._sluicegate")]
struct Output {
    /// Taken only when dropped.
    output: Option<sluicegate::Output>,
    /// The consumer's runtime, where sends wait for their acknowledgement.
    runtime: tokio::runtime::Handle,
}

/// `v` (`bytes`, `str` or `None`) as bytes.
fn bytes_of(v: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    if v.is_none() {
        Ok(None)
    } else if let Ok(s) = v.extract::<String>() {
        Ok(Some(s.into_bytes()))
    } else if let Ok(b) = v.cast::<PyBytes>() {
        Ok(Some(b.as_bytes().to_vec()))
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "expected bytes, str or None, got {}",
            v.get_type().name()?
        )))
    }
}

#[pymethods]
impl Output {
    /// Sends a record; calls `done((partition, offset), error)` from another thread once the
    /// broker has acknowledged it or the send failed. `headers` are `(name, value)` pairs.
    /// `work` is the message or batch whose handler call sends it, if any: in exactly-once
    /// mode the record is one of that call's outputs.
    #[pyo3(signature = (topic, value, key, headers, partition, done, work=None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        topic: String,
        value: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        headers: Vec<(String, Bound<'_, PyAny>)>,
        partition: Option<i32>,
        done: Py<PyAny>,
        work: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let scope = match work {
            Some(w) => match (w.cast::<Message>(), w.cast::<Batch>()) {
                (Ok(m), _) => m.get().outputs.clone(),
                (_, Ok(b)) => b.get().outputs.clone(),
                _ => None,
            },
            None => None,
        };
        let mut record = OutputRecord::to(topic.clone());
        if let Some(v) = bytes_of(value)? {
            record = record.payload(v);
        }
        if let Some(k) = bytes_of(key)? {
            record = record.key(k);
        }
        for (name, v) in headers {
            let Some(v) = bytes_of(&v)? else {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "header {name:?}: a value is bytes or str, not None"
                )));
            };
            record = record.header(name, v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let Some(output) = self.output.clone() else {
            return Err(SluicegateError::new_err("the output producer is gone"));
        };
        self.runtime.spawn(async move {
            let sent = match scope {
                Some(scope) => output.send_in(&scope, record).await,
                None => output.send(record).await,
            };
            answer(done, move |py| match sent {
                Ok(d) => Ok((d.partition, d.offset).into_pyobject(py)?.into_any()),
                Err(e) => Err(py
                    .import("sluicegate._errors")?
                    .getattr("OutputError")?
                    .call1((e.source().to_string(),))
                    .map(PyErr::from_value)?),
            });
        });
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // See `Drop for Core`: the producer may wait for a thread that waits for the GIL.
        let output = self.output.take();
        Python::attach(|py| py.detach(move || drop(output)));
    }
}

/// A Kafka record handed to a Python handler.
///
/// It holds the library's message (a shared reference, not a copy); its key and value become
/// `bytes` when first read, once.
#[pyclass(module = "sluicegate._sluicegate", frozen)]
struct Message {
    /// Where the outcome goes; `None` for a batch's message, or once finished.
    reply: Mutex<Option<oneshot::Sender<HandlerResult>>>,
    /// Exactly-once mode: where the outputs of this handler call go.
    outputs: Option<OutputScope>,
    message: sluicegate::Message,
    key: PyOnceLock<Option<Py<PyBytes>>>,
    value: PyOnceLock<Option<Py<PyBytes>>>,
}

impl Message {
    fn new(
        message: sluicegate::Message,
        reply: Option<oneshot::Sender<HandlerResult>>,
        outputs: Option<OutputScope>,
    ) -> Self {
        Message {
            reply: Mutex::new(reply),
            outputs,
            message,
            key: PyOnceLock::new(),
            value: PyOnceLock::new(),
        }
    }

    /// The channel the handler call waits on, unless an outcome was given already.
    fn take_reply(&self) -> Option<oneshot::Sender<HandlerResult>> {
        self.reply.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Hands `result` to the handler call waiting for it (only the first outcome counts).
    fn finish(&self, result: HandlerResult) {
        if let Some(reply) = self.take_reply() {
            let _ = reply.send(result);
        }
    }

    /// A `sluicegate.DecodeError` saying why the value could not be read as `what`.
    fn decode_error(&self, py: Python<'_>, what: &str, why: &str) -> PyErr {
        let m = &self.message;
        let text = format!(
            "cannot decode the value of {}/{} at offset {} as {what}: {why}",
            m.topic(),
            m.partition(),
            m.offset()
        );
        match py
            .import("sluicegate._errors")
            .and_then(|m| m.getattr("DecodeError"))
        {
            Ok(class) => PyErr::from_value(match class.call1((text.clone(),)) {
                Ok(e) => e,
                Err(e) => return e,
            }),
            Err(e) => e,
        }
    }

    /// The value as `bytes`, made on first use.
    fn value_bytes<'py>(&self, py: Python<'py>) -> Option<&Bound<'py, PyBytes>> {
        self.value
            .get_or_init(py, || {
                self.message.payload().map(|v| PyBytes::new(py, v).unbind())
            })
            .as_ref()
            .map(|v| v.bind(py))
    }
}

#[pymethods]
impl Message {
    /// The topic.
    #[getter]
    fn topic(&self) -> &str {
        self.message.topic()
    }

    /// The partition.
    #[getter]
    fn partition(&self) -> i32 {
        self.message.partition()
    }

    /// The offset.
    #[getter]
    fn offset(&self) -> i64 {
        self.message.offset()
    }

    /// The record's timestamp in milliseconds since the Unix epoch, if it has one.
    #[getter]
    fn timestamp(&self) -> Option<i64> {
        self.message.timestamp()
    }

    /// The key, or `None`.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.key
            .get_or_init(py, || {
                self.message.key().map(|k| PyBytes::new(py, k).unbind())
            })
            .as_ref()
            .map(|k| k.bind(py).clone())
    }

    /// The value, or `None` for a tombstone.
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.value_bytes(py).cloned()
    }

    /// The headers, as `(name, value)` pairs in the record's order.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for h in self.message.headers() {
            let value = h.value.as_deref().map(|v| PyBytes::new(py, v));
            list.append((h.key.as_str(), value))?;
        }
        Ok(list)
    }

    /// The value decoded as JSON (`json.loads`). Raises `sluicegate.DecodeError`, naming the
    /// record, if it is not JSON or is a tombstone: never retried.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(value) = self.value_bytes(py) else {
            return Err(self.decode_error(py, "JSON", "a tombstone (no value)"));
        };
        py.import("json")?
            .call_method1("loads", (value,))
            .map_err(|e| self.decode_error(py, "JSON", &e.to_string()))
    }

    /// The value as UTF-8 text. Raises `sluicegate.DecodeError`, naming the record, if it is
    /// not UTF-8 or is a tombstone.
    fn text(&self, py: Python<'_>) -> PyResult<String> {
        let Some(value) = self.message.payload() else {
            return Err(self.decode_error(py, "text", "a tombstone (no value)"));
        };
        String::from_utf8(value.to_vec()).map_err(|e| self.decode_error(py, "text", &e.to_string()))
    }

    /// Says what handling the message came to. `kind`: `"ok"`, `"retryable"`,
    /// `"permanent"`, `"skip"` or `"decode"`; `reason` for the others. Only the first call
    /// counts.
    #[pyo3(signature = (kind, reason=None))]
    fn _finish(&self, kind: &str, reason: Option<String>) -> PyResult<()> {
        self.finish(outcome(kind, reason)?);
        Ok(())
    }

    fn __repr__(&self) -> String {
        let m = &self.message;
        format!(
            "Message(topic={:?}, partition={}, offset={})",
            m.topic(),
            m.partition(),
            m.offset()
        )
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // A message dropped unfinished (the Python side lost it) is not done: retried.
        if let Some(reply) = self.reply.get_mut().ok().and_then(Option::take) {
            let _ = reply.send(Err(HandlerError::retryable(
                "the message was dropped by Python without an outcome",
            )));
        }
    }
}

/// A batch of messages handed to a batch handler, finished as one.
#[pyclass(module = "sluicegate._sluicegate", frozen)]
struct Batch {
    messages: Py<PyList>,
    reply: Mutex<Option<oneshot::Sender<HandlerResult>>>,
    /// Exactly-once mode: where the outputs of this handler call go.
    outputs: Option<OutputScope>,
}

#[pymethods]
impl Batch {
    /// The messages, in offset order within each partition.
    #[getter]
    fn messages<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.messages.bind(py).clone()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.messages.bind(py).len()
    }

    /// Says what handling the batch came to (see `Message._finish`); a failed batch is
    /// retried, then bisected to isolate the records that fail on their own.
    #[pyo3(signature = (kind, reason=None))]
    fn _finish(&self, kind: &str, reason: Option<String>) -> PyResult<()> {
        self.finish(outcome(kind, reason)?);
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Batch({} messages)", self.messages.bind(py).len())
    }
}

impl Batch {
    /// The channel the batch handler call waits on, unless an outcome was given already.
    fn take_reply(&self) -> Option<oneshot::Sender<HandlerResult>> {
        self.reply.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Hands `result` to the batch handler call waiting for it (only the first outcome counts).
    fn finish(&self, result: HandlerResult) {
        if let Some(reply) = self.take_reply() {
            let _ = reply.send(result);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.get_mut().ok().and_then(Option::take) {
            let _ = reply.send(Err(HandlerError::retryable(
                "the batch was dropped by Python without an outcome",
            )));
        }
    }
}

/// The handler result an outcome `kind` (and `reason`) from Python stands for.
fn outcome(kind: &str, reason: Option<String>) -> PyResult<HandlerResult> {
    let reason = || reason.clone().unwrap_or_else(|| kind.to_string());
    Ok(match kind {
        "ok" => Ok(()),
        "retryable" => Err(HandlerError::retryable(reason())),
        "permanent" => Err(HandlerError::permanent(reason())),
        "skip" => Err(HandlerError::skip(reason())),
        "decode" => Err(HandlerError::decode(reason())),
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown outcome {other:?}"
            )))
        }
    })
}

/// An embedded Kafka cluster (librdkafka's mock cluster) in this process, for tests.
#[pyclass(module = "sluicegate._sluicegate", name = "EmbeddedKafka")]
struct Embedded(sluicegate::EmbeddedKafka);

#[pymethods]
impl Embedded {
    #[new]
    #[pyo3(signature = (brokers=1))]
    fn new(brokers: i32) -> PyResult<Self> {
        sluicegate::EmbeddedKafka::start(brokers)
            .map(Embedded)
            .map_err(error)
    }

    /// `host:port,...` of its brokers.
    #[getter]
    fn bootstrap_servers(&self) -> String {
        self.0.bootstrap_servers().to_string()
    }

    /// Creates `topic` with `partitions` partitions.
    fn create_topic(&self, topic: &str, partitions: i32) -> PyResult<()> {
        self.0.create_topic(topic, partitions).map_err(error)
    }

    /// Writes `records` to `topic` and waits until each is acknowledged; returns each one's
    /// `(partition, offset)`, in order. A record is a value (`bytes` or `str`) or a
    /// `(key, value)` pair (either may be `None`). Records go to `partition` if given, else by
    /// key.
    #[pyo3(signature = (topic, records, partition=None))]
    fn produce(
        &self,
        py: Python<'_>,
        topic: &str,
        records: &Bound<'_, PyAny>,
        partition: Option<i32>,
    ) -> PyResult<Vec<(i32, i64)>> {
        fn bytes(v: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
            if v.is_none() {
                Ok(None)
            } else if let Ok(s) = v.extract::<String>() {
                Ok(Some(s.into_bytes()))
            } else {
                Ok(Some(v.extract::<Vec<u8>>()?))
            }
        }
        let mut pairs = Vec::new();
        for record in records.try_iter()? {
            let record = record?;
            pairs.push(match record.cast::<PyTuple>() {
                Ok(t) if t.len() == 2 => (bytes(&t.get_item(0)?)?, bytes(&t.get_item(1)?)?),
                _ => (None, bytes(&record)?),
            });
        }
        py.detach(|| self.0.produce(topic, partition, pairs))
            .map_err(error)
    }

    /// Takes broker `broker` (1-based) down: its connections are closed and refused.
    fn broker_down(&self, broker: i32) -> PyResult<()> {
        self.0.broker_down(broker).map_err(error)
    }

    /// Brings broker `broker` back up.
    fn broker_up(&self, broker: i32) -> PyResult<()> {
        self.0.broker_up(broker).map_err(error)
    }

    /// Makes the next requests of kind `api` (such as `"offset_commit"`) fail with `codes`
    /// (such as `"NOT_COORDINATOR"`), one per request, in order.
    fn request_errors(&self, api: &str, codes: Vec<String>) -> PyResult<()> {
        let codes = codes
            .iter()
            .map(|c| error_code(c))
            .collect::<PyResult<Vec<_>>>()?;
        self.0.request_errors(api_key(api)?, &codes).map_err(error)
    }

    /// Forgets the errors of `api` pushed by `request_errors` and not yet returned.
    fn clear_request_errors(&self, api: &str) -> PyResult<()> {
        self.0.clear_request_errors(api_key(api)?).map_err(error)
    }
}

/// The request kinds `request_errors` takes, by their Python names.
const API_KEYS: &[(&str, ApiKey)] = &[
    ("produce", ApiKey::Produce),
    ("fetch", ApiKey::Fetch),
    ("list_offsets", ApiKey::ListOffsets),
    ("metadata", ApiKey::Metadata),
    ("offset_commit", ApiKey::OffsetCommit),
    ("offset_fetch", ApiKey::OffsetFetch),
    ("find_coordinator", ApiKey::FindCoordinator),
    ("join_group", ApiKey::JoinGroup),
    ("heartbeat", ApiKey::Heartbeat),
    ("leave_group", ApiKey::LeaveGroup),
    ("sync_group", ApiKey::SyncGroup),
    ("init_producer_id", ApiKey::InitProducerId),
    ("add_partitions_to_txn", ApiKey::AddPartitionsToTxn),
    ("add_offsets_to_txn", ApiKey::AddOffsetsToTxn),
    ("end_txn", ApiKey::EndTxn),
    ("txn_offset_commit", ApiKey::TxnOffsetCommit),
];

/// The request kind `request_errors` takes as `name`.
fn api_key(name: &str) -> PyResult<ApiKey> {
    API_KEYS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let known: Vec<&str> = API_KEYS.iter().map(|(n, _)| *n).collect();
            pyo3::exceptions::PyValueError::new_err(format!(
                "unknown request kind {name:?}; one of: {}",
                known.join(", ")
            ))
        })
}

/// The error code `request_errors` takes as `name`: one of the library's `ErrorCode` constants.
fn error_code(name: &str) -> PyResult<ErrorCode> {
    ErrorCode::NAMED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            let known: Vec<&str> = ErrorCode::NAMED.iter().map(|(n, _)| *n).collect();
            pyo3::exceptions::PyValueError::new_err(format!(
                "unknown error code {name:?}; one of: {}",
                known.join(", ")
            ))
        })
}

#[pymodule]
fn _sluicegate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logs::install();
    m.add_class::<Core>()?;
    m.add_class::<Message>()?;
    m.add_class::<Batch>()?;
    m.add_class::<runs::Run>()?;
    m.add_class::<Embedded>()?;
    m.add_class::<Output>()?;
    m.add_function(wrap_pyfunction!(settings::_defaults, m)?)?;
    m.add("SluicegateError", m.py().get_type::<SluicegateError>())?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    Ok(())
}
