//! Consumer processes for the crash tests: an example program of this crate (`ledger`,
//! `transform`) run as a child process that a test kills with SIGKILL or stops with SIGTERM.
//!
//! Each runs under a small `sh` watchdog (as tansu does, see `common/tansu.rs`) that kills it
//! when our pipe to the watchdog closes: when its [`ExampleProcess`] is dropped, or when the test
//! process ends in any way, even by SIGKILL. No consumer outlives its test.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// One example process under its watchdog.
pub struct ExampleProcess {
    /// The example's process id (not the watchdog's).
    pub pid: u32,
    watchdog: Child,
    _lifeline: ChildStdin,
}

const WATCHDOG: &str = r#"
exec 3<&0 </dev/null
"$0" "$@" >&2 3<&- &
child=$!
echo "$child"
{ read -r _ <&3; kill -9 "$child" 2>/dev/null; } &
exec 3<&-
wait "$child"
"#;

impl ExampleProcess {
    /// Starts `bin` with `args`, its output (stdout and stderr) appended to `log`. Environment
    /// variables whose names start with `clear_env` are removed, so that only the command line
    /// configures it.
    pub async fn spawn(
        bin: &Path,
        args: &[String],
        log: &Path,
        clear_env: &str,
    ) -> anyhow::Result<ExampleProcess> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .context("open the consumer log")?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if !clear_env.is_empty() && name.to_string_lossy().starts_with(clear_env) {
                command.env_remove(name);
            }
        }
        let mut watchdog = command.spawn().context("start sh")?;
        let lifeline = watchdog.stdin.take().context("watchdog stdin")?;
        let stdout = watchdog.stdout.take().context("watchdog stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the watchdog did not report the consumer's pid")??;
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("the watchdog reported {line:?} as the consumer's pid"))?;
        Ok(ExampleProcess {
            pid,
            watchdog,
            _lifeline: lifeline,
        })
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.watchdog.try_wait()? {
            bail!("the consumer exited unexpectedly ({})", describe(status));
        }
        Ok(())
    }

    /// Freezes the process (SIGSTOP): what it shows the broker stays as it is until
    /// [`resume`](Self::resume).
    pub async fn freeze(&self) -> anyhow::Result<()> {
        self.signal("STOP").await
    }

    /// Lets a frozen process go on (SIGCONT).
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT").await
    }

    async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .await
            .context("run kill")?;
        ensure!(status.success(), "kill -{signal} {}: {status}", self.pid);
        Ok(())
    }

    async fn exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(limit, self.watchdog.wait())
            .await
            .with_context(|| format!("the consumer did not exit within {limit:?}"))?
            .context("wait for the consumer")
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.ensure_running()?;
        self.signal("KILL").await?;
        let status = self.exit(Duration::from_secs(10)).await?;
        // The watchdog exits as `wait` reports its child: 128 + 9 for a SIGKILL.
        ensure!(
            status.code() == Some(128 + 9),
            "the consumer was killed but exited {}",
            describe(status)
        );
        Ok(())
    }

    /// SIGTERM, and wait for a clean exit: the consumer stops gracefully.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.ensure_running()?;
        self.signal("TERM").await?;
        let status = self.exit(limit).await?;
        ensure!(
            status.success(),
            "the consumer ended {} after SIGTERM",
            describe(status)
        );
        Ok(())
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(c) if c > 128 => format!("by signal {}", c - 128),
        Some(c) => format!("with status {c}"),
        None => status.to_string(),
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The example `name` of this crate, built once per test binary: the path in the environment
/// variable `env` if set, else `cargo build --workspace --example NAME` into the target directory
/// this test binary was built in (workspace-wide, so that features unify as in the test build
/// and nothing else is rebuilt).
pub fn example_binary(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    static BINS: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let build = || {
        let mut bins = BINS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        bins.entry(name.to_string())
            .or_insert_with(|| build_example(name, env).map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(build),
        _ => build(),
    }
}

fn build_example(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env).filter(|b| !b.is_empty()) {
        return Ok(bin.into());
    }
    // This test binary is target/<profile>/deps/<test>-<hash>; examples go to
    // target/<profile>/examples.
    let exe = std::env::current_exe().context("locate the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary is not in target/<profile>/deps")?;
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let how =
        format!("build it with `cargo build --workspace --example {name}`, or give one with {env}");
    let out = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--workspace", "--example", name, "--profile"])
        .arg(&profile)
        .output()
        .with_context(|| format!("run cargo to build the {name} example; {how}"))?;
    ensure!(
        out.status.success(),
        "cargo build --example {name} failed ({}); {how}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        bin.is_file(),
        "built the {name} example, but it is not at {}; {how}",
        bin.display()
    );
    Ok(bin)
}
