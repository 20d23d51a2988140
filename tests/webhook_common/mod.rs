//! Shared by the webhook test binaries: a real server on 127.0.0.1:0, a real
//! HTTP client, the receivers under test and the fixture payloads.
#![allow(dead_code)]
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry::metrics::Metrics;
use ferry::webhook::config::{Receiver, Secret};
use ferry::webhook::signature::hmac_sha256_hex;
use ferry::webhook::{Pending, Provider, Readiness, ReceiverConfig, ServerState, Target, TriggerReceiver, router, serve, trigger_channel};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;

pub const GITHUB_REPO: &str = "git@github.com:Codertocat/Hello-World.git";

pub fn fixture(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/webhooks").join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("reading fixture {rel}: {e}"))
}

pub fn token(name: &str) -> String {
    // Distinct per receiver and long enough for the server's own checks.
    format!("{name}-{}", "0123456789abcdef0123456789abcdef")
}

pub fn secret(name: &str) -> String {
    format!("{name}-test-secret-0123456789")
}

pub fn receiver(name: &str, provider: Provider, repo_url: &str, branch: &str) -> Receiver {
    Receiver {
        name: name.into(),
        provider,
        path_token: token(name),
        secret: Secret::new(secret(name)),
        target: Target { repo_url: repo_url.into(), branch: branch.into() },
    }
}

/// The forge receivers every test uses, each pointed at its fixture's repository.
pub fn receivers() -> Vec<Receiver> {
    vec![
        receiver("github", Provider::Github, GITHUB_REPO, "master"),
        receiver("github-main", Provider::Github, GITHUB_REPO, "main"),
        receiver("github-other", Provider::Github, "https://github.com/other/placement", "master"),
        receiver("gitlab", Provider::Gitlab, "https://gitlab/group/name", "master"),
        receiver("gogs", Provider::Gogs, "http://gogs-server/john/repo-test", "master"),
        receiver("gitea", Provider::Gitea, "http://gogs-server/john/repo-test", "master"),
        receiver("bitbucket", Provider::BitbucketServer, "https://bitbucketserver/scm/myproject/test-repo.git", "master"),
        receiver("generic", Provider::Generic, "https://example.com/org/placement", "main"),
    ]
}

pub type Body = BoxBody<Bytes, Infallible>;

pub struct Server {
    pub base: String,
    pub triggers: TriggerReceiver,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    client: Client<HttpConnector, Body>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(body_limit: usize) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, triggers) = trigger_channel();
        let metrics = Arc::new(Metrics::new());
        let readiness = Readiness::default();
        let state = ServerState::new(ReceiverConfig { receivers: receivers(), body_limit }, tx, metrics.clone(), readiness.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router(state), async move {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Server { base, triggers, metrics, readiness, client, stop: Some(stop), task: Some(task) }
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, String)], body: Body) -> (StatusCode, Bytes) {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self.client.request(req.body(body).unwrap()).await.expect("HTTP request");
        let status = resp.status();
        (status, resp.into_body().collect().await.expect("response body").to_bytes())
    }

    /// POST to a receiver; returns the status and the JSON answer.
    pub async fn post(&self, receiver: &str, headers: &[(&str, String)], body: Vec<u8>) -> (StatusCode, Value) {
        let (status, bytes) = self.request(Method::POST, &format!("/hooks/{}", token(receiver)), headers, Full::new(Bytes::from(body)).boxed()).await;
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let (s, b) = self.request(Method::GET, path, &[], Full::new(Bytes::new()).boxed()).await;
        (s, String::from_utf8(b.to_vec()).unwrap())
    }

    /// Scrape `/metrics` over HTTP and read one sample.
    pub async fn scrape(&self, provider: &str, result: &str) -> u64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let prefix = format!(r#"ferry_webhook_requests_total{{provider="{provider}",result="{result}"}} "#);
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap()).unwrap_or(0)
    }

    pub fn assert_no_trigger(&mut self, what: &str) {
        assert_eq!(self.triggers.try_recv(), None, "{what} must not trigger a sync");
    }

    pub fn take_trigger(&mut self, what: &str) -> Pending {
        self.triggers.try_recv().unwrap_or_else(|| panic!("{what} must trigger a sync"))
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap()).await.expect("graceful shutdown").unwrap().unwrap();
    }
}

pub fn github_headers(event: &str, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("x-hub-signature-256", format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), body))),
    ]
}

