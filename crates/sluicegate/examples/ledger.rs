//! A consumer whose side effect is an append-only file: the ledger.
//!
//! ```text
//! cargo run --example ledger -- --bootstrap localhost:9092 --group ledger --topic orders \
//!     --ledger /tmp/ledger.txt [--ordering partition|key|unordered] [--batch N] [--stream] \
//!     [--work-ms MS] [--commit-interval-ms MS] [--max-in-flight N] [--set KEY=VALUE]...
//! ```
//!
//! With `--stream` it takes the messages as a stream (`ConsumerBuilder::messages`) and writes
//! its own loop, one task per delivery, instead of giving the consumer a handler: the same
//! guarantees, by the other way in.
//!
//! For every message it appends one line to the ledger and returns:
//!
//! ```text
//! PARTITION OFFSET FINISHED_AT_UNIX_MICROS PAYLOAD
//! ```
//!
//! Each line is written with a single `write_all` before the handler returns (with `--batch N`,
//! a batch's lines with one `write_all` before the batch handler returns), so a line in the
//! ledger means "this message was finished". Nothing is fsynced: when a process is killed,
//! the kernel keeps what it already wrote; only a power loss would need more.
//!
//! What it shows is at-least-once delivery. Stop it with Ctrl-C or SIGTERM and it finishes
//! the work in flight, commits, and exits: a restart goes on exactly where it stopped. Kill it
//! with SIGKILL (`kill -9`) instead, at any moment, and restart it: the messages it finished
//! after its last commit (at most one commit interval's worth, plus what was in flight) are
//! handled again, so the ledger may hold a few duplicate lines, but no message is ever missing
//! from it. A real side effect would make such a repeat harmless (an idempotent write, keyed by
//! partition and offset); the ledger keeps them so they can be counted. The crash tests
//! (`tests/crash.rs`) kill it over and over and check exactly that.
//!
//! Every option can also be given in the environment: `--work-ms 5` as `LEDGER_WORK_MS=5`.
//! `--set` passes librdkafka properties (for example `--set session.timeout.ms=6000`); in
//! the environment, `LEDGER_SET=k1=v1,k2=v2`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use sluicegate::{
    batch_handler_fn, handler_fn, BatchLimits, Consumer, HandlerError, Message, Ordering,
};

const USAGE: &str = "usage: ledger --bootstrap HOST:PORT --group GROUP --topic TOPIC \
--ledger FILE [--ordering partition|key|unordered] [--batch N] [--stream] [--work-ms MS] \
[--commit-interval-ms MS] [--max-in-flight N] [--set KEY=VALUE]...";

/// The command line, each option falling back to `LEDGER_<OPTION>` in the environment.
struct Options {
    bootstrap: String,
    group: String,
    topic: String,
    ledger: PathBuf,
    ordering: Ordering,
    batch: Option<usize>,
    /// Take the messages as a stream rather than through a handler.
    stream: bool,
    work: Duration,
    commit_interval: Duration,
    max_in_flight: usize,
    set: Vec<(String, String)>,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let mut given: Vec<(String, String)> = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}\n{USAGE}");
            };
            if name == "stream" {
                given.push((name.to_string(), "1".into()));
                continue;
            }
            let (name, value) = match name.split_once('=') {
                Some((n, v)) if n != "set" => (n.to_string(), v.to_string()),
                _ => {
                    let value = args
                        .next()
                        .with_context(|| format!("--{name} needs a value\n{USAGE}"))?;
                    (name.to_string(), value)
                }
            };
            given.push((name, value));
        }
        let get = |name: &str| -> Option<String> {
            given
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    let var = format!("LEDGER_{}", name.replace('-', "_").to_uppercase());
                    std::env::var(var).ok().filter(|v| !v.is_empty())
                })
        };
        let required =
            |name: &str| get(name).with_context(|| format!("--{name} is required\n{USAGE}"));
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            get(name).map_or(Ok(default), |v| {
                v.parse()
                    .with_context(|| format!("--{name}: not a number: {v:?}"))
            })
        };
        for (name, _) in &given {
            let known = [
                "bootstrap",
                "group",
                "topic",
                "ledger",
                "ordering",
                "batch",
                "stream",
                "work-ms",
                "commit-interval-ms",
                "max-in-flight",
                "set",
            ];
            if !known.contains(&name.as_str()) {
                bail!("unknown option --{name}\n{USAGE}");
            }
        }
        let mut set: Vec<String> = given
            .iter()
            .filter(|(n, _)| n == "set")
            .map(|(_, v)| v.clone())
            .collect();
        if set.is_empty() {
            if let Ok(env) = std::env::var("LEDGER_SET") {
                set = env
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
        Ok(Options {
            bootstrap: required("bootstrap")?,
            group: required("group")?,
            topic: required("topic")?,
            ledger: required("ledger")?.into(),
            ordering: get("ordering")
                .unwrap_or_else(|| "partition".into())
                .parse()
                .map_err(anyhow::Error::msg)?,
            batch: match number("batch", 0)? {
                0 => None,
                n => Some(n as usize),
            },
            stream: number("stream", 0)? != 0,
            work: Duration::from_millis(number("work-ms", 0)?),
            commit_interval: Duration::from_millis(number("commit-interval-ms", 200)?),
            max_in_flight: number("max-in-flight", 100)? as usize,
            set: set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// The ledger file. One lock around it, so that lines never interleave, and each line's
/// timestamp is taken in the order the lines are written.
#[derive(Clone)]
struct Ledger(Arc<Mutex<File>>);

impl Ledger {
    fn open(path: &PathBuf) -> anyhow::Result<Ledger> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open the ledger {}", path.display()))?;
        Ok(Ledger(Arc::new(Mutex::new(file))))
    }

    /// Appends one line per message, all with one `write_all`, and flushes.
    fn append(&self, messages: &[Message]) -> std::io::Result<()> {
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let mut lines = String::new();
        for msg in messages {
            let payload = String::from_utf8_lossy(msg.payload().unwrap_or_default())
                .replace('\\', "\\\\")
                .replace('\n', "\\n");
            lines.push_str(&format!(
                "{} {} {now} {payload}\n",
                msg.partition(),
                msg.offset()
            ));
        }
        file.write_all(lines.as_bytes())?;
        file.flush()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let opts = Options::parse()?;
    let ledger = Ledger::open(&opts.ledger)?;

    let mut builder = Consumer::builder()
        .bootstrap_servers(&opts.bootstrap)
        .group_id(&opts.group)
        .topic(&opts.topic)
        .ordering(opts.ordering)
        .max_in_flight(opts.max_in_flight)
        .commit_interval(opts.commit_interval);
    for (key, value) in &opts.set {
        builder = builder.set(key, value);
    }
    eprintln!(
        "ledger: pid {}, {} of {} in group {}, {} order{}, into {}",
        std::process::id(),
        opts.topic,
        opts.bootstrap,
        opts.group,
        opts.ordering.as_str(),
        opts.batch
            .map(|n| format!(", batches of up to {n}"))
            .unwrap_or_default(),
        opts.ledger.display()
    );
    let work = opts.work;
    match opts.batch {
        None if opts.stream => {
            let mut messages = builder.messages()?;
            let mut signal = std::pin::pin!(shutdown_signal());
            let mut stopping = false;
            loop {
                let delivery = tokio::select! {
                    delivery = messages.next() => delivery,
                    // Stop taking new work; the stream ends once what is in flight finished
                    // and was committed.
                    _ = &mut signal, if !stopping => {
                        stopping = true;
                        messages.shutdown();
                        continue;
                    }
                };
                let Some(delivery) = delivery else { break };
                let delivery = delivery?;
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(work).await;
                    let written = ledger.append(std::slice::from_ref(delivery.message()));
                    delivery.finish(written.map_err(HandlerError::retryable));
                });
            }
        }
        None => {
            builder
                .build(handler_fn(move |msg: Message| {
                    let ledger = ledger.clone();
                    async move {
                        // The work the message stands for, so that some is in flight.
                        tokio::time::sleep(work).await;
                        ledger.append(std::slice::from_ref(&msg))?;
                        Ok(())
                    }
                }))?
                .run()
                .await?
        }
        Some(n) => {
            builder
                .batch_limits(BatchLimits::default().max_messages(n))
                .build_batch(batch_handler_fn(move |batch: Vec<Message>| {
                    let ledger = ledger.clone();
                    async move {
                        tokio::time::sleep(work).await;
                        ledger.append(&batch)?;
                        Ok(())
                    }
                }))?
                .run()
                .await?
        }
    }
    eprintln!("ledger: stopped; finished work committed");
    Ok(())
}

/// SIGINT or SIGTERM, as `Consumer::run` waits for them.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
