//! Helpers shared by the end-to-end tests: run the built `sluicegate` binary, bounded in time;
//! brokers and clients ([`kafka`]); the Apache Kafka and tansu launchers and the test certificates
//! shared with the library's tests ([`kafka_broker`], [`tansu`], [`pki`]); [`on_brokers!`] and
//! [`on_both_brokers!`] (declare the module with `#[macro_use] mod common;` to use them).
//!
//! Environment variables: `SLUICEGATE_TEST_BOOTSTRAP=host:port[,...]` runs the `kafka` tests
//! against that broker instead of starting Apache Kafka; `SLUICEGATE_KAFKA_HOME`,
//! `SLUICEGATE_TANSU` and `SLUICEGATE_SKIP_TANSU=1` as for the library's tests (see its
//! `tests/common/mod.rs`).

#![allow(dead_code)] // Each test binary uses its own part of this module.

/// Tests `check` (a `fn(&Broker)`) on each broker named (`embedded`, `kafka`, `tansu`), as
/// `NAME::embedded`, `NAME::kafka` and `NAME::tansu`. A tansu test passes without running when
/// tansu tests are skipped.
#[allow(unused_macros)] // Not every test file has such tests.
macro_rules! on_brokers {
    ($check:ident => $name:ident: $($broker:ident),+ $(,)?) => {
        mod $name {
            $(
                #[test]
                fn $broker() {
                    // `Broker::tansu()` is an `Option`, the others a `Broker`: `into` takes both.
                    let broker: Option<$crate::common::kafka::Broker> =
                        $crate::common::kafka::Broker::$broker().into();
                    if let Some(broker) = broker {
                        super::$check(&broker);
                    }
                }
            )+
        }
    };
}

/// [`on_brokers!`] on all three: `NAME::embedded`, `NAME::kafka` (Apache Kafka) and
/// `NAME::tansu`.
#[allow(unused_macros)] // Not every test file has such tests.
macro_rules! on_both_brokers {
    ($check:ident => $name:ident) => {
        on_brokers!($check => $name: embedded, kafka, tansu);
    };
}

pub mod kafka;
#[path = "../../../sluicegate/tests/common/kafka_broker.rs"]
pub mod kafka_broker;
#[path = "../../../sluicegate/tests/common/pki.rs"]
pub mod pki;
#[path = "../../src/workload/read_back.rs"]
pub mod read_back;
pub mod records;
#[path = "../../../sluicegate/tests/common/tansu.rs"]
pub mod tansu;

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `sluicegate ARGS`, killing it after `limit`; returns (exit success, stdout, stderr).
pub fn run(args: &[&str], limit: Duration) -> (bool, String, String) {
    run_with_env(args, &[("RUST_LOG", "warn")], limit)
}

/// [`run`] with environment variables `env` set for the command.
pub fn run_with_env(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (bool, String, String) {
    run_with_input(args, env, None, limit)
}

/// [`run_with_env`] with `input` written to the command's stdin, which is then closed (without
/// `input`, stdin is inherited).
pub fn run_with_input(
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
    limit: Duration,
) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        // On a thread, so a child that stops reading cannot stall the test; dropping the pipe
        // closes the child's stdin.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
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
    let status = exit_within(&mut child, limit);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!(
            "`sluicegate {}` did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}",
            args.join(" ")
        );
    };
    (status.success(), out, err)
}

/// Waits at most `limit` for `child` to exit: its status, or `None` after killing it.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        // A child's exit cannot be awaited with a bound in std: it is polled.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The JSON object on the last line of `stdout`.
pub fn last_json_line(stdout: &str, stderr: &str) -> Value {
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line:?}\nstderr:\n{stderr}"))
}

/// `field` of every partition in a JSON summary, in order.
pub fn column(v: &Value, field: &str) -> Vec<Value> {
    v["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partitions in {v}"))
        .iter()
        .map(|p| p[field].clone())
        .collect()
}
