//! Moving persistent-volume data: mover pods on both clusters, passes, proof.
//!
//! Per migration Ferry mints a CA with a receiver and a sender certificate
//! ([`crate::mover::certs`]) and hands them to the mover pods in two Secrets
//! (`ferry-mover-receiver` on the destination, `ferry-mover-sender` on the
//! source), deleted with the pods when the data is in place. For every bound
//! claim of the namespace:
//! - the destination runs a receiver pod that mounts the new claim (created by
//!   the apply stage) and serves passes (`ferry mover receive --serve`), reached
//!   through a Service of the type the destination's cluster definition chooses
//!   (`spec.mover.serviceType`: ClusterIP across a flat network, NodePort or
//!   LoadBalancer; `spec.mover.address` overrides the host);
//! - each pass is a sender pod on the source that mounts the source claim
//!   **read-only** and runs `ferry mover send`; its JSON report comes back as
//!   the pod's termination message.
//!
//! Strategies: `stop-copy-start` does one pass after quiesce. `pre-copy` does
//! passes while the application runs (stage `pre-copy`) until the delta is
//! small, then quiesce and one final pass. Every pass is journaled (bytes,
//! files, duration); the final pass must end with equal tree hashes on both
//! sides, or the stage fails and the migration rolls back — before cutover.
//!
//! Where the mover pods run is decided by [`placement`] (pure): the PV's node
//! affinity is honoured, an attachable ReadWriteOnce volume in use is read on
//! the node that has it attached, and clusters with dedicated mover nodes
//! (labelled `ferry.dev/mover=true`) get the pods there.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Migration;
use super::journal::Stored;
use crate::cluster::{Cluster, ObjectRef, obj_ref};
use crate::labels;
use crate::mover::certs;
use crate::mover::stats::Report;

/// Label telling which side a mover pod serves.
const ROLE: &str = "ferry.dev/mover-role";
/// Label with a short hash of the claim a mover pod serves (claim names can exceed label limits).
const VOLUME: &str = "ferry.dev/mover-volume";
/// Annotation with the full claim name.
const CLAIM: &str = "ferry.dev/claim";
/// Port of the receiver.
pub const PORT: u16 = 7443;
const RECEIVER_SECRET: &str = "ferry-mover-receiver";
/// The S3 transport's credentials, in both namespaces while the migration runs.
const S3_SECRET: &str = "ferry-mover-s3";
const SENDER_SECRET: &str = "ferry-mover-sender";
/// Pre-copy stops when a pass sent at most this much…
pub const PRECOPY_SMALL_BYTES: u64 = 64 * 1024 * 1024;
/// …or after this many passes.
pub const PRECOPY_MAX_PASSES: usize = 5;

/// How the destination's receiver is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ServiceType {
    #[default]
    #[value(name = "ClusterIP", alias = "cluster-ip")]
    ClusterIP,
    #[value(name = "NodePort", alias = "node-port")]
    NodePort,
    #[value(name = "LoadBalancer", alias = "load-balancer")]
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Mover settings of a migration (from the destination's cluster definition or CLI flags).
#[derive(Clone, Debug)]
pub struct MoverSettings {
    /// Ferry's image, run by the mover pods.
    pub image: String,
    /// Service type of the receiver on the destination.
    pub service_type: ServiceType,
    /// Host the source's sender dials instead of the one the Service reports.
    pub address: Option<String>,
    /// Longest a sender pod may run.
    pub pass_timeout: Duration,
    /// Move the data through this S3 bucket instead of a direct connection.
    pub s3: Option<crate::model::S3MoverSpec>,
}

impl Default for MoverSettings {
    fn default() -> Self {
        MoverSettings {
            image: format!("{}:{}", crate::dev::node::FERRY_IMAGE_REPOSITORY, env!("CARGO_PKG_VERSION")),
            service_type: ServiceType::ClusterIP,
            address: None,
            pass_timeout: Duration::from_secs(6 * 3600),
            s3: None,
        }
    }
}

pub use crate::model::status::VolumePass as PassRecord;

impl PassRecord {
    fn from_report(pvc: &str, pass: u32, phase: &str, r: &Report) -> PassRecord {
        PassRecord {
            pvc: pvc.to_string(),
            pass,
            phase: phase.to_string(),
            files_total: r.files_total,
            files_sent: r.files_sent,
            files_deleted: r.entries_deleted,
            bytes: r.file_bytes_sent,
            wire_bytes: r.wire_bytes_sent,
            duration_ms: r.duration_ms,
            unstable_files: r.unstable_files,
            source_hash: r.sender_tree_hash.clone(),
            destination_hash: r.receiver_tree_hash.clone(),
            receiver: r.destination.clone(),
            run_as_user: None,
        }
    }
}

/// Whether another pre-copy pass is worth it after `done` passes, the last being `last`.
pub fn precopy_again(last: &PassRecord, done: usize, budget: Option<Duration>) -> bool {
    if done >= PRECOPY_MAX_PASSES {
        return false;
    }
    let big = last.bytes > PRECOPY_SMALL_BYTES;
    let slow = budget.is_some_and(|b| Duration::from_millis(last.duration_ms) > b);
    big || slow || last.pass == 1 && last.files_sent > 0 && last.unstable_files > 0
}

/// Where a mover pod runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub node_name: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub node_affinity: Option<Value>,
}

/// Why a volume cannot be read now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Busy(pub String);

/// Volume plugins whose volumes are attached to one node at a time.
const ATTACHABLE: &[&str] = &["csi", "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "cinder", "rbd", "iscsi", "fc", "vsphereVolume", "portworxVolume"];

fn access_modes(o: &Value, at: &str) -> Vec<String> {
    o.pointer(at).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default()
}

/// Where to mount a claim (pure). `users` are the running pods that mount it;
/// `mover_nodes` says the cluster has nodes labelled `ferry.dev/mover=true`.
pub fn placement(pv: Option<&Value>, pvc: &Value, users: &[Value], mover_nodes: bool) -> Result<Placement, Busy> {
    let claim = pvc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut modes = access_modes(pvc, "/spec/accessModes");
    if let Some(pv) = pv {
        modes.extend(access_modes(pv, "/spec/accessModes"));
    }
    let in_use: Vec<&str> = users.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
    if modes.iter().any(|m| m == "ReadWriteOncePod") && !users.is_empty() {
        return Err(Busy(format!("claim {claim} is ReadWriteOncePod and mounted by a running pod; it is copied after quiesce")));
    }
    if let Some(required) = pv.and_then(|pv| pv.pointer("/spec/nodeAffinity/required")) {
        return Ok(Placement { node_affinity: Some(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}})), ..Default::default() });
    }
    let attachable = pv.and_then(|pv| pv.get("spec")).and_then(Value::as_object).is_some_and(|s| ATTACHABLE.iter().any(|k| s.contains_key(*k)));
    let shared = modes.iter().any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
    if attachable && !shared {
        if let Some(node) = in_use.first() {
            return Ok(Placement { node_name: Some(node.to_string()), ..Default::default() });
        }
    }
    let mut p = Placement::default();
    if mover_nodes {
        p.node_selector.insert(crate::dev::node::MOVER_NODE_LABEL.into(), "true".into());
    }
    Ok(p)
}

fn volume_key(claim: &str) -> String {
    blake3::hash(claim.as_bytes()).to_hex()[..10].to_string()
}

/// Labels every mover object of a migration carries.
fn mover_labels(id: &str, role: &str, claim: &str) -> Value {
    json!({labels::COMPONENT: "mover", labels::MIGRATION: id, ROLE: role, VOLUME: volume_key(claim)})
}

/// Pod and container security contexts of mover pods. The receiver runs as
/// root: only root keeps every owner and writes into a fresh, root-owned volume.
/// The sender runs as the application's own non-root user when every container
/// mounting the claim runs as that one user ([`mover_user`]) — it only reads —
/// and falls back to root when that user cannot read the data. Everything else
/// is taken away: as root all capabilities but the five file ones, as non-root
/// all of them; no privilege escalation, a read-only root filesystem, and the
/// sender mounts the source read-only.
fn security(user: Option<(i64, i64)>) -> (Value, Value) {
    match user {
        Some((uid, gid)) => (
            json!({"runAsNonRoot": true, "runAsUser": uid, "runAsGroup": gid}),
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "privileged": false, "capabilities": {"drop": ["ALL"]}}),
        ),
        None => (
            json!({"runAsUser": 0, "runAsGroup": 0}),
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "privileged": false,
                   "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID"]}}),
        ),
    }
}

/// The uid/gid a sender may run as (pure): the one non-root user every container
/// mounting the claim runs as (gid: runAsGroup, else fsGroup, else the uid), or
/// `None` (root) when users differ, one is root or privileged, or none is known.
pub fn mover_user(users: &[Value]) -> Option<(i64, i64)> {
    let mut found: Option<(i64, i64)> = None;
    for p in users {
        let psc = p.pointer("/spec/securityContext");
        for c in p.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
            let csc = c.get("securityContext");
            let pick = |k: &str| csc.and_then(|s| s.get(k)).and_then(Value::as_i64).or_else(|| psc.and_then(|s| s.get(k)).and_then(Value::as_i64));
            let uid = pick("runAsUser")?;
            let gid = pick("runAsGroup").or_else(|| psc.and_then(|s| s.get("fsGroup")).and_then(Value::as_i64)).unwrap_or(uid);
            if uid == 0 || csc.and_then(|s| s.get("privileged")) == Some(&Value::Bool(true)) {
                return None;
            }
            match found {
                None => found = Some((uid, gid)),
                Some(f) if f == (uid, gid) => {}
                Some(_) => return None,
            }
        }
    }
    found
}

fn place(pod: &mut Value, p: &Placement) {
    let spec = &mut pod["spec"];
    if let Some(n) = &p.node_name {
        spec["nodeName"] = json!(n);
    }
    if !p.node_selector.is_empty() {
        spec["nodeSelector"] = json!(p.node_selector);
    }
    if let Some(a) = &p.node_affinity {
        spec["affinity"] = a.clone();
    }
}

/// A mover pod (pure): the parts receiver and sender share.
#[allow(clippy::too_many_arguments)]
fn mover_pod(ns: &str, id: &str, claim: &str, role: &str, name: String, p: &Placement, container: Value, volumes: Value, restart: &str, user: Option<(i64, i64)>) -> Value {
    let (psc, csc) = security(user);
    let mut container = container;
    container["securityContext"] = csc;
    container["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": mover_labels(id, role, claim), "annotations": {CLAIM: claim}},
        "spec": {
            "restartPolicy": restart,
            // The mover stops on SIGTERM at once; a pass cut short resumes.
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": psc,
            "tolerations": [{"key": crate::dev::node::MOVER_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [container],
            "volumes": volumes,
        },
    });
    place(&mut pod, p);
    pod
}

/// The receiver pod for `claim` (pure).
pub fn receiver_pod(ns: &str, id: &str, claim: &str, image: &str, p: &Placement) -> Value {
    let container = json!({
        "name": "receiver",
        "image": image,
        "command": ["ferry", "mover", "receive", "--listen", format!("$(POD_IP):{PORT}"), "--dir", "/data", "--certs", "/tls", "--state", "/state", "--serve", "-o", "json"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "mover", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tls", "mountPath": "/tls", "readOnly": true},
            {"name": "state", "mountPath": "/state"},
        ],
    });
    let volumes = json!([
        {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
        {"name": "tls", "secret": {"secretName": RECEIVER_SECRET, "defaultMode": 0o400}},
        {"name": "state", "emptyDir": {}},
    ]);
    mover_pod(ns, id, claim, "receiver", format!("ferry-recv-{}", volume_key(claim)), p, container, volumes, "Always", None)
}

/// The sender pod of pass `pass` for `claim` (pure): mounts the claim read-only,
/// runs as `user` (non-root) or root.
#[allow(clippy::too_many_arguments)]
pub fn sender_pod(ns: &str, id: &str, claim: &str, pass: u32, to: &str, image: &str, p: &Placement, user: Option<(i64, i64)>) -> Value {
    let container = json!({
        "name": "sender",
        "image": image,
        "command": ["ferry", "mover", "send", "--to", to, "--dir", "/data", "--certs", "/tls", "-o", "json", "--report-file", "/dev/termination-log"],
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data", "readOnly": true},
            {"name": "tls", "mountPath": "/tls", "readOnly": true},
        ],
    });
    let volumes = json!([
        {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}},
        // Without fsGroup (it would re-own the source volume) a non-root user reads the key only if all may.
        {"name": "tls", "secret": {"secretName": SENDER_SECRET, "defaultMode": if user.is_some() { 0o444 } else { 0o400 }}},
    ]);
    mover_pod(ns, id, claim, "sender", format!("ferry-send-{}-{pass}", volume_key(claim)), p, container, volumes, "Never", user)
}

/// Check an S3 transport setting (pure).
pub fn check_s3(s3: &crate::model::S3MoverSpec) -> Result<(), String> {
    if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://")) {
        return Err(format!("endpoint {:?} must start with http:// or https://", s3.endpoint));
    }
    match s3.bucket.strip_prefix("s3://").map(|r| r.split('/').next().unwrap_or_default()) {
        Some(b) if !b.is_empty() => Ok(()),
        _ => Err(format!("bucket {:?} must look like s3://BUCKET[/PREFIX]", s3.bucket)),
    }
}

/// Where one claim's passes of one migration live in the bucket (pure).
pub fn s3_location(s3: &crate::model::S3MoverSpec, ns: &str, id: &str, claim: &str) -> String {
    format!("{}/{ns}/{id}/{claim}", s3.bucket.trim_end_matches('/'))
}

fn s3_flags(s3: &crate::model::S3MoverSpec, location: &str) -> Vec<Value> {
    let mut v = vec![json!("--bucket"), json!(location), json!("--endpoint"), json!(s3.endpoint)];
    if let Some(r) = &s3.region {
        v.extend([json!("--region"), json!(r)]);
    }
    v
}

fn s3_env() -> Value {
    let key = |name: &str, optional: bool| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": name, "optional": optional}}});
    json!([key("AWS_ACCESS_KEY_ID", false), key("AWS_SECRET_ACCESS_KEY", false), key("AWS_SESSION_TOKEN", true)])
}

/// The S3 transport's sender of pass `pass` (pure): pushes the claim, mounted
/// read-only, into the bucket as content-addressed chunks plus a manifest.
#[allow(clippy::too_many_arguments)]
pub fn s3_push_pod(ns: &str, id: &str, claim: &str, pass: u32, location: &str, s3: &crate::model::S3MoverSpec, image: &str, p: &Placement, user: Option<(i64, i64)>) -> Value {
    let mut command = vec![json!("ferry"), json!("mover"), json!("s3-push"), json!("--dir"), json!("/data"), json!("--create-bucket")];
    command.extend(s3_flags(s3, location));
    command.extend(["-o", "json", "--report-file", "/dev/termination-log"].map(|x| json!(x)));
    let container = json!({
        "name": "sender",
        "image": image,
        "command": command,
        "env": s3_env(),
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
    });
    let volumes = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}]);
    mover_pod(ns, id, claim, "sender", format!("ferry-send-{}-{pass}", volume_key(claim)), p, container, volumes, "Never", user)
}

/// The S3 transport's receiver of pass `pass` (pure): pulls that pass into the
/// destination claim and fails unless its tree hash is the sender's.
#[allow(clippy::too_many_arguments)]
pub fn s3_pull_pod(ns: &str, id: &str, claim: &str, pass: u32, location: &str, s3: &crate::model::S3MoverSpec, manifest: &str, sender_hash: &str, image: &str, p: &Placement) -> Value {
    let mut command = vec![json!("ferry"), json!("mover"), json!("s3-pull"), json!("--dir"), json!("/data")];
    command.extend(s3_flags(s3, location));
    command.extend(["--pass", manifest, "--expect-tree-hash", sender_hash, "-o", "json", "--report-file", "/dev/termination-log"].map(|x| json!(x)));
    let container = json!({
        "name": "receiver",
        "image": image,
        "command": command,
        "env": s3_env(),
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    });
    let volumes = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    mover_pod(ns, id, claim, "receiver", format!("ferry-pull-{}-{pass}", volume_key(claim)), p, container, volumes, "Never", None)
}

/// The Service in front of a receiver (pure).
pub fn receiver_service(ns: &str, id: &str, claim: &str, t: ServiceType) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("ferry-recv-{}", volume_key(claim)), "namespace": ns, "labels": mover_labels(id, "receiver", claim), "annotations": {CLAIM: claim}},
        "spec": {
            "type": t.as_str(),
            "selector": {labels::MIGRATION: id, ROLE: "receiver", VOLUME: volume_key(claim)},
            "ports": [{"name": "mover", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    })
}

fn secret(ns: &str, id: &str, name: &str, files: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = files.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns, "labels": {labels::COMPONENT: "mover", labels::MIGRATION: id}},
        "stringData": data,
    })
}

/// Bound claims of the namespace on the source, by name.
async fn source_claims(m: &Migration<'_>) -> anyhow::Result<Vec<Value>> {
    let ns = &m.spec.namespace;
    Ok(m.source.list("v1", "PersistentVolumeClaim", Some(ns), None).await?.into_iter()
        .filter(|c| c.pointer("/status/phase").and_then(Value::as_str) == Some("Bound"))
        .filter(|c| c.pointer("/metadata/deletionTimestamp").is_none())
        .collect())
}

fn name_of(o: &Value) -> String {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Running pods of the application (not Ferry's) that mount `claim`.
fn users_of(pods: &[Value], claim: &str) -> Vec<Value> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/labels").and_then(|l| l.get(labels::COMPONENT)).is_none())
        .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
        .filter(|p| p.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten()
            .any(|v| v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) == Some(claim)))
        .cloned()
        .collect()
}

async fn has_mover_nodes(c: &Cluster) -> anyhow::Result<bool> {
    Ok(!c.list("v1", "Node", None, Some(&format!("{}=true", crate::dev::node::MOVER_NODE_LABEL))).await?.is_empty())
}

async fn pv_of(c: &Cluster, claim: &Value) -> anyhow::Result<Option<Value>> {
    match claim.pointer("/spec/volumeName").and_then(Value::as_str).filter(|v| !v.is_empty()) {
        Some(pv) => Ok(c.get(&ObjectRef { api_version: "v1".into(), kind: "PersistentVolume".into(), namespace: None, name: pv.into() }).await?),
        None => Ok(None),
    }
}

/// Certificates in the two Secrets (minted once per migration; reused on resume).
async fn ensure_certs(m: &Migration<'_>, id: &str) -> anyhow::Result<()> {
    let ns = &m.spec.namespace;
    if m.spec.mover.s3.is_some() {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret_key)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
            bail!("the S3 transport needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in Ferry's environment (they reach the mover pods in the Secret {S3_SECRET}, deleted afterwards)");
        };
        let token = var("AWS_SESSION_TOKEN");
        let mut files = vec![("AWS_ACCESS_KEY_ID", key.as_str()), ("AWS_SECRET_ACCESS_KEY", secret_key.as_str())];
        if let Some(t) = &token {
            files.push(("AWS_SESSION_TOKEN", t.as_str()));
        }
        for c in [m.source, m.dest] {
            c.apply(&secret(ns, id, S3_SECRET, &files)).await?;
        }
        return Ok(());
    }
    let r = |name: &str| ObjectRef { api_version: "v1".into(), kind: "Secret".into(), namespace: Some(ns.clone()), name: name.into() };
    let ours = |s: &Option<Value>| s.as_ref().and_then(|s| s.pointer("/metadata/labels").and_then(|l| l.get(labels::MIGRATION))).and_then(Value::as_str) == Some(id);
    if ours(&m.dest.get(&r(RECEIVER_SECRET)).await?) && ours(&m.source.get(&r(SENDER_SECRET)).await?) {
        return Ok(());
    }
    let minted = certs::mint(&[], 7)?;
    // Receivers still running from an interrupted run hold the old certificates: replace them.
    let selector = format!("{}={id},{ROLE}=receiver", labels::MIGRATION);
    if m.dest.namespace(ns).await?.is_some() {
        for old in m.dest.list("v1", "Pod", Some(ns), Some(&selector)).await? {
            delete_and_wait(m.dest, &obj_ref(&old)).await?;
        }
    }
    m.dest.apply(&secret(ns, id, RECEIVER_SECRET, &[(certs::CA_FILE, &minted.ca), (certs::SERVER_CERT, &minted.server_cert), (certs::SERVER_KEY, &minted.server_key)])).await?;
    m.source.apply(&secret(ns, id, SENDER_SECRET, &[(certs::CA_FILE, &minted.ca), (certs::CLIENT_CERT, &minted.client_cert), (certs::CLIENT_KEY, &minted.client_key)])).await?;
    Ok(())
}

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn waiting_reason(p: &Value) -> Option<String> {
    let cs = p.pointer("/status/containerStatuses/0/state/waiting")?;
    Some(format!("{}: {}", cs["reason"].as_str().unwrap_or(""), cs["message"].as_str().unwrap_or("")))
}

/// Receiver pod + Service for `claim` on the destination; returns the address the sender dials.
async fn ensure_receiver(m: &Migration<'_>, id: &str, claim: &str) -> anyhow::Result<String> {
    let ns = &m.spec.namespace;
    if let Some(s3) = &m.spec.mover.s3 {
        // Nothing listens: each pass's receiver is a pod that pulls from the bucket.
        return Ok(s3_location(s3, ns, id, claim));
    }
    let dest_claim = m.dest.get(&ObjectRef { api_version: "v1".into(), kind: "PersistentVolumeClaim".into(), namespace: Some(ns.clone()), name: claim.into() }).await?
        .with_context(|| format!("claim {claim} is missing on {} (the apply stage creates it)", m.dest.name))?;
    let pv = pv_of(m.dest, &dest_claim).await?;
    let p = placement(pv.as_ref(), &dest_claim, &[], has_mover_nodes(m.dest).await?).map_err(|b| anyhow::anyhow!(b.0))?;
    let pod = receiver_pod(ns, id, claim, &m.spec.mover.image, &p);
    let svc = receiver_service(ns, id, claim, m.spec.mover.service_type);
    match m.dest.get(&obj_ref(&pod)).await? {
        Some(old) if old.pointer("/status/phase").and_then(Value::as_str).is_some_and(|p| p == "Failed" || p == "Succeeded")
            || old.pointer("/metadata/labels").and_then(|l| l.get(labels::MIGRATION)) != pod.pointer("/metadata/labels").and_then(|l| l.get(labels::MIGRATION)) => {
            // Ended (e.g. its node restarted while Ferry was down) or left by another run: replace it.
            delete_and_wait(m.dest, &obj_ref(&old)).await?;
            m.dest.create(&pod).await?;
        }
        Some(_) => {}
        None => {
            m.dest.create(&pod).await?;
        }
    }
    m.dest.apply(&svc).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let live = m.dest.get(&obj_ref(&pod)).await?.context("receiver pod vanished")?;
        let svc_live = m.dest.get(&obj_ref(&svc)).await?.context("receiver service vanished")?;
        let svc_name = name_of(&svc);
        let endpoints_ready = m.dest.list("discovery.k8s.io/v1", "EndpointSlice", Some(ns), Some(&format!("kubernetes.io/service-name={svc_name}"))).await?.iter()
            .flat_map(|s| s.get("endpoints").and_then(Value::as_array).cloned().unwrap_or_default())
            .any(|e| e.pointer("/conditions/ready") == Some(&Value::Bool(true)));
        if pod_ready(&live) && endpoints_ready {
            if let Some(addr) = receiver_address(&svc_live, &live, m.spec.mover.service_type, m.spec.mover.address.as_deref()) {
                return Ok(addr);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the mover receiver for claim {claim} on {} is not reachable after 180s (pod {}: {}); check `kubectl --context {} -n {ns} describe pod {}`",
                m.dest.name, name_of(&live), waiting_reason(&live).unwrap_or_else(|| live.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending").to_string()),
                m.dest.name, name_of(&live)
            );
        }
        m.progress.detail(&format!("waiting for the receiver of {claim} on {}", m.dest.name));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The address a sender on another cluster dials (pure).
pub fn receiver_address(svc: &Value, pod: &Value, t: ServiceType, override_host: Option<&str>) -> Option<String> {
    let port0 = svc.pointer("/spec/ports/0")?;
    let (host, port) = match t {
        ServiceType::ClusterIP => (svc.pointer("/spec/clusterIP")?.as_str()?.to_string(), port0["port"].as_u64()?),
        ServiceType::NodePort => (pod.pointer("/status/hostIP")?.as_str()?.to_string(), port0["nodePort"].as_u64()?),
        ServiceType::LoadBalancer => {
            let ing = svc.pointer("/status/loadBalancer/ingress/0")?;
            let h = ing.get("ip").or_else(|| ing.get("hostname"))?.as_str()?.to_string();
            (h, port0["port"].as_u64()?)
        }
    };
    let host = override_host.map(str::to_string).unwrap_or(host);
    Some(if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") })
}

/// Run one pass for `claim` as the application's user when known: if that user
/// cannot read the data, the pass runs again as root and `user` becomes `None`.
async fn pass(m: &Migration<'_>, id: &str, claim: &Value, n: u32, to: &str, running: bool, user: &mut Option<(i64, i64)>) -> anyhow::Result<Report> {
    match pass_as(m, id, claim, n, to, running, *user).await {
        Err(e) if user.is_some() && format!("{e:#}").contains("Permission denied") => {
            tracing::info!(claim = %name_of(claim), uid = user.map(|u| u.0), "the application's user cannot read all of the volume; the sender runs as root");
            *user = None;
            pass_as(m, id, claim, n, to, running, None).await
        }
        r => r,
    }
}

/// Run one pass for `claim`: a sender pod on the source, its report back.
async fn pass_as(m: &Migration<'_>, id: &str, claim: &Value, n: u32, to: &str, running: bool, user: Option<(i64, i64)>) -> anyhow::Result<Report> {
    let ns = &m.spec.namespace;
    let cname = name_of(claim);
    let users = if running { users_of(&m.source.list("v1", "Pod", Some(ns), None).await?, &cname) } else { Vec::new() };
    let pv = pv_of(m.source, claim).await?;
    let p = placement(pv.as_ref(), claim, &users, has_mover_nodes(m.source).await?).map_err(|b| anyhow::anyhow!(b.0))?;
    let when = if running { "(application running)" } else { "(final)" };
    if let Some(s3) = &m.spec.mover.s3 {
        return s3_pass(m, id, &cname, n, to, s3, &p, user, when).await;
    }
    let pod = sender_pod(ns, id, &cname, n, to, &m.spec.mover.image, &p, user);
    let (code, message) = run_to_end(m, m.source, &pod, &format!("{cname}: pass {n} {when}")).await
        .with_context(|| format!("pass {n} of claim {cname}"))?;
    match serde_json::from_str::<Report>(&message) {
        Ok(rep) if code == 0 || code == 3 => Ok(rep),
        _ => bail!("pass {n} of claim {cname} failed (sender exit code {code}): {}", if message.is_empty() { "no message".into() } else { message }),
    }
}

/// Run a run-to-completion mover pod on `c`; returns its exit code and
/// termination message, and deletes it.
async fn run_to_end(m: &Migration<'_>, c: &Cluster, pod: &Value, detail: &str) -> anyhow::Result<(i64, String)> {
    let r = obj_ref(pod);
    if c.get(&r).await?.is_some() {
        // Left over from a run that was interrupted: start afresh.
        delete_and_wait(c, &r).await?;
    }
    c.create(pod).await?;
    let deadline = tokio::time::Instant::now() + m.spec.mover.pass_timeout;
    let live = loop {
        let live = c.get(&r).await?.with_context(|| format!("pod {} vanished", r.name))?;
        if let Some("Succeeded" | "Failed") = live.pointer("/status/phase").and_then(Value::as_str) {
            break live;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("pod {} on {} did not finish within {}s", r.name, c.name, m.spec.mover.pass_timeout.as_secs());
        }
        m.progress.detail(detail);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    c.delete(&r).await?;
    let term = live.pointer("/status/containerStatuses/0/state/terminated").cloned().unwrap_or(Value::Null);
    let code = term["exitCode"].as_i64().unwrap_or(-1);
    let mut message = term["message"].as_str().unwrap_or("").trim().to_string();
    if message.is_empty() && code != 0 {
        // Killed before it could say anything: say what the kubelet saw.
        message = format!("{} (pod {}: {})", term["reason"].as_str().unwrap_or("no message"), r.name, live.pointer("/status/reason").or(live.pointer("/status/message")).and_then(Value::as_str).unwrap_or("no pod reason"));
    }
    Ok((code, message))
}

/// One pass through the bucket: a push pod on the source, then (when the push
/// published a consistent pass) a pull pod on the destination that verifies
/// the sender's tree hash. Reported like a direct pass.
#[allow(clippy::too_many_arguments)]
async fn s3_pass(m: &Migration<'_>, id: &str, cname: &str, n: u32, location: &str, s3: &crate::model::S3MoverSpec, p: &Placement, user: Option<(i64, i64)>, when: &str) -> anyhow::Result<Report> {
    let ns = &m.spec.namespace;
    let image = &m.spec.mover.image;
    let failed = |who: &str, code: i64, message: String| anyhow::anyhow!("pass {n} of claim {cname} failed ({who} exit code {code}): {}", if message.is_empty() { "no message".into() } else { message });
    let pod = s3_push_pod(ns, id, cname, n, location, s3, image, p, user);
    let (code, message) = run_to_end(m, m.source, &pod, &format!("{cname}: pass {n} {when}: pushing to {location}")).await?;
    let push = match serde_json::from_str::<crate::mover::stats::S3Report>(&message) {
        Ok(r) if code == 0 || code == 3 => r,
        _ => return Err(failed("s3-push", code, message)),
    };
    let mut rep = Report {
        source: push.source.clone(),
        destination: location.to_string(),
        entries: push.entries,
        files_total: push.files_total,
        bytes_total: push.bytes_total,
        files_sent: push.files_sent,
        files_skipped: push.files_skipped,
        unstable_files: push.unstable_files,
        file_bytes_sent: push.file_bytes_transferred,
        wire_bytes_sent: push.bytes_uploaded,
        compression: push.compression,
        streams: push.jobs,
        duration_ms: push.duration_ms,
        sender_tree_hash: push.sender_tree_hash.clone(),
        ..Default::default()
    };
    if push.unstable_files > 0 || push.pass.is_empty() {
        // Files changed while being read: nothing consistent was published; the next pass retries.
        return Ok(rep);
    }
    let dest_claim = m.dest.get(&ObjectRef { api_version: "v1".into(), kind: "PersistentVolumeClaim".into(), namespace: Some(ns.clone()), name: cname.into() }).await?
        .with_context(|| format!("claim {cname} is missing on {} (the apply stage creates it)", m.dest.name))?;
    let pv = pv_of(m.dest, &dest_claim).await?;
    let dp = placement(pv.as_ref(), &dest_claim, &[], has_mover_nodes(m.dest).await?).map_err(|b| anyhow::anyhow!(b.0))?;
    let pod = s3_pull_pod(ns, id, cname, n, location, s3, &push.pass, &push.sender_tree_hash, image, &dp);
    let (code, message) = run_to_end(m, m.dest, &pod, &format!("{cname}: pass {n} {when}: pulling from {location}")).await?;
    let pull = match serde_json::from_str::<crate::mover::stats::S3Report>(&message) {
        Ok(r) if code == 0 => r,
        _ => return Err(failed("s3-pull", code, message)),
    };
    rep.entries_deleted = pull.entries_deleted;
    rep.wire_bytes_received = pull.bytes_downloaded;
    rep.duration_ms += pull.duration_ms;
    rep.receiver_tree_hash = pull.receiver_tree_hash.clone();
    rep.ok = pull.ok && pull.receiver_tree_hash == push.sender_tree_hash;
    if let Some(r) = pull.receiver {
        rep.receiver = r;
    }
    Ok(rep)
}

async fn delete_and_wait(c: &Cluster, r: &ObjectRef) -> anyhow::Result<()> {
    c.delete(r).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while c.get(r).await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("{} {} on {} is still there 120s after deletion", r.kind, r.name, c.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One claim's passes, as a future the stage runs alongside the other claims'.
type ClaimWork<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Claims whose passes run at the same time.
const PARALLEL_CLAIMS: usize = 4;

/// Run `work` (one future per claim, each reporting its passes on the channel
/// it is given) with every pass journaled as it ends, so the status follows live.
async fn journaled<T>(
    m: &Migration<'_>,
    stored: &mut Stored,
    work: Vec<ClaimWork<'_, T>>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<PassRecord>,
) -> anyhow::Result<Vec<anyhow::Result<T>>> {
    use futures::StreamExt;
    let all = futures::stream::iter(work).buffer_unordered(PARALLEL_CLAIMS).collect::<Vec<_>>();
    tokio::pin!(all);
    let results = loop {
        tokio::select! {
            Some(rec) = rx.recv() => {
                stored.journal.volume_passes.push(rec);
                m.save(stored).await?;
            }
            res = &mut all => break res,
        }
    };
    let mut late = false;
    while let Ok(rec) = rx.try_recv() {
        stored.journal.volume_passes.push(rec);
        late = true;
    }
    if late {
        m.save(stored).await?;
    }
    Ok(results)
}

/// The migration id and the bound claims to move, with the mover's certificates in place when there are any.
async fn claims_to_move(m: &Migration<'_>, stored: &Stored) -> anyhow::Result<(String, Vec<Value>)> {
    let id = stored.journal.migration_id.clone();
    let claims = source_claims(m).await?;
    if !claims.is_empty() {
        ensure_certs(m, &id).await?;
    }
    Ok((id, claims))
}

/// Stage `pre-copy`: passes while the application runs, until the delta is small (claims in parallel).
pub(super) async fn precopy(m: &Migration<'_>, stored: &mut Stored) -> anyhow::Result<BTreeMap<String, u64>> {
    let (id, claims) = claims_to_move(m, stored).await?;
    let mut counts = BTreeMap::from([("claims".to_string(), claims.len() as u64)]);
    if claims.is_empty() {
        return Ok(counts);
    }
    let pods = m.source.list("v1", "Pod", Some(&m.spec.namespace), None).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut work: Vec<ClaimWork<'_, u64>> = Vec::new();
    for claim in &claims {
        let cname = name_of(claim);
        if let Err(Busy(why)) = placement(None, claim, &users_of(&pods, &cname), false) {
            tracing::info!(claim = %cname, "{why}");
            continue;
        }
        let mut done: Vec<PassRecord> = stored.journal.volume_passes.iter().filter(|p| p.pvc == cname).cloned().collect();
        let mut user = stored.journal.volume_user.get(&cname).copied();
        let (tx, id) = (tx.clone(), id.clone());
        work.push(Box::pin(async move {
            let to = ensure_receiver(m, &id, &cname).await?;
            let mut bytes = 0;
            while done.last().is_none_or(|last| precopy_again(last, done.len(), m.spec.max_final_sync)) {
                let n = done.len() as u32 + 1;
                let rep = pass(m, &id, claim, n, &to, true, &mut user).await?;
                bytes += rep.file_bytes_sent;
                let mut rec = PassRecord::from_report(&cname, n, "pre-copy", &rep);
                rec.run_as_user = Some(user.map_or(0, |u| u.0));
                done.push(rec.clone());
                let _ = tx.send(rec);
            }
            Ok(bytes)
        }));
    }
    drop(tx);
    let mut bytes = 0;
    for r in journaled(m, stored, work, &mut rx).await? {
        bytes += r?;
    }
    counts.insert("bytes".into(), bytes);
    counts.insert("passes".into(), stored.journal.volume_passes.len() as u64);
    Ok(counts)
}

/// The final pass of one claim, retried while files change under it (up to 3 attempts).
async fn final_pass(m: &Migration<'_>, id: &str, claim: &Value, mut n: u32, mut user: Option<(i64, i64)>, tx: tokio::sync::mpsc::UnboundedSender<PassRecord>) -> anyhow::Result<Report> {
    let cname = name_of(claim);
    let to = ensure_receiver(m, id, &cname).await?;
    let mut attempt = 0;
    loop {
        let rep = pass(m, id, claim, n, &to, false, &mut user).await?;
        let mut rec = PassRecord::from_report(&cname, n, "final", &rep);
        rec.run_as_user = Some(user.map_or(0, |u| u.0));
        let _ = tx.send(rec);
        n += 1;
        // Verified means both hashes equal *and* a consistent read: no file changed while it was sent.
        if rep.ok && rep.unstable_files == 0 {
            return Ok(rep);
        }
        attempt += 1;
        if !rep.ok && rep.unstable_files == 0 {
            bail!(
                "data of claim {cname} differs after the final pass: source tree hash {} ≠ destination {}; nothing was cut over",
                rep.sender_tree_hash, rep.receiver_tree_hash
            );
        }
        if attempt >= 3 {
            bail!(
                "data of claim {cname} kept changing during the final pass although the application is stopped ({} file(s) changed while being read, {attempt} attempts): is something outside Kubernetes writing to the volume? Nothing was cut over",
                rep.unstable_files
            );
        }
    }
}

/// Stage `volumes`: the final pass of every claim with the application stopped (claims in
/// parallel); hashes must match.
pub(super) async fn final_sync(m: &Migration<'_>, stored: &mut Stored) -> anyhow::Result<BTreeMap<String, u64>> {
    let (id, claims) = claims_to_move(m, stored).await?;
    let mut counts = BTreeMap::from([("claims".to_string(), claims.len() as u64)]);
    if claims.is_empty() {
        return Ok(counts);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut work: Vec<ClaimWork<'_, (String, Report)>> = Vec::new();
    for claim in &claims {
        let cname = name_of(claim);
        let n = stored.journal.volume_passes.iter().filter(|p| p.pvc == cname).count() as u32 + 1;
        // A pass that fell back to root already told us the application's user cannot read everything.
        let fell_back = stored.journal.volume_passes.iter().any(|p| p.pvc == cname && p.run_as_user == Some(0));
        let user = stored.journal.volume_user.get(&cname).copied().filter(|_| !fell_back);
        let (tx, id) = (tx.clone(), id.clone());
        work.push(Box::pin(async move { Ok((cname, final_pass(m, &id, claim, n, user, tx).await?)) }));
    }
    drop(tx);
    let (mut bytes, mut files) = (0, 0);
    for r in journaled(m, stored, work, &mut rx).await? {
        let (cname, rep) = r?;
        bytes += rep.file_bytes_sent;
        files += rep.files_total;
        stored.journal.verification.retain(|v| v.pvc != cname);
        stored.journal.verification.push(crate::model::status::VolumeVerification {
            pvc: cname.clone(),
            algorithm: "blake3-tree".into(),
            source_hash: rep.sender_tree_hash.clone(),
            destination_hash: rep.receiver_tree_hash.clone(),
            bytes: rep.bytes_total,
            files: rep.files_total,
        });
    }
    stored.journal.verification.sort_by(|a, b| a.pvc.cmp(&b.pvc));
    m.save(stored).await?;
    cleanup(m, &id).await?;
    counts.insert("bytes".into(), bytes);
    counts.insert("files".into(), files);
    counts.insert("verified".into(), stored.journal.verification.len() as u64);
    Ok(counts)
}

/// Remember, before quiesce, which non-root user each claim's application runs as.
pub(super) async fn record_users(m: &Migration<'_>, stored: &mut Stored) -> anyhow::Result<()> {
    let pods = m.source.list("v1", "Pod", Some(&m.spec.namespace), None).await?;
    for claim in source_claims(m).await? {
        let cname = name_of(&claim);
        if let Some(u) = mover_user(&users_of(&pods, &cname)) {
            stored.journal.volume_user.insert(cname, u);
        }
    }
    Ok(())
}

/// Delete every mover object of migration `id` on both clusters (pods, Services, Secrets).
pub(super) async fn cleanup(m: &Migration<'_>, id: &str) -> anyhow::Result<()> {
    let ns = &m.spec.namespace;
    let selector = format!("{}=mover,{}={id}", labels::COMPONENT, labels::MIGRATION);
    for c in [m.source, m.dest] {
        if c.namespace(ns).await?.is_none() {
            continue;
        }
        for (av, kind) in [("v1", "Pod"), ("v1", "Service"), ("v1", "Secret")] {
            for o in c.list(av, kind, Some(ns), Some(&selector)).await? {
                c.delete(&obj_ref(&o)).await?;
            }
        }
    }
    // Wait until the mover pods are gone: a receiver still holding a
    // ReadWriteOnce volume would keep the application from mounting it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    for c in [m.source, m.dest] {
        loop {
            if c.namespace(ns).await?.is_none() {
                break;
            }
            let left = c.list("v1", "Pod", Some(ns), Some(&selector)).await?;
            if left.is_empty() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let names: Vec<&str> = left.iter().filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str)).collect();
                anyhow::bail!("mover pods {} in {ns} on {} did not terminate within 90 s of their deletion; check the node they run on", names.join(", "), c.name);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(modes: &[&str]) -> Value {
        json!({"metadata": {"name": "data"}, "spec": {"accessModes": modes}})
    }
    fn user_pod(node: &str, uid: Option<i64>) -> Value {
        let mut p = json!({"metadata": {"name": "app"}, "spec": {"nodeName": node, "containers": [{"name": "c"}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}, "status": {"phase": "Running"}});
        if let Some(u) = uid {
            p["spec"]["securityContext"] = json!({"runAsUser": u, "fsGroup": 2000});
        }
        p
    }

    #[test]
    fn pv_node_affinity_is_required_for_the_mover() {
        let req = json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]});
        let pv = json!({"spec": {"local": {"path": "/mnt/x"}, "accessModes": ["ReadWriteOnce"], "nodeAffinity": {"required": req}}});
        let p = placement(Some(&pv), &pvc(&["ReadWriteOnce"]), &[], true).unwrap();
        assert_eq!(p.node_affinity.unwrap()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"], req);
        // The PV's node wins over dedicated mover nodes.
        assert!(p.node_selector.is_empty());
    }

    #[test]
    fn attached_rwo_volume_in_use_is_read_on_its_node() {
        let pv = json!({"spec": {"csi": {"driver": "ebs.csi.aws.com"}, "accessModes": ["ReadWriteOnce"]}});
        let p = placement(Some(&pv), &pvc(&["ReadWriteOnce"]), &[user_pod("node-7", None)], true).unwrap();
        assert_eq!(p.node_name.as_deref(), Some("node-7"));
        // Not in use: free to go to a mover node.
        let p = placement(Some(&pv), &pvc(&["ReadWriteOnce"]), &[], true).unwrap();
        assert_eq!(p.node_name, None);
        assert_eq!(p.node_selector.get("ferry.dev/mover").map(String::as_str), Some("true"));
        // Shared volumes attach anywhere.
        let p = placement(Some(&pv), &pvc(&["ReadWriteMany"]), &[user_pod("node-7", None)], false).unwrap();
        assert_eq!(p, Placement::default());
    }

    #[test]
    fn read_write_once_pod_in_use_waits_for_quiesce() {
        let err = placement(None, &pvc(&["ReadWriteOncePod"]), &[user_pod("n", None)], false).unwrap_err();
        assert!(err.0.contains("ReadWriteOncePod"), "{}", err.0);
        assert!(placement(None, &pvc(&["ReadWriteOncePod"]), &[], false).is_ok());
    }

    #[test]
    fn sender_runs_as_the_applications_single_non_root_user() {
        assert_eq!(mover_user(&[user_pod("n", Some(1001)), user_pod("m", Some(1001))]), Some((1001, 2000)));
        assert_eq!(mover_user(&[user_pod("n", Some(1001)), user_pod("m", Some(1002))]), None, "different users: root");
        assert_eq!(mover_user(&[user_pod("n", None)]), None, "unknown user: root");
        assert_eq!(mover_user(&[user_pod("n", Some(0))]), None);
        assert_eq!(mover_user(&[]), None);
        let s = sender_pod("ns", "id1", "data", 1, "10.0.0.1:7443", "img:1", &Placement::default(), Some((1001, 2000)));
        assert_eq!(s["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(s["spec"]["securityContext"]["runAsUser"], 1001);
        assert!(s["spec"]["securityContext"].get("fsGroup").is_none(), "fsGroup would re-own the source volume");
        assert!(s["spec"]["containers"][0]["securityContext"]["capabilities"].get("add").is_none());
    }

    #[test]
    fn pods_are_least_privilege_and_the_sender_reads_only() {
        let p = Placement::default();
        let s = sender_pod("ns", "id1", "data", 2, "10.0.0.1:7443", "img:1", &p, None);
        assert_eq!(s["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(s["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(s["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(s["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"], true);
        assert_eq!(s["spec"]["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert!(s["spec"]["containers"][0]["resources"]["limits"]["memory"].is_string());
        assert_eq!(s["metadata"]["labels"][labels::COMPONENT], "mover", "export must leave mover objects behind");
        let r = receiver_pod("ns", "id1", "data", "img:1", &p);
        assert_eq!(r["spec"]["securityContext"]["runAsUser"], 0);
        let caps = r["spec"]["containers"][0]["securityContext"]["capabilities"]["add"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CHOWN") && !caps.iter().any(|c| c == "SYS_ADMIN"));
        let svc = receiver_service("ns", "id1", "data", ServiceType::NodePort);
        assert_eq!(svc["spec"]["type"], "NodePort");
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&r["metadata"]["labels"][k], v, "service selects the receiver");
        }
    }

    #[test]
    fn receiver_address_by_service_type() {
        let svc = json!({"spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 7443, "nodePort": 31234}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}});
        let pod = json!({"status": {"hostIP": "192.168.1.5"}});
        assert_eq!(receiver_address(&svc, &pod, ServiceType::ClusterIP, None).unwrap(), "10.96.0.9:7443");
        assert_eq!(receiver_address(&svc, &pod, ServiceType::NodePort, None).unwrap(), "192.168.1.5:31234");
        assert_eq!(receiver_address(&svc, &pod, ServiceType::NodePort, Some("edge.example.com")).unwrap(), "edge.example.com:31234");
        assert_eq!(receiver_address(&svc, &pod, ServiceType::LoadBalancer, None).unwrap(), "lb.example.com:7443");
        let pending = json!({"spec": {"ports": [{"port": 7443}]}});
        assert_eq!(receiver_address(&pending, &pod, ServiceType::LoadBalancer, None), None);
    }

    #[test]
    fn precopy_stops_when_the_delta_is_small_or_after_max_passes() {
        let big = PassRecord { pass: 1, bytes: 2 << 30, files_sent: 10, ..Default::default() };
        let small = PassRecord { pass: 2, bytes: 1 << 20, files_sent: 3, ..Default::default() };
        assert!(precopy_again(&big, 1, None));
        assert!(!precopy_again(&small, 2, None));
        assert!(!precopy_again(&big, PRECOPY_MAX_PASSES, None));
        let slow = PassRecord { duration_ms: 90_000, ..small.clone() };
        assert!(precopy_again(&slow, 2, Some(Duration::from_secs(30))), "over the downtime budget: another pass");
    }
}
