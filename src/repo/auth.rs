//! Credentials and host verification for remote transports.
//!
//! Secrets are read when a connection needs them, never stored in error
//! messages or logs; URLs are redacted before they reach either.
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use hmac::{Hmac, Mac};
use sha2::Digest as _;

use super::{RepoError, RepoSource};

/// How Ferry authenticates to the remote.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials: `file://` or public repositories.
    #[default]
    None,
    /// SSH with a deploy key (OpenSSH private key file, unencrypted or with
    /// a passphrase read from `passphrase`).
    SshKey {
        /// Path of the private key; the public key is derived by libssh2.
        private_key: PathBuf,
        /// Optional passphrase of the key.
        passphrase: Option<SecretSource>,
        /// How the server's host key is checked.
        host_keys: HostKeyPolicy,
    },
    /// HTTPS with a personal access / deploy token.
    Token {
        /// Where the token comes from.
        token: SecretSource,
        /// User name sent with the token; GitHub accepts `x-access-token`,
        /// GitLab `oauth2`. Defaults to `x-access-token`.
        username: Option<String>,
    },
}

/// Where a secret lives. Reading it late keeps it out of config dumps and
/// lets a rotated token take effect on the next fetch.
#[derive(Clone)]
pub enum SecretSource {
    /// An environment variable name.
    Env(String),
    /// A file whose contents (trailing newline trimmed) are the secret.
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl SecretSource {
    /// Read the secret now.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                format!(
                    "environment variable {name} is not set; export it in the agent's environment"
                )
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?,
        };
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        if value.is_empty() {
            return Err(format!("{self:?} is empty"));
        }
        Ok(value)
    }
}

/// How an SSH server's host key is checked against a known_hosts file.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// The host must already be listed; unknown or changed keys are refused.
    KnownHosts(PathBuf),
    /// Like `ssh -o StrictHostKeyChecking=accept-new`: an unknown host is
    /// recorded in the file on first contact, a changed key is refused.
    AcceptNew(PathBuf),
}

impl HostKeyPolicy {
    fn path(&self) -> &Path {
        match self {
            HostKeyPolicy::KnownHosts(p) | HostKeyPolicy::AcceptNew(p) => p,
        }
    }
}

/// Replace a password or token embedded in a URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// Host and port an SSH URL points at, in both `ssh://` and scp-like form.
pub(crate) fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some(rest) = url
        .strip_prefix("ssh://")
        .or_else(|| url.strip_prefix("git+ssh://"))
    {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let hostport = authority.rsplit('@').next()?;
        if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            let port = after
                .strip_prefix(':')
                .map(|p| p.parse().ok())
                .unwrap_or(Some(22))?;
            return Some((host.to_string(), port));
        }
        return match hostport.rsplit_once(':') {
            Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
            None => Some((hostport.to_string(), 22)),
        };
    }
    if url.contains("://") {
        return None;
    }
    // scp-like `user@host:path`
    let (before_colon, _) = url.split_once(':')?;
    let host = before_colon.rsplit('@').next()?;
    Some((host.to_string(), 22))
}

/// OpenSSH-style `SHA256:...` fingerprint of a raw public key blob.
pub(crate) fn ssh_fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob))
    )
}

/// Outcome of looking a host key up in known_hosts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostKeyMatch {
    Known,
    Unknown,
    Mismatch,
    Revoked,
}

/// Match `blob` offered by `host:port` against known_hosts text. Supports
/// plain and `[host]:port` patterns, comma lists, `*`/`?` wildcards,
/// negation, hashed (`|1|salt|hash`) names and the `@revoked` marker.
pub(crate) fn check_known_hosts(text: &str, host: &str, port: u16, blob: &[u8]) -> HostKeyMatch {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut host_listed = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let marker = if first.starts_with('@') {
            let m = first;
            first = fields.next().unwrap_or("");
            Some(m)
        } else {
            None
        };
        if marker == Some("@cert-authority") {
            continue;
        }
        let (Some(_key_type), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_field_matches(first, &name) {
            continue;
        }
        let same_key = STANDARD.decode(key_b64).map(|k| k == blob).unwrap_or(false);
        if marker == Some("@revoked") {
            if same_key {
                return HostKeyMatch::Revoked;
            }
            continue;
        }
        if same_key {
            return HostKeyMatch::Known;
        }
        host_listed = true;
    }
    if host_listed {
        HostKeyMatch::Mismatch
    } else {
        HostKeyMatch::Unknown
    }
}

fn hosts_field_matches(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    let mut matched = false;
    for pattern in field.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Key type name stored at the start of an SSH public key blob.
fn blob_key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

/// Builds libgit2 callbacks for one remote operation. libgit2 reports
/// callback failures as an opaque string, so the structured error is kept
/// in `failure` and preferred by the caller.
pub(crate) struct Callbacks {
    pub(crate) failure: Rc<RefCell<Option<RepoError>>>,
}

impl Callbacks {
    pub(crate) fn new() -> Self {
        Callbacks {
            failure: Rc::new(RefCell::new(None)),
        }
    }

    /// Take the structured error a callback recorded, if any.
    pub(crate) fn take_failure(&self) -> Option<RepoError> {
        self.failure.borrow_mut().take()
    }

    pub(crate) fn build<'a>(&self, source: &'a RepoSource) -> RemoteCallbacks<'a> {
        let (url, auth) = (source.url.as_str(), &source.auth);
        let mut cb = RemoteCallbacks::new();
        let redacted = redact_url(url);
        // libgit2 calls the credential callback again after a refusal; a
        // second call with the same credential would loop forever.
        let tries = Cell::new(0u32);
        let failure = self.failure.clone();
        let cred_url = redacted.clone();
        cb.credentials(move |_url, username_from_url, allowed| {
            // Asking for the SSH user name alone precedes the key request
            // and is no refusal.
            if !allowed.contains(CredentialType::USERNAME) {
                tries.set(tries.get() + 1);
            }
            let fail = |detail: String| {
                *failure.borrow_mut() = Some(RepoError::Credential { url: cred_url.clone(), detail: detail.clone() });
                Err(git2::Error::from_str(&detail))
            };
            if tries.get() > 1 {
                return fail("the server refused the configured credential; check that the deploy key or token has access to this repository".into());
            }
            match auth {
                Auth::None => fail("the server asks for credentials but none are configured".into()),
                Auth::SshKey { private_key, passphrase, .. } => {
                    if allowed.contains(CredentialType::USERNAME) {
                        return Cred::username(username_from_url.unwrap_or("git"));
                    }
                    if !private_key.exists() {
                        return fail(format!("deploy key {} does not exist", private_key.display()));
                    }
                    let pass = match passphrase.as_ref().map(SecretSource::read).transpose() {
                        Ok(p) => p,
                        Err(e) => return fail(e),
                    };
                    Cred::ssh_key(username_from_url.unwrap_or("git"), None, private_key, pass.as_deref())
                }
                Auth::Token { token, username } => match token.read() {
                    Ok(t) => Cred::userpass_plaintext(username.as_deref().unwrap_or("x-access-token"), &t),
                    Err(e) => fail(e),
                },
            }
        });
        let failure = self.failure.clone();
        let url_owned = url.to_string();
        cb.certificate_check(move |cert, host| {
            if let (Some(x509), Some(ca_file)) = (cert.as_x509(), source.tls_ca_file.as_deref()) {
                // Accept a server certificate issued by the configured CA;
                // otherwise fall back to libgit2's check against the system
                // roots (passthrough), remembering why ours failed.
                return match verify_with_ca(ca_file, x509.data(), host) {
                    Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                    Err(detail) => {
                        *failure.borrow_mut() = Some(RepoError::TlsCertificate {
                            url: redact_url(&url_owned),
                            ca_file: ca_file.to_path_buf(),
                            detail,
                        });
                        Ok(CertificateCheckStatus::CertificatePassthrough)
                    }
                };
            }
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS without an extra CA: libgit2 has already verified the
                // chain against the system roots; keep its verdict.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Auth::SshKey { host_keys, .. } = auth else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            match check_host_key(&url_owned, host_keys, hostkey.hostkey()) {
                Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                Err(e) => {
                    let msg = e.to_string();
                    *failure.borrow_mut() = Some(e);
                    Err(git2::Error::from_str(&msg))
                }
            }
        });
        cb
    }
}

/// Verify a TLS leaf certificate (DER) for `host` against the CA
/// certificates in the PEM file `ca_file`.
fn verify_with_ca(ca_file: &Path, der: &[u8], host: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let pem = std::fs::read(ca_file).map_err(|e| format!("cannot read CA file: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("bad PEM in CA file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .build()
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("bad server name {host}: {e}"))?;
    verifier
        .verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_host_key(url: &str, policy: &HostKeyPolicy, blob: Option<&[u8]>) -> Result<(), RepoError> {
    let path = policy.path().to_path_buf();
    let (host, port) = ssh_host_port(url).unwrap_or_else(|| ("unknown".into(), 22));
    let shown_host = format!("{host}:{port}");
    let Some(blob) = blob else {
        return Err(RepoError::HostKeyUnknown {
            host: shown_host,
            fingerprint: "raw key unavailable from libssh2".into(),
            known_hosts: path,
        });
    };
    let fingerprint = ssh_fingerprint(blob);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(RepoError::KnownHosts { path, source }),
    };
    match check_known_hosts(&text, &host, port, blob) {
        HostKeyMatch::Known => Ok(()),
        HostKeyMatch::Mismatch => Err(RepoError::HostKeyMismatch {
            host: shown_host,
            fingerprint,
            known_hosts: path,
        }),
        HostKeyMatch::Revoked => Err(RepoError::HostKeyRevoked {
            host: shown_host,
            fingerprint,
            known_hosts: path,
        }),
        HostKeyMatch::Unknown => match policy {
            HostKeyPolicy::KnownHosts(_) => Err(RepoError::HostKeyUnknown {
                host: shown_host,
                fingerprint,
                known_hosts: path,
            }),
            HostKeyPolicy::AcceptNew(_) => {
                let name = if port == 22 {
                    host.clone()
                } else {
                    format!("[{host}]:{port}")
                };
                let key_type = blob_key_type(blob).unwrap_or("ssh-unknown");
                let line = format!("{name} {key_type} {}\n", STANDARD.encode(blob));
                let append = || -> std::io::Result<()> {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    f.write_all(line.as_bytes())
                };
                append().map_err(|source| RepoError::KnownHosts {
                    path: path.clone(),
                    source,
                })?;
                tracing::info!(host = %shown_host, %fingerprint, known_hosts = %path.display(), "recorded new SSH host key");
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens_but_keeps_user() {
        assert_eq!(
            redact_url("https://x:s3cret@github.com/o/r.git"),
            "https://x:***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("ssh://git@host:2222/r.git"),
            "ssh://git@host:2222/r.git"
        );
        assert_eq!(redact_url("file:///tmp/r.git"), "file:///tmp/r.git");
    }

    #[test]
    fn parses_ssh_hosts() {
        assert_eq!(
            ssh_host_port("ssh://root@127.0.0.1:2200/srv/r.git"),
            Some(("127.0.0.1".into(), 2200))
        );
        assert_eq!(
            ssh_host_port("ssh://github.com/o/r"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(
            ssh_host_port("git@github.com:o/r.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(
            ssh_host_port("ssh://git@[::1]:22022/r"),
            Some(("::1".into(), 22022))
        );
        assert_eq!(ssh_host_port("https://github.com/o/r"), None);
    }

    #[test]
    fn known_hosts_matching() {
        let blob = b"\0\0\0\x0bssh-ed25519\0\0\0\x20aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
        let other = b"\0\0\0\x0bssh-ed25519\0\0\0\x20bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".to_vec();
        let b64 = STANDARD.encode(&blob);
        let text = format!(
            "# comment\n[127.0.0.1]:2200 ssh-ed25519 {b64}\ngit*.example,!gitbad.example ssh-ed25519 {b64}\n"
        );
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 2200, &blob),
            HostKeyMatch::Known
        );
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 2200, &other),
            HostKeyMatch::Mismatch
        );
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 22, &blob),
            HostKeyMatch::Unknown
        );
        assert_eq!(
            check_known_hosts(&text, "gitlab.example", 22, &blob),
            HostKeyMatch::Known
        );
        assert_eq!(
            check_known_hosts(&text, "gitbad.example", 22, &blob),
            HostKeyMatch::Unknown
        );
        let revoked = format!("@revoked * ssh-ed25519 {b64}\n{text}");
        assert_eq!(
            check_known_hosts(&revoked, "127.0.0.1", 2200, &blob),
            HostKeyMatch::Revoked
        );
        assert_eq!(blob_key_type(&blob), Some("ssh-ed25519"));
    }

    #[test]
    fn hashed_known_hosts_names() {
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[10.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let field = format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(hash));
        assert!(hosts_field_matches(&field, "[10.0.0.1]:2222"));
        assert!(!hosts_field_matches(&field, "10.0.0.1"));
    }
}
