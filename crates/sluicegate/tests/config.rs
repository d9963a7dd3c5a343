//! A consumer built from a YAML configuration (with environment overrides and a builder call
//! over it) consumes, commits, and dead-letters as the configuration says.

#[macro_use]
mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use sluicegate::config::ConsumerConfig;
use sluicegate::{handler_fn, ConsumerBuilder, HandlerError, Message};

use common::{committed_to_end, stop, unique, wait_status, Recorder, TestBroker};

const PHASE: Duration = Duration::from_secs(60);

on_both_brokers!(a_consumer_built_from_yaml_consumes_and_dead_letters);

async fn a_consumer_built_from_yaml_consumes_and_dead_letters(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("config");
    let group = unique("config-group");
    let (produced, end) = broker.fill_topic(&topic, 2, 50).await?;
    // Offset 7 of each partition always fails: after 2 attempts it goes to `<topic>.dlq`.
    let yaml = format!(
        "kafka:
  bootstrap_servers: wrong-host:1   # overridden by KAFKA_BOOTSTRAP_SERVERS
  group_id: {group}
  topics: [{topic}]
  ordering: partition
  retry: {{ max_attempts: 5, initial_backoff: 10ms, max_backoff: 20ms }}
  dead_letter: {{ enabled: true }}
  commit_interval: 100ms
  session_timeout: 6s
  heartbeat_interval: 500ms
  librdkafka:
    client.id: from-yaml
"
    );
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap()),
        ("KAFKA_MAX_RETRIES", "1"), // 2 attempts in all
    ];
    let config = ConsumerConfig::load_str(&yaml, env).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(config.retry.max_attempts == Some(2), "{config:?}");
    config
        .check_client()
        .map_err(|e| anyhow::anyhow!("librdkafka refuses the configuration: {e}"))?;

    let recorder = Recorder::default();
    let handle = ConsumerBuilder::from_config(&config)
        .max_in_flight(4) // code over file
        .build(handler_fn({
            let recorder = recorder.clone();
            move |msg: Message| {
                let poison = msg.offset() == 7;
                if !poison {
                    recorder.record(&msg);
                }
                std::future::ready(if poison {
                    Err(HandlerError::retryable("offset 7 always fails"))
                } else {
                    Ok(())
                })
            }
        }))?
        .spawn()?;
    let mut status = handle.status();
    recorder.wait_for(produced.len() - 2, PHASE).await?;
    wait_status(&mut status, PHASE, "commits at the log end", |s| {
        committed_to_end(s, &topic, &end)
    })
    .await?;
    stop(handle).await?;

    let dead = broker
        .read_records(&format!("{topic}.dlq"), 2, PHASE)
        .await
        .context("read the dead-letter topic")?;
    ensure!(dead.len() == 2, "dead letters: {dead:?}");
    Ok(())
}
