//! `sluicegate consume TOPIC`: print a topic's records, as kcat -C and kafka-console-consumer
//! do. The partitions are assigned (no group join, so reading starts at once); with `--group`
//! the offsets of the records printed are committed for that group, otherwise nothing is.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use super::offsets::{chosen_partitions, offsets_for_time, resolve, Target};
use crate::cluster::{self, Client, LOOKUP_TIMEOUT};
use crate::record::borrowed_record_json;
use crate::settings::Connection;
use crate::ConsumeArgs;

/// How often the offsets printed are committed while reading (with `--group`); the last ones
/// are committed, synchronously, when the command ends.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the read may take to end, its final commit included, after SIGINT or SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long one poll waits before the stop signal is looked at again.
const POLL_SLICE: Duration = Duration::from_millis(200);

/// One `--from`: where reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Each partition's oldest record (its low watermark).
    Beginning,
    /// Each partition's end (its high watermark): only records written from now on.
    End,
    /// This offset in every partition.
    Offset(i64),
    /// This offset (the second) in this partition (the first).
    InPartition(i32, i64),
}

/// Parses one `--from`: `beginning`, `end`, `OFFSET` or `P:OFFSET`.
pub fn parse_start(s: &str) -> Result<Start, String> {
    let s = s.trim();
    let forms = "give beginning, end, an offset for every partition (like 1234) or \
                 PARTITION:OFFSET (like 0:1234)";
    let offset = |o: &str| match o.trim().parse::<i64>() {
        Ok(o) if o >= 0 => Ok(o),
        Ok(o) => Err(format!("offset {o} is negative; offsets start at 0")),
        Err(_) => Err(format!("`{s}` is not a place to start: {forms}")),
    };
    if s.eq_ignore_ascii_case("beginning") || s.eq_ignore_ascii_case("earliest") {
        return Ok(Start::Beginning);
    }
    if s.eq_ignore_ascii_case("end") || s.eq_ignore_ascii_case("latest") {
        return Ok(Start::End);
    }
    match s.split_once(':') {
        Some((p, o)) => match p.trim().parse::<i32>() {
            Ok(p) if p >= 0 => Ok(Start::InPartition(p, offset(o)?)),
            _ => Err(format!(
                "`{s}`: the partition before `:` must be a number from 0: {forms}"
            )),
        },
        None => offset(s).map(Start::Offset),
    }
}

/// One part of a `--format`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    Timestamp,
}

/// How `--format` prints a record as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

/// Parses `--format`: text with `{topic}`, `{partition}`, `{offset}`, `{key}`, `{value}`,
/// `{headers}` and `{timestamp}`, and the escapes `\n`, `\t` and `\\`.
pub fn parse_format(s: &str) -> Result<Format, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('\\') => text.push('\\'),
                other => {
                    let shown = other.map_or(String::new(), String::from);
                    return Err(format!(
                        "--format: unknown escape `\\{shown}` (\\n, \\t and \\\\ are known)"
                    ));
                }
            },
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let piece = match name.as_str() {
                    "topic" => Piece::Topic,
                    "partition" => Piece::Partition,
                    "offset" => Piece::Offset,
                    "key" => Piece::Key,
                    "value" => Piece::Value,
                    "headers" => Piece::Headers,
                    "timestamp" => Piece::Timestamp,
                    _ => {
                        return Err(format!(
                            "--format: unknown placeholder `{{{name}}}`; the known ones are \
                             {{topic}}, {{partition}}, {{offset}}, {{key}}, {{value}}, \
                             {{headers}} and {{timestamp}}"
                        ))
                    }
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Format(pieces))
}

impl Format {
    /// The record's value alone (the default).
    fn value_only() -> Self {
        Format(vec![Piece::Value])
    }

    /// Appends `msg` as this format says, then a newline, to `out`. Keys, values and header
    /// values go out as their bytes; an absent one as nothing.
    fn write(&self, msg: &BorrowedMessage<'_>, out: &mut Vec<u8>) {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Topic => out.extend_from_slice(msg.topic().as_bytes()),
                Piece::Partition => out.extend_from_slice(msg.partition().to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(msg.offset().to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(msg.key().unwrap_or_default()),
                Piece::Value => out.extend_from_slice(msg.payload().unwrap_or_default()),
                Piece::Headers => {
                    for (i, h) in msg.headers().iter().flat_map(|hs| hs.iter()).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(h.key.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(h.value.unwrap_or_default());
                    }
                }
                Piece::Timestamp => {
                    if let Some(ms) = msg.timestamp().to_millis() {
                        out.extend_from_slice(ms.to_string().as_bytes());
                    }
                }
            }
        }
        out.push(b'\n');
    }
}

/// Where each partition starts, from `--from` (a place for all and `P:OFFSET` overrides),
/// `--from-time` (`by_time`, the broker's answers), or the group's `committed` offsets; clamped
/// to the watermarks `marks`.
fn starts(
    args: &ConsumeArgs,
    partitions: &[i32],
    marks: &[(i64, i64)],
    committed: &[Option<i64>],
    by_time: &[Option<Offset>],
) -> Result<Vec<i64>> {
    let mut general = None;
    let mut given = BTreeMap::new();
    for start in &args.from {
        match *start {
            Start::InPartition(p, o) => {
                given.insert(p, o);
            }
            other if general.is_some_and(|g| g != other) => {
                bail!("--from: give one place for every partition, not several (and P:OFFSET for single partitions)")
            }
            other => general = Some(other),
        }
    }
    partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let target = match (given.get(p), general, args.from_time) {
                (Some(&o), _, _) => Target::Offset(o),
                (None, Some(Start::Beginning), _) => Target::Earliest,
                (None, Some(Start::Offset(o)), _) => Target::Offset(o),
                (None, _, Some(ms)) => Target::Time(ms),
                (None, Some(_), _) => Target::Latest,
                (None, None, None) => committed[i].map_or(Target::Latest, Target::Offset),
            };
            resolve(target, marks[i], by_time[i])
                .map(|(offset, _)| offset)
                .with_context(|| format!("cannot place {}/{p}", args.topic))
        })
        .collect()
}

/// Commits `next` (partition: next offset to consume) for the group of `client`.
fn commit(client: &Client, topic: &str, next: &BTreeMap<i32, i64>, mode: CommitMode) -> Result<()> {
    if next.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for (&p, &o) in next {
        list.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    client
        .commit(&list, mode)
        .context("cannot commit the offsets printed")
}

/// Reads and prints until the stop rule of `args` holds or `stop` is set; returns how many
/// records were printed. Blocking.
fn consume_blocking(args: &ConsumeArgs, stop: &AtomicBool) -> Result<u64> {
    let topic = args.topic.as_str();
    let connection = Connection::load(&args.connect, std::env::vars(), &args.properties)?;
    cluster::require_kafka(&connection, LOOKUP_TIMEOUT)?;
    let group = args.group.clone();
    let client = cluster::client(
        &connection,
        group.as_deref().unwrap_or("sluicegate-cli-consume"),
    )?;
    let Some(count) = cluster::partition_count(&client, topic)? else {
        bail!("topic `{topic}` does not exist (or has no partitions)");
    };
    let mut wanted = args.partitions.clone();
    if wanted.is_empty() {
        wanted = args
            .from
            .iter()
            .filter_map(|s| match s {
                Start::InPartition(p, _) => Some(*p),
                _ => None,
            })
            .collect();
    }
    let partitions = chosen_partitions(topic, count, &wanted)?;
    for start in &args.from {
        if let Start::InPartition(p, _) = start {
            if !partitions.contains(p) {
                bail!("--from {p}:...: partition {p} is not among those read (--partition)");
            }
        }
    }
    let marks = cluster::watermarks_of(&client, topic, &partitions, LOOKUP_TIMEOUT)?;
    let committed = match &group {
        Some(g) if args.from.is_empty() && args.from_time.is_none() => {
            cluster::committed_offsets_of(&client, g, topic, &partitions, LOOKUP_TIMEOUT)?
        }
        _ => vec![None; partitions.len()],
    };
    let by_time = match args.from_time {
        Some(ms) => offsets_for_time(&client, topic, &partitions, ms)?
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None; partitions.len()],
    };
    let starts = starts(args, &partitions, &marks, &committed, &by_time)?;

    // With --until-end, the partitions still to reach their end (the high watermark now).
    let mut open: BTreeMap<i32, i64> = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for (i, &p) in partitions.iter().enumerate() {
        list.add_partition_offset(topic, p, Offset::Offset(starts[i]))?;
        if starts[i] < marks[i].1 {
            open.insert(p, marks[i].1);
        }
    }
    client
        .assign(&list)
        .with_context(|| format!("cannot assign the partitions of `{topic}`"))?;

    let format = args.format.clone().unwrap_or_else(Format::value_only);
    let mut stdout = std::io::stdout().lock();
    let mut line = Vec::new();
    let mut printed = 0u64;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    let done = |printed: u64, open: &BTreeMap<i32, i64>| {
        args.count.is_some_and(|n| printed >= n) || (args.until_end && open.is_empty())
    };
    while !done(printed, &open) && !stop.load(Ordering::Relaxed) {
        if group.is_some() && uncommitted && last_commit.elapsed() >= COMMIT_INTERVAL {
            commit(&client, topic, &next, CommitMode::Async)?;
            (last_commit, uncommitted) = (Instant::now(), false);
        }
        let msg = match client.poll(POLL_SLICE) {
            None => continue,
            Some(Ok(msg)) => msg,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) => {
                tracing::warn!(topic, error = %e, "error while consuming");
                continue;
            }
        };
        let p = msg.partition();
        let end = args.until_end.then(|| open.get(&p).copied()).flatten();
        if end.is_some_and(|end| msg.offset() >= end) {
            open.remove(&p);
            continue;
        }
        line.clear();
        if args.json {
            serde_json::to_writer(&mut line, &borrowed_record_json(&msg))?;
            line.push(b'\n');
        } else {
            format.write(&msg, &mut line);
        }
        // A closed stdout (`| head`) ends the read like --count: what was printed is committed.
        if stdout
            .write_all(&line)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        printed += 1;
        next.insert(p, msg.offset() + 1);
        uncommitted = true;
        if end.is_some_and(|end| msg.offset() + 1 >= end) {
            open.remove(&p);
        }
    }
    if group.is_some() {
        commit(&client, topic, &next, CommitMode::Sync)?;
    }
    Ok(printed)
}

/// Runs `sluicegate consume`; reads until its stop rule holds, or SIGINT or SIGTERM. After the
/// signal, the read ends and the final commit gets [`STOP_GRACE`]: a broker that went away must
/// not keep the command alive for ever.
pub async fn run(args: ConsumeArgs) -> Result<bool> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut reading = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || consume_blocking(&args, &stop))
    };
    let printed = tokio::select! {
        done = &mut reading => done??,
        () = super::run::signal() => {
            stop.store(true, Ordering::Relaxed);
            match tokio::time::timeout(STOP_GRACE, reading).await {
                Ok(done) => done??,
                Err(_) => anyhow::bail!(
                    "stopped without committing the last offsets printed: the broker did not \
                     answer within {STOP_GRACE:?} of the stop signal (the group will print \
                     those records again)"
                ),
            }
        }
    };
    tracing::info!(printed, "consume ended");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse_as_keywords_offsets_or_partition_offsets() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("earliest"), Ok(Start::Beginning));
        assert_eq!(parse_start("END"), Ok(Start::End));
        assert_eq!(parse_start("12"), Ok(Start::Offset(12)));
        assert_eq!(parse_start("1:12"), Ok(Start::InPartition(1, 12)));
    }

    #[test]
    fn bad_starts_say_what_is_accepted() {
        let err = parse_start("yesterday").unwrap_err();
        assert!(
            err.contains("beginning") && err.contains("PARTITION:OFFSET"),
            "{err}"
        );
        assert!(parse_start("-3").unwrap_err().contains("negative"));
        assert!(parse_start("x:3")
            .unwrap_err()
            .contains("partition before `:`"));
        assert!(parse_start("0:x")
            .unwrap_err()
            .contains("not a place to start"));
    }

    #[test]
    fn formats_know_their_placeholders_and_escapes() {
        let f = parse_format("{partition}:{offset}\\t{key}={value}").unwrap();
        assert_eq!(
            f.0,
            vec![
                Piece::Partition,
                Piece::Text(":".into()),
                Piece::Offset,
                Piece::Text("\t".into()),
                Piece::Key,
                Piece::Text("=".into()),
                Piece::Value,
            ]
        );
        let err = parse_format("{size}").unwrap_err();
        assert!(
            err.contains("`{size}`") && err.contains("{headers}"),
            "{err}"
        );
        assert!(parse_format("\\x").unwrap_err().contains("unknown escape"));
    }
}
