//! Git against real repositories over `file://`: clone into the cache,
//! fetch, read at a commit, changed paths, PR numbers, status pushes that
//! race another writer, and signature verification with real keys.
#[path = "support/git_fixture.rs"]
mod fixture;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use ferry::repo::{
    Auth, GitRepo, Oid, RepoError, RepoSource, SignatureKind, SignatureVerdict, StatusWrite,
    TrustedKeys,
};
use fixture::{Fixture, git_cmd, run};

fn source(fx: &Fixture, cache: &str) -> RepoSource {
    RepoSource {
        url: fx.url(),
        branch: "main".into(),
        auth: Auth::None,
        cache_dir: fx.cache(cache),
        tls_ca_file: None,
    }
}

fn oid(s: &str) -> Oid {
    Oid::from_str(s).unwrap()
}

#[test]
fn clone_fetch_read_and_diff_over_file_url() {
    let fx = Fixture::new();
    fx.write("README.md", b"placements\n");
    fx.write("placements/shop.yaml", b"namespace: shop\ncluster: east\n");
    fx.write("placements/db.yaml", b"namespace: db\ncluster: east\n");
    let first = fx.commit_all("Initial placements");
    fx.push("main");

    let repo = GitRepo::open_or_clone(&source(&fx, "c1")).unwrap();
    assert!(
        fx.cache("c1").join("HEAD").exists(),
        "cache is a bare clone on disk"
    );
    assert!(
        !fx.cache("c1").join("placements").exists(),
        "no checkout in the cache"
    );
    let head = repo.fetch().unwrap();
    assert_eq!(head, oid(&first));

    let files = repo.read_files_at(head, "placements").unwrap();
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["placements/db.yaml", "placements/shop.yaml"]
    );
    assert_eq!(
        files["placements/shop.yaml"],
        "namespace: shop\ncluster: east\n"
    );
    assert_eq!(repo.read_files_at(head, "").unwrap().len(), 3);
    assert!(repo.read_files_at(head, "no-such-dir").unwrap().is_empty());
    assert_eq!(
        repo.read_file_at(head, "README.md").unwrap().as_deref(),
        Some(&b"placements\n"[..])
    );
    assert_eq!(repo.read_file_at(head, "missing.yaml").unwrap(), None);

    // A feature branch merged the GitHub way: modify, delete, add nested.
    fx.git(&["checkout", "-q", "-b", "move-shop"]);
    fx.write("placements/shop.yaml", b"namespace: shop\ncluster: west\n");
    std::fs::remove_file(fx.work.join("placements/db.yaml")).unwrap();
    fx.write(
        "placements/team-a/cache.yaml",
        b"namespace: cache\ncluster: west\n",
    );
    fx.commit_all("Move shop to west");
    fx.git(&["checkout", "-q", "main"]);
    fx.write("README.md", b"placements (edited on main)\n");
    fx.commit_all("Edit readme");
    fx.git(&[
        "merge",
        "-q",
        "--no-ff",
        "move-shop",
        "-m",
        "Merge pull request #42 from acme/move-shop\n\nMove shop to west",
    ]);
    let merge = fx.git(&["rev-parse", "HEAD"]);
    fx.push("main");

    let head2 = repo.fetch().unwrap();
    assert_eq!(head2, oid(&merge));
    assert_eq!(
        repo.read_files_at(head, "placements").unwrap(),
        files,
        "old commit still readable unchanged"
    );
    let changed = repo.changed_paths(Some(head), head2).unwrap();
    let expected: BTreeSet<String> = [
        "README.md",
        "placements/db.yaml",
        "placements/shop.yaml",
        "placements/team-a/cache.yaml",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(changed, expected);
    assert_eq!(
        repo.changed_paths(None, head).unwrap().len(),
        3,
        "no base lists every file"
    );

    let info = repo.commit_info(head2).unwrap();
    assert_eq!(info.parents.len(), 2);
    assert_eq!(info.pr_number(), Some(42));
    assert_eq!(info.summary, "Merge pull request #42 from acme/move-shop");
    assert_eq!(info.author_email, "alice@example.com");
    assert!(!info.is_ferry_status_commit());
    assert_eq!(repo.commit_info(head).unwrap().pr_number(), None);

    // Squash merges (Gitea/GitHub) and GitLab merge commits.
    fx.write("placements/shop.yaml", b"namespace: shop\ncluster: east\n");
    let squash = fx.commit_all("Move shop back (#43)");
    fx.git(&[
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "Merge branch 'x' into 'main'\n\nSee merge request platform/placements!7",
    ]);
    let gitlab = fx.git(&["rev-parse", "HEAD"]);
    fx.push("main");
    repo.fetch().unwrap();
    assert_eq!(
        repo.commit_info(oid(&squash)).unwrap().pr_number(),
        Some(43)
    );
    assert_eq!(repo.commit_info(oid(&gitlab)).unwrap().pr_number(), Some(7));

    // Reopening the cache reuses it; revisions resolve against fetched refs.
    drop(repo);
    let again = GitRepo::open_or_clone(&source(&fx, "c1")).unwrap();
    assert_eq!(again.resolve("origin/main").unwrap(), oid(&gitlab));
    assert_eq!(again.resolve(&merge[..10]).unwrap(), oid(&merge));
    assert!(again.is_ancestor(head, head2).unwrap());
    assert!(!again.is_ancestor(head2, head).unwrap());
}

#[test]
fn bad_input_gets_clear_errors() {
    let fx = Fixture::new();
    fx.write("placements/bin.yaml", &[0xff, 0xfe, 0x00, 0x41]);
    let sha = fx.commit_all("binary");
    fx.push("main");
    let repo = GitRepo::open_or_clone(&source(&fx, "c")).unwrap();
    let err = repo.read_files_at(oid(&sha), "placements").unwrap_err();
    assert!(
        matches!(&err, RepoError::NotUtf8 { path, .. } if path == "placements/bin.yaml"),
        "{err}"
    );
    assert!(err.to_string().contains(&sha), "{err}");

    let err = repo.resolve("no-such-rev").unwrap_err();
    assert!(err.to_string().contains("no-such-rev"), "{err}");

    // Same cache directory, different repository.
    let other = Fixture::new();
    let mut src = source(&other, "x");
    src.cache_dir = fx.cache("c");
    let err = GitRepo::open_or_clone(&src).unwrap_err();
    assert!(matches!(err, RepoError::CacheUrlMismatch { .. }), "{err}");

    let mut src = source(&fx, "c2");
    src.branch = "does-not-exist".into();
    let err = GitRepo::open_or_clone(&src).unwrap_err();
    assert!(
        matches!(&err, RepoError::BranchMissing { branch, .. } if branch == "does-not-exist"),
        "{err}"
    );

    let mut src = source(&fx, "c3");
    src.url = format!("file://{}/nope.git", fx.dir.path().display());
    let err = GitRepo::open_or_clone(&src).unwrap_err();
    assert!(matches!(err, RepoError::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("nope.git"), "{err}");

    let mut w = StatusWrite::new("status", oid(&sha), "bad");
    w.files.push(("../escape".into(), b"x".to_vec()));
    let err = repo.write_status(&w).unwrap_err();
    assert!(matches!(err, RepoError::BadStatusPath { .. }), "{err}");
}

/// SHAs on `branch` of the bare remote, newest first (first-parent order).
fn remote_log(fx: &Fixture, branch: &str) -> Vec<String> {
    fx.git_bare(&["rev-list", "--first-parent", branch])
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn status_push_survives_a_concurrent_push_without_losing_it() {
    let fx = Fixture::new();
    fx.write("placements/shop.yaml", b"cluster: west\n");
    let placement = fx.commit_all("Move shop");
    fx.push("main");
    let repo = GitRepo::open_or_clone(&source(&fx, "ferry")).unwrap();

    // First write creates the (orphan) status branch.
    let mut w = StatusWrite::new("ferry-status", oid(&placement), "status: shop planned");
    w.migration = Some("shop-1".into());
    w.files
        .push(("status/shop.yaml".into(), b"phase: Planned\n".to_vec()));
    let first = repo.write_status(&w).unwrap();
    assert_eq!((first.attempts, first.unchanged), (1, false));
    assert_eq!(remote_log(&fx, "ferry-status"), [first.commit.to_string()]);
    assert_eq!(
        fx.git_bare(&["show", "ferry-status:status/shop.yaml"]),
        "phase: Planned"
    );
    let body = fx.git_bare(&["log", "-1", "--format=%an <%ae>%n%B", "ferry-status"]);
    assert!(
        body.starts_with("Ferry <ferry@localhost>\nstatus: shop planned"),
        "{body}"
    );
    assert!(
        body.contains(&format!("Ferry-Placement-Commit: {placement}")),
        "{body}"
    );
    assert!(body.contains("Ferry-Migration: shop-1"), "{body}");

    // Writing identical content again is a no-op, not a new commit.
    let same = repo.write_status(&w).unwrap();
    assert!(same.unchanged);
    assert_eq!(same.commit, first.commit);
    assert_eq!(remote_log(&fx, "ferry-status").len(), 1);

    // Someone else pushes to the status branch after Ferry built its commit
    // and before it pushes; they also edit Ferry's file.
    let human = fx.dir.path().join("human");
    run(git_cmd(fx.dir.path(), fx.home())
        .args(["clone", "-q", "-b", "ferry-status"])
        .arg(&fx.bare)
        .arg(&human));
    let mut other_sha = String::new();
    w.files = vec![("status/shop.yaml".into(), b"phase: Copying\n".to_vec())];
    w.message = "status: shop copying".into();
    let out = repo
        .write_status_with(&w, &mut |attempt| {
            if attempt == 1 {
                std::fs::write(human.join("NOTES.md"), "operator was here\n").unwrap();
                std::fs::write(human.join("status/shop.yaml"), "phase: Hacked\n").unwrap();
                run(git_cmd(&human, fx.home()).args(["commit", "-qam", "operator note"]));
                run(git_cmd(&human, fx.home()).args(["add", "NOTES.md"]));
                run(git_cmd(&human, fx.home()).args(["commit", "-qm", "operator note 2"]));
                run(git_cmd(&human, fx.home()).args(["push", "-q", "origin", "ferry-status"]));
                other_sha = run(git_cmd(&human, fx.home()).args(["rev-parse", "HEAD"]));
            }
        })
        .unwrap();
    assert_eq!(out.attempts, 2, "first push must have been rejected");
    assert!(!out.unchanged);
    let log = remote_log(&fx, "ferry-status");
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(
        log[0],
        out.commit.to_string(),
        "Ferry's commit is the new head"
    );
    assert_eq!(
        log[1], other_sha,
        "the other writer's commit is kept right below"
    );
    assert_eq!(
        log[3],
        first.commit.to_string(),
        "history below is untouched"
    );
    assert_eq!(
        fx.git_bare(&["show", "ferry-status:NOTES.md"]),
        "operator was here",
        "their file survives"
    );
    assert_eq!(
        fx.git_bare(&["show", "ferry-status:status/shop.yaml"]),
        "phase: Copying",
        "Ferry's file re-applied"
    );
    assert_eq!(repo.branch_head("ferry-status").unwrap(), Some(out.commit));
}

#[test]
fn status_on_the_placement_branch_never_looks_like_new_work() {
    let fx = Fixture::new();
    fx.write("placements/shop.yaml", b"cluster: west\n");
    let placement = fx.commit_all("Move shop (#5)");
    fx.push("main");
    let repo = GitRepo::open_or_clone(&source(&fx, "ferry")).unwrap();
    let head = repo.fetch().unwrap();
    let mut w = StatusWrite::new("main", head, "status: shop done");
    w.files
        .push(("status/shop.yaml".into(), b"phase: Done\n".to_vec()));
    repo.write_status(&w).unwrap();
    w.files[0].1 = b"phase: Verified\n".to_vec();
    w.files
        .push(("status/old.yaml".into(), b"phase: Done\n".to_vec()));
    let mid = repo.write_status(&w).unwrap();
    assert!(
        repo.read_file_at(mid.commit, "status/old.yaml")
            .unwrap()
            .is_some()
    );
    w.files.pop();
    w.removals = vec!["status/old.yaml".into(), "status/never-existed.yaml".into()];
    let out = repo.write_status(&w).unwrap();
    assert_eq!(
        repo.read_file_at(out.commit, "status/old.yaml").unwrap(),
        None,
        "removed"
    );
    assert_eq!(
        repo.read_file_at(out.commit, "status/shop.yaml")
            .unwrap()
            .as_deref(),
        Some(&b"phase: Verified\n"[..])
    );

    let new_head = repo.fetch().unwrap();
    assert_eq!(new_head, out.commit);
    assert!(repo.commit_info(new_head).unwrap().is_ferry_status_commit());
    assert_eq!(
        repo.latest_placement_commit(new_head, "status").unwrap(),
        oid(&placement)
    );
    // Status written elsewhere than the given directory is not skipped.
    assert_eq!(
        repo.latest_placement_commit(new_head, "other").unwrap(),
        new_head
    );
    // The placement files are untouched by the status commits.
    let files = repo.read_files_at(new_head, "placements").unwrap();
    assert_eq!(files["placements/shop.yaml"], "cluster: west\n");

    // A human commit on top is new work again.
    fx.git(&["pull", "-q", "origin", "main"]);
    fx.write("placements/shop.yaml", b"cluster: east\n");
    let human = fx.commit_all("Move shop back");
    fx.push("main");
    let head3 = repo.fetch().unwrap();
    assert_eq!(
        repo.latest_placement_commit(head3, "status").unwrap(),
        oid(&human)
    );

    // A commit that copies Ferry's trailer but edits placements is work.
    fx.write("placements/shop.yaml", b"cluster: mars\n");
    let disguised = fx.commit_all(&format!("sneaky\n\nFerry-Placement-Commit: {human}"));
    fx.push("main");
    let head4 = repo.fetch().unwrap();
    assert!(repo.commit_info(head4).unwrap().is_ferry_status_commit());
    assert_eq!(
        repo.latest_placement_commit(head4, "status").unwrap(),
        oid(&disguised)
    );
}

// ---- signatures -------------------------------------------------------

fn ssh_keygen(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn ssh_fingerprint(public_key_file: &std::path::Path) -> String {
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(public_key_file));
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// A throwaway GnuPG home; the agent it spawns is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Self {
        // gpg-agent's socket path must stay short.
        let home = tempfile::Builder::new()
            .prefix("fg")
            .tempdir_in("/tmp")
            .unwrap();
        Gpg { home }
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--quiet"]);
        c
    }
    fn gen_key(&self, uid: &str) -> String {
        run(self.cmd().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]));
        let listing = run(self.cmd().args(["--with-colons", "--list-keys", uid]));
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .unwrap()
            .split(':')
            .nth(9)
            .unwrap()
            .to_string()
    }
    fn export(&self, fpr: &str) -> String {
        run(self.cmd().args(["--armor", "--export", fpr]))
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

#[test]
fn signed_unsigned_untrusted_and_tampered_commits() {
    let fx = Fixture::new();
    let keys = tempfile::tempdir().unwrap();
    let (trusted_key, trusted_pub) = ssh_keygen(keys.path(), "trusted");
    let (stranger_key, _) = ssh_keygen(keys.path(), "stranger");
    let gpg = Gpg::new();
    let gpg_fpr = gpg.gen_key("Ferry Test <pgp@example.com>");
    let gpg_other = gpg.gen_key("Other <other@example.com>");

    let ssh_commit = |key: &std::path::Path, msg: &str| {
        let mut c = git_cmd(&fx.work, fx.home());
        c.args(["-c", "gpg.format=ssh", "-c"])
            .arg(format!("user.signingkey={}", key.display()));
        run(c.args(["commit", "-q", "-S", "--allow-empty", "-m", msg]));
        fx.git(&["rev-parse", "HEAD"])
    };
    let pgp_commit = |fpr: &str, msg: &str| {
        let mut c = git_cmd(&fx.work, fx.home());
        c.env("GNUPGHOME", gpg.home.path())
            .args(["-c", &format!("user.signingkey={fpr}")]);
        run(c.args(["commit", "-q", "-S", "--allow-empty", "-m", msg]));
        fx.git(&["rev-parse", "HEAD"])
    };
    fx.write("placements/shop.yaml", b"cluster: west\n");
    fx.git(&["add", "-A"]);
    let ssh_good = ssh_commit(&trusted_key, "signed with the trusted ssh key");
    let ssh_stranger = ssh_commit(&stranger_key, "signed with an unknown ssh key");
    let pgp_good = pgp_commit(&gpg_fpr, "signed with the trusted pgp key");
    let pgp_other = pgp_commit(&gpg_other, "signed with an untrusted pgp key");
    let unsigned = fx.commit_all("not signed");
    // Same signature, altered content: rewrite the message of the signed
    // commit object and store it as a new commit.
    let raw = fx.git(&["cat-file", "commit", &ssh_good]);
    let store = |raw: String| {
        let file = fx.dir.path().join("forged-commit");
        std::fs::write(&file, format!("{raw}\n")).unwrap();
        run(git_cmd(&fx.work, fx.home())
            .args(["hash-object", "-t", "commit", "-w"])
            .arg(&file))
    };
    let forged = store(raw.replace(
        "signed with the trusted ssh key",
        "signed with the trusted ssh key, honestly",
    ));
    let raw_pgp = fx.git(&["cat-file", "commit", &pgp_good]);
    let forged_pgp = store(raw_pgp.replace("trusted pgp key", "trusted pgp key!"));
    fx.git(&["branch", "forged", &forged]);
    fx.git(&["branch", "forged-pgp", &forged_pgp]);
    fx.push("main");
    fx.git(&["push", "-q", "origin", "forged", "forged-pgp"]);

    let repo = GitRepo::open_or_clone(&source(&fx, "sig")).unwrap();
    let trusted = TrustedKeys {
        ssh: vec![format!("alice@example.com {trusted_pub}")],
        openpgp: vec![gpg.export(&gpg_fpr)],
    };
    let ring = trusted.load().unwrap();
    let verdict = |sha: &str| repo.verify_commit_signature(oid(sha), &ring).unwrap();

    let trusted_fp = ssh_fingerprint(&trusted_key.with_extension("pub"));
    assert_eq!(
        verdict(&ssh_good),
        SignatureVerdict::Trusted {
            kind: SignatureKind::Ssh,
            fingerprint: trusted_fp.clone()
        }
    );
    assert_eq!(
        verdict(&ssh_stranger),
        SignatureVerdict::UntrustedKey {
            kind: SignatureKind::Ssh,
            fingerprint: ssh_fingerprint(&stranger_key.with_extension("pub"))
        }
    );
    assert_eq!(
        verdict(&pgp_good),
        SignatureVerdict::Trusted {
            kind: SignatureKind::OpenPgp,
            fingerprint: gpg_fpr.clone()
        }
    );
    assert_eq!(
        verdict(&pgp_other),
        SignatureVerdict::UntrustedKey {
            kind: SignatureKind::OpenPgp,
            fingerprint: gpg_other.clone()
        }
    );
    assert_eq!(verdict(&unsigned), SignatureVerdict::Unsigned);
    assert!(
        matches!(verdict(&forged), SignatureVerdict::Invalid { kind: SignatureKind::Ssh, ref fingerprint, .. } if *fingerprint == trusted_fp)
    );
    assert!(matches!(
        verdict(&forged_pgp),
        SignatureVerdict::Invalid {
            kind: SignatureKind::OpenPgp,
            ..
        }
    ));

    // The refusal names the commit and what to do.
    let err = repo.require_trusted(oid(&unsigned), &ring).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&unsigned) && msg.contains("git commit -S"),
        "{msg}"
    );
    let err = repo
        .require_trusted(oid(&ssh_stranger), &ring)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not trusted"), "{err}");
    assert!(repo.require_trusted(oid(&pgp_good), &ring).is_ok());

    // Without trusted keys nothing is required.
    let none = TrustedKeys::default().load().unwrap();
    assert_eq!(
        repo.verify_commit_signature(oid(&unsigned), &none).unwrap(),
        SignatureVerdict::NotRequired
    );

    // Garbage in the trusted key list is reported with its position.
    let bad = TrustedKeys {
        ssh: vec![trusted_pub.clone(), "ssh-ed25519 notbase64!!".into()],
        openpgp: vec![],
    };
    let err = bad.load().unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::TrustedKey {
                kind: "SSH",
                index: 2,
                ..
            }
        ),
        "{err}"
    );
    let bad = TrustedKeys {
        ssh: vec![],
        openpgp: vec!["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n".into()],
    };
    assert!(matches!(
        bad.load().unwrap_err(),
        RepoError::TrustedKey {
            kind: "OpenPGP",
            index: 1,
            ..
        }
    ));
}

// ---- watching ---------------------------------------------------------

#[tokio::test]
async fn watch_debounces_edits_and_ignores_git_internals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
    std::fs::create_dir_all(dir.path().join("placements")).unwrap();
    let debounce = Duration::from_millis(400);
    let mut w = ferry::repo::watch(dir.path(), debounce).unwrap();

    // Git bookkeeping alone never ticks.
    for i in 0..5 {
        std::fs::write(dir.path().join(format!(".git/objects/o{i}")), "x").unwrap();
    }
    std::fs::write(dir.path().join(".git/index"), "x").unwrap();
    assert!(
        tokio::time::timeout(debounce * 4, w.changed())
            .await
            .is_err(),
        "tick from .git noise"
    );

    // A burst of saves is one tick.
    let started = std::time::Instant::now();
    for i in 0..10 {
        std::fs::write(
            dir.path().join("placements/shop.yaml"),
            format!("rev: {i}\n"),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), w.changed())
        .await
        .expect("no tick after edits")
        .unwrap();
    assert!(
        started.elapsed() >= debounce,
        "tick came before the quiet period"
    );
    assert!(
        tokio::time::timeout(debounce * 3, w.changed())
            .await
            .is_err(),
        "burst produced a second tick"
    );

    // The next save ticks again.
    std::fs::write(dir.path().join("placements/new.yaml"), "a: 1\n").unwrap();
    tokio::time::timeout(Duration::from_secs(10), w.changed())
        .await
        .expect("no tick after new file")
        .unwrap();
}

#[test]
fn large_placement_tree_and_repeated_status_writes() {
    let fx = Fixture::new();
    for team in 0..20 {
        for app in 0..100 {
            fx.write(
                &format!("placements/team-{team}/app-{app}.yaml"),
                format!("namespace: t{team}-a{app}\ncluster: east\n").as_bytes(),
            );
        }
    }
    let base = fx.commit_all("2000 placements");
    fx.push("main");

    let t = std::time::Instant::now();
    let repo = GitRepo::open_or_clone(&source(&fx, "big")).unwrap();
    let clone_time = t.elapsed();
    let t = std::time::Instant::now();
    let files = repo.read_files_at(oid(&base), "placements").unwrap();
    let read_time = t.elapsed();
    assert_eq!(files.len(), 2000);
    assert_eq!(
        files["placements/team-7/app-42.yaml"],
        "namespace: t7-a42\ncluster: east\n"
    );

    for (team, app) in [(3, 3), (9, 50), (19, 99)] {
        fx.write(
            &format!("placements/team-{team}/app-{app}.yaml"),
            b"cluster: west\n",
        );
    }
    let next = fx.commit_all("move three apps");
    fx.push("main");
    let t = std::time::Instant::now();
    let head = repo.fetch().unwrap();
    let fetch_time = t.elapsed();
    let t = std::time::Instant::now();
    let changed = repo.changed_paths(Some(oid(&base)), head).unwrap();
    let diff_time = t.elapsed();
    assert_eq!(head, oid(&next));
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        [
            "placements/team-19/app-99.yaml",
            "placements/team-3/app-3.yaml",
            "placements/team-9/app-50.yaml"
        ]
    );

    let t = std::time::Instant::now();
    for i in 0..20 {
        let mut w = StatusWrite::new("ferry-status", head, format!("status {i}"));
        w.files.push((
            "status/progress.yaml".into(),
            format!("step: {i}\n").into_bytes(),
        ));
        assert_eq!(repo.write_status(&w).unwrap().attempts, 1);
    }
    let status_time = t.elapsed() / 20;
    assert_eq!(fx.git_bare(&["rev-list", "--count", "ferry-status"]), "20");
    assert_eq!(
        fx.git_bare(&["show", "ferry-status:status/progress.yaml"]),
        "step: 19"
    );
    eprintln!(
        "2000 files: clone {clone_time:?}, read_files_at {read_time:?}, fetch {fetch_time:?}, changed_paths {diff_time:?}, status write+push {status_time:?} each"
    );
}
