//! What changes in a kept object before it is applied to the destination:
//! fields the source API server owns are stripped, per-kind fields that would
//! collide or point at source-only things are rewritten, provenance is added.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::cutover::quiesce_patch;
use super::error::TransformError;
use super::object::{
    ObjectRef, annotation, ensure_object, object_at_mut, remove_annotation, remove_at,
    set_annotation, set_label,
};
use super::{TransformContext, VolumeMode};
use crate::labels;

/// Metadata fields the source API server owns; the destination makes its own.
pub const STRIPPED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "selfLink",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
];

/// Annotation kubectl's client-side apply keeps; it is read (node ports) and then dropped,
/// because on the destination it would make the next `kubectl apply` compute a wrong diff.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Annotations the PV controller and provisioners write while binding a claim.
pub const PVC_BIND_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Pod template labels the Job controller adds when it generates the selector.
pub const JOB_GENERATED_LABELS: &[&str] = &[
    "controller-uid",
    "batch.kubernetes.io/controller-uid",
    "job-name",
    "batch.kubernetes.io/job-name",
];

/// Label the API server puts on every Namespace, and the one NetworkPolicies select namespaces by.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// PriorityClasses every cluster has.
const BUILTIN_PRIORITY_CLASSES: &[&str] = &["system-cluster-critical", "system-node-critical"];

/// A Service port as the API identifies it in a list (merge key `port` + `protocol`).
pub type PortKey = (i64, String);

fn port_key(p: &Value) -> Option<PortKey> {
    let port = p.get("port")?.as_i64()?;
    let proto = p
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_owned();
    Some((port, proto))
}

/// Node ports a person chose, from `last-applied-configuration` and from
/// managedFields (a manager that sent `nodePort` owns it; an allocated one has
/// no owner). `None` when the object carries neither record, so nothing can be
/// told apart — then ports are kept, which makes re-transforming an output a no-op.
pub fn chosen_node_ports(obj: &Value) -> Option<BTreeSet<PortKey>> {
    let last_applied =
        annotation(obj, LAST_APPLIED).and_then(|s| serde_json::from_str::<Value>(s).ok());
    let managed = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty());
    if last_applied.is_none() && managed.is_none() {
        return None;
    }
    let mut chosen = BTreeSet::new();
    if let Some(ports) = last_applied
        .as_ref()
        .and_then(|l| l.pointer("/spec/ports"))
        .and_then(Value::as_array)
    {
        chosen.extend(
            ports
                .iter()
                .filter(|p| p.get("nodePort").is_some_and(|n| !n.is_null()))
                .filter_map(port_key),
        );
    }
    for entry in managed.into_iter().flatten() {
        let Some(ports) = entry
            .pointer("/fieldsV1/f:spec/f:ports")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (k, fields) in ports {
            let Some(key) = k
                .strip_prefix("k:")
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
            else {
                continue;
            };
            if fields.get("f:nodePort").is_some() {
                chosen.extend(port_key(&key));
            }
        }
    }
    Some(chosen)
}

/// Removes the fields every object loses (see [`STRIPPED_METADATA`]), `status`,
/// the last-applied annotation and Ferry's retention marks.
pub fn strip_common(obj: &mut Value) {
    if let Some(meta) = object_at_mut(obj, &["metadata"]) {
        for f in STRIPPED_METADATA {
            meta.remove(*f);
        }
    }
    remove_annotation(obj, LAST_APPLIED);
    // A namespace retained after an earlier migration away must not arrive
    // marked for deletion on its new cluster.
    remove_at(obj, &["metadata", "labels"], labels::RETAINED);
    remove_annotation(obj, labels::RETAIN_UNTIL);
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

/// Service: addresses and ports the source allocated would collide or be wrong.
pub fn rewrite_service(
    obj: &mut Value,
    chosen: Option<&BTreeSet<PortKey>>,
    keep_load_balancer_ips: bool,
) {
    let Some(spec) = object_at_mut(obj, &["spec"]) else {
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if ty == "ExternalName" {
        return;
    }
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    spec.remove("healthCheckNodePort");
    if let (Some(chosen), Some(Value::Array(ports))) = (chosen, spec.get_mut("ports")) {
        for p in ports.iter_mut() {
            let person_chose = port_key(p).is_some_and(|k| chosen.contains(&k));
            if !person_chose {
                if let Some(p) = p.as_object_mut() {
                    p.remove("nodePort");
                }
            }
        }
    }
    if ty == "LoadBalancer" && !keep_load_balancer_ips {
        spec.remove("loadBalancerIP");
        spec.remove("externalIPs");
    }
}

/// The class a new volume gets: the claim's class (or, for a claim without one,
/// the source's default class) mapped through the storage class map.
pub fn map_storage_class(ctx: &TransformContext, class: Option<&str>) -> Option<String> {
    let class = class
        .map(str::to_owned)
        .or_else(|| ctx.source_default_storage_class.clone())?;
    Some(ctx.storage_class_map.get(&class).cloned().unwrap_or(class))
}

/// PersistentVolumeClaim: unbind from the source volume.
pub fn rewrite_pvc(obj: &mut Value, ctx: &TransformContext) {
    for a in PVC_BIND_ANNOTATIONS {
        remove_annotation(obj, a);
    }
    if ctx.volume_mode == VolumeMode::Reattach {
        // Re-attached: the claim must bind to the very volume (and class) it had.
        return;
    }
    // A new volume is provisioned and filled by the mover; a source snapshot
    // or clone source does not exist on the destination.
    for f in ["volumeName", "dataSource", "dataSourceRef"] {
        remove_at(obj, &["spec"], f);
    }
    let legacy_class =
        annotation(obj, "volume.beta.kubernetes.io/storage-class").map(str::to_owned);
    if let Some(legacy) = legacy_class {
        // The beta annotation wins over the field on the API server; map it in place.
        let mapped = ctx
            .storage_class_map
            .get(&legacy)
            .cloned()
            .unwrap_or(legacy);
        set_annotation(obj, "volume.beta.kubernetes.io/storage-class", &mapped);
        return;
    }
    let current = obj
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str);
    if let Some(class) = map_storage_class(ctx, current) {
        ensure_object(obj, &["spec"]).insert("storageClassName".into(), Value::String(class));
    }
}

/// PersistentVolume re-attached to the destination: keep the data whatever happens
/// to the claim, and let it bind to the claim of the same name there.
pub fn rewrite_pv(obj: &mut Value) {
    remove_annotation(obj, "pv.kubernetes.io/bound-by-controller");
    let spec = ensure_object(obj, &["spec"]);
    spec.insert("persistentVolumeReclaimPolicy".into(), json!("Retain"));
    if let Some(claim) = spec.get_mut("claimRef").and_then(Value::as_object_mut) {
        claim.remove("uid");
        claim.remove("resourceVersion");
    }
}

/// Bare Pod: let the destination schedule and admit it afresh. `auto_tokens`
/// are the token Secrets left behind: volumes mounting them are dropped too.
pub fn rewrite_pod(
    obj: &mut Value,
    dest_priority_classes: &BTreeSet<String>,
    auto_tokens: &BTreeSet<String>,
) {
    let Some(spec) = object_at_mut(obj, &["spec"]) else {
        return;
    };
    // Priority admission fills these from the class and rejects a pod that carries
    // values differing from it.
    for f in [
        "nodeName",
        "priority",
        "preemptionPolicy",
        "ephemeralContainers",
    ] {
        spec.remove(f);
    }
    if let Some(pc) = spec.get("priorityClassName").and_then(Value::as_str) {
        if !dest_priority_classes.contains(pc) && !BUILTIN_PRIORITY_CLASSES.contains(&pc) {
            spec.remove("priorityClassName");
        }
    }
    // The ServiceAccount admission plugin injected a token volume (projected
    // `kube-api-access-*`, or on old clusters the auto token Secret); it injects
    // its own on the destination unless one is already mounted there.
    let injected: BTreeSet<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| {
            let projected = v.get("projected").is_some()
                && v.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("kube-api-access-"));
            let auto_token = v
                .pointer("/secret/secretName")
                .and_then(Value::as_str)
                .is_some_and(|s| auto_tokens.contains(s));
            projected || auto_token
        })
        .filter_map(|v| v.get("name")?.as_str())
        .map(str::to_owned)
        .collect();
    if injected.is_empty() {
        return;
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        vols.retain(|v| {
            !v.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| injected.contains(n))
        });
    }
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(Value::Array(mounts)) = c.get_mut("volumeMounts") {
                mounts.retain(|m| {
                    !m.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| injected.contains(n))
                });
            }
        }
    }
}

/// Job spec (of a Job or a CronJob's jobTemplate): the generated selector names
/// the source Job's uid; the destination generates its own.
pub fn rewrite_job_spec(spec: &mut Value) {
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if let Some(s) = spec.as_object_mut() {
        s.remove("selector");
    }
    for l in JOB_GENERATED_LABELS {
        remove_at(spec, &["template", "metadata", "labels"], l);
    }
}

/// Drops `creationTimestamp: null` the API server serializes into embedded templates.
fn clean_template_metadata(v: &mut Value, path: &[&str]) {
    let mut p: Vec<&str> = path.to_vec();
    p.push("metadata");
    remove_at(v, &p, "creationTimestamp");
}

/// StatefulSet claim templates: keep their names (PVCs `<tmpl>-<sts>-<ordinal>`
/// must line up), map their class, drop what the API server added.
pub fn rewrite_claim_templates(obj: &mut Value, ctx: &TransformContext) {
    let Some(Value::Array(tmpls)) = obj.pointer_mut("/spec/volumeClaimTemplates") else {
        return;
    };
    for t in tmpls {
        if let Some(o) = t.as_object_mut() {
            o.remove("status");
        }
        remove_at(t, &["metadata"], "creationTimestamp");
        let current = t.pointer("/spec/storageClassName").and_then(Value::as_str);
        if let Some(class) = map_storage_class(ctx, current) {
            ensure_object(t, &["spec"]).insert("storageClassName".into(), Value::String(class));
        }
    }
}

/// ServiceAccount: forget token Secrets that are left behind.
pub fn rewrite_service_account(obj: &mut Value, auto_tokens: &BTreeSet<String>) {
    let Some(Value::Array(secrets)) = obj.get_mut("secrets") else {
        return;
    };
    secrets.retain(|s| {
        !s.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| auto_tokens.contains(n))
    });
    if secrets.is_empty() {
        obj.as_object_mut().expect("has secrets").remove("secrets");
    }
}

/// Hand-made token Secret: the destination's token controller fills it for
/// the destination's ServiceAccount (found by name, not by the source uid).
pub fn rewrite_token_secret(obj: &mut Value) {
    if obj.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
        return;
    }
    remove_annotation(obj, "kubernetes.io/service-account.uid");
    for k in ["token", "ca.crt", "namespace"] {
        remove_at(obj, &["data"], k);
    }
    for l in [
        "kubernetes.io/legacy-token-last-used",
        "kubernetes.io/legacy-token-invalid-since",
    ] {
        remove_at(obj, &["metadata", "labels"], l);
    }
}

/// References to the namespace by name, for a clone under a new name.
pub fn rename_namespace(r: &ObjectRef, obj: &mut Value, old: &str, new: &str) {
    if obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(old) {
        ensure_object(obj, &["metadata"]).insert("namespace".into(), json!(new));
    }
    let swap = |v: &mut Value| {
        if v.as_str() == Some(old) {
            *v = json!(new);
        }
    };
    match (r.group(), r.kind.as_str()) {
        ("", "Namespace") if r.name == old => {
            ensure_object(obj, &["metadata"]).insert("name".into(), json!(new));
            if let Some(l) = obj.pointer_mut("/metadata/labels/kubernetes.io~1metadata.name") {
                swap(l);
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for s in obj
                .get_mut("subjects")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(ns) = s.get_mut("namespace") {
                    swap(ns);
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
                let rules = obj
                    .pointer_mut(&format!("/spec/{dir}"))
                    .and_then(Value::as_array_mut);
                for rule in rules.into_iter().flatten() {
                    for peer in rule
                        .get_mut(peers)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        let Some(sel) = peer.get_mut("namespaceSelector") else {
                            continue;
                        };
                        if let Some(v) =
                            sel.pointer_mut("/matchLabels/kubernetes.io~1metadata.name")
                        {
                            swap(v);
                        }
                        for e in sel
                            .get_mut("matchExpressions")
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            if e.get("key").and_then(Value::as_str) == Some(NAMESPACE_NAME_LABEL) {
                                e.get_mut("values")
                                    .and_then(Value::as_array_mut)
                                    .into_iter()
                                    .flatten()
                                    .for_each(swap);
                            }
                        }
                    }
                }
            }
        }
        ("", "PersistentVolume") => {
            if let Some(ns) = obj.pointer_mut("/spec/claimRef/namespace") {
                swap(ns);
            }
        }
        _ => {}
    }
}

/// Labels and annotation that let every created object be found and rolled back.
pub fn add_provenance(obj: &mut Value, ctx: &TransformContext) {
    set_label(obj, labels::MIGRATION, &ctx.migration_id);
    set_label(obj, labels::SOURCE_CLUSTER, &ctx.source_cluster);
    set_annotation(obj, labels::PLACEMENT_COMMIT, &ctx.placement_commit);
}

/// API versions no longer served whose schema the served version reads unchanged.
fn upgrade_api_version(r: &ObjectRef, obj: &mut Value) {
    if r.api_version == "batch/v1beta1" && r.kind == "CronJob" {
        obj["apiVersion"] = json!("batch/v1");
    }
}

/// Transforms one kept object in place.
pub fn transform_object(
    r: &ObjectRef,
    obj: &mut Value,
    ctx: &TransformContext,
    auto_tokens: &BTreeSet<String>,
) -> Result<(), TransformError> {
    let chosen = if r.is("", "Service") {
        chosen_node_ports(obj)
    } else {
        None
    };
    strip_common(obj);
    upgrade_api_version(r, obj);
    match (r.group(), r.kind.as_str()) {
        ("", "Service") => rewrite_service(obj, chosen.as_ref(), ctx.keep_load_balancer_ips),
        ("", "PersistentVolumeClaim") => rewrite_pvc(obj, ctx),
        ("", "PersistentVolume") => rewrite_pv(obj),
        ("", "Pod") => rewrite_pod(obj, &ctx.dest_priority_classes, auto_tokens),
        ("", "ServiceAccount") => rewrite_service_account(obj, auto_tokens),
        ("", "Secret") => rewrite_token_secret(obj),
        ("batch", "Job") => {
            if let Some(spec) = obj.get_mut("spec") {
                rewrite_job_spec(spec);
            }
            clean_template_metadata(obj, &["spec", "template"]);
        }
        ("batch", "CronJob") => {
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec") {
                rewrite_job_spec(spec);
            }
            clean_template_metadata(obj, &["spec", "jobTemplate"]);
            clean_template_metadata(obj, &["spec", "jobTemplate", "spec", "template"]);
        }
        ("apps", "Deployment") => {
            // The Deployment controller's rollout counter restarts on the destination.
            remove_annotation(obj, "deployment.kubernetes.io/revision");
            clean_template_metadata(obj, &["spec", "template"]);
        }
        ("apps", "StatefulSet") => {
            rewrite_claim_templates(obj, ctx);
            clean_template_metadata(obj, &["spec", "template"]);
        }
        ("apps", "ReplicaSet" | "DaemonSet") => clean_template_metadata(obj, &["spec", "template"]),
        _ => {}
    }
    // Workloads start stopped; cutover restores them from the recorded value.
    if let Some(patch) = quiesce_patch(r, obj)? {
        json_patch::merge(obj, &patch);
    }
    if let Some((old, new)) = &ctx.rename {
        rename_namespace(r, obj, old, new);
    }
    add_provenance(obj, ctx);
    Ok(())
}

/// Settings of the source's `default` ServiceAccount to merge into the one the
/// destination creates; `None` when there is nothing a person set.
pub fn default_service_account_patch(sa: &Value) -> Option<Value> {
    let mut patch = Map::new();
    let mut meta = Map::new();
    for field in ["labels", "annotations"] {
        let mut m: BTreeMap<String, Value> = sa
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        m.remove(LAST_APPLIED);
        if !m.is_empty() {
            meta.insert(field.into(), json!(m));
        }
    }
    if !meta.is_empty() {
        patch.insert("metadata".into(), Value::Object(meta));
    }
    for field in ["imagePullSecrets", "automountServiceAccountToken"] {
        if let Some(v) = sa.get(field).filter(|v| !v.is_null()) {
            patch.insert(field.into(), v.clone());
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}
