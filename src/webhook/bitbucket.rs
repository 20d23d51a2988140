//! Bitbucket Server / Data Center: `X-Hub-Signature: sha256=<hex>`, event in `X-Event-Key`.
use http::HeaderMap;
use serde::Deserialize;

use super::{BranchUpdate, Event, Reject, commit, header, json, payload, signature};

/// Header carrying the signature.
pub const SIGNATURE: &str = "x-hub-signature";
/// Header naming the event.
pub const EVENT: &str = "x-event-key";

/// Verify `X-Hub-Signature`.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Reject> {
    signature::verify_hmac(headers, SIGNATURE, Some("sha256="), body, secret)
}

#[derive(Deserialize)]
struct RefsChanged {
    repository: Repository,
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Repository {
    links: Links,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    clone: Vec<Link>,
    #[serde(rename = "self", default)]
    self_links: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    href: String,
}

#[derive(Deserialize)]
struct Change {
    #[serde(rename = "ref")]
    git_ref: ChangeRef,
    #[serde(rename = "toHash")]
    to_hash: Option<String>,
}

#[derive(Deserialize)]
struct ChangeRef {
    id: String,
    #[serde(rename = "displayId")]
    display_id: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Parse a verified delivery.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Event, Reject> {
    let event = header(headers, EVENT).ok_or(Reject::MissingHeader { header: EVENT })?;
    // "Test connection" sends diagnostics:ping, sometimes with an empty body.
    if event == "diagnostics:ping" {
        return Ok(Event::Ping);
    }
    let value = json(body)?;
    if event != "repo:refs_changed" {
        return Ok(Event::Ignored(format!("Bitbucket Server event {event} is not handled")));
    }
    let p: RefsChanged = payload(event, value)?;
    let branches: Vec<BranchUpdate> = p
        .changes
        .into_iter()
        .filter(|c| c.git_ref.kind == "BRANCH")
        .map(|c| {
            let branch = c.git_ref.id.strip_prefix("refs/heads/").map(str::to_owned).unwrap_or(c.git_ref.display_id);
            BranchUpdate { branch, after: commit(c.to_hash) }
        })
        .collect();
    if branches.is_empty() {
        return Ok(Event::Ignored("refs_changed moved no branch".into()));
    }
    let repo_urls = p.repository.links.clone.into_iter().chain(p.repository.links.self_links).map(|l| l.href).collect();
    Ok(Event::Push { repo_urls, branches })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_changed_fixture() {
        let body = std::fs::read(crate::webhook::tests_support::fixture("bitbucket-server/refs_changed.json")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(EVENT, "repo:refs_changed".parse().unwrap());
        let Event::Push { repo_urls, branches } = parse(&h, &body).unwrap() else { panic!("not a push") };
        assert_eq!(repo_urls[0], "ssh://git@bitbucketserver:7999/myproject/test-repo.git");
        assert_eq!(branches, vec![BranchUpdate { branch: "master".into(), after: Some("22671f0349857934857983457983475ec39f196b".into()) }]);
    }

    #[test]
    fn ping_needs_no_body() {
        let mut h = HeaderMap::new();
        h.insert(EVENT, "diagnostics:ping".parse().unwrap());
        assert_eq!(parse(&h, b""), Ok(Event::Ping));
    }
}
