//! Reaching the clusters a placement repository names, and observing where
//! namespaces are, for the planner. Observation is cheap on purpose (a handful
//! of cluster-wide lists per cluster, not a per-namespace export), so a
//! no-change sync of a large repository stays fast.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Cluster, ClusterError};
use crate::model::Desired;
use crate::plan::{Observed, ObservedCluster, ObservedNamespace};

/// Where cluster credentials come from.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// One kubeconfig with a context per cluster (`access.kubeconfigContext`).
    pub kubeconfig: Option<PathBuf>,
    /// A directory with one kubeconfig file per cluster, named after it (how
    /// the agent mounts the Secrets named by `access.kubeconfigSecret`).
    pub kubeconfig_dir: Option<PathBuf>,
}

/// Connect to one cluster of the repository.
pub async fn connect(desired: &Desired, name: &str, creds: &Credentials) -> Result<Cluster, ClusterError> {
    let err = |m: String| ClusterError::Connect { cluster: name.to_string(), source: anyhow::anyhow!(m) };
    if let Some(dir) = &creds.kubeconfig_dir {
        let file = dir.join(name);
        if file.is_file() {
            let ctx = current_context(&file).map_err(|e| err(e.to_string()))?;
            return Cluster::connect(name, &file, &ctx).await;
        }
    }
    let cluster = desired.clusters.get(name).ok_or_else(|| err(format!("cluster {name} is not defined in the placement repository")))?;
    let context = cluster.spec.access.value.kubeconfig_context.clone().unwrap_or_else(|| name.to_string());
    let path = crate::kubeconfig::resolve_path(creds.kubeconfig.as_deref())
        .ok_or_else(|| err("no kubeconfig: pass --kubeconfig or set KUBECONFIG".into()))?;
    Cluster::connect(name, &path, &context).await
}

fn current_context(file: &Path) -> anyhow::Result<String> {
    let kc = kube::config::Kubeconfig::read_from(file)?;
    kc.current_context.or_else(|| kc.contexts.first().map(|c| c.name.clone()))
        .ok_or_else(|| anyhow::anyhow!("{} has no context", file.display()))
}

/// Connect to every cluster of the repository (unreachable ones are errors in the map).
pub async fn connect_all(desired: &Desired, creds: &Credentials) -> BTreeMap<String, Result<Cluster, ClusterError>> {
    let futs = desired.clusters.keys().map(|name| async move {
        let r = tokio::time::timeout(Duration::from_secs(40), connect(desired, name, creds)).await
            .unwrap_or_else(|_| Err(ClusterError::Connect { cluster: name.clone(), source: anyhow::anyhow!("timed out after 40s") }));
        (name.clone(), r)
    });
    futures::future::join_all(futs).await.into_iter().collect()
}

/// Kinds counted as "objects" in the observation (what a migration mostly copies).
const COUNTED: &[(&str, &str)] = &[
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "CronJob"),
    ("v1", "PersistentVolumeClaim"),
];

/// Observe one cluster's namespaces.
pub async fn observe_cluster(cluster: &Cluster) -> Result<Vec<ObservedNamespace>, ClusterError> {
    let mut by_ns: BTreeMap<String, ObservedNamespace> = BTreeMap::new();
    for ns in cluster.list("v1", "Namespace", None, None).await? {
        let name = ns.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let labels = ns.pointer("/metadata/labels").and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default();
        by_ns.insert(name.clone(), ObservedNamespace { name, labels, ..Default::default() });
    }
    for (av, kind) in COUNTED {
        for o in cluster.list(av, kind, None, None).await? {
            let Some(ns) = o.pointer("/metadata/namespace").and_then(Value::as_str).and_then(|n| by_ns.get_mut(n)) else { continue };
            let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            // What the destination makes by itself is not counted.
            if (*kind == "ConfigMap" && name == "kube-root-ca.crt") || (*kind == "ServiceAccount" && name == "default") {
                continue;
            }
            ns.objects += 1;
            if *kind == "PersistentVolumeClaim" {
                ns.pvcs += 1;
                let req = o.pointer("/spec/resources/requests/storage").and_then(Value::as_str).and_then(crate::transform::quantity::bytes);
                ns.storage_bytes += req.unwrap_or(0).max(0) as u64;
            }
        }
    }
    for p in cluster.list("v1", "Pod", None, None).await? {
        let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let Some(ns) = p.pointer("/metadata/namespace").and_then(Value::as_str).and_then(|n| by_ns.get_mut(n)) else { continue };
        let (c, m) = crate::transform::requirements::pod_requests(p.get("spec").unwrap_or(&Value::Null));
        ns.cpu_millis += c.max(0) as u64;
        ns.memory_bytes += m.max(0) as u64;
    }
    Ok(by_ns.into_values().collect())
}

/// Observe every cluster of the repository; unreachable clusters are recorded as such.
pub async fn observe(clusters: &BTreeMap<String, Result<Cluster, ClusterError>>) -> Observed {
    let futs = clusters.iter().map(|(name, c)| async move {
        let oc = match c {
            Ok(cluster) => match observe_cluster(cluster).await {
                Ok(nss) => ObservedCluster::reachable(nss),
                Err(e) => ObservedCluster::unreachable(e.to_string()),
            },
            Err(e) => ObservedCluster::unreachable(e.to_string()),
        };
        (name.clone(), oc)
    });
    Observed { clusters: futures::future::join_all(futs).await.into_iter().collect() }
}
