//! The README's first example, run as it is: `examples/quickstart.rs`, included below, runs in
//! a child process (this test binary again) against an embedded broker holding valid JSON
//! orders and one record that is not JSON. Also checks that the README and the crate docs show
//! exactly that code.

#[allow(unused_macros)] // The harness's macros: not used here.
mod common;

// Defines `main`: the example, verbatim.
include!("../examples/quickstart.rs");

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rdkafka::message::Message as _;
use tokio::io::{AsyncBufReadExt, BufReader};

use common::{diagnosis, TestBroker};

/// Set in the child process: run the example instead of the test.
const CHILD: &str = "SLUICEGATE_QUICKSTART_CHILD";
/// Bound on each phase: the child's start and group join, consuming, a shutdown.
const PHASE: Duration = Duration::from_secs(60);
const ORDERS: i64 = 30;
/// Where the record that is not JSON goes: partition 1, its 6th record.
const BAD: (i32, i64) = (1, 5);

/// The example's code, from the README's "Use it" section (its first Rust block), from the
/// crate docs' first example, and from the example file without its leading comment lines.
fn shown_code() -> [String; 3] {
    let readme = include_str!("../../../README.md");
    let use_it = readme.split("\n## Use it\n").nth(1).unwrap_or_default();
    let block = use_it
        .split_once("```rust")
        .and_then(|(_, rest)| rest.split_once("\n```\n"))
        .map(|(block, _)| block.split_once('\n').map_or("", |(_, code)| code))
        .unwrap_or_default();
    let docs = include_str!("../src/lib.rs");
    let doc_block: Vec<&str> = docs
        .lines()
        .skip_while(|l| *l != "//! ```no_run")
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect();
    let file: Vec<&str> = include_str!("../examples/quickstart.rs")
        .lines()
        .skip_while(|l| l.starts_with("//"))
        .collect();
    [
        format!("{}\n", block.trim_end()),
        format!("{}\n", doc_block.join("\n")),
        format!("{}\n", file.join("\n")),
    ]
}

#[test]
fn readme_and_crate_docs_show_the_quickstart_example() {
    let [readme, docs, file] = shown_code();
    assert!(file.contains("Consumer::builder()"), "{file}");
    assert_eq!(
        readme, file,
        "README.md, \"Use it\" vs examples/quickstart.rs"
    );
    assert_eq!(docs, file, "src/lib.rs docs vs examples/quickstart.rs");
}

/// The example, given one record that is not JSON among 30 JSON orders over 3 partitions,
/// prints every valid order, dead-letters the bad record at once (kind `decode`, one attempt)
/// with an error log naming it, commits every partition to its end, and stops cleanly on
/// SIGTERM.
#[test]
fn quickstart_finishes_every_valid_record_and_dead_letters_the_bad_one() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return Ok(main()?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run_quickstart())
}

async fn run_quickstart() -> anyhow::Result<()> {
    let broker = TestBroker::embedded()?;
    broker.create_topic("orders", 3).await?;
    let records = (0..3).flat_map(|p| {
        (0..ORDERS / 3).map(move |i| {
            let payload = if (p, i) == BAD {
                "not json".to_string()
            } else {
                format!(r#"{{"id":{}}}"#, p as i64 * 100 + i)
            };
            (Some(p), format!("customer-{i}"), payload)
        })
    });
    let produced = broker.produce_records("orders", records).await?;
    let end = broker.log_end("orders", &produced).await?;

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "quickstart_finishes_every_valid_record_and_dead_letters_the_bad_one",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start the example")?;
    let pid = child.id().context("no pid")?;
    let stdout = read_lines(child.stdout.take().context("stdout")?);
    let stderr = read_lines(child.stderr.take().context("stderr")?);

    // The group's commits, as the broker holds them: there is no event to wait on across
    // processes, so the broker is asked every 200 ms.
    let deadline = Instant::now() + PHASE;
    loop {
        if broker.committed_offsets("billing", "orders").await? == end {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the example ended {status} before committing to the end");
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            bail!(
                "the group did not commit {end:?} within {PHASE:?}; output:\n{}",
                stdout.await?.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dlq = broker.read_records("orders.dlq", 1, PHASE).await?;

    let terminated = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    ensure!(terminated.success(), "kill -TERM {pid}: {terminated}");
    let status = tokio::time::timeout(PHASE, child.wait())
        .await
        .context("the example did not stop after SIGTERM")??;
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    let output = format!(
        "stdout:\n{}\nstderr:\n{}",
        stdout.join("\n"),
        stderr.join("\n")
    );
    ensure!(status.success(), "the example ended {status}; {output}");

    // Every valid order printed; the bad record not.
    let printed: BTreeSet<String> = stdout
        .iter()
        .filter_map(|l| l.strip_prefix("order "))
        .map(str::to_string)
        .collect();
    let valid: BTreeSet<String> = produced
        .iter()
        .filter(|r| (r.partition, r.offset) != BAD)
        .map(|r| r.payload.clone())
        .collect();
    ensure!(
        printed == valid,
        "printed {printed:?}, valid {valid:?}; {output}"
    );
    // The bad record: dead-lettered once, at once, with why; and the log says so.
    ensure!(dlq.len() == 1, "{dlq:?}");
    let d = diagnosis(&dlq[0])?;
    ensure!(
        (
            d.original_partition,
            d.original_offset,
            d.error_kind,
            d.attempts
        ) == (BAD.0, BAD.1, sluicegate::ErrorKind::Decode, 1),
        "{d:?}"
    );
    ensure!(dlq[0].payload() == Some(&b"not json"[..]));
    ensure!(
        d.error_message
            .starts_with("cannot decode the value of orders/1 at offset 5 as JSON"),
        "{d:?}"
    );
    let logged = stdout.iter().chain(&stderr).any(|l| {
        l.contains("ERROR")
            && l.contains("handler gave up; dead-lettering")
            && l.contains("partition=1 offset=5")
            && l.contains("decode error: cannot decode the value of orders/1 at offset 5")
    });
    ensure!(logged, "no error log names the bad record; {output}");
    Ok(())
}

/// Reads `pipe` to its end, line by line, without terminal colour codes.
fn read_lines(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(without_colours(&line));
        }
        all
    })
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
