//! The Kubernetes edge: every call Ferry makes to a cluster goes through
//! [`Cluster`]. Objects cross this boundary as `serde_json::Value` so that the
//! pure modules (transforms, planner) never see a client.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub mod observe;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use serde_json::{Value, json};

/// Field manager of every server-side apply Ferry does.
pub const FIELD_MANAGER: &str = "ferry";

/// Errors at the Kubernetes edge, naming the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster {cluster}: cannot connect ({source:#}); check the kubeconfig context and that the API server is reachable")]
    Connect { cluster: String, #[source] source: anyhow::Error },
    #[error("cluster {cluster}: API discovery failed: {source}")]
    Discovery { cluster: String, #[source] source: kube::Error },
    #[error("cluster {cluster}: the API server does not serve {api_version}/{kind}")]
    NotServed { cluster: String, api_version: String, kind: String },
    #[error("cluster {cluster}: {action} {what}: {source}")]
    Api { cluster: String, action: &'static str, what: String, #[source] source: kube::Error },
}

/// A connected member cluster with its API discovery.
#[derive(Clone)]
pub struct Cluster {
    pub name: String,
    pub client: kube::Client,
    discovery: std::sync::Arc<Discovery>,
}

pub use crate::transform::ObjectRef;

/// The identity of a JSON object as the API server returned it (missing fields
/// become empty strings; use [`ObjectRef::of`] to validate untrusted input).
pub fn obj_ref(obj: &Value) -> ObjectRef {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_string);
    ObjectRef {
        api_version: s("/apiVersion").unwrap_or_default(),
        kind: s("/kind").unwrap_or_default(),
        namespace: s("/metadata/namespace"),
        name: s("/metadata/name").unwrap_or_default(),
    }
}

fn gvk_of(r: &ObjectRef) -> GroupVersionKind {
    let (group, version) = match r.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), r.api_version.clone()),
    };
    GroupVersionKind { group, version, kind: r.kind.clone() }
}

impl Cluster {
    /// Connect to `context` of the kubeconfig at `kubeconfig` and run API discovery.
    pub async fn connect(name: &str, kubeconfig: &Path, context: &str) -> Result<Cluster, ClusterError> {
        let client = crate::kubeconfig::client_for(kubeconfig, context)
            .await
            .map_err(|source| ClusterError::Connect { cluster: name.to_string(), source })?;
        Self::from_client(name, client).await
    }

    /// Wrap a client and run API discovery (bounded in time: an unreachable server fails fast).
    pub async fn from_client(name: &str, client: kube::Client) -> Result<Cluster, ClusterError> {
        let run = Discovery::new(client.clone()).run();
        let discovery = match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(r) => r.map_err(|source| ClusterError::Discovery { cluster: name.to_string(), source })?,
            Err(_) => {
                return Err(ClusterError::Connect { cluster: name.to_string(), source: anyhow::anyhow!("API discovery timed out after 30s") });
            }
        };
        Ok(Cluster { name: name.to_string(), client, discovery: std::sync::Arc::new(discovery) })
    }

    fn api_err(&self, action: &'static str, what: impl ToString, source: kube::Error) -> ClusterError {
        ClusterError::Api { cluster: self.name.clone(), action, what: what.to_string(), source }
    }

    /// Namespaced resource types the server serves, each once at its group's preferred version.
    pub fn namespaced_resources(&self) -> Vec<(ApiResource, ApiCapabilities)> {
        let mut out = Vec::new();
        for group in self.discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.scope == Scope::Namespaced && caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::CREATE) {
                    out.push((ar, caps));
                }
            }
        }
        out
    }

    /// Whether the server serves `apiVersion`/`kind`.
    pub fn serves(&self, api_version: &str, kind: &str) -> bool {
        self.resolve(api_version, kind).is_ok()
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Result<(ApiResource, ApiCapabilities), ClusterError> {
        let r = ObjectRef { api_version: api_version.to_string(), kind: kind.to_string(), namespace: None, name: String::new() };
        self.discovery.resolve_gvk(&gvk_of(&r)).ok_or_else(|| ClusterError::NotServed {
            cluster: self.name.clone(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })
    }

    fn api_for(&self, r: &ObjectRef) -> Result<Api<DynamicObject>, ClusterError> {
        let (ar, caps) = self.resolve(&r.api_version, &r.kind)?;
        Ok(match (caps.scope, &r.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        })
    }

    /// Every object of every namespaced resource type in `namespace`, as JSON with
    /// apiVersion and kind set. Types the server refuses to list (403/404/405/503,
    /// e.g. an aggregated API that is down) are reported, not fatal.
    pub async fn export_namespace(&self, namespace: &str) -> Result<(Vec<Value>, Vec<String>), ClusterError> {
        let mut objects = Vec::new();
        let mut skipped = Vec::new();
        for (ar, _caps) in self.namespaced_resources() {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    for item in list.items {
                        let mut v = serde_json::to_value(&item).expect("DynamicObject serializes");
                        v["apiVersion"] = json!(ar.api_version);
                        v["kind"] = json!(ar.kind);
                        objects.push(v);
                    }
                }
                Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404 | 405 | 503) => {
                    skipped.push(format!("{}/{}: {} ({})", ar.api_version, ar.kind, e.message, e.code));
                }
                Err(e) => return Err(self.api_err("listing", format!("{}/{} in {namespace}", ar.api_version, ar.kind), e)),
            }
        }
        Ok((objects, skipped))
    }

    /// Get one object, None if absent.
    pub async fn get(&self, r: &ObjectRef) -> Result<Option<Value>, ClusterError> {
        let api = self.api_for(r)?;
        match api.get_opt(&r.name).await {
            Ok(o) => Ok(o.map(|o| serde_json::to_value(o).expect("serializes"))),
            Err(e) => Err(self.api_err("reading", r, e)),
        }
    }

    /// List objects of a type (in a namespace, or cluster-wide with None).
    pub async fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>, label_selector: Option<&str>) -> Result<Vec<Value>, ClusterError> {
        let r = ObjectRef { api_version: api_version.into(), kind: kind.into(), namespace: namespace.map(str::to_string), name: String::new() };
        let api = self.api_for(&r)?;
        let mut lp = ListParams::default();
        if let Some(sel) = label_selector {
            lp = lp.labels(sel);
        }
        let list = api.list(&lp).await.map_err(|e| self.api_err("listing", format!("{api_version}/{kind}"), e))?;
        Ok(list.items.into_iter().map(|o| {
            let mut v = serde_json::to_value(o).expect("serializes");
            v["apiVersion"] = json!(api_version);
            v["kind"] = json!(kind);
            v
        }).collect())
    }

    /// Server-side apply `obj` with field manager `ferry`, taking ownership of conflicting fields.
    pub async fn apply(&self, obj: &Value) -> Result<Value, ClusterError> {
        let r = obj_ref(obj);
        let api = self.api_for(&r)?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&r.name, &pp, &Patch::Apply(obj)).await {
            Ok(o) => Ok(serde_json::to_value(o).expect("serializes")),
            Err(e) => Err(self.api_err("applying", &r, e)),
        }
    }

    /// Create `obj`; Ok(false) if it already exists.
    pub async fn create(&self, obj: &Value) -> Result<bool, ClusterError> {
        let r = obj_ref(obj);
        let api = self.api_for(&r)?;
        let dynobj: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| self.api_err("encoding", &r, kube::Error::SerdeError(e)))?;
        match api.create(&PostParams::default(), &dynobj).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.api_err("creating", &r, e)),
        }
    }

    /// JSON merge patch.
    pub async fn merge_patch(&self, r: &ObjectRef, patch: &Value) -> Result<Value, ClusterError> {
        let api = self.api_for(r)?;
        match api.patch(&r.name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(o) => Ok(serde_json::to_value(o).expect("serializes")),
            Err(e) => Err(self.api_err("patching", r, e)),
        }
    }

    /// Delete an object (foreground propagation); absent is fine.
    pub async fn delete(&self, r: &ObjectRef) -> Result<(), ClusterError> {
        let api = self.api_for(r)?;
        match api.delete(&r.name, &DeleteParams::foreground()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(self.api_err("deleting", r, e)),
        }
    }

    /// A namespace object, None if absent.
    pub async fn namespace(&self, name: &str) -> Result<Option<Value>, ClusterError> {
        self.get(&ObjectRef { api_version: "v1".into(), kind: "Namespace".into(), namespace: None, name: name.into() }).await
    }

    /// Names of the cluster-scoped objects of a kind (StorageClasses, PriorityClasses, CRDs…).
    pub async fn names_of(&self, api_version: &str, kind: &str) -> Result<Vec<String>, ClusterError> {
        if !self.serves(api_version, kind) {
            return Ok(Vec::new());
        }
        Ok(self.list(api_version, kind, None, None).await?
            .iter()
            .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// CPU (millicores) and memory (bytes) still free on Ready, schedulable nodes:
    /// allocatable minus the requests of pods that are not finished.
    pub async fn headroom(&self) -> Result<Headroom, ClusterError> {
        let nodes = self.list("v1", "Node", None, None).await?;
        let mut free: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for n in &nodes {
            let ready = n.pointer("/status/conditions").and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            let unschedulable = n.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
            // Tainted nodes (dedicated mover nodes, control planes…) take only pods that
            // tolerate them: leave them out, so the check errs on the safe side.
            let tainted = n.pointer("/spec/taints").and_then(Value::as_array)
                .is_some_and(|ts| ts.iter().any(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute"))));
            if !ready || unschedulable || tainted {
                continue;
            }
            let cpu = n.pointer("/status/allocatable/cpu").and_then(Value::as_str).and_then(crate::transform::quantity::millicores).unwrap_or(0);
            let mem = n.pointer("/status/allocatable/memory").and_then(Value::as_str).and_then(crate::transform::quantity::bytes).unwrap_or(0);
            free.insert(n["metadata"]["name"].as_str().unwrap_or_default().to_string(), (cpu, mem));
        }
        let pods = self.list("v1", "Pod", None, None).await?;
        for p in &pods {
            let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) else { continue };
            let Some(slot) = free.get_mut(node) else { continue };
            let (cpu, mem) = crate::transform::requirements::pod_requests(p.get("spec").unwrap_or(&Value::Null));
            slot.0 -= cpu;
            slot.1 -= mem;
        }
        Ok(Headroom {
            ready_nodes: free.len(),
            cpu_millis: free.values().map(|v| v.0.max(0)).sum(),
            memory_bytes: free.values().map(|v| v.1.max(0)).sum(),
            largest_node_cpu_millis: free.values().map(|v| v.0.max(0)).max().unwrap_or(0),
            largest_node_memory_bytes: free.values().map(|v| v.1.max(0)).max().unwrap_or(0),
        })
    }
}

/// Free capacity of a cluster's Ready nodes.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Headroom {
    pub ready_nodes: usize,
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub largest_node_cpu_millis: i128,
    pub largest_node_memory_bytes: i128,
}

impl Cluster {
    /// Run `command` in `container` (None = the pod's first) of a pod; Ok(output) when it
    /// exits 0, Err with the exit status and output otherwise.
    pub async fn exec(&self, namespace: &str, pod: &str, container: Option<&str>, command: &[String], timeout: Duration) -> Result<String, String> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::AttachParams;
        use tokio::io::AsyncReadExt;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut ap = AttachParams::default().stdout(true).stderr(true).stdin(false);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        let run = async {
            let mut proc = api.exec(pod, command.to_vec(), &ap).await.map_err(|e| format!("cannot exec in pod {namespace}/{pod} on {}: {e}", self.name))?;
            let mut out = String::new();
            if let Some(mut so) = proc.stdout() {
                let _ = so.read_to_string(&mut out).await;
            }
            if let Some(mut se) = proc.stderr() {
                let _ = se.read_to_string(&mut out).await;
            }
            let status = match proc.take_status() {
                Some(s) => s.await,
                None => None,
            };
            match status {
                Some(s) if s.status.as_deref() == Some("Success") => Ok(out),
                Some(s) => Err(format!("exited with {}: {}", s.message.unwrap_or_default(), out.trim())),
                None => Err(format!("no exit status from pod {namespace}/{pod}: {}", out.trim())),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
        }
    }
}
