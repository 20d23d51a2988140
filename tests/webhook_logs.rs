//! The server logs its decisions but never a secret, a token it was sent or a path token.
mod webhook_common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use webhook_common::*;

/// Collects everything the server logs.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_and_path_tokens_are_never_logged() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().json().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    // Global, and alone in this binary: scoped subscribers miss events of
    // callsites first hit on other test threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let mut s = Server::start(1 << 20).await;
    let push = read("github/push/with-new-branch.payload.json");
    assert_eq!(s.post("github", &github_headers("push", &push, &secret("github")), push.clone()).await.0, StatusCode::ACCEPTED);
    assert_eq!(s.post("github", &github_headers("push", &push, "wrong"), push.clone()).await.0, StatusCode::UNAUTHORIZED);
    let gl = read("gitlab/push.json");
    assert_eq!(s.post("gitlab", &[("x-gitlab-event", "Push Hook".into()), ("x-gitlab-token", "wrong-token".into())], gl).await.0, StatusCode::UNAUTHORIZED);
    let almost = format!("{}x", token("github"));
    let (status, _) = s.request(Method::POST, &format!("/hooks/{almost}"), &[], Full::new(Bytes::new()).boxed()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.take_trigger("the accepted push");
    s.shutdown().await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("webhook rejected") && logs.contains("accepted"), "the server should log its decisions:\n{logs}");
    for needle in [secret("github"), secret("gitlab"), "wrong-token".to_owned(), token("github")] {
        assert!(!logs.contains(&needle), "logs contain {needle:?}:\n{logs}");
    }
}
