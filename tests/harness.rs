//! The two-cluster harness behaves like real Kubernetes: workloads from the
//! shared fixtures run on simulated nodes, claims bind to volumes with real
//! directories, StatefulSet start ordinals work, removed API versions are
//! rejected, namespaces really finish deleting, and `dev down` cleans up.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::{eventually, fixture, harness};

const CONTEXTS: [&str; 2] = ["east", "west"];

async fn bound_volume_dir(client: &kube::Client, ns: &str, claim: &str) -> Option<std::path::PathBuf> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs.get_opt(claim).await.ok()??;
    if pvc.status?.phase.as_deref() != Some("Bound") {
        return None;
    }
    let pv_name = pvc.spec?.volume_name?;
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&pv_name).await.ok()?;
    Some(pv.spec?.host_path?.path.into())
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn wordpress_becomes_available_with_volumes_on_disk_on_both_clusters() {
    let h = harness();
    let ns = h.namespace("wordpress", &CONTEXTS);
    for ctx in CONTEXTS {
        h.kubectl_ok(ctx, &["apply", "-n", &ns.name, "-f", fixture("workloads/wordpress").to_str().unwrap()]);
    }
    for ctx in CONTEXTS {
        let client = h.client(ctx).await;
        let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        for name in ["wordpress", "wordpress-mysql"] {
            eventually(&format!("{ctx}: deployment {name} Available"), Duration::from_secs(90), || async {
                let d = deps.get_opt(name).await.ok()??;
                let available = d.status?.conditions?.iter().any(|c| c.type_ == "Available" && c.status == "True");
                available.then_some(())
            })
            .await;
        }
        for claim in ["mysql-pv-claim", "wp-pv-claim"] {
            let dir = eventually(&format!("{ctx}: {claim} Bound"), Duration::from_secs(60), || bound_volume_dir(&client, &ns.name, claim)).await;
            assert!(dir.is_dir(), "{ctx}: volume directory {} of {claim} does not exist", dir.display());
            let volumes_root = h.state.canonicalize().unwrap().join(ctx).join("volumes");
            assert!(dir.starts_with(&volumes_root), "{ctx}: {} is not under {}", dir.display(), volumes_root.display());
            // Real bytes: what is written there is what a pod mounting the volume would see.
            std::fs::write(dir.join("probe"), b"hello").unwrap();
            assert_eq!(std::fs::read(dir.join("probe")).unwrap(), b"hello");
        }
    }
}

#[tokio::test]
async fn web_statefulset_pods_ready_with_claims_from_templates() {
    let h = harness();
    let ns = h.namespace("web-sts", &CONTEXTS);
    for ctx in CONTEXTS {
        h.kubectl_ok(ctx, &["apply", "-n", &ns.name, "-f", fixture("workloads/web-statefulset/web.yaml").to_str().unwrap()]);
    }
    for ctx in CONTEXTS {
        let client = h.client(ctx).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        for pod in ["web-0", "web-1"] {
            eventually(&format!("{ctx}: pod {pod} Ready"), Duration::from_secs(90), || async {
                pods.get_opt(pod).await.ok()?.filter(pod_ready).map(|_| ())
            })
            .await;
        }
        for claim in ["www-web-0", "www-web-1"] {
            let dir = eventually(&format!("{ctx}: {claim} Bound"), Duration::from_secs(60), || bound_volume_dir(&client, &ns.name, claim)).await;
            assert!(dir.is_dir());
        }
    }
}

#[tokio::test]
async fn statefulset_start_ordinal_runs_only_the_upper_ordinals() {
    let h = harness();
    let ns = h.namespace("ordinals", &CONTEXTS);
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "serviceName": "nginx",
            "replicas": 2,
            "ordinals": {"start": 3},
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "registry.k8s.io/nginx-slim:0.7",
                    "volumeMounts": [{"name": "www", "mountPath": "/usr/share/nginx/html"}]}]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))
    .unwrap();
    for ctx in CONTEXTS {
        let client = h.client(ctx).await;
        Api::<StatefulSet>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &sts).await.unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        for pod in ["web-3", "web-4"] {
            eventually(&format!("{ctx}: pod {pod} Ready"), Duration::from_secs(90), || async {
                pods.get_opt(pod).await.ok()?.filter(pod_ready).map(|_| ())
            })
            .await;
        }
        let names: Vec<String> = pods.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|p| p.metadata.name).collect();
        assert_eq!(names.len(), 2, "{ctx}: expected exactly web-3 and web-4, got {names:?}");
        assert!(!names.iter().any(|n| n == "web-0"), "{ctx}: web-0 must not exist, got {names:?}");
        for claim in ["www-web-3", "www-web-4"] {
            eventually(&format!("{ctx}: {claim} Bound"), Duration::from_secs(60), || bound_volume_dir(&client, &ns.name, claim)).await;
        }
    }
}

#[tokio::test]
async fn legacy_batch_v1beta1_cronjob_is_rejected_by_the_api_server() {
    let h = harness();
    let ns = h.namespace("cronjob-legacy", &CONTEXTS);
    let text = std::fs::read_to_string(fixture("workloads/cronjob-legacy/cronjob.yaml")).unwrap();
    let legacy: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(legacy["apiVersion"], "batch/v1beta1");
    for ctx in CONTEXTS {
        let client = h.client(ctx).await;
        // Sent straight to the server, past any client-side discovery check.
        let req = http::Request::post(format!("/apis/batch/v1beta1/namespaces/{}/cronjobs", ns.name))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&legacy).unwrap())
            .unwrap();
        match client.request_text(req).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 404, "{ctx}: expected 404 for batch/v1beta1, got {e:?}"),
            other => panic!("{ctx}: batch/v1beta1 CronJob was not rejected: {other:?}"),
        }
        // kubectl refuses it too, naming the missing version.
        let out = h.kubectl(ctx, &["apply", "-n", &ns.name, "-f", fixture("workloads/cronjob-legacy").to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("batch/v1beta1"), "{}", String::from_utf8_lossy(&out.stderr));
        // The same object at batch/v1 is accepted: the rejection is about the version.
        let mut current = legacy.clone();
        current["apiVersion"] = json!("batch/v1");
        let req = http::Request::post(format!("/apis/batch/v1/namespaces/{}/cronjobs", ns.name))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&current).unwrap())
            .unwrap();
        client.request_text(req).await.unwrap_or_else(|e| panic!("{ctx}: batch/v1 CronJob rejected: {e}"));
    }
}

#[tokio::test]
async fn deleting_a_namespace_finishes_and_releases_its_volumes() {
    let h = harness();
    let ns = h.namespace("ns-delete", &CONTEXTS);
    for ctx in CONTEXTS {
        h.kubectl_ok(ctx, &["apply", "-n", &ns.name, "-f", fixture("workloads/wordpress").to_str().unwrap()]);
    }
    for ctx in CONTEXTS {
        let client = h.client(ctx).await;
        let dir = eventually(&format!("{ctx}: claim Bound"), Duration::from_secs(60), || bound_volume_dir(&client, &ns.name, "mysql-pv-claim")).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        eventually(&format!("{ctx}: pods running"), Duration::from_secs(60), || async {
            let list = pods.list(&Default::default()).await.ok()?;
            (list.items.len() == 2 && list.items.iter().all(pod_ready)).then_some(())
        })
        .await;
        h.kubectl_ok(ctx, &["delete", "namespace", &ns.name, "--wait=false"]);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        eventually(&format!("{ctx}: namespace {} gone", ns.name), Duration::from_secs(120), || async {
            matches!(namespaces.get_opt(&ns.name).await, Ok(None)).then_some(())
        })
        .await;
        // Reclaim policy Delete: the provisioner removes the volume and its directory.
        eventually(&format!("{ctx}: volume directory removed"), Duration::from_secs(60), || async { (!dir.exists()).then_some(()) }).await;
    }
}

#[test]
fn down_stops_everything_even_after_the_pids_were_lost() {
    // A third, one-cluster harness beside the shared one: state dirs keep them apart.
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("solo");
    let state_s = state.to_str().unwrap();
    let _down = DownOnDrop(state.clone());
    let json = support::ferry(&["dev", "up", "--state", state_s, "--clusters", "solo", "--nodes", "1", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["clusters"][0]["name"], "solo");
    assert_eq!(report["clusters"][0]["nodes_ready"], 2, "one kwok node and the real node");
    let server = report["clusters"][0]["server"].as_str().unwrap().to_string();
    let port: u16 = server.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let canonical = state.canonicalize().unwrap();
    let ours = || ferry::dev::process::find_components(&canonical);
    let components: Vec<String> = report["clusters"][0]["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    // etcd, apiserver, controller-manager, scheduler, kwok, provisioner, node agent (+ containerd and kubelet on a real node).
    assert!(components.len() >= 7, "{components:?}");
    assert_eq!(ours().len(), components.len(), "one process per component: {components:?}");

    // Simulate a crash that lost the recorded pids.
    let state_file = state.join("state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    st["clusters"][0]["pids"] = json!({});
    std::fs::write(&state_file, serde_json::to_vec(&st).unwrap()).unwrap();

    support::ferry(&["dev", "down", "--state", state_s]);
    assert!(ours().is_empty(), "processes left after down: {:?}", ours());
    if components.iter().any(|c| c == "kubelet") {
        // A real node leaves nothing on the host: no cgroup root, no bridge, no mounts.
        let slot = st["clusters"][0]["node_ip"].as_str().unwrap().split('.').nth(2).unwrap().to_string();
        assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory/ferry{slot}-solo")).exists(), "cgroup root left after down");
        let links = std::process::Command::new("ip").args(["-br", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.lines().any(|l| l.split_whitespace().next() == Some(&format!("ferry{slot}"))), "bridge ferry{slot} left: {links}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(canonical.to_str().unwrap()), "mounts left under {}", canonical.display());
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "API server port {port} still open");

    let out = std::process::Command::new(support::ferry_bin()).args(["dev", "status", "--state", state_s]).output().unwrap();
    assert!(!out.status.success(), "status must fail when the clusters are down");
    support::ferry(&["dev", "down", "--state", state_s, "--purge"]);
    assert!(!state.exists());
}

/// The README's first command: WordPress with data moves through the placement
/// repository and the agent, and comes back on the second run.
#[test]
fn demo_moves_wordpress_with_its_data_through_git_and_back() {
    // Its own pair of clusters: the demo's `wordpress` namespace and its agent
    // must not meet the other tests' agents on the shared harness.
    let shared = harness();
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("demo-state");
    let state = state_dir.to_str().unwrap();
    let h = support::Harness { state: state_dir.clone(), kubeconfig: state_dir.join("kubeconfig"), bin_dir: shared.bin_dir.clone() };
    let _down = DownOnDrop(state_dir.clone());
    let where_live = |ctx: &str| {
        let out = h.kubectl(ctx, &["get", "namespace", "wordpress", "-o", "json"]);
        out.status.success() && {
            let ns: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            ns["metadata"]["labels"].get("ferry.dev/retained").is_none()
        }
    };
    let remote = h.state.join("demo/placement.git");
    let git_log = || {
        let out = std::process::Command::new("git").arg("--git-dir").arg(&remote).args(["log", "--format=%s%n%(trailers:only)", "ferry-status"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for run in 0..2 {
        let before_live_west = where_live("west");
        let out = support::ferry(&["demo", "--state", state]);
        let to = if before_live_west { "east" } else { "west" };
        assert!(out.contains(&format!("pushed ")) && out.contains(&format!("Move wordpress to {to}")), "run {run}: {out}");
        for stage in ["pre-copy", "quiesce", "volumes", "cutover", "verify", "retire"] {
            assert!(out.contains(&format!("✓ {stage}")), "run {run}: live progress shows {stage}: {out}");
        }
        assert!(out.contains("phase: Succeeded") && out.contains("sourceHash") && out.contains("volumePasses"), "run {run}: status file printed: {out}");
        let proofs = out.lines().filter(|l| l.trim_start().starts_with("mysql-pv-claim") || l.trim_start().starts_with("wp-pv-claim")).filter(|l| l.contains(" equal ")).count();
        assert_eq!(proofs, 2, "run {run}: both volumes proven equal: {out}");
        assert!(!out.contains("DIFFERENT"), "{out}");
        assert!(where_live(to), "run {run}: WordPress runs on {to}");
        assert!(!where_live(if to == "west" { "east" } else { "west" }), "run {run}: one live copy");
        let log = git_log();
        assert!(log.contains(&format!("Succeeded {} → {to}", if to == "west" { "east" } else { "west" })) && log.contains("Ferry-Placement-Commit:"), "{log}");
        assert!(out.contains("Ferry-Migration:"), "status commits with trailers printed: {out}");
        // The agent's metrics count the volume bytes it moved (~90 MiB in the first pre-copy pass).
        let moved: f64 = out.lines().find_map(|l| l.trim().strip_prefix("ferry_moved_bytes_total ")).and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no ferry_moved_bytes_total in {out}"));
        assert!(moved > 90e6, "bytes moved {moved}: {out}");
    }
    support::ferry(&["dev", "down", "--state", state, "--purge"]);
}

/// Stops a test's own harness however the test ends (a failed assertion too):
/// real nodes hold mounts, cgroups and a bridge on the host.
struct DownOnDrop(std::path::PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::process::Command::new(support::ferry_bin()).args(["dev", "down", "--purge", "--state"]).arg(&self.0).output();
        }
    }
}
