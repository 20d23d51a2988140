//! Real Git fixtures built with the `git` CLI: a bare "remote" and working
//! clones standing in for people who push to it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a command and return trimmed stdout; panic with stderr on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git` with an isolated configuration, so the host's ~/.gitconfig cannot
/// change behaviour (signing, hooks, default branch).
pub fn git_cmd(dir: &Path, home: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .env_remove("GIT_DIR")
        .env_remove("GNUPGHOME");
    cmd
}

/// A bare remote plus one working clone of it, all inside a temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Fixture {
    /// Bare repo with branch `main` and one clone at `work/`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        let work = dir.path().join("work");
        let home = dir.path().to_path_buf();
        run(git_cmd(dir.path(), &home)
            .args(["init", "--bare", "-b", "main"])
            .arg(&bare));
        run(git_cmd(dir.path(), &home)
            .args(["init", "-b", "main"])
            .arg(&work));
        run(git_cmd(&work, &home)
            .args(["remote", "add", "origin"])
            .arg(&bare));
        Fixture { dir, bare, work }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `file://` URL of the bare remote.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// git in the working clone.
    pub fn git(&self, args: &[&str]) -> String {
        run(git_cmd(&self.work, self.home()).args(args))
    }

    /// git against the bare remote.
    pub fn git_bare(&self, args: &[&str]) -> String {
        run(git_cmd(&self.bare, self.home()).args(args))
    }

    /// Write a file in the working clone (creating directories).
    pub fn write(&self, path: &str, contents: &[u8]) {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    /// Stage everything, commit with `message`, return the new SHA.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Push the current branch to the remote.
    pub fn push(&self, branch: &str) {
        self.git(&["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")]);
    }

    /// A fresh temp path for Ferry's cache.
    pub fn cache(&self, name: &str) -> PathBuf {
        self.dir.path().join("cache").join(name)
    }
}
