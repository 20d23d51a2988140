//! `ferry plan` against the live two-cluster harness and a real Git
//! repository: the example placement repo, plus a PR that moves a namespace.
mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::{TestNamespace, fixture, harness};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").arg("-C").arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}


fn placement(ns: &str, cluster: &str) -> String {
    format!("apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: {ns}\nspec:\n  cluster: {cluster}\n")
}

fn plan(args: &[&str]) -> Value {
    let out = Command::new(support::ferry_bin()).arg("plan").args(args).args(["-o", "json"]).output().unwrap();
    assert!(out.status.success(), "plan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn step<'a>(p: &'a Value, ns: &str) -> Option<&'a Value> {
    p["steps"].as_array().unwrap().iter().find(|s| s["namespace"] == ns)
}

#[test]
fn plan_reads_commits_and_live_clusters() {
    let h = harness();
    let ns = h.namespace("plan", &["east"]);
    let _w = TestNamespace::adopt(h, &ns.name, "west");
    h.kubectl_ok("east", &["apply", "-n", &ns.name, "-f", fixture("workloads/guestbook").to_str().unwrap()]);

    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("placement");
    support::copy_dir(&support::example_repo(), &repo);
    std::fs::write(repo.join(format!("namespaces/{}.yaml", ns.name)), placement(&ns.name, "east")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "placements"]);
    std::fs::write(repo.join(format!("namespaces/{}.yaml", ns.name)), placement(&ns.name, "west")).unwrap();
    git(&repo, &["commit", "-q", "-am", "move it west"]);

    // One kubeconfig per cluster, as the agent mounts them.
    let kdir = tmp.path().join("kubeconfigs");
    std::fs::create_dir_all(&kdir).unwrap();
    for c in ["east", "west"] {
        std::fs::copy(h.state.join(c).join("admin.kubeconfig"), kdir.join(c)).unwrap();
    }
    let (repo_s, kdir_s) = (repo.to_str().unwrap(), kdir.to_str().unwrap());

    // The PR's plan: only the namespace it moves.
    let p = plan(&["--repo", repo_s, "--rev", "HEAD", "--base", "HEAD~1", "--kubeconfig-dir", kdir_s]);
    let steps = p["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{p:#}");
    let s = &steps[0];
    assert_eq!(s["namespace"], ns.name.as_str());
    assert_eq!(s["action"], "migrate");
    assert_eq!((s["from"].as_str(), s["to"].as_str()), (Some("east"), Some("west")));
    assert!(s["objects"].as_u64().unwrap() >= 6, "3 Deployments + 3 Services: {s}");

    // The base commit: already where it should be.
    let p = plan(&["--repo", repo_s, "--rev", "HEAD~1", "--kubeconfig-dir", kdir_s]);
    assert_eq!(step(&p, &ns.name).unwrap()["action"], "nothing");
    // Placements whose namespace exists nowhere are reported, not invented.
    assert_eq!(step(&p, "wordpress").map(|s| s["action"].clone()), Some(Value::from("absent-everywhere")));

    // West unreachable: wait and say why.
    let west = std::fs::read_to_string(kdir.join("west")).unwrap();
    let port = west.split("https://127.0.0.1:").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().to_string();
    std::fs::write(kdir.join("west"), west.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:9")).unwrap();
    let p = plan(&["--repo", repo_s, "--kubeconfig-dir", kdir_s]);
    let s = step(&p, &ns.name).unwrap();
    assert_eq!(s["action"], "wait-unreachable", "{s}");
    assert!(s["errors"][0].as_str().unwrap().contains("west"), "{s}");
}
