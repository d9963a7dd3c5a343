//! Runs: a lane's next messages handed to Python in one go (the library's [`Upcoming`]), so
//! that in the ordered modes a partition's (or a key's) messages do not each cost a round trip
//! between the runtime and the event loop. Python handles a run's messages one after the other
//! and stops at the first that does not succeed (or once the lane has let them go); each
//! message still answers its own handler call, which finds its outcome here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyList;
use sluicegate::{HandlerResult, Upcoming};
use tokio::sync::oneshot;

use super::Message;

/// The most messages handed to Python in one run.
pub(crate) const MAX_RUN: usize = 512;

/// What the handler calls of one run share.
pub(crate) struct RunState {
    /// Set when a call of the run ended without waiting for its outcome (it timed out, or
    /// was cancelled): the runtime goes its own way, so Python must not run ahead of it.
    stopped: AtomicBool,
    upcoming: Upcoming,
    /// The messages Python started, by their index in the run (the first is 0).
    started: AtomicUsize,
}

impl RunState {
    /// Whether Python may start the run's `i`-th message (`i` >= 1): if so, it is claimed, so
    /// that the lane takes its outcome even if it lets the rest of the run go.
    fn begin(&self, i: usize) -> bool {
        let begun = !self.stopped.load(Relaxed) && self.upcoming.claim(i);
        if begun {
            self.started.fetch_max(i, Relaxed);
        }
        begun
    }

    /// Whether the call of the run's `i`-th message may still come: it was started, or the
    /// run goes on.
    fn may_come(&self, i: usize) -> bool {
        i <= self.started.load(Relaxed) || !self.stopped.load(Relaxed) && !self.upcoming.released()
    }
}

/// The messages of a run after its first: each with the channel its outcome goes to.
pub(crate) type Following = Vec<(sluicegate::Message, oneshot::Sender<HandlerResult>)>;

/// Messages handed to Python ahead of their handler calls, by topic, then partition and
/// offset: where each call finds its outcome.
#[derive(Default)]
pub(crate) struct Ahead(Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    by_topic: HashMap<String, HashMap<(i32, i64), Pending>>,
    len: usize,
    /// The size at which entries no call will take (their run stopped, or their partition
    /// was let go) are swept out.
    sweep_at: usize,
}

struct Pending {
    outcome: oneshot::Receiver<HandlerResult>,
    run: Arc<RunState>,
    /// Its index in the run.
    index: usize,
}

impl Ahead {
    /// A run of the messages `upcoming` tells of (at most [`MAX_RUN`] with the one being
    /// called): their outcomes are awaited here by their calls to come.
    pub fn start_run(&self, upcoming: Upcoming) -> (Arc<RunState>, Following) {
        let run = Arc::new(RunState {
            stopped: AtomicBool::new(false),
            upcoming,
            started: AtomicUsize::new(0),
        });
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if w.len >= w.sweep_at {
            w.sweep();
        }
        let mut following = Vec::new();
        for (i, m) in run.upcoming.messages().iter().take(MAX_RUN - 1).enumerate() {
            let (reply, outcome) = oneshot::channel();
            let pending = Pending {
                outcome,
                run: run.clone(),
                index: i + 1,
            };
            let partition = match w.by_topic.get_mut(m.topic()) {
                Some(p) => p,
                None => w.by_topic.entry(m.topic().to_string()).or_default(),
            };
            // An entry of an earlier run of the same messages is stale: replaced.
            if partition
                .insert((m.partition(), m.offset()), pending)
                .is_none()
            {
                w.len += 1;
            }
            following.push((m.clone(), reply));
        }
        (run, following)
    }

    /// The call of `message`: its outcome, if it was handed to Python in a run; `None` if it
    /// was not, or its run stopped before it (then it is to be handed over again).
    pub async fn outcome(&self, message: &sluicegate::Message) -> Option<HandlerResult> {
        let pending = {
            let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let pending = w
                .by_topic
                .get_mut(message.topic())?
                .remove(&(message.partition(), message.offset()))?;
            w.len -= 1;
            pending
        };
        stopping_if_dropped(&pending.run, pending.outcome)
            .await
            .ok()
    }
}

impl Waiting {
    fn sweep(&mut self) {
        for partition in self.by_topic.values_mut() {
            partition.retain(|_, p| p.run.may_come(p.index));
        }
        self.len = self.by_topic.values().map(HashMap::len).sum();
        self.sweep_at = (2 * self.len).max(4 * MAX_RUN);
    }
}

/// Awaits `call`, stopping `run` if the wait is dropped before it ends.
pub(crate) async fn stopping_if_dropped<T>(
    run: &RunState,
    call: impl std::future::Future<Output = T>,
) -> T {
    struct StopOnDrop<'a>(Option<&'a RunState>);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            if let Some(run) = self.0 {
                run.stopped.store(true, Relaxed);
            }
        }
    }
    let mut guard = StopOnDrop(Some(run));
    let result = call.await;
    guard.0 = None;
    result
}

/// A run of one lane's messages for a Python handler, in the order they must be handled: each
/// after the one before it succeeded (or was skipped).
#[pyclass(module = "sluicegate._sluicegate", frozen)]
pub(crate) struct Run {
    messages: Py<PyList>,
    state: Arc<RunState>,
}

impl Run {
    pub fn new(messages: Py<PyList>, state: Arc<RunState>) -> Self {
        Run { messages, state }
    }
}

#[pymethods]
impl Run {
    /// The messages, in order.
    #[getter]
    fn messages<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.messages.bind(py).clone()
    }

    /// Whether to start message `i` (`i` >= 1) now: false once the runtime no longer waits
    /// for the rest of the run (its partition was let go, or a call of it timed out). A message
    /// started is one the runtime takes the outcome of.
    fn begin(&self, i: usize) -> bool {
        self.state.begin(i)
    }

    /// Gives the messages from index `start` on back unhandled: their calls hand them over
    /// again.
    fn _release(&self, py: Python<'_>, start: usize) -> PyResult<()> {
        let messages = self.messages.bind(py);
        for i in start..messages.len() {
            drop(messages.get_item(i)?.cast::<Message>()?.get().take_reply());
        }
        Ok(())
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.messages.bind(py).len()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("Run({} messages)", self.messages.bind(py).len())
    }
}
