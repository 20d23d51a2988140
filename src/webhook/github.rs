//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, event in `X-GitHub-Event`.
use http::HeaderMap;
use serde::Deserialize;

use super::{BranchUpdate, Event, Reject, branch_of, commit, header, json, payload, signature, urls};

/// Header carrying the signature.
pub const SIGNATURE: &str = "x-hub-signature-256";
/// Header naming the event.
pub const EVENT: &str = "x-github-event";

/// Verify `X-Hub-Signature-256`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Reject> {
    signature::verify_hmac(headers, SIGNATURE, Some("sha256="), body, secret)
}

/// Repository fields shared by every GitHub event.
#[derive(Deserialize)]
pub(crate) struct Repository {
    clone_url: Option<String>,
    ssh_url: Option<String>,
    html_url: Option<String>,
    git_url: Option<String>,
}

impl Repository {
    pub(crate) fn urls(self) -> Vec<String> {
        urls([self.clone_url, self.ssh_url, self.html_url, self.git_url])
    }
}

/// A push delivery (Gitea and Gogs send the same shape).
#[derive(Deserialize)]
pub(crate) struct Push {
    #[serde(rename = "ref")]
    pub(crate) git_ref: String,
    pub(crate) after: Option<String>,
    pub(crate) repository: Repository,
}

#[derive(Deserialize)]
struct PullRequest {
    action: String,
    pull_request: PullRequestBody,
}

#[derive(Deserialize)]
struct PullRequestBody {
    base: PullRequestRef,
}

#[derive(Deserialize)]
struct PullRequestRef {
    #[serde(rename = "ref")]
    git_ref: String,
}

/// Parse a verified delivery.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Event, Reject> {
    let event = header(headers, EVENT).ok_or(Reject::MissingHeader { header: EVENT })?;
    // Parse first so a malformed body is reported for every event type.
    let value = json(body)?;
    match event {
        "ping" => Ok(Event::Ping),
        "push" => {
            let p: Push = payload(event, value)?;
            let Some(branch) = branch_of(&p.git_ref) else {
                return Ok(Event::Ignored(format!("push to {} is not a branch", p.git_ref)));
            };
            Ok(Event::Push {
                repo_urls: p.repository.urls(),
                branches: vec![BranchUpdate { branch: branch.to_owned(), after: commit(p.after) }],
            })
        }
        "pull_request" => {
            let p: PullRequest = payload(event, value)?;
            Ok(Event::PullRequest { action: p.action, base_branch: p.pull_request.base.git_ref })
        }
        other => Ok(Event::Ignored(format!("GitHub event {other} is not handled"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(event: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(EVENT, event.parse().unwrap());
        h
    }

    #[test]
    fn branch_push_fixture() {
        let body = std::fs::read(crate::webhook::tests_support::fixture("github/push/with-new-branch.payload.json")).unwrap();
        let Event::Push { repo_urls, branches } = parse(&headers("push"), &body).unwrap() else { panic!("not a push") };
        assert!(repo_urls.contains(&"git@github.com:Codertocat/Hello-World.git".to_string()));
        assert_eq!(branches, vec![BranchUpdate { branch: "master".into(), after: Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246".into()) }]);
    }

    #[test]
    fn tag_push_fixture_is_ignored() {
        let body = std::fs::read(crate::webhook::tests_support::fixture("github/push/payload.json")).unwrap();
        assert!(matches!(parse(&headers("push"), &body).unwrap(), Event::Ignored(r) if r.contains("refs/tags/simple-tag")));
    }

    #[test]
    fn pull_request_and_ping_and_unknown() {
        let body = std::fs::read(crate::webhook::tests_support::fixture("github/pull_request/closed.payload.json")).unwrap();
        assert_eq!(parse(&headers("pull_request"), &body).unwrap(), Event::PullRequest { action: "closed".into(), base_branch: "master".into() });
        assert_eq!(parse(&headers("ping"), b"{}").unwrap(), Event::Ping);
        assert!(matches!(parse(&headers("issues"), b"{}").unwrap(), Event::Ignored(_)));
    }

    #[test]
    fn bad_bodies_are_rejected_with_position() {
        assert!(matches!(parse(&headers("push"), b"{\n  \"ref\": ,"), Err(Reject::MalformedJson { line: 2, .. })));
        assert!(matches!(parse(&headers("push"), b"{\"after\": \"x\"}"), Err(Reject::InvalidPayload { message, .. }) if message.contains("ref")));
        assert_eq!(parse(&HeaderMap::new(), b"{}"), Err(Reject::MissingHeader { header: EVENT }));
    }
}
