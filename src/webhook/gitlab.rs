//! GitLab: the shared secret itself in `X-Gitlab-Token`, event in `X-Gitlab-Event`.
use http::HeaderMap;
use serde::Deserialize;

use super::{BranchUpdate, Event, Reject, branch_of, commit, header, json, payload, signature, urls};

/// Header carrying the secret token.
pub const TOKEN: &str = "x-gitlab-token";
/// Header naming the event.
pub const EVENT: &str = "x-gitlab-event";

/// Compare `X-Gitlab-Token` with the secret in constant time.
pub fn verify(headers: &HeaderMap, _body: &[u8], secret: &[u8]) -> Result<(), Reject> {
    let token = headers.get(TOKEN).ok_or(Reject::MissingSignature { header: TOKEN })?;
    if token.is_empty() {
        return Err(Reject::MissingSignature { header: TOKEN });
    }
    if signature::constant_time_eq(token.as_bytes(), secret) { Ok(()) } else { Err(Reject::BadSignature { header: TOKEN }) }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: Option<String>,
    project: Option<Project>,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Project {
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    url: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    homepage: Option<String>,
}

/// Parse a verified delivery.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Event, Reject> {
    let event = header(headers, EVENT).ok_or(Reject::MissingHeader { header: EVENT })?;
    let value = json(body)?;
    // System hooks carry the push payload with `object_kind` telling its type.
    let is_push = event == "Push Hook" || (event == "System Hook" && value.get("object_kind").and_then(|k| k.as_str()) == Some("push"));
    if !is_push {
        return Ok(Event::Ignored(format!("GitLab event {event} is not handled")));
    }
    let p: Push = payload(event, value)?;
    let Some(branch) = branch_of(&p.git_ref) else {
        return Ok(Event::Ignored(format!("push to {} is not a branch", p.git_ref)));
    };
    let mut repo_urls = Vec::new();
    if let Some(pr) = p.project {
        repo_urls.extend(urls([pr.git_http_url, pr.git_ssh_url, pr.web_url]));
    }
    if let Some(r) = p.repository {
        repo_urls.extend(urls([r.git_http_url, r.git_ssh_url, r.url, r.homepage]));
    }
    if repo_urls.is_empty() {
        return Err(Reject::InvalidPayload { event: event.into(), message: "neither project nor repository names a URL".into() });
    }
    Ok(Event::Push { repo_urls, branches: vec![BranchUpdate { branch: branch.to_owned(), after: commit(p.after) }] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_fixture() {
        let body = std::fs::read(crate::webhook::tests_support::fixture("gitlab/push.json")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(EVENT, "Push Hook".parse().unwrap());
        let Event::Push { repo_urls, branches } = parse(&h, &body).unwrap() else { panic!("not a push") };
        assert!(repo_urls.contains(&"https://gitlab/group/name.git".to_string()), "{repo_urls:?}");
        assert_eq!(branches[0].branch, "master");
        assert_eq!(branches[0].after.as_deref(), Some("bb0748feaa336d841c251017e4e374c22d0c8a98"));
        h.insert(EVENT, "Tag Push Hook".parse().unwrap());
        assert!(matches!(parse(&h, &body).unwrap(), Event::Ignored(_)));
    }

    #[test]
    fn token_is_compared_exactly() {
        let mut h = HeaderMap::new();
        assert_eq!(verify(&h, b"", b"tok"), Err(Reject::MissingSignature { header: TOKEN }));
        h.insert(TOKEN, "tok".parse().unwrap());
        assert_eq!(verify(&h, b"", b"tok"), Ok(()));
        assert_eq!(verify(&h, b"", b"tok2"), Err(Reject::BadSignature { header: TOKEN }));
    }
}
