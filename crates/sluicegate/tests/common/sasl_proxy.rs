//! A SASL front end for tests against a broker that cannot log anyone in (tansu 0.6: with
//! `--authentication` it offers SCRAM only, and its storage engine keeps no SCRAM credential,
//! so no user can exist). It sits on a loopback port in front of a plaintext tansu and, on
//! each connection, does what a Kafka broker's SASL listener does before any other request:
//! - forwards ApiVersions to the broker and returns its answer with SaslHandshake (17) and
//!   SaslAuthenticate (36) listed at versions 0 to 1, the ones it serves (whatever the
//!   broker listed for them);
//! - answers SaslHandshake and SaslAuthenticate itself, checking PLAIN, SCRAM-SHA-256 and
//!   SCRAM-SHA-512 (RFC 5802/7677) credentials against its own users;
//! - after a successful authentication, copies bytes both ways between client and broker.
//!
//! Any other request before authenticating closes the connection and is recorded, so a test
//! that sees records produced and consumed through the proxy knows each client logged in.
//! Clients reach the broker only through the proxy if the broker advertises the proxy's
//! address in metadata (see `Tansu::start_advertising`).
//!
//! What this proves: librdkafka's SASL client (handshake, PLAIN, the SCRAM exchange with
//! nonces, salt, iterations and the server signature it verifies) and Sluicegate's settings
//! for it, end to end with a consumer, its producers and its admin client. What it does not:
//! a Kafka broker's own SASL server and credential store.
#![allow(dead_code)] // Each test uses its own part.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use anyhow::{bail, ensure, Context as _};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
/// Kafka's `UNSUPPORTED_SASL_MECHANISM`.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's `ILLEGAL_SASL_STATE`.
const ILLEGAL_SASL_STATE: i16 = 34;
/// Kafka's `SASL_AUTHENTICATION_FAILED`.
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// The SCRAM iteration count; Kafka's minimum.
const SCRAM_ITERATIONS: u32 = 4096;
/// No Kafka frame of the SASL phase comes near this; more means a broken client.
const MAX_FRAME: usize = 1 << 20;

/// A SASL mechanism the proxy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// The three of them.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// Its name in `sasl.mechanism` and in the SaslHandshake request.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash: its PBKDF2, HMAC and digest algorithms.
    fn scram(
        self,
    ) -> Option<(
        pbkdf2::Algorithm,
        hmac::Algorithm,
        &'static digest::Algorithm,
    )> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some((
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
            )),
            Mechanism::ScramSha512 => Some((
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
            )),
        }
    }
}

/// What the proxy saw on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `user` authenticated with `mechanism`: the connection is now relayed to the broker.
    Authenticated { mechanism: String, user: String },
    /// SaslAuthenticate answered with `SASL_AUTHENTICATION_FAILED` (58).
    Rejected {
        mechanism: String,
        user: String,
        reason: String,
    },
    /// SaslHandshake for a mechanism that is not enabled, answered with
    /// `UNSUPPORTED_SASL_MECHANISM` (33).
    UnsupportedMechanism(String),
    /// The connection broke the protocol (such as a request other than ApiVersions or SASL
    /// before authenticating) or failed; it was closed.
    Failed(String),
}

/// SCRAM credentials as a broker stores them (RFC 5802 section 3): never the password.
struct ScramCredential {
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramCredential {
    fn new(mechanism: Mechanism, password: &str) -> ScramCredential {
        let (kdf, mac, _) = mechanism.scram().expect("a SCRAM mechanism");
        let salt: [u8; 16] = rand::random();
        let salted = salted_password(kdf, mac, password, &salt, SCRAM_ITERATIONS);
        let client_key = hmac_of(mac, &salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: digest::digest(digest_of(mechanism), &client_key)
                .as_ref()
                .to_vec(),
            server_key: hmac_of(mac, &salted, b"Server Key"),
        }
    }
}

fn digest_of(mechanism: Mechanism) -> &'static digest::Algorithm {
    mechanism.scram().expect("a SCRAM mechanism").2
}

fn salted_password(
    kdf: pbkdf2::Algorithm,
    mac: hmac::Algorithm,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0; mac.digest_algorithm().output_len()];
    let iterations = NonZeroU32::new(iterations).expect("iterations > 0");
    pbkdf2::derive(kdf, iterations, salt, password.as_bytes(), &mut out);
    out
}

fn hmac_of(mac: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(mac, key), data)
        .as_ref()
        .to_vec()
}

/// The enabled mechanisms and the users, with their PLAIN passwords and SCRAM credentials.
struct Auth {
    mechanisms: Vec<Mechanism>,
    passwords: BTreeMap<String, String>,
    scram: BTreeMap<(Mechanism, String), ScramCredential>,
}

/// A SASL front end on a loopback port; stops (with all its connections) when dropped.
pub struct SaslProxy {
    pub addr: SocketAddr,
    events: Arc<Mutex<Vec<Event>>>,
    task: JoinHandle<()>,
}

impl SaslProxy {
    /// A loopback port for the proxy, bound now so that the broker can advertise it before
    /// the proxy [serves](Self::serve) it.
    pub async fn bind() -> anyhow::Result<TcpListener> {
        TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the SASL proxy port")
    }

    /// Serves SASL with `mechanisms` for `users` (name, password) on `listener`, relaying
    /// authenticated connections to `backend`.
    pub fn serve(
        listener: TcpListener,
        mechanisms: &[Mechanism],
        users: &[(&str, &str)],
        backend: SocketAddr,
    ) -> anyhow::Result<SaslProxy> {
        let addr = listener.local_addr()?;
        let mut scram = BTreeMap::new();
        for m in mechanisms.iter().filter(|m| m.scram().is_some()) {
            for (user, password) in users {
                scram.insert((*m, user.to_string()), ScramCredential::new(*m, password));
            }
        }
        let auth = Arc::new(Auth {
            mechanisms: mechanisms.to_vec(),
            passwords: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            scram,
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let (auth, seen) = (auth.clone(), seen.clone());
                        connections.spawn(async move {
                            let record = |e: Event| seen.lock().unwrap().push(e);
                            match authenticate(tcp, backend, &auth, &record).await {
                                Ok(Some((mut client, mut broker))) => {
                                    // Either side closing ends the relay: nothing to record.
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker)
                                        .await;
                                }
                                Ok(None) => {}
                                Err(e) => record(Event::Failed(format!("{e:#}"))),
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(SaslProxy { addr, events, task })
    }

    /// What happened so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Whether `user` authenticated with `mechanism` at least once, and nothing was
    /// rejected, refused or failed.
    pub fn only_logins_of(&self, mechanism: Mechanism, user: &str) -> bool {
        let events = self.events();
        let login = Event::Authenticated {
            mechanism: mechanism.name().into(),
            user: user.into(),
        };
        events.contains(&login) && events.iter().all(|e| *e == login)
    }
}

impl Drop for SaslProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one Kafka frame (without its length); `None` at a clean end of stream.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("read a frame length"),
    }
    let len = i32::from_be_bytes(len);
    ensure!(
        (0..=MAX_FRAME as i32).contains(&len),
        "frame length {len} out of range"
    );
    let mut frame = vec![0; len as usize];
    stream
        .read_exact(&mut frame)
        .await
        .context("read a frame")?;
    Ok(Some(frame))
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> anyhow::Result<()> {
    let len = i32::try_from(frame.len()).context("frame too long")?;
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    stream.write_all(&out).await.context("write a frame")?;
    stream.flush().await.context("flush a frame")
}

/// A cursor over a Kafka message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self.pos.checked_add(n).context("length overflow")?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .with_context(|| format!("truncated message: {n} bytes at {}", self.pos))?;
        self.pos = end;
        Ok(bytes)
    }

    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }

    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }

    fn uvarint(&mut self) -> anyhow::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        bail!("unsigned varint too long")
    }

    /// A nullable string with an i16 length.
    fn nullable_string(&mut self) -> anyhow::Result<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8(self.take(len as usize)?.to_vec())?))
    }

    /// Bytes with an i32 length.
    fn bytes(&mut self) -> anyhow::Result<&'a [u8]> {
        let len = self.i32()?;
        ensure!(len >= 0, "negative bytes length {len}");
        self.take(len as usize)
    }

    /// A tagged-field section (flexible versions), returned as is.
    fn tagged_fields(&mut self) -> anyhow::Result<&'a [u8]> {
        let start = self.pos;
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(usize::try_from(size)?)?;
        }
        Ok(&self.buf[start..self.pos])
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The request header fields the proxy needs.
struct RequestHeader {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
}

/// Where a SCRAM exchange stands between its two client messages.
struct ScramExchange {
    mechanism: Mechanism,
    user: String,
    /// `n,,` or `n,a=...,` as the client sent it: `c=` must echo it.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Per connection: the mechanism chosen in SaslHandshake and the SCRAM exchange under way.
#[derive(Default)]
struct Session {
    mechanism: Option<Mechanism>,
    scram: Option<ScramExchange>,
}

/// The outcome of one SaslAuthenticate request.
enum Step {
    /// Send these bytes back (a SCRAM server-first message) and wait for the next request.
    Continue(Vec<u8>),
    /// Authenticated; send these bytes back (empty, or the SCRAM server-final message).
    Done { user: String, reply: Vec<u8> },
    /// Rejected with this message.
    Rejected { user: String, reason: String },
}

/// Runs the pre-authentication part of the protocol on `client`: ApiVersions forwarded to
/// `backend`, SaslHandshake and SaslAuthenticate answered here. Returns the client and broker
/// connections once authenticated, `None` when the client went away or was rejected.
async fn authenticate(
    mut client: TcpStream,
    backend: SocketAddr,
    auth: &Auth,
    record: &impl Fn(Event),
) -> anyhow::Result<Option<(TcpStream, TcpStream)>> {
    let mut broker = TcpStream::connect(backend)
        .await
        .with_context(|| format!("connect to the broker at {backend}"))?;
    let mut session = Session::default();
    loop {
        let Some(request) = read_frame(&mut client).await? else {
            return Ok(None);
        };
        let mut r = Reader::new(&request);
        let header = RequestHeader {
            api_key: r.i16()?,
            api_version: r.i16()?,
            correlation_id: r.i32()?,
        };
        let _client_id = r.nullable_string()?;
        match header.api_key {
            API_VERSIONS => {
                write_frame(&mut broker, &request).await?;
                let response = read_frame(&mut broker)
                    .await?
                    .context("the broker closed the connection on ApiVersions")?;
                let response = patch_api_versions(&response, header.api_version)
                    .context("patch the broker's ApiVersions response")?;
                write_frame(&mut client, &response).await?;
            }
            SASL_HANDSHAKE => {
                // v0 would be followed by raw SASL tokens: librdkafka uses v1, which we list.
                ensure!(
                    header.api_version == 1,
                    "SaslHandshake v{} (only v1 is served)",
                    header.api_version
                );
                let name = r.nullable_string()?.unwrap_or_default();
                let mut response = header.correlation_id.to_be_bytes().to_vec();
                match Mechanism::parse(&name).filter(|m| auth.mechanisms.contains(m)) {
                    Some(m) => {
                        session.mechanism = Some(m);
                        response.extend_from_slice(&0i16.to_be_bytes());
                    }
                    None => {
                        record(Event::UnsupportedMechanism(name));
                        response.extend_from_slice(&UNSUPPORTED_SASL_MECHANISM.to_be_bytes());
                    }
                }
                response.extend_from_slice(&(auth.mechanisms.len() as i32).to_be_bytes());
                for m in &auth.mechanisms {
                    put_string(&mut response, m.name());
                }
                write_frame(&mut client, &response).await?;
            }
            SASL_AUTHENTICATE => {
                ensure!(
                    (0..=1).contains(&header.api_version),
                    "SaslAuthenticate v{} (only v0 and v1 are served)",
                    header.api_version
                );
                let token = r.bytes()?;
                let (error, message, reply, done) = match session.mechanism {
                    None => (
                        ILLEGAL_SASL_STATE,
                        Some("SaslAuthenticate before SaslHandshake".to_owned()),
                        Vec::new(),
                        None,
                    ),
                    Some(m) => match step(auth, &mut session, m, token) {
                        Step::Continue(reply) => (0, None, reply, None),
                        Step::Done { user, reply } => (0, None, reply, Some(Ok((m, user)))),
                        Step::Rejected { user, reason } => (
                            SASL_AUTHENTICATION_FAILED,
                            Some(reason.clone()),
                            Vec::new(),
                            Some(Err((m, user, reason))),
                        ),
                    },
                };
                let mut response = header.correlation_id.to_be_bytes().to_vec();
                response.extend_from_slice(&error.to_be_bytes());
                match &message {
                    Some(text) => put_string(&mut response, text),
                    None => response.extend_from_slice(&(-1i16).to_be_bytes()),
                }
                response.extend_from_slice(&(reply.len() as i32).to_be_bytes());
                response.extend_from_slice(&reply);
                if header.api_version >= 1 {
                    // session_lifetime_ms: 0, no re-authentication.
                    response.extend_from_slice(&0i64.to_be_bytes());
                }
                write_frame(&mut client, &response).await?;
                match done {
                    Some(Ok((m, user))) => {
                        record(Event::Authenticated {
                            mechanism: m.name().into(),
                            user,
                        });
                        return Ok(Some((client, broker)));
                    }
                    Some(Err((m, user, reason))) => {
                        record(Event::Rejected {
                            mechanism: m.name().into(),
                            user,
                            reason,
                        });
                        // As a Kafka broker does after a failed authentication.
                        return Ok(None);
                    }
                    None if error != 0 => bail!("{}", message.unwrap_or_default()),
                    None => {}
                }
            }
            other => bail!(
                "request with API key {other} (v{}) before authenticating",
                header.api_version
            ),
        }
    }
}

/// One SaslAuthenticate token of `mechanism`.
fn step(auth: &Auth, session: &mut Session, mechanism: Mechanism, token: &[u8]) -> Step {
    let rejected = |user: &str, why: &str| Step::Rejected {
        user: user.to_owned(),
        reason: format!(
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism {}: {why}",
            mechanism.name()
        ),
    };
    if mechanism == Mechanism::Plain {
        // RFC 4616: [authzid] NUL authcid NUL passwd.
        let text = String::from_utf8_lossy(token);
        let parts: Vec<&str> = text.split('\0').collect();
        let [_authzid, user, password] = parts[..] else {
            return rejected("", "malformed PLAIN message");
        };
        return match auth.passwords.get(user) {
            Some(p) if p == password => Step::Done {
                user: user.to_owned(),
                reply: Vec::new(),
            },
            _ => rejected(user, "invalid username or password"),
        };
    }
    match session.scram.take() {
        None => match scram_first(auth, mechanism, token) {
            Ok(exchange) => {
                let reply = exchange.server_first.clone().into_bytes();
                session.scram = Some(exchange);
                Step::Continue(reply)
            }
            Err((user, why)) => rejected(&user, &why),
        },
        Some(exchange) => match scram_final(auth, &exchange, token) {
            Ok(reply) => Step::Done {
                user: exchange.user,
                reply,
            },
            Err(why) => rejected(&exchange.user, &why),
        },
    }
}

/// RFC 5802 `saslname` to a user name: `=2C` is `,` and `=3D` is `=`.
fn unescape_user(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

/// The client-first message: `gs2-header client-first-bare`, such as `n,,n=user,r=nonce`.
/// Returns the exchange with the server-first message, or the user and why not.
fn scram_first(
    auth: &Auth,
    mechanism: Mechanism,
    token: &[u8],
) -> Result<ScramExchange, (String, String)> {
    let text = std::str::from_utf8(token).map_err(|_| (String::new(), "not UTF-8".into()))?;
    let malformed = || {
        (
            String::new(),
            format!("malformed client-first message {text:?}"),
        )
    };
    // gs2-header: a channel-binding flag (`n` or `y`, never `p`: no channel binding here),
    // an optional `a=authzid`, each followed by a comma.
    let (flag, rest) = text.split_once(',').ok_or_else(malformed)?;
    let (_authzid, bare) = rest.split_once(',').ok_or_else(malformed)?;
    if flag != "n" && flag != "y" {
        return Err((
            String::new(),
            format!("channel binding {flag:?} not supported"),
        ));
    }
    let gs2_header = text[..text.len() - bare.len()].to_owned();
    let mut user = None;
    let mut client_nonce = None;
    for attribute in bare.split(',') {
        match attribute.split_once('=') {
            Some(("n", v)) => user = Some(unescape_user(v)),
            Some(("r", v)) => client_nonce = Some(v.to_owned()),
            Some(("m", _)) => return Err((String::new(), "mandatory extension".into())),
            _ => {} // Extensions (such as Kafka's `tokenauth`): not used here.
        }
    }
    let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
        return Err(malformed());
    };
    let Some(credential) = auth.scram.get(&(mechanism, user.clone())) else {
        return Err((user, "unknown user".into()));
    };
    let server_nonce = BASE64.encode(rand::random::<[u8; 18]>());
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={SCRAM_ITERATIONS}",
        BASE64.encode(&credential.salt)
    );
    Ok(ScramExchange {
        mechanism,
        user,
        gs2_header,
        client_first_bare: bare.to_owned(),
        server_first,
        nonce,
    })
}

/// The client-final message `c=...,r=...,p=proof`: checks the proof against the stored key;
/// returns the server-final message `v=signature`, or why not.
fn scram_final(auth: &Auth, exchange: &ScramExchange, token: &[u8]) -> Result<Vec<u8>, String> {
    let mechanism = exchange.mechanism;
    let (_, mac, _) = mechanism.scram().expect("a SCRAM mechanism");
    let credential = auth
        .scram
        .get(&(mechanism, exchange.user.clone()))
        .ok_or("unknown user")?;
    let text = std::str::from_utf8(token).map_err(|_| "not UTF-8")?;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or_else(|| format!("no proof in {text:?}"))?;
    let mut binding = None;
    let mut nonce = None;
    for attribute in without_proof.split(',') {
        match attribute.split_once('=') {
            Some(("c", v)) => binding = Some(v),
            Some(("r", v)) => nonce = Some(v),
            _ => {}
        }
    }
    if binding != Some(BASE64.encode(&exchange.gs2_header).as_str()) {
        return Err(format!(
            "channel binding {binding:?} does not echo the GS2 header"
        ));
    }
    if nonce != Some(exchange.nonce.as_str()) {
        return Err("nonce mismatch".into());
    }
    let proof = BASE64.decode(proof).map_err(|e| format!("proof: {e}"))?;
    let auth_message = format!(
        "{},{},{without_proof}",
        exchange.client_first_bare, exchange.server_first
    );
    let client_signature = hmac_of(mac, &credential.stored_key, auth_message.as_bytes());
    if proof.len() != client_signature.len() {
        return Err("proof of the wrong length".into());
    }
    // ClientKey = ClientProof XOR ClientSignature; it is right if H(ClientKey) = StoredKey.
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    if digest::digest(digest_of(mechanism), &client_key).as_ref() != credential.stored_key {
        return Err("invalid password".into());
    }
    let server_signature = hmac_of(mac, &credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
}

/// The broker's ApiVersions response (`frame`: correlation id and body) for a request of
/// `version`, with SaslHandshake and SaslAuthenticate listed at versions 0 to 1 (added if
/// missing): the versions this proxy serves, whatever the broker would.
fn patch_api_versions(frame: &[u8], version: i16) -> anyhow::Result<Vec<u8>> {
    let mut r = Reader::new(frame);
    let correlation_id = r.take(4)?;
    let error_code = r.i16()?;
    if error_code != 0 {
        // Such as UNSUPPORTED_VERSION, in the v0 layout: the client asks again, older.
        return Ok(frame.to_vec());
    }
    // v3 and later are flexible: compact arrays, tagged fields (the response header stays v0).
    let flexible = version >= 3;
    let count = if flexible {
        usize::try_from(r.uvarint()?)?
            .checked_sub(1)
            .context("null api_keys")?
    } else {
        usize::try_from(r.i32()?)?
    };
    let mut keys = Vec::with_capacity(count + 2);
    for _ in 0..count {
        let (key, min, max) = (r.i16()?, r.i16()?, r.i16()?);
        let tags = if flexible {
            r.tagged_fields()?
        } else {
            &[][..]
        };
        if key != SASL_HANDSHAKE && key != SASL_AUTHENTICATE {
            keys.push((key, min, max, tags.to_vec()));
        }
    }
    for key in [SASL_HANDSHAKE, SASL_AUTHENTICATE] {
        let no_tags = if flexible { vec![0] } else { Vec::new() };
        keys.push((key, 0, 1, no_tags));
    }
    let rest = r.rest();
    let mut out = correlation_id.to_vec();
    out.extend_from_slice(&error_code.to_be_bytes());
    if flexible {
        put_uvarint(&mut out, keys.len() as u64 + 1);
    } else {
        out.extend_from_slice(&(keys.len() as i32).to_be_bytes());
    }
    for (key, min, max, tags) in keys {
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&min.to_be_bytes());
        out.extend_from_slice(&max.to_be_bytes());
        out.extend_from_slice(&tags);
    }
    out.extend_from_slice(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example: user `user`, password `pencil`.
    #[test]
    fn scram_sha_256_matches_rfc_7677() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(
            pbkdf2::PBKDF2_HMAC_SHA256,
            hmac::HMAC_SHA256,
            "pencil",
            &salt,
            4096,
        );
        let client_key = hmac_of(hmac::HMAC_SHA256, &salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let credential = ScramCredential {
            salt,
            stored_key: stored_key.as_ref().to_vec(),
            server_key: hmac_of(hmac::HMAC_SHA256, &salted, b"Server Key"),
        };
        let auth = Auth {
            mechanisms: vec![Mechanism::ScramSha256],
            passwords: BTreeMap::new(),
            scram: [((Mechanism::ScramSha256, "user".to_owned()), credential)].into(),
        };
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let exchange = ScramExchange {
            mechanism: Mechanism::ScramSha256,
            user: "user".into(),
            gs2_header: "n,,".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            nonce: nonce.into(),
        };
        let client_final =
            format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let server_final = scram_final(&auth, &exchange, client_final.as_bytes()).unwrap();
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }
}
