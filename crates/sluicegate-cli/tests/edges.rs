//! End-to-end: bad input at the edges of every subcommand. Wrong flags, files that cannot be
//! read and brokers that cannot be reached each end the command within a bound, non-zero,
//! with stderr naming what was wrong (the flag, the file path or the address).
//!
//! Already asserted elsewhere, so not repeated here: `config check` of a missing file
//! (config_check.rs), and `lag`, `diagnose` and `topics *` against a closed port and a port
//! that never answers (ops.rs).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::run;

/// How long a refusal that needs no broker may take.
const QUICK: Duration = Duration::from_secs(10);
/// How long giving up on an unreachable broker may take: the commands' own budgets are 10 s
/// at most here (`--timeout-secs 2` where the command has one).
const BOUNDED: Duration = Duration::from_secs(30);

/// One command line and what its stderr must say.
struct Case {
    args: Vec<String>,
    /// Every one of these must be in stderr.
    says: Vec<String>,
    /// The command must end within this.
    bound: Duration,
}

fn case(args: &[&str], says: &[&str], bound: Duration) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        says: says.iter().map(|s| s.to_string()).collect(),
        bound,
    }
}

/// [`case`] from owned strings, for arguments and messages made with `format!`.
fn owned(args: Vec<String>, says: Vec<String>, bound: Duration) -> Case {
    Case { args, says, bound }
}

/// Runs every case, `threads` at a time; fails listing every case that exited zero, took
/// longer than its bound, or did not say what it must.
fn check_all(cases: Vec<Case>, threads: usize) {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let Some(c) = cases.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
                let started = Instant::now();
                // Killed (and reported by `run`) well past the bound, for a clear message.
                let (ok, out, err) = run(&args, c.bound + Duration::from_secs(15));
                let took = started.elapsed();
                let mut wrong = Vec::new();
                if ok {
                    wrong.push("exited 0".to_string());
                }
                if took >= c.bound {
                    wrong.push(format!("took {took:?}, bound {:?}", c.bound));
                }
                for s in &c.says {
                    if !err.contains(s.as_str()) {
                        wrong.push(format!("stderr does not say `{s}`"));
                    }
                }
                if !wrong.is_empty() {
                    failures.lock().unwrap().push(format!(
                        "`sluicegate {}`: {}\nstdout:\n{out}\nstderr:\n{err}",
                        args.join(" "),
                        wrong.join("; ")
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// An address on which nothing listens (bound, its port taken, then dropped).
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// A file of its own with `bytes` in it; its path.
fn file(name: &str, bytes: &[u8]) -> String {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edges-{name}-{}", std::process::id()));
    std::fs::write(&path, bytes).expect("the test file is written");
    path.display().to_string()
}

/// A directory of its own; its path.
fn directory(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("edges-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&path).expect("the test directory is made");
    path.display().to_string()
}

/// A file this process cannot read (mode 000), or `None` where mode 000 does not stop reads
/// (as root, or with CAP_DAC_OVERRIDE, as in many containers).
fn unreadable_file(name: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = file(name, b"kafka:\n  group_id: g\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    match std::fs::read(&path) {
        Err(_) => Some(path),
        Ok(_) => None,
    }
}

// ---- wrong flags -----------------------------------------------------------------------------

/// Unknown flags, missing required flags or arguments, values of the wrong type or out of
/// range, `-X` without `=`, and flags that conflict: refused before any broker is contacted
/// (the `--bootstrap` given is never dialled), naming the flag and, where there is one, the
/// value.
#[test]
fn wrong_flags_are_refused_naming_the_flag() {
    const B: &str = "127.0.0.1:1";
    let q = |args: &[&str], says: &[&str]| case(args, says, QUICK);
    let cases = vec![
        // Unknown flags, one per subcommand.
        q(&["demo", "--bogus"], &["unexpected argument '--bogus'"]),
        q(
            &["bench", "produce", "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &["bench", "consume", "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--bogus",
            ],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "earliest",
                "--bogus",
            ],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &["lag", "--bootstrap", B, "--group", "g", "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &["diagnose", "--bootstrap", B, "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &["topics", "list", "--bootstrap", B, "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &["topics", "describe", "t", "--bootstrap", B, "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &[
                "topics",
                "create",
                "t",
                "--bootstrap",
                B,
                "--partitions",
                "1",
                "--bogus",
            ],
            &["unexpected argument '--bogus'"],
        ),
        q(
            &["config", "check", "x.yaml", "--bogus"],
            &["unexpected argument '--bogus'"],
        ),
        q(&["topics", "rename"], &["unrecognized subcommand 'rename'"]),
        // Missing required flags and arguments (the brokers may also come from a file or the
        // environment: their absence is a configuration error).
        q(
            &["dlq", "replay", "--topic", "t.dlq"],
            &[
                "kafka.bootstrap_servers: required",
                "--bootstrap, a --config file",
            ],
        ),
        q(
            &["dlq", "replay", "--bootstrap", B],
            &["required", "--topic <DLQ_TOPIC>"],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--topic",
                "t",
                "--to",
                "earliest",
            ],
            &["required", "--group <GROUP>"],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
            ],
            &["required", "--to <WHERE>"],
        ),
        q(&["lag", "--bootstrap", B], &["required", "--group <GROUP>"]),
        q(
            &["lag", "--group", "g"],
            &[
                "kafka.bootstrap_servers: required",
                "--bootstrap, a --config file",
            ],
        ),
        q(
            &["diagnose"],
            &[
                "kafka.bootstrap_servers: required",
                "--bootstrap, a --config file",
            ],
        ),
        q(
            &["topics", "list"],
            &[
                "kafka.bootstrap_servers: required",
                "--bootstrap, a --config file",
            ],
        ),
        q(
            &["topics", "describe", "--bootstrap", B],
            &["required", "<TOPIC>"],
        ),
        q(
            &["topics", "create", "t", "--bootstrap", B],
            &["required", "--partitions <PARTITIONS>"],
        ),
        q(&["config", "check"], &["required", "<FILE>"]),
        q(
            &["bench", "consume", "--no-fill"],
            &["required", "--topic <TOPIC>"],
        ),
        q(
            &["bench", "consume", "--rate", "10"],
            &["required", "--duration <SECS>"],
        ),
        // Values of the wrong type.
        q(
            &["demo", "--messages", "abc"],
            &["invalid value 'abc' for '--messages"],
        ),
        q(
            &["demo", "--http", "localhost"],
            &["invalid value 'localhost' for '--http"],
        ),
        q(
            &["demo", "--ordering", "sideways"],
            &["invalid value 'sideways' for '--ordering"],
        ),
        q(
            &["bench", "produce", "--rate", "fast"],
            &["invalid value 'fast' for '--rate"],
        ),
        q(
            &["bench", "consume", "--messages", "abc"],
            &["invalid value 'abc' for '--messages"],
        ),
        q(
            &["bench", "consume", "--handler", "sleep:x"],
            &[
                "invalid value 'sleep:x' for '--handler",
                "expected noop, json or sleep:MS",
            ],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--since",
                "yesterday",
            ],
            &["invalid value 'yesterday' for '--since", "RFC 3339"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--error-kind",
                "weird",
            ],
            &[
                "invalid value 'weird' for '--error-kind",
                "unknown error kind `weird`",
            ],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "yesterday",
            ],
            &[
                "invalid value 'yesterday' for '--to <WHERE>'",
                "earliest, latest",
            ],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "ms:soon",
            ],
            &[
                "invalid value 'ms:soon' for '--to <WHERE>'",
                "milliseconds since the epoch",
            ],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "earliest",
                "--partition",
                "first",
            ],
            &["invalid value 'first' for '--partition"],
        ),
        q(
            &[
                "lag",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--timeout-secs",
                "soon",
            ],
            &["invalid value 'soon' for '--timeout-secs"],
        ),
        // Values out of range.
        q(
            &["demo", "--partitions", "0"],
            &["invalid value '0' for '--partitions", "1..=1024"],
        ),
        q(
            &["demo", "--messages", "0"],
            &["invalid value '0' for '--messages"],
        ),
        q(
            &["demo", "--fail-rate", "1.5"],
            &["invalid value '1.5' for '--fail-rate", "below 1"],
        ),
        q(
            &["demo", "--timeout-secs", "0"],
            &["invalid value '0' for '--timeout-secs"],
        ),
        q(
            &["bench", "produce", "--size", "10"],
            &["invalid value '10' for '--size", "32..=1000000"],
        ),
        q(
            &["bench", "consume", "--partitions", "2000"],
            &["invalid value '2000' for '--partitions"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--timeout-secs",
                "0",
            ],
            &["invalid value '0' for '--timeout-secs"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--from-offset",
                "-1",
            ],
            &["invalid value '-1' for '--from-offset"],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "-5",
            ],
            &[
                "invalid value '-5' for '--to <WHERE>'",
                "offset -5 is negative",
            ],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "1969-12-31T00:00:00Z",
            ],
            &["for '--to <WHERE>'", "before 1970-01-01"],
        ),
        q(
            &[
                "lag",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--timeout-secs",
                "0",
            ],
            &["invalid value '0' for '--timeout-secs"],
        ),
        q(
            &["diagnose", "--bootstrap", B, "--timeout-secs", "0"],
            &["invalid value '0' for '--timeout-secs"],
        ),
        q(
            &[
                "topics",
                "create",
                "t",
                "--bootstrap",
                B,
                "--partitions",
                "0",
            ],
            &["invalid value '0' for '--partitions"],
        ),
        q(
            &[
                "topics",
                "create",
                "t",
                "--bootstrap",
                B,
                "--partitions",
                "1",
                "--replication-factor",
                "0",
            ],
            &["invalid value '0' for '--replication-factor"],
        ),
        // -X (and topics create's --topic-config) without `=`, or with an empty key.
        q(
            &["bench", "produce", "-X", "linger.ms"],
            &[
                "'--producer-config <KEY=VALUE>'",
                "expected KEY=VALUE, got `linger.ms`",
            ],
        ),
        q(
            &["bench", "consume", "-X", "fetch.wait.max.ms"],
            &["'--consumer-config <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "-X",
                "=1",
            ],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE, got `=1`"],
        ),
        q(
            &[
                "offsets",
                "reset",
                "--bootstrap",
                B,
                "--group",
                "g",
                "--topic",
                "t",
                "--to",
                "earliest",
                "-X",
                "acks",
            ],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &["lag", "--bootstrap", B, "--group", "g", "-X", "acks"],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &["diagnose", "--bootstrap", B, "-X", "acks"],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &["topics", "list", "--bootstrap", B, "-X", "acks"],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &["topics", "describe", "t", "--bootstrap", B, "-X", "acks"],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &[
                "topics",
                "create",
                "t",
                "--bootstrap",
                B,
                "--partitions",
                "1",
                "-X",
                "acks",
            ],
            &["'--librdkafka <KEY=VALUE>'", "expected KEY=VALUE"],
        ),
        q(
            &[
                "topics",
                "create",
                "t",
                "--bootstrap",
                B,
                "--partitions",
                "1",
                "--topic-config",
                "retention.ms",
            ],
            &[
                "'--topic-config <KEY=VALUE>'",
                "expected KEY=VALUE, got `retention.ms`",
            ],
        ),
        // Flags that conflict.
        q(
            &["bench", "produce", "--messages", "10", "--duration", "2"],
            &["'--messages <MESSAGES>' cannot be used with '--duration <SECS>'"],
        ),
        q(
            &[
                "bench",
                "consume",
                "--no-fill",
                "--topic",
                "t",
                "--rate",
                "5",
                "--duration",
                "1",
            ],
            &["'--no-fill' cannot be used with '--rate <RATE>'"],
        ),
        q(
            &[
                "bench",
                "consume",
                "--topic",
                "t",
                "--rate",
                "5",
                "--duration",
                "1",
            ],
            &["cannot be used with", "--topic <TOPIC>"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--since",
                "2024-05-02T00:00:00Z",
                "--until",
                "2024-05-01T00:00:00Z",
            ],
            &["--since (1714608000000 ms) is after --until (1714521600000 ms)"],
        ),
        q(
            &[
                "dlq",
                "replay",
                "--bootstrap",
                B,
                "--topic",
                "t.dlq",
                "--from-offset",
                "9",
                "--to-offset",
                "3",
            ],
            &["--from-offset 9 is above --to-offset 3"],
        ),
    ];
    check_all(cases, 2);
}

// ---- files -----------------------------------------------------------------------------------

/// `config check` of a file that cannot be read, of an empty file and of a directory; and every
/// `-X` that names a file librdkafka reads (a CA, a certificate, a key) given a missing file, a
/// directory or an unreadable file: each names the path (and, for `-X`, the setting).
#[test]
fn files_that_cannot_be_read_are_named_with_their_path() {
    let dir = directory("dir");
    let empty = file("empty.yaml", b"");
    // Mode 000 stops reads only without root's CAP_DAC_OVERRIDE. Where it does not (tests
    // running as root, as in containers), a file that is not UTF-8 stands in for `config check`
    // (it cannot be read as text either), and a directory for `-X` (not a file librdkafka can
    // load).
    let unreadable = unreadable_file("unreadable.yaml");
    let (unreadable_yaml, unreadable_yaml_says) = match &unreadable {
        Some(path) => (path.clone(), "Permission denied"),
        None => (
            file("not-utf8.yaml", b"kafka:\n  group_id: \xff\xfe\n"),
            "not contain valid UTF-8",
        ),
    };
    let unreadable_pem = unreadable.clone().unwrap_or_else(|| dir.clone());
    let missing_pem = "/nonexistent/sluicegate-edges/ca.pem";
    let closed = closed_port();

    let mut cases = vec![
        owned(
            strings(&["config", "check", "--no-env", &unreadable_yaml]),
            vec![
                format!("cannot read {unreadable_yaml}"),
                unreadable_yaml_says.into(),
            ],
            QUICK,
        ),
        owned(
            strings(&["config", "check", "--no-env", &dir]),
            vec![format!("cannot read {dir}"), "Is a directory".into()],
            QUICK,
        ),
        owned(
            strings(&["config", "check", "--no-env", &empty]),
            vec![
                format!("{empty}: 3 errors (the file is empty)"),
                "kafka.bootstrap_servers: required".into(),
            ],
            QUICK,
        ),
    ];
    // Each command that takes -X, with a missing CA file; the first few also with a key that
    // is a directory and with a certificate that cannot be read.
    let commands: Vec<Vec<String>> = vec![
        strings(&["bench", "produce", "--bootstrap", &closed]),
        strings(&["bench", "consume", "--bootstrap", &closed]),
        strings(&["dlq", "replay", "--bootstrap", &closed, "--topic", "t.dlq"]),
        strings(&[
            "offsets",
            "reset",
            "--bootstrap",
            &closed,
            "--group",
            "g",
            "--topic",
            "t",
            "--to",
            "earliest",
        ]),
        strings(&["lag", "--bootstrap", &closed, "--group", "g"]),
        strings(&["diagnose", "--bootstrap", &closed]),
        strings(&["topics", "list", "--bootstrap", &closed]),
        strings(&["topics", "describe", "t", "--bootstrap", &closed]),
        strings(&[
            "topics",
            "create",
            "t",
            "--bootstrap",
            &closed,
            "--partitions",
            "1",
        ]),
    ];
    for (i, command) in commands.iter().enumerate() {
        let with = |setting: String| {
            let mut args = command.clone();
            args.extend(["-X".to_string(), setting]);
            args
        };
        cases.push(owned(
            with(format!("ssl.ca.location={missing_pem}")),
            vec![format!("ssl.ca.location: cannot read `{missing_pem}`")],
            QUICK,
        ));
        if i < 3 {
            cases.push(owned(
                with(format!("ssl.key.location={dir}")),
                vec![format!(
                    "ssl.key.location: `{dir}` is a directory, not a file"
                )],
                QUICK,
            ));
            cases.push(owned(
                with(format!("ssl.certificate.location={unreadable_pem}")),
                vec![
                    format!("ssl.certificate.location: "),
                    unreadable_pem.clone(),
                ],
                QUICK,
            ));
        }
    }
    check_all(cases, 2);
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

// ---- unreachable brokers ---------------------------------------------------------------------

/// The commands ops.rs does not already check against unreachable brokers, each with a short
/// budget where it has one (`dlq replay --timeout-secs 2`; the others give up on an
/// unreachable cluster within 10 s of their own).
fn commands_without_broker_checks(bootstrap: &str) -> Vec<Vec<String>> {
    vec![
        strings(&[
            "demo",
            "--no-http",
            "--messages",
            "10",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "demo",
            "--no-http",
            "--messages",
            "10",
            "--fail-rate",
            "0.1",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "bench",
            "produce",
            "--messages",
            "10",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "bench",
            "produce",
            "--duration",
            "1",
            "--topic",
            "t",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "bench",
            "consume",
            "--messages",
            "10",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "bench",
            "consume",
            "--no-fill",
            "--topic",
            "t",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "bench",
            "consume",
            "--rate",
            "10",
            "--duration",
            "1",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "dlq",
            "replay",
            "--topic",
            "t.dlq",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "dlq",
            "replay",
            "--topic",
            "t.dlq",
            "--dry-run",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "offsets",
            "reset",
            "--group",
            "g",
            "--topic",
            "t",
            "--to",
            "earliest",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "offsets",
            "reset",
            "--group",
            "g",
            "--topic",
            "t",
            "--to",
            "latest",
            "--dry-run",
            "--bootstrap",
            bootstrap,
        ]),
    ]
}

/// Every subcommand that takes `--bootstrap`.
fn every_broker_command(bootstrap: &str) -> Vec<Vec<String>> {
    let mut all = commands_without_broker_checks(bootstrap);
    all.extend([
        strings(&[
            "lag",
            "--group",
            "g",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "topics",
            "list",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "topics",
            "describe",
            "t",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
        strings(&[
            "topics",
            "create",
            "t",
            "--partitions",
            "1",
            "--timeout-secs",
            "2",
            "--bootstrap",
            bootstrap,
        ]),
    ]);
    all
}

#[test]
fn a_closed_port_fails_every_command_at_once_naming_the_address() {
    let bootstrap = closed_port();
    let cases = commands_without_broker_checks(&bootstrap)
        .into_iter()
        .map(|args| {
            owned(
                args,
                vec![format!(
                    "cannot reach the Kafka cluster: no bootstrap server accepts a connection \
                     ({bootstrap}: "
                )],
                QUICK,
            )
        })
        .collect();
    check_all(cases, 2);
}

#[test]
fn a_port_that_never_answers_fails_every_command_in_time_naming_the_address() {
    // Connections are accepted (by the kernel, into the backlog), and nothing is ever read.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let bootstrap = silent.local_addr().expect("address").to_string();
    let cases = commands_without_broker_checks(&bootstrap)
        .into_iter()
        .map(|args| {
            owned(
                args,
                vec![
                    format!("{bootstrap} accepts connections but answered no metadata request"),
                    "is it a Kafka listener".into(),
                ],
                BOUNDED,
            )
        })
        .collect();
    // Most cases wait their whole budget (10 s) asleep: run them side by side.
    check_all(cases, 6);
    drop(silent);
}

/// Bootstrap lists no connection can even be tried with: empty, a host without a port, a name
/// that does not resolve. Every command says so at once.
#[test]
fn a_bootstrap_list_that_names_no_usable_address_is_refused_at_once() {
    let mut cases = Vec::new();
    for args in every_broker_command("") {
        cases.push(owned(
            args,
            vec!["--bootstrap is empty: give host:port".into()],
            QUICK,
        ));
    }
    for args in every_broker_command("kafka") {
        cases.push(owned(
            args,
            vec!["(kafka: not host:port (give the port".into()],
            QUICK,
        ));
    }
    // `.invalid` never resolves (RFC 2606); where DNS cannot be asked, the lookup is still
    // bounded by the commands' budgets.
    for args in every_broker_command("kafka.invalid:9092") {
        cases.push(owned(
            args,
            vec!["no bootstrap server accepts a connection (kafka.invalid:9092: ".into()],
            BOUNDED,
        ));
    }
    check_all(cases, 2);
}

/// `diagnose` reports an unusable bootstrap list as its failed `bootstrap` check, on stdout.
#[test]
fn diagnose_names_an_empty_bootstrap_list_in_its_failed_check() {
    let (ok, out, err) = run(
        &["diagnose", "--bootstrap", "", "--timeout-secs", "2"],
        QUICK,
    );
    assert!(!ok, "stdout:\n{out}\nstderr:\n{err}");
    // A configuration error, before any check runs.
    assert!(
        err.contains("--bootstrap is empty: give host:port"),
        "stdout:\n{out}\nstderr:\n{err}"
    );
}
