//! Volume data moves with the namespace, end to end on the harness: the mover
//! pods really run (as containers on each cluster's real kubelet node) and really mount the
//! hostPath volumes; the data is compared with the independent tree checker.
//! - WordPress (Deployments + PVCs) and the MySQL StatefulSet move east → west
//!   with `pre-copy` while a writer keeps changing the data until quiesce;
//! - the other StatefulSet fixtures move with stop-copy-start;
//! - a volume that keeps changing after quiesce fails verification before
//!   cutover and rolls back with the source intact;
//! - WordPress moves through an S3 bucket (a real s3s-fs with SigV4 checks)
//!   instead of a direct connection.
mod common;
mod support;
mod treecheck;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{Harness, TestNamespace, eventually, fixture, harness};

fn migrate(h: &Harness, ns: &str, extra: &[&str]) -> Output {
    std::process::Command::new(support::ferry_bin())
        .args(["migrate", ns, "--from", "east", "--to", "west", "--kubeconfig"])
        .arg(&h.kubeconfig)
        .args(["-o", "json", "--ready-timeout", "120s"])
        .args(extra)
        .env("FERRY_LOG_FORMAT", "text")
        .env_remove("FERRY_FAULT")
        .output()
        .expect("running ferry migrate")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn get(h: &Harness, ctx: &str, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&h.kubectl_ok(ctx, &a)).unwrap()
}

fn apply(h: &Harness, ns: &str, rel: &str) {
    h.kubectl_ok("east", &["apply", "-n", ns, "-f", fixture(rel).to_str().unwrap()]);
}

/// The directory behind a bound claim (the harness provisions hostPath volumes).
async fn volume_dir(h: &Harness, ctx: &str, ns: &str, claim: &str) -> PathBuf {
    let pv = eventually(&format!("{ctx}: claim {claim} bound"), Duration::from_secs(60), || async {
        let c = get(h, ctx, &["pvc", claim, "-n", ns]);
        (c["status"]["phase"] == "Bound").then(|| c["spec"]["volumeName"].as_str().unwrap().to_string())
    })
    .await;
    PathBuf::from(get(h, ctx, &["pv", &pv])["spec"]["hostPath"]["path"].as_str().unwrap())
}

async fn workload_ready(h: &Harness, ctx: &str, ns: &str, kind: &str, name: &str, replicas: i64) {
    let field = if kind == "deployment" { "availableReplicas" } else { "readyReplicas" };
    eventually(&format!("{ctx}: {kind} {name} at {replicas}"), Duration::from_secs(120), || async {
        let d = get(h, ctx, &[kind, name, "-n", ns]);
        (d["spec"]["replicas"] == replicas && d["status"][field].as_i64().unwrap_or(0) == replicas).then_some(())
    })
    .await;
}

/// Application data: every attribute the mover keeps, plus a few hundred small files and a large one.
fn fill(dir: &std::path::Path, seed: u64) {
    common::build_attr_tree(&dir.join("attrs"));
    for i in 0..300u64 {
        let len = 1024 + ((seed * 7919 + i * 104_729) % (63 * 1024)) as usize;
        common::write(&dir.join(format!("small/{:02}/f{i}.dat", i % 10)), &common::bytes(seed + i, len));
    }
    common::write(&dir.join("large.bin"), &common::bytes(seed, 24 << 20));
}

/// Keeps changing `file` of `size` bytes (like a database writing) every `pause` until `stop` is set.
/// With `dense`, the file is written in full first (no holes), so reading it takes a while.
fn writer(file: PathBuf, stop: Arc<AtomicBool>, size: u64, dense: bool, pause: Duration) -> std::thread::JoinHandle<u64> {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    if dense {
        common::write(&file, &common::bytes(7, size as usize));
    }
    std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&file).unwrap();
        f.set_len(size).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let off = (n * 7_340_033) % size;
            f.write_all_at(&n.to_le_bytes(), off).unwrap();
            n += 1;
            std::thread::sleep(pause);
        }
        n
    })
}

/// Stop the writer once the source workload is scaled to 0 (Ferry's quiesce).
fn stop_at_quiesce(h: &'static Harness, ns: String, kind: &'static str, name: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            let out = h.kubectl("east", &["get", kind, name, "-n", &ns, "-o", "jsonpath={.spec.replicas}"]);
            if String::from_utf8_lossy(&out.stdout).trim() == "0" {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    })
}

fn passes<'a>(journal: &'a Value, claim: &str) -> Vec<&'a Value> {
    journal["volume_passes"].as_array().unwrap().iter().filter(|p| p["pvc"] == claim).collect()
}

fn assert_verified(journal: &Value, claims: &[String]) {
    let v = journal["verification"].as_array().unwrap_or_else(|| panic!("no verification: {journal}"));
    for c in claims {
        let rec = v.iter().find(|r| r["pvc"] == c.as_str()).unwrap_or_else(|| panic!("{c} not verified: {journal}"));
        assert_eq!(rec["sourceHash"], rec["destinationHash"], "{rec}");
        assert_eq!(rec["sourceHash"].as_str().unwrap().len(), 64);
        assert!(rec["files"].as_u64().unwrap() > 0 && rec["bytes"].as_u64().unwrap() > 0, "{rec}");
        let last = passes(journal, c).last().copied().unwrap().clone();
        assert_eq!(last["phase"], "final", "{c}: {journal}");
    }
}

fn assert_mover_cleaned_up(h: &Harness, ns: &str) {
    for ctx in ["east", "west"] {
        for kind in ["pods", "services", "secrets"] {
            let left = get(h, ctx, &[kind, "-n", ns, "-l", "ferry.dev/component=mover"]);
            assert!(left["items"].as_array().unwrap().is_empty(), "{ctx}: mover {kind} left behind: {left}");
        }
    }
}

/// The WordPress fixture running on east with generated data in both claims:
/// (claim names, their source directories).
async fn wordpress_with_data(h: &Harness, ns: &str, seed: u64) -> ([String; 2], Vec<PathBuf>) {
    for f in ["workloads/wordpress/mysql-pass-secret.yaml", "workloads/wordpress/mysql-deployment.yaml", "workloads/wordpress/wordpress-deployment.yaml"] {
        apply(h, ns, f);
    }
    workload_ready(h, "east", ns, "deployment", "wordpress", 1).await;
    workload_ready(h, "east", ns, "deployment", "wordpress-mysql", 1).await;
    let claims = ["mysql-pv-claim".to_string(), "wp-pv-claim".to_string()];
    let mut sources = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        let dir = volume_dir(h, "east", ns, c).await;
        fill(&dir, seed + i as u64);
        sources.push(dir);
    }
    (claims, sources)
}

#[tokio::test]
async fn wordpress_moves_with_its_data_pre_copy() {
    let h = harness();
    let ns = h.namespace("vol-wordpress", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let (claims, sources) = wordpress_with_data(h, &ns.name, 10).await;
    // MySQL keeps writing while the pre-copy passes run, until Ferry stops it.
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(sources[0].join("ibdata1"), stop.clone(), 8 << 20, false, Duration::from_millis(2));
    let watcher = stop_at_quiesce(h, ns.name.clone(), "deployment", "wordpress-mysql", stop.clone());

    let out = migrate(h, &ns.name, &["--strategy", "pre-copy"]);
    stop.store(true, Ordering::SeqCst);
    let writes = w.join().unwrap();
    watcher.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(writes > 10, "the writer ran during pre-copy ({writes} writes)");
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["outcome"], "succeeded");
    let stages: Vec<&str> = journal["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["preflight", "export", "transform", "apply", "pre-copy", "quiesce", "volumes", "cutover", "verify", "retire"]);
    assert_verified(&journal, &claims);
    for c in &claims {
        let ps = passes(&journal, c);
        let first = ps[0];
        let last = ps[ps.len() - 1];
        assert_eq!(first["phase"], "pre-copy", "{journal}");
        assert!(first["bytes"].as_u64().unwrap() >= 24 << 20, "the first pass copies everything: {first}");
        assert!(last["bytes"].as_u64().unwrap() < first["bytes"].as_u64().unwrap() / 4, "the final pass sends only the delta: {last}");
        for p in &ps {
            assert!(p["durationMs"].is_u64() && p["filesTotal"].as_u64().unwrap() > 300, "{p}");
        }
    }
    assert!(journal["downtime_ms"].as_u64().is_some(), "{journal}");
    // The bytes are really there: the destination equals the (now stopped) source, attribute by attribute.
    for (c, src) in claims.iter().zip(&sources) {
        let dst = volume_dir(h, "west", &ns.name, c).await;
        assert_ne!(&dst, src);
        treecheck::assert_same(src, &dst);
    }
    workload_ready(h, "west", &ns.name, "deployment", "wordpress", 1).await;
    workload_ready(h, "west", &ns.name, "deployment", "wordpress-mysql", 1).await;
    assert_mover_cleaned_up(h, &ns.name);
}

#[tokio::test]
async fn mysql_statefulset_moves_with_its_data_pre_copy() {
    let h = harness();
    let ns = h.namespace("vol-mysql", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    for f in ["workloads/mysql-statefulset/mysql-configmap.yaml", "workloads/mysql-statefulset/mysql-services.yaml", "workloads/mysql-statefulset/mysql-statefulset.yaml"] {
        apply(h, &ns.name, f);
    }
    workload_ready(h, "east", &ns.name, "statefulset", "mysql", 3).await;
    let claims: Vec<String> = (0..3).map(|i| format!("data-mysql-{i}")).collect();
    let mut sources = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        let dir = volume_dir(h, "east", &ns.name, c).await;
        fill(&dir, 100 + i as u64);
        sources.push(dir);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(sources[0].join("mysql/ibdata1"), stop.clone(), 8 << 20, false, Duration::from_millis(2));
    let watcher = stop_at_quiesce(h, ns.name.clone(), "statefulset", "mysql", stop.clone());
    let out = migrate(h, &ns.name, &["--strategy", "pre-copy"]);
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    watcher.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_verified(&journal, &claims);
    for (c, src) in claims.iter().zip(&sources) {
        treecheck::assert_same(src, &volume_dir(h, "west", &ns.name, c).await);
    }
    workload_ready(h, "west", &ns.name, "statefulset", "mysql", 3).await;
    // The StatefulSet adopted the moved claims instead of making new ones.
    let pvcs = get(h, "west", &["pvc", "-n", &ns.name]);
    assert_eq!(pvcs["items"].as_array().unwrap().len(), 3, "{pvcs}");
    assert_mover_cleaned_up(h, &ns.name);
}

#[tokio::test]
async fn statefulset_fixtures_move_with_stop_copy_start() {
    let h = harness();
    // web's receivers behind NodePort Services, zookeeper's behind ClusterIPs (the harness's flat network).
    for (test, file, sts, replicas, template, service) in [
        ("vol-web", "workloads/web-statefulset/web.yaml", "web", 2, "www", "NodePort"),
        ("vol-zk", "workloads/zookeeper/zookeeper.yaml", "zk", 3, "datadir", "ClusterIP"),
    ] {
        let ns = h.namespace(test, &["east"]);
        let _west = TestNamespace::adopt(h, &ns.name, "west");
        apply(h, &ns.name, file);
        workload_ready(h, "east", &ns.name, "statefulset", sts, replicas).await;
        let mut sources = Vec::new();
        for i in 0..replicas {
            let dir = volume_dir(h, "east", &ns.name, &format!("{template}-{sts}-{i}")).await;
            common::write(&dir.join("index.html"), format!("{sts}-{i}\n").as_bytes());
            common::write(&dir.join("blob"), &common::bytes(i as u64, 3 << 20));
            if sts == "zk" && i == 1 {
                // A file only root may read: ZooKeeper's own user (1000) cannot send this volume.
                common::write(&dir.join("root-only.key"), b"secret");
                common::chmod(&dir.join("root-only.key"), 0o600);
            }
            sources.push(dir);
        }
        let out = migrate(h, &ns.name, &["--mover-service-type", service]);
        assert!(out.status.success(), "{test}: {}", text(&out));
        let west_node_ip = get(h, "west", &["node", "west-mover"])["status"]["addresses"][0]["address"].as_str().unwrap().to_string();
        let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
        let pre = journal["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "pre-copy").unwrap();
        assert!(pre["message"].as_str().unwrap().contains("skipped"), "stop-copy-start makes no pass while running: {pre}");
        for (i, src) in sources.iter().enumerate() {
            let claim = format!("{template}-{sts}-{i}");
            let ps = passes(&journal, &claim);
            assert_eq!(ps.len(), 1, "one pass, after quiesce: {journal}");
            assert_eq!(ps[0]["phase"], "final");
            // The sender runs as the application's non-root user where the data allows, else as root.
            let uid = if sts == "zk" && i != 1 { 1000 } else { 0 };
            assert_eq!(ps[0]["runAsUser"], uid, "{claim}: {}", ps[0]);
            let (host, port) = ps[0]["receiver"].as_str().unwrap().rsplit_once(':').unwrap();
            let port: u16 = port.parse().unwrap();
            if service == "NodePort" {
                assert!(host == west_node_ip && (30000..=32767).contains(&port), "NodePort receiver: {}", ps[0]);
            } else {
                assert!(host != west_node_ip && port == 7443, "ClusterIP receiver: {}", ps[0]);
            }
            treecheck::assert_same(src, &volume_dir(h, "west", &ns.name, &claim).await);
        }
        workload_ready(h, "west", &ns.name, "statefulset", sts, replicas).await;
        assert_mover_cleaned_up(h, &ns.name);
    }
}

#[tokio::test]
async fn data_that_keeps_changing_after_quiesce_fails_verification_and_rolls_back() {
    let h = harness();
    let ns = h.namespace("vol-mismatch", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    apply(h, &ns.name, "workloads/web-statefulset/web.yaml");
    workload_ready(h, "east", &ns.name, "statefulset", "web", 2).await;
    let dir = volume_dir(h, "east", &ns.name, "www-web-0").await;
    common::write(&dir.join("index.html"), b"web-0\n");
    // Something outside Kubernetes keeps writing: quiesce cannot stop it.
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(dir.join("rogue.db"), stop.clone(), 64 << 20, true, Duration::from_micros(200));
    let out = migrate(h, &ns.name, &[]);
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["outcome"], "rolled-back");
    assert_eq!(journal["failure"]["stage"], "volumes");
    let msg = journal["failure"]["message"].as_str().unwrap();
    assert!(msg.contains("www-web-0") && msg.contains("kept changing during the final pass") && msg.contains("Nothing was cut over"), "{msg}");
    let finals: Vec<&Value> = passes(&journal, "www-web-0").into_iter().filter(|p| p["phase"] == "final").collect();
    assert_eq!(finals.len(), 3, "three attempts, each journaled: {journal}");
    assert!(finals.iter().all(|p| p["unstableFiles"].as_u64().unwrap() > 0));
    // Never cut over: the source runs again, the destination is gone, the data untouched.
    let cut = journal["stages"].as_array().unwrap().iter().any(|s| s["stage"] == "cutover");
    assert!(!cut, "{journal}");
    workload_ready(h, "east", &ns.name, "statefulset", "web", 2).await;
    assert_eq!(std::fs::read(dir.join("index.html")).unwrap(), b"web-0\n");
    eventually("destination namespace removed", Duration::from_secs(60), || async {
        (!h.kubectl("west", &["get", "namespace", &ns.name]).status.success()).then_some(())
    })
    .await;
    assert_mover_cleaned_up_source(h, &ns.name);
}

fn assert_mover_cleaned_up_source(h: &Harness, ns: &str) {
    for kind in ["pods", "services", "secrets"] {
        let left = get(h, "east", &[kind, "-n", ns, "-l", "ferry.dev/component=mover"]);
        assert!(left["items"].as_array().unwrap().is_empty(), "east: mover {kind} left behind: {left}");
    }
}

/// Killed right after the pre-copy passes, the re-run resumes the same migration:
/// the passes already made count, the final pass sends only the rest, data equal.
#[tokio::test]
async fn killed_after_pre_copy_resumes_with_its_passes() {
    let h = harness();
    let ns = h.namespace("vol-crash", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    apply(h, &ns.name, "workloads/web-statefulset/web.yaml");
    workload_ready(h, "east", &ns.name, "statefulset", "web", 2).await;
    let mut sources = Vec::new();
    for i in 0..2 {
        let dir = volume_dir(h, "east", &ns.name, &format!("www-web-{i}")).await;
        fill(&dir, 300 + i);
        sources.push(dir);
    }
    let crashed = std::process::Command::new(support::ferry_bin())
        .args(["migrate", &ns.name, "--from", "east", "--to", "west", "--strategy", "pre-copy", "--kubeconfig"])
        .arg(&h.kubeconfig)
        .env("FERRY_FAULT", "crash-after:pre-copy")
        .output()
        .unwrap();
    assert!(!crashed.status.success() && String::from_utf8_lossy(&crashed.stderr).contains("FERRY_FAULT: crashing"), "{}", text(&crashed));
    // After the crash, a changed file on the source: the final pass must carry it.
    common::write(&sources[1].join("small/00/f0.dat"), b"changed after the crash");
    let out = migrate(h, &ns.name, &["--strategy", "pre-copy"]);
    assert!(out.status.success(), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages: Vec<&str> = journal["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.iter().filter(|s| **s == "pre-copy").count(), 1, "one pre-copy stage: {stages:?}");
    let claims: Vec<String> = (0..2).map(|i| format!("www-web-{i}")).collect();
    assert_verified(&journal, &claims);
    for (c, src) in claims.iter().zip(&sources) {
        let ps = passes(&journal, c);
        assert_eq!(ps.iter().filter(|p| p["phase"] == "pre-copy").count(), 1, "pre-copy pass kept, not redone: {journal}");
        let last = ps.last().unwrap();
        assert!(last["bytes"].as_u64().unwrap() < 1 << 20, "the final pass sends only what changed: {last}");
        treecheck::assert_same(src, &volume_dir(h, "west", &ns.name, c).await);
    }
    workload_ready(h, "west", &ns.name, "statefulset", "web", 2).await;
    assert_mover_cleaned_up(h, &ns.name);
}

/// s3s-fs serving `root` on all addresses (mover pods reach it at their node's
/// address), with credentials it checks; killed on drop.
struct S3Server(std::process::Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const S3_KEY: &str = "ferry-pipeline-access";
const S3_SECRET: &str = "ferry-pipeline-secret-51d2";

fn start_s3(root: &std::path::Path, port: u16) -> S3Server {
    let bin = std::env::var("FERRY_S3S_FS").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ferry/s3s-fs/bin/s3s-fs")
    });
    let child = std::process::Command::new(&bin)
        .args(["--host", "0.0.0.0", "--port", &port.to_string(), "--access-key", S3_KEY, "--secret-key", S3_SECRET])
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/install-deps.sh)", bin.display()));
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(15), "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    S3Server(child)
}

/// Clusters that cannot reach each other move their volumes through a bucket:
/// the source's pods push content-addressed chunks, the destination's pods pull
/// and verify the sender's tree hash; no receiver Service exists, the
/// credentials Secret is gone afterwards, and the trees are equal.
#[tokio::test]
async fn wordpress_moves_through_an_s3_bucket() {
    let h = harness();
    let ns = h.namespace("vol-s3", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let (claims, sources) = wordpress_with_data(h, &ns.name, 40).await;
    let root = tempfile::tempdir().unwrap();
    let port = ferry::dev::process::free_ports(1).unwrap()[0];
    let _s3 = start_s3(root.path(), port);
    // The east node's address: a host address every mover pod of both clusters can reach.
    let node = get(h, "east", &["nodes", "-l", "ferry.dev/mover=true"]);
    let node_ip = node["items"][0]["status"]["addresses"].as_array().unwrap().iter()
        .find(|a| a["type"] == "InternalIP").unwrap()["address"].as_str().unwrap().to_string();
    let endpoint = format!("http://{node_ip}:{port}");

    let out = std::process::Command::new(support::ferry_bin())
        .args(["migrate", &ns.name, "--from", "east", "--to", "west", "--kubeconfig"])
        .arg(&h.kubeconfig)
        .args(["-o", "json", "--ready-timeout", "120s", "--strategy", "pre-copy", "--mover-s3-bucket", "s3://ferry-moves/test", "--mover-s3-endpoint", &endpoint])
        .env("FERRY_LOG_FORMAT", "text")
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("FERRY_FAULT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["outcome"], "succeeded");
    assert_verified(&journal, &claims);
    for c in &claims {
        let ps = passes(&journal, c);
        assert!(ps.len() >= 2, "pre-copy and final passes: {journal}");
        for p in &ps {
            let via = p["receiver"].as_str().unwrap();
            assert!(via.starts_with("s3://ferry-moves/test/") && via.ends_with(&format!("/{c}")), "through the bucket: {p}");
        }
        assert!(ps[0]["bytes"].as_u64().unwrap() >= 24 << 20, "the first pass pushes everything: {}", ps[0]);
        assert_eq!(ps.last().unwrap()["bytes"], 0, "nothing changed after pre-copy: {}", ps.last().unwrap());
    }
    // The chunks really went through the server's storage.
    let stored: u64 = walk_size(&root.path().join("ferry-moves"));
    assert!(stored >= 48 << 20, "bucket holds {stored} bytes");
    for (c, src) in claims.iter().zip(&sources) {
        let dst = volume_dir(h, "west", &ns.name, c).await;
        treecheck::assert_same(src, &dst);
    }
    let services = get(h, "west", &["services", "-n", &ns.name, "-l", "ferry.dev/component=mover"]);
    assert!(services["items"].as_array().unwrap().is_empty(), "{services}");
    assert_mover_cleaned_up(h, &ns.name);
    workload_ready(h, "west", &ns.name, "deployment", "wordpress", 1).await;
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { walk_size(&e.path()) } else { m.len() };
    }
    total
}
