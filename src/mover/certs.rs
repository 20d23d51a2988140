//! Per-migration PKI: a throwaway CA signs one server (receiver) and one client (sender)
//! certificate; both ends require the peer's certificate to chain to that CA (mutual
//! TLS), so nothing but the two mover pods of one migration can talk to each other.
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{MoverError, Result};

/// Name the receiver's certificate is issued for and the sender verifies by default.
pub const SERVER_NAME: &str = "ferry-mover-receiver";
/// File names inside a certificate directory (the layout of the Kubernetes Secret).
pub const CA_FILE: &str = "ca.pem";
/// Receiver certificate.
pub const SERVER_CERT: &str = "server.pem";
/// Receiver key.
pub const SERVER_KEY: &str = "server-key.pem";
/// Sender certificate.
pub const CLIENT_CERT: &str = "client.pem";
/// Sender key.
pub const CLIENT_KEY: &str = "client-key.pem";

/// PEM material for one migration. The CA key is dropped after signing: nobody can mint more.
#[derive(Clone)]
pub struct Minted {
    /// CA certificate.
    pub ca: String,
    /// Receiver certificate.
    pub server_cert: String,
    /// Receiver private key.
    pub server_key: String,
    /// Sender certificate.
    pub client_cert: String,
    /// Sender private key.
    pub client_key: String,
}

fn cerr(e: impl std::fmt::Display) -> MoverError {
    MoverError::Certs(e.to_string())
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
}

/// Mint a CA and a server + client certificate valid for `days`. The server certificate
/// covers [`SERVER_NAME`], `localhost`, `127.0.0.1` and `extra_sans`.
pub fn mint(extra_sans: &[String], days: i64) -> Result<Minted> {
    let ca_key = KeyPair::generate().map_err(cerr)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(cerr)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca.distinguished_name.push(DnType::CommonName, format!("ferry mover CA {:016x}", rand::random::<u64>()));
    validity(&mut ca, days);
    let ca_cert = ca.self_signed(&ca_key).map_err(cerr)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |sans: Vec<String>, cn: &str, eku: ExtendedKeyUsagePurpose| -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(cerr)?;
        let mut p = CertificateParams::new(sans).map_err(cerr)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, days);
        let cert = p.signed_by(&key, &issuer).map_err(cerr)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let mut sans = vec![SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
    sans.extend(extra_sans.iter().cloned());
    let (server_cert, server_key) = leaf(sans, SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_cert, client_key) = leaf(vec!["ferry-mover-sender".to_string()], "ferry-mover-sender", ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(Minted { ca: ca_cert.pem(), server_cert, server_key, client_cert, client_key })
}

/// Write the material into `dir` (keys mode 0600).
pub fn write(dir: &Path, m: &Minted) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(|e| MoverError::io("create directory", dir, e))?;
    for (name, text, mode) in [
        (CA_FILE, &m.ca, 0o644),
        (SERVER_CERT, &m.server_cert, 0o644),
        (SERVER_KEY, &m.server_key, 0o600),
        (CLIENT_CERT, &m.client_cert, 0o644),
        (CLIENT_KEY, &m.client_key, 0o600),
    ] {
        let p = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&p)
            .map_err(|e| MoverError::io("create", &p, e))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| MoverError::io("write", &p, e))?;
    }
    Ok(())
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::read_to_string(&p).map_err(|e| MoverError::Certs(format!("read {}: {e} (create the directory with `ferry mover certs --out DIR`)", p.display())))
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let v = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| MoverError::Certs(format!("{what}: {e}")))?;
    if v.is_empty() {
        return Err(MoverError::Certs(format!("{what}: no CERTIFICATE block found")));
    }
    Ok(v)
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| MoverError::Certs(format!("{what}: {e}")))?
        .ok_or_else(|| MoverError::Certs(format!("{what}: no PRIVATE KEY block found")))
}

fn roots(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, CA_FILE)? {
        roots.add(c).map_err(|e| MoverError::Certs(format!("{CA_FILE}: {e}")))?;
    }
    Ok(roots)
}

/// ring with AES-128-GCM preferred (both ends use this, and rustls servers follow the
/// client's order): ~30 % less cipher work per byte than AES-256-GCM, which ring's default
/// order puts first; both are TLS 1.3 AEADs. AES-256-GCM and ChaCha20 stay as fallbacks.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    Arc::new(p)
}

/// Receiver TLS config: presents the server certificate, requires a client certificate from the CA.
pub fn server_config(ca: &str, cert: &str, key_pem: &str) -> Result<Arc<ServerConfig>> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider()).build().map_err(cerr)?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cerr)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert, SERVER_CERT)?, key(key_pem, SERVER_KEY)?)
        .map_err(cerr)?;
    Ok(Arc::new(cfg))
}

/// Sender TLS config: trusts only the CA, presents the client certificate.
pub fn client_config(ca: &str, cert: &str, key_pem: &str) -> Result<Arc<ClientConfig>> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cerr)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs(cert, CLIENT_CERT)?, key(key_pem, CLIENT_KEY)?)
        .map_err(cerr)?;
    Ok(Arc::new(cfg))
}

/// Receiver config from a certificate directory.
pub fn server_config_dir(dir: &Path) -> Result<Arc<ServerConfig>> {
    server_config(&read(dir, CA_FILE)?, &read(dir, SERVER_CERT)?, &read(dir, SERVER_KEY)?)
}

/// Sender config from a certificate directory.
pub fn client_config_dir(dir: &Path) -> Result<Arc<ClientConfig>> {
    client_config(&read(dir, CA_FILE)?, &read(dir, CLIENT_CERT)?, &read(dir, CLIENT_KEY)?)
}

/// Parse a server name for verification.
pub fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|e| MoverError::Config(format!("--server-name {name:?}: {e}")))
}
