//! Preflight refuses to move a namespace to a cluster without the memory for
//! it (the very failure that makes teams move namespaces), and changes nothing.
//! Its own test binary: the ballast it puts on `west` must not disturb other
//! migrations, and test binaries run one after another.
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestNamespace, eventually, harness};

#[tokio::test]
async fn destination_without_memory_is_refused_and_nothing_changes() {
    let h = harness();
    let nodes: Value = serde_json::from_str(&h.kubectl_ok("west", &["get", "nodes", "-l", "type=kwok", "-o", "json"])).unwrap();
    let nodes = nodes["items"].as_array().unwrap().clone();
    let per_node = ferry::transform::quantity::bytes(nodes[0]["status"]["allocatable"]["memory"].as_str().unwrap()).unwrap();

    // Ballast on west: one pod per node taking all but 1 GiB of its memory.
    let ballast = h.namespace("ballast", &["west"]);
    let ballast_mem = format!("{}Mi", (per_node - (1 << 30)) >> 20);
    let dep = |name: &str, replicas: usize, mem: &str| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "10m", "memory": mem}}}]}}}});
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("ballast.json");
    std::fs::write(&f, dep("ballast", nodes.len(), &ballast_mem).to_string()).unwrap();
    h.kubectl_ok("west", &["apply", "-n", &ballast.name, "-f", f.to_str().unwrap()]);
    h.kubectl_ok("west", &["rollout", "status", "-n", &ballast.name, "deployment/ballast", "--timeout=90s"]);

    // The namespace to move needs 2 × 1.5 GiB: fits east easily, not west's leftovers.
    let ns = h.namespace("mig-capacity", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let f = tmp.path().join("app.json");
    std::fs::write(&f, dep("app", 2, "1536Mi").to_string()).unwrap();
    h.kubectl_ok("east", &["apply", "-n", &ns.name, "-f", f.to_str().unwrap()]);
    h.kubectl_ok("east", &["rollout", "status", "-n", &ns.name, "deployment/app", "--timeout=90s"]);
    let before: Value = serde_json::from_str(&h.kubectl_ok("east", &["get", "deployment", "app", "-n", &ns.name, "-o", "json"])).unwrap();

    let out = std::process::Command::new(support::ferry_bin())
        .args(["migrate", &ns.name, "--from", "east", "--to", "west", "--kubeconfig"])
        .arg(&h.kubeconfig)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("[capacity]") && err.contains("3.00 GiB of memory") && err.contains("west"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");

    assert!(!h.kubectl("west", &["get", "namespace", &ns.name]).status.success(), "no destination namespace");
    let after: Value = serde_json::from_str(&h.kubectl_ok("east", &["get", "deployment", "app", "-n", &ns.name, "-o", "json"])).unwrap();
    assert_eq!(after["metadata"]["generation"], before["metadata"]["generation"], "source untouched");
    assert_eq!(after["spec"]["replicas"], 2);
    assert!(!h.kubectl("east", &["get", "configmap", "ferry-journal", "-n", &ns.name]).status.success(), "no journal written");

    // With the ballast gone the same move passes preflight and completes.
    h.kubectl_ok("west", &["delete", "namespace", &ballast.name, "--wait=true", "--timeout=120s"]);
    eventually("west memory freed", Duration::from_secs(60), || async {
        let out = std::process::Command::new(support::ferry_bin())
            .args(["migrate", &ns.name, "--from", "east", "--to", "west", "--kubeconfig"])
            .arg(&h.kubeconfig)
            .output()
            .unwrap();
        out.status.success().then_some(())
    })
    .await;
}
