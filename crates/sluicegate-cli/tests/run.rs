//! End-to-end: `sluicegate run` delivering to a real HTTP service (a small HTTP/1.1 server in
//! this test, answering per a script) and to a real child process (a Python worker written by
//! the test), on the embedded broker and Apache Kafka. Also the README's `run` example, as
//! written there.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sluicegate::dead_letter::headers;

use common::kafka::{committed, unique, Broker, LIMIT};
use common::records::{produce_records, read_all, read_all_uncommitted, Record};

// ---------------------------------------------------------------------------------------------
// The HTTP service.

/// One request the service received, and the status it answered.
#[derive(Clone, Debug)]
struct Served {
    /// Header names in lower case.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    status: u16,
}

impl Served {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn value(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the service answers to a request (its body, and how many times this body came
/// before, from 1): a status and a body.
type Script = dyn Fn(&str, usize) -> (u16, String) + Send + Sync;

/// An HTTP/1.1 service on a loopback port, keeping every request it answered.
struct Service {
    addr: SocketAddr,
    served: Arc<(Mutex<Vec<Served>>, Condvar)>,
    stopped: Arc<AtomicBool>,
}

impl Service {
    fn start(script: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        Service::serve(listener, Arc::new(script))
    }

    /// On `addr` (where nothing listens yet).
    fn start_on(
        addr: SocketAddr,
        script: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Service {
        let listener = TcpListener::bind(addr).expect("the service's port is free");
        Service::serve(listener, Arc::new(script))
    }

    fn serve(listener: TcpListener, script: Arc<Script>) -> Service {
        Service::serve_with(listener, script, None)
    }

    /// HTTPS with `tls`.
    fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        script: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        Service::serve_with(listener, Arc::new(script), Some(tls))
    }

    fn serve_with(
        listener: TcpListener,
        script: Arc<Script>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Service {
        let addr = listener.local_addr().expect("address");
        let served = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (s, stop) = (served.clone(), stopped.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, script, stop, tls) = (s.clone(), script.clone(), stop.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => connection(conn, &*script, &s, &stop),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let stream = rustls::StreamOwned::new(session, conn);
                        connection(stream, &*script, &s, &stop)
                    }
                });
            }
        });
        Service {
            addr,
            served,
            stopped,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Waits (bounded by `LIMIT`) until the requests served so far satisfy `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&[Served]) -> bool) -> Vec<Served> {
        let (lock, changed) = &*self.served;
        let deadline = Instant::now() + LIMIT;
        let mut served = lock.lock().unwrap();
        while !done(&served) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the service did not see {what} within {LIMIT:?}: {served:#?}"
            );
            served = changed.wait_timeout(served, left).unwrap().0;
        }
        served.clone()
    }

    fn served(&self) -> Vec<Served> {
        self.served.0.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves the requests of one connection (keep-alive) until it closes or the service stops.
fn connection(
    conn: impl Read + Write,
    script: &Script,
    served: &(Mutex<Vec<Served>>, Condvar),
    stopped: &AtomicBool,
) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || stopped.load(Ordering::SeqCst) {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let seen = {
            let s = served.0.lock().unwrap();
            s.iter().filter(|r| r.body == body).count() + 1
        };
        let (status, answer) = script(&text, seen);
        let response = format!(
            "HTTP/1.1 {status} Scripted\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let out = reader.get_mut();
        if out
            .write_all(response.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
        let (lock, changed) = served;
        lock.lock().unwrap().push(Served {
            headers,
            body,
            status,
        });
        changed.notify_all();
    }
}

/// A loopback port nothing listens on (bound and released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
}

/// `GET http://addr/path`: the status and body, or `None` when nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(LIMIT)).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The command, its configuration, the broker.

/// `sluicegate run` running in the background, its output collected.
struct Running {
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// `sluicegate run --config CONFIG`.
    fn start(config: &Path) -> Running {
        Running::spawn(
            Command::new(env!("CARGO_BIN_EXE_sluicegate"))
                .args(["run", "--config"])
                .arg(config)
                .env("RUST_LOG", "warn"),
        )
    }

    /// Starts `command`, collecting its stdout and stderr.
    fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        Running {
            out: Some(collect(child.stdout.take())),
            err: Some(collect(child.stderr.take())),
            child,
        }
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM not sent");
    }

    /// Waits (bounded by `LIMIT`) for the command to exit: its status, stdout and stderr.
    fn wait(mut self) -> (ExitStatus, String, String) {
        let status = common::exit_within(&mut self.child, LIMIT);
        let out = self
            .out
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        let err = self
            .err
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        let status = status.unwrap_or_else(|| {
            panic!("`sluicegate run` did not exit within {LIMIT:?}\nstdout:\n{out}\nstderr:\n{err}")
        });
        (status, out, err)
    }

    /// SIGTERM, then the exit, which must be a success.
    fn stop(self) -> String {
        self.terminate();
        let (status, out, err) = self.wait();
        assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
        err
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A topic of one partition holding `values` (keys `key-N`, a `trace` header), its
/// dead-letter topic, and a group name: what each test starts from.
struct Setup {
    bootstrap: String,
    topic: String,
    group: String,
}

impl Setup {
    fn new(broker: &Broker, values: &[String]) -> Setup {
        let topic = unique("run-in");
        broker.create_topic(&topic, 1);
        broker.create_topic(&format!("{topic}.dlq"), 1);
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let trace = vec![("trace".to_string(), Some(format!("t-{i}").into_bytes()))];
                (
                    format!("key-{i}").into_bytes(),
                    v.clone().into_bytes(),
                    trace,
                )
            })
            .collect();
        produce_records(broker.bootstrap(), &topic, &records);
        Setup {
            bootstrap: broker.bootstrap().to_string(),
            topic,
            group: unique("run-group"),
        }
    }

    /// A run file: the test's `kafka:` settings (plus `extra`, indented as its keys) and
    /// `sink`.
    fn config(&self, extra: &str, sink: &str) -> PathBuf {
        let yaml = format!(
            "kafka:
  bootstrap_servers: {}
  group_id: {}
  topics: [{}]
  session_timeout: 6s
  heartbeat_interval: 500ms
  commit_interval: 100ms
  retry: {{ max_attempts: 20, initial_backoff: 50ms, max_backoff: 200ms }}
  dead_letter: {{ enabled: true }}
{extra}sink:
{sink}",
            self.bootstrap, self.group, self.topic
        );
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.yaml", self.group));
        std::fs::write(&path, yaml).expect("the run file is written");
        path
    }

    /// The group's committed offset on partition 0.
    fn committed(&self) -> Option<i64> {
        committed(&self.bootstrap, &self.group, &self.topic, 1)[0]
    }

    /// Waits (bounded by `LIMIT`) until the group has committed `offset` on partition 0.
    fn await_committed(&self, offset: i64) {
        let deadline = Instant::now() + LIMIT;
        while self.committed() != Some(offset) {
            assert!(
                Instant::now() < deadline,
                "offset {offset} not committed within {LIMIT:?}: {:?}",
                self.committed()
            );
            // Commits are visible only by asking the broker.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The dead letters: `count` of them, read from the dead-letter topic.
    fn dead_letters(&self, count: usize) -> Vec<Record> {
        read_all(&self.bootstrap, &format!("{}.dlq", self.topic), 1, count)
    }
}

fn header(record: &Record, name: &str) -> String {
    record
        .2
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn values(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n}-{i}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The HTTP sink.

/// 2xx: done; 503 and 429, then 200: retried, then done; 422: dead-lettered with the status
/// and the body's start in its diagnostic headers. All committed; the request headers carry
/// the record.
fn http_outcomes(broker: &Broker) {
    let values = values(&["ok", "flaky", "bad", "busy", "ok"]);
    let setup = Setup::new(broker, &values);
    let service = Service::start(|body, seen| match body.split('-').next() {
        Some("flaky") if seen == 1 => (503, "down for a moment".into()),
        Some("busy") if seen == 1 => (429, "slow down".into()),
        Some("bad") => (422, "no such customer".into()),
        _ => (200, "thanks".into()),
    });
    let sink = format!("  http:\n    url: {}\n    timeout: 5s\n", service.url());
    let run = Running::start(&setup.config("", &sink));
    setup.await_committed(values.len() as i64);
    let err = run.stop();

    let served = service.served();
    let statuses: Vec<(String, u16)> = served.iter().map(|s| (s.value(), s.status)).collect();
    let want = [
        ("ok-0", 200),
        ("flaky-1", 503),
        ("flaky-1", 200),
        ("bad-2", 422),
        ("busy-3", 429),
        ("busy-3", 200),
        ("ok-4", 200),
    ];
    let want: Vec<(String, u16)> = want.iter().map(|(v, s)| (v.to_string(), *s)).collect();
    assert_eq!(statuses, want, "stderr:\n{err}");
    let first = &served[0];
    assert_eq!(first.header("sluicegate-topic"), setup.topic);
    assert_eq!(first.header("sluicegate-partition"), "0");
    assert_eq!(first.header("sluicegate-offset"), "0");
    assert_eq!(first.header("sluicegate-key"), "key-0");
    assert_eq!(first.header("kafka-header-trace"), "t-0");
    assert!(
        !first.header("sluicegate-timestamp").is_empty(),
        "{first:?}"
    );

    let dead = setup.dead_letters(1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, b"bad-2");
    assert_eq!(header(&dead[0], headers::ERROR_KIND), "permanent");
    let message = header(&dead[0], headers::ERROR_MESSAGE);
    assert!(message.contains("HTTP 422"), "{message}");
    assert!(message.contains("no such customer"), "{message}");
}
on_brokers!(http_outcomes => http_sink_outcomes: embedded, kafka, tansu);

/// `sink.reply_to`: each 2xx answer's body is written to the reply topic, keyed by the
/// message's key, naming the message in its headers; a message whose service failed has none.
fn http_replies(broker: &Broker) {
    let values = values(&["ok", "bad", "ok"]);
    let setup = Setup::new(broker, &values);
    let replies = format!("{}.replies", setup.topic);
    broker.create_topic(&replies, 1);
    let service = Service::start(|body, _| match body.split('-').next() {
        Some("bad") => (422, "no".into()),
        _ => (200, format!("re:{body}")),
    });
    let sink = format!(
        "  http:\n    url: {}\n    timeout: 5s\n  reply_to: {replies}\n",
        service.url()
    );
    let run = Running::start(&setup.config("", &sink));
    setup.await_committed(values.len() as i64);
    run.stop();
    let written = read_all(&setup.bootstrap, &replies, 1, 2);
    let shown: Vec<(String, String, String)> = written
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.0).into_owned(),
                String::from_utf8_lossy(&r.1).into_owned(),
                header(r, "sluicegate-source-offset"),
            )
        })
        .collect();
    let want = [("key-0", "re:ok-0", "0"), ("key-2", "re:ok-2", "2")];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(k, v, o)| (k.to_string(), v.to_string(), o.to_string()))
        .collect();
    assert_eq!(shown, want);
    assert_eq!(header(&written[0], "sluicegate-source-topic"), setup.topic);
}
on_brokers!(http_replies => http_sink_replies: embedded, kafka, tansu);

/// `sink.transactional_id`: replies are written in the transaction that commits their
/// messages' offsets. The service fails one message once, after the messages before it got
/// their replies: the failed call writes nothing and is retried, and a `read_committed` reader
/// sees each message's reply exactly once, in order, and so does a `read_uncommitted` one (no
/// reply reached the broker outside a committed transaction). On Apache Kafka only: the
/// embedded broker keeps no transaction markers.
fn exactly_once_replies(broker: &Broker) {
    let values = values(&["ok", "ok", "flaky", "ok"]);
    let setup = Setup::new(broker, &values);
    let replies = format!("{}.replies", setup.topic);
    broker.create_topic(&replies, 1);
    let service = Service::start(|body, seen| match body.split('-').next() {
        Some("flaky") if seen == 1 => (503, "not yet".into()),
        _ => (200, format!("re:{body}")),
    });
    let sink = format!(
        "  http:\n    url: {}\n    timeout: 5s\n  reply_to: {replies}\n  transactional_id: {}\n",
        service.url(),
        unique("run-txn")
    );
    let run = Running::start(&setup.config("", &sink));
    setup.await_committed(values.len() as i64);
    run.stop();
    let offsets = |records: &[Record]| -> Vec<String> {
        records
            .iter()
            .map(|r| header(r, "sluicegate-source-offset"))
            .collect()
    };
    let committed = offsets(&read_all(&setup.bootstrap, &replies, 1, values.len()));
    assert_eq!(committed, ["0", "1", "2", "3"]);
    let all = offsets(&read_all_uncommitted(
        &setup.bootstrap,
        &replies,
        1,
        values.len(),
    ));
    assert_eq!(all, ["0", "1", "2", "3"]);
}
on_brokers!(exactly_once_replies => exactly_once_replies_are_written_once: kafka);

/// The service is down (nothing listens): nothing is committed, the breaker opens and the
/// worker reports not ready; once it listens, every record is delivered and committed, and the
/// worker is ready again (the breaker closed).
fn http_service_down_then_up(broker: &Broker) {
    let values = values(&["a", "b", "c", "d", "e"]);
    let setup = Setup::new(broker, &values);
    let (service_addr, metrics_addr) = (free_port(), free_port());
    let sink = format!(
        "  http:\n    url: http://{service_addr}/events\n    timeout: 2s\n  \
         circuit_breaker: {{ consecutive_failures: 3, cool_down: 500ms }}\n"
    );
    let extra = format!("  metrics_addr: {metrics_addr}\n");
    let run = Running::start(&setup.config(&extra, &sink));
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some((503, body)) = get(metrics_addr, "/health/ready") {
            if body.contains("circuit_breaker") && body.contains("open") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the breaker did not open within {LIMIT:?}"
        );
        // The health endpoint is read, not pushed.
        std::thread::sleep(Duration::from_millis(100));
    }
    // The runtime may commit its starting position, never past an undelivered record.
    let early = setup.committed();
    assert!(
        matches!(early, None | Some(0)),
        "committed {early:?} while the service was down"
    );

    let service = Service::start_on(service_addr, |_, _| (200, String::new()));
    setup.await_committed(values.len() as i64);
    let deadline = Instant::now() + LIMIT;
    while get(metrics_addr, "/health/ready").map(|(status, _)| status) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready again within {LIMIT:?}"
        );
        // The health endpoint is read, not pushed.
        std::thread::sleep(Duration::from_millis(100));
    }
    run.stop();
    let mut delivered: Vec<String> = service.served().iter().map(Served::value).collect();
    delivered.dedup();
    assert_eq!(delivered, values, "every record, in order");
}
on_brokers!(http_service_down_then_up => http_sink_service_down_then_up: embedded, kafka, tansu);

/// SIGTERM while the service works on a record: the worker finishes what is in flight,
/// commits it, and exits with success; what it did not start is left uncommitted.
fn http_sigterm_drains(broker: &Broker) {
    let values: Vec<String> = (0..20).map(|i| format!("slow-{i}")).collect();
    let setup = Setup::new(broker, &values);
    let service = Service::start(|_, _| {
        // The service's own pace: each answer takes a while.
        std::thread::sleep(Duration::from_millis(300));
        (200, String::new())
    });
    let sink = format!("  http:\n    url: {}\n", service.url());
    let run = Running::start(&setup.config("", &sink));
    service.wait_for("two requests", |s| s.len() >= 2);
    run.stop();
    let answered = service.served().len() as i64;
    assert!(answered < values.len() as i64, "not mid-stream: {answered}");
    assert_eq!(
        setup.committed(),
        Some(answered),
        "what was answered is committed"
    );
}
on_brokers!(http_sigterm_drains => http_sink_sigterm_drains: embedded, kafka, tansu);

/// With `batch:` set, batches are POSTed as JSON arrays of records.
fn http_batches(broker: &Broker) {
    let values = values(&["a", "b", "c", "d"]);
    let setup = Setup::new(broker, &values);
    let service = Service::start(|_, _| (200, String::new()));
    let sink = format!("  http:\n    url: {}\n", service.url());
    let extra = "  batch: { max_messages: 10, max_wait: 500ms }\n";
    let run = Running::start(&setup.config(extra, &sink));
    setup.await_committed(values.len() as i64);
    run.stop();
    let mut seen = Vec::new();
    for request in service.served() {
        assert_eq!(request.header("content-type"), "application/json");
        let batch: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON");
        let batch = batch.as_array().expect("an array").clone();
        assert_eq!(
            request.header("sluicegate-batch-size"),
            batch.len().to_string()
        );
        for r in batch {
            assert_eq!(r["topic"], setup.topic.as_str());
            assert_eq!(r["headers"]["trace"], format!("t-{}", r["offset"]));
            seen.push(r["value"].as_str().expect("text").to_string());
        }
    }
    seen.dedup();
    assert_eq!(seen, values);
}
on_brokers!(http_batches => http_sink_batches: embedded, kafka, tansu);

/// An HTTPS service that trusts only the test CA's client certificates: the sink trusts the
/// test CA (`tls.ca_file`) and presents its client certificate; records are delivered.
#[test]
fn http_sink_delivers_over_mutual_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("run-pki"));
    std::fs::create_dir_all(&dir).expect("the certificates' directory");
    let pki = common::pki::Pki::generate_in(&dir).expect("test certificates");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).expect("CA") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("a trusted CA");
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_keystore)
        .expect("server chain")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_keystore).expect("server key");
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .expect("server config");
    let service = Service::start_tls(Arc::new(tls), |_, _| (200, String::new()));

    let broker = Broker::embedded();
    let values = values(&["a", "b"]);
    let setup = Setup::new(&broker, &values);
    let sink = format!(
        "  http:\n    url: https://127.0.0.1:{}/events\n    tls:\n      ca_file: {}\n      \
         cert_file: {}\n      key_file: {}\n",
        service.addr.port(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let run = Running::start(&setup.config("", &sink));
    setup.await_committed(values.len() as i64);
    run.stop();
    let delivered: Vec<String> = service.served().iter().map(Served::value).collect();
    assert_eq!(delivered, values);
}

// ---------------------------------------------------------------------------------------------
// The exec sink.

/// A Python worker, started as `worker.py DIR FAILED_STARTS`: its first FAILED_STARTS starts
/// exit at once (counted in `DIR/starts`); then it answers by the value's prefix (`ok`,
/// `retry` once then ok, `fail`, `skip`, `crash`: exits the first time it ever sees one, then
/// ok), and logs every request to `DIR/log` as `pid offset value`.
const WORKER: &str = r#"
import json, os, sys
state, failed_starts = sys.argv[1], int(sys.argv[2])
starts_file = os.path.join(state, "starts")
starts = int(open(starts_file).read()) if os.path.exists(starts_file) else 0
with open(starts_file, "w") as f:
    f.write(str(starts + 1))
if starts < failed_starts:
    os._exit(1)
seen = {}
for line in sys.stdin:
    r = json.loads(line)
    v = r["value"]
    with open(os.path.join(state, "log"), "a") as log:
        log.write(f"{os.getpid()} {r['offset']} {v}\n")
    kind = v.split("-")[0]
    seen[v] = seen.get(v, 0) + 1
    answer = {"id": r["id"], "result": "ok", "value": "re:" + v}
    if kind == "retry" and seen[v] == 1:
        answer = {"id": r["id"], "result": "retry", "error": "not yet"}
    elif kind == "fail":
        answer = {"id": r["id"], "result": "fail", "error": f"refused {v}"}
    elif kind == "skip":
        answer = {"id": r["id"], "result": "skip"}
    elif kind == "crash" and not os.path.exists(os.path.join(state, "crashed")):
        open(os.path.join(state, "crashed"), "w").close()
        os._exit(3)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"#;

/// A directory with the worker script; its requests are logged there.
fn worker_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("run-worker"));
    std::fs::create_dir_all(&dir).expect("the worker's directory");
    std::fs::write(dir.join("worker.py"), WORKER).expect("the worker is written");
    dir
}

fn exec_sink(dir: &Path, in_flight: usize) -> String {
    exec_sink_failing_starts(dir, in_flight, 0)
}

/// The worker of `dir`, whose first `failed_starts` starts exit at once.
fn exec_sink_failing_starts(dir: &Path, in_flight: usize, failed_starts: u32) -> String {
    format!(
        "  exec:\n    command: [python3, {}, {}, '{failed_starts}']\n    in_flight: {in_flight}\n",
        dir.join("worker.py").display(),
        dir.display()
    )
}

/// `(pid, offset, value)` of every request the worker logged.
fn worker_log(dir: &Path) -> Vec<(String, i64, String)> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let pid = parts.next().unwrap_or_default().to_string();
            let offset = parts.next().and_then(|o| o.parse().ok()).unwrap_or(-1);
            (pid, offset, parts.next().unwrap_or_default().to_string())
        })
        .collect()
}

/// ok, retry, fail and skip answers: retried, dead-lettered with the worker's error, skipped;
/// all committed.
fn exec_outcomes(broker: &Broker) {
    let values = values(&["ok", "retry", "fail", "skip", "ok"]);
    let setup = Setup::new(broker, &values);
    let dir = worker_dir();
    let run = Running::start(&setup.config("", &exec_sink(&dir, 4)));
    setup.await_committed(values.len() as i64);
    run.stop();
    let asked: Vec<String> = worker_log(&dir).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(
        asked,
        ["ok-0", "retry-1", "retry-1", "fail-2", "skip-3", "ok-4"]
    );
    let dead = setup.dead_letters(1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, b"fail-2");
    assert_eq!(header(&dead[0], headers::ERROR_KIND), "permanent");
    assert_eq!(header(&dead[0], headers::ERROR_MESSAGE), "refused fail-2");
}
on_brokers!(exec_outcomes => exec_sink_outcomes: embedded, kafka, tansu);

/// `sink.reply_to` with the exec sink: an `ok` answer's `value` is the reply.
fn exec_replies(broker: &Broker) {
    let values = values(&["ok", "skip", "ok"]);
    let setup = Setup::new(broker, &values);
    let replies = format!("{}.replies", setup.topic);
    broker.create_topic(&replies, 1);
    let dir = worker_dir();
    let sink = format!("{}  reply_to: {replies}\n", exec_sink(&dir, 2));
    let run = Running::start(&setup.config("", &sink));
    setup.await_committed(values.len() as i64);
    run.stop();
    let written: Vec<(Vec<u8>, Vec<u8>)> = read_all(&setup.bootstrap, &replies, 1, 2)
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(
        written,
        [
            (b"key-0".to_vec(), b"re:ok-0".to_vec()),
            (b"key-2".to_vec(), b"re:ok-2".to_vec())
        ]
    );
}
on_brokers!(exec_replies => exec_sink_replies: embedded, kafka, tansu);

/// The worker dies mid-stream: it is started again, the request it died on is retried, and
/// every record is answered and committed.
fn exec_child_dies(broker: &Broker) {
    let values: Vec<String> = (0..10)
        .map(|i| match i {
            4 => format!("crash-{i}"),
            _ => format!("ok-{i}"),
        })
        .collect();
    let setup = Setup::new(broker, &values);
    let dir = worker_dir();
    let run = Running::start(&setup.config("  ordering: unordered\n", &exec_sink(&dir, 4)));
    setup.await_committed(values.len() as i64);
    let err = run.stop();
    assert!(err.contains("the worker process exited"), "{err}");
    let log = worker_log(&dir);
    let crash: Vec<&String> = log
        .iter()
        .filter(|(_, o, _)| *o == 4)
        .map(|(p, _, _)| p)
        .collect();
    assert!(
        crash.len() >= 2,
        "the record it died on was not retried: {log:?}"
    );
    assert_ne!(
        crash[0],
        crash[crash.len() - 1],
        "not a new process: {log:?}"
    );
    for (i, v) in values.iter().enumerate() {
        assert!(
            log.iter()
                .any(|(_, o, logged)| *o == i as i64 && logged == v),
            "offset {i} never reached the worker: {log:?}"
        );
    }
    assert!(setup.dead_letters(0).is_empty());
}
on_brokers!(exec_child_dies => exec_sink_child_dies: embedded, kafka, tansu);

/// The worker exits at once on each of its first starts (a crash loop): it is started again
/// with backoff until it stays up, and then every record is delivered and committed.
fn exec_crash_loop(broker: &Broker) {
    let values = values(&["ok", "ok", "ok"]);
    let setup = Setup::new(broker, &values);
    let dir = worker_dir();
    let run = Running::start(&setup.config("", &exec_sink_failing_starts(&dir, 4, 4)));
    setup.await_committed(values.len() as i64);
    let err = run.stop();
    let starts: u32 = std::fs::read_to_string(dir.join("starts"))
        .expect("starts counted")
        .parse()
        .expect("a number");
    assert_eq!(
        starts, 5,
        "four failed starts, then one that stayed up\n{err}"
    );
    assert_eq!(err.matches("; starting it again in").count(), 4, "{err}");
    let asked: Vec<String> = worker_log(&dir).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(asked, values);
}
on_brokers!(exec_crash_loop => exec_sink_crash_loop: embedded, kafka, tansu);

/// The value of the first sample of `family` in Prometheus text whose labels contain `label`.
fn metric(text: &str, family: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A slow service (each answer takes 200 ms) behind small buffers, for longer than
/// `max.poll.interval.ms`: the partition is paused (backpressure) rather than the consumer
/// evicted; every record is delivered once and committed, after a single assignment.
fn http_slow_service(broker: &Broker) {
    let values: Vec<String> = (0..40).map(|i| format!("slow-{i}")).collect();
    let setup = Setup::new(broker, &values);
    let service = Service::start(|_, _| {
        // The service's own pace.
        std::thread::sleep(Duration::from_millis(200));
        (200, String::new())
    });
    let metrics_addr = free_port();
    let extra = format!(
        "  metrics_addr: {metrics_addr}\n  max_poll_interval: 6s\n  max_in_flight: 4\n  \
         buffer: {{ partition_messages: 4, total_messages: 4 }}\n"
    );
    let sink = format!("  http:\n    url: {}\n", service.url());
    let run = Running::start(&setup.config(&extra, &sink));
    let deadline = Instant::now() + LIMIT;
    loop {
        let paused = get(metrics_addr, "/metrics")
            .and_then(|(_, text)| metric(&text, "sluicegate_partitions_paused", ""));
        if paused == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "never paused within {LIMIT:?}");
        // The metrics are read, not pushed.
        std::thread::sleep(Duration::from_millis(50));
    }
    setup.await_committed(values.len() as i64);
    let (_, text) = get(metrics_addr, "/metrics").expect("metrics");
    run.stop();
    let delivered: Vec<String> = service.served().iter().map(Served::value).collect();
    assert_eq!(delivered, values, "each record once, in order");
    assert_eq!(
        metric(&text, "sluicegate_rebalances_total", "kind=\"assign\""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "sluicegate_rebalances_total", "kind=\"revoke\"").unwrap_or(0.0),
        0.0,
        "{text}"
    );
}
on_brokers!(http_slow_service => http_sink_slow_service: embedded, kafka, tansu);

// ---------------------------------------------------------------------------------------------
// Bad configuration.

/// An unknown sink, a bad URL, a missing or unstartable command: a clear error naming the key,
/// and nothing consumed.
#[test]
fn bad_sinks_are_refused_before_consuming() {
    let broker = Broker::embedded();
    let setup = Setup::new(&broker, &values(&["a"]));
    let cases = [
        (
            "  kafka_topic: { name: out }\n",
            "unknown field `kafka_topic`",
        ),
        (
            "  http: { url: 'localhost 8080' }\n",
            "sink.http.url: `localhost 8080` is not a URL",
        ),
        ("  exec: { in_flight: 2 }\n", "sink.exec.command: missing"),
        (
            "  exec: { command: [/nonexistent/worker] }\n",
            "sink.exec.command: cannot start `/nonexistent/worker`",
        ),
    ];
    for (sink, want) in cases {
        let config = setup.config("", sink);
        let (ok, out, err) =
            common::run(&["run", "--config", &config.display().to_string()], LIMIT);
        assert!(!ok, "accepted {sink}\nstdout:\n{out}\nstderr:\n{err}");
        assert!(
            err.contains(want),
            "for {sink} expected `{want}` in:\n{err}"
        );
    }
    let config = setup.config(
        "  max_in_flight: 0\n",
        "  http: { url: 'http://127.0.0.1:1/' }\n",
    );
    let (ok, _, err) = common::run(&["run", "--config", &config.display().to_string()], LIMIT);
    assert!(!ok && err.contains("max_in_flight"), "{err}");
    assert_eq!(setup.committed(), None, "something was consumed");
}

// ---------------------------------------------------------------------------------------------
// The README.

/// The README's `sluicegate run` section.
fn readme_run_section(root: &Path) -> String {
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    readme
        .split("\n### Run a worker: `sluicegate run`\n")
        .nth(1)
        .expect("the README has a `sluicegate run` section")
        .to_string()
}

/// The README's `sluicegate run` example runs as written, from the repository's root, and the
/// worker configuration it shows is the example file's.
#[test]
fn the_readme_run_example_works_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let section = readme_run_section(&root);
    let command = section
        .lines()
        .find_map(|l| l.strip_prefix("cargo run -p sluicegate-cli -- "))
        .expect("the section runs `cargo run -p sluicegate-cli -- ...`");
    let file = std::fs::read_to_string(root.join("examples/workers/echo.yaml")).expect("example");
    assert!(
        section.contains(&file),
        "the README shows another echo.yaml than the file's"
    );
    let args: Vec<&str> = command.split_whitespace().collect();
    let run = Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args(&args)
            .current_dir(&root),
    );
    let (status, out, err) = run.wait();
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("every sample record delivered"), "{out}");
    let echoed = err.lines().filter(|l| l.starts_with("signups/")).count();
    assert_eq!(echoed, 5, "{err}");
}

/// The README's HTTP sequence (a local HTTP service started in the background, a worker
/// delivering to it, the service stopped) runs as written in bash, from the repository's root,
/// with the test's binary in place of `cargo run`; the service receives every record.
#[test]
fn the_readme_http_sequence_works_as_written() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let section = readme_run_section(&root);
    let script = section
        .split("```sh\n")
        .filter_map(|block| block.split("\n```").next())
        .find(|block| block.contains("http_service.py"))
        .expect("the section has a shell block starting examples/workers/http_service.py");
    let file = std::fs::read_to_string(root.join("examples/workers/http.yaml")).expect("example");
    assert!(
        section.contains(&file),
        "the README shows another http.yaml than the file's"
    );
    let binary = format!("{} ", env!("CARGO_BIN_EXE_sluicegate"));
    assert!(
        script.contains("cargo run -p sluicegate-cli -- "),
        "{script}"
    );
    let script = script.replace("cargo run -p sluicegate-cli -- ", &binary);
    // Not `bash -e`: the last line must stop the service whatever the worker did, or the
    // service would keep the output pipe open.
    let run = Running::spawn(
        Command::new("bash")
            .args(["-c", &script])
            .current_dir(&root),
    );
    let (status, out, err) = run.wait();
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("every sample record delivered"),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    let received = out.lines().filter(|l| l.starts_with("signups/")).count();
    assert_eq!(received, 5, "stdout:\n{out}\nstderr:\n{err}");
}

fn collect(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    let mut pipe = pipe.expect("piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}
