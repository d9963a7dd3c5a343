//! Certificates for the TLS tests, made with rcgen and written as PEM files: a test CA, a
//! server certificate for `127.0.0.1` and `localhost`, a client certificate, and certificates
//! a TLS peer must refuse (another CA, a client certificate that CA signed, an expired client
//! certificate, a server certificate for another name). Used by the Apache Kafka broker's SSL listeners
//! (`kafka_broker.rs`), in the library's tests and the CLI's.
#![allow(dead_code)] // Each includer uses its own part.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Certificates for one broker, as PEM files for librdkafka and Kafka.
pub struct Pki {
    /// The test CA, which signed the server and client certificates (PEM).
    pub ca: PathBuf,
    /// Another CA, which signed nothing the server trusts: trusting only it, a client rejects
    /// the server.
    pub other_ca: PathBuf,
    /// The client certificate (PEM), signed by the test CA, for `ssl.certificate.location`.
    pub client_cert: PathBuf,
    /// Its key (unencrypted PKCS#8 PEM), for `ssl.key.location`.
    pub client_key: PathBuf,
    /// The same key, encrypted (PKCS#8 PBES2: PBKDF2-SHA256, AES-256-CBC) with
    /// [`CLIENT_KEY_PASSWORD`], for `ssl.key.location` with `ssl.key.password`.
    pub client_key_encrypted: PathBuf,
    /// A client certificate signed by the other CA (PEM), which a server trusting the test CA
    /// refuses, and its key.
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
    /// A client certificate signed by the test CA that expired in 2021 (PEM), and its key.
    pub expired_client_cert: PathBuf,
    pub expired_client_key: PathBuf,
    /// The server's key (unencrypted PKCS#8 PEM) followed by its certificate and the CA's: a
    /// Kafka `ssl.keystore.type=PEM` keystore file.
    pub server_keystore: PathBuf,
    /// Like [`server_keystore`](Self::server_keystore), with a server certificate signed by the
    /// test CA but for `broker.invalid` only: it fails hostname verification.
    pub misnamed_keystore: PathBuf,
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
    usage: &[ExtendedKeyUsagePurpose],
    issuer: &Issuer<'static, KeyPair>,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    leaf_with(name, sans, usage, issuer, |_| {})
}

/// Like [`leaf`], with `adjust` applied to the parameters before signing.
fn leaf_with(
    name: &str,
    sans: &[&str],
    usage: &[ExtendedKeyUsagePurpose],
    issuer: &Issuer<'static, KeyPair>,
    adjust: impl FnOnce(&mut CertificateParams),
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate()?;
    // rcgen makes an IP address SAN of a name that parses as one (127.0.0.1).
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usage.to_vec();
    adjust(&mut params);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

impl Pki {
    /// Certificates written to `dir`, which the caller keeps.
    pub fn generate_in(dir: &Path) -> anyhow::Result<Pki> {
        let (ca_cert, ca) = new_ca("Sluicegate test CA")?;
        let (other_cert, other) = new_ca("Unrelated test CA")?;
        // Kafka's own clients (the broker talking to itself) need both purposes.
        let (server, server_key) = leaf(
            "sluicegate-test-broker",
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            &ca,
        )?;
        let (misnamed, misnamed_key) = leaf(
            "broker.invalid",
            &["broker.invalid"],
            &[ExtendedKeyUsagePurpose::ServerAuth],
            &ca,
        )?;
        let (client, client_key) = leaf(
            "sluicegate-test-client",
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            &ca,
        )?;
        let (rogue, rogue_key) = leaf(
            "rogue-client",
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            &other,
        )?;
        let (expired, expired_key) = leaf_with(
            "expired-client",
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            &ca,
            |params| {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            },
        )?;
        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
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
            rogue_client_cert: write("rogue-client.pem", rogue.pem())?,
            rogue_client_key: write("rogue-client.key", rogue_key.serialize_pem())?,
            expired_client_cert: write("expired-client.pem", expired.pem())?,
            expired_client_key: write("expired-client.key", expired_key.serialize_pem())?,
            server_keystore: write(
                "server-keystore.pem",
                format!(
                    "{}{}{}",
                    server_key.serialize_pem(),
                    server.pem(),
                    ca_cert.pem()
                ),
            )?,
            misnamed_keystore: write(
                "misnamed-keystore.pem",
                format!(
                    "{}{}{}",
                    misnamed_key.serialize_pem(),
                    misnamed.pem(),
                    ca_cert.pem()
                ),
            )?,
        })
    }
}
