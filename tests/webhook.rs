//! The webhook server over real HTTP on 127.0.0.1: real forge payloads from
//! the shared fixtures, signed like the forges sign them, and the triggers
//! that arrive (or must not arrive) on the channel the agent loop reads.
mod webhook_common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use ferry::webhook::signature::hmac_sha256_hex;
use ferry::webhook::{Provider, trigger_channel};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::Value;
use tokio::sync::oneshot;
use webhook_common::*;

#[tokio::test]
async fn github_push_fixtures_trigger_for_the_placement_branch_only() {
    let mut s = Server::start(1 << 20).await;
    let dir = fixture("github/push");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 6, "expected the six GitHub push fixtures in {}", dir.display());
    let (mut accepted, mut ignored) = (0, 0);
    for path in files {
        let body = std::fs::read(&path).unwrap();
        let payload: Value = serde_json::from_slice(&body).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (status, answer) = s.post("github", &github_headers("push", &body, &secret("github")), body).await;
        // Expectation from the payload itself: branch pushes to master trigger, tag pushes do not.
        if payload["ref"] == "refs/heads/master" {
            assert_eq!(status, StatusCode::ACCEPTED, "{name}: {answer}");
            assert_eq!(answer["result"], "accepted");
            let pending = s.take_trigger(&name);
            assert_eq!(pending.coalesced, 1);
            assert_eq!(pending.latest.receiver, "github");
            assert_eq!(pending.latest.provider, Provider::Github);
            assert_eq!(pending.latest.after.as_deref(), payload["after"].as_str(), "{name}");
            accepted += 1;
        } else {
            assert_eq!(status, StatusCode::OK, "{name}: {answer}");
            assert_eq!(answer["result"], "ignored");
            assert!(answer["reason"].as_str().unwrap().contains("refs/tags/"), "{name}: {answer}");
            s.assert_no_trigger(&name);
            ignored += 1;
        }
    }
    assert!(accepted >= 2 && ignored >= 3, "fixtures should contain both branch and tag pushes ({accepted}/{ignored})");
    assert_eq!(s.scrape("github", "accepted").await, accepted);
    assert_eq!(s.scrape("github", "ignored").await, ignored);
    s.shutdown().await;
}

#[tokio::test]
async fn github_ping_pull_requests_and_other_repos_or_branches_are_answered_but_ignored() {
    let mut s = Server::start(1 << 20).await;
    let ping = read("github/ping/payload.json");
    let (status, answer) = s.post("github", &github_headers("ping", &ping, &secret("github")), ping).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::OK, Some("ping")));
    s.assert_no_trigger("ping");

    for f in ["opened", "synchronize", "closed"] {
        let body = read(&format!("github/pull_request/{f}.payload.json"));
        let (status, answer) = s.post("github", &github_headers("pull_request", &body, &secret("github")), body).await;
        assert_eq!((status, answer["result"].as_str()), (StatusCode::OK, Some("ignored")), "{f}: {answer}");
        s.assert_no_trigger(f);
    }

    let push = read("github/push/with-new-branch.payload.json");
    // Right repository, other branch.
    let (status, answer) = s.post("github-main", &github_headers("push", &push, &secret("github-main")), push.clone()).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::OK, Some("ignored")), "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("placement branch main"), "{answer}");
    s.assert_no_trigger("push to another branch");
    // Right branch, other repository.
    let (status, answer) = s.post("github-other", &github_headers("push", &push, &secret("github-other")), push.clone()).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::OK, Some("ignored")), "{answer}");
    s.assert_no_trigger("push to another repository");
    // Unknown event type.
    let (status, answer) = s.post("github", &github_headers("issues", b"{}", &secret("github")), b"{}".to_vec()).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::OK, Some("ignored")), "{answer}");
    s.assert_no_trigger("issues event");

    assert_eq!(s.scrape("github", "ping").await, 1);
    assert_eq!(s.scrape("github", "ignored").await, 6, "3 pull requests, other branch, other repo, unknown event");
    assert_eq!(s.scrape("github-main", "ignored").await, 0, "metrics are labelled by provider, not receiver");
    s.shutdown().await;
}

#[tokio::test]
async fn gitlab_gogs_gitea_bitbucket_and_generic_payloads_trigger() {
    let mut s = Server::start(1 << 20).await;

    let body = read("gitlab/push.json");
    let headers = vec![("x-gitlab-event", "Push Hook".to_owned()), ("x-gitlab-token", secret("gitlab"))];
    let (status, answer) = s.post("gitlab", &headers, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(s.take_trigger("gitlab push").latest.after.as_deref(), Some("bb0748feaa336d841c251017e4e374c22d0c8a98"));

    let body = read("gogs/push.json");
    let sig = hmac_sha256_hex(secret("gogs").as_bytes(), &body);
    let (status, answer) = s.post("gogs", &[("x-gogs-event", "push".to_owned()), ("x-gogs-signature", sig)], body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let t = s.take_trigger("gogs push");
    assert_eq!((t.latest.provider, t.latest.after.as_deref()), (Provider::Gogs, Some("0a05129851238652bf806a400af89fa974ade739")));

    // Gitea sends the same payload shape under its own header names.
    let sig = hmac_sha256_hex(secret("gitea").as_bytes(), &body);
    let (status, answer) = s.post("gitea", &[("x-gitea-event", "push".to_owned()), ("x-gitea-signature", sig)], body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(s.take_trigger("gitea push").latest.provider, Provider::Gitea);

    let body = read("bitbucket-server/refs_changed.json");
    let sig = format!("sha256={}", hmac_sha256_hex(secret("bitbucket").as_bytes(), &body));
    let (status, answer) = s.post("bitbucket", &[("x-event-key", "repo:refs_changed".to_owned()), ("x-hub-signature", sig)], body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(s.take_trigger("bitbucket push").latest.after.as_deref(), Some("22671f0349857934857983457983475ec39f196b"));
    let sig = format!("sha256={}", hmac_sha256_hex(secret("bitbucket").as_bytes(), b""));
    let (status, answer) = s.post("bitbucket", &[("x-event-key", "diagnostics:ping".to_owned()), ("x-hub-signature", sig)], vec![]).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::OK, Some("ping")));
    s.assert_no_trigger("bitbucket ping");

    let body = br#"{"branch":"main","after":"feedface"}"#.to_vec();
    let sig = format!("sha256={}", hmac_sha256_hex(secret("generic").as_bytes(), &body));
    let (status, answer) = s.post("generic", &[("x-ferry-signature", sig)], body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(s.take_trigger("generic").latest.after.as_deref(), Some("feedface"));
    let body = br#"{"branch":"dev"}"#.to_vec();
    let sig = format!("sha256={}", hmac_sha256_hex(secret("generic").as_bytes(), &body));
    let (status, _) = s.post("generic", &[("x-ferry-signature", sig)], body).await;
    assert_eq!(status, StatusCode::OK);
    s.assert_no_trigger("generic request for another branch");

    for (provider, n) in [("gitlab", 1), ("gogs", 1), ("gitea", 1), ("bitbucket-server", 1), ("generic", 1)] {
        assert_eq!(s.scrape(provider, "accepted").await, n, "{provider}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_rejected_with_the_right_status_and_trigger_nothing() {
    let limit = 64 * 1024;
    let mut s = Server::start(limit).await;
    let push = read("github/push/with-new-branch.payload.json");

    // Signed with another secret.
    let (status, answer) = s.post("github", &github_headers("push", &push, "not-the-secret"), push.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    // Signature of another body.
    let mut headers = github_headers("push", b"{}", &secret("github"));
    let (status, _) = s.post("github", &headers, push.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Not hex.
    headers.retain(|(k, _)| *k != "x-hub-signature-256");
    headers.push(("x-hub-signature-256", "sha256=zz".into()));
    let (status, _) = s.post("github", &headers, push.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Missing.
    headers.pop();
    let (status, answer) = s.post("github", &headers, push.clone()).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_signature")));
    // GitLab: wrong and missing token.
    let gl = read("gitlab/push.json");
    let (status, _) = s.post("gitlab", &[("x-gitlab-event", "Push Hook".into()), ("x-gitlab-token", "wrong".into())], gl.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s.post("gitlab", &[("x-gitlab-event", "Push Hook".into())], gl).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Bitbucket with GitHub's header name is not signed as far as Bitbucket goes.
    let bb = read("bitbucket-server/refs_changed.json");
    let (status, _) = s.post("bitbucket", &github_headers("push", &bb, &secret("bitbucket")), bb).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.assert_no_trigger("unauthenticated requests");

    // Correctly signed but malformed JSON, with where it broke.
    let bad = b"{\"ref\": \"refs/heads/master\",\n \"after\": }".to_vec();
    let (status, answer) = s.post("github", &github_headers("push", &bad, &secret("github")), bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("line 2"), "{answer}");
    // Signed JSON without the fields a push needs.
    let bad = br#"{"after":"abc"}"#.to_vec();
    let (status, answer) = s.post("github", &github_headers("push", &bad, &secret("github")), bad).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    // Form-encoded deliveries (a forge setting) are refused with the fix in the answer.
    let form = format!("payload={}", "%7B%7D").into_bytes();
    let mut headers = github_headers("push", &form, &secret("github"));
    headers.retain(|(k, _)| *k != "content-type");
    headers.push(("content-type", "application/x-www-form-urlencoded".into()));
    let (status, answer) = s.post("github", &headers, form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"].as_str().unwrap().contains("application/json"), "{answer}");
    // Missing event header.
    let (status, _) = s.post("github", &github_headers("push", &push, &secret("github"))[1..], push.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.assert_no_trigger("malformed requests");

    // Oversized, announced by Content-Length; signed, so only the size is wrong.
    let mut big = b"{\"pad\":\"".to_vec();
    big.resize(limit + 1, b'x');
    let (status, answer) = s.post("github", &github_headers("push", &big, &secret("github")), big.clone()).await;
    assert_eq!((status, answer["result"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")));
    // Oversized and chunked (no Content-Length): caught while reading.
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> =
        big.chunks(8 * 1024).map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c)))).collect();
    let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
    let req_headers = github_headers("push", &big, &secret("github"));
    let (status, _) = s.request(Method::POST, &format!("/hooks/{}", token("github")), &req_headers, body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine as far as size goes (then it's not valid JSON).
    let mut edge = big.clone();
    edge.truncate(limit);
    let (status, _) = s.post("github", &github_headers("push", &edge, &secret("github")), edge).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.assert_no_trigger("oversized requests");

    // Unknown receiver paths, including a prefix of a real token and the bare prefix.
    let (status, bytes) = s.request(Method::POST, "/hooks/not-a-receiver", &github_headers("push", &push, &secret("github")), Full::new(Bytes::from(push.clone())).boxed()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&bytes));
    let prefix = &token("github")[..20];
    let (status, _) = s.request(Method::POST, &format!("/hooks/{prefix}"), &[], Full::new(Bytes::from(push.clone())).boxed()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.request(Method::POST, "/github", &[], Full::new(Bytes::from(push)).boxed()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.assert_no_trigger("unknown paths");

    assert_eq!(s.scrape("github", "bad_signature").await, 3);
    assert_eq!(s.scrape("github", "missing_signature").await, 1);
    assert_eq!(s.scrape("gitlab", "bad_signature").await, 1);
    assert_eq!(s.scrape("gitlab", "missing_signature").await, 1);
    assert_eq!(s.scrape("bitbucket-server", "missing_signature").await, 1);
    assert_eq!(s.scrape("github", "malformed_json").await, 2, "invalid JSON and the truncated at-limit body");
    assert_eq!(s.scrape("github", "invalid_payload").await, 2, "missing field and form-encoded");
    assert_eq!(s.scrape("github", "bad_request").await, 1);
    assert_eq!(s.scrape("github", "too_large").await, 2);
    assert_eq!(s.scrape("unknown", "not_found").await, 2, "the fallback route is not a receiver path");
    assert_eq!(s.scrape("github", "accepted").await, 0);
    assert_eq!(s.metrics.webhook_requests("github", "too_large"), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn webhooks_during_a_sync_coalesce_into_one_more_sync() {
    let mut s = Server::start(1 << 20).await;
    // The test keeps the server; the stand-in loop owns the channel.
    let mut triggers = std::mem::replace(&mut s.triggers, trigger_channel().1);
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    // A stand-in for the agent loop: one sync per wake-up; the first sync
    // stays "running" until the test has delivered a burst of webhooks.
    let agent = tokio::spawn(async move {
        let mut syncs = Vec::new();
        let mut started = Some(started_tx);
        let mut finish = Some(finish_rx);
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), triggers.recv()).await {
            syncs.push(p.coalesced);
            if let Some(tx) = started.take() {
                tx.send(()).unwrap();
                finish.take().unwrap().await.unwrap();
            }
        }
        syncs
    });
    let push = read("github/push/with-new-branch.payload.json");
    let headers = github_headers("push", &push, &secret("github"));
    assert_eq!(s.post("github", &headers, push.clone()).await.0, StatusCode::ACCEPTED);
    started_rx.await.unwrap();
    // 20 concurrent deliveries while the first sync runs.
    let burst = futures::future::join_all((0..20).map(|_| s.post("github", &headers, push.clone()))).await;
    assert!(burst.iter().all(|(st, _)| *st == StatusCode::ACCEPTED));
    finish_tx.send(()).unwrap();
    let syncs = agent.await.unwrap();
    assert_eq!(syncs, vec![1, 20], "one sync for the first webhook, one more for the whole burst");
    assert_eq!(s.scrape("github", "accepted").await, 21);
    s.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let s = Server::start(1 << 20).await;
    assert_eq!(s.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(s.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE, "not ready until the agent says so");
    s.readiness.set(true);
    assert_eq!(s.get("/readyz").await.0, StatusCode::OK);
    s.readiness.set(false);
    assert_eq!(s.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

    // What the agent records shows up in the scrape.
    s.metrics.migration_finished("succeeded");
    s.metrics.sync_succeeded("6113728f27ae82c7b1a177c8d03f9e96e0adf246", std::time::SystemTime::now());
    s.metrics.add_bytes_moved(12345);
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("ferry_migrations_total{result=\"succeeded\"} 1"), "{text}");
    assert!(text.contains("ferry_last_successful_sync_commit{commit=\"6113728f27ae82c7b1a177c8d03f9e96e0adf246\"} 1"), "{text}");
    assert!(text.contains("ferry_moved_bytes_total 12345"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    s.shutdown().await;
}
