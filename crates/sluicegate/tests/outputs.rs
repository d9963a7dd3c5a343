//! The output producer in at-least-once mode: an input is committed only after the broker has
//! acknowledged its outputs. Needs the embedded broker's fault injection.

// This file uses the embedded broker only, not the two-broker macro.
#[allow(unused_macros)]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::ensure;
use rdkafka::Message as _;
use sluicegate::policy::{Backoff, RetryPolicy};
use sluicegate::{handler_fn, ApiKey, ErrorCode, Message, OutputRecord};
use tokio::sync::watch;

use common::{tp, unique, wait_status, TestBroker};

const PHASE: Duration = Duration::from_secs(60);

/// Every produce is refused for a while: the handler's sends fail and are retried, and nothing
/// of the input is committed meanwhile. Once produces are accepted again, every input has its
/// output and the group commits to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_committed_only_after_their_outputs_are_acknowledged() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let kafka = broker.embedded_kafka().expect("embedded");
    let (input, output_topic) = (unique("out-in"), unique("out-out"));
    let (produced, end) = broker.fill_topic(&input, 1, 200).await?;
    broker.create_topic(&output_topic, 1).await?;
    kafka.request_errors(
        ApiKey::Produce,
        &[ErrorCode::TOPIC_AUTHORIZATION_FAILED; 10_000],
    )?;

    let (failures_tx, mut failures) = watch::channel(0usize);
    let mut builder = broker
        .consumer(&unique("out-group"), &input)
        .commit_interval(Duration::from_millis(50))
        .retry_policy(RetryPolicy::default().with_backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            jitter: 0.0,
        }));
    let output = builder.output()?;
    let topic = output_topic.clone();
    let handle = builder
        .build(handler_fn(move |msg: Message| {
            let (output, topic, failures) = (output.clone(), topic.clone(), failures_tx.clone());
            async move {
                let key = msg.payload().unwrap_or_default().to_vec();
                let sent = output
                    .send(OutputRecord::to(topic).key(key.clone()).payload(key))
                    .await;
                if sent.is_err() {
                    failures.send_modify(|n| *n += 1);
                }
                sent.map(|_| ())
            }
        }))?
        .spawn()?;
    let mut status = handle.status();

    tokio::time::timeout(PHASE, failures.wait_for(|n| *n >= 5)).await??;
    // Several commit intervals have passed with the first input's output refused.
    let s = status.current();
    ensure!(
        s.committed.get(&tp(&input, 0)).is_none_or(|c| *c == 0),
        "committed {:?} while no output was acknowledged",
        s.committed
    );

    kafka.clear_request_errors(ApiKey::Produce)?;
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        s.committed.get(&tp(&input, 0)) == end.get(&0)
    })
    .await?;
    handle.shutdown();
    tokio::time::timeout(PHASE, handle.wait()).await??;

    let outputs = broker
        .read_records(&output_topic, produced.len(), PHASE)
        .await?;
    let keys: BTreeSet<String> = outputs
        .iter()
        .map(|m| String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
        .collect();
    let inputs: BTreeSet<String> = produced.iter().map(|p| p.payload.clone()).collect();
    ensure!(
        keys == inputs,
        "{} distinct outputs for {} inputs",
        keys.len(),
        inputs.len()
    );
    Ok(())
}
