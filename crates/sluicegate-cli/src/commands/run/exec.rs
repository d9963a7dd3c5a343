//! The exec sink: one long-lived child process speaking JSON lines. Each message is one
//! request line on the child's stdin (`{"id": N, ...the record...}`, see `crate::record`), each
//! answer one line on its stdout (`{"id": N, "result": "ok"|"retry"|"fail"|"skip", "error":
//! "..."}`), in any order, several in flight. The child's stderr is this process's.
//!
//! When the child exits, its unanswered requests fail as retryable (so they are retried, never
//! committed unanswered) and a new child starts after a backoff (100 ms doubling to 10 s, back
//! to 100 ms once a child has lived 10 s); requests wait for it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;
use sluicegate::{Handler, HandlerError, HandlerResult, Message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::reply::Replies;
use super::sink::ExecSettings;
use crate::record::record_json;

/// The first wait before a dead child is started again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before a dead child is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A child that lived this long resets the backoff.
const HEALTHY_LIFE: Duration = Duration::from_secs(10);
/// How long a child may take to exit once its stdin is closed at shutdown, or once it has
/// closed its stdout.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// One answer line.
#[derive(Deserialize)]
struct Reply {
    id: u64,
    result: String,
    #[serde(default)]
    error: Option<String>,
    /// With `ok`: the reply written to `sink.reply_to`, if set.
    #[serde(default)]
    value: Option<Value>,
}

/// The requests a running child has not answered; `None` once it has exited.
type Pending = Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>;

/// One running child.
struct Worker {
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    /// How it ended, once it did.
    exit: Mutex<Option<String>>,
}

/// Sends messages to the child process; clones share it.
#[derive(Clone)]
pub struct ExecSink {
    shared: Arc<Shared>,
}

struct Shared {
    slots: Semaphore,
    next_id: AtomicU64,
    worker: watch::Receiver<Option<Arc<Worker>>>,
    stop: CancellationToken,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Where an `ok` answer's `value` goes, if anywhere (`sink.reply_to`).
    replies: Option<Replies>,
}

impl ExecSink {
    /// Starts the first child (failing when it cannot start: a missing program, say) and the
    /// task that restarts it.
    pub fn start(settings: &ExecSettings, replies: Option<Replies>) -> Result<Self> {
        let command = settings.command.clone();
        let (child, stdin, stdout) = spawn(&command)
            .with_context(|| format!("sink.exec.command: cannot start `{}`", command.join(" ")))?;
        let first = Arc::new(Worker::new(stdin));
        let (publish, worker) = watch::channel(Some(first.clone()));
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            command,
            (child, first, stdout),
            publish,
            stop.clone(),
        ));
        Ok(ExecSink {
            shared: Arc::new(Shared {
                slots: Semaphore::new(settings.in_flight),
                next_id: AtomicU64::new(0),
                worker,
                stop,
                supervisor: Mutex::new(Some(supervisor)),
                replies,
            }),
        })
    }

    /// Closes the child's stdin, waits a little for it to exit, then kills it. Call once the
    /// consumer has stopped (every request finished).
    pub async fn stop(&self) {
        self.shared.stop.cancel();
        let task = lock(&self.shared.supervisor).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn call(&self, msg: &Message) -> HandlerResult {
        let _slot = self
            .shared
            .slots
            .acquire()
            .await
            .map_err(|_| HandlerError::retryable("the exec sink is closed"))?;
        let mut watch = self.shared.worker.clone();
        let worker = tokio::select! {
            w = watch.wait_for(Option::is_some) => match w.ok().and_then(|w| w.clone()) {
                Some(w) => w,
                None => return Err(HandlerError::retryable("the exec sink is closed")),
            },
            _ = self.shared.stop.cancelled() => {
                return Err(HandlerError::retryable("the exec sink is stopping"))
            }
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, reply) = oneshot::channel();
        match lock(&worker.pending).as_mut() {
            Some(pending) => pending.insert(id, answer),
            None => return Err(worker.gone()),
        };
        // Removes the request if this call is abandoned (a handler timeout) or fails.
        let _entry = Entry {
            worker: &worker,
            id,
        };
        let mut request = record_json(msg);
        request.insert("id".into(), id.into());
        let mut line =
            serde_json::to_vec(&Value::Object(request)).map_err(HandlerError::permanent)?;
        line.push(b'\n');
        {
            let mut stdin = worker.stdin.lock().await;
            let written = async {
                stdin.write_all(&line).await?;
                stdin.flush().await
            };
            if let Err(e) = written.await {
                return Err(HandlerError::retryable(format!(
                    "cannot write to the worker process: {e}"
                )));
            }
        }
        let reply = reply.await.map_err(|_| worker.gone())?;
        let value = reply.value.clone();
        outcome(reply)?;
        if let (Some(replies), Some(value)) = (&self.shared.replies, value) {
            if let Some(bytes) = reply_bytes(value)? {
                replies.write(msg, bytes).await?;
            }
        }
        Ok(())
    }
}

/// A request's place among its worker's pending ones, removed when dropped.
struct Entry<'a> {
    worker: &'a Worker,
    id: u64,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(pending) = lock(&self.worker.pending).as_mut() {
            pending.remove(&self.id);
        }
    }
}

/// The outcome a reply asks for.
fn outcome(reply: Reply) -> HandlerResult {
    let error = |default: &str| reply.error.clone().unwrap_or_else(|| default.to_string());
    match reply.result.as_str() {
        "ok" => Ok(()),
        "retry" => Err(HandlerError::retryable(error(
            "the worker asked for a retry",
        ))),
        "fail" => Err(HandlerError::permanent(error(
            "the worker failed the message",
        ))),
        "skip" => Err(HandlerError::skip(error("the worker skipped the message"))),
        other => Err(HandlerError::retryable(format!(
            "the worker answered `\"result\": \"{other}\"`; expected ok, retry, fail or skip"
        ))),
    }
}

/// An answer's `value` as bytes: a string as its UTF-8, `{"base64": "..."}` decoded (the
/// requests' own rule), `null` as no reply.
fn reply_bytes(value: Value) -> Result<Option<Vec<u8>>, HandlerError> {
    let refused = || {
        HandlerError::retryable(
            "the worker answered a `value` that is not a string, {\"base64\": ...} or null",
        )
    };
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.into_bytes())),
        Value::Object(o) => match o.get("base64") {
            Some(Value::String(b)) if o.len() == 1 => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map(Some)
                    .map_err(|_| refused())
            }
            _ => Err(refused()),
        },
        _ => Err(refused()),
    }
}

impl Handler for ExecSink {
    async fn handle(&self, message: Message) -> HandlerResult {
        self.call(&message).await
    }
}

impl Worker {
    fn new(stdin: ChildStdin) -> Self {
        Worker {
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::new(Some(HashMap::new())),
            exit: Mutex::new(None),
        }
    }

    /// The error of a request this worker will never answer.
    fn gone(&self) -> HandlerError {
        let how = lock(&self.exit)
            .clone()
            .unwrap_or_else(|| "exited".to_string());
        HandlerError::retryable(format!("the worker process {how} before answering"))
    }

    /// Fails every unanswered request (their senders dropped) and refuses new ones.
    fn close(&self, how: String) {
        *lock(&self.exit) = Some(how);
        lock(&self.pending).take();
    }

    fn answer(&self, reply: Reply) {
        let sender = lock(&self.pending)
            .as_mut()
            .and_then(|p| p.remove(&reply.id));
        match sender {
            Some(sender) => {
                let _ = sender.send(reply);
            }
            None => tracing::warn!(
                id = reply.id,
                "the worker answered a request it does not have"
            ),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn(command: &[String]) -> std::io::Result<(Child, ChildStdin, ChildStdout)> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    Ok((child, stdin, stdout))
}

/// Reads the running child's answers; when it exits, fails its requests and starts another,
/// with backoff, until `stop`.
async fn supervise(
    command: Vec<String>,
    first: (Child, Arc<Worker>, ChildStdout),
    publish: watch::Sender<Option<Arc<Worker>>>,
    stop: CancellationToken,
) {
    let mut running = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let (mut child, worker, stdout) = match running.take() {
            Some(r) => r,
            None => match spawn(&command) {
                Ok((child, stdin, stdout)) => {
                    let worker = Arc::new(Worker::new(stdin));
                    publish.send_replace(Some(worker.clone()));
                    (child, worker, stdout)
                }
                Err(e) => {
                    tracing::error!(command = %command.join(" "), "cannot start the worker process: {e}");
                    if !wait(&stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let started = Instant::now();
        let stopped = read_answers(&worker, stdout, &stop).await;
        publish.send_replace(None);
        if stopped {
            // Closing stdin asks the child to finish; it gets a moment, then is killed.
            let how =
                match tokio::time::timeout(EXIT_GRACE, close_and_wait(&worker, &mut child)).await {
                    Ok(how) => how,
                    Err(_) => {
                        let _ = child.kill().await;
                        "was killed at shutdown".to_string()
                    }
                };
            worker.close(how);
            return;
        }
        // Its stdout closed: it is exiting, or no longer answers either way.
        let how = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(Ok(status)) => format!("exited ({status})"),
            Ok(Err(e)) => format!("was lost ({e})"),
            Err(_) => {
                let _ = child.kill().await;
                "closed its stdout and was killed".to_string()
            }
        };
        tracing::warn!(command = %command.join(" "), "the worker process {how}; starting it again in {backoff:?}");
        worker.close(how);
        if started.elapsed() >= HEALTHY_LIFE {
            backoff = FIRST_BACKOFF;
        }
        if !wait(&stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Closes the child's stdin and waits for it to exit.
async fn close_and_wait(worker: &Worker, child: &mut Child) -> String {
    let _ = worker.stdin.lock().await.shutdown().await;
    match child.wait().await {
        Ok(status) => format!("exited at shutdown ({status})"),
        Err(e) => format!("was lost at shutdown ({e})"),
    }
}

/// Waits `delay`; `false` when `stop` came first.
async fn wait(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    }
}

/// Hands each answer line to its request until the child's stdout closes (`false`) or `stop`
/// (`true`).
async fn read_answers(worker: &Worker, stdout: ChildStdout, stop: &CancellationToken) -> bool {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = stop.cancelled() => return true,
        };
        match line {
            Ok(Some(line)) if line.trim().is_empty() => {}
            Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                Ok(reply) => worker.answer(reply),
                Err(e) => {
                    tracing::warn!("the worker wrote a line that is not an answer ({e}): {line}")
                }
            },
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!("cannot read the worker's answers: {e}");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicegate::ErrorKind;

    fn answered(result: &str, error: Option<&str>) -> HandlerResult {
        outcome(Reply {
            id: 1,
            result: result.into(),
            error: error.map(str::to_string),
            value: None,
        })
    }

    #[test]
    fn a_reply_value_is_text_base64_or_nothing() {
        use serde_json::json;
        assert_eq!(
            reply_bytes(json!("hé")).unwrap(),
            Some("hé".as_bytes().to_vec())
        );
        assert_eq!(
            reply_bytes(json!({"base64": "/wA="})).unwrap(),
            Some(vec![0xff, 0])
        );
        assert_eq!(reply_bytes(json!(null)).unwrap(), None);
        for bad in [json!(3), json!({"base64": "!"}), json!({"text": "x"})] {
            assert!(reply_bytes(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_answer_is_its_outcome() {
        assert!(answered("ok", None).is_ok());
        let kind = |r: HandlerResult| r.unwrap_err().kind();
        assert_eq!(kind(answered("retry", None)), ErrorKind::Retryable);
        assert_eq!(kind(answered("skip", None)), ErrorKind::Skip);
        let fail = answered("fail", Some("no such user")).unwrap_err();
        assert_eq!(fail.kind(), ErrorKind::Permanent);
        assert_eq!(fail.source().to_string(), "no such user");
        // A worker's typo must not lose or dead-letter the message.
        assert_eq!(kind(answered("okay", None)), ErrorKind::Retryable);
    }
}
