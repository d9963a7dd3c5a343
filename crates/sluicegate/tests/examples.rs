//! The README's table of runnable examples: each example program runs to its end (each starts
//! its own embedded broker) and prints what it promises. `quickstart`, `ledger` and
//! `transform` have tests of their own (`quickstart.rs`, `crash.rs`, `exactly_once.rs`).

#[allow(unused_macros)] // The harness's macros: not used here.
mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context as _};

use common::process::example_binary;

/// Bound on one example's run; the slowest (key ordering) needs seconds.
const LIMIT: Duration = Duration::from_secs(180);

/// Runs example `name` and checks that it succeeds and that its output holds every `expected`.
async fn runs_to_its_end(name: &str, expected: &[&str]) -> anyhow::Result<()> {
    let bin = example_binary(name, &format!("SLUICEGATE_{}_BIN", name.to_uppercase()))?;
    let child = tokio::process::Command::new(&bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .with_context(|| format!("example {name} still running after {LIMIT:?}"))??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        out.status.success(),
        "example {name}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for line in expected {
        ensure!(
            stdout.contains(line),
            "example {name}: no `{line}` in:\n{stdout}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn basic() -> anyhow::Result<()> {
    runs_to_its_end("basic", &["handled 1000 records, all committed"]).await
}

#[tokio::test]
async fn key_ordering() -> anyhow::Result<()> {
    runs_to_its_end("key_ordering", &["in order per key"]).await
}

#[tokio::test]
async fn dead_letter() -> anyhow::Result<()> {
    runs_to_its_end(
        "dead_letter",
        &["committed 100 orders, 2 dead-lettered to orders.dlq"],
    )
    .await
}

#[tokio::test]
async fn exactly_once() -> anyhow::Result<()> {
    runs_to_its_end("exactly_once", &["500 orders invoiced in"]).await
}

#[tokio::test]
async fn metrics() -> anyhow::Result<()> {
    runs_to_its_end(
        "metrics",
        &[
            "sluicegate_messages_processed_total{",
            "shop_revenue",
            "live: true, ready: true",
        ],
    )
    .await
}

#[tokio::test]
async fn idempotency() -> anyhow::Result<()> {
    runs_to_its_end("idempotency", &["charged 100 payments, each once"]).await
}

#[tokio::test]
async fn stream() -> anyhow::Result<()> {
    runs_to_its_end(
        "stream",
        &["999 orders, ", "1 dead-lettered; all committed"],
    )
    .await
}
