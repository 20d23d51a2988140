//! Gitea/Forgejo and Gogs: hex HMAC-SHA256 in `X-Gitea-Signature` /
//! `X-Gogs-Signature` (no `sha256=` prefix), event in `X-Gitea-Event` / `X-Gogs-Event`.
use http::HeaderMap;

use super::{BranchUpdate, Event, Reject, branch_of, commit, header, json, payload, signature};

/// Which of the two sibling forges sent the delivery; they differ only in header names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Gitea and Forgejo.
    Gitea,
    /// Gogs.
    Gogs,
}

impl Flavor {
    /// Header carrying the signature.
    pub fn signature_header(self) -> &'static str {
        match self {
            Flavor::Gitea => "x-gitea-signature",
            Flavor::Gogs => "x-gogs-signature",
        }
    }

    /// Header naming the event.
    pub fn event_header(self) -> &'static str {
        match self {
            Flavor::Gitea => "x-gitea-event",
            Flavor::Gogs => "x-gogs-event",
        }
    }
}

/// Verify the hex HMAC-SHA256 signature.
pub fn verify(flavor: Flavor, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Reject> {
    signature::verify_hmac(headers, flavor.signature_header(), None, body, secret)
}

/// Parse a verified delivery.
pub fn parse(flavor: Flavor, headers: &HeaderMap, body: &[u8]) -> Result<Event, Reject> {
    let event_header = flavor.event_header();
    let event = header(headers, event_header).ok_or(Reject::MissingHeader { header: event_header })?;
    let value = json(body)?;
    if event != "push" {
        return Ok(Event::Ignored(format!("{flavor:?} event {event} is not handled")));
    }
    // Gitea and Gogs send GitHub's push payload shape.
    let p: super::github::Push = payload(event, value)?;
    let Some(branch) = branch_of(&p.git_ref) else {
        return Ok(Event::Ignored(format!("push to {} is not a branch", p.git_ref)));
    };
    Ok(Event::Push {
        repo_urls: p.repository.urls(),
        branches: vec![BranchUpdate { branch: branch.to_owned(), after: commit(p.after) }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gogs_push_fixture() {
        let body = std::fs::read(crate::webhook::tests_support::fixture("gogs/push.json")).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-gogs-event", "push".parse().unwrap());
        let Event::Push { repo_urls, branches } = parse(Flavor::Gogs, &h, &body).unwrap() else { panic!("not a push") };
        assert_eq!(repo_urls[0], "http://gogs-server/john/repo-test.git");
        assert_eq!(branches[0].after.as_deref(), Some("0a05129851238652bf806a400af89fa974ade739"));
        // A Gitea receiver reads its own header names.
        assert_eq!(parse(Flavor::Gitea, &h, &body), Err(Reject::MissingHeader { header: "x-gitea-event" }));
    }

    #[test]
    fn signature_is_bare_hex() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut h = HeaderMap::new();
        h.insert("x-gitea-signature", signature::hmac_sha256_hex(b"k", body).parse().unwrap());
        assert_eq!(verify(Flavor::Gitea, &h, body, b"k"), Ok(()));
        assert_eq!(verify(Flavor::Gogs, &h, body, b"k"), Err(Reject::MissingSignature { header: "x-gogs-signature" }));
    }
}
