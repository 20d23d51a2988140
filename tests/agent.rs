//! `ferry agent` end to end: a real bare Git repository, the two-cluster
//! harness, the agent as a real process with its webhook server on loopback,
//! GitHub push payloads from the shared fixtures with correct signatures.
#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::{TestNamespace, eventually, fixture, harness};

const PATH_TOKEN: &str = "0123456789abcdef0123456789abcdef-agent-test";
const SECRET: &str = "it-is-a-test-secret-of-enough-length";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn placement(ns: &str, cluster: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: {ns}\nspec:\n  cluster: {cluster}\n  retention: 1h\n"
    )
}

struct Setup {
    _tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    kdir: PathBuf,
    webhooks: PathBuf,
    ns: TestNamespace,
    _west: TestNamespace,
}

async fn setup(test: &str) -> Setup {
    let h = harness();
    let ns = h.namespace(test, &["east"]);
    let west = TestNamespace::adopt(h, &ns.name, "west");
    h.kubectl_ok(
        "east",
        &[
            "apply",
            "-n",
            &ns.name,
            "-f",
            fixture("workloads/guestbook").to_str().unwrap(),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("placement.git");
    let work = tmp.path().join("work");
    Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .status()
        .unwrap();
    support::copy_dir(&support::example_repo(), &work);
    std::fs::write(
        work.join(format!("namespaces/{}.yaml", ns.name)),
        placement(&ns.name, "east"),
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial placements"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    git(&work, &["push", "-q", "origin", "main"]);
    let kdir = tmp.path().join("kubeconfigs");
    std::fs::create_dir_all(&kdir).unwrap();
    for c in ["east", "west"] {
        std::fs::copy(h.state.join(c).join("admin.kubeconfig"), kdir.join(c)).unwrap();
    }
    let secret = tmp.path().join("github-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let webhooks = tmp.path().join("webhooks.yaml");
    std::fs::write(&webhooks, format!(
        "receivers:\n  - name: github\n    provider: github\n    pathToken: {PATH_TOKEN}\n    secretFile: {}\n    repoUrl: https://github.com/Codertocat/Hello-World\n    branch: master\n",
        secret.display()
    )).unwrap();
    Setup {
        _tmp: tmp,
        bare,
        work,
        kdir,
        webhooks,
        ns,
        _west: west,
    }
}

struct AgentProc(Child);
impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(s: &Setup, port: u16, fault: Option<&str>) -> AgentProc {
    start_agent_with(s, port, fault, &[])
}

fn start_agent_with(s: &Setup, port: u16, fault: Option<&str>, extra: &[&str]) -> AgentProc {
    start_agent_at(
        s,
        &format!("file://{}", s.bare.display()),
        port,
        fault,
        extra,
    )
}

fn start_agent_at(
    s: &Setup,
    repo_url: &str,
    port: u16,
    fault: Option<&str>,
    extra: &[&str],
) -> AgentProc {
    let mut cmd = Command::new(support::ferry_bin());
    cmd.args(["agent", "--repo", repo_url, "--branch", "main"])
        .arg("--cache-dir")
        .arg(s.bare.with_extension(format!("cache-{port}")))
        .arg("--kubeconfig-dir")
        .arg(&s.kdir)
        .arg("--webhooks")
        .arg(&s.webhooks)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "1h",
            "--ready-timeout",
            "90s",
        ])
        .args(extra)
        .env("FERRY_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(agent_log_path(port)).unwrap(),
        ));
    match fault {
        Some(f) => cmd.env("FERRY_FAULT", f),
        None => cmd.env_remove("FERRY_FAULT"),
    };
    AgentProc(cmd.spawn().unwrap())
}

fn known_hosts(s: &Setup) -> PathBuf {
    s.kdir.with_file_name("known_hosts")
}

/// The agent following the bare repository through `sshd` with its deploy key,
/// recording the host key on first contact.
fn start_agent_over_ssh(s: &Setup, sshd: &sshd::Sshd, port: u16) -> AgentProc {
    let key = sshd.deploy_key.to_str().unwrap().to_string();
    let kh = known_hosts(s).to_str().unwrap().to_string();
    start_agent_at(
        s,
        &sshd.url(&s.bare),
        port,
        None,
        &[
            "--ssh-key",
            key.as_str(),
            "--known-hosts",
            kh.as_str(),
            "--accept-new-host-keys",
        ],
    )
}

fn agent_log_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("ferry-agent-{port}.log"))
}

fn agent_log(port: u16) -> String {
    std::fs::read_to_string(agent_log_path(port)).unwrap_or_default()
}

fn deployments(h: &support::Harness, context: &str, ns: &str) -> Vec<Value> {
    let deps: Value =
        serde_json::from_str(&h.kubectl_ok(context, &["get", "deploy", "-n", ns, "-o", "json"]))
            .unwrap();
    deps["items"].as_array().unwrap().clone()
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn github_push(port: u16, secret: &str) -> u16 {
    let body = std::fs::read(fixture(Forge::Github.fixture())).unwrap();
    http(
        port,
        "POST",
        &format!("/hooks/{PATH_TOKEN}"),
        &Forge::Github.headers(&body, secret),
        &body,
    )
    .0
}

async fn wait_ready(port: u16) {
    eventually(
        "agent ready (first sync done)",
        Duration::from_secs(120),
        || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            (http(port, "GET", "/readyz", &[], b"").0 == 200).then_some(())
        },
    )
    .await;
}

fn status_file(bare: &Path, ns: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["show", &format!("ferry-status:status/{ns}.yaml")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wait until the test namespace's migration started (its status names one).
async fn migration_started(s: &Setup) -> String {
    eventually("migration started", Duration::from_secs(60), || async {
        status_file(&s.bare, &s.ns.name).filter(|t| t.contains("migrationId:"))
    })
    .await
}

/// Wait until the test namespace's status says Succeeded; returns the status.
async fn succeeded(s: &Setup, what: &str) -> String {
    eventually(what, Duration::from_secs(180), || async {
        status_file(&s.bare, &s.ns.name).filter(|t| t.lines().any(|l| l == "phase: Succeeded"))
    })
    .await
}

/// The migration id a status file names.
fn migration_id(status: &str) -> String {
    let line = status
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("migrationId:"));
    line.unwrap_or_else(|| panic!("no migrationId in {status}"))
        .trim()
        .to_string()
}

/// Wait for the test namespace's lines in the history file.
async fn history_of(s: &Setup) -> Vec<Value> {
    eventually("history line", Duration::from_secs(30), || async {
        let l: Vec<Value> = history(&s.bare)
            .into_iter()
            .filter(|l| l["namespace"] == s.ns.name.as_str())
            .collect();
        (!l.is_empty()).then_some(l)
    })
    .await
}

/// One `ferry agent --once` over the bare repository, which must succeed.
fn agent_once(s: &Setup, cache: &str) {
    let out = Command::new(support::ferry_bin())
        .args([
            "agent",
            "--once",
            "--repo",
            &format!("file://{}", s.bare.display()),
        ])
        .arg("--cache-dir")
        .arg(s.bare.with_extension(cache))
        .arg("--kubeconfig-dir")
        .arg(&s.kdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn history(bare: &Path) -> Vec<Value> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["show", "ferry-status:status/history.jsonl"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn move_west(s: &Setup) -> String {
    std::fs::write(
        s.work.join(format!("namespaces/{}.yaml", s.ns.name)),
        placement(&s.ns.name, "west"),
    )
    .unwrap();
    git(
        &s.work,
        &[
            "commit",
            "-q",
            "-am",
            &format!("Move {} to west", s.ns.name),
        ],
    );
    git(&s.work, &["push", "-q", "origin", "main"]);
    git(&s.work, &["rev-parse", "HEAD"]).trim().to_string()
}

#[tokio::test]
async fn webhook_push_moves_the_namespace_and_status_is_committed() {
    let h = harness();
    let s = setup("agent-webhook").await;
    let port = sshd::free_port();
    let _agent = start_agent(&s, port, None);
    wait_ready(port).await;
    // The first sync saw the namespace in place.
    let first = status_file(&s.bare, &s.ns.name).expect("status written on the first sync");
    assert!(first.lines().any(|l| l == "phase: InSync"), "{first}");

    // Bad deliveries are rejected and start nothing.
    assert_eq!(github_push(port, "wrong-secret-wrong-secret"), 401);
    assert_eq!(
        http(port, "POST", "/hooks/not-a-receiver", &[], b"{}").0,
        404
    );

    let placement_commit = move_west(&s);
    let started = std::time::Instant::now();
    assert_eq!(github_push(port, SECRET), 202);
    migration_started(&s).await;
    eprintln!(
        "webhook → first migration status commit: {:?}",
        started.elapsed()
    );
    let status = succeeded(&s, "migration succeeded in the status file").await;
    eprintln!("webhook → migration succeeded in {:?}", started.elapsed());
    assert!(
        status.contains(&format!("observedCommit: {placement_commit}")),
        "{status}"
    );
    for stage in [
        "preflight",
        "apply",
        "quiesce",
        "cutover",
        "verify",
        "retire",
    ] {
        assert!(
            status.contains(&format!("name: {stage}")),
            "{stage} in {status}"
        );
    }
    // Deployments run on west now.
    assert_eq!(deployments(h, "west", &s.ns.name).len(), 3);
    // Status commits carry trailers naming the placement commit; placement history is untouched.
    let log = Command::new("git")
        .arg("--git-dir")
        .arg(&s.bare)
        .args(["log", "--format=%B%x00", "ferry-status"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    assert!(
        log.contains(&format!("Ferry-Placement-Commit: {placement_commit}")),
        "{log}"
    );
    assert!(log.contains("Ferry-Migration: "), "{log}");
    let main_head = Command::new("git")
        .arg("--git-dir")
        .arg(&s.bare)
        .args(["rev-parse", "main"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&main_head.stdout).trim(),
        placement_commit,
        "Ferry never writes to the placement branch here"
    );
    // One history line for the migration (written with the final status).
    let lines: Vec<Value> = history_of(&s).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["phase"], "Succeeded");
    // A later sync that finds it in place keeps the migration's record.
    agent_once(&s, "cache-again");
    let kept = status_file(&s.bare, &s.ns.name).unwrap();
    assert!(
        kept.lines().any(|l| l == "phase: Succeeded") && kept.contains("name: cutover"),
        "{kept}"
    );
    // Metrics saw it.
    let (_, metrics) = http(port, "GET", "/metrics", &[], b"");
    assert!(metrics.contains("result=\"succeeded\""), "{metrics}");
}

#[tokio::test]
async fn killed_agent_resumes_the_same_migration() {
    let h = harness();
    let s = setup("agent-crash").await;
    let port = sshd::free_port();
    {
        // This agent dies right after the migration's apply stage is journaled.
        let mut agent = start_agent(&s, port, Some("crash-after:apply"));
        wait_ready(port).await;
        move_west(&s);
        assert_eq!(github_push(port, SECRET), 202);
        let status = tokio::task::spawn_blocking(move || agent.0.wait().unwrap())
            .await
            .unwrap();
        assert!(!status.success(), "the fault kills the agent");
    }
    let migrating = status_file(&s.bare, &s.ns.name).unwrap();
    assert!(
        migrating.lines().any(|l| l == "phase: Migrating"),
        "{migrating}"
    );
    let id = migration_id(&migrating);

    let port = sshd::free_port();
    let _agent = start_agent(&s, port, None);
    let done = succeeded(&s, "resumed migration succeeded").await;
    assert!(
        done.contains(&format!("migrationId: {id}")),
        "the same migration finished: {done}"
    );
    let lines: Vec<Value> = history_of(&s).await;
    assert_eq!(lines.len(), 1, "one migration in the history: {lines:?}");
    assert_eq!(lines[0]["migrationId"], id.as_str());
    assert_eq!(deployments(h, "west", &s.ns.name).len(), 3);
}

#[tokio::test]
async fn invalid_commit_is_reported_and_changes_nothing() {
    let h = harness();
    let s = setup("agent-invalid").await;
    let port = sshd::free_port();
    let _agent = start_agent(&s, port, None);
    wait_ready(port).await;
    std::fs::write(
        s.work.join(format!("namespaces/{}.yaml", s.ns.name)),
        placement(&s.ns.name, "nowhere"),
    )
    .unwrap();
    git(&s.work, &["commit", "-q", "-am", "typo"]);
    git(&s.work, &["push", "-q", "origin", "main"]);
    assert_eq!(github_push(port, SECRET), 202);
    let repo_status = eventually(
        "repository status Invalid",
        Duration::from_secs(60),
        || async {
            let out = Command::new("git")
                .arg("--git-dir")
                .arg(&s.bare)
                .args(["show", "ferry-status:status/_repository.yaml"])
                .output()
                .unwrap();
            let t = String::from_utf8_lossy(&out.stdout).into_owned();
            t.lines().any(|l| l == "phase: Invalid").then_some(t)
        },
    )
    .await;
    assert!(
        repo_status.contains(&format!("namespaces/{}.yaml", s.ns.name))
            && repo_status.contains("nowhere"),
        "{repo_status}"
    );
    // Still on east, untouched.
    assert!(
        deployments(h, "east", &s.ns.name)
            .iter()
            .all(|d| d["spec"]["replicas"].as_i64().unwrap() > 0)
    );
    assert!(
        !h.kubectl("west", &["get", "namespace", &s.ns.name])
            .status
            .success()
    );
}

#[tokio::test]
async fn only_the_lease_holder_acts_and_a_standby_finishes_the_work() {
    let h = harness();
    let s = setup("agent-ha").await;
    let lease = s.ns.name.clone();
    let kubeconfig = h.kubeconfig.to_str().unwrap().to_string();
    let lease_args = [
        "--lease-name",
        lease.as_str(),
        "--lease-namespace",
        "default",
        "--lease-kubeconfig",
        kubeconfig.as_str(),
        "--lease-context",
        "east",
        "--lease-duration",
        "8s",
    ];
    // Both die right after a migration's apply stage: whoever leads first
    // crashes mid-migration; the other must take over and finish it.
    let (pa, pb) = (sshd::free_port(), sshd::free_port());
    let mut a = start_agent_with(&s, pa, Some("crash-after:apply"), &lease_args);
    let mut b = start_agent_with(&s, pb, Some("crash-after:apply"), &lease_args);
    wait_ready(pa).await;
    wait_ready(pb).await;
    let holder = || -> Option<String> {
        let out = h.kubectl(
            "east",
            &[
                "get",
                "lease",
                &lease,
                "-n",
                "default",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let first = holder().expect("one agent holds the lease");
    let (pid_a, pid_b) = (a.0.id().to_string(), b.0.id().to_string());
    assert!(
        first.ends_with(&format!("-{pid_a}")) || first.ends_with(&format!("-{pid_b}")),
        "{first}"
    );

    move_west(&s);
    assert_eq!(github_push(pa, SECRET), 202);
    assert_eq!(github_push(pb, SECRET), 202);
    // The leader crashes after apply; the standby is still running.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let dead_is_a = loop {
        if a.0.try_wait().unwrap().is_some() {
            break true;
        }
        if b.0.try_wait().unwrap().is_some() {
            break false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent crashed: the migration never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (dead_pid, alive_pid) = if dead_is_a {
        (&pid_a, &pid_b)
    } else {
        (&pid_b, &pid_a)
    };
    assert!(
        first.ends_with(&format!("-{dead_pid}")),
        "only the lease holder acted: holder {first}, crashed {dead_pid}"
    );
    let migrating = status_file(&s.bare, &s.ns.name).unwrap();
    let id = migration_id(&migrating);

    let done = succeeded(&s, "the standby finished the migration").await;
    assert!(done.contains(&format!("migrationId: {id}")), "{done}");
    assert!(
        holder().unwrap().ends_with(&format!("-{alive_pid}")),
        "the survivor holds the lease"
    );
    let lines: Vec<Value> = history_of(&s).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let _ = h.kubectl("east", &["delete", "lease", &lease, "-n", "default"]);
}

#[tokio::test]
async fn a_sync_that_finds_nothing_new_commits_nothing() {
    let s = setup("agent-nochange").await;
    let once = || {
        agent_once(&s, "cache-once");
        let n = Command::new("git")
            .arg("--git-dir")
            .arg(&s.bare)
            .args(["rev-list", "--count", "ferry-status"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&n.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let first = once();
    assert!(first >= 1, "the first sync records status");
    let status = status_file(&s.bare, &s.ns.name).unwrap();
    assert!(status.lines().any(|l| l == "phase: InSync"), "{status}");
    // Placements absent from every cluster are reported too (wordpress etc. in the example repo).
    assert!(
        status_file(&s.bare, "wordpress")
            .unwrap()
            .contains("found on no cluster")
    );
    assert_eq!(
        once(),
        first,
        "a second sync with nothing new adds no status commit"
    );
}

#[tokio::test]
async fn agent_follows_a_repository_served_over_ssh_with_a_deploy_key() {
    let h = harness();
    let s = setup("agent-ssh").await;
    let sshd = sshd::Sshd::start();
    let port = sshd::free_port();
    let _agent = start_agent_over_ssh(&s, &sshd, port);
    wait_ready(port).await;
    // The host key was recorded on first contact (accept-new), so later fetches check it.
    let recorded = std::fs::read_to_string(known_hosts(&s)).unwrap();
    let host_key = sshd.host_public_key();
    assert!(
        recorded.contains(host_key.split_whitespace().nth(1).unwrap()),
        "{recorded}"
    );
    let placement_commit = move_west(&s);
    assert_eq!(github_push(port, SECRET), 202);
    let status = succeeded(&s, "migration over ssh succeeded").await;
    assert!(
        status.contains(&format!("observedCommit: {placement_commit}")),
        "{status}"
    );
    let log = Command::new("git")
        .arg("--git-dir")
        .arg(&s.bare)
        .args(["log", "--format=%B", "ferry-status"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&log.stdout)
            .contains(&format!("Ferry-Placement-Commit: {placement_commit}"))
    );
    assert!(
        sshd.log().contains("Accepted publickey"),
        "the pushes went through sshd"
    );
    assert_eq!(deployments(h, "west", &s.ns.name).len(), 3);
}

/// A forge that delivers push webhooks, as the agent's receivers see it.
#[derive(Clone, Copy, Debug)]
enum Forge {
    Github,
    Gitlab,
    Gogs,
    BitbucketServer,
}

const FORGES: [Forge; 4] = [
    Forge::Github,
    Forge::Gitlab,
    Forge::Gogs,
    Forge::BitbucketServer,
];

/// Where a forge's push payload says what moved, as JSON pointers to the
/// fields its receiver reads (src/webhook/).
struct PushFields {
    /// Full ref names (`refs/heads/<branch>`).
    refs: &'static [&'static str],
    /// Short branch names.
    branches: &'static [&'static str],
    /// The commit the branch moved to.
    commits: &'static [&'static str],
    /// SSH clone URLs of the repository.
    ssh_urls: &'static [&'static str],
}

impl Forge {
    /// Provider name in the receiver configuration.
    fn provider(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gogs => "gogs",
            Forge::BitbucketServer => "bitbucket-server",
        }
    }

    /// The shared fixture holding the forge's push delivery.
    fn fixture(self) -> &'static str {
        match self {
            Forge::Github => "webhooks/github/push/with-new-branch.payload.json",
            Forge::Gitlab => "webhooks/gitlab/push.json",
            Forge::Gogs => "webhooks/gogs/push.json",
            Forge::BitbucketServer => "webhooks/bitbucket-server/refs_changed.json",
        }
    }

    fn path_token(self) -> String {
        format!("{}-{PATH_TOKEN}", self.provider())
    }

    fn secret(self) -> String {
        format!("{}-{SECRET}", self.provider())
    }

    fn fields(self) -> PushFields {
        match self {
            Forge::Github => PushFields {
                refs: &["/ref"],
                branches: &[],
                commits: &["/after", "/head_commit/id"],
                ssh_urls: &["/repository/ssh_url"],
            },
            Forge::Gitlab => PushFields {
                refs: &["/ref"],
                branches: &[],
                commits: &["/after", "/checkout_sha"],
                ssh_urls: &[
                    "/project/git_ssh_url",
                    "/project/ssh_url",
                    "/project/url",
                    "/repository/git_ssh_url",
                    "/repository/url",
                ],
            },
            Forge::Gogs => PushFields {
                refs: &["/ref"],
                branches: &[],
                commits: &["/after"],
                ssh_urls: &["/repository/ssh_url"],
            },
            Forge::BitbucketServer => PushFields {
                refs: &["/changes/0/ref/id", "/changes/0/refId"],
                branches: &["/changes/0/ref/displayId"],
                commits: &["/changes/0/toHash"],
                ssh_urls: &["/repository/links/clone/0/href"],
            },
        }
    }

    /// The fixture's push, rewritten to announce `commit` on `branch` of the
    /// repository at `ssh_url`; its other URLs still name the fixture's forge.
    fn push_payload(self, ssh_url: &str, branch: &str, commit: &str) -> Vec<u8> {
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(fixture(self.fixture())).unwrap()).unwrap();
        let f = self.fields();
        let full_ref = format!("refs/heads/{branch}");
        let sets = [
            (f.refs, full_ref.as_str()),
            (f.branches, branch),
            (f.commits, commit),
            (f.ssh_urls, ssh_url),
        ];
        for (pointers, value) in sets {
            for p in pointers {
                let field = v
                    .pointer_mut(p)
                    .unwrap_or_else(|| panic!("{self:?} fixture has no {p}"));
                assert!(field.is_string(), "{self:?} fixture: {p} is {field}");
                *field = Value::from(value);
            }
        }
        serde_json::to_vec_pretty(&v).unwrap()
    }

    /// The headers the forge sends with `body`: its push event name, and
    /// `body`'s HMAC-SHA256 keyed with `secret` (GitLab sends the secret itself).
    fn headers(self, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let hmac = hex::encode(mac.finalize().into_bytes());
        let (event, signature) = match self {
            Forge::Github => (
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", format!("sha256={hmac}")),
            ),
            Forge::Gitlab => (
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Token", secret.to_string()),
            ),
            Forge::Gogs => (("X-Gogs-Event", "push"), ("X-Gogs-Signature", hmac)),
            Forge::BitbucketServer => (
                ("X-Event-Key", "repo:refs_changed"),
                ("X-Hub-Signature", format!("sha256={hmac}")),
            ),
        };
        vec![
            ("Content-Type", "application/json".to_string()),
            (event.0, event.1.to_string()),
            signature,
        ]
    }

    /// POST `body` signed with `secret` to this forge's receiver.
    fn deliver(self, port: u16, body: &[u8], secret: &str) -> (u16, String) {
        http(
            port,
            "POST",
            &format!("/hooks/{}", self.path_token()),
            &self.headers(body, secret),
            body,
        )
    }
}

/// One receiver per forge, each at its own path with its own secret, all with
/// the default target: the repository and branch the agent follows.
fn write_forge_receivers(s: &Setup) {
    let mut yaml = String::from("receivers:\n");
    for forge in FORGES {
        let secret = s
            .webhooks
            .with_file_name(format!("{}.secret", forge.provider()));
        std::fs::write(&secret, forge.secret()).unwrap();
        yaml.push_str(&format!(
            "  - name: {p}\n    provider: {p}\n    pathToken: {}\n    secretFile: {}\n",
            forge.path_token(),
            secret.display(),
            p = forge.provider()
        ));
    }
    std::fs::write(&s.webhooks, yaml).unwrap();
}

/// How long a delivery that must start nothing is given to start something:
/// an accepted one leads to the first status commit in about a second.
const QUIET: Duration = Duration::from_secs(5);

fn rev_parse(bare: &Path, rev: &str) -> String {
    git(bare, &["rev-parse", rev]).trim().to_string()
}

/// Issue #6 for one forge: the agent follows a bare repository served over
/// ssh and polls once an hour, so within the test's waits only a delivery can
/// start the migration. After the placement change is pushed, a delivery with
/// a wrong signature and the unmodified fixture (another repository) start
/// nothing; the fixture rewritten for this repository, correctly signed, runs
/// the migration, and every status commit it causes names the placement commit.
async fn forge_push_over_ssh_migrates(forge: Forge) {
    let h = harness();
    let s = setup(&format!("agent-hook-{}", forge.provider())).await;
    write_forge_receivers(&s);
    let sshd = sshd::Sshd::start();
    let repo_url = sshd.url(&s.bare);
    let port = sshd::free_port();
    let _agent = start_agent_over_ssh(&s, &sshd, port);
    wait_ready(port).await;

    let placement_commit = move_west(&s);
    let status_before = rev_parse(&s.bare, "ferry-status");
    let payload = forge.push_payload(&repo_url, "main", &placement_commit);
    let (code, answer) = forge.deliver(port, &payload, "wrong-secret-wrong-secret");
    assert_eq!(code, 401, "{answer}");
    let unmodified = std::fs::read(fixture(forge.fixture())).unwrap();
    let (code, answer) = forge.deliver(port, &unmodified, &forge.secret());
    assert!(
        code == 200
            && answer.contains(r#""result":"ignored""#)
            && answer.contains("not the placement repository"),
        "{answer}"
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        rev_parse(&s.bare, "ferry-status"),
        status_before,
        "no status commit without an accepted delivery"
    );
    assert!(
        !status_file(&s.bare, &s.ns.name)
            .unwrap()
            .contains("migrationId:"),
        "no migration without an accepted delivery"
    );
    assert!(
        !agent_log(port).contains("webhook triggered a sync"),
        "{}",
        agent_log(port)
    );

    let started = std::time::Instant::now();
    let (code, answer) = forge.deliver(port, &payload, &forge.secret());
    assert_eq!(code, 202, "{answer}");
    assert!(
        answer.contains(&format!("sync triggered for {placement_commit}")),
        "{answer}"
    );
    migration_started(&s).await;
    let status = succeeded(&s, "migration succeeded in the status file").await;
    eprintln!(
        "{forge:?} delivery → migration succeeded in {:?}",
        started.elapsed()
    );
    assert!(
        status.contains(&format!("observedCommit: {placement_commit}")),
        "{status}"
    );
    assert!(agent_log(port).contains("webhook triggered a sync"));
    assert_eq!(deployments(h, "west", &s.ns.name).len(), 3);

    // Every status commit since the delivery names the placement commit; the migration's name the migration.
    let id = migration_id(&status);
    let format = "--format=%(trailers:key=Ferry-Placement-Commit,valueonly,separator=%x2C) %(trailers:key=Ferry-Migration,valueonly,separator=%x2C)";
    let trailers = git(
        &s.bare,
        &["log", format, &format!("{status_before}..ferry-status")],
    );
    let commits: Vec<(&str, &str)> = trailers
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    assert!(!commits.is_empty(), "the remote gained no status commits");
    assert!(
        commits
            .iter()
            .all(|(placement, _)| *placement == placement_commit),
        "{trailers}"
    );
    assert!(
        commits.iter().any(|(_, migration)| *migration == id),
        "no status commit names migration {id}: {trailers}"
    );
    assert!(
        sshd.log().contains("Accepted publickey"),
        "the agent went through sshd"
    );
}

/// One test per forge, so each can be run by name.
macro_rules! forge_push_tests {
    ($($name:ident: $forge:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            forge_push_over_ssh_migrates($forge).await;
        }
    )*};
}

forge_push_tests! {
    forge_push_over_ssh_migrates_github: Forge::Github;
    forge_push_over_ssh_migrates_gitlab: Forge::Gitlab;
    forge_push_over_ssh_migrates_gogs: Forge::Gogs;
    forge_push_over_ssh_migrates_bitbucket_server: Forge::BitbucketServer;
}
