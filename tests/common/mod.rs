//! Helpers shared by the mover tests: run the real `ferry` binary and build test trees.
#![allow(dead_code)]
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("FERRY_LOG", "warn");
    c
}

/// Result of one pass run through the binary.
pub struct Pass {
    pub code: i32,
    pub report: serde_json::Value,
    pub stderr: String,
}

impl Pass {
    pub fn u(&self, key: &str) -> u64 {
        self.report[key].as_u64().unwrap_or_else(|| panic!("report has no {key}: {}", self.report))
    }
}

fn pass_from(out: Output) -> Pass {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    Pass { code: out.status.code().unwrap_or(-1), report, stderr }
}

/// `ferry mover copy SRC DST -o json [extra]`.
pub fn copy(src: &Path, dst: &Path, extra: &[&str]) -> Pass {
    let out = ferry().args(["mover", "copy"]).arg(src).arg(dst).args(["-o", "json"]).args(extra).output().unwrap();
    pass_from(out)
}

/// `copy` that must succeed with equal hashes.
pub fn copy_ok(src: &Path, dst: &Path, extra: &[&str]) -> Pass {
    let p = copy(src, dst, extra);
    assert_eq!(p.code, 0, "copy failed: {}\n{}", p.stderr, p.report);
    assert_eq!(p.report["ok"], true);
    assert_eq!(p.report["sender_tree_hash"], p.report["receiver_tree_hash"]);
    p
}

/// Mint certificates with the binary.
pub fn certs(dir: &Path) {
    let st = ferry().args(["mover", "certs", "--out"]).arg(dir).status().unwrap();
    assert!(st.success());
}

/// Start `ferry mover receive` on 127.0.0.1:0 and wait for its address.
#[allow(clippy::zombie_processes)] // callers wait via `finish` or kill + wait
pub fn start_receiver(dst: &Path, certs: &Path, work: &Path, extra: &[&str]) -> (Child, String) {
    let ready = work.join(format!("ready-{}", rand::random::<u32>()));
    let child = ferry()
        .args(["mover", "receive", "--listen", "127.0.0.1:0", "-o", "json", "--dir"])
        .arg(dst)
        .arg("--certs")
        .arg(certs)
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Ok(a) = std::fs::read_to_string(&ready) {
            return (child, a);
        }
        assert!(t.elapsed() < Duration::from_secs(20), "receiver did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ferry mover send` as a child process.
pub fn spawn_sender(addr: &str, src: &Path, certs: &Path, extra: &[&str]) -> Child {
    ferry()
        .args(["mover", "send", "-o", "json", "--to", addr, "--dir"])
        .arg(src)
        .arg("--certs")
        .arg(certs)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn finish(child: Child) -> Pass {
    pass_from(child.wait_with_output().unwrap())
}

/// Deterministic pseudo-random bytes (blake3 XOF), half of each 4 KiB compressible when `text`.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut v);
    v
}

/// Set mtime (ns precision) without following symlinks.
pub fn set_mtime(p: &Path, s: i64, ns: i64) {
    let ts = libc::timespec { tv_sec: s, tv_nsec: ns };
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [ts, ts].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Self {
        // Under target/ so large test trees stay on the real disk, not a small /tmp.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        Work { dir: tempfile::Builder::new().prefix("mover-").tempdir_in(base).unwrap() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A tree with every kind of entry and attribute the mover must keep.
pub fn build_attr_tree(src: &Path) {
    std::fs::create_dir_all(src).unwrap();
    write(&src.join("plain.txt"), b"hello world\n");
    write(&src.join("empty"), b"");
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    write(&src.join("dir/sub/data.bin"), &bytes(1, 300_000));
    write(&src.join("dir/text.log"), "ferry log line\n".repeat(20_000).as_bytes());
    // Hardlinks: three names, one inode.
    write(&src.join("dir/linked"), b"shared inode");
    std::fs::hard_link(src.join("dir/linked"), src.join("link-2")).unwrap();
    std::fs::hard_link(src.join("dir/linked"), src.join("dir/sub/link-3")).unwrap();
    // Symlinks: relative, absolute, dangling.
    std::os::unix::fs::symlink("plain.txt", src.join("sym-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("sym-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("sym-dangling")).unwrap();
    // Sparse: 64 MiB with two small islands of data; holes must stay holes.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(src.join("sparse.img")).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"island one", 5 << 20).unwrap();
        f.write_all_at(&bytes(2, 8192), 40 << 20).unwrap();
    }
    // Very long names and a deep path; a name that is not UTF-8.
    let long = "n".repeat(255);
    write(&src.join(&long), b"long name");
    let mut deep = src.to_path_buf();
    for i in 0..12 {
        deep = deep.join(format!("{i:02}-{}", "d".repeat(120)));
    }
    write(&deep.join("leaf"), b"deep");
    write(&src.join(std::ffi::OsStr::from_bytes(b"bin-\xff\xfe-name")), b"latin1");
    // Modes and owners, mixed inside one volume.
    chmod(&src.join("plain.txt"), 0o600);
    chmod(&src.join("dir/text.log"), 0o444);
    chmod(&src.join("dir/sub/data.bin"), 0o4755);
    std::fs::create_dir_all(src.join("tmp-like")).unwrap();
    chmod(&src.join("tmp-like"), 0o1777);
    chown(&src.join("plain.txt"), 1000, 1000);
    chown(&src.join("dir/sub"), 2000, 3000);
    chown(&src.join("dir/sub/data.bin"), 65534, 65534);
    chown(&src.join("sym-rel"), 4000, 4001);
    chown(&src.join("empty-dir"), 5, 6);
    // mtimes with nanoseconds, deepest first so directory times stick.
    set_mtime(&src.join("plain.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&src.join("sym-rel"), 1_500_000_000, 1);
    set_mtime(&src.join("dir/sub"), 1_400_000_000, 999_999_999);
    set_mtime(&src.join("empty-dir"), 1_300_000_000, 5);
    set_mtime(src, 1_200_000_000, 7);
}

/// Changes to a [`build_attr_tree`] tree a later pass must carry: deletions, type
/// changes, metadata-only changes, same-size new content, hardlink changes.
pub fn change_attr_tree(src: &Path) {
    // Deletions: a file, a whole subtree, a symlink.
    std::fs::remove_file(src.join("empty")).unwrap();
    std::fs::remove_dir_all(src.join("dir/sub")).unwrap();
    std::fs::remove_file(src.join("sym-abs")).unwrap();
    // Type changes: file → directory, directory → symlink.
    std::fs::remove_file(src.join("plain.txt")).unwrap();
    write(&src.join("plain.txt/inner"), b"now a dir");
    std::fs::remove_dir_all(src.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("tmp-like", src.join("empty-dir")).unwrap();
    // Metadata only (content and mtime unchanged).
    chown(&src.join("dir/text.log"), 7, 8);
    chmod(&src.join("dir/text.log"), 0o640);
    // Same size, new content, new mtime.
    write(&src.join("dir/linked"), b"SHARED INODE");
    // A hardlink split off and a new hardlink added.
    std::fs::remove_file(src.join("link-2")).unwrap();
    std::fs::hard_link(src.join("dir/text.log"), src.join("text-alias")).unwrap();
    set_mtime(&src.join("dir"), 1_111_111_111, 0);
}
