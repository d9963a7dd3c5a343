//! End-to-end: `sluicegate produce` and `sluicegate consume` against the embedded broker
//! (librdkafka's mock cluster, in this process) and Apache Kafka 4.4 (started by this test
//! binary; see `common::kafka`).
//!
//! The mock answers every ListOffsets by timestamp with "no record that recent" (see
//! `offsets_reset.rs`), so `--from-time` lands on the high watermark there: the test of a time
//! between records runs on Kafka only, and on the mock a time after every record is checked.

#[macro_use]
mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::Value;

use common::kafka::{committed, produce, unique, Broker, LIMIT};
use common::records::produce_records;
use common::{last_json_line, run, run_with_input};

/// Runs `sluicegate produce TOPIC --bootstrap B ARGS --json` with `input` on stdin; returns
/// (exit success, the JSON summary, stderr).
fn produce_lines(
    bootstrap: &str,
    topic: &str,
    args: &[&str],
    input: &str,
) -> (bool, Value, String) {
    let mut all = vec!["produce", topic, "--bootstrap", bootstrap, "--json"];
    all.extend_from_slice(args);
    let (ok, out, err) =
        run_with_input(&all, &[("RUST_LOG", "warn")], Some(input.as_bytes()), LIMIT);
    (ok, last_json_line(&out, &err), err)
}

/// Runs `sluicegate consume TOPIC --bootstrap B ARGS`; returns (exit success, stdout, stderr).
fn consume(bootstrap: &str, topic: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["consume", topic, "--bootstrap", bootstrap];
    all.extend_from_slice(args);
    run(&all, LIMIT)
}

/// [`consume`] with `--json`, which must succeed: one JSON object per record.
fn consume_json(bootstrap: &str, topic: &str, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = consume(bootstrap, topic, &all);
    assert!(
        ok,
        "consume {args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// (partition, offset) of each record, sorted.
fn places(records: &[Value]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = records
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort_unstable();
    out
}

// ---- round trip ------------------------------------------------------------------------------

/// Lines produced with keys and headers come back with them, as JSON lines and as text; a key
/// keeps its partition and its order; bytes that are not UTF-8 come back as base64.
fn round_trip(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let topic = unique("ops-round-trip");
    broker.create_topic(&topic, 2);
    let (ok, summary, err) = produce_lines(
        bootstrap,
        &topic,
        &[
            "--key-separator",
            ":",
            "-H",
            "trace=abc",
            "-H",
            "source=cli",
        ],
        "k1:v1\nk2:v2\nk1:v3:with colon\n",
    );
    assert!(ok, "{summary}\nstderr:\n{err}");
    assert_eq!(summary["lines"], 3, "{summary}");
    assert_eq!(summary["delivered"], 3, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    let records = consume_json(bootstrap, &topic, &["--from", "beginning", "--until-end"]);
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert_eq!(r["topic"], topic.as_str());
        assert_eq!(
            r["headers"],
            serde_json::json!({"trace": "abc", "source": "cli"}),
            "{r}"
        );
        assert!(r["timestamp"].as_i64().is_some_and(|t| t > 0), "{r}");
    }
    let k1: Vec<&Value> = records.iter().filter(|r| r["key"] == "k1").collect();
    assert_eq!(k1.len(), 2, "{records:?}");
    assert_eq!(
        k1[0]["partition"], k1[1]["partition"],
        "one key, one partition"
    );
    let mut k1_in_order = k1.clone();
    k1_in_order.sort_by_key(|r| r["offset"].as_i64());
    assert_eq!(k1_in_order[0]["value"], "v1");
    assert_eq!(
        k1_in_order[1]["value"], "v3:with colon",
        "split at the first separator"
    );
    assert!(records
        .iter()
        .any(|r| r["key"] == "k2" && r["value"] == "v2"));

    // Text: the value alone by default, or as --format says.
    let (ok, out, err) = consume(bootstrap, &topic, &["--from", "beginning", "-e"]);
    assert!(ok, "{err}");
    let mut values: Vec<&str> = out.lines().collect();
    values.sort_unstable();
    assert_eq!(values, ["v1", "v2", "v3:with colon"]);
    let p = k1_in_order[0]["partition"].as_i64().unwrap();
    let (ok, out, err) = consume(
        bootstrap,
        &topic,
        &[
            "--from",
            "beginning",
            "-e",
            "--partition",
            &p.to_string(),
            "--format",
            "{topic}/{partition}@{offset}\\t{key}={value} [{headers}]",
        ],
    );
    assert!(ok, "{err}");
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("{topic}/{p}@0\tk1=v1 [trace=abc,source=cli]"),
        "{out}"
    );

    // Bytes that are not UTF-8, written by another client.
    let binary = unique("ops-binary");
    broker.create_topic(&binary, 1);
    produce_records(
        bootstrap,
        &binary,
        &[(
            vec![0xff, 0x00],
            b"text".to_vec(),
            vec![("raw".into(), Some(vec![0xfe]))],
        )],
    );
    let records = consume_json(bootstrap, &binary, &["--from", "beginning", "-e"]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["key"], serde_json::json!({"base64": "/wA="}));
    assert_eq!(records[0]["value"], "text");
    assert_eq!(
        records[0]["headers"],
        serde_json::json!({"raw": {"base64": "/g=="}})
    );
}

on_brokers!(round_trip => produce_then_consume_keeps_keys_headers_and_bytes: embedded, kafka);

// ---- ranges ----------------------------------------------------------------------------------

/// Where reading starts (an offset for all partitions or for one, the beginning, the end) and
/// where it stops (the end, a count).
fn ranges(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let topic = unique("ops-ranges");
    broker.create_topic(&topic, 2);
    for (p, lines) in [("0", "a0\na1\na2\na3\na4\n"), ("1", "b0\nb1\nb2\n")] {
        let (ok, summary, err) = produce_lines(bootstrap, &topic, &["--partition", p], lines);
        assert!(ok && summary["delivered"] != 0, "{summary}\n{err}");
    }

    let from_2 = consume_json(bootstrap, &topic, &["--from", "2", "-e"]);
    assert_eq!(places(&from_2), [(0, 2), (0, 3), (0, 4), (1, 2)]);
    let p1_from_1 = consume_json(bootstrap, &topic, &["--from", "1:1", "-e"]);
    assert_eq!(
        places(&p1_from_1),
        [(1, 1), (1, 2)],
        "only the partition given"
    );
    assert_eq!(p1_from_1[0]["value"], "b1");
    let mixed = consume_json(bootstrap, &topic, &["--from", "beginning,0:4", "-e"]);
    assert_eq!(
        places(&mixed),
        [(0, 4)],
        "only the partition given, from its offset"
    );
    let mixed = consume_json(
        bootstrap,
        &topic,
        &[
            "--from",
            "beginning",
            "--from",
            "0:4",
            "--partition",
            "0,1",
            "-e",
        ],
    );
    assert_eq!(places(&mixed), [(0, 4), (1, 0), (1, 1), (1, 2)]);
    let counted = consume_json(
        bootstrap,
        &topic,
        &["--from", "beginning", "-p", "0", "--count", "2"],
    );
    assert_eq!(places(&counted), [(0, 0), (0, 1)]);
    let past_end = consume_json(bootstrap, &topic, &["--from", "99", "-e"]);
    assert!(
        past_end.is_empty(),
        "an offset past the end is the end: {past_end:?}"
    );
    let at_end = consume_json(bootstrap, &topic, &["--from", "end", "-e"]);
    assert!(at_end.is_empty(), "{at_end:?}");
    let default_end = consume_json(bootstrap, &topic, &["-e"]);
    assert!(
        default_end.is_empty(),
        "without --from, from the end: {default_end:?}"
    );
    // A time after every record: no record.
    let later = (common::kafka::now_ms() + 3_600_000).to_string();
    let after_all = consume_json(bootstrap, &topic, &["--from-time", &later, "-e"]);
    assert!(after_all.is_empty(), "{after_all:?}");
}

on_brokers!(ranges => offsets_ends_and_counts_bound_the_read: embedded, kafka);

/// `--from-time`, RFC 3339 or milliseconds: each partition from its first record at or after
/// the time (Kafka only: the mock does not look offsets up by time).
#[test]
fn from_time_starts_at_the_first_record_at_or_after_it() {
    let broker = Broker::kafka();
    let bootstrap = broker.bootstrap();
    let topic = unique("ops-time");
    broker.create_topic(&topic, 2);
    let base = 1_700_000_000_000i64;
    produce(bootstrap, &topic, &[2, 1], base);
    produce(bootstrap, &topic, &[1, 2], base + 10_000);
    let by_ms = consume_json(
        bootstrap,
        &topic,
        &["--from-time", &(base + 5_000).to_string(), "-e"],
    );
    assert_eq!(places(&by_ms), [(0, 2), (1, 1), (1, 2)]);
    assert!(
        by_ms.iter().all(|r| r["timestamp"] == base + 10_000),
        "{by_ms:?}"
    );
    let rfc3339 = chrono_free_rfc3339(base + 10_000);
    let at = consume_json(bootstrap, &topic, &["--from-time", &rfc3339, "-e"]);
    assert_eq!(
        places(&at),
        [(0, 2), (1, 1), (1, 2)],
        "at the time is included"
    );
    let before = consume_json(
        bootstrap,
        &topic,
        &["--from-time", "2020-01-01T00:00:00Z", "-e"],
    );
    assert_eq!(before.len(), 6);
}

/// `ms` (whole seconds, UTC, after 2001) as RFC 3339, by hand: the tests do not depend on chrono.
fn chrono_free_rfc3339(ms: i64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

// ---- groups ----------------------------------------------------------------------------------

/// With --group, the offsets of the records printed are committed, and the next read starts
/// there; without, nothing is committed.
fn group_commits(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let topic = unique("ops-group");
    let group = unique("ops-group-g");
    broker.create_topic(&topic, 1);
    let (ok, summary, err) = produce_lines(bootstrap, &topic, &[], "r0\nr1\nr2\nr3\nr4\n");
    assert!(ok, "{summary}\n{err}");

    let anonymous = consume_json(bootstrap, &topic, &["--from", "beginning", "-e"]);
    assert_eq!(anonymous.len(), 5);
    assert_eq!(
        committed(bootstrap, "sluicegate-cli-consume", &topic, 1),
        [None]
    );

    let first = consume_json(
        bootstrap,
        &topic,
        &["--group", &group, "--from", "beginning", "--count", "3"],
    );
    assert_eq!(places(&first), [(0, 0), (0, 1), (0, 2)]);
    assert_eq!(committed(bootstrap, &group, &topic, 1), [Some(3)]);
    let rest = consume_json(bootstrap, &topic, &["--group", &group, "-e"]);
    assert_eq!(
        places(&rest),
        [(0, 3), (0, 4)],
        "from the group's committed offset"
    );
    assert_eq!(committed(bootstrap, &group, &topic, 1), [Some(5)]);
}

on_brokers!(group_commits => a_group_commits_what_was_printed: embedded, kafka);

/// A tailing `sluicegate consume TOPIC --group GROUP --from FROM`, its stdout read line by line;
/// killed if the test ends before it does.
struct Tail {
    child: Child,
    printed: mpsc::Receiver<String>,
}

impl Tail {
    fn start(bootstrap: &str, topic: &str, group: &str, from: &str) -> Tail {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args([
                "consume",
                topic,
                "--bootstrap",
                bootstrap,
                "--group",
                group,
                "--from",
                from,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped");
        let (lines, printed) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Tail { child, printed }
    }

    /// The next `n` lines printed, waiting at most `LIMIT` for them.
    fn lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.printed.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(e) => panic!("printed only {got:?} within {LIMIT:?}: {e}"),
            }
        }
        got
    }

    /// Sends SIGTERM; returns the exit status (within `LIMIT`) and stderr.
    fn terminate(mut self) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM not sent");
        let status = common::exit_within(&mut self.child, LIMIT)
            .unwrap_or_else(|| panic!("consume did not stop within {LIMIT:?} of SIGTERM"));
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Without --until-end or --count, `consume` tails the topic: records written while it runs
/// are printed as they come, and SIGTERM ends it, committing what it printed (with --group).
fn tail_until_sigterm(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let topic = unique("ops-tail");
    let group = unique("ops-tail-g");
    broker.create_topic(&topic, 1);
    let (ok, summary, err) = produce_lines(bootstrap, &topic, &[], "old0\nold1\n");
    assert!(ok, "{summary}\n{err}");
    // From offset 2: the records written below, whenever the command gets to its partition.
    let tail = Tail::start(bootstrap, &topic, &group, "2");
    let (ok, summary, err) = produce_lines(bootstrap, &topic, &[], "new2\nnew3\n");
    assert!(ok, "{summary}\n{err}");
    assert_eq!(tail.lines(2), ["new2", "new3"]);
    let (status, err) = tail.terminate();
    assert!(status.success(), "{status}\n{err}");
    assert_eq!(committed(bootstrap, &group, &topic, 1), [Some(4)]);
}

on_brokers!(tail_until_sigterm => tailing_prints_new_records_and_commits_on_sigterm: embedded, kafka);

/// A tailing `consume --group` whose broker went away still ends on SIGTERM, within its grace
/// for the final commit, and says that the last offsets were not committed.
#[test]
fn tailing_ends_on_sigterm_after_its_broker_went_away() {
    let broker = Broker::embedded();
    let topic = unique("ops-gone");
    broker.create_topic(&topic, 1);
    let (ok, summary, err) = produce_lines(broker.bootstrap(), &topic, &[], "a\nb\n");
    assert!(ok, "{summary}\n{err}");
    let tail = Tail::start(
        broker.bootstrap(),
        &topic,
        &unique("ops-gone-g"),
        "beginning",
    );
    assert_eq!(tail.lines(2), ["a", "b"]);
    drop(broker);
    let (status, err) = tail.terminate();
    assert!(!status.success(), "{status}\n{err}");
    assert!(err.contains("commit"), "{err}");
}

// ---- bad input -------------------------------------------------------------------------------

/// An unknown topic, a bad offset, an unknown partition, a bad format and a line without the
/// key separator each give an error that names them.
fn bad_input(broker: &Broker) {
    let bootstrap = broker.bootstrap();
    let missing = unique("ops-missing");
    let (ok, _, err) = consume(bootstrap, &missing, &["-e"]);
    assert!(
        !ok && err.contains(&format!("topic `{missing}` does not exist")),
        "{err}"
    );
    let (ok, out, err) = run_with_input(
        &["produce", &missing, "--bootstrap", bootstrap],
        &[],
        Some(b"x\n"),
        LIMIT,
    );
    assert!(
        !ok && err.contains(&format!("topic `{missing}` does not exist")),
        "{out}\n{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");

    let topic = unique("ops-bad");
    broker.create_topic(&topic, 2);
    let (ok, _, err) = consume(bootstrap, &topic, &["--from", "yesterday"]);
    assert!(
        !ok && err.contains("`yesterday` is not a place to start"),
        "{err}"
    );
    assert!(err.contains("PARTITION:OFFSET"), "{err}");
    let (ok, _, err) = consume(bootstrap, &topic, &["--from", "-1"]);
    assert!(!ok && err.contains("negative"), "{err}");
    let (ok, _, err) = consume(
        bootstrap,
        &topic,
        &["--from", "beginning", "--from", "end", "-e"],
    );
    assert!(
        !ok && err.contains("one place for every partition"),
        "{err}"
    );
    let (ok, _, err) = consume(bootstrap, &topic, &["--partition", "5", "-e"]);
    assert!(!ok && err.contains("there is no partition 5"), "{err}");
    let (ok, _, err) = consume(bootstrap, &topic, &["--format", "{size}"]);
    assert!(!ok && err.contains("unknown placeholder `{size}`"), "{err}");
    let (ok, _, err) = consume(bootstrap, &topic, &["--from-time", "soon"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");

    let (ok, summary, err) =
        produce_lines(bootstrap, &topic, &["-K", ":"], "k:v\nno separator\nk:w\n");
    assert!(!ok, "{summary}");
    assert_eq!(summary["delivered"], 2, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert!(err.contains("line 2: no key separator `:`"), "{err}");
    let (ok, _, err) = run_with_input(
        &[
            "produce",
            &topic,
            "--bootstrap",
            bootstrap,
            "--partition",
            "2",
        ],
        &[],
        Some(b"x\n"),
        LIMIT,
    );
    assert!(!ok && err.contains("there is no partition 2"), "{err}");
}

on_brokers!(bad_input => bad_input_gets_a_clear_error: embedded, kafka, tansu);
