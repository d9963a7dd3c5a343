//! Runs: a lane's next messages handed to Python in one go (the library's [`Upcoming`]), so
//! that in the ordered modes a partition's (or a key's) messages do not each cost a round trip
//! between the runtime and the event loop. Python handles a run's messages one after the other
//! and stops at the first that does not succeed (or once the lane has let them go); each
//! message still answers its own handler call, which finds its outcome here.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyList;
use sluicegate::{HandlerResult, RunId, Upcoming};
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
    /// The index from which Python handed the run back unhandled.
    released_from: AtomicUsize,
}

impl RunState {
    /// Whether Python may start the run's `i`-th message (`i` >= 1): if so, it is claimed, so
    /// that the lane takes its outcome even if it lets the rest of the run go.
    fn begin(&self, i: usize) -> bool {
        // Claimed, then checked: a call stopping the run at the same time either sees the
        // claim ([`Self::stop`]) or is seen here.
        if !self.upcoming.claim(i) {
            return false;
        }
        fence(SeqCst);
        !self.stopped.load(Relaxed)
    }

    /// Stops the run: Python starts no more of it. True if Python had started message `i`.
    fn stop(&self, i: usize) -> bool {
        self.stopped.store(true, Relaxed);
        fence(SeqCst);
        self.started(i)
    }

    /// Whether Python started message `i` (or may have, when it races with a stop).
    fn started(&self, i: usize) -> bool {
        i <= self.upcoming.claimed()
    }
}

/// The messages of a run, the first included: each with the channel its outcome goes to.
pub(crate) type RunMessages = Vec<(sluicegate::Message, oneshot::Sender<HandlerResult>)>;

/// Messages handed to Python in runs, by run and offset: where each call finds its outcome.
#[derive(Default)]
pub(crate) struct Ahead(Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    outcomes: HashMap<(RunId, i64), Pending>,
    /// The size at which entries no call will take (their run stopped, or their partition
    /// was let go) are swept out.
    sweep_at: usize,
}

struct Pending {
    outcome: oneshot::Receiver<HandlerResult>,
    run: Arc<RunState>,
    /// Its index in the run.
    index: usize,
    /// Put back by a call that gave up waiting after Python had gone on to the next message
    /// (so this one succeeded): for the call's retry.
    answered: bool,
}

impl Pending {
    /// Whether a call may still take this outcome.
    fn may_come(&self) -> bool {
        let run = &self.run;
        match self.answered {
            // Only a retry of its call, which ends at the lane's release.
            true => !run.upcoming.released(),
            false => {
                self.index < run.released_from.load(Relaxed)
                    && (run.started(self.index)
                        || !run.stopped.load(Relaxed) && !run.upcoming.released())
            }
        }
    }
}

impl Ahead {
    /// A run of `first` and the messages `upcoming` tells of (at most [`MAX_RUN`] in all):
    /// their outcomes are awaited here by their calls ([`Self::outcome`]).
    pub fn start_run(
        &self,
        first: sluicegate::Message,
        upcoming: Upcoming,
    ) -> (Arc<RunState>, RunMessages) {
        let id = upcoming.run();
        let run = Arc::new(RunState {
            stopped: AtomicBool::new(false),
            upcoming,
            released_from: AtomicUsize::new(usize::MAX),
        });
        let following = run.upcoming.messages().iter().take(MAX_RUN - 1).cloned();
        let mut messages = Vec::new();
        let mut w = self.lock();
        if w.outcomes.len() >= w.sweep_at {
            w.sweep();
        }
        for (index, m) in std::iter::once(first).chain(following).enumerate() {
            let (reply, outcome) = oneshot::channel();
            let pending = Pending {
                outcome,
                run: run.clone(),
                index,
                answered: false,
            };
            // An entry of an earlier run of the same messages is stale: replaced.
            w.outcomes.insert((id, m.offset()), pending);
            messages.push((m, reply));
        }
        (run, messages)
    }

    /// The call of `message` in `run`: its outcome, if it was handed to Python in a run;
    /// `None` if it was not, or Python let it go unhandled (then it is to be handed over
    /// again).
    pub async fn outcome(
        &self,
        run: RunId,
        message: &sluicegate::Message,
    ) -> Option<HandlerResult> {
        let key = (run, message.offset());
        let pending = self.lock().outcomes.remove(&key)?;
        if pending.run.stopped.load(Relaxed) && !pending.run.started(pending.index) {
            return None; // Python will not start it.
        }
        // Put back if the wait is dropped after Python went on: the retry takes it.
        struct PutBack<'a> {
            ahead: &'a Ahead,
            key: (RunId, i64),
            pending: Option<Pending>,
        }
        impl Drop for PutBack<'_> {
            fn drop(&mut self) {
                if let Some(mut p) = self.pending.take() {
                    if p.run.stop(p.index + 1) {
                        p.answered = true;
                        self.ahead.lock().outcomes.insert(self.key, p);
                    }
                }
            }
        }
        let mut waiting = PutBack {
            ahead: self,
            key,
            pending: Some(pending),
        };
        let result = (&mut waiting.pending.as_mut()?.outcome).await;
        waiting.pending = None;
        result.ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Waiting {
    fn sweep(&mut self) {
        self.outcomes.retain(|_, p| p.may_come());
        self.sweep_at = (2 * self.outcomes.len()).max(4 * MAX_RUN);
    }
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
    /// for the rest of the run (its partition was let go, a call of it timed out, the circuit
    /// breaker holds calls back, or the lane let its in-flight permit go: ask before reporting
    /// message `i - 1`). A message started is one the runtime takes the outcome of.
    fn begin(&self, i: usize) -> bool {
        self.state.begin(i)
    }

    /// Gives the messages from index `start` on back unhandled: their calls hand them over
    /// again.
    fn _release(&self, py: Python<'_>, start: usize) -> PyResult<()> {
        self.state.released_from.fetch_min(start, Relaxed);
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
