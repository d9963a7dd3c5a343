//! An exactly-once consume-transform-produce process: one output record per input record.
//!
//! ```text
//! cargo run --example transform -- --bootstrap localhost:9092 --group invoicing \
//!     --topic orders --output invoices --transactional-id invoicing-0 \
//!     [--commit-ms MS] [--work-ms MS] [--set KEY=VALUE]...
//! ```
//!
//! For every input it sends one record to the output topic, keyed by the input's value, with
//! the value `transformed <input value> by <pid>`, and awaits the broker's acknowledgement before
//! the input is finished ([`ConsumerBuilder::exactly_once`](sluicegate::ConsumerBuilder::exactly_once):
//! the send waits beside the input's offset). Every `--commit-ms` (default 100) one Kafka
//! transaction writes the outputs of the inputs finished since and commits their offsets.
//! `--work-ms` adds a pause before each send (the work the record stands for).
//!
//! Stop it with Ctrl-C or SIGTERM: it commits what finished and exits. Kill it with SIGKILL
//! instead, at any moment, and restart it with the same `--transactional-id`: the restart
//! fences the killed producer and aborts the transaction it left open, if any, and goes on
//! from the last committed offsets. A reader of the output topic with `isolation.level=read_committed`
//! sees each input's output exactly once; a `read_uncommitted` one also sees the outputs of the
//! aborted transactions. The exactly-once tests (`tests/exactly_once.rs`) kill it over and over
//! and check exactly that.

use std::time::Duration;

use anyhow::{bail, Context as _};
use sluicegate::{handler_fn, Consumer, Message, OutputRecord};

const USAGE: &str = "usage: transform --bootstrap HOST:PORT --group GROUP --topic TOPIC \
--output TOPIC --transactional-id ID [--commit-ms MS] [--work-ms MS] [--set KEY=VALUE]...";

/// The command line.
struct Options {
    bootstrap: String,
    group: String,
    topic: String,
    output: String,
    transactional_id: String,
    commit_interval: Duration,
    work: Duration,
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
            let value = args
                .next()
                .with_context(|| format!("--{name} needs a value\n{USAGE}"))?;
            given.push((name.to_string(), value));
        }
        let known = [
            "bootstrap",
            "group",
            "topic",
            "output",
            "transactional-id",
            "commit-ms",
            "work-ms",
            "set",
        ];
        if let Some((name, _)) = given.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            bail!("unknown option --{name}\n{USAGE}");
        }
        let get = |name: &str| {
            given
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let required =
            |name: &str| get(name).with_context(|| format!("--{name} is required\n{USAGE}"));
        let number = |name: &str, default: u64| -> anyhow::Result<u64> {
            get(name).map_or(Ok(default), |v| {
                v.parse()
                    .with_context(|| format!("--{name}: not a number: {v:?}"))
            })
        };
        Ok(Options {
            bootstrap: required("bootstrap")?,
            group: required("group")?,
            topic: required("topic")?,
            output: required("output")?,
            transactional_id: required("transactional-id")?,
            commit_interval: Duration::from_millis(number("commit-ms", 100)?.max(1)),
            work: Duration::from_millis(number("work-ms", 0)?),
            set: given
                .iter()
                .filter(|(n, _)| n == "set")
                .map(|(_, kv)| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let opts = Options::parse()?;
    let mut builder = Consumer::builder()
        .bootstrap_servers(&opts.bootstrap)
        .group_id(&opts.group)
        .topic(&opts.topic)
        .commit_interval(opts.commit_interval)
        .exactly_once(&opts.transactional_id);
    for (key, value) in &opts.set {
        builder = builder.set(key, value);
    }
    let output = builder.output()?;
    let pid = std::process::id();
    eprintln!(
        "transform: pid {pid}, {} -> {} on {} in group {}, transactional id {}, a transaction \
         every {:?}",
        opts.topic,
        opts.output,
        opts.bootstrap,
        opts.group,
        opts.transactional_id,
        opts.commit_interval
    );
    let (topic, work) = (opts.output.clone(), opts.work);
    builder
        .build(handler_fn(move |msg: Message| {
            let (output, topic) = (output.clone(), topic.clone());
            async move {
                tokio::time::sleep(work).await;
                let input = msg.payload().unwrap_or_default();
                let value = format!("transformed {} by {pid}", String::from_utf8_lossy(input));
                output
                    .send(OutputRecord::to(topic).key(input.to_vec()).payload(value))
                    .await?;
                Ok(())
            }
        }))?
        .run()
        .await?;
    eprintln!("transform: stopped");
    Ok(())
}
