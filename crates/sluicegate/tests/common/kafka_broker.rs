//! An Apache Kafka broker process for tests: a single-node KRaft cluster (combined controller
//! and broker), formatted with Kafka's own storage tool, started on free loopback ports with
//! its log directory in `target/tmp`, and stopped when its value is dropped or the test
//! process ends in any way. Shared by the library's tests (through `common/mod.rs`) and the
//! CLI's (through `#[path]`).
//!
//! Listeners, each on its own port:
//! - PLAINTEXT ([`KafkaBroker::bootstrap`]);
//! - SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 ([`KafkaBroker::sasl`]), the
//!   users in [`USERS`] (SCRAM credentials created when the storage is formatted);
//! - SSL with the certificates of [`KafkaBroker::pki`], a client certificate requested
//!   (verified against the test CA when one is presented) ([`KafkaBroker::ssl`]);
//! - SASL_SSL with the same mechanisms and certificates ([`KafkaBroker::sasl_ssl`]);
//! - SASL_PLAINTEXT with OAUTHBEARER and Kafka's unsecured JWT validator ([`KafkaBroker::oauth`]),
//!   with re-authentication on (KIP-368): a session ends when its token expires, so a client
//!   must log in again with a fresh token;
//! - SSL that requires a client certificate signed by the test CA ([`KafkaBroker::mtls`]);
//! - SSL with a server certificate signed by the test CA for another name, `broker.invalid`
//!   ([`KafkaBroker::misnamed`]), which hostname verification rejects.
//!
//! The jars come from `SLUICEGATE_KAFKA_HOME` or `.tools/kafka` at the workspace root, where
//! `scripts/install-kafka` puts them; Java from `SLUICEGATE_JAVA`, `JAVA_HOME` or the `PATH`.
#![allow(dead_code)] // Each includer uses its own part.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;

use super::pki::Pki;

/// How long the broker may take to answer metadata after it is started: about 10 s on 2 quiet
/// cores, 30 to more than 90 s on 2 cores under a load average above 20 (then a shorter bound
/// kills a broker about to be ready, and the next attempt starts from nothing).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// SASL users known to the broker: `(mechanism, user, password)`. PLAIN users are in the
/// listener's JAAS configuration; SCRAM users were added when the storage was formatted.
pub const USERS: &[(&str, &str, &str)] = &[
    ("PLAIN", "alice", "alice-Pa55word"),
    ("SCRAM-SHA-256", "bob", "bob-Pa55word"),
    ("SCRAM-SHA-512", "carol", "carol-Pa55word"),
];

/// The user and password the broker knows for `mechanism`.
pub fn user_for(mechanism: &str) -> (&'static str, &'static str) {
    USERS
        .iter()
        .find(|(m, _, _)| m.eq_ignore_ascii_case(mechanism))
        .map(|(_, u, p)| (*u, *p))
        .unwrap_or_else(|| panic!("no test user for mechanism {mechanism}"))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where Kafka's jars are: `SLUICEGATE_KAFKA_HOME`, else `.tools/kafka` at the workspace root.
pub fn home() -> PathBuf {
    match env_nonempty("SLUICEGATE_KAFKA_HOME") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/kafka"),
    }
}

fn java() -> PathBuf {
    if let Some(java) = env_nonempty("SLUICEGATE_JAVA") {
        return PathBuf::from(java);
    }
    if let Some(home) = env_nonempty("JAVA_HOME") {
        let java = Path::new(&home).join("bin/java");
        if java.is_file() {
            return java;
        }
    }
    PathBuf::from("java")
}

/// The loopback ports of one broker.
#[derive(Clone, Copy, Debug)]
struct Ports {
    plaintext: u16,
    sasl: u16,
    ssl: u16,
    sasl_ssl: u16,
    oauth: u16,
    mtls: u16,
    misnamed: u16,
    controller: u16,
}

impl Ports {
    fn free() -> Result<Ports, String> {
        // Held together so that no two are the same; released just before the broker binds.
        let listeners: Vec<TcpListener> = (0..8)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("no free loopback port: {e}"))?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port()).unwrap_or(0);
        Ok(Ports {
            plaintext: port(0),
            sasl: port(1),
            ssl: port(2),
            sasl_ssl: port(3),
            oauth: port(4),
            mtls: port(5),
            misnamed: port(6),
            controller: port(7),
        })
    }
}

/// An Apache Kafka broker process, kept alive by an open pipe from this process.
///
/// It runs under a small `sh` watchdog, like the tansu launcher: the broker in the background,
/// and a reader of our pipe that kills it when the pipe closes, which happens when this value is
/// dropped or, for the instance kept in a static, when this process ends in any way (even a
/// kill -9).
pub struct KafkaBroker {
    /// The PLAINTEXT listener.
    pub bootstrap: String,
    /// The SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl: String,
    /// The SSL listener (client certificate requested, verified against the test CA).
    pub ssl: String,
    /// The SASL_SSL listener (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_ssl: String,
    /// The SASL_PLAINTEXT listener with OAUTHBEARER (unsecured JWT validator); sessions end when
    /// their token expires (`connections.max.reauth.ms`, at most an hour), and the client must
    /// re-authenticate with a fresh token.
    pub oauth: String,
    /// The SSL listener that requires a client certificate signed by the test CA.
    pub mtls: String,
    /// The SSL listener whose certificate ([`Pki::misnamed_keystore`]) is signed by the test CA
    /// but for `broker.invalid`, not `127.0.0.1`: hostname verification rejects it.
    pub misnamed: String,
    /// The certificates of the SSL listeners; [`Pki::ca`] signed the broker's.
    pub pki: Pki,
    /// The broker's own log.
    pub log: PathBuf,
    ports: Ports,
    dir: PathBuf,
    process: Option<Process>,
}

struct Process {
    watchdog: Child,
    lifeline: Option<ChildStdin>,
}

const WATCHDOG: &str = r#"
exec 3<&0 </dev/null
pidfile="$1"; shift
"$0" "$@" &
broker=$!
echo "$broker" > "$pidfile"
{ read -r _ <&3; kill -9 "$broker" 2>/dev/null; } &
exec 3<&-
wait "$broker"
"#;

impl KafkaBroker {
    /// Formats a fresh log directory and starts the broker on free ports, trying a few times
    /// (a free port may be taken between our check and the broker's bind).
    pub fn start() -> Result<KafkaBroker, String> {
        let libs = home().join("libs");
        if !libs.is_dir() {
            return Err(format!(
                "no Apache Kafka at {}: run scripts/install-kafka (or set SLUICEGATE_KAFKA_HOME \
                 to a folder with libs/, or SLUICEGATE_TEST_BOOTSTRAP=host:port to use another \
                 broker)",
                home().display()
            ));
        }
        let mut errors = Vec::new();
        for _ in 0..3 {
            match Self::start_once() {
                Ok(broker) => return Ok(broker),
                Err(e) => errors.push(e),
            }
        }
        Err(format!(
            "could not start Apache Kafka ({}):\n{}",
            home().display(),
            errors.join("\n")
        ))
    }

    fn start_once() -> Result<KafkaBroker, String> {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale_dirs(tmp);
        let ports = Ports::free()?;
        let name = format!("kafka-{}-{}", std::process::id(), ports.plaintext);
        let dir = tmp.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let pki = Pki::generate_in(&dir).map_err(|e| format!("certificates: {e:#}"))?;
        let log = tmp.join(format!("{name}.log"));
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let mut broker = KafkaBroker {
            bootstrap: addr(ports.plaintext),
            sasl: addr(ports.sasl),
            ssl: addr(ports.ssl),
            sasl_ssl: addr(ports.sasl_ssl),
            oauth: addr(ports.oauth),
            mtls: addr(ports.mtls),
            misnamed: addr(ports.misnamed),
            pki,
            log,
            ports,
            dir,
            process: None,
        };
        std::fs::write(broker.properties(), broker.server_properties())
            .map_err(|e| format!("write server.properties: {e}"))?;
        broker.format()?;
        broker.launch()?;
        Ok(broker)
    }

    fn properties(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn server_properties(&self) -> String {
        let p = self.ports;
        let plain_users: String = USERS
            .iter()
            .filter(|(m, _, _)| *m == "PLAIN")
            .map(|(_, u, pw)| format!(" user_{u}=\"{pw}\""))
            .collect();
        let mut props = format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{plaintext},SASL://127.0.0.1:{sasl},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl},OAUTH://127.0.0.1:{oauth},MTLS://127.0.0.1:{mtls},MISNAMED://127.0.0.1:{misnamed},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{plaintext},SASL://127.0.0.1:{sasl},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl},OAUTH://127.0.0.1:{oauth},MTLS://127.0.0.1:{mtls},MISNAMED://127.0.0.1:{misnamed}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,OAUTH:SASL_PLAINTEXT,MTLS:SSL,MISNAMED:SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=3000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=500
log.segment.bytes=1048576
log.cleaner.backoff.ms=1000
log.cleaner.min.compaction.lag.ms=0
log.retention.check.interval.ms=60000
auto.create.topics.enable=true
delete.topic.enable=true
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};
listener.name.sasl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"broker\";
listener.name.oauth.oauthbearer.connections.max.reauth.ms=3600000
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
ssl.client.auth=requested
ssl.endpoint.identification.algorithm=
listener.name.mtls.ssl.client.auth=required
listener.name.misnamed.ssl.keystore.location={misnamed_keystore}
",
            controller = p.controller,
            plaintext = p.plaintext,
            sasl = p.sasl,
            ssl = p.ssl,
            sasl_ssl = p.sasl_ssl,
            oauth = p.oauth,
            mtls = p.mtls,
            misnamed = p.misnamed,
            data = self.data().display(),
            keystore = self.pki.server_keystore.display(),
            ca = self.pki.ca.display(),
            misnamed_keystore = self.pki.misnamed_keystore.display(),
        );
        // Extra broker settings for a test run (`key=value` lines), e.g. to try a setting.
        if let Some(extra) = env_nonempty("SLUICEGATE_KAFKA_SERVER_PROPERTIES") {
            props.push_str(&extra.replace(';', "\n"));
            props.push('\n');
        }
        props
    }

    fn java_command(&self, main: &str) -> Command {
        let mut cmd = Command::new(java());
        cmd.arg("-Xms256m")
            .arg("-Xmx1g")
            .arg("-XX:+UseG1GC")
            .arg("-Djava.awt.headless=true")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                home().join("log4j2.properties").display()
            ))
            .arg(format!("-Dkafka.log.file={}", self.log.display()))
            .arg("-cp")
            .arg(format!("{}/*", home().join("libs").display()))
            .arg(main)
            .env_remove("KAFKA_OPTS")
            .env_remove("CLASSPATH");
        cmd
    }

    /// `kafka-storage format --standalone`, with the SCRAM users.
    fn format(&self) -> Result<(), String> {
        let cluster_id = {
            // A KRaft cluster id is 16 random bytes, base64url without padding (22 characters).
            let bytes: [u8; 16] = rand::random();
            base64url(&bytes)
        };
        let mut cmd = self.java_command("kafka.tools.StorageTool");
        cmd.args(["format", "--standalone", "--ignore-formatted", "-t"])
            .arg(&cluster_id)
            .arg("-c")
            .arg(self.properties());
        for (mechanism, user, password) in USERS {
            if mechanism.starts_with("SCRAM") {
                cmd.arg("--add-scram")
                    .arg(format!("{mechanism}=[name={user},password={password}]"));
            }
        }
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", java().display()))?;
        if !output.status.success() {
            return Err(format!(
                "kafka-storage format failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), String> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let java = self.java_command("kafka.Kafka");
        let mut watchdog = Command::new("sh");
        watchdog
            .arg("-c")
            .arg(WATCHDOG)
            .arg(java.get_program())
            .arg(self.dir.join("broker.pid"))
            .args(java.get_args())
            .arg(self.properties())
            .env_remove("KAFKA_OPTS")
            .env_remove("CLASSPATH")
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        let mut watchdog = watchdog
            .spawn()
            .map_err(|e| format!("cannot run sh to start Kafka: {e}"))?;
        let lifeline = watchdog.stdin.take();
        self.process = Some(Process { watchdog, lifeline });
        match self.wait_ready() {
            Ok(()) => {
                eprintln!(
                    "Apache Kafka listening on {} (log: {})",
                    self.bootstrap,
                    self.log.display()
                );
                Ok(())
            }
            Err(e) => {
                self.stop();
                let mut text = String::new();
                let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(format!(
                    "Kafka on port {}: {e}; last lines of {}:\n{}",
                    self.ports.plaintext,
                    self.log.display(),
                    tail.join("\n")
                ))
            }
        }
    }

    /// Waits until the broker accepts connections and answers a metadata request.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports.plaintext));
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(process) = &mut self.process {
                if let Ok(Some(status)) = process.watchdog.try_wait() {
                    return Err(format!("Kafka exited early ({status})"));
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
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
        Err(format!("not ready within {START_TIMEOUT:?} (last: {last})"))
    }

    /// Kills the broker with SIGKILL (a crash: nothing flushed, no controlled shutdown) and
    /// waits until the process is gone. [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("broker.pid")) {
            let _ = Command::new("kill")
                .args(["-9", pid.trim()])
                .stdin(Stdio::null())
                .status();
        }
        self.stop();
    }

    /// Starts the broker again on the same log directory and ports after [`kill`](Self::kill).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    /// Whether the broker process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.process {
            Some(p) => matches!(p.watchdog.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        // Closing the pipe makes the watchdog kill the broker; then the watchdog itself ends.
        process.lifeline.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.watchdog.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = process.watchdog.kill();
        let _ = process.watchdog.wait();
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the log directories of brokers whose test process is gone (a broker kept in a
/// static is never dropped, so its directory stays behind).
fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("kafka-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if entry.path().is_dir() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// librdkafka settings that reach the listener at `bootstrap` of `broker` with `protocol`
/// (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`) and, for SASL, `mechanism` as the test
/// user of that mechanism.
pub fn client_settings(
    broker: &KafkaBroker,
    protocol: &str,
    mechanism: Option<&str>,
) -> Vec<(String, String)> {
    let bootstrap = match protocol {
        "PLAINTEXT" => &broker.bootstrap,
        "SSL" => &broker.ssl,
        "SASL_PLAINTEXT" => &broker.sasl,
        "SASL_SSL" => &broker.sasl_ssl,
        other => panic!("unknown security protocol {other}"),
    };
    let mut settings = vec![
        ("bootstrap.servers".to_string(), bootstrap.clone()),
        ("security.protocol".to_string(), protocol.to_string()),
    ];
    if protocol.contains("SSL") {
        settings.push((
            "ssl.ca.location".to_string(),
            broker.pki.ca.display().to_string(),
        ));
    }
    if let Some(mechanism) = mechanism {
        let (user, password) = user_for(mechanism);
        settings.push(("sasl.mechanism".to_string(), mechanism.to_string()));
        settings.push(("sasl.username".to_string(), user.to_string()));
        settings.push(("sasl.password".to_string(), password.to_string()));
    }
    settings
}
