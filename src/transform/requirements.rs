//! What the destination must offer before a namespace can move there: the
//! cluster-scoped things its objects name, the node ports they pin, and the
//! compute and storage they request. Preflight compares this with the cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::cutover::{recorded_replicas, recorded_suspend};
use super::error::TransformError;
use super::object::{ObjectRef, annotation};
use super::quantity::Quantity;
use super::select::finished_condition;

/// Storage bytes key for claims that name no class (the destination's default applies).
pub const NO_CLASS: &str = "";

/// A kind served by a CustomResourceDefinition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupKind {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
}

/// A node port a Service pins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePortUse {
    /// The port on every node.
    pub node_port: i64,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The Service.
    pub service: String,
}

/// Everything a namespace needs from its destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// StorageClasses named by claims and claim templates.
    pub storage_classes: BTreeSet<String>,
    /// PriorityClasses named by pods and pod templates.
    pub priority_classes: BTreeSet<String>,
    /// IngressClasses named by Ingresses.
    pub ingress_classes: BTreeSet<String>,
    /// RuntimeClasses named by pods and pod templates.
    pub runtime_classes: BTreeSet<String>,
    /// Kinds whose CRDs must exist.
    pub custom_resources: BTreeSet<GroupKind>,
    /// Node ports that must be free.
    pub node_ports: Vec<NodePortUse>,
    /// CPU requested by all pods that will run, in millicores.
    pub cpu_millis: i128,
    /// Memory requested by all pods that will run, in bytes.
    pub memory_bytes: i128,
    /// Storage requested, in bytes, by class ([`NO_CLASS`] for claims naming none).
    pub storage_bytes: BTreeMap<String, i128>,
}

/// Groups served by the Kubernetes API server itself.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Computes the requirements of a set of objects, either as exported or as
/// transformed (replica counts recorded by quiesce count, not the 0 in `spec`).
pub fn requirements(objects: &[Value]) -> Result<Requirements, TransformError> {
    let mut req = Requirements::default();
    let refs = objects
        .iter()
        .enumerate()
        .map(|(i, o)| ObjectRef::of(o, i))
        .collect::<Result<Vec<_>, _>>()?;
    let claim_names: BTreeSet<&str> = refs
        .iter()
        .filter(|r| r.is("", "PersistentVolumeClaim"))
        .map(|r| r.name.as_str())
        .collect();
    for (r, o) in refs.iter().zip(objects) {
        let group = r.group();
        if !BUILTIN_GROUPS.contains(&group) {
            req.custom_resources.insert(GroupKind {
                group: group.to_owned(),
                kind: r.kind.clone(),
            });
        }
        match (group, r.kind.as_str()) {
            ("", "PersistentVolumeClaim") => add_claim(&mut req, r, o, "spec", 1)?,
            ("", "Service") => {
                for p in o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(node_port) = p.get("nodePort").and_then(Value::as_i64) {
                        let protocol = p
                            .get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
                            .to_owned();
                        req.node_ports.push(NodePortUse {
                            node_port,
                            protocol,
                            service: r.name.clone(),
                        });
                    }
                }
            }
            ("networking.k8s.io", "Ingress") => {
                let class = o.pointer("/spec/ingressClassName").and_then(Value::as_str);
                let class = class.or_else(|| annotation(o, "kubernetes.io/ingress.class"));
                req.ingress_classes.extend(class.map(str::to_owned));
            }
            ("", "Pod") => {
                let done = matches!(
                    o.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                add_pod(&mut req, r, o, "spec", if done { 0 } else { 1 })?;
            }
            ("apps", "Deployment" | "ReplicaSet") => {
                let n = recorded_replicas(r, o)?.unwrap_or_else(|| replicas(o));
                add_pod(&mut req, r, o, "spec.template.spec", n)?;
            }
            ("apps", "StatefulSet") => {
                let n = recorded_replicas(r, o)?.unwrap_or_else(|| replicas(o));
                add_pod(&mut req, r, o, "spec.template.spec", n)?;
                add_claim_templates(&mut req, r, o, n, &claim_names)?;
            }
            ("apps", "DaemonSet") => add_pod(&mut req, r, o, "spec.template.spec", 0)?,
            ("batch", "Job") => {
                let suspended = recorded_suspend(r, o)?.unwrap_or_else(|| {
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                });
                let n = if suspended || finished_condition(o).is_some() {
                    0
                } else {
                    job_parallel_pods(o)
                };
                add_pod(&mut req, r, o, "spec.template.spec", n)?;
            }
            ("batch", "CronJob") => {
                add_pod(&mut req, r, o, "spec.jobTemplate.spec.template.spec", 0)?
            }
            _ => {}
        }
    }
    req.node_ports.sort();
    Ok(req)
}

fn replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// Pods a Job runs at once: its parallelism, capped by the completions still missing.
fn job_parallel_pods(o: &Value) -> i64 {
    let parallelism = o
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => {
            let succeeded = o
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            parallelism.min((c - succeeded).max(0))
        }
        None => parallelism,
    }
}

fn pointer_of(dotted: &str) -> String {
    format!("/{}", dotted.replace('.', "/"))
}

fn quantity(r: &ObjectRef, v: &Value, field: String, millis: bool) -> Result<i128, TransformError> {
    let err = |source| TransformError::InvalidQuantity {
        object: Box::new(r.clone()),
        field: field.clone(),
        value: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        source,
    };
    let q = Quantity::from_json(v).map_err(err)?;
    if millis { q.millis() } else { q.value() }.map_err(err)
}

fn add_claim(
    req: &mut Requirements,
    r: &ObjectRef,
    o: &Value,
    at: &str,
    count: i64,
) -> Result<(), TransformError> {
    let spec = o.pointer(&pointer_of(at));
    let class = annotation(o, "volume.beta.kubernetes.io/storage-class")
        .or_else(|| {
            spec.and_then(|s| s.get("storageClassName"))
                .and_then(Value::as_str)
        })
        .unwrap_or(NO_CLASS);
    if !class.is_empty() {
        req.storage_classes.insert(class.to_owned());
    }
    if let Some(v) = spec.and_then(|s| s.pointer("/resources/requests/storage")) {
        let bytes = quantity(r, v, format!("{at}.resources.requests.storage"), false)?;
        *req.storage_bytes.entry(class.to_owned()).or_default() += bytes * i128::from(count);
    }
    Ok(())
}

/// Claim templates: the class is needed anyway; bytes only for claims not exported
/// yet (ordinals whose `<template>-<sts>-<ordinal>` claim does not exist).
fn add_claim_templates(
    req: &mut Requirements,
    r: &ObjectRef,
    o: &Value,
    replicas: i64,
    claims: &BTreeSet<&str>,
) -> Result<(), TransformError> {
    let start = o
        .pointer("/spec/ordinals/start")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    for (i, t) in o
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let tmpl = t
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let missing = (start..start + replicas)
            .filter(|ord| !claims.contains(format!("{tmpl}-{}-{ord}", r.name).as_str()))
            .count();
        let missing = i64::try_from(missing).unwrap_or(i64::MAX);
        // Wrap the template so add_claim reads it like a claim.
        let as_claim = serde_json::json!({"metadata": t.get("metadata"), "spec": t.get("spec")});
        let mut sub = Requirements::default();
        add_claim(&mut sub, r, &as_claim, "spec", missing).map_err(|e| match e {
            TransformError::InvalidQuantity {
                object,
                value,
                source,
                ..
            } => TransformError::InvalidQuantity {
                object,
                field: format!("spec.volumeClaimTemplates[{i}].spec.resources.requests.storage"),
                value,
                source,
            },
            other => other,
        })?;
        req.storage_classes.extend(sub.storage_classes);
        for (class, bytes) in sub.storage_bytes {
            *req.storage_bytes.entry(class).or_default() += bytes;
        }
    }
    Ok(())
}

/// Adds a pod spec's class references and `count` times its effective requests.
fn add_pod(
    req: &mut Requirements,
    r: &ObjectRef,
    o: &Value,
    at: &str,
    count: i64,
) -> Result<(), TransformError> {
    let Some(spec) = o.pointer(&pointer_of(at)) else {
        return Ok(());
    };
    req.priority_classes.extend(
        spec.get("priorityClassName")
            .and_then(Value::as_str)
            .map(str::to_owned),
    );
    req.runtime_classes.extend(
        spec.get("runtimeClassName")
            .and_then(Value::as_str)
            .map(str::to_owned),
    );
    if count > 0 {
        req.cpu_millis += effective_request(r, spec, at, "cpu", true)? * i128::from(count);
        req.memory_bytes += effective_request(r, spec, at, "memory", false)? * i128::from(count);
    }
    Ok(())
}

/// What the scheduler reserves for one pod: the larger of the running containers
/// (with sidecars) and the busiest init step, plus overhead; pod-level requests
/// replace the container sum when set. A container with a limit but no request
/// requests its limit (API defaulting does that when the pod is created).
pub fn effective_request(
    r: &ObjectRef,
    spec: &Value,
    at: &str,
    res: &str,
    millis: bool,
) -> Result<i128, TransformError> {
    let container = |c: &Value, list: &str, i: usize| -> Result<i128, TransformError> {
        for kind in ["requests", "limits"] {
            if let Some(v) = c
                .get("resources")
                .and_then(|x| x.get(kind))
                .and_then(|x| x.get(res))
            {
                return quantity(
                    r,
                    v,
                    format!("{at}.{list}[{i}].resources.{kind}.{res}"),
                    millis,
                );
            }
        }
        Ok(0)
    };
    let list = |name: &str| {
        spec.get(name)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let mut sidecars = 0;
    let mut init_peak = 0;
    for (i, c) in list("initContainers").iter().enumerate() {
        let v = container(c, "initContainers", i)?;
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sidecars += v;
        } else {
            init_peak = init_peak.max(v + sidecars);
        }
    }
    let mut running = sidecars;
    for (i, c) in list("containers").iter().enumerate() {
        running += container(c, "containers", i)?;
    }
    let pod_level = spec.pointer(&format!("/resources/requests/{res}"));
    let base = match pod_level {
        Some(v) => quantity(r, v, format!("{at}.resources.requests.{res}"), millis)?,
        None => running.max(init_peak),
    };
    let overhead = match spec.pointer(&format!("/overhead/{res}")) {
        Some(v) => quantity(r, v, format!("{at}.overhead.{res}"), millis)?,
        None => 0,
    };
    Ok(base + overhead)
}

/// (cpu millicores, memory bytes) one pod with `spec` reserves; quantities
/// that do not parse count as 0 (the API server validated them already).
pub fn pod_requests(spec: &Value) -> (i128, i128) {
    let r = ObjectRef { api_version: "v1".into(), kind: "Pod".into(), namespace: None, name: String::new() };
    (
        effective_request(&r, spec, "spec", "cpu", true).unwrap_or(0),
        effective_request(&r, spec, "spec", "memory", false).unwrap_or(0),
    )
}
