//! Git over SSH against a real OpenSSH server (Debian's openssh-server)
//! listening on a loopback port, authenticated with a generated deploy key.
//! Install the server with `scripts/install-deps.sh`.
#[path = "support/git_fixture.rs"]
mod fixture;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use ferry::repo::{Auth, GitRepo, HostKeyPolicy, Oid, RepoError, RepoSource, StatusWrite};
use fixture::{Fixture, run};
use sshd::{Sshd, keygen};

fn fixture_with_placements() -> (Fixture, String) {
    let fx = Fixture::new();
    fx.write("placements/shop.yaml", b"namespace: shop\ncluster: west\n");
    let sha = fx.commit_all("Merge pull request #9 from acme/shop\n\nMove shop");
    fx.push("main");
    (fx, sha)
}

#[test]
fn clone_fetch_and_push_over_ssh_with_a_deploy_key() {
    let sshd = Sshd::start();
    let (fx, first) = fixture_with_placements();
    let known_hosts = fx.dir.path().join("known_hosts");
    let source = RepoSource {
        url: sshd.url(&fx.bare),
        branch: "main".into(),
        auth: Auth::SshKey {
            private_key: sshd.deploy_key.clone(),
            passphrase: None,
            host_keys: HostKeyPolicy::AcceptNew(known_hosts.clone()),
        },
        cache_dir: fx.cache("ssh"),
        tls_ca_file: None,
    };
    let started = Instant::now();
    let repo = GitRepo::open_or_clone(&source)
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    eprintln!("ssh clone (handshake + fetch): {:?}", started.elapsed());
    // First contact recorded the server's real host key.
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    let host_pub = sshd.host_public_key();
    let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    assert_eq!(
        recorded.trim(),
        format!("[127.0.0.1]:{} {} {}", sshd.port, host_key[0], host_key[1])
    );

    let head = repo.fetch().unwrap();
    assert_eq!(head, Oid::from_str(&first).unwrap());
    let files = repo.read_files_at(head, "placements").unwrap();
    assert_eq!(
        files["placements/shop.yaml"],
        "namespace: shop\ncluster: west\n"
    );
    assert_eq!(repo.commit_info(head).unwrap().pr_number(), Some(9));

    // New commits arrive with fetch (host key now known: no second append).
    fx.write("placements/shop.yaml", b"namespace: shop\ncluster: east\n");
    let second = fx.commit_all("Move shop back");
    fx.push("main");
    let started = Instant::now();
    let head2 = repo.fetch().unwrap();
    eprintln!("ssh fetch of one new commit: {:?}", started.elapsed());
    assert_eq!(head2, Oid::from_str(&second).unwrap());
    assert_eq!(
        repo.changed_paths(Some(head), head2)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["placements/shop.yaml"]
    );
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), recorded);

    // Push a status commit over ssh and read it back with the git CLI.
    let mut w = StatusWrite::new("ferry-status", head2, "status: shop moved");
    w.files
        .push(("status/shop.yaml".into(), b"phase: Done\n".to_vec()));
    let out = repo.write_status(&w).unwrap();
    assert_eq!(
        fx.git_bare(&["rev-parse", "ferry-status"]),
        out.commit.to_string()
    );
    assert_eq!(
        fx.git_bare(&["show", "ferry-status:status/shop.yaml"]),
        "phase: Done"
    );
    assert!(
        sshd.log().contains("Accepted publickey"),
        "sshd did not authenticate the deploy key:\n{}",
        sshd.log()
    );
}

#[test]
fn unknown_or_changed_host_keys_and_unauthorized_keys_are_refused() {
    let sshd = Sshd::start();
    let (fx, _) = fixture_with_placements();
    let source = |known_hosts: HostKeyPolicy, key: PathBuf, cache: &str| RepoSource {
        url: sshd.url(&fx.bare),
        branch: "main".into(),
        auth: Auth::SshKey {
            private_key: key,
            passphrase: None,
            host_keys: known_hosts,
        },
        cache_dir: fx.cache(cache),
        tls_ca_file: None,
    };

    // Strict policy, host not listed.
    let kh = fx.dir.path().join("kh-empty");
    let err = GitRepo::open_or_clone(&source(
        HostKeyPolicy::KnownHosts(kh.clone()),
        sshd.deploy_key.clone(),
        "a",
    ))
    .unwrap_err();
    assert!(matches!(&err, RepoError::HostKeyUnknown { .. }), "{err}");
    let expected_fp = run(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(sshd.dir.path().join("host_ed25519.pub")));
    let expected_fp = expected_fp.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        err.to_string().contains(&expected_fp),
        "error shows the server's fingerprint: {err}"
    );
    assert!(!kh.exists(), "strict policy must not write known_hosts");

    // A different key recorded for this host: refused even with accept-new.
    let impostor = fx.dir.path().join("impostor");
    keygen(&impostor, "impostor");
    let impostor_pub = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let kh = fx.dir.path().join("kh-wrong");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {}", sshd.port, impostor_pub)).unwrap();
    let err = GitRepo::open_or_clone(&source(
        HostKeyPolicy::AcceptNew(kh),
        sshd.deploy_key.clone(),
        "b",
    ))
    .unwrap_err();
    assert!(matches!(&err, RepoError::HostKeyMismatch { .. }), "{err}");

    // Correct host key, but a deploy key the server does not authorize.
    let kh = fx.dir.path().join("kh-good");
    let host = sshd.host_public_key();
    std::fs::write(
        &kh,
        format!("# ferry test\n[127.0.0.1]:{} {}", sshd.port, host),
    )
    .unwrap();
    let stranger = fx.dir.path().join("stranger");
    keygen(&stranger, "stranger");
    let err = GitRepo::open_or_clone(&source(
        HostKeyPolicy::KnownHosts(kh.clone()),
        stranger,
        "c",
    ))
    .unwrap_err();
    assert!(
        matches!(&err, RepoError::Credential { .. } | RepoError::Fetch { .. }),
        "{err}"
    );
    assert!(
        !err.to_string().contains("BEGIN OPENSSH"),
        "no key material in errors"
    );

    // And the same strict known_hosts with the right key works.
    let repo = GitRepo::open_or_clone(&source(
        HostKeyPolicy::KnownHosts(kh),
        sshd.deploy_key.clone(),
        "d",
    ))
    .unwrap();
    assert_eq!(
        repo.fetch().unwrap().to_string(),
        fx.git_bare(&["rev-parse", "main"])
    );
}

fn ssh_source(sshd: &Sshd, fx: &Fixture, cache: &str) -> RepoSource {
    let known_hosts = fx.dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}", sshd.port, sshd.host_public_key()),
    )
    .unwrap();
    RepoSource {
        url: sshd.url(&fx.bare),
        branch: "main".into(),
        auth: Auth::SshKey {
            private_key: sshd.deploy_key.clone(),
            passphrase: None,
            host_keys: HostKeyPolicy::KnownHosts(known_hosts),
        },
        cache_dir: fx.cache(cache),
        tls_ca_file: None,
    }
}

#[test]
fn concurrent_push_over_ssh_lands_on_top_and_hook_refusal_is_not_retried() {
    let sshd = Sshd::start();
    let (fx, placement) = fixture_with_placements();
    let repo = GitRepo::open_or_clone(&ssh_source(&sshd, &fx, "race")).unwrap();
    let placement = Oid::from_str(&placement).unwrap();

    // Another writer pushes to the placement branch (status shares it)
    // between Ferry's fetch and its push; git-receive-pack is real here.
    let mut w = StatusWrite::new("main", placement, "status: shop copying");
    w.files
        .push(("status/shop.yaml".into(), b"phase: Copying\n".to_vec()));
    let mut other = String::new();
    let out = repo
        .write_status_with(&w, &mut |attempt| {
            if attempt == 1 {
                fx.write("placements/db.yaml", b"namespace: db\n");
                other = fx.commit_all("Add db placement");
                fx.push("main");
            }
        })
        .unwrap();
    assert_eq!(out.attempts, 2);
    let log = fx.git_bare(&["rev-list", "--first-parent", "main"]);
    let log: Vec<&str> = log.lines().collect();
    assert_eq!(
        log,
        [
            out.commit.to_string().as_str(),
            other.as_str(),
            &placement.to_string()
        ]
    );
    assert_eq!(
        fx.git_bare(&["show", "main:placements/db.yaml"]),
        "namespace: db"
    );
    // The new human commit is the placement state to act on, not Ferry's.
    let head = repo.fetch().unwrap();
    assert_eq!(
        repo.latest_placement_commit(head, "status")
            .unwrap()
            .to_string(),
        other
    );

    // A server hook refusing Ferry: the remote did not move, so one attempt.
    let hook = fx.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'status branch is protected' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = fx.git_bare(&["rev-parse", "main"]);
    w.files[0].1 = b"phase: Done\n".to_vec();
    let mut pushes = 0;
    let err = repo
        .write_status_with(&w, &mut |_| pushes += 1)
        .unwrap_err();
    assert_eq!(pushes, 1, "rebuilding cannot help when nobody else pushed");
    assert!(
        matches!(&err, RepoError::PushRejected { attempts: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("hook"), "{err}");
    assert_eq!(
        fx.git_bare(&["rev-parse", "main"]),
        before,
        "remote unchanged"
    );
}
