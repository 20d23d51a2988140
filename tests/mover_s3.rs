//! The object-storage transport (`ferry mover s3-push` / `s3-pull`) against a real
//! S3-compatible server: s3s-fs on a loopback port, with credentials it checks (SigV4).
//! Trees are compared with the independent tree checker.
//!
//! s3s-fs is installed by `scripts/install-deps.sh` (into ~/.cache/ferry/s3s-fs);
//! `FERRY_S3S_FS` may name another binary. Without it these tests fail, they do not skip.
mod common;
mod treecheck;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ACCESS_KEY: &str = "ferry-test-access";
const SECRET_KEY: &str = "ferry-test-secret-9f3c2a";

fn s3s_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FERRY_S3S_FS") {
        return PathBuf::from(p);
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/ferry/s3s-fs/bin/s3s-fs");
    if cached.exists() {
        return cached;
    }
    which::which("s3s-fs")
        .unwrap_or_else(|_| panic!("s3s-fs is not installed (looked at $FERRY_S3S_FS, {} and PATH): run scripts/install-deps.sh", cached.display()))
}

/// A running s3s-fs over a temporary root directory; killed on drop.
struct S3Server {
    child: Child,
    endpoint: String,
    root: PathBuf,
}

impl S3Server {
    fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root).unwrap();
        let bin = s3s_binary();
        for _ in 0..5 {
            let port = ferry::dev::process::free_ports(1).unwrap()[0];
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/install-deps.sh)", bin.display()));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return S3Server { child, endpoint: format!("http://127.0.0.1:{port}"), root: root.to_path_buf() };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start listening");
    }

    /// `ferry mover s3-push|s3-pull` with the endpoint, bucket and credentials set.
    fn ferry(&self, op: &str, dir: &Path, bucket: &str, secret: &str, extra: &[&str]) -> Command {
        let mut c = ferry();
        c.args(["mover", op, "-o", "json", "--endpoint", &self.endpoint, "--bucket", bucket, "--dir"])
            .arg(dir)
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("FERRY_FAULT");
        if op == "s3-push" {
            c.arg("--create-bucket");
        }
        c
    }

    fn run(&self, op: &str, dir: &Path, bucket: &str, extra: &[&str]) -> Pass {
        run_pass(self.ferry(op, dir, bucket, SECRET_KEY, extra))
    }

    fn ok(&self, op: &str, dir: &Path, bucket: &str, extra: &[&str]) -> Pass {
        let p = self.run(op, dir, bucket, extra);
        assert_eq!(p.code, 0, "{op} failed: {}\n{}", p.stderr, p.report);
        assert_eq!(p.report["ok"], true, "{}", p.report);
        if op == "s3-pull" {
            assert_eq!(p.report["sender_tree_hash"], p.report["receiver_tree_hash"]);
        }
        p
    }

    /// Files of the chunk objects stored under `bucket/prefix` (s3s-fs keeps objects as files).
    fn chunk_files(&self, bucket_prefix: &str) -> Vec<PathBuf> {
        let dir = self.root.join(bucket_prefix).join("chunks");
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')).collect();
        v.sort();
        v
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_pass(mut c: Command) -> Pass {
    let out = c.output().unwrap();
    Pass {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn push_and_pull_keep_every_attribute_and_apply_deletions() {
    let w = Work::new();
    let s3 = S3Server::start(&w.path("bucket-root"));
    let (src, dst) = (w.path("src"), w.path("dst"));
    build_attr_tree(&src);
    let before = treecheck::snapshot(&src);
    let push = s3.ok("s3-push", &src, "s3://ferry-test/ns1/pvc-a", &[]);
    assert!(push.u("chunks_uploaded") > 0);
    assert_eq!(push.u("chunks_in_bucket_before"), 0);
    // The sparse file's holes are not stored (its two data blocks go up compressed).
    assert!(push.u("chunks_holes") >= 60, "{}", push.report);
    assert!(push.u("bytes_uploaded") < 2 << 20, "{}", push.report);
    let pull = s3.ok("s3-pull", &dst, "s3://ferry-test/ns1/pvc-a", &[]);
    treecheck::assert_same(&src, &dst);
    assert_eq!(pull.report["sender_tree_hash"], push.report["sender_tree_hash"]);
    assert_eq!(pull.u("chunks_downloaded"), push.u("chunks_uploaded"));
    assert!(treecheck::compare_snapshots(&before, &treecheck::snapshot(&src)).is_empty(), "source was modified");

    // Nothing changed: nothing uploaded, nothing downloaded.
    let again = s3.ok("s3-push", &src, "s3://ferry-test/ns1/pvc-a", &[]);
    assert_eq!(again.u("chunks_uploaded"), 0, "{}", again.report);
    assert_eq!(again.report["sender_tree_hash"], push.report["sender_tree_hash"]);
    let again = s3.ok("s3-pull", &dst, "s3://ferry-test/ns1/pvc-a", &[]);
    assert_eq!(again.u("chunks_downloaded"), 0, "{}", again.report);
    assert_eq!(again.u("files_sent"), 0);

    // Deletions, type changes, metadata-only changes and hardlink changes since the previous pull.
    change_attr_tree(&src);
    s3.ok("s3-push", &src, "s3://ferry-test/ns1/pvc-a", &[]);
    let p = s3.ok("s3-pull", &dst, "s3://ferry-test/ns1/pvc-a", &[]);
    treecheck::assert_same(&src, &dst);
    assert!(p.u("entries_deleted") >= 4, "{}", p.report);

    // An older pass can still be pulled by name, pinned to the hash its push reported.
    let old = push.report["pass"].as_str().unwrap();
    let old_hash = push.report["sender_tree_hash"].as_str().unwrap();
    let dst2 = w.path("dst-old");
    let p = s3.ok("s3-pull", &dst2, "s3://ferry-test/ns1/pvc-a", &["--pass", old, "--expect-tree-hash", old_hash]);
    assert_eq!(p.report["receiver_tree_hash"], push.report["sender_tree_hash"]);
    // The newest pass is not the one with that hash.
    let p = s3.run("s3-pull", &w.path("dst-3"), "s3://ferry-test/ns1/pvc-a", &["--expect-tree-hash", old_hash]);
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("not the expected"), "{}", p.stderr);
}

#[test]
fn wrong_credentials_fail_with_a_clear_auth_error() {
    let w = Work::new();
    let s3 = S3Server::start(&w.path("bucket-root"));
    let src = w.path("src");
    write(&src.join("a"), b"data");
    let p = run_pass(s3.ferry("s3-push", &src, "s3://ferry-test/x", "not-the-secret", &[]));
    assert_eq!(p.code, 1, "{}", p.stderr);
    assert!(p.stderr.contains("S3 authentication failed") && p.stderr.contains("SignatureDoesNotMatch"), "{}", p.stderr);
    assert!(p.stderr.contains("AWS_SECRET_ACCESS_KEY"), "{}", p.stderr);
    // With the right key it works, and a pull with a wrong key is refused the same way.
    s3.ok("s3-push", &src, "s3://ferry-test/x", &[]);
    let p = run_pass(s3.ferry("s3-pull", &w.path("dst"), "s3://ferry-test/x", "not-the-secret", &[]));
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("S3 authentication failed"), "{}", p.stderr);
    // Credentials from an AWS shared-credentials file instead of the environment.
    let creds = w.path("credentials");
    std::fs::write(&creds, format!("[other]\naws_access_key_id = x\n\n[ferry]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\nregion = us-east-1\n")).unwrap();
    let mut c = s3.ferry("s3-pull", &w.path("dst"), "s3://ferry-test/x", SECRET_KEY, &["--credentials-file", creds.to_str().unwrap(), "--profile", "ferry"]);
    c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
    let p = run_pass(c);
    assert_eq!(p.code, 0, "{}", p.stderr);
    treecheck::assert_same(&src, &w.path("dst"));
    // Unknown access key.
    let mut c = s3.ferry("s3-pull", &w.path("dst"), "s3://ferry-test/x", SECRET_KEY, &[]);
    c.env("AWS_ACCESS_KEY_ID", "nobody");
    let p = run_pass(c);
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("S3 authentication failed"), "{}", p.stderr);
}

/// 20 small files, one 8 MiB file.
fn small_and_big(src: &Path) {
    for i in 0..20 {
        write(&src.join(format!("small/f{i:02}")), &bytes(100 + i, 50_000));
    }
    write(&src.join("big.bin"), &bytes(7, 8 << 20));
}

#[test]
fn a_second_push_uploads_only_the_changed_chunks() {
    for with_state in [false, true] {
        let w = Work::new();
        let s3 = S3Server::start(&w.path("bucket-root"));
        let (src, dst, state) = (w.path("src"), w.path("dst"), w.path("state"));
        let st = state.to_str().unwrap().to_string();
        let extra: Vec<&str> = if with_state { vec!["--state", &st] } else { vec![] };
        small_and_big(&src);
        let first = s3.ok("s3-push", &src, "s3://ferry-test/p", &extra);
        assert_eq!(first.u("chunks_uploaded"), 28, "{}", first.report);
        s3.ok("s3-pull", &dst, "s3://ferry-test/p", &[]);

        // One small file changes.
        write(&src.join("small/f07"), &bytes(999, 50_000));
        let p = s3.ok("s3-push", &src, "s3://ferry-test/p", &extra);
        assert_eq!(p.u("chunks_uploaded"), 1, "{}", p.report);
        assert_eq!(p.u("files_sent"), 1);
        assert_eq!(p.u("file_bytes_transferred"), 50_000);
        assert_eq!(p.u("chunks_skipped"), 27);
        assert!(p.u("bytes_uploaded") < 100_000, "{}", p.report);
        if with_state {
            assert_eq!(p.u("files_read"), 1, "the hash cache should spare unchanged files: {}", p.report);
        }
        let pull = s3.ok("s3-pull", &dst, "s3://ferry-test/p", &[]);
        assert_eq!(pull.u("chunks_downloaded"), 1, "{}", pull.report);
        treecheck::assert_same(&src, &dst);

        // One block in the middle of the big file changes: one chunk up, one chunk down,
        // and the pull updates the file in place.
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(src.join("big.bin")).unwrap();
            f.write_all_at(b"changed", (3 << 20) + 5).unwrap();
        }
        let p = s3.ok("s3-push", &src, "s3://ferry-test/p", &extra);
        assert_eq!(p.u("chunks_uploaded"), 1, "{}", p.report);
        assert_eq!(p.u("file_bytes_transferred"), 1 << 20);
        let pull = s3.ok("s3-pull", &dst, "s3://ferry-test/p", &[]);
        assert_eq!(pull.u("chunks_downloaded"), 1, "{}", pull.report);
        assert_eq!(pull.u("chunks_skipped"), 7, "{}", pull.report);
        assert_eq!(pull.report["receiver"]["files_delta"], 1);
        treecheck::assert_same(&src, &dst);
    }
}

#[test]
fn an_interrupted_push_resumes_without_reuploading_finished_chunks() {
    let w = Work::new();
    let s3 = S3Server::start(&w.path("bucket-root"));
    let (src, dst) = (w.path("src"), w.path("dst"));
    for i in 0..6 {
        write(&src.join(format!("d/file{i}")), &bytes(i, 5 << 20));
    }
    // The process dies (abort, like kill -9) right after its 10th chunk upload.
    let mut c = s3.ferry("s3-push", &src, "s3://ferry-test/resume", SECRET_KEY, &["--jobs", "1"]);
    c.env("FERRY_FAULT", "s3-crash-after-uploads:10");
    let crashed = run_pass(c);
    assert_ne!(crashed.code, 0);
    assert!(crashed.stderr.contains("FERRY_FAULT: crashing after 10 chunk uploads"), "{}", crashed.stderr);
    assert_eq!(s3.chunk_files("ferry-test/resume").len(), 10);
    // Nothing was published.
    let p = s3.run("s3-pull", &dst, "s3://ferry-test/resume", &[]);
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("no pass has been pushed"), "{}", p.stderr);

    let resumed = s3.ok("s3-push", &src, "s3://ferry-test/resume", &[]);
    assert_eq!(resumed.u("chunks_in_bucket_before"), 10, "{}", resumed.report);
    assert_eq!(resumed.u("chunks_total"), 30);
    assert_eq!(resumed.u("chunks_uploaded"), 20, "finished chunks were uploaded again: {}", resumed.report);
    assert_eq!(resumed.u("chunks_skipped"), 10);
    s3.ok("s3-pull", &dst, "s3://ferry-test/resume", &[]);
    treecheck::assert_same(&src, &dst);
}

#[test]
fn a_tampered_chunk_fails_the_pull() {
    let w = Work::new();
    let s3 = S3Server::start(&w.path("bucket-root"));
    let (src, dst) = (w.path("src"), w.path("dst"));
    write(&src.join("a.bin"), &bytes(1, 3 << 20));
    write(&src.join("b.txt"), "some text that compresses well\n".repeat(1000).as_bytes());
    s3.ok("s3-push", &src, "s3://ferry-test/t", &[]);
    let chunks = s3.chunk_files("ferry-test/t");
    assert_eq!(chunks.len(), 4);
    // Flip one byte of each stored chunk's payload in turn: every one must be caught.
    for c in &chunks {
        let orig = std::fs::read(c).unwrap();
        let mut bad = orig.clone();
        let k = bad.len() - 1;
        bad[k] ^= 0x55;
        std::fs::write(c, &bad).unwrap();
        let d = w.path(&format!("dst-{}", c.file_name().unwrap().to_string_lossy()));
        let p = s3.run("s3-pull", &d, "s3://ferry-test/t", &[]);
        assert_eq!(p.code, 1, "tampered chunk {} went unnoticed: {}", c.display(), p.report);
        assert!(p.stderr.contains("failed verification") && p.stderr.contains("tampered"), "{}", p.stderr);
        std::fs::write(c, &orig).unwrap();
    }
    // A chunk swapped for another valid chunk object is caught too.
    let orig0 = std::fs::read(&chunks[0]).unwrap();
    std::fs::copy(&chunks[1], &chunks[0]).unwrap();
    let p = s3.run("s3-pull", &w.path("dst-swapped"), "s3://ferry-test/t", &[]);
    assert_eq!(p.code, 1);
    assert!(p.stderr.contains("failed verification"), "{}", p.stderr);
    std::fs::write(&chunks[0], &orig0).unwrap();
    // Untouched, the pull succeeds.
    s3.ok("s3-pull", &dst, "s3://ferry-test/t", &[]);
    treecheck::assert_same(&src, &dst);
}

/// The claims of one migration push at the same time, each with --create-bucket:
/// whoever loses the race to create the bucket still pushes (409 is not an error).
#[test]
fn parallel_pushes_that_both_create_the_bucket_succeed() {
    let w = Work::new();
    let s3 = S3Server::start(&w.path("bucket-root"));
    let mut pushes = Vec::new();
    for i in 0..4 {
        let src = w.path(&format!("src{i}"));
        write(&src.join("f"), &bytes(i, 4096));
        pushes.push(s3.ferry("s3-push", &src, &format!("s3://racing-bucket/claim{i}"), SECRET_KEY, &[]).spawn().unwrap());
    }
    for (i, p) in pushes.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "push {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for i in 0..4 {
        assert!(!s3.chunk_files(&format!("racing-bucket/claim{i}")).is_empty(), "claim{i} pushed its chunk");
    }
}
