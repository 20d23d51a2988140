//! Webhook receivers: verify a forge's delivery, parse it into an [`Event`],
//! decide whether it concerns the placement repository, and if so trigger an
//! immediate sync.
//!
//! Webhooks only *trigger*: the agent loop stays the single writer, and the
//! trigger channel ([`trigger`]) coalesces any number of deliveries that arrive
//! during one sync into one extra sync. The per-provider `verify`/`parse`
//! functions and [`decide`] are pure; [`server`] is the axum edge.
//!
//! | provider           | signature header                       | event header        |
//! |--------------------|----------------------------------------|---------------------|
//! | GitHub             | `X-Hub-Signature-256: sha256=<hex>`    | `X-GitHub-Event`    |
//! | GitLab             | `X-Gitlab-Token: <secret>`             | `X-Gitlab-Event`    |
//! | Gitea              | `X-Gitea-Signature: <hex>`             | `X-Gitea-Event`     |
//! | Gogs               | `X-Gogs-Signature: <hex>`              | `X-Gogs-Event`      |
//! | Bitbucket Server   | `X-Hub-Signature: sha256=<hex>`        | `X-Event-Key`       |
//! | generic            | `X-Ferry-Signature: sha256=<hex>`      | —                   |
//!
//! `<hex>` is the HMAC-SHA256 of the exact body bytes keyed with the receiver's secret.
//!
//! Wiring in the agent (sketch):
//!
//! ```text
//! let config = agent_config.webhooks.resolve("agent.yaml: webhooks", &placement_target)?;
//! let (triggers, mut wake) = webhook::trigger_channel();
//! let state = webhook::ServerState::new(config, triggers, metrics.clone(), readiness.clone());
//! tokio::spawn(webhook::serve(listener, webhook::router(state), shutdown));
//! loop {
//!     tokio::select! { _ = interval.tick() => {}, p = wake.recv() => { /* p.latest.after */ } }
//!     sync().await; // the single writer
//! }
//! ```
pub mod bitbucket;
pub mod config;
pub mod generic;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod repo_url;
pub mod server;
pub mod signature;
pub mod trigger;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

pub use config::{ConfigError, Receiver, ReceiverConfig, ReceiverSpec, WebhookSpec};
pub use server::{Readiness, ServerState, router, serve};
pub use trigger::{Pending, Trigger, TriggerReceiver, TriggerSender, trigger_channel};

/// A forge that delivers webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// GitHub and GitHub Enterprise.
    Github,
    /// GitLab (project and system hooks).
    Gitlab,
    /// Gitea and Forgejo.
    Gitea,
    /// Gogs.
    Gogs,
    /// Bitbucket Server / Data Center.
    BitbucketServer,
    /// Any sender that signs its JSON body like GitHub does, with `X-Ferry-Signature`.
    Generic,
}

impl Provider {
    /// Name used in configuration, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Gogs => "gogs",
            Provider::BitbucketServer => "bitbucket-server",
            Provider::Generic => "generic",
        }
    }

    /// Check that the delivery was sent by someone who knows `secret`.
    pub fn verify(self, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Reject> {
        match self {
            Provider::Github => github::verify(headers, body, secret),
            Provider::Gitlab => gitlab::verify(headers, body, secret),
            Provider::Gitea => gitea::verify(gitea::Flavor::Gitea, headers, body, secret),
            Provider::Gogs => gitea::verify(gitea::Flavor::Gogs, headers, body, secret),
            Provider::BitbucketServer => bitbucket::verify(headers, body, secret),
            Provider::Generic => generic::verify(headers, body, secret),
        }
    }

    /// Turn a verified delivery into an [`Event`].
    pub fn parse(self, headers: &HeaderMap, body: &[u8]) -> Result<Event, Reject> {
        match self {
            Provider::Github => github::parse(headers, body),
            Provider::Gitlab => gitlab::parse(headers, body),
            Provider::Gitea => gitea::parse(gitea::Flavor::Gitea, headers, body),
            Provider::Gogs => gitea::parse(gitea::Flavor::Gogs, headers, body),
            Provider::BitbucketServer => bitbucket::parse(headers, body),
            Provider::Generic => generic::parse(headers, body),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One branch moved by a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchUpdate {
    /// Short branch name (`main`, not `refs/heads/main`).
    pub branch: String,
    /// Commit the branch now points at; `None` when the branch was deleted or the forge does not say.
    pub after: Option<String>,
}

/// What a verified delivery is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The forge checks that the hook is reachable.
    Ping,
    /// Branches of a repository moved.
    Push {
        /// Every URL the payload names for the repository (clone, SSH, web).
        repo_urls: Vec<String>,
        /// Branches that moved (tags are dropped while parsing).
        branches: Vec<BranchUpdate>,
    },
    /// Pull/merge request activity: never triggers, the placement branch did not move.
    PullRequest {
        /// What happened (`opened`, `synchronize`, `closed`…).
        action: String,
        /// Branch the request targets.
        base_branch: String,
    },
    /// A generic sender's request; absent fields match the receiver's repository and branch.
    Generic {
        /// Repository the sender says changed.
        repo_url: Option<String>,
        /// Branch the sender says changed.
        branch: Option<String>,
        /// Commit the sender says is new.
        after: Option<String>,
    },
    /// A well-formed delivery that is not about pushes (or pushes only tags).
    Ignored(String),
}

/// Why a delivery is refused. Nothing is triggered for any of them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Reject {
    /// The signature/token header is absent.
    #[error("missing {header} header: configure the webhook's secret at the forge")]
    MissingSignature { header: &'static str },
    /// The signature/token does not match the receiver's secret.
    #[error("{header} does not match the receiver's secret")]
    BadSignature { header: &'static str },
    /// A header the provider always sends is absent or not text.
    #[error("missing or unreadable {header} header: is the receiver configured for the right provider?")]
    MissingHeader { header: &'static str },
    /// The body is not JSON.
    #[error("body is not valid JSON at line {line}, column {column}: {message}")]
    MalformedJson { line: usize, column: usize, message: String },
    /// The body is JSON but lacks a field this event needs.
    #[error("payload of a {event} event is missing or has a wrong field: {message}")]
    InvalidPayload { event: String, message: String },
    /// The body is larger than the receiver accepts.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// No receiver is configured at this path.
    #[error("no webhook receiver at this path")]
    UnknownPath,
}

impl Reject {
    /// HTTP status answered for this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::MissingSignature { .. } | Reject::BadSignature { .. } => StatusCode::UNAUTHORIZED,
            Reject::MissingHeader { .. } | Reject::MalformedJson { .. } | Reject::InvalidPayload { .. } => {
                StatusCode::BAD_REQUEST
            }
            Reject::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::UnknownPath => StatusCode::NOT_FOUND,
        }
    }

    /// Short label used in metrics and logs.
    pub fn result_label(&self) -> &'static str {
        match self {
            Reject::MissingSignature { .. } => "missing_signature",
            Reject::BadSignature { .. } => "bad_signature",
            Reject::MissingHeader { .. } => "bad_request",
            Reject::MalformedJson { .. } => "malformed_json",
            Reject::InvalidPayload { .. } => "invalid_payload",
            Reject::TooLarge { .. } => "too_large",
            Reject::UnknownPath => "not_found",
        }
    }
}

/// The repository and branch a receiver triggers syncs for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Placement repository URL, in any form (`https://`, `ssh://`, `git@host:path`).
    pub repo_url: String,
    /// Placement branch (short name).
    pub branch: String,
}

/// What to do with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sync now; `after` is the commit the forge announced, if any.
    Trigger { after: Option<String> },
    /// Answer the forge's ping.
    Ping,
    /// Acknowledge and do nothing, for this reason.
    Ignore(String),
}

/// Decide whether `event` concerns `target`.
pub fn decide(target: &Target, event: &Event) -> Decision {
    match event {
        Event::Ping => Decision::Ping,
        Event::Ignored(reason) => Decision::Ignore(reason.clone()),
        Event::PullRequest { action, base_branch } => Decision::Ignore(format!(
            "pull request {action} against {base_branch}: only pushes to the placement branch trigger a sync"
        )),
        Event::Push { repo_urls, branches } => {
            if !repo_urls.iter().any(|u| repo_url::same_repo(u, &target.repo_url)) {
                return Decision::Ignore(format!(
                    "repository {} is not the placement repository",
                    repo_urls.first().map(String::as_str).unwrap_or("(none)")
                ));
            }
            match branches.iter().find(|b| b.branch == target.branch) {
                Some(b) => Decision::Trigger { after: b.after.clone() },
                None => Decision::Ignore(format!(
                    "push to {} is not to the placement branch {}",
                    branches.iter().map(|b| b.branch.as_str()).collect::<Vec<_>>().join(", "),
                    target.branch
                )),
            }
        }
        Event::Generic { repo_url, branch, after } => {
            if let Some(url) = repo_url
                && !repo_url::same_repo(url, &target.repo_url)
            {
                return Decision::Ignore(format!("repository {url} is not the placement repository"));
            }
            if let Some(branch) = branch
                && *branch != target.branch
            {
                return Decision::Ignore(format!("branch {branch} is not the placement branch {}", target.branch));
            }
            Decision::Trigger { after: after.clone() }
        }
    }
}

/// Parse a body as JSON, reporting where it is malformed.
pub(crate) fn json(body: &[u8]) -> Result<serde_json::Value, Reject> {
    serde_json::from_slice(body).map_err(|e| Reject::MalformedJson { line: e.line(), column: e.column(), message: e.to_string() })
}

/// Deserialize an event payload from already-parsed JSON.
pub(crate) fn payload<T: serde::de::DeserializeOwned>(event: &str, value: serde_json::Value) -> Result<T, Reject> {
    serde_json::from_value(value).map_err(|e| Reject::InvalidPayload { event: event.to_owned(), message: e.to_string() })
}

/// A header's value as text.
pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `refs/heads/x` → `x`; tags and other refs → None.
pub(crate) fn branch_of(git_ref: &str) -> Option<&str> {
    git_ref.strip_prefix("refs/heads/")
}

/// An all-zero object id means "deleted"/"none" in every forge's payload.
pub(crate) fn commit(sha: Option<String>) -> Option<String> {
    sha.filter(|s| !s.is_empty() && !s.bytes().all(|b| b == b'0'))
}

/// URLs from a list of optional fields, dropping absent and empty ones.
pub(crate) fn urls<const N: usize>(candidates: [Option<String>; N]) -> Vec<String> {
    candidates.into_iter().flatten().filter(|u| !u.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target { repo_url: "git@github.com:Codertocat/Hello-World.git".into(), branch: "main".into() }
    }

    fn push(urls: &[&str], branch: &str) -> Event {
        Event::Push {
            repo_urls: urls.iter().map(|s| s.to_string()).collect(),
            branches: vec![BranchUpdate { branch: branch.into(), after: Some("abc".into()) }],
        }
    }

    #[test]
    fn push_to_placement_branch_of_same_repo_triggers() {
        let d = decide(&target(), &push(&["https://github.com/codertocat/hello-world"], "main"));
        assert_eq!(d, Decision::Trigger { after: Some("abc".into()) });
    }

    #[test]
    fn push_to_other_branch_or_repo_is_ignored() {
        assert!(matches!(decide(&target(), &push(&["https://github.com/Codertocat/Hello-World.git"], "dev")), Decision::Ignore(r) if r.contains("dev")));
        assert!(matches!(decide(&target(), &push(&["https://github.com/other/repo.git"], "main")), Decision::Ignore(r) if r.contains("other/repo")));
    }

    #[test]
    fn generic_without_fields_triggers_and_with_other_branch_does_not() {
        let any = Event::Generic { repo_url: None, branch: None, after: None };
        assert_eq!(decide(&target(), &any), Decision::Trigger { after: None });
        let other = Event::Generic { repo_url: None, branch: Some("dev".into()), after: None };
        assert!(matches!(decide(&target(), &other), Decision::Ignore(_)));
    }

    #[test]
    fn pull_requests_never_trigger() {
        let pr = Event::PullRequest { action: "closed".into(), base_branch: "main".into() };
        assert!(matches!(decide(&target(), &pr), Decision::Ignore(_)));
    }

    #[test]
    fn zero_sha_means_no_commit() {
        assert_eq!(commit(Some("0".repeat(40))), None);
        assert_eq!(commit(Some("ab12".into())), Some("ab12".into()));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Path of a shared webhook fixture.
    pub fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/webhooks").join(rel)
    }
}
