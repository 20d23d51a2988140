//! `ferry demo`: the embedded default, Ferry's main job end to end on one machine.
//!
//! 1. brings up the two local clusters `east` and `west`;
//! 2. deploys WordPress + MySQL on `east` and fills their volumes with real bytes;
//! 3. turns `examples/placement-repo` into a Git repository: a bare "remote"
//!    (`STATE/demo/placement.git`) and a working clone (`STATE/demo/work`);
//! 4. starts `ferry agent` following the remote;
//! 5. commits and pushes a placement change moving `wordpress` to the other
//!    cluster with `strategy: pre-copy`, and shows the migration live, stage by
//!    stage, from the status commits the agent pushes;
//! 6. prints the status file, the status commits (`git log`), and proof that
//!    the data on the destination equals the data that was on the source — a
//!    digest computed here, independently of the mover, before and after.
//!
//! Each run moves WordPress to the cluster it is not on.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cluster::{Cluster, ObjectRef};
use crate::labels;
use crate::output::OutputFormat;

const WORDPRESS: &str = include_str!("../../examples/demo/wordpress.yaml");
const NAMESPACE: &str = "wordpress";
const CLAIMS: [&str; 2] = ["mysql-pv-claim", "wp-pv-claim"];

/// Run the demo against the harness in `state_dir`.
pub async fn run(state_dir: &Path) -> anyhow::Result<()> {
    let report = super::up(state_dir, &super::UpOptions::default()).await?;
    super::print_status(&report, OutputFormat::Table)?;
    let kubeconfig = report.kubeconfig.clone();
    let east = Cluster::connect("east", &kubeconfig, "east").await?;
    let west = Cluster::connect("west", &kubeconfig, "west").await?;
    let demo = report.state_dir.join("demo");
    let (remote, work) = (demo.join("placement.git"), demo.join("work"));
    std::fs::create_dir_all(&demo)?;

    step("placement repository");
    if !remote.exists() {
        init_repository(&remote, &work)?;
        println!("  created {} (bare remote) and {} (clone) from examples/placement-repo", remote.display(), work.display());
    } else {
        git(&work, &["pull", "--quiet", "--rebase", "origin", "main"])?;
        println!("  reusing {}", remote.display());
    }

    let live = |ns: Option<Value>| ns.is_some_and(|n| n.pointer(&format!("/metadata/labels/{}", labels::RETAINED.replace('/', "~1"))).is_none());
    let (from, to) = match (live(east.namespace(NAMESPACE).await?), live(west.namespace(NAMESPACE).await?)) {
        (_, true) => (&west, &east),
        (true, false) => (&east, &west),
        (false, false) => {
            step("WordPress on east");
            deploy(&east).await?;
            let bytes = fill_volumes(&east).await?;
            println!("  deployed WordPress + MySQL and wrote {:.0} MiB into their volumes", bytes as f64 / (1 << 20) as f64);
            (&east, &west)
        }
    };
    let before = digests(from).await?;

    step("agent");
    let port = free_port()?;
    let log = demo.join("agent.log");
    let mut agent = Command::new(std::env::current_exe()?)
        .args(["agent", "--repo"])
        .arg(format!("file://{}", remote.display()))
        .args(["--branch", "main", "--interval", "2s", "--listen", &format!("127.0.0.1:{port}"), "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(demo.join("agent-cache"))
        .env("FERRY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting ferry agent")?;
    let result = async {
        wait_ready(port).await?;
        println!("  ferry agent follows file://{} (log: {})", remote.display(), log.display());

        step(&format!("placement change: {NAMESPACE} → {}", to.name));
        let file = work.join("namespaces/wordpress.yaml");
        let text = std::fs::read_to_string(&file)?;
        let changed = set_field(&set_field(&text, "cluster", &to.name), "strategy", "pre-copy");
        std::fs::write(&file, changed)?;
        if git(&work, &["status", "--porcelain"])?.trim().is_empty() {
            // An earlier run was interrupted after pushing: the repository already says so.
            println!("  the repository already places {NAMESPACE} on {}", to.name);
        } else {
            git(&work, &["commit", "--quiet", "-am", &format!("Move wordpress to {}", to.name)])?;
            git(&work, &["push", "--quiet", "origin", "main"])?;
        }
        let commit = git(&work, &["rev-parse", "HEAD"])?.trim().to_string();
        println!("  pushed {} \"Move wordpress to {}\"", &commit[..12], to.name);
        println!("{}", git(&work, &["show", "--stat", "--format=", "HEAD"])?.trim_end());

        step("migration (live, from the status commits Ferry pushes)");
        let status = follow(&remote, &commit).await?;

        step("status file status/wordpress.yaml (branch ferry-status)");
        println!("{}", status.trim_end());
        step("status commits");
        println!("{}", git_dir(&remote, &["log", "-n", "12", "--format=%h %s%n%w(0,4,4)%(trailers:only)", "ferry-status"])?.trim_end());
        step(&format!("agent metrics (http://127.0.0.1:{port}/metrics)"));
        let metrics = http_get(port, "/metrics")?;
        for l in metrics.lines().filter(|l| l.starts_with("ferry_") && !l.contains("_bucket{")) {
            println!("  {l}");
        }
        anyhow::Ok(())
    }
    .await;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = agent.wait();
    result?;

    step(&format!("proof: the data on {} equals the data that was on {}", to.name, from.name));
    let after = digests(to).await?;
    let mut all = true;
    for claim in CLAIMS {
        let (b, a) = (&before[claim], &after[claim]);
        let same = b.0 == a.0;
        all &= same;
        println!("  {claim:<16} {} {:>7} files {:>6.1} MiB  {}: {}  {}: {}", if same { "equal    " } else { "DIFFERENT" }, b.1, b.2 as f64 / (1 << 20) as f64, from.name, &b.0[..16], to.name, &a.0[..16]);
    }
    println!("  (sha256 over every path, type, mode, owner, mtime, link target and byte, computed by the demo itself)");
    if !all {
        bail!("the data on {} differs from the data that was on {}", to.name, from.name);
    }
    println!("\nexport KUBECONFIG={}", kubeconfig.display());
    println!("kubectl --context {} -n {NAMESPACE} get deploy,pvc        # WordPress now runs there; `ferry demo` moves it back", to.name);
    println!("git -C {} log origin/ferry-status          # the audit trail", work.display());
    println!("ferry dev down --state {}                   # stop the clusters", report.state_dir.display());
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn git_in(dir: &Path, git_dir: bool, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new("git");
    if git_dir {
        cmd.arg("--git-dir").arg(dir);
    } else {
        cmd.arg("-C").arg(dir);
    }
    let out = cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").output().context("running git (install it with apt-get install git)")?;
    if !out.status.success() {
        bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    git_in(dir, false, args)
}

fn git_dir(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    git_in(dir, true, args)
}

/// The example placement repository, as a bare remote and a clone with one commit.
fn init_repository(remote: &Path, work: &Path) -> anyhow::Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/placement-repo");
    if !example.is_dir() {
        bail!("{} is missing: run the demo from a Ferry checkout (`cargo run -- demo`)", example.display());
    }
    let _ = std::fs::remove_dir_all(work);
    git(remote.parent().unwrap(), &["init", "--quiet", "--bare", "-b", "main", remote.to_str().unwrap()])?;
    copy_tree(&example, work)?;
    for args in [
        &["init", "--quiet", "-b", "main"][..],
        &["config", "user.name", "Demo Operator"],
        &["config", "user.email", "operator@example.com"],
        &["add", "."],
        &["commit", "--quiet", "-m", "Placement repository from examples/placement-repo"],
        &["remote", "add", "origin", remote.to_str().unwrap()],
        &["push", "--quiet", "-u", "origin", "main"],
    ] {
        git(work, args)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// Replace the value of the first `key:` line under `spec:` (keeps comments and layout).
fn set_field(yaml: &str, key: &str, value: &str) -> String {
    let mut done = false;
    yaml.lines()
        .map(|l| {
            let t = l.trim_start();
            if !done && l.starts_with("  ") && t.starts_with(&format!("{key}:")) {
                done = true;
                format!("{}{key}: {value}", &l[..l.len() - t.len()])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

async fn deploy(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})).await?;
    for doc in serde_saphyr::from_multiple::<Value>(WORDPRESS).context("parsing the embedded WordPress manifests")? {
        if doc.is_null() {
            continue;
        }
        let mut obj = doc;
        obj["metadata"]["namespace"] = json!(NAMESPACE);
        cluster.apply(&obj).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let deps = cluster.list("apps/v1", "Deployment", Some(NAMESPACE), None).await?;
        let ready = deps.iter().all(|d| d.pointer("/status/availableReplicas").and_then(Value::as_i64) == d.pointer("/spec/replicas").and_then(Value::as_i64));
        if ready && deps.len() == 2 {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "WordPress did not become Ready on {} within 120s", cluster.name);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The directory behind a claim (the harness's provisioner makes hostPath volumes).
async fn volume_dir(cluster: &Cluster, claim: &str) -> anyhow::Result<PathBuf> {
    let r = ObjectRef { api_version: "v1".into(), kind: "PersistentVolumeClaim".into(), namespace: Some(NAMESPACE.into()), name: claim.into() };
    for _ in 0..240 {
        if let Some(pv) = cluster.get(&r).await?.and_then(|c| c.pointer("/spec/volumeName").and_then(Value::as_str).map(str::to_string)) {
            let pv = cluster.get(&ObjectRef { api_version: "v1".into(), kind: "PersistentVolume".into(), namespace: None, name: pv }).await?;
            if let Some(p) = pv.as_ref().and_then(|p| p.pointer("/spec/hostPath/path")).and_then(Value::as_str) {
                return Ok(PathBuf::from(p));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("claim {claim} on {} is not bound to a hostPath volume", cluster.name)
}

/// Write a database-like and an uploads-like tree: ~96 MiB in ~1,500 files, mixed owners and modes.
async fn fill_volumes(cluster: &Cluster) -> anyhow::Result<u64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut total = 0u64;
    let mysql = volume_dir(cluster, "mysql-pv-claim").await?;
    let wp = volume_dir(cluster, "wp-pv-claim").await?;
    let mut write = |path: PathBuf, len: usize, compressible: bool| -> anyhow::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap())?;
        let mut data = vec![0u8; len];
        if compressible {
            for (i, b) in data.iter_mut().enumerate() {
                *b = b"wordpress ferry demo "[i % 21];
            }
        } else {
            rng.fill(&mut data[..]);
        }
        std::fs::write(&path, &data)?;
        total += len as u64;
        Ok(())
    };
    for t in 0..40 {
        write(mysql.join(format!("wordpress/wp_table_{t:02}.ibd")), 1 << 20, t % 3 == 0)?;
    }
    write(mysql.join("ibdata1"), 12 << 20, false)?;
    write(mysql.join("ib_logfile0"), 8 << 20, true)?;
    for y in 2019..2027 {
        for i in 0..180 {
            write(wp.join(format!("wp-content/uploads/{y}/{:02}/image-{i}.jpg", i % 12 + 1)), 1024 + (i * 997) % 30_000, false)?;
        }
    }
    write(wp.join("wp-content/uploads/video.mp4"), 8 << 20, false)?;
    std::os::unix::fs::symlink("wp-content/uploads", wp.join("uploads"))?;
    for d in [&mysql, &wp] {
        let uid = if d == &mysql { 999 } else { 33 };
        chown_tree(d, uid)?;
    }
    Ok(total)
}

fn chown_tree(dir: &Path, uid: u32) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
        if p.is_dir() && !p.is_symlink() {
            chown_tree(&p, uid)?;
        }
    }
    Ok(())
}

/// Per claim: (sha256 over the tree, files, bytes) — independent of the mover's own hash.
async fn digests(cluster: &Cluster) -> anyhow::Result<BTreeMap<&'static str, (String, u64, u64)>> {
    let mut out = BTreeMap::new();
    for claim in CLAIMS {
        let dir = volume_dir(cluster, claim).await?;
        out.insert(claim, tokio::task::spawn_blocking(move || tree_digest(&dir)).await??);
    }
    Ok(out)
}

fn tree_digest(root: &Path) -> anyhow::Result<(String, u64, u64)> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    fn visit(root: &Path, rel: &Path, h: &mut sha2::Sha256, files: &mut u64, bytes: &mut u64) -> anyhow::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let md = std::fs::symlink_metadata(&p)?;
            h.update(r.as_os_str().as_encoded_bytes());
            h.update(format!("\0{:o}:{}:{}:{}:{}\0", md.mode(), md.uid(), md.gid(), md.size(), md.mtime()).as_bytes());
            if md.file_type().is_symlink() {
                h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
            } else if md.is_dir() {
                visit(root, &r, h, files, bytes)?;
            } else if md.is_file() {
                let mut f = std::fs::File::open(&p)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                *files += 1;
                *bytes += md.size();
            }
        }
        Ok(())
    }
    let mut h = sha2::Sha256::new();
    let (mut files, mut bytes) = (0, 0);
    visit(root, Path::new(""), &mut h, &mut files, &mut bytes)?;
    Ok((hex::encode(h.finalize()), files, bytes))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(crate::dev::process::free_ports(1)?[0])
}

/// A plain HTTP/1.0 GET on loopback; the body when the answer is 200.
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    if !(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")) {
        bail!("GET {path}: {}", resp.lines().next().unwrap_or(""));
    }
    Ok(resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_get(port, "/readyz").is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the agent did not become ready within 60s")
}

/// Follow the namespace's status file on the status branch until the
/// migration for `commit` ends; print each stage as it completes.
async fn follow(remote: &Path, commit: &str) -> anyhow::Result<String> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message("waiting for the agent to pick up the change");
    let started = Instant::now();
    let mut printed = 0usize;
    loop {
        let text = git_dir(remote, &["show", "ferry-status:status/wordpress.yaml"]).unwrap_or_default();
        let status: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
        if status["observedCommit"] == commit {
            let stages = status["stages"].as_array().cloned().unwrap_or_default();
            for s in stages.iter().skip(printed).filter(|s| s["phase"] != "Running") {
                let secs = s["durationMs"].as_u64().unwrap_or(0) as f64 / 1000.0;
                let line = format!("  ✓ {:<10} {:>6.2}s  {}", s["name"].as_str().unwrap_or(""), secs, s["message"].as_str().unwrap_or(""));
                spinner.suspend(|| println!("{line}"));
                printed += 1;
            }
            if let Some(cur) = stages.get(printed) {
                spinner.set_message(format!("{} … ({} {})", cur["name"].as_str().unwrap_or(""), status["from"].as_str().unwrap_or(""), status["to"].as_str().unwrap_or("")));
            }
            match status["phase"].as_str() {
                Some("Succeeded") => {
                    spinner.finish_and_clear();
                    println!("  migration {} succeeded in {:.1}s, downtime {:.1}s", status["migrationId"].as_str().unwrap_or(""), started.elapsed().as_secs_f64(), status["downtimeMs"].as_u64().unwrap_or(0) as f64 / 1000.0);
                    return Ok(text);
                }
                Some("Failed") | Some("Conflict") => {
                    spinner.finish_and_clear();
                    println!("{text}");
                    bail!("the migration did not succeed (status above)");
                }
                _ => {}
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            spinner.finish_and_clear();
            bail!("no result after 600s; see the agent log");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
