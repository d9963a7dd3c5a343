//! `sluicegate run`: a consumer configured by a file, delivering each message to an HTTP
//! service ([`http`]) or to a child process ([`exec`]), with the library's guarantees: the
//! library's configuration (`kafka:`, the `KAFKA_*` environment, `--set`), its retries,
//! dead-letter topic, circuit breaker, metrics, health endpoints, logs and graceful shutdown.

mod exec;
pub(crate) mod http;
mod reply;
pub mod sink;

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use sluicegate::config::{ConsumerConfig, Purpose};
use sluicegate::{Consumer, EmbeddedKafka, TopicPartition, Work};

use crate::RunArgs;
use exec::ExecSink;
use http::HttpSink;
use reply::Replies;
use sink::{RunFile, Sink};

/// Partitions of each topic `--embedded` creates.
const EMBEDDED_PARTITIONS: i32 = 2;

/// Runs the worker until SIGINT or SIGTERM (with `--embedded`: until its sample records are
/// committed).
pub async fn run(args: RunArgs) -> Result<bool> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file `{}`", path.display()))?;
    let file = RunFile::parse(&text).map_err(|e| anyhow!("`{}`: {e:#}", path.display()))?;
    // The broker lives as long as the process: clients of the consumer (the dead-letter
    // producer) may outlive `run` by a moment, and would log the broker's loss.
    let embedded: Option<&'static EmbeddedKafka> = match args.embedded {
        Some(_) => Some(Box::leak(Box::new(
            EmbeddedKafka::start(1).context("cannot start the embedded broker")?,
        ))),
        None => None,
    };
    let mut overrides = args.set.clone();
    let bootstrap = embedded
        .as_ref()
        .map(|k| k.bootstrap_servers().to_string())
        .or_else(|| args.bootstrap.clone());
    if let Some(bootstrap) = bootstrap {
        overrides.push(("bootstrap_servers".into(), bootstrap));
    }
    let loaded = ConsumerConfig::resolve_for(
        Purpose::Consumer,
        Some(&file.kafka_yaml),
        std::env::vars(),
        &overrides,
    )
    .map_err(|errors| anyhow!("invalid configuration in `{}`:\n{errors}", path.display()))?;
    for w in &loaded.warnings {
        tracing::warn!("configuration: {w}");
    }
    let config = loaded.config;
    // Batches only when asked for: the batch section has defaults either way.
    let batched = loaded
        .sources
        .0
        .keys()
        .any(|k| k.starts_with("kafka.batch."));
    let mut builder = Consumer::builder().config(&config);
    for (key, value) in &args.properties {
        builder = builder.set(key, value);
    }
    if let Some(breaker) = file.breaker {
        builder = builder.circuit_breaker(breaker);
    }
    if let Some(id) = &file.transactional_id {
        builder = builder.exactly_once(id.clone());
    }
    let replies = match file.reply_to {
        Some(topic) if batched => bail!(
            "sink.reply_to `{topic}`: replies are written per message; remove the kafka.batch \
             settings or reply_to"
        ),
        Some(topic) => Some(Replies::new(builder.output()?, topic)),
        None => None,
    };
    let expected = match (embedded, args.embedded) {
        (Some(kafka), Some(n)) => Some(fill(kafka, &config.topics, n)?),
        _ => None,
    };
    match file.sink {
        Sink::Http(settings) => {
            let sink = HttpSink::new(&settings, replies)?;
            tracing::info!(url = %settings.url, batched, "delivering to an HTTP service");
            if batched {
                serve(builder.build_batch(sink)?, expected).await
            } else {
                serve(builder.build(sink)?, expected).await
            }
        }
        Sink::Exec(settings) => {
            if batched {
                bail!(
                    "kafka.batch: the exec sink sends one message per request; remove the \
                     batch settings (they are for the http sink)"
                );
            }
            let sink = ExecSink::start(&settings, replies)?;
            let served = match builder.build(sink.clone()) {
                Ok(consumer) => serve(consumer, expected).await,
                Err(e) => Err(e.into()),
            };
            sink.stop().await;
            served
        }
    }
}

/// Creates `topics` on the embedded broker and writes `n` sample JSON records to each, taking
/// turns over its partitions; returns the log end of every partition written.
fn fill(kafka: &EmbeddedKafka, topics: &[String], n: u64) -> Result<BTreeMap<TopicPartition, i64>> {
    let mut ends = BTreeMap::new();
    for topic in topics {
        kafka.create_topic(topic, EMBEDDED_PARTITIONS)?;
        for partition in 0..EMBEDDED_PARTITIONS {
            let records: Vec<(Option<String>, Option<String>)> = (0..n)
                .filter(|i| i % EMBEDDED_PARTITIONS as u64 == partition as u64)
                .map(|i| {
                    let key = format!("user-{}", i % 3);
                    let value = format!(r#"{{"n":{i},"event":"signup","user":"{key}"}}"#);
                    (Some(key), Some(value))
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            let placed = kafka.produce(topic, Some(partition), records)?;
            if let Some((_, last)) = placed.last() {
                ends.insert(TopicPartition::new(topic.clone(), partition), last + 1);
            }
        }
    }
    eprintln!(
        "embedded broker: wrote {n} sample records to each of {}",
        topics.join(", ")
    );
    Ok(ends)
}

/// Runs `consumer`: until a signal, as the library's `run` does; with `expected`, until every
/// one of those offsets is committed (or a signal), then shuts it down the same way.
async fn serve<W: Work>(
    consumer: Consumer<W>,
    expected: Option<BTreeMap<TopicPartition, i64>>,
) -> Result<bool> {
    let Some(expected) = expected else {
        consumer.run().await?;
        return Ok(true);
    };
    let handle = consumer.spawn()?;
    let mut status = handle.status();
    let done = |s: &sluicegate::ConsumerStatus| {
        s.stopped
            || expected
                .iter()
                .all(|(tp, end)| s.committed.get(tp).is_some_and(|c| c >= end))
    };
    let finished = tokio::select! {
        s = status.wait_for(done) => s.ok().is_some_and(|s| !s.stopped),
        _ = signal() => false,
    };
    handle.shutdown();
    handle.wait().await?;
    if finished {
        let shown: Vec<String> = expected
            .iter()
            .map(|(tp, end)| format!("{}/{}: {end}", tp.topic, tp.partition))
            .collect();
        println!(
            "every sample record delivered; committed offsets {}",
            shown.join(", ")
        );
    }
    Ok(finished)
}

/// SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
