//! Preflight: everything that must hold before a migration changes anything.
//! Facts are gathered from both clusters ([`gather`]); the verdict is a pure
//! function of them ([`check`]), unit-tested without a cluster.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::cluster::{Cluster, ClusterError, Headroom};
use crate::labels;
use crate::transform::Requirements;

/// One preflight problem.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// Which check: api-versions, namespace, storage-class, priority-class, ingress-class,
    /// runtime-class, crd, node-port, capacity.
    pub check: &'static str,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {} — {}", self.check, self.message, self.hint)
    }
}

/// State of the namespace on the destination.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DestNamespace {
    pub labels: BTreeMap<String, String>,
    pub terminating: bool,
}

/// Everything preflight looks at.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub namespace: String,
    pub dest_cluster: String,
    /// Id of the migration being resumed, if any.
    pub migration_id: Option<String>,
    pub dest_namespace: Option<DestNamespace>,
    pub requirements: Requirements,
    /// apiVersion/kind of objects to apply that the destination does not serve.
    pub unserved: BTreeSet<String>,
    pub dest_storage_classes: BTreeSet<String>,
    pub dest_priority_classes: BTreeSet<String>,
    pub dest_ingress_classes: BTreeSet<String>,
    pub dest_runtime_classes: BTreeSet<String>,
    /// group/kind of custom resources the destination serves.
    pub dest_custom_kinds: BTreeSet<(String, String)>,
    /// nodePort → "namespace/service" using it on the destination.
    pub dest_node_ports: BTreeMap<i64, String>,
    pub headroom: Headroom,
    /// Largest single pod's (cpu millicores, memory bytes).
    pub largest_pod: (i128, i128),
    /// Headroom the cluster definition reserves: (cpu millicores, memory bytes).
    pub reserve: (i128, i128),
    /// Quota and LimitRange problems of the namespace's own objects ([`quota_findings`]).
    pub quota: Vec<Finding>,
}

/// The namespace's own ResourceQuotas and LimitRanges travel with it: check
/// that what it runs fits them, so nothing is refused by admission only at
/// cutover, after the source was stopped.
pub fn quota_findings(namespace: &str, apply: &[Value], req: &Requirements) -> Vec<Finding> {
    use crate::transform::quantity::{bytes, millicores};
    let mut out = Vec::new();
    let q = |v: &Value, millis: bool| v.as_str().and_then(|s| if millis { millicores(s) } else { bytes(s) });
    let claims = apply.iter().filter(|o| o["kind"] == "PersistentVolumeClaim").count() as i128;
    let storage: i128 = req.storage_bytes.values().sum();
    for rq in apply.iter().filter(|o| o["kind"] == "ResourceQuota") {
        let name = rq.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let Some(hard) = rq.pointer("/spec/hard").and_then(Value::as_object) else { continue };
        let checks: [(&str, bool, i128, String); 5] = [
            ("requests.cpu", true, req.cpu_millis, format!("{}m", req.cpu_millis)),
            ("cpu", true, req.cpu_millis, format!("{}m", req.cpu_millis)),
            ("requests.memory", false, req.memory_bytes, gib(req.memory_bytes)),
            ("memory", false, req.memory_bytes, gib(req.memory_bytes)),
            ("persistentvolumeclaims", false, claims, claims.to_string()),
        ];
        let mut all: Vec<(&str, bool, i128, String)> = checks.into_iter().collect();
        all.push(("requests.storage", false, storage, gib(storage)));
        for (key, millis, used, shown) in all {
            let Some(limit) = hard.get(key).and_then(|v| q(v, millis)) else { continue };
            if used > limit {
                out.push(Finding {
                    check: "quota",
                    message: format!("namespace {namespace} needs {key} {shown} but its ResourceQuota {name} allows {}", hard[key].as_str().unwrap_or("?")),
                    hint: "raise the quota (it moves with the namespace) or lower the workloads' requests before moving".into(),
                });
            }
        }
    }
    for lr in apply.iter().filter(|o| o["kind"] == "LimitRange") {
        let name = lr.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        for item in lr.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten().filter(|i| i["type"] == "Container") {
            for o in apply {
                let Some(spec) = o.pointer("/spec/template/spec").or_else(|| (o["kind"] == "Pod").then(|| o.get("spec")).flatten()) else { continue };
                for c in spec.get("containers").and_then(Value::as_array).into_iter().flatten() {
                    for (res, millis) in [("cpu", true), ("memory", false)] {
                        let Some(max) = item.pointer(&format!("/max/{res}")).and_then(|v| q(v, millis)) else { continue };
                        let asked = c.pointer(&format!("/resources/limits/{res}")).or_else(|| c.pointer(&format!("/resources/requests/{res}")));
                        if asked.and_then(|v| q(v, millis)).is_some_and(|a| a > max) {
                            out.push(Finding {
                                check: "limit-range",
                                message: format!(
                                    "container {} of {} {} asks {res} {} above the max {} of LimitRange {name} (namespace {namespace}): it would be refused at cutover",
                                    c["name"].as_str().unwrap_or("?"), o["kind"].as_str().unwrap_or("?"), o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?"),
                                    asked.and_then(Value::as_str).unwrap_or("?"), item.pointer(&format!("/max/{res}")).and_then(Value::as_str).unwrap_or("?")
                                ),
                                hint: "fix the container's resources or the LimitRange before moving".into(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The verdict: every problem, none means go.
pub fn check(f: &Facts) -> Vec<Finding> {
    let mut out = f.quota.clone();
    let dest = &f.dest_cluster;
    for av in &f.unserved {
        out.push(Finding {
            check: "api-versions",
            message: format!("cluster {dest} does not serve {av}"),
            hint: "install the API (CRD or aggregated API) on the destination, or upgrade/convert the objects to a version it serves".into(),
        });
    }
    if let Some(ns) = &f.dest_namespace {
        let ours = f.migration_id.as_deref().is_some_and(|id| ns.labels.get(labels::MIGRATION).map(String::as_str) == Some(id));
        let retained = ns.labels.get(labels::RETAINED).is_some_and(|v| v == "true");
        if ns.terminating {
            out.push(Finding {
                check: "namespace",
                message: format!("namespace {} on {dest} is still terminating", f.namespace),
                hint: "wait until its deletion finishes (kubectl get ns), then retry".into(),
            });
        } else if !ours && !retained {
            out.push(Finding {
                check: "namespace",
                message: format!("namespace {} already exists on {dest} and was not created by Ferry", f.namespace),
                hint: "Ferry never overwrites a namespace it did not create: delete or rename it on the destination, or place the namespace elsewhere".into(),
            });
        }
    }
    let need = |check: &'static str, what: &str, wanted: &BTreeSet<String>, have: &BTreeSet<String>, hint: &str, out: &mut Vec<Finding>| {
        for w in wanted.iter().filter(|w| !w.is_empty() && !have.contains(*w)) {
            out.push(Finding { check, message: format!("{what} {w:?} is used by namespace {} but does not exist on {dest}", f.namespace), hint: hint.to_string() });
        }
    };
    need("storage-class", "StorageClass", &f.requirements.storage_classes, &f.dest_storage_classes,
        &format!("create it on {dest}, or map it in the cluster's storageClassMap (e.g. `fast: standard`)"), &mut out);
    need("priority-class", "PriorityClass", &f.requirements.priority_classes, &f.dest_priority_classes,
        &format!("create the PriorityClass on {dest} first"), &mut out);
    need("ingress-class", "IngressClass", &f.requirements.ingress_classes, &f.dest_ingress_classes,
        &format!("install an ingress controller with that class on {dest}, or patch the Ingresses in an overlay"), &mut out);
    need("runtime-class", "RuntimeClass", &f.requirements.runtime_classes, &f.dest_runtime_classes,
        &format!("create the RuntimeClass on {dest}"), &mut out);
    for gk in &f.requirements.custom_resources {
        if !f.dest_custom_kinds.contains(&(gk.group.clone(), gk.kind.clone())) {
            out.push(Finding {
                check: "crd",
                message: format!("custom resources of kind {}.{} exist in {} but {dest} has no such CRD", gk.kind, gk.group, f.namespace),
                hint: format!("install the CRD (and its operator) on {dest} first"),
            });
        }
    }
    for np in &f.requirements.node_ports {
        if let Some(user) = f.dest_node_ports.get(&np.node_port) {
            out.push(Finding {
                check: "node-port",
                message: format!("nodePort {} of Service {} is already used by {user} on {dest}", np.node_port, np.service),
                hint: "free the port on the destination, or let Kubernetes choose one by removing it in an overlay".into(),
            });
        }
    }
    let h = &f.headroom;
    let (cpu_free, mem_free) = (h.cpu_millis - f.reserve.0, h.memory_bytes - f.reserve.1);
    if f.requirements.memory_bytes > mem_free {
        out.push(Finding {
            check: "capacity",
            message: format!(
                "namespace {} requests {} of memory but {dest}'s {} Ready nodes have {} free{}",
                f.namespace, gib(f.requirements.memory_bytes), h.ready_nodes, gib(mem_free.max(0)),
                if f.reserve.1 > 0 { format!(" after the reserved {}", gib(f.reserve.1)) } else { String::new() }
            ),
            hint: format!("add nodes or free memory on {dest}, or choose another cluster"),
        });
    }
    if f.requirements.cpu_millis > cpu_free {
        out.push(Finding {
            check: "capacity",
            message: format!("namespace {} requests {}m CPU but {dest} has {}m free on {} Ready nodes", f.namespace, f.requirements.cpu_millis, cpu_free.max(0), h.ready_nodes),
            hint: format!("add nodes or free CPU on {dest}, or choose another cluster"),
        });
    }
    if f.largest_pod.1 > h.largest_node_memory_bytes || f.largest_pod.0 > h.largest_node_cpu_millis {
        out.push(Finding {
            check: "capacity",
            message: format!(
                "the largest pod of {} ({}m CPU, {}) fits on no single Ready node of {dest} (most free: {}m, {})",
                f.namespace, f.largest_pod.0, gib(f.largest_pod.1), h.largest_node_cpu_millis, gib(h.largest_node_memory_bytes)
            ),
            hint: format!("add a larger node to {dest}"),
        });
    }
    out
}

fn gib(b: i128) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Collect the facts from the destination for the transformed objects.
pub async fn gather(
    dest: &Cluster,
    namespace: &str,
    migration_id: Option<&str>,
    apply: &[Value],
    requirements: &Requirements,
    reserve: (i128, i128),
) -> Result<Facts, ClusterError> {
    let mut f = Facts {
        namespace: namespace.to_string(),
        dest_cluster: dest.name.clone(),
        migration_id: migration_id.map(str::to_string),
        requirements: requirements.clone(),
        reserve,
        quota: quota_findings(namespace, apply, requirements),
        ..Default::default()
    };
    for o in apply {
        let av = o.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !dest.serves(av, kind) {
            f.unserved.insert(format!("{av}/{kind}"));
        }
        if let Some(spec) = o.pointer("/spec/template/spec").or_else(|| o.pointer("/spec/jobTemplate/spec/template/spec")).or_else(|| (kind == "Pod").then(|| o.get("spec")).flatten()) {
            let (c, m) = crate::transform::requirements::pod_requests(spec);
            f.largest_pod = (f.largest_pod.0.max(c), f.largest_pod.1.max(m));
        }
    }
    if let Some(ns) = dest.namespace(namespace).await? {
        let labels = ns.pointer("/metadata/labels").and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        let terminating = ns.pointer("/metadata/deletionTimestamp").is_some();
        f.dest_namespace = Some(DestNamespace { labels, terminating });
    }
    f.dest_storage_classes = dest.names_of("storage.k8s.io/v1", "StorageClass").await?.into_iter().collect();
    f.dest_priority_classes = dest.names_of("scheduling.k8s.io/v1", "PriorityClass").await?.into_iter().collect();
    f.dest_ingress_classes = dest.names_of("networking.k8s.io/v1", "IngressClass").await?.into_iter().collect();
    f.dest_runtime_classes = dest.names_of("node.k8s.io/v1", "RuntimeClass").await?.into_iter().collect();
    for crd in dest.list("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, None).await? {
        let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or_default().to_string();
        f.dest_custom_kinds.insert((group, kind));
    }
    for svc in dest.list("v1", "Service", None, None).await? {
        let owner = format!(
            "{}/{}",
            svc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
            svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
        );
        // The namespace being resumed may already hold our own copy of the Service.
        if svc.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace) {
            continue;
        }
        for p in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                f.dest_node_ports.insert(np, owner.clone());
            }
        }
    }
    f.headroom = dest.headroom().await?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roomy() -> Facts {
        Facts {
            namespace: "shop".into(),
            dest_cluster: "west".into(),
            headroom: Headroom { ready_nodes: 2, cpu_millis: 8000, memory_bytes: 32 << 30, largest_node_cpu_millis: 4000, largest_node_memory_bytes: 16 << 30 },
            dest_storage_classes: ["standard".to_string()].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_fitting_namespace_passes() {
        assert_eq!(check(&roomy()), vec![]);
    }

    #[test]
    fn missing_storage_class_is_named() {
        let mut f = roomy();
        f.requirements.storage_classes.insert("fast".into());
        let found = check(&f);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].check, "storage-class");
        assert!(found[0].message.contains("\"fast\"") && found[0].message.contains("west"), "{}", found[0]);
        assert!(found[0].hint.contains("storageClassMap"));
    }

    #[test]
    fn not_enough_memory_is_refused() {
        let mut f = roomy();
        f.requirements.memory_bytes = 40 << 30;
        let found = check(&f);
        assert!(found.iter().any(|x| x.check == "capacity" && x.message.contains("40.00 GiB")), "{found:?}");
    }

    #[test]
    fn reserved_headroom_counts() {
        let mut f = roomy();
        f.requirements.memory_bytes = 30 << 30;
        assert!(check(&f).is_empty());
        f.reserve = (0, 4 << 30);
        assert!(check(&f).iter().any(|x| x.check == "capacity" && x.message.contains("reserved")));
    }

    #[test]
    fn foreign_namespace_on_destination_is_refused_but_ours_is_not() {
        let mut f = roomy();
        f.dest_namespace = Some(DestNamespace::default());
        assert_eq!(check(&f)[0].check, "namespace");
        f.migration_id = Some("m1".into());
        f.dest_namespace = Some(DestNamespace { labels: [(labels::MIGRATION.to_string(), "m1".to_string())].into(), terminating: false });
        assert!(check(&f).is_empty());
        f.dest_namespace = Some(DestNamespace { labels: [(labels::RETAINED.to_string(), "true".to_string())].into(), terminating: false });
        assert!(check(&f).is_empty(), "a source Ferry retained earlier may be replaced");
        f.dest_namespace.as_mut().unwrap().terminating = true;
        assert!(check(&f)[0].message.contains("terminating"));
    }

    #[test]
    fn unserved_versions_and_missing_crds_and_taken_node_ports() {
        let mut f = roomy();
        f.unserved.insert("batch/v1beta1/CronJob".into());
        f.requirements.custom_resources.insert(crate::transform::requirements::GroupKind { group: "example.com".into(), kind: "Widget".into() });
        f.requirements.node_ports.push(crate::transform::requirements::NodePortUse { node_port: 30080, protocol: "TCP".into(), service: "frontend".into() });
        f.dest_node_ports.insert(30080, "other/web".into());
        let checks: Vec<_> = check(&f).into_iter().map(|x| x.check).collect();
        assert_eq!(checks, vec!["api-versions", "crd", "node-port"]);
    }

    #[test]
    fn quotas_and_limit_ranges_of_the_namespace_are_respected() {
        use serde_json::json;
        let apply = vec![
            json!({"kind": "ResourceQuota", "metadata": {"name": "rq"}, "spec": {"hard": {"requests.memory": "1Gi", "persistentvolumeclaims": "1"}}}),
            json!({"kind": "LimitRange", "metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container", "max": {"cpu": "500m"}}]}}),
            json!({"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [
                {"name": "c", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "2"}}}]}}}}),
            json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "a"}}),
            json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "b"}}),
        ];
        let req = Requirements { memory_bytes: 2 << 30, ..Default::default() };
        let found = quota_findings("shop", &apply, &req);
        let checks: Vec<_> = found.iter().map(|f| f.check).collect();
        assert_eq!(checks, vec!["quota", "quota", "limit-range"], "{found:#?}");
        assert!(found[0].message.contains("requests.memory") && found[0].message.contains("allows 1Gi"));
        assert!(found[1].message.contains("persistentvolumeclaims 2"));
        assert!(found[2].message.contains("cpu 2 above the max 500m"));
        let fine = Requirements { memory_bytes: 1 << 29, ..Default::default() };
        assert_eq!(quota_findings("shop", &apply[..2], &fine), vec![]);
    }

    #[test]
    fn a_pod_larger_than_any_node_is_refused() {
        let mut f = roomy();
        f.largest_pod = (500, 20 << 30);
        assert!(check(&f).iter().any(|x| x.message.contains("fits on no single Ready node")));
    }
}
