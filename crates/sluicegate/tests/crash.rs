//! Crashes: the consumer process killed with SIGKILL at random points and restarted, many
//! times (issue 9, scenario 6), in every ordering mode and in batch mode (scenario 11).
//!
//! The consumer is `examples/ledger.rs`, run as a child process: for every message it appends
//! a line `PARTITION OFFSET FINISHED_AT PAYLOAD` to a ledger file before its handler returns,
//! so the ledger is the record of finished work that survives a SIGKILL. Each run produces a
//! slice of the records, starts the consumer, waits until it finishes something, kills it at a
//! random moment 0.2 to 1.5 s later, and starts the next; the last one is left to finish every
//! record and is stopped with SIGTERM. The reliability checker then compares, record by
//! record, what was written with the ledger and the group's committed offsets:
//! - nothing lost, nothing committed past unfinished work, order kept (partition and key
//!   modes), and everything committed after the graceful stop;
//! - duplicates only where a crash explains them: every record handled again was last finished
//!   by a killed process less than [`UNCOMMITTED_WINDOW`] before its kill (work finished but
//!   not yet committed), never twice by one process; and their number is at most the finishes
//!   in that window before each kill (see [`duplicate_bound`]);
//! - recovery: from each restart to the first record finished after it.
//!
//! Short by default (5 kills, 2,000 records per run); `SLUICEGATE_LONG=1` for 50 kills and
//! 50,000 records. The ledger example is built on first use with `cargo build --example ledger`
//! (or give one with `SLUICEGATE_LEDGER_BIN`). A failed run leaves its ledger and the
//! consumer's log under `target/tmp/crash-*`.

#[allow(unused_macros)] // on_both_brokers!: these tests run their modes at once instead.
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rand::Rng as _;

use common::checker::{self, Evidence, LedgerLine, Mode, WallClock};
use common::process::{example_binary, tail, ExampleProcess};
use common::{unique, Kind, Produced, TestBroker};

const PARTITIONS: i32 = 4;
const KEYS: u64 = 64;
/// The consumer's commit interval.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long before a kill a record may have been finished and still be handled again after the
/// restart: one commit interval for the commit timer, plus a synchronous commit's round trip
/// and scheduling delays on a loaded machine.
const UNCOMMITTED_WINDOW: Duration = Duration::from_millis(800);
/// The handler calls the key and unordered modes may run at once.
const IN_FLIGHT: u64 = 16;
/// The largest batch in batch mode.
const BATCH: u64 = 25;
/// A kill comes this long (ms, at random) after the consumer finished its first record.
const KILL_DELAY_MS: std::ops::Range<u64> = 200..1_500;
/// Bound on one wait for the consumer (to start and finish a first record, to exit).
const PHASE: Duration = Duration::from_secs(60);

/// Both tests run their modes at once, each mode with a broker, topic, group and consumer
/// process of its own: every restart waits for the killed member's session to run out (the
/// mock cluster takes about twice `session.timeout.ms` to hand the partitions over), so one
/// mode after another would take minutes.
mod killed_and_restarted {
    use super::*;

    /// Every ordering mode, and batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() -> anyhow::Result<()> {
        let modes = Mode::ALL;
        let mut brokers = Vec::new();
        for _ in modes {
            brokers.push(TestBroker::embedded()?);
        }
        every_mode(brokers.iter().zip(modes)).await
    }

    /// Every ordering mode, and batches, on the one Apache Kafka of this test binary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka() -> anyhow::Result<()> {
        let broker = TestBroker::kafka()?;
        every_mode(Mode::ALL.into_iter().map(|mode| (&broker, mode))).await
    }

    /// Partition order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tansu() -> anyhow::Result<()> {
        match TestBroker::tansu()? {
            Some(broker) => every_mode([(&broker, Mode::Partition)]).await,
            None => Ok(()),
        }
    }
}

/// The same with the consumer taking its messages as a stream (`ConsumerBuilder::messages`,
/// the ledger example's `--stream`) and running its own loop, in partition and key order.
mod stream_killed_and_restarted {
    use super::*;

    const MODES: [Mode; 2] = [Mode::Partition, Mode::Key];

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() -> anyhow::Result<()> {
        let mut brokers = Vec::new();
        for _ in MODES {
            brokers.push(TestBroker::embedded()?);
        }
        every_mode_by(Api::Stream, brokers.iter().zip(MODES)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka() -> anyhow::Result<()> {
        let broker = TestBroker::kafka()?;
        every_mode_by(Api::Stream, MODES.into_iter().map(|mode| (&broker, mode))).await
    }
}

/// How the consumer takes its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// A handler given to the consumer.
    Handler,
    /// A stream of deliveries, finished by the program's own loop.
    Stream,
}

/// Runs the scenario in each mode, at once; fails naming every mode that failed.
async fn every_mode<'a>(
    runs: impl IntoIterator<Item = (&'a TestBroker, Mode)>,
) -> anyhow::Result<()> {
    every_mode_by(Api::Handler, runs).await
}

/// [`every_mode`], the consumer taking its messages by `api`.
async fn every_mode_by<'a>(
    api: Api,
    runs: impl IntoIterator<Item = (&'a TestBroker, Mode)>,
) -> anyhow::Result<()> {
    let bin = ledger_binary()?;
    let runs: Vec<_> = runs.into_iter().collect();
    let results = futures::future::join_all(
        runs.iter()
            .map(|(broker, mode)| crash_restart(broker, *mode, api, &bin)),
    )
    .await;
    let failures: Vec<String> = runs
        .iter()
        .zip(results)
        .filter_map(|((_, mode), r)| r.err().map(|e| format!("{} mode: {e:#}", mode.name())))
        .collect();
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// The ledger consumer's flags, and what each mode lets it hold at once.
impl Mode {
    fn args(self) -> Vec<String> {
        let (ordering, batch) = match self {
            Mode::Partition => ("partition", None),
            Mode::Key => ("key", None),
            Mode::Unordered => ("unordered", None),
            Mode::Batch => ("partition", Some(BATCH)),
        };
        let in_flight = match self {
            // Messages, not batches: room for a full batch of each partition.
            Mode::Batch => PARTITIONS as u64 * BATCH,
            _ => IN_FLIGHT,
        };
        let mut args = vec![
            "--ordering".into(),
            ordering.into(),
            "--max-in-flight".into(),
            in_flight.to_string(),
        ];
        if let Some(n) = batch {
            args.extend(["--batch".into(), n.to_string()]);
        }
        args
    }

    /// Messages the consumer can have in its handlers at once.
    fn parallel(self) -> u64 {
        match self {
            Mode::Partition => PARTITIONS as u64,
            Mode::Key | Mode::Unordered => IN_FLIGHT,
            Mode::Batch => PARTITIONS as u64 * BATCH,
        }
    }
}

/// Kills per run and records written over them.
fn scale() -> (usize, u64) {
    match std::env::var("SLUICEGATE_LONG").as_deref() {
        Ok("1") => (50, 50_000),
        _ => (5, 2_000),
    }
}

async fn crash_restart(
    broker: &TestBroker,
    mode: Mode,
    api: Api,
    bin: &Path,
) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("crash"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let result = scenario(broker, mode, api, bin, &dir).await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("ledger and consumer log kept in {}", dir.display()),
    }
    result
}

async fn scenario(
    broker: &TestBroker,
    mode: Mode,
    api: Api,
    bin: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let (kills, records) = scale();
    let topic = unique("crash");
    let group = unique("crash-group");
    broker.create_topic(&topic, PARTITIONS).await?;
    let ledger = dir.join("ledger");
    let log = dir.join("consumer.log");
    File::create(&ledger).context("create the ledger")?;

    // Each run gets a slice of the records, sized so that the consumer needs about as long as
    // the average wait before a kill (0.85 s) to finish it: a kill finds work in flight and
    // work finished but not yet committed, and each run has new work to start on.
    let slice = records.div_ceil(kills as u64 + 1);
    let rate = slice as f64 / 0.85;
    let work_ms = (mode.parallel() as f64 * 1_000.0 / rate).clamp(1.0, 500.0) as u64;
    let mut args: Vec<String> = [
        "--bootstrap",
        broker.bootstrap(),
        "--group",
        &group,
        "--topic",
        &topic,
        "--ledger",
        &ledger.to_string_lossy(),
        "--work-ms",
        &work_ms.to_string(),
        "--commit-interval-ms",
        &COMMIT_INTERVAL.as_millis().to_string(),
    ]
    .map(String::from)
    .to_vec();
    // A killed member stays in the group until its session times out, and the restart's join
    // waits for that: keep it short. The mock cluster drops a member whose session runs out
    // while its first JoinGroup waits out the initial rebalance delay (3 s), and never answers
    // that join, so there the session must be longer than 3 s (it checks sessions each second).
    let session = match broker.kind() {
        Kind::Embedded => 3_500,
        _ => 2_000,
    };
    args.extend([
        "--set".into(),
        format!("session.timeout.ms={session}"),
        "--set".into(),
        format!("heartbeat.interval.ms={}", session / 6),
    ]);
    args.extend(mode.args());
    if api == Api::Stream {
        args.push("--stream".into());
    }

    let delays: Vec<Duration> = {
        let mut rng = rand::rng();
        (0..kills)
            .map(|_| Duration::from_millis(rng.random_range(KILL_DELAY_MS)))
            .collect()
    };
    let clock = WallClock::now();
    let started = Instant::now();
    let mut written: Vec<Produced> = Vec::new();
    // When each restart after a kill began.
    let mut restarts: Vec<Instant> = Vec::new();
    // When each killed consumer was gone (Unix micros), and the ledger's length then.
    let mut killed_at: Vec<u64> = Vec::new();
    let mut ledger_ends: Vec<u64> = Vec::new();
    // Kills that came while some record written so far was not finished yet.
    let mut kills_mid_work = 0;
    let mut run = 0;
    let mut last = loop {
        let first = run as u64 * slice;
        let count = slice.min(records.saturating_sub(first));
        written.extend(broker.produce_scenario(&topic, first, count, KEYS).await?);
        let before = file_len(&ledger)?;
        let mut consumer = LedgerProcess::spawn(bin, &args, &log).await?;
        if run > 0 {
            restarts.push(Instant::now());
        }
        if run == kills {
            break consumer;
        }
        consumer
            .wait_for_growth(&ledger, before, PHASE)
            .await
            .with_context(|| format!("run {run}; consumer log:\n{}", tail(&log)))?;
        tokio::time::sleep(delays[run]).await;
        consumer
            .kill()
            .await
            .with_context(|| format!("run {run}; consumer log:\n{}", tail(&log)))?;
        killed_at.push(clock.unix_micros(Instant::now()));
        ledger_ends.push(file_len(&ledger)?);
        let text = std::fs::read_to_string(&ledger).context("read the ledger")?;
        let finished: HashSet<(i32, i64)> = checker::parse_ledger(&text)?
            .iter()
            .map(|l| (l.partition, l.offset))
            .collect();
        if finished.len() < written.len() {
            kills_mid_work += 1;
        }
        run += 1;
    };

    // The last run finishes everything and is stopped gracefully.
    let kill_phase = started.elapsed();
    let end = broker.log_end(&topic, &written).await?;
    let limit = PHASE + Duration::from_millis(records / 2);
    last.wait_for_all(&ledger, &written, limit)
        .await
        .with_context(|| format!("last run; consumer log:\n{}", tail(&log)))?;
    let final_run = started.elapsed() - kill_phase;
    last.terminate(PHASE)
        .await
        .with_context(|| format!("last run; consumer log:\n{}", tail(&log)))?;
    let stop = started.elapsed() - kill_phase - final_run;
    let committed = broker.committed_offsets(&group, &topic).await?;

    let text = std::fs::read_to_string(&ledger).context("read the ledger")?;
    let lines = checker::parse_ledger(&text)?;
    let payloads: HashMap<(i32, i64), &str> = written
        .iter()
        .map(|w| ((w.partition, w.offset), w.payload.as_str()))
        .collect();
    for l in &lines {
        ensure!(
            payloads.get(&(l.partition, l.offset)) == Some(&l.payload.as_str()),
            "the ledger holds {l:?}, which was not written there (written: {:?})",
            payloads.get(&(l.partition, l.offset))
        );
    }
    // Which run wrote each line: the ledger's length at each kill divides it.
    let mut runs = Vec::with_capacity(lines.len());
    let mut at = 0u64;
    for line in text.split_inclusive('\n') {
        runs.push(ledger_ends.iter().filter(|e| **e <= at).count());
        at += line.len() as u64;
    }
    let crashes = crash_duplicates(&lines, &runs, &killed_at);
    let bound = duplicate_bound(&lines, &runs, &killed_at);

    let handled = checker::ledger_handled(&lines, &clock);
    let verdict = checker::check(
        &Evidence {
            written: &written,
            finished: &handled,
            dead_lettered: &BTreeSet::new(),
            committed: &committed,
            faults_ended: &restarts,
        },
        mode.order(),
    );
    let broker_name = broker.kind().name();
    let label = match api {
        Api::Handler => mode.name().to_string(),
        Api::Stream => format!("{} (stream)", mode.name()),
    };
    eprintln!(
        "RELIABILITY | crash-restart | {broker_name} | {} | written {} | lost {} | duplicates {} \
         | order violations {} | worst recovery {} | kills {kills}",
        label,
        verdict.written,
        verdict.lost,
        verdict.duplicates,
        verdict.order_violations,
        verdict
            .worst_recovery()
            .map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64())),
    );
    eprintln!(
        "  crash-restart {broker_name}/{}: handler {work_ms} ms per call; duplicate bound {bound} \
         (finishes in the {} ms before each kill); oldest re-handled finish {} ms before its \
         kill; {kills_mid_work} of {kills} kills came with records unfinished; recoveries {:?} s; kills took {:.1} s, the last run {:.1} s, its graceful stop \
         {:.1} s",
        label,
        UNCOMMITTED_WINDOW.as_millis(),
        crashes.oldest.as_millis(),
        verdict
            .recovery
            .iter()
            .map(|r| r.map_or(-1.0, |r| (r.as_secs_f64() * 100.0).round() / 100.0))
            .collect::<Vec<_>>(),
        kill_phase.as_secs_f64(),
        final_run.as_secs_f64(),
        stop.as_secs_f64(),
    );

    verdict.assert_sound(bound)?;
    ensure!(
        crashes.same_run.is_empty(),
        "{} records were handled twice by one consumer process, with no crash in between: e.g. \
         {:?}",
        crashes.same_run.len(),
        &crashes.same_run[..crashes.same_run.len().min(5)]
    );
    ensure!(
        crashes.stale.is_empty(),
        "{} records were handled again after a crash though they had been finished more than \
         {UNCOMMITTED_WINDOW:?} before it (their commit lagged): e.g. {:?}",
        crashes.stale.len(),
        &crashes.stale[..crashes.stale.len().min(5)]
    );
    let non_empty: BTreeMap<i32, i64> = end.into_iter().filter(|(_, e)| *e > 0).collect();
    ensure!(
        committed == non_empty,
        "after the graceful stop the group committed {committed:?}, not the log end {non_empty:?}"
    );
    Ok(())
}

/// How the duplicates in a ledger came about.
#[derive(Debug, Default)]
struct CrashDuplicates {
    /// Records handled twice by one run (`partition@offset`): never expected.
    same_run: Vec<String>,
    /// Records handled again whose previous finish was more than [`UNCOMMITTED_WINDOW`] before
    /// the kill of the run that finished it: that work should have been committed.
    stale: Vec<String>,
    /// The longest time from a re-handled record's previous finish to its run's kill.
    oldest: Duration,
}

/// Explains each duplicate: a record finished again must have been finished last by a run that
/// was then killed, shortly before its kill. `runs[i]` is the run that wrote `lines[i]`,
/// `killed_at[r]` when run `r` was killed (Unix micros).
fn crash_duplicates(lines: &[LedgerLine], runs: &[usize], killed_at: &[u64]) -> CrashDuplicates {
    let mut out = CrashDuplicates::default();
    let mut last: HashMap<(i32, i64), (usize, u64)> = HashMap::new();
    for (l, run) in lines.iter().zip(runs) {
        let place = format!("{}@{}", l.partition, l.offset);
        let Some((prev_run, prev_at)) = last.insert((l.partition, l.offset), (*run, l.finished_at))
        else {
            continue;
        };
        match killed_at.get(prev_run) {
            Some(kill) if prev_run < *run => {
                let age = Duration::from_micros(kill.saturating_sub(prev_at));
                out.oldest = out.oldest.max(age);
                if age > UNCOMMITTED_WINDOW {
                    out.stale.push(format!("{place} ({} ms)", age.as_millis()));
                }
            }
            _ => out.same_run.push(format!("{place} (run {run})")),
        }
    }
    out
}

/// The most duplicates the crashes can explain: at each kill, what the killed run had finished
/// but not yet committed. Commits go out every [`COMMIT_INTERVAL`] and cover everything
/// finished below the first unfinished record of each partition, so that is what the run
/// finished in the last interval, plus a commit's round trip, plus what sat above a record
/// still in flight (in the key and unordered modes; those finish within a handler call or
/// two): all within [`UNCOMMITTED_WINDOW`] before the kill. Work in flight at the kill is
/// redone too, but was never finished, so it is no duplicate. Records finished by the last run
/// are never handled again: it stops gracefully and commits.
///
/// For a static figure: the window times the consumer's top rate (parallel handler calls over
/// the handler's time) per kill; counting the ledger's own finishes in each window is tighter.
fn duplicate_bound(lines: &[LedgerLine], runs: &[usize], killed_at: &[u64]) -> usize {
    let window = UNCOMMITTED_WINDOW.as_micros() as u64;
    lines
        .iter()
        .zip(runs)
        .filter(|(l, run)| {
            killed_at
                .get(**run)
                .is_some_and(|kill| l.finished_at + window >= *kill)
        })
        .count()
}

/// One ledger consumer process (see [`ExampleProcess`]), and what it wrote.
struct LedgerProcess {
    process: ExampleProcess,
}

impl LedgerProcess {
    async fn spawn(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<LedgerProcess> {
        // Only the command line configures it.
        let process = ExampleProcess::spawn(bin, args, log, "LEDGER_").await?;
        Ok(LedgerProcess { process })
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.process.ensure_running()
    }

    /// Waits until the ledger is longer than `from` bytes: the consumer finished something.
    async fn wait_for_growth(
        &mut self,
        ledger: &Path,
        from: u64,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while file_len(ledger)? <= from {
            self.ensure_running()?;
            ensure!(
                Instant::now() < deadline,
                "the consumer finished nothing within {limit:?}"
            );
            // Another process's progress: there is no event to await across processes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the ledger holds every record of `written`.
    async fn wait_for_all(
        &mut self,
        ledger: &Path,
        written: &[Produced],
        limit: Duration,
    ) -> anyhow::Result<()> {
        let mut missing: HashSet<(i32, i64)> =
            written.iter().map(|w| (w.partition, w.offset)).collect();
        let mut file = File::open(ledger).context("open the ledger")?;
        let mut pos = 0u64;
        let deadline = Instant::now() + limit;
        loop {
            // The complete lines written since the last look.
            let mut fresh = Vec::new();
            file.seek(SeekFrom::Start(pos))?;
            file.read_to_end(&mut fresh)?;
            let complete = fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let text = std::str::from_utf8(&fresh[..complete]).context("ledger is not UTF-8")?;
            for l in checker::parse_ledger(text)? {
                missing.remove(&(l.partition, l.offset));
            }
            pos += complete as u64;
            if missing.is_empty() {
                return Ok(());
            }
            self.ensure_running()?;
            ensure!(
                Instant::now() < deadline,
                "{} of {} records not finished within {limit:?}",
                missing.len(),
                written.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and wait until it is gone.
    async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill().await
    }

    /// SIGTERM, and wait for a clean exit: the consumer drains and commits.
    async fn terminate(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.process.terminate(limit).await
    }
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len())
}

/// The ledger example: `SLUICEGATE_LEDGER_BIN` if set, else built with cargo.
fn ledger_binary() -> anyhow::Result<PathBuf> {
    example_binary("ledger", "SLUICEGATE_LEDGER_BIN")
}
