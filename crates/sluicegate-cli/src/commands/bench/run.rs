//! `sluicegate bench run`: what `sluicegate run`'s HTTP sink costs against a hand-written
//! handler making the same call. One embedded broker, one backlog, one local HTTP service that
//! answers 200 at once; each round reads the whole backlog twice, in turn, with fresh groups:
//! with the library and a handler that POSTs the value with a pooled `reqwest` client (the
//! baseline), and with `run`'s HTTP sink (the handler `run` builds from its file: the record's
//! headers, status rules, the same client). Both through the same consumer settings, both
//! timed per request by the same wrapper; reported as msg/s and p99 per request, and as the
//! ratios to the baseline, min/median/max over the rounds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use sluicegate::{
    handler_fn, Consumer, EmbeddedKafka, Handler, HandlerError, HandlerResult, Message,
    TopicPartition,
};

use crate::commands::run::http::HttpSink;
use crate::commands::run::sink::{RunFile, Sink};
use crate::BenchRunArgs;

/// How long one pass may take before the bench gives up.
const PASS_LIMIT: Duration = Duration::from_secs(600);

/// Runs the rounds and prints the table; `false` if a pass did not finish.
pub async fn run(args: BenchRunArgs) -> Result<bool> {
    let kafka = EmbeddedKafka::start(1).context("cannot start the embedded broker")?;
    let topic = "bench-run";
    kafka.create_topic(topic, args.partitions)?;
    let ends = fill(&kafka, topic, args.messages, args.partitions)?;
    let service = serve().await?;
    let url = format!("http://{service}/events");
    println!(
        "{} messages of ~100 B over {} partitions, ordering {}, max in flight {}; HTTP service \
         on {service} answering 200 at once; {} rounds",
        args.messages,
        args.partitions,
        format!("{:?}", args.ordering).to_lowercase(),
        args.max_in_flight,
        args.rounds
    );
    println!("round | library msg/s | run msg/s | ratio | library p99 | run p99 | p99 ratio");
    let mut ratios = Vec::new();
    let mut p99_ratios = Vec::new();
    for round in 1..=args.rounds {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let target = url.clone();
        let library = handler_fn(move |msg: Message| {
            let (client, target) = (client.clone(), target.clone());
            async move {
                let body = msg.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let answer = client
                    .post(target)
                    .body(body)
                    .send()
                    .await
                    .map_err(HandlerError::retryable)?;
                match answer.status().is_success() {
                    true => Ok(()),
                    false => Err(HandlerError::retryable(answer.status().to_string())),
                }
            }
        });
        let base = pass(&kafka, &args, topic, &ends, library).await?;
        let file = RunFile::parse(&format!(
            "sink:\n  http:\n    url: {url}\n    timeout: 30s\n"
        ))?;
        let Sink::Http(settings) = file.sink else {
            bail!("the bench's run file names an HTTP sink");
        };
        let sink = HttpSink::new(&settings, None)?;
        let worker = pass(&kafka, &args, topic, &ends, sink).await?;
        let ratio = worker.rate / base.rate;
        let p99_ratio = worker.p99.as_secs_f64() / base.p99.as_secs_f64();
        println!(
            "{round} | {:.0} | {:.0} | {ratio:.2} | {:.2} ms | {:.2} ms | {p99_ratio:.2}",
            base.rate,
            worker.rate,
            ms(base.p99),
            ms(worker.p99)
        );
        ratios.push(ratio);
        p99_ratios.push(p99_ratio);
    }
    let (min, median, max) = spread(&mut ratios);
    println!("run / library msg/s: min {min:.2}, median {median:.2}, max {max:.2}");
    let (min, median, max) = spread(&mut p99_ratios);
    println!("run / library p99 per request: min {min:.2}, median {median:.2}, max {max:.2}");
    Ok(true)
}

/// What one pass measured.
struct Pass {
    rate: f64,
    p99: Duration,
}

/// Reads the backlog with `handler` in a group of its own, until every partition's offset is
/// committed at its end.
async fn pass<H: Handler>(
    kafka: &EmbeddedKafka,
    args: &BenchRunArgs,
    topic: &str,
    ends: &[(TopicPartition, i64)],
    handler: H,
) -> Result<Pass> {
    let times = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let group = crate::cluster::unique_name("bench-run");
    let started = Instant::now();
    let consumer = Consumer::builder()
        .bootstrap_servers(kafka.bootstrap_servers())
        .group_id(group)
        .topics([topic])
        .ordering(args.ordering.into())
        .max_in_flight(args.max_in_flight as usize)
        .build(Timed {
            inner: handler,
            times: times.clone(),
        })?
        .spawn()?;
    let mut status = consumer.status();
    let done = tokio::time::timeout(
        PASS_LIMIT,
        status.wait_for(|s| {
            ends.iter()
                .all(|(tp, end)| s.committed.get(tp).is_some_and(|c| c >= end))
        }),
    )
    .await;
    let took = started.elapsed();
    consumer.shutdown();
    consumer.wait().await?;
    if !matches!(done, Ok(Ok(_))) {
        bail!("a pass did not commit the backlog within {PASS_LIMIT:?}");
    }
    let messages: i64 = ends.iter().map(|(_, end)| end).sum();
    let p99 = Duration::from_micros(times.lock().expect("not poisoned").value_at_quantile(0.99));
    Ok(Pass {
        rate: messages as f64 / took.as_secs_f64(),
        p99,
    })
}

/// Times each call of the handler it wraps.
struct Timed<H> {
    inner: H,
    times: Arc<Mutex<Histogram<u64>>>,
}

impl<H: Handler> Handler for Timed<H> {
    async fn handle(&self, message: Message) -> HandlerResult {
        let started = Instant::now();
        let result = self.inner.handle(message).await;
        let micros = started.elapsed().as_micros().max(1) as u64;
        let _ = self.times.lock().expect("not poisoned").record(micros);
        result
    }
}

/// Writes `messages` records over `partitions`; returns each partition's log end.
fn fill(
    kafka: &EmbeddedKafka,
    topic: &str,
    messages: u64,
    partitions: i32,
) -> Result<Vec<(TopicPartition, i64)>> {
    let mut ends = Vec::new();
    for partition in 0..partitions {
        let records: Vec<(Option<String>, Option<String>)> = (0..messages)
            .filter(|i| i % partitions as u64 == partition as u64)
            .map(|i| {
                let key = format!("key-{}", i % 1_000);
                let value = format!(r#"{{"n":{i:>10},"key":"{key:<10}","pad":"{:>48}"}}"#, "");
                (Some(key), Some(value))
            })
            .collect();
        if let Some((_, last)) = kafka.produce(topic, Some(partition), records)?.last() {
            ends.push((TopicPartition::new(topic, partition), last + 1));
        }
    }
    Ok(ends)
}

/// A local HTTP service that answers every request with 200 and no body.
async fn serve() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Min, median and max of `values`.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    match values {
        [] => (f64::NAN, f64::NAN, f64::NAN),
        _ => (
            values[0],
            values[values.len() / 2],
            values[values.len() - 1],
        ),
    }
}
