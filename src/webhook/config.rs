//! Receiver configuration: the `webhooks:` section of the agent config
//! ([`WebhookSpec`]) and its resolved form with secrets loaded ([`ReceiverConfig`]).
//!
//! ```yaml
//! webhooks:
//!   bodyLimitBytes: 1048576
//!   receivers:
//!     - name: github
//!       provider: github
//!       pathTokenFile: /etc/ferry/webhooks/github-path   # or pathToken: <≥32 chars>
//!       secretFile: /etc/ferry/webhooks/github-secret
//!       # repoUrl / branch default to the placement repository's
//! ```
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Provider, Target};

/// Default cap on webhook bodies: GitHub caps its own payloads at 25 MiB, but
/// pushes to a placement repository are a few KiB; 1 MiB leaves ample room.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Shortest accepted path token: 32 characters from a 64-symbol alphabet is 192 bits.
pub const MIN_PATH_TOKEN_LEN: usize = 32;

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// The `webhooks:` section as written in the agent config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// Largest body accepted (413 above); default [`DEFAULT_BODY_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_limit_bytes: Option<usize>,
    /// One entry per forge hook.
    #[serde(default)]
    pub receivers: Vec<ReceiverSpec>,
}

/// One receiver as written in the agent config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverSpec {
    /// Name used in logs and triggers.
    pub name: String,
    /// Which forge sends to it.
    pub provider: Provider,
    /// Unguessable path segment: the receiver listens at `/hooks/<pathToken>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_token: Option<String>,
    /// File holding the path token (e.g. from a Secret volume); alternative to `pathToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_token_file: Option<PathBuf>,
    /// File holding the shared secret. Secrets are never written inline in config.
    pub secret_file: PathBuf,
    /// Repository whose pushes trigger; default: the placement repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// Branch whose pushes trigger; default: the placement branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A shared secret; its `Debug` never shows the bytes so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wrap secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The secret bytes, for verification only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// A ready receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Name used in logs and triggers.
    pub name: String,
    /// Which forge sends to it.
    pub provider: Provider,
    /// Path segment after `/hooks/`.
    pub path_token: String,
    /// Shared secret.
    pub secret: Secret,
    /// Repository and branch that trigger.
    pub target: Target,
}

impl std::fmt::Debug for Receiver {
    // The path token is as secret as the HMAC key: it keeps the receiver unguessable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("path_token", &"<redacted>")
            .field("secret", &self.secret)
            .field("target", &self.target)
            .finish()
    }
}

/// Every receiver plus server-wide limits.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Receivers, each at its own path.
    pub receivers: Vec<Receiver>,
    /// Largest body accepted.
    pub body_limit: usize,
}

/// Why the webhook configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has a wrong value.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A file named by a field cannot be read.
    #[error("{field}: cannot read {}: {source} (is the Secret mounted?)", path.display())]
    ReadFile {
        field: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

/// Read a secret-ish file; one trailing newline is dropped because
/// `echo secret > file` and `kubectl create secret --from-file` keep it.
fn read_secret_file(field: String, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut bytes = std::fs::read(path).map_err(|source| ConfigError::ReadFile { field, path: path.to_owned(), source })?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}

/// A fresh random path token (48 hex characters).
pub fn generate_path_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

impl WebhookSpec {
    /// Check every field, load secrets and path tokens from their files, and
    /// fill defaults from the placement repository. `prefix` names the section
    /// in error messages (e.g. `agent.yaml: webhooks`).
    pub fn resolve(&self, prefix: &str, placement: &Target) -> Result<ReceiverConfig, ConfigError> {
        let body_limit = self.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT);
        if body_limit == 0 {
            return Err(invalid(format!("{prefix}.bodyLimitBytes"), "must be greater than 0"));
        }
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        let mut receivers = Vec::with_capacity(self.receivers.len());
        for (i, spec) in self.receivers.iter().enumerate() {
            let at = format!("{prefix}.receivers[{i}]");
            if spec.name.is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            if !names.insert(spec.name.as_str()) {
                return Err(invalid(format!("{at}.name"), format!("{:?} is used by an earlier receiver; names must be unique", spec.name)));
            }
            let path_token = match (&spec.path_token, &spec.path_token_file) {
                (Some(t), None) => t.clone(),
                (None, Some(f)) => {
                    let bytes = read_secret_file(format!("{at}.pathTokenFile"), f)?;
                    String::from_utf8(bytes).map_err(|_| invalid(format!("{at}.pathTokenFile"), "file is not UTF-8 text"))?
                }
                _ => return Err(invalid(format!("{at}.pathToken"), "set exactly one of pathToken and pathTokenFile")),
            };
            let token_ok = path_token.len() >= MIN_PATH_TOKEN_LEN
                && path_token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !token_ok {
                // Never echo the token: it is what keeps the receiver unguessable.
                return Err(invalid(
                    format!("{at}.pathToken"),
                    format!(
                        "must be at least {MIN_PATH_TOKEN_LEN} characters of A-Z a-z 0-9 - _ (generate one with `openssl rand -hex 24`)"
                    ),
                ));
            }
            if !tokens.insert(path_token.clone()) {
                return Err(invalid(format!("{at}.pathToken"), "is used by an earlier receiver; every receiver needs its own path"));
            }
            let secret = read_secret_file(format!("{at}.secretFile"), &spec.secret_file)?;
            if secret.len() < MIN_SECRET_LEN {
                return Err(invalid(
                    format!("{at}.secretFile"),
                    format!("secret in {} is {} bytes; use at least {MIN_SECRET_LEN} (e.g. `openssl rand -hex 32`)", spec.secret_file.display(), secret.len()),
                ));
            }
            let target = Target {
                repo_url: spec.repo_url.clone().unwrap_or_else(|| placement.repo_url.clone()),
                branch: spec.branch.clone().unwrap_or_else(|| placement.branch.clone()),
            };
            if super::repo_url::normalize(&target.repo_url).is_none() {
                return Err(invalid(format!("{at}.repoUrl"), format!("{:?} is not a Git URL with a host and a path", target.repo_url)));
            }
            receivers.push(Receiver { name: spec.name.clone(), provider: spec.provider, path_token, secret: Secret::new(secret), target });
        }
        Ok(ReceiverConfig { receivers, body_limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Target {
        Target { repo_url: "https://github.com/org/placement".into(), branch: "main".into() }
    }

    fn spec(dir: &Path, yaml: &str) -> WebhookSpec {
        std::fs::write(dir.join("secret"), "0123456789abcdef-secret\n").unwrap();
        serde_saphyr::from_str(&yaml.replace("$DIR", &dir.display().to_string())).unwrap()
    }

    #[test]
    fn resolves_defaults_and_reads_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            "receivers:\n- name: gh\n  provider: github\n  pathToken: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  secretFile: $DIR/secret\n- name: bb\n  provider: bitbucket-server\n  pathToken: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n  secretFile: $DIR/secret\n  branch: release\n",
        );
        let cfg = s.resolve("webhooks", &placement()).unwrap();
        assert_eq!(cfg.body_limit, DEFAULT_BODY_LIMIT);
        assert_eq!(cfg.receivers[0].secret.expose(), b"0123456789abcdef-secret");
        assert_eq!(cfg.receivers[0].target, placement());
        assert_eq!(cfg.receivers[1].provider, Provider::BitbucketServer);
        assert_eq!(cfg.receivers[1].target.branch, "release");
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("abcdef-secret") && !debug.contains("aaaaaaaa"), "Debug must not show secrets or path tokens: {debug}");
    }

    #[test]
    fn errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let short = spec(dir.path(), "receivers:\n- name: gh\n  provider: github\n  pathToken: short\n  secretFile: $DIR/secret\n");
        let e = short.resolve("agent.yaml: webhooks", &placement()).unwrap_err().to_string();
        assert!(e.starts_with("agent.yaml: webhooks.receivers[0].pathToken: must be at least 32"), "{e}");
        assert!(!e.contains("short"), "the token must not be echoed: {e}");

        let dup = spec(
            dir.path(),
            "receivers:\n- name: a\n  provider: github\n  pathToken: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  secretFile: $DIR/secret\n- name: b\n  provider: gitlab\n  pathToken: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  secretFile: $DIR/secret\n",
        );
        let e = dup.resolve("webhooks", &placement()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks.receivers[1].pathToken: is used by an earlier receiver"), "{e}");

        let missing = spec(dir.path(), "receivers:\n- name: a\n  provider: github\n  pathToken: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  secretFile: $DIR/nope\n");
        let e = missing.resolve("webhooks", &placement()).unwrap_err().to_string();
        assert!(e.starts_with("webhooks.receivers[0].secretFile: cannot read") && e.contains("nope"), "{e}");
    }

    #[test]
    fn unknown_fields_and_providers_are_rejected_by_the_parser() {
        let e = serde_saphyr::from_str::<WebhookSpec>("receivers:\n- name: a\n  provider: github\n  secret: x\n  secretFile: /x\n").unwrap_err().to_string();
        assert!(e.contains("secret"), "{e}");
        let e = serde_saphyr::from_str::<WebhookSpec>("receivers:\n- name: a\n  provider: bitbucket\n  secretFile: /x\n").unwrap_err().to_string();
        assert!(e.contains("bitbucket"), "{e}");
    }

    #[test]
    fn generated_tokens_are_accepted_and_distinct() {
        let (a, b) = (generate_path_token(), generate_path_token());
        assert_ne!(a, b);
        assert!(a.len() >= MIN_PATH_TOKEN_LEN);
    }
}
