//! State from compacted topics: a reader from the beginning (`read_from_beginning`) builds a
//! table of the latest value per key, tombstones deleting keys, and says when it has caught up
//! with the log ends it saw at start (`ConsumerHandle::caught_up`, the status, `/health/ready`,
//! `sluicegate_catch_up_remaining`); records written later flow in after that.
//!
//! On Apache Kafka the topic is a real compacted one whose cleaner has removed old versions
//! (the offsets the reader sees have gaps), and it ends with transaction markers (a committed
//! and an aborted transaction), so the last offset below the log end holds no record. The
//! `table` example runs as a child process too.

#[macro_use]
#[allow(unused_macros)] // on_both_brokers: not used here.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use sluicegate::{handler_fn, CatchUp, ConsumerHandle, Message};
use tokio::sync::watch;

use common::http::{get, sample};
use common::process::example_binary;
use common::{stop, unique, wait_status, Isolation, Kind, TestBroker};

/// Bound on each phase: a start, a catch-up, records flowing in.
const PHASE: Duration = Duration::from_secs(60);
/// Bound on waiting for the log cleaner to compact the topic.
const CLEANER: Duration = Duration::from_secs(120);

/// The table a reader builds: the latest value per key, and what it was given.
#[derive(Clone, Default)]
struct Table {
    rows: Arc<Mutex<BTreeMap<String, String>>>,
    /// `(partition, offset)` of every record handled.
    seen: Arc<Mutex<BTreeSet<(i32, i64)>>>,
    tombstones: Arc<Mutex<usize>>,
    /// Counts records handled, to wait on.
    handled: Arc<watch::Sender<usize>>,
    /// Handlers wait until this is true.
    open: Arc<watch::Sender<bool>>,
}

impl Table {
    fn new(open: bool) -> Self {
        Table {
            handled: Arc::new(watch::channel(0).0),
            open: Arc::new(watch::channel(open).0),
            ..Table::default()
        }
    }

    /// Applies one record: a value sets its key, a tombstone deletes it. Checks on the way
    /// that a tombstone refuses to decode, with an error that says it is one.
    async fn apply(&self, msg: Message) -> Result<(), sluicegate::HandlerError> {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        if msg.is_tombstone() {
            let refused = msg.text().expect_err("a tombstone has no text");
            assert!(refused.is_tombstone(), "{refused}");
            assert!(msg.json::<u64>().expect_err("nor a number").is_tombstone());
            self.rows.lock().unwrap().remove(&key);
            *self.tombstones.lock().unwrap() += 1;
        } else {
            let value = msg.text()?.to_owned();
            self.rows.lock().unwrap().insert(key, value);
        }
        self.seen
            .lock()
            .unwrap()
            .insert((msg.partition(), msg.offset()));
        self.handled.send_modify(|n| *n += 1);
        Ok(())
    }

    fn rows(&self) -> BTreeMap<String, String> {
        self.rows.lock().unwrap().clone()
    }

    /// Waits until the table holds `expected`, at most `limit`.
    async fn wait_rows(
        &self,
        expected: &BTreeMap<String, String>,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let mut handled = self.handled.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            handled.borrow_and_update();
            if &self.rows() == expected {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, handled.changed())
                .await
                .is_err()
            {
                bail!(
                    "timed out after {limit:?}: the table is {:?}, expected {expected:?}",
                    self.rows()
                );
            }
        }
    }
}

/// Key/value records, `None` for a tombstone.
type Records = Vec<(String, Option<String>)>;

/// The latest value of each key in `records` (tombstoned keys absent).
fn latest(records: &[(String, Option<String>)]) -> BTreeMap<String, String> {
    let mut table = BTreeMap::new();
    for (k, v) in records {
        match v {
            Some(v) => table.insert(k.clone(), v.clone()),
            None => table.remove(k),
        };
    }
    table
}

fn producer(broker: &TestBroker, extra: &[(&str, &str)]) -> anyhow::Result<FutureProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    Ok(config.create()?)
}

/// Writes `records` (partitioned by key) and waits for every acknowledgement.
async fn produce(producer: &FutureProducer, topic: &str, records: &Records) -> anyhow::Result<()> {
    let mut pending = Vec::new();
    for (key, value) in records {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow!("enqueue a record for {topic}: {e}"))?,
        );
    }
    for delivery in pending {
        tokio::time::timeout(PHASE, delivery)
            .await
            .context("delivery report timed out")?
            .context("producer dropped the delivery report")?
            .map_err(|(e, _)| anyhow!("produce to {topic}: {e}"))?;
    }
    Ok(())
}

/// Round `round` of updates: every key gets a new value, and every fifth key (shifting with the
/// round) is deleted.
fn updates(keys: usize, round: usize) -> Records {
    (0..keys)
        .map(|k| {
            let key = format!("key-{k:02}");
            let value = (!(k + round).is_multiple_of(5)).then(|| format!("{key}@{round}"));
            (key, value)
        })
        .collect()
}

/// Starts a reader of `topic` for `table`, with the HTTP endpoint on a free port.
fn start_reader(broker: &TestBroker, topic: &str, table: &Table) -> anyhow::Result<ConsumerHandle> {
    let t = table.clone();
    Ok(sluicegate::Consumer::builder()
        .bootstrap_servers(broker.bootstrap())
        .topic(topic)
        .read_from_beginning()
        .commit_interval(Duration::from_millis(100))
        .http_endpoint(([127, 0, 0, 1], 0).into())
        .build(handler_fn(move |msg: Message| {
            let t = t.clone();
            async move { t.apply(msg).await }
        }))?
        .spawn()?)
}

/// The reader's `/health/ready` answer: status code and body.
async fn ready(handle: &ConsumerHandle) -> anyhow::Result<(u16, String)> {
    let addr = handle.http_addr().context("no HTTP endpoint")?;
    let answer = get(addr, "/health/ready", None).await?;
    Ok((answer.status, answer.body))
}

async fn remaining_metric(handle: &ConsumerHandle) -> anyhow::Result<Option<f64>> {
    let addr = handle.http_addr().context("no HTTP endpoint")?;
    let text = get(addr, "/metrics", None).await?.body;
    Ok(sample(&text, "sluicegate_catch_up_remaining", &[]))
}

on_embedded_and_kafka!(
    a_reader_builds_the_table_and_is_ready_once_caught_up,
    an_empty_topic_is_caught_up_at_once
);

/// Three rounds of updates with tombstones over 3 partitions; the handler held back until the
/// reader was seen catching up (503, with its progress); then the table is complete when
/// `caught_up` returns, and later updates flow in. Nothing is committed.
async fn a_reader_builds_the_table_and_is_ready_once_caught_up(
    broker: TestBroker,
) -> anyhow::Result<()> {
    let topic = unique("table");
    broker.create_topic(&topic, 3).await?;
    let producer = producer(&broker, &[])?;
    let mut written: Records = Vec::new();
    for round in 0..3 {
        let records = updates(20, round);
        produce(&producer, &topic, &records).await?;
        written.extend(records);
    }
    let expected = latest(&written);
    let table = Table::new(false);
    let handle = start_reader(&broker, &topic, &table)?;

    // Held back: catching up, and not ready, saying how far it is.
    let mut status = handle.status();
    let s = wait_status(
        &mut status,
        PHASE,
        "catch-up progress",
        |s| matches!(&s.catch_up, CatchUp::CatchingUp(behind) if behind.len() == 3),
    )
    .await?;
    ensure!(s.catch_up.remaining() == 60, "{:?}", s.catch_up);
    let (code, body) = ready(&handle).await?;
    ensure!(code == 503, "ready while catching up: {code} {body}");
    ensure!(
        body.contains(
            "catching up: 3 partitions not yet handled up to the log end seen at start, at most \
             60 offsets to go"
        ) && body.contains(&format!("{topic}/0 at offset 0 of ")),
        "{body}"
    );
    ensure!(
        tokio::time::timeout(Duration::from_millis(200), handle.caught_up())
            .await
            .is_err(),
        "caught up with every handler held back"
    );

    table.open.send_replace(true);
    tokio::time::timeout(PHASE, handle.caught_up())
        .await
        .context("not caught up in time")??;
    // At the moment it says so, the table is complete.
    let at_catch_up = table.rows();
    ensure!(
        at_catch_up == expected,
        "when caught up the table was {at_catch_up:?}, expected {expected:?}"
    );
    ensure!(
        *table.tombstones.lock().unwrap() == 12,
        "tombstones handed over: {}",
        table.tombstones.lock().unwrap()
    );
    let (code, body) = ready(&handle).await?;
    ensure!(code == 200, "not ready once caught up: {code} {body}");
    ensure!(body.contains("\"name\":\"catch_up\",\"ok\":true"), "{body}");
    ensure!(handle.status().current().catch_up == CatchUp::CaughtUp);
    // Set before the status said so.
    let remaining = remaining_metric(&handle).await?;
    ensure!(
        remaining == Some(0.0),
        "sluicegate_catch_up_remaining {remaining:?}"
    );

    // Later records flow in: updates, a deletion, a new key.
    let later: Records = vec![
        ("key-01".into(), Some("key-01@late".into())),
        ("key-02".into(), None),
        ("key-99".into(), Some("new".into())),
    ];
    produce(&producer, &topic, &later).await?;
    written.extend(later);
    table.wait_rows(&latest(&written), PHASE).await?;
    ensure!(handle.health().ready, "{}", handle.health().reasons());
    ensure!(
        handle.status().current().committed.is_empty(),
        "a reader without a group committed: {:?}",
        handle.status().current().committed
    );
    stop(handle).await
}

/// Nothing to read: caught up at once, ready, and the first record written later is handled.
async fn an_empty_topic_is_caught_up_at_once(broker: TestBroker) -> anyhow::Result<()> {
    let topic = unique("empty-table");
    broker.create_topic(&topic, 2).await?;
    let table = Table::new(true);
    let handle = start_reader(&broker, &topic, &table)?;
    // Known when `spawn` returns: the log ends are looked up as the client starts.
    ensure!(
        handle.status().current().catch_up == CatchUp::CaughtUp,
        "{:?}",
        handle.status().current().catch_up
    );
    tokio::time::timeout(Duration::from_secs(1), handle.caught_up())
        .await
        .context("an empty topic was not caught up at once")??;
    let mut status = handle.status();
    wait_status(&mut status, PHASE, "ready", |_| handle.health().ready).await?;
    let (code, body) = ready(&handle).await?;
    ensure!(code == 200, "{code} {body}");

    let first: Records = vec![("only".into(), Some("one".into()))];
    produce(&producer(&broker, &[])?, &topic, &first).await?;
    table.wait_rows(&latest(&first), PHASE).await?;
    stop(handle).await
}

/// A consumer that is not a reader from the beginning says so when asked to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_has_nothing_to_catch_up_with() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    let topic = unique("members");
    broker.create_topic(&topic, 1).await?;
    let handle = broker
        .consumer(&unique("group"), &topic)
        .build(handler_fn(|_: Message| async { Ok(()) }))?
        .spawn()?;
    let refused = tokio::time::timeout(PHASE, handle.caught_up()).await?;
    ensure!(
        matches!(refused, Err(sluicegate::Error::CatchUpUntracked)),
        "{refused:?}"
    );
    ensure!(
        handle.health().checks.iter().all(|c| c.name != "catch_up"),
        "{:?}",
        handle.health()
    );
    stop(handle).await
}

/// Apache Kafka: a compacted topic whose cleaner has removed old versions (the offsets read
/// have gaps, tombstones among them), ending with a committed and an aborted transaction (so the
/// last offsets below the log end are transaction markers and hidden records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_log_with_gaps_and_transaction_markers_is_read_to_its_end() -> anyhow::Result<()>
{
    let broker = TestBroker::kafka()?;
    let topic = unique("compacted");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()?;
    let replication = match broker.kind() {
        Kind::Kafka => TopicReplication::Fixed(1),
        _ => TopicReplication::Fixed(-1),
    };
    // Segments roll every 100 ms of writing, and any dirt is worth cleaning; tombstones are
    // kept 100 ms after a cleaning (so some may already be gone when the reader comes).
    let new = NewTopic::new(&topic, 2, replication)
        .set("cleanup.policy", "compact")
        .set("segment.ms", "100")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("min.compaction.lag.ms", "0")
        .set("delete.retention.ms", "100");
    for r in admin
        .create_topics([&new], &AdminOptions::new().operation_timeout(Some(PHASE)))
        .await?
    {
        r.map_err(|(t, e)| anyhow!("create {t}: {e}"))?;
    }
    let producer = producer(&broker, &[])?;

    // Rounds of updates until the cleaner has removed records: fewer records readable than
    // offsets written. The cleaner has no event to wait on: the log is read after each round,
    // and a round written every 200 ms or so also rolls the segments it needs.
    let keys = 30;
    let mut written: Records = Vec::new();
    let deadline = Instant::now() + CLEANER;
    let mut round = 0;
    let compacted = loop {
        let records = updates(keys, round);
        produce(&producer, &topic, &records).await?;
        written.extend(records);
        round += 1;
        let readable = broker
            .read_to_end(&topic, Isolation::ReadCommitted, PHASE)
            .await?
            .len();
        if round >= 3 && readable + keys <= written.len() {
            break readable;
        }
        ensure!(
            Instant::now() < deadline,
            "the cleaner removed nothing within {CLEANER:?}: {readable} records readable of {} \
             written (Kafka log: target/tmp/kafka-*.log)",
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tracing::info!(
        compacted,
        written = written.len(),
        rounds = round,
        "compacted"
    );

    // The log ends with transactions: one committed (its records count), one aborted (its
    // records must never show), both leaving markers behind.
    let tx = producer_tx(&broker, &unique("table-tx"))?;
    let committed: Records = vec![
        ("key-03".into(), Some("key-03@tx".into())),
        ("key-04".into(), None),
    ];
    let aborted: Records = (0..keys)
        .map(|k| (format!("key-{k:02}"), Some("aborted".into())))
        .collect();
    let tx = run_transactions(tx, &topic, committed.clone(), aborted).await?;
    written.extend(committed);
    let expected = latest(&written);

    let table = Table::new(true);
    let handle = start_reader(&broker, &topic, &table)?;
    tokio::time::timeout(PHASE, handle.caught_up())
        .await
        .with_context(|| {
            format!(
                "not caught up: {:?}; table {:?}",
                handle.status().current().catch_up,
                table.rows()
            )
        })??;
    let at_catch_up = table.rows();
    ensure!(
        at_catch_up == expected,
        "when caught up the table was {at_catch_up:?}, expected {expected:?}"
    );
    // The reader really read a compacted log: the offsets it was given have gaps.
    let seen = table.seen.lock().unwrap().clone();
    let ends = broker.high_watermarks(&topic).await?;
    let offsets_written: i64 = ends.values().sum();
    ensure!(
        (seen.len() as i64) + (keys as i64) <= offsets_written,
        "{} records handled of {offsets_written} offsets: no gaps left by compaction",
        seen.len()
    );
    ensure!(
        *table.tombstones.lock().unwrap() > 0,
        "no tombstone was handed over"
    );
    ensure!(
        !table.rows().values().any(|v| v == "aborted"),
        "records of the aborted transaction were handled"
    );

    // Later records flow in.
    let later: Records = vec![
        ("key-05".into(), Some("key-05@late".into())),
        ("key-06".into(), None),
    ];
    produce(&producer, &topic, &later).await?;
    written.extend(later);
    table.wait_rows(&latest(&written), PHASE).await?;
    drop(tx);
    stop(handle).await
}

fn producer_tx(broker: &TestBroker, id: &str) -> anyhow::Result<FutureProducer> {
    producer(broker, &[("transactional.id", id)])
}

/// Commits a transaction writing `committed`, then aborts one writing `aborted`.
async fn run_transactions(
    tx: FutureProducer,
    topic: &str,
    committed: Records,
    aborted: Records,
) -> anyhow::Result<FutureProducer> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<FutureProducer> {
        let timeout = Duration::from_secs(30);
        tx.init_transactions(timeout)?;
        for (records, commit) in [(committed, true), (aborted, false)] {
            tx.begin_transaction()?;
            for (key, value) in &records {
                let mut record: FutureRecord<'_, str, str> = FutureRecord::to(&topic).key(key);
                if let Some(v) = value {
                    record = record.payload(v);
                }
                tx.send_result(record)
                    .map_err(|(e, _)| anyhow!("enqueue a transactional record: {e}"))?;
            }
            tx.flush(timeout)?;
            if commit {
                tx.commit_transaction(timeout)?;
            } else {
                tx.abort_transaction(timeout)?;
            }
        }
        Ok(tx)
    })
    .await?
}

/// `examples/table.rs` runs to its end and prints the table it built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_example_prints_the_latest_value_of_each_key() -> anyhow::Result<()> {
    let bin = example_binary("table", "SLUICEGATE_TABLE_BIN")?;
    let out = tokio::time::timeout(
        PHASE,
        tokio::process::Command::new(&bin)
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the table example did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "the example ended {}; stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let mut lines = stdout.lines();
    ensure!(
        lines.next()
            == Some("caught up: 3 prices (apple 1.20, cherry 7.00, pear 0.95); banana deleted"),
        "{stdout}"
    );
    ensure!(lines.next() == Some("later: apple 1.25"), "{stdout}");
    Ok(())
}
