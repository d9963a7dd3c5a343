//! Reading a topic back: the one loop behind the demo's and `dlq`'s read-backs and the
//! library tests' (`TestBroker::read_records`, `read_to_end`, `dead_letters`).
//!
//! The caller creates and assigns the consumer (its group, isolation level and security are
//! its own); [`read`] polls it until the read is over by the rule of [`Until`], hands each
//! record to a callback, and fails, naming what it got, if that takes longer than its limit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message as _;

/// When a read of a topic is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Until {
    /// Every assigned partition has reported its end (librdkafka's partition EOF, so the
    /// consumer needs `enable.partition.eof=true`): the last stable offset under
    /// `isolation.level=read_committed`, else the high watermark. Needs no count, but a
    /// topic written all the time may not end.
    End,
    /// Each partition has reached the offset given for it (the high watermarks taken when
    /// reading began, say), or its end as [`End`](Until::End) says, whichever comes first:
    /// ends even while the topic is written. Records at or after a partition's offset are
    /// not read. Partitions not listed are not waited for.
    Offsets(BTreeMap<i32, i64>),
    /// This many records have been read (for brokers that misreport their ends: tansu 0.6
    /// answers a wrong high watermark).
    Count(usize),
}

/// Polls `consumer`, assigned to partitions of `topic`, until `until` holds, and calls `each`
/// with every record read; returns how many records that was. Fails if `each` does, or if the
/// read is not over within `limit` (naming how far it got and the last error the client
/// reported). Client errors are logged (at `warn`) and reading goes on: librdkafka retries
/// what it can. Blocking.
pub fn read<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    until: Until,
    limit: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<usize> {
    let deadline = Instant::now() + limit;
    // The partitions still to reach their end, with the offset each stops below, if any.
    let mut open: BTreeMap<i32, Option<i64>> = match &until {
        Until::End => consumer
            .assignment()?
            .elements_for_topic(topic)
            .iter()
            .map(|e| (e.partition(), None))
            .collect(),
        Until::Offsets(ends) => ends
            .iter()
            .filter(|(_, end)| **end > 0)
            .map(|(p, end)| (*p, Some(*end)))
            .collect(),
        Until::Count(_) => BTreeMap::new(),
    };
    let count = match until {
        Until::Count(n) => Some(n),
        _ => None,
    };
    let mut read = 0;
    let mut last_error = None;
    while count.map_or(!open.is_empty(), |n| read < n) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            let waiting = match count {
                Some(n) => format!("{n} wanted"),
                None => format!("partitions {:?} not at their end", open.keys()),
            };
            bail!(
                "read {read} records of `{topic}` in {limit:?}, {waiting}; last client error: {}",
                last_error.map_or("none".into(), |e: KafkaError| e.to_string())
            );
        };
        let (partition, at_end) = match consumer.poll(left.min(Duration::from_millis(200))) {
            None => continue,
            Some(Ok(m)) => {
                let end = open.get(&m.partition()).copied().flatten();
                if end.is_some_and(|end| m.offset() >= end) {
                    (m.partition(), true)
                } else {
                    read += 1;
                    each(&m)?;
                    (m.partition(), end.is_some_and(|end| m.offset() + 1 >= end))
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => (p, true),
            Some(Err(e)) => {
                tracing::warn!(topic, error = %e, "error while reading back");
                last_error = Some(e);
                continue;
            }
        };
        if at_end {
            open.remove(&partition);
        }
    }
    Ok(read)
}
