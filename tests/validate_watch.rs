//! `ferry validate --watch`: the edit-save-see loop on a real working copy.
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;


#[test]
fn every_save_is_validated_again() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    support::copy_dir(&support::example_repo(), &repo);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["validate", repo.to_str().unwrap(), "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} within 20s"),
            }
        }
    };
    wait_for(": ok:");
    let file = repo.join("namespaces/wordpress.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("cluster:", "clustr:")).unwrap();
    let finding = wait_for("namespaces/wordpress.yaml:");
    assert!(finding.contains("clustr"), "{finding}");
    wait_for("FAILED");
    std::fs::write(&file, good).unwrap();
    wait_for(": ok:");
    let _ = child.kill();
    let _ = child.wait();
}
