//! `ferry migrate` end to end on the two-cluster harness: the shared fixtures
//! move east → west with the migration rules applied, preflight refuses what
//! cannot work without changing anything (volume data: tests/migrate_volumes.rs),
//! a cutover failure rolls back, and a migration
//! killed at any stage boundary completes when re-run.
mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Harness, TestNamespace, eventually, fixture, harness};

fn migrate(h: &Harness, ns: &str, extra: &[&str], fault: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(support::ferry_bin());
    cmd.args(["migrate", ns, "--from", "east", "--to", "west", "--kubeconfig"])
        .arg(&h.kubeconfig)
        .args(["-o", "json"])
        .args(if extra.contains(&"--ready-timeout") { &[][..] } else { &["--ready-timeout", "90s"][..] })
        .args(extra)
        .env("FERRY_LOG_FORMAT", "text");
    match fault {
        Some(f) => cmd.env("FERRY_FAULT", f),
        None => cmd.env_remove("FERRY_FAULT"),
    };
    cmd.output().expect("running ferry migrate")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn get_json(h: &Harness, ctx: &str, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&h.kubectl_ok(ctx, &a)).unwrap()
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn exists(h: &Harness, ctx: &str, args: &[&str]) -> bool {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    h.kubectl(ctx, &a).status.success()
}

/// Fields the `ferry` field manager set on an object (its managedFields entry as text).
fn ferry_fields(obj: &Value) -> String {
    obj["metadata"]["managedFields"].as_array().unwrap().iter()
        .filter(|m| m["manager"] == "ferry")
        .map(|m| m["fieldsV1"].to_string())
        .collect::<Vec<_>>()
        .join("")
}

async fn deployments_ready(h: &Harness, ctx: &str, ns: &str, want: &[(&str, i64)]) {
    for (name, replicas) in want {
        eventually(&format!("{ctx}: deployment {name} at {replicas} ready"), Duration::from_secs(90), || async {
            let d = get_json(h, ctx, &["deployment", name, "-n", ns]);
            (d["spec"]["replicas"] == *replicas && d["status"]["availableReplicas"].as_i64().unwrap_or(0) == *replicas).then_some(())
        })
        .await;
    }
}

fn apply_dir(h: &Harness, ns: &TestNamespace, rel: &str) {
    h.kubectl_ok("east", &["apply", "-n", &ns.name, "-f", fixture(rel).to_str().unwrap()]);
}

const GUESTBOOK: [(&str, i64); 3] = [("frontend", 3), ("redis-master", 1), ("redis-replica", 2)];

async fn guestbook(h: &'static Harness, test: &str) -> TestNamespace {
    let ns = h.namespace(test, &["east"]);
    apply_dir(h, &ns, "workloads/guestbook");
    deployments_ready(h, "east", &ns.name, &GUESTBOOK).await;
    ns
}

async fn assert_guestbook_moved(h: &Harness, ns: &str) {
    deployments_ready(h, "west", ns, &GUESTBOOK).await;
    for (name, replicas) in GUESTBOOK {
        let d = get_json(h, "west", &["deployment", name, "-n", ns]);
        assert_eq!(d["metadata"]["labels"]["ferry.dev/source-cluster"], "east", "provenance on {name}");
        assert!(d["metadata"]["labels"]["ferry.dev/migration"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(d["metadata"]["annotations"]["ferry.dev/placement-commit"].is_string());
        // Source stopped, its original count recorded.
        let s = get_json(h, "east", &["deployment", name, "-n", ns]);
        assert_eq!(s["spec"]["replicas"], 0, "source {name} must be scaled to 0");
        assert_eq!(s["metadata"]["annotations"]["ferry.dev/original-replicas"], replicas.to_string());
    }
    // Exactly one ReplicaSet per Deployment on the destination, made by its own controller.
    let rss = items(&get_json(h, "west", &["replicasets", "-n", ns]));
    assert_eq!(rss.len(), 3, "no copied ReplicaSets: {:?}", rss.iter().map(|r| &r["metadata"]["name"]).collect::<Vec<_>>());
    let dest_uids: Vec<Value> = items(&get_json(h, "west", &["deployments", "-n", ns])).iter().map(|d| d["metadata"]["uid"].clone()).collect();
    for rs in &rss {
        assert!(dest_uids.contains(&rs["metadata"]["ownerReferences"][0]["uid"]), "ReplicaSet owned by a destination Deployment");
    }
    // Services: Ferry never set clusterIP or an auto-assigned nodePort.
    for svc in items(&get_json(h, "west", &["services", "-n", ns])) {
        let f = ferry_fields(&svc);
        assert!(!f.is_empty(), "service applied by ferry");
        assert!(!f.contains("f:clusterIP"), "clusterIP must be stripped: {f}");
        assert!(!f.contains("f:nodePort"), "auto nodePort must be stripped: {f}");
    }
    let nsobj = get_json(h, "east", &["namespace", ns]);
    assert_eq!(nsobj["metadata"]["labels"]["ferry.dev/retained"], "true");
    assert!(nsobj["metadata"]["annotations"]["ferry.dev/retain-until"].is_string());
}

#[tokio::test]
async fn guestbook_migrates_east_to_west() {
    let h = harness();
    let ns = guestbook(h, "mig-guestbook").await;
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let out = migrate(h, &ns.name, &[], None);
    assert!(out.status.success(), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["outcome"], "succeeded");
    let stages: Vec<&str> = journal["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["preflight", "export", "transform", "apply", "pre-copy", "quiesce", "volumes", "cutover", "verify", "retire"]);
    assert!(journal["downtime_ms"].as_u64().is_some());
    // Stage timings are real: cutover waits for pods, so it cannot take 0 ms.
    let cutover = journal["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "cutover").unwrap();
    assert!(cutover["duration_ms"].as_u64().unwrap() > 0, "{cutover}");
    assert!(cutover["started_at"].as_str() < cutover["finished_at"].as_str());
    assert_guestbook_moved(h, &ns.name).await;
    // Running it again is a no-op that reports the same migration.
    let again = migrate(h, &ns.name, &[], None);
    assert!(again.status.success(), "{}", text(&again));
    let j2: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(j2["migration_id"], journal["migration_id"]);
}

#[tokio::test]
async fn missing_storage_class_is_refused_then_mapped() {
    let h = harness();
    let ns = h.namespace("mig-cassandra", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    apply_dir(h, &ns, "workloads/cassandra");
    let before = get_json(h, "east", &["statefulset", "cassandra", "-n", &ns.name]);
    let out = migrate(h, &ns.name, &[], None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("StorageClass \"fast\"") && err.contains("west") && err.contains("storageClassMap"), "{err}");
    // Nothing changed on either side: no destination namespace, source untouched, no journal.
    assert!(!exists(h, "west", &["namespace", &ns.name]));
    let after = get_json(h, "east", &["statefulset", "cassandra", "-n", &ns.name]);
    assert_eq!(after["spec"]["replicas"], before["spec"]["replicas"]);
    assert_eq!(after["metadata"]["generation"], before["metadata"]["generation"]);
    assert!(!exists(h, "east", &["configmap", "ferry-journal", "-n", &ns.name]));

    // Mapped: the claims land in `standard` on west and the data moves with them.
    let out = migrate(h, &ns.name, &["--storage-class-map", "fast=standard"], None);
    assert!(out.status.success(), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["outcome"], "succeeded");
    // Its one claim never bound on east (no provisioner for `fast` there): nothing to copy, the claim moves.
    assert!(journal["verification"].as_array().is_none_or(|v| v.is_empty()), "{journal}");
    let pvc = get_json(h, "west", &["pvc", "cassandra-data-cassandra-0", "-n", &ns.name]);
    assert_eq!(pvc["spec"]["storageClassName"], "standard");
    let _ = h.kubectl("east", &["delete", "storageclass", "fast", "--ignore-not-found"]);
}

#[tokio::test]
async fn special_objects_follow_the_migration_rules() {
    let h = harness();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let tmp = tempfile::tempdir().unwrap();
    let crd_file = tmp.path().join("crd.json");
    std::fs::write(&crd_file, crd.to_string()).unwrap();
    for ctx in ["east", "west"] {
        h.kubectl_ok(ctx, &["apply", "-f", crd_file.to_str().unwrap()]);
        h.kubectl_ok(ctx, &["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=60s"]);
    }
    let ns = h.namespace("mig-special", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let n = &ns.name;
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "done"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external-db"}, "spec": {"ports": [{"port": 5432}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external-db"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "builder-token", "annotations": {"kubernetes.io/service-account.name": "builder"}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "chosen"},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": 31234}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "auto"},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}}
    ]});
    let f = tmp.path().join("objects.json");
    std::fs::write(&f, objects.to_string()).unwrap();
    h.kubectl_ok("east", &["apply", "-n", n, "-f", f.to_str().unwrap()]);
    h.kubectl_ok("east", &["wait", "-n", n, "--for=condition=Complete", "job/done", "--timeout=90s"]);
    let source_token = eventually("token filled", Duration::from_secs(60), || async {
        let s = get_json(h, "east", &["secret", "builder-token", "-n", n]);
        s["data"]["token"].as_str().map(str::to_string)
    })
    .await;

    let out = migrate(h, n, &[], None);
    assert!(out.status.success(), "{}", text(&out));

    // The custom resource arrived.
    let w = get_json(h, "west", &["widgets.example.com", "w1", "-n", n]);
    assert_eq!(w["spec"]["size"], 3);
    // The finished Job was not copied (so not re-run).
    assert!(!exists(h, "west", &["job", "done", "-n", n]), "finished Job must stay behind");
    // Hand-made Endpoints of a selector-less Service kept.
    let ep = get_json(h, "west", &["endpoints", "external-db", "-n", n]);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
    // The token Secret is re-issued for the destination's ServiceAccount.
    let sa = get_json(h, "west", &["serviceaccount", "builder", "-n", n]);
    let dest_token = eventually("destination token filled", Duration::from_secs(60), || async {
        let s = get_json(h, "west", &["secret", "builder-token", "-n", n]);
        let uid_ok = s["metadata"]["annotations"]["kubernetes.io/service-account.uid"] == sa["metadata"]["uid"];
        s["data"]["token"].as_str().filter(|_| uid_ok).map(str::to_string)
    })
    .await;
    assert_ne!(dest_token, source_token, "the source cluster's token must not be copied");
    // The person's nodePort kept; the auto-assigned one not set by Ferry.
    let chosen = get_json(h, "west", &["service", "chosen", "-n", n]);
    assert_eq!(chosen["spec"]["ports"][0]["nodePort"], 31234);
    let auto = get_json(h, "west", &["service", "auto", "-n", n]);
    assert!(!ferry_fields(&auto).contains("f:nodePort"), "{}", ferry_fields(&auto));
    assert!(auto["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    for ctx in ["east", "west"] {
        let _ = h.kubectl(ctx, &["delete", "namespace", n, "--ignore-not-found", "--wait=false"]);
    }
}

#[tokio::test]
async fn cutover_failure_rolls_back() {
    let h = harness();
    let ns = h.namespace("mig-cutover-fail", &["east"]);
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    // Pods that can only be scheduled on east's nodes never become Ready on west.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pinned"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pinned"}},
            "template": {"metadata": {"labels": {"app": "pinned"}},
                "spec": {"nodeSelector": {"topology.kubernetes.io/region": "east"},
                    "containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("d.json");
    std::fs::write(&f, dep.to_string()).unwrap();
    h.kubectl_ok("east", &["apply", "-n", &ns.name, "-f", f.to_str().unwrap()]);
    deployments_ready(h, "east", &ns.name, &[("pinned", 2)]).await;
    let out = migrate(h, &ns.name, &["--ready-timeout", "15s"], None);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["failure"]["stage"], "cutover");
    assert!(journal["failure"]["message"].as_str().unwrap().contains("Deployment/pinned"), "{journal}");
    deployments_ready(h, "east", &ns.name, &[("pinned", 2)]).await;
    let d = get_json(h, "east", &["deployment", "pinned", "-n", &ns.name]);
    assert!(d["metadata"]["annotations"].get("ferry.dev/original-replicas").is_none(), "restore removes the record");
    assert!(!exists(h, "west", &["namespace", &ns.name]), "destination cleaned up");
}

async fn crash_then_resume(point: &str) {
    let h = harness();
    let ns = guestbook(h, &format!("crash-{}", point.replace(':', "-"))).await;
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let crashed = migrate(h, &ns.name, &[], Some(point));
    assert!(!crashed.status.success(), "the fault must kill the run: {}", text(&crashed));
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("FERRY_FAULT: crashing"), "{}", text(&crashed));
    let out = migrate(h, &ns.name, &[], None);
    assert!(out.status.success(), "resume after {point}: {}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["outcome"], "succeeded");
    // One migration: every stage recorded once.
    let stages: Vec<&str> = journal["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["preflight", "export", "transform", "apply", "pre-copy", "quiesce", "volumes", "cutover", "verify", "retire"], "{point}");
    assert_guestbook_moved(h, &ns.name).await;
    // Nothing duplicated: one of each.
    assert_eq!(items(&get_json(h, "west", &["deployments", "-n", &ns.name])).len(), 3);
    assert_eq!(items(&get_json(h, "west", &["services", "-n", &ns.name])).len(), 3);
}

#[tokio::test]
async fn crash_after_preflight_resumes() { crash_then_resume("crash-after:preflight").await }
#[tokio::test]
async fn crash_after_export_resumes() { crash_then_resume("crash-after:export").await }
#[tokio::test]
async fn crash_after_transform_resumes() { crash_then_resume("crash-after:transform").await }
#[tokio::test]
async fn crash_inside_apply_resumes() { crash_then_resume("crash-in-apply:3").await }
#[tokio::test]
async fn crash_after_apply_resumes() { crash_then_resume("crash-after:apply").await }
#[tokio::test]
async fn crash_after_quiesce_resumes() { crash_then_resume("crash-after:quiesce").await }
#[tokio::test]
async fn crash_after_volumes_resumes() { crash_then_resume("crash-after:volumes").await }
#[tokio::test]
async fn crash_after_cutover_resumes() { crash_then_resume("crash-after:cutover").await }
#[tokio::test]
async fn crash_after_verify_resumes() { crash_then_resume("crash-after:verify").await }


#[tokio::test]
async fn placement_repo_supplies_clusters_overlays_and_retention() {
    let h = harness();
    let ns = guestbook(h, "mig-repo").await;
    let _west = TestNamespace::adopt(h, &ns.name, "west");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("placement");
    support::copy_dir(&support::example_repo(), &repo);
    std::fs::write(
        repo.join(format!("namespaces/{}.yaml", ns.name)),
        format!("apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: {}\nspec:\n  cluster: west\n  retention: 1h\n", ns.name),
    )
    .unwrap();
    support::copy_dir(&repo.join("overlays/guestbook"), &repo.join(format!("overlays/{}", ns.name)));
    let kdir = tmp.path().join("kubeconfigs");
    std::fs::create_dir_all(&kdir).unwrap();
    for c in ["east", "west"] {
        std::fs::copy(h.state.join(c).join("admin.kubeconfig"), kdir.join(c)).unwrap();
    }
    let run = |extra: &[&str]| {
        std::process::Command::new(support::ferry_bin())
            .args(["migrate", &ns.name, "--from", "east", "--repo", repo.to_str().unwrap(), "--kubeconfig-dir", kdir.to_str().unwrap(), "-o", "json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let wrong = run(&["--to", "east"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("places"), "{}", text(&wrong));

    let out = run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let journal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(journal["to"], "west");
    // The overlay, rendered with west's variables from the repository.
    let svc = get_json(h, "west", &["service", "frontend", "-n", &ns.name]);
    assert_eq!(svc["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"], "guestbook.west.example.com");
    assert_eq!(svc["metadata"]["labels"]["ferry.dev/source-cluster"], "east");
    // Retention from the placement: about an hour from now.
    let nsobj = get_json(h, "east", &["namespace", &ns.name]);
    let until = nsobj["metadata"]["annotations"]["ferry.dev/retain-until"].as_str().unwrap();
    let until = time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).unwrap();
    let left = until - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::minutes(55) && left <= time::Duration::minutes(60), "{left}");
}

/// A copy of the example placement repo with `extra` as the placement of `ns`, and per-cluster kubeconfigs.
fn repo_with(h: &Harness, ns: &str, placement_spec: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("placement");
    support::copy_dir(&support::example_repo(), &repo);
    std::fs::write(
        repo.join(format!("namespaces/{ns}.yaml")),
        format!("apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: {ns}\nspec:\n{placement_spec}"),
    )
    .unwrap();
    let kdir = tmp.path().join("kubeconfigs");
    std::fs::create_dir_all(&kdir).unwrap();
    for c in ["east", "west"] {
        std::fs::copy(h.state.join(c).join("admin.kubeconfig"), kdir.join(c)).unwrap();
    }
    (tmp, repo, kdir)
}

#[tokio::test]
async fn a_failing_required_hook_rolls_back_an_optional_one_does_not() {
    let h = harness();
    // Simulated (kwok) pods have no container to exec into, so every hook
    // fails for real at the API server: what matters is what Ferry does then.
    for (required, expect_ok) in [("true", false), ("false", true)] {
        let ns = guestbook(h, &format!("mig-hook-{required}")).await;
        let _west = TestNamespace::adopt(h, &ns.name, "west");
        let spec = format!("  cluster: west\n  hooks:\n    beforeQuiesce:\n      - name: flush\n        selector:\n          app: redis\n        command: [redis-cli, save]\n        timeout: 20s\n        required: {required}\n");
        let (_tmp, repo, kdir) = repo_with(h, &ns.name, &spec);
        let out = std::process::Command::new(support::ferry_bin())
            .args(["migrate", &ns.name, "--from", "east", "--repo", repo.to_str().unwrap(), "--kubeconfig-dir", kdir.to_str().unwrap(), "-o", "json", "--ready-timeout", "90s"])
            .output()
            .unwrap();
        let journal: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if expect_ok {
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(journal["outcome"], "succeeded");
        } else {
            assert_eq!(out.status.code(), Some(4), "{}", text(&out));
            assert_eq!(journal["failure"]["stage"], "quiesce");
            let msg = journal["failure"]["message"].as_str().unwrap();
            assert!(msg.contains("beforeQuiesce hook \"flush\"") && msg.contains("redis-cli save") && msg.contains("required: false"), "{msg}");
            deployments_ready(h, "east", &ns.name, &GUESTBOOK).await;
            assert!(!exists(h, "west", &["namespace", &ns.name]));
        }
    }
}
