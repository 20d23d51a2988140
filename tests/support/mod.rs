//! Test support: one running two-cluster harness per test run, shared by every
//! test binary, and a fresh namespace per test that is deleted again even when
//! the test fails (Drop runs during unwinding).
//!
//! The harness lives in `$FERRY_TEST_STATE` (default `target/tmp/harness`).
//! `scripts/test.sh` stops it at the end of the run; a plain `cargo test`
//! leaves it running for the next run (`ferry dev down --state target/tmp/harness`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The shared harness.
pub struct Harness {
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
}

/// Path of the ferry binary under test.
pub fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// Run ferry with args; panics with its output on failure.
pub fn ferry(args: &[&str]) -> String {
    let out = Command::new(ferry_bin()).args(args).env("FERRY_LOG_FORMAT", "text").output().expect("running ferry");
    assert!(
        out.status.success(),
        "ferry {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start (or reuse) the shared `east` + `west` harness, once per test binary.
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let state = std::env::var_os("FERRY_TEST_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("harness"));
        let state_s = state.display().to_string();
        // `dev up` takes a lock on the state dir, so test binaries running at
        // the same time share one harness instead of racing.
        let json = ferry(&["dev", "up", "--state", &state_s, "-o", "json"]);
        let report: serde_json::Value = serde_json::from_str(&json).expect("dev up -o json");
        let bin_dir = PathBuf::from(ferry(&["dev", "binaries"]).trim());
        Harness { kubeconfig: PathBuf::from(report["kubeconfig"].as_str().expect("kubeconfig")), state, bin_dir }
    })
}

impl Harness {
    /// A kube client for a context (`east`, `west`).
    pub async fn client(&self, context: &str) -> kube::Client {
        ferry::kubeconfig::client_for(&self.kubeconfig, context).await.expect("client")
    }

    /// Run the harness's kubectl against a context.
    pub fn kubectl(&self, context: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.bin_dir.join("kubectl"))
            .arg("--kubeconfig").arg(&self.kubeconfig)
            .arg("--context").arg(context)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, context: &str, args: &[&str]) -> String {
        let out = self.kubectl(context, args);
        assert!(out.status.success(), "kubectl --context {context} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh namespace named after the test on every given cluster, deleted on drop.
    pub fn namespace(&'static self, test: &str, contexts: &[&str]) -> TestNamespace {
        let suffix: u32 = rand::random::<u32>() % 100_000;
        let mut name: String = format!("t-{test}").chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        name.truncate(50);
        let name = format!("{}-{suffix}", name.trim_end_matches('-'));
        for ctx in contexts {
            self.kubectl_ok(ctx, &["create", "namespace", &name]);
        }
        TestNamespace { harness: self, name, contexts: contexts.iter().map(|s| s.to_string()).collect() }
    }
}

impl TestNamespace {
    /// Also delete `name` on `context` when the test ends (for namespaces a test
    /// causes to be created there, such as a migration's destination).
    pub fn adopt(harness: &'static Harness, name: &str, context: &str) -> TestNamespace {
        TestNamespace { harness, name: name.to_string(), contexts: vec![context.to_string()] }
    }
}

/// A namespace that exists for one test.
pub struct TestNamespace {
    harness: &'static Harness,
    pub name: String,
    pub contexts: Vec<String>,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        for ctx in &self.contexts {
            let _ = self.harness.kubectl(ctx, &["delete", "namespace", &self.name, "--ignore-not-found", "--wait=false"]);
        }
    }
}

/// Path of a shared fixture (`../shared/fixtures/<rel>`).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures").join(rel)
}

/// Poll `check` until it returns Some or `timeout` passes; panics with `what` on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Copy a directory tree (test repositories are built from the examples).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() { copy_dir(&e.path(), &dest) } else { std::fs::copy(e.path(), &dest).unwrap(); }
    }
}

/// The example placement repository shipped with Ferry.
pub fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/placement-repo")
}
