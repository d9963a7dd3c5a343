//! A tansu broker process for tests: started on a free loopback port, stopped when its value
//! is dropped or the test process ends in any way. Shared by the library's tests (through
//! `common/mod.rs`) and the CLI's (through `#[path]`), so it uses std and rdkafka only.
#![allow(dead_code)] // Each includer uses its own part.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;

/// How long tansu may take to accept connections and answer metadata.
const TANSU_START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The tansu binary: `SLUICEGATE_TANSU`, else `.tools/bin/tansu` at the workspace root, where
/// `scripts/install-tansu` puts it.
pub fn binary() -> PathBuf {
    match env_nonempty("SLUICEGATE_TANSU") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/tansu"),
    }
}

/// A tansu broker process, kept alive by an open pipe from this process.
///
/// It runs under a small `sh` watchdog: tansu in the background, and a reader of our pipe that
/// kills tansu when the pipe closes. The pipe closes when this value is dropped or, for the
/// instance kept in a static, when this process ends in any way (even a kill -9), so no tansu
/// outlives its test binary.
pub struct Tansu {
    pub bootstrap: String,
    watchdog: Child,
    lifeline: Option<ChildStdin>,
}

const WATCHDOG: &str = r#"
exec 3<&0 </dev/null
url="$1"; advertised="${2:-$1}"; shift 2
"$0" broker --listener-url "$url" --advertised-listener-url "$advertised" --storage-engine memory://tansu/ "$@" &
tansu=$!
{ read -r _ <&3; kill -9 "$tansu" 2>/dev/null; } &
exec 3<&-
wait "$tansu"
"#;

impl Tansu {
    /// Starts tansu from `bin`, trying a few free ports.
    pub fn start(bin: &Path) -> Result<Tansu, String> {
        Self::start_with(bin, &[], Some(&[]))
    }

    /// Starts tansu from `bin` with extra `broker_args` (such as `--authentication`). Ready
    /// means: a client with `client` settings gets metadata, or with `None`, the port accepts
    /// connections (for a broker no client can yet authenticate to).
    pub fn start_with(
        bin: &Path,
        broker_args: &[&str],
        client: Option<&[(&str, &str)]>,
    ) -> Result<Tansu, String> {
        Self::start_advertising(bin, None, broker_args, client)
    }

    /// Like [`start_with`](Self::start_with), but tansu tells clients (in metadata) to connect
    /// to `advertised` (`tcp://host:port`, such as a proxy in front of it) instead of to its
    /// own listener. `bootstrap` is still tansu's own address, which `client` must reach.
    pub fn start_advertising(
        bin: &Path,
        advertised: Option<&str>,
        broker_args: &[&str],
        client: Option<&[(&str, &str)]>,
    ) -> Result<Tansu, String> {
        let mut errors = Vec::new();
        // A free port may be taken between our check and tansu's bind: try a few.
        for _ in 0..3 {
            match Self::start_once(bin, advertised, broker_args, client) {
                Ok(t) => return Ok(t),
                Err(e) => errors.push(e),
            }
        }
        Err(format!(
            "could not start tansu ({}):\n{}",
            bin.display(),
            errors.join("\n")
        ))
    }

    fn start_once(
        bin: &Path,
        advertised: Option<&str>,
        broker_args: &[&str],
        client: Option<&[(&str, &str)]>,
    ) -> Result<Tansu, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log_path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tansu-{}-{port}.log", std::process::id()));
        let log = File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(bin)
            .arg(&url)
            .arg(advertised.unwrap_or(""))
            .args(broker_args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run sh to start tansu: {e}"))?;
        let lifeline = watchdog.stdin.take();
        let mut tansu = Tansu {
            bootstrap: format!("127.0.0.1:{port}"),
            watchdog,
            lifeline,
        };
        match tansu.wait_ready(port, client) {
            Ok(()) => {
                eprintln!(
                    "tansu listening on {} (log: {})",
                    tansu.bootstrap,
                    log_path.display()
                );
                Ok(tansu)
            }
            Err(e) => {
                drop(tansu);
                let mut text = String::new();
                let _ = File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(format!(
                    "tansu on port {port}: {e}; last lines of {}:\n{}",
                    log_path.display(),
                    tail.join("\n")
                ))
            }
        }
    }

    /// Waits until tansu accepts connections and answers a metadata request.
    fn wait_ready(&mut self, port: u16, settings: Option<&[(&str, &str)]>) -> Result<(), String> {
        let deadline = Instant::now() + TANSU_START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in settings.unwrap_or_default() {
            config.set(*k, *v);
        }
        let client: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.watchdog.try_wait() {
                return Err(format!("tansu exited early ({status})"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                if settings.is_none() {
                    return Ok(());
                }
                match client.fetch_metadata(None, Duration::from_secs(2)) {
                    Ok(m) if !m.brokers().is_empty() => return Ok(()),
                    Ok(_) => last = "metadata lists no broker".into(),
                    Err(e) => last = format!("metadata: {e}"),
                }
            } else {
                last = "connection refused".into();
            }
            // Waiting for another process to come up: polling is the only way to know.
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "not ready within {TANSU_START_TIMEOUT:?} (last: {last})"
        ))
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog kill tansu; then the watchdog itself ends.
        self.lifeline.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}
