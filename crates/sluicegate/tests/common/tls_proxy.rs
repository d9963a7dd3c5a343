//! TLS for tests against a broker that cannot serve it (tansu 0.6): certificates made with
//! rcgen, and a rustls proxy that terminates TLS on a loopback port and forwards the plaintext
//! bytes of each connection to the broker. Clients reach the broker through the proxy only if
//! the broker advertises the proxy's address in metadata (see `Tansu::start_advertising`).
//!
//! What this proves: librdkafka's TLS client (its OpenSSL) against a standard TLS server
//! (rustls): CA trust, hostname verification, client certificates, and how Sluicegate reacts
//! to the handshake failing. What it does not: a broker's own TLS listener (its cipher and
//! protocol settings, `ssl.principal.mapping.rules`, ACLs on the client certificate's name).
#![allow(dead_code)] // Each test uses its own part.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Certificates for one test, as files (for librdkafka) and in memory (for the proxy).
pub struct Pki {
    /// The test CA, which signed the server and client certificates (PEM).
    pub ca: PathBuf,
    /// Another CA, which signed nothing here: trusting only it, a client rejects the server.
    pub other_ca: PathBuf,
    /// The client certificate (PEM), signed by the test CA, for `ssl.certificate.location`.
    pub client_cert: PathBuf,
    /// Its key (unencrypted PKCS#8 PEM), for `ssl.key.location`.
    pub client_key: PathBuf,
    /// The same key, encrypted (PKCS#8 PBES2: PBKDF2-SHA256, AES-256-CBC) with
    /// [`CLIENT_KEY_PASSWORD`], for `ssl.key.location` with `ssl.key.password`.
    pub client_key_encrypted: PathBuf,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    /// Signed by the CA, but for `broker.invalid` only: fails hostname verification.
    misnamed_cert: CertificateDer<'static>,
    misnamed_key: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// The password of [`Pki::client_key_encrypted`].
pub const CLIENT_KEY_PASSWORD: &str = "client-key-Pa55word";

/// `key` (PKCS#8 DER) encrypted with `password`, as an `ENCRYPTED PRIVATE KEY` PEM (what
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256` writes). rcgen writes
/// unencrypted keys only.
fn encrypt_key(key: &[u8], password: &str) -> anyhow::Result<String> {
    use pkcs8::der::pem::LineEnding;
    use pkcs8::pkcs5::pbes2;
    let salt: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &salt, &iv)
        .map_err(|e| anyhow::anyhow!("PBES2 parameters: {e}"))?;
    let info = pkcs8::PrivateKeyInfo::try_from(key)
        .map_err(|e| anyhow::anyhow!("parse the PKCS#8 key: {e}"))?;
    let encrypted = info
        .encrypt_with_params(params, password)
        .map_err(|e| anyhow::anyhow!("encrypt the key: {e}"))?;
    let pem = encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("PEM: {e}"))?;
    Ok(pem.to_string())
}

fn new_ca(name: &str) -> anyhow::Result<(rcgen::Certificate, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert, Issuer::new(params, key)))
}

fn leaf(
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'static, KeyPair>,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate()?;
    // rcgen makes an IP address SAN of a name that parses as one (127.0.0.1).
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

impl Pki {
    /// A CA, a server certificate for `127.0.0.1` and `localhost`, a client certificate (CN
    /// `sluicegate-test-client`) signed by the CA, and an unrelated CA; written to a temporary
    /// directory that lives as long as this value.
    pub fn generate() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir().context("temporary directory for certificates")?;
        let (ca_cert, ca) = new_ca("Sluicegate test CA")?;
        let (other_cert, _) = new_ca("Unrelated test CA")?;
        let (server, server_key) = leaf(
            "sluicegate-test-broker",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        )?;
        let (misnamed, misnamed_key) = leaf(
            "broker.invalid",
            &["broker.invalid"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        )?;
        let (client, client_key) = leaf(
            "sluicegate-test-client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        )?;
        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).with_context(|| format!("write {}", path.display()))?;
            Ok(path)
        };
        Ok(Pki {
            ca: write("ca.pem", ca_cert.pem())?,
            other_ca: write("other-ca.pem", other_cert.pem())?,
            client_cert: write("client.pem", client.pem())?,
            client_key: write("client.key", client_key.serialize_pem())?,
            client_key_encrypted: write(
                "client-encrypted.key",
                encrypt_key(client_key.serialized_der(), CLIENT_KEY_PASSWORD)?,
            )?,
            ca_der: ca_cert.der().clone(),
            server_cert: server.der().clone(),
            server_key: server_key.serialize_der(),
            misnamed_cert: misnamed.der().clone(),
            misnamed_key: misnamed_key.serialize_der(),
            _dir: dir,
        })
    }

    fn server_config(&self, mode: ProxyMode) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if mode == ProxyMode::MutualTls {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone())?;
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
            )
        } else {
            builder.with_no_client_auth()
        };
        let (cert, key) = match mode {
            ProxyMode::MisnamedCertificate => (&self.misnamed_cert, &self.misnamed_key),
            _ => (&self.server_cert, &self.server_key),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone()));
        Ok(builder.with_single_cert(vec![cert.clone()], key)?)
    }
}

/// How the proxy serves TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// With the server certificate (for `127.0.0.1` and `localhost`), no client certificate.
    Tls,
    /// Also requires a client certificate signed by the test CA.
    MutualTls,
    /// With a certificate the test CA signed for another name (`broker.invalid`).
    MisnamedCertificate,
}

/// What the proxy saw of one incoming connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    Accepted,
    Failed(String),
}

/// A TLS-terminating proxy on a loopback port; stops (with all its connections) when dropped.
pub struct TlsProxy {
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    task: JoinHandle<()>,
}

impl TlsProxy {
    /// A loopback port for the proxy, bound now so that the broker can advertise it before
    /// the proxy [serves](Self::serve) it.
    pub async fn bind() -> anyhow::Result<TcpListener> {
        TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the proxy port")
    }

    /// Serves TLS with the server certificate of `pki` on `listener` (requiring a client
    /// certificate signed by its CA with [`ProxyMode::MutualTls`]), forwarding to `backend`.
    pub fn serve(
        listener: TcpListener,
        pki: &Pki,
        mode: ProxyMode,
        backend: SocketAddr,
    ) -> anyhow::Result<TlsProxy> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(mode)?));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let (acceptor, seen) = (acceptor.clone(), seen.clone());
                        connections.spawn(async move {
                            let mut tls = match acceptor.accept(tcp).await {
                                Ok(tls) => tls,
                                Err(e) => {
                                    seen.lock().unwrap().push(Handshake::Failed(e.to_string()));
                                    return;
                                }
                            };
                            seen.lock().unwrap().push(Handshake::Accepted);
                            if let Ok(mut plain) = TcpStream::connect(backend).await {
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(TlsProxy {
            addr,
            handshakes,
            task,
        })
    }

    /// The handshakes so far, in order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
