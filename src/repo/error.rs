//! Errors of every Git operation. Each variant names the repository URL
//! (credentials redacted), the branch or commit involved and what to do.
use std::path::PathBuf;

/// Everything that can go wrong while Ferry talks to Git.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The cache directory could not be created or opened as a Git repository.
    #[error(
        "cannot open the Git cache at {path}: {source}; delete the directory so Ferry can clone afresh"
    )]
    OpenCache {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    /// The cache directory already holds a clone of a different repository.
    #[error(
        "the Git cache at {path} belongs to {found}, not {url}; point the cache directory elsewhere or delete it"
    )]
    CacheUrlMismatch {
        path: PathBuf,
        found: String,
        url: String,
    },
    /// Fetching from the remote failed (network, authentication, missing repository).
    #[error("cannot fetch {url} (branch {branch}): {source}; {hint}")]
    Fetch {
        url: String,
        branch: String,
        hint: &'static str,
        #[source]
        source: git2::Error,
    },
    /// The remote has no such branch.
    #[error("branch {branch} does not exist in {url}; create it or fix the configured branch name")]
    BranchMissing { url: String, branch: String },
    /// A revision could not be resolved to a commit.
    #[error(
        "cannot resolve {rev} to a commit in {url}: {source}; fetch first or check the revision"
    )]
    Resolve {
        url: String,
        rev: String,
        #[source]
        source: git2::Error,
    },
    /// Reading a tree, blob or commit object failed.
    #[error("cannot read {what} at commit {commit} of {url}: {source}")]
    Read {
        url: String,
        commit: String,
        what: String,
        #[source]
        source: git2::Error,
    },
    /// A file that must be text is not valid UTF-8.
    #[error(
        "{path} at commit {commit} of {url} is not UTF-8 text; placement files must be UTF-8 YAML"
    )]
    NotUtf8 {
        url: String,
        commit: String,
        path: String,
    },
    /// Building or writing a commit failed locally.
    #[error("cannot create the status commit for branch {branch} of {url}: {source}")]
    Commit {
        url: String,
        branch: String,
        #[source]
        source: git2::Error,
    },
    /// A status file path is unusable (absolute, `..`, empty, inside `.git`).
    #[error(
        "status file path {path:?} is invalid: {reason}; use a relative path inside the repository"
    )]
    BadStatusPath { path: String, reason: &'static str },
    /// Pushing failed for a reason other than a concurrent update.
    #[error("cannot push to branch {branch} of {url}: {source}; {hint}")]
    Push {
        url: String,
        branch: String,
        hint: &'static str,
        #[source]
        source: git2::Error,
    },
    /// The remote kept rejecting the push although Ferry rebuilt its commit on
    /// the newest head each time.
    #[error(
        "push to branch {branch} of {url} was rejected {attempts} times (last: {reason}); someone keeps pushing to it or a server hook refuses Ferry's commits — check the remote's hooks and branch protection"
    )]
    PushRejected {
        url: String,
        branch: String,
        attempts: u32,
        reason: String,
    },
    /// The SSH server presented a host key that is not in known_hosts.
    #[error(
        "host key of {host} ({fingerprint}) is not in {known_hosts}; add it with `ssh-keyscan -p PORT HOST >> {known_hosts}` after checking the fingerprint, or use the accept-new policy"
    )]
    HostKeyUnknown {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    /// The SSH server presented a host key different from the recorded one.
    #[error(
        "host key of {host} changed: server offers {fingerprint} but {known_hosts} records another key; this may be a man-in-the-middle attack — verify the server and update known_hosts"
    )]
    HostKeyMismatch {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    /// The server's key is explicitly revoked in known_hosts.
    #[error(
        "host key of {host} ({fingerprint}) is marked @revoked in {known_hosts}; the server must use another key"
    )]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    /// The HTTPS server's certificate is not issued by the configured CA
    /// (and the system roots did not accept it either).
    #[error(
        "TLS certificate of {url} is not trusted: {detail} (checked against {ca_file} and the system roots); fix the CA file or the server certificate"
    )]
    TlsCertificate {
        url: String,
        ca_file: PathBuf,
        detail: String,
    },
    /// known_hosts could not be read or appended to.
    #[error("cannot use known_hosts file {path}: {source}")]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A credential (deploy key, token) is not available.
    #[error("credential for {url} is unavailable: {detail}")]
    Credential { url: String, detail: String },
    /// A configured trusted key cannot be parsed.
    #[error(
        "trusted {kind} key #{index} is unusable: {detail}; paste the public key exactly as `{hint}` prints it"
    )]
    TrustedKey {
        kind: &'static str,
        index: usize,
        detail: String,
        hint: &'static str,
    },
    /// The commit's signature is not acceptable under the trusted-keys policy.
    #[error("refusing to act on commit {commit}: {verdict}")]
    Untrusted {
        commit: String,
        verdict: super::signature::SignatureVerdict,
    },
    /// Setting up a file watch failed.
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}
