//! TLS for tests against a broker that cannot serve it (tansu 0.6): a rustls proxy that terminates TLS on a loopback port and forwards the plaintext
//! bytes of each connection to the broker. Clients reach the broker through the proxy only if
//! the broker advertises the proxy's address in metadata (see `Tansu::start_advertising`).
//!
//! What this proves: librdkafka's TLS client (its OpenSSL) against a standard TLS server
//! (rustls): CA trust, hostname verification, client certificates, and how Sluicegate reacts
//! to the handshake failing. What it does not: a broker's own TLS listener (its cipher and
//! protocol settings, `ssl.principal.mapping.rules`, ACLs on the client certificate's name).
#![allow(dead_code)] // Each test uses its own part.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

pub use super::pki::{Pki, CLIENT_KEY_PASSWORD};

impl Pki {
    /// The proxy's TLS settings: the server certificate (or the misnamed one), and for
    /// [`ProxyMode::MutualTls`] a client certificate signed by the test CA required.
    fn server_config(&self, mode: ProxyMode) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if mode == ProxyMode::MutualTls {
            let mut roots = RootCertStore::empty();
            roots.add(CertificateDer::from(self.ca_der.clone()))?;
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
            )
        } else {
            builder.with_no_client_auth()
        };
        let (cert, key) = match mode {
            ProxyMode::MisnamedCertificate => (&self.misnamed_cert_der, &self.misnamed_key_der),
            _ => (&self.server_cert_der, &self.server_key_der),
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone()));
        Ok(builder.with_single_cert(vec![CertificateDer::from(cert.clone())], key)?)
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
