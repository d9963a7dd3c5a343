//! End-to-end: run the built `sluicegate` binary against its embedded broker and check the
//! JSON line it prints.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `sluicegate ARGS`, killing it after `limit`; returns (exit success, stdout, stderr).
fn run(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Read both pipes on threads so a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!(
            "`sluicegate {}` did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}",
            args.join(" ")
        );
    };
    (status.success(), out, err)
}

/// The JSON object on the last line of `stdout`.
fn last_json_line(stdout: &str, stderr: &str) -> Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line:?}\nstderr:\n{stderr}"))
}

#[test]
fn demo_loses_nothing_duplicates_nothing_commits_everything_and_keeps_order() {
    let (ok, out, err) = run(
        &["demo", "--messages", "20000", "--json"],
        Duration::from_secs(180),
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "demo failed: {v}\nstderr:\n{err}");
    assert_eq!(v["produced"], 20_000, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["committed"], v["produced"], "{v}");
    assert_eq!(v["order_violations"], 0, "{v}");
    assert_eq!(v["dropped_by_broker"], 0, "{v}");
    for key in ["msgs_per_sec", "p50_ms", "p99_ms"] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
}

#[test]
fn bench_consume_runs_both_consumers_and_reports_a_ratio() {
    let (ok, out, err) = run(
        &["bench", "consume", "--messages", "50000", "--json"],
        Duration::from_secs(300),
    );
    let v = last_json_line(&out, &err);
    assert!(ok, "bench failed: {v}\nstderr:\n{err}");
    for side in ["raw", "runtime"] {
        assert_eq!(v[side]["messages"], 50_000, "{side}: {v}");
        assert_eq!(v[side]["complete"], true, "{side}: {v}");
        assert!(
            v[side]["msgs_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
            "{side}: {v}"
        );
    }
    assert!(v["ratio"].as_f64().is_some_and(|r| r > 0.0), "{v}");
}
