//! Reading a topic back: every record from the start of each partition up to the high
//! watermarks taken when reading begins, so that a read of a live topic still ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use sluicegate::config::ClientKind;
use sluicegate::security::ClientSecurity;

use crate::cluster;
use crate::settings::Connection;
use crate::workload::read_back::{read, Until};

/// How long one metadata or watermark look-up may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs client errors (as warnings, and keeps TLS and authentication failures), except the
/// end-of-partition events this reader asks for; gets OAUTHBEARER tokens.
struct Reader(ClientSecurity);

impl ClientContext for Reader {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            self.0.observe(error, reason);
        }
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.0.generate_oauth_token()
    }
}

impl ConsumerContext for Reader {}

/// Where a read stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadEnd {
    /// Records read (below the high watermarks taken at the start).
    pub records: u64,
    /// Offsets between the low and the high watermarks at the start: an upper bound of
    /// `records` (compaction and transaction markers leave gaps).
    pub span: u64,
}

/// Reads `topic` with a client connected as `connection` says (the group, offset and
/// end-of-partition settings are set here) and calls `each` for every record from each
/// partition's low watermark up to its high watermark as taken at the start. Fails if the
/// topic does not exist, if `each` fails, or if the end is not reached within `timeout`.
/// Blocking: call it from a thread of its own.
pub fn read_to_end(
    connection: &Connection,
    topic: &str,
    timeout: Duration,
    each: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<ReadEnd> {
    let deadline = Instant::now() + timeout;
    let mut config = connection.client_config(ClientKind::Consumer);
    config
        .set("group.id", cluster::unique_name("sluicegate-cli-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<Reader> = config
        .create_with_context(Reader(connection.security(&config)))
        .context("cannot create a Kafka consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .with_context(|| format!("cannot read the metadata of topic `{topic}`"))?;
    let partitions = match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().len(),
        _ => bail!("topic `{topic}` does not exist (or has no partitions)"),
    };
    // The end of each partition: the high watermark now.
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    let mut span = 0u64;
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, LOOKUP_TIMEOUT)
            .with_context(|| format!("cannot read the watermarks of {topic}/{p}"))?;
        if low < high {
            list.add_partition_offset(topic, p, Offset::Offset(low))?;
            span += (high - low) as u64;
            ends.insert(p, high);
        }
    }
    let mut end = ReadEnd { records: 0, span };
    if list.count() == 0 {
        return Ok(end);
    }
    consumer
        .assign(&list)
        .with_context(|| format!("cannot assign the partitions of `{topic}`"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    end.records = read(&consumer, topic, Until::Offsets(ends), left, each)? as u64;
    Ok(end)
}

/// The headers of a record as the library's [`sluicegate::Header`]s.
pub fn headers_of(message: &BorrowedMessage<'_>) -> Vec<sluicegate::Header> {
    message.headers().map_or_else(Vec::new, |headers| {
        headers
            .iter()
            .map(|h| sluicegate::Header {
                key: h.key.to_string(),
                value: h.value.map(|v| v.to_vec().into()),
            })
            .collect()
    })
}
