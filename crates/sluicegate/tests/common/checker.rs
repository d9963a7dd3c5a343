//! The reliability checker: what a scenario wrote, what its handlers finished, what went to
//! the dead-letter topic and what the group committed, compared record by record.
//!
//! Every scenario record carries a unique id and a per-key sequence number in its payload
//! (`r:ID:KEY:SEQ`, see `records::payload`); records are identified by partition and offset, dead
//! letters by the original partition and offset in their diagnosis headers. The checker counts:
//! - **lost**: written, never finished and not dead-lettered (must be 0);
//! - **duplicates**: finishes beyond a record's first (bounded by what was in flight or not yet
//!   committed at each crash or rebalance: reported, and bounded by each scenario);
//! - **order violations**: a record finished for the first time after a later record of its
//!   key (key order) or partition (partition order) had finished; a re-delivery is a duplicate,
//!   never a violation (must be 0 in the ordered modes);
//! - **committed past unfinished**: records below a partition's committed offset that were
//!   never finished nor dead-lettered (must be 0);
//! - **recovery**: for each fault, from its end to the first record finished after it (none if
//!   nothing was finished after it: the stream had drained; a record never finished is lost).

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use super::ledger::{PartitionLedger, Totals};
use super::records::parse;
use super::{Handled, Produced};

/// Which order the checker holds a scenario to: within each partition in offset order, within
/// each key in sequence order, or none.
pub use super::ledger::OrderCheck;

/// How a scenario's consumer runs: an ordering mode, or a batch handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Partition,
    Key,
    Unordered,
    /// A batch handler, in partition order.
    Batch,
}

impl Mode {
    /// Every mode, for scenarios that run in each.
    pub const ALL: [Mode; 4] = [Mode::Partition, Mode::Key, Mode::Unordered, Mode::Batch];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Partition => "partition",
            Mode::Key => "key",
            Mode::Unordered => "unordered",
            Mode::Batch => "batch",
        }
    }

    /// The runtime's ordering for this mode.
    pub fn ordering(self) -> sluicegate::Ordering {
        match self {
            Mode::Partition | Mode::Batch => sluicegate::Ordering::Partition,
            Mode::Key => sluicegate::Ordering::Key,
            Mode::Unordered => sluicegate::Ordering::Unordered,
        }
    }

    /// The order the checker holds this mode to.
    pub fn order(self) -> OrderCheck {
        match self {
            Mode::Partition | Mode::Batch => OrderCheck::Partition,
            Mode::Key => OrderCheck::Key,
            Mode::Unordered => OrderCheck::None,
        }
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub written: usize,
    /// Distinct records finished.
    pub finished: usize,
    pub dead_lettered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub order_violations: usize,
    pub committed_past_unfinished: usize,
    /// From the end of each fault to the first record finished after it (`None`: none was,
    /// the stream having drained).
    pub recovery: Vec<Option<Duration>>,
    /// A few lost records, as `partition@offset`, for the failure message.
    pub lost_examples: Vec<String>,
}

impl Verdict {
    /// The longest recovery, over the faults with something left to finish after them.
    pub fn worst_recovery(&self) -> Option<Duration> {
        self.recovery.iter().flatten().max().copied()
    }

    /// Fails unless nothing was lost, nothing committed past unfinished work, order held (if
    /// checked), and duplicates stayed within `max_duplicates`.
    pub fn assert_sound(&self, max_duplicates: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.lost == 0, "LOST {} records: {self}", self.lost);
        anyhow::ensure!(
            self.committed_past_unfinished == 0,
            "committed past {} unfinished records: {self}",
            self.committed_past_unfinished
        );
        anyhow::ensure!(
            self.order_violations == 0,
            "{} order violations: {self}",
            self.order_violations
        );
        anyhow::ensure!(
            self.duplicates <= max_duplicates,
            "{} duplicates, more than the {max_duplicates} the in-flight and uncommitted window \
             allows: {self}",
            self.duplicates
        );
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "written {}, finished {}, dead-lettered {}, lost {}, duplicates {}, order violations \
             {}, committed past unfinished {}, worst recovery {}",
            self.written,
            self.finished,
            self.dead_lettered,
            self.lost,
            self.duplicates,
            self.order_violations,
            self.committed_past_unfinished,
            match self.worst_recovery() {
                Some(d) => format!("{:.2} s", d.as_secs_f64()),
                None => "-".into(),
            }
        )?;
        if !self.lost_examples.is_empty() {
            write!(f, " (lost e.g. {})", self.lost_examples.join(", "))?;
        }
        Ok(())
    }
}

/// What a scenario produced and observed, for [`check`].
pub struct Evidence<'a> {
    /// Every record written, with where it landed.
    pub written: &'a [Produced],
    /// Every handler finish, in the order they happened.
    pub finished: &'a [Handled],
    /// Where the records read back from the dead-letter topic came from: (partition, offset),
    /// from their diagnosis headers.
    pub dead_lettered: &'a BTreeSet<(i32, i64)>,
    /// The group's committed offsets per partition, read back from the broker.
    pub committed: &'a BTreeMap<i32, i64>,
    /// When each fault ended.
    pub faults_ended: &'a [Instant],
}

/// Compares the evidence record by record.
pub fn check(e: &Evidence<'_>, order: OrderCheck) -> Verdict {
    let mut v = Verdict {
        written: e.written.len(),
        dead_lettered: e.dead_lettered.len(),
        ..Verdict::default()
    };
    // A record's place is its partition and offset; in key order, a key's records are ranked
    // by the sequence numbers they were written with.
    let mut ledgers: HashMap<i32, PartitionLedger> = HashMap::new();
    for h in e.finished {
        let key_rank = parse(&h.payload).map(|(_, key, seq)| (key.as_bytes(), seq as i64));
        ledgers
            .entry(h.partition)
            .or_default()
            .record_ranked(order, h.offset, key_rank);
    }
    let totals = Totals::of(ledgers.values());
    v.finished = totals.distinct as usize;
    v.duplicates = totals.duplicates() as usize;
    v.order_violations = totals.order_violations as usize;
    for w in e.written {
        let place = (w.partition, w.offset);
        let finished = ledgers
            .get(&w.partition)
            .is_some_and(|l| l.finished(w.offset));
        if finished || e.dead_lettered.contains(&place) {
            continue;
        }
        v.lost += 1;
        if v.lost_examples.len() < 5 {
            v.lost_examples
                .push(format!("{}@{}", w.partition, w.offset));
        }
        if e.committed.get(&w.partition).is_some_and(|c| w.offset < *c) {
            v.committed_past_unfinished += 1;
        }
    }
    v.recovery = e
        .faults_ended
        .iter()
        .map(|end| {
            e.finished
                .iter()
                .filter(|h| h.at >= *end)
                .map(|h| h.at - *end)
                .min()
        })
        .collect();
    v
}

/// A wall-clock reading paired with an [`Instant`], to place times another process wrote as
/// Unix microseconds (a ledger's, see [`parse_ledger`]) on this process's `Instant` line.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    instant: Instant,
    unix_micros: u64,
}

impl WallClock {
    pub fn now() -> WallClock {
        let unix_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        WallClock {
            instant: Instant::now(),
            unix_micros,
        }
    }

    /// The `Instant` of a Unix time in microseconds (clamped to this reading for earlier ones).
    pub fn instant(&self, unix_micros: u64) -> Instant {
        self.instant + Duration::from_micros(unix_micros.saturating_sub(self.unix_micros))
    }

    /// The Unix time in microseconds of `at` (clamped to this reading for earlier instants).
    pub fn unix_micros(&self, at: Instant) -> u64 {
        self.unix_micros + at.saturating_duration_since(self.instant).as_micros() as u64
    }
}

/// One line of a ledger written by `examples/ledger.rs`: a message its handler finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerLine {
    pub partition: i32,
    pub offset: i64,
    /// When the handler finished it, in Unix microseconds.
    pub finished_at: u64,
    pub payload: String,
}

/// Parses ledger lines, `PARTITION OFFSET FINISHED_AT_UNIX_MICROS PAYLOAD` (payload with `\`
/// and newlines escaped as `\\` and `\n`). Every line must be complete: a torn or garbled line
/// is an error naming it (a line is written with one `write` before its handler returns, so
/// even a SIGKILL must not leave one).
pub fn parse_ledger(text: &str) -> anyhow::Result<Vec<LedgerLine>> {
    let Some(body) = text.strip_suffix('\n').or(text.is_empty().then_some("")) else {
        anyhow::bail!(
            "the ledger ends in a torn line: {:?}",
            text.rsplit('\n').next().unwrap_or_default()
        );
    };
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split('\n')
        .enumerate()
        .map(|(i, line)| {
            parse_ledger_line(line)
                .ok_or_else(|| anyhow::anyhow!("ledger line {}: garbled: {line:?}", i + 1))
        })
        .collect()
}

fn parse_ledger_line(line: &str) -> Option<LedgerLine> {
    let mut fields = line.splitn(4, ' ');
    let partition = fields.next()?.parse().ok()?;
    let offset = fields.next()?.parse().ok()?;
    let finished_at = fields.next()?.parse().ok()?;
    let escaped = fields.next()?;
    let mut payload = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => payload.push('\n'),
                '\\' => payload.push('\\'),
                _ => return None,
            },
            c => payload.push(c),
        }
    }
    Some(LedgerLine {
        partition,
        offset,
        finished_at,
        payload,
    })
}

/// Ledger lines as handler finishes for [`Evidence::finished`], in ledger order (the order
/// they were written), with their times placed by `clock`.
pub fn ledger_handled(lines: &[LedgerLine], clock: &WallClock) -> Vec<Handled> {
    lines
        .iter()
        .map(|l| Handled {
            partition: l.partition,
            offset: l.offset,
            payload: l.payload.clone(),
            at: clock.instant(l.finished_at),
        })
        .collect()
}
