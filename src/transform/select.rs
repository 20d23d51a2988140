//! Which exported objects are copied and which are left behind, and why.
//!
//! An object is left behind when the destination recreates it by itself
//! (controller children, managed endpoints, the `default` ServiceAccount,
//! token Secrets), when copying it would be wrong (finished Jobs would re-run,
//! Events and Leases describe the source), or when it belongs to Ferry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::VolumeMode;
use super::error::TransformError;
use super::object::{ObjectRef, annotation, controller_owner, group_of, label, version_of};
use crate::labels;

/// Why an object was not copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    /// Events describe the source cluster's past.
    Event,
    /// Nodes, CSINodes, VolumeAttachments: the source cluster's machinery.
    ClusterInfrastructure,
    /// Leases are held by processes running on the source.
    Lease,
    /// Served by an aggregated read-only API (metrics and the like).
    AggregatedApi {
        /// The API group.
        group: String,
    },
    /// Ferry's own mover Pods, Secrets and Services (label `ferry.dev/component`).
    FerryOwn {
        /// Value of the component label.
        component: String,
    },
    /// Being deleted on the source; recreating it would resurrect it.
    Terminating,
    /// Endpoints the endpoints controller maintains for a Service with a selector.
    ManagedEndpoints {
        /// The Service.
        service: String,
    },
    /// EndpointSlice maintained by a Kubernetes controller.
    ManagedEndpointSlice {
        /// Value of `endpointslice.kubernetes.io/managed-by`.
        manager: String,
    },
    /// Created by its controller, which recreates it on the destination.
    ControllerOwned {
        /// Owner kind.
        owner_kind: String,
        /// Owner name.
        owner_name: String,
    },
    /// A Job a CronJob started; the CronJob is copied (suspended) instead.
    JobOfCronJob {
        /// The CronJob.
        cronjob: String,
    },
    /// A Pod that has terminated (`Succeeded`/`Failed`).
    CompletedPod {
        /// Its phase.
        phase: String,
    },
    /// A Job that has finished; copying it would run it again.
    FinishedJob {
        /// The terminal condition (`Complete` or `Failed`).
        condition: String,
    },
    /// A token Secret the legacy token controller created for a ServiceAccount.
    AutoTokenSecret {
        /// The ServiceAccount.
        service_account: String,
    },
    /// `kube-root-ca.crt`, published into every namespace by the destination.
    KubeRootCa,
    /// The `default` ServiceAccount exists on the destination; its settings
    /// are merged into it (see [`super::MergePatch`]).
    DefaultServiceAccountMerged,
    /// The same object (same uid) exported under another group/version.
    DuplicateVersion {
        /// apiVersion of the copy that is kept.
        kept: String,
    },
    /// A PersistentVolume when volumes are copied: the destination provisions a new one.
    VolumeNotReattached,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Event => f.write_str("event"),
            Reason::ClusterInfrastructure => f.write_str("source cluster infrastructure"),
            Reason::Lease => f.write_str("lease held on the source"),
            Reason::AggregatedApi { group } => write!(f, "served by aggregated API {group}"),
            Reason::FerryOwn { component } => write!(f, "ferry's own {component} object"),
            Reason::Terminating => f.write_str("being deleted"),
            Reason::ManagedEndpoints { service } => {
                write!(f, "endpoints managed for Service {service}")
            }
            Reason::ManagedEndpointSlice { manager } => {
                write!(f, "endpoint slice managed by {manager}")
            }
            Reason::ControllerOwned {
                owner_kind,
                owner_name,
            } => write!(f, "created by {owner_kind} {owner_name}"),
            Reason::JobOfCronJob { cronjob } => write!(f, "job of CronJob {cronjob}"),
            Reason::CompletedPod { phase } => write!(f, "completed pod ({phase})"),
            Reason::FinishedJob { condition } => write!(f, "finished job ({condition})"),
            Reason::AutoTokenSecret { service_account } => {
                write!(f, "auto-created token of ServiceAccount {service_account}")
            }
            Reason::KubeRootCa => f.write_str("kube-root-ca.crt is published by the destination"),
            Reason::DefaultServiceAccountMerged => {
                f.write_str("default ServiceAccount merged into the destination's")
            }
            Reason::DuplicateVersion { kept } => write!(f, "duplicate of the {kept} copy"),
            Reason::VolumeNotReattached => f.write_str("volume data is copied to a new volume"),
        }
    }
}

/// One object left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftBehind {
    /// The object.
    pub object: ObjectRef,
    /// Why.
    pub reason: Reason,
}

/// Outcome of selection.
#[derive(Debug, Default)]
pub struct Selection {
    /// Objects to copy, with their identity, in export order.
    pub keep: Vec<(ObjectRef, Value)>,
    /// Objects not copied.
    pub left_behind: Vec<LeftBehind>,
    /// Names of auto-created token Secrets (ServiceAccounts' `secrets[]` must forget them).
    pub auto_token_secrets: BTreeSet<String>,
    /// The `default` ServiceAccount, whose settings are merged on the destination.
    pub default_service_account: Option<Value>,
}

/// Groups whose resources are computed on read, never stored.
const AGGREGATED_READ_ONLY: &[&str] = &[
    "metrics.k8s.io",
    "custom.metrics.k8s.io",
    "external.metrics.k8s.io",
];

/// Managers of EndpointSlices inside kube-controller-manager; both rebuild theirs
/// on the destination (from Services, or from copied hand-made Endpoints).
const ENDPOINTSLICE_CONTROLLERS: &[&str] = &[
    "endpointslice-controller.k8s.io",
    "endpointslicemirroring-controller.k8s.io",
];

/// Splits a namespace export into what to copy and what to leave behind.
pub fn select(objects: Vec<Value>, mode: VolumeMode) -> Result<Selection, TransformError> {
    let mut sel = Selection::default();
    let identified = objects
        .into_iter()
        .enumerate()
        .map(|(i, o)| ObjectRef::of(&o, i).map(|r| (r, o)))
        .collect::<Result<Vec<_>, _>>()?;
    let identified = dedupe_versions(identified, &mut sel.left_behind);

    // Services by name: an Endpoints object is managed iff its Service has a selector.
    let service_selects: BTreeMap<&str, bool> = identified
        .iter()
        .filter(|(r, _)| r.is("", "Service"))
        .map(|(r, o)| {
            let has_selector = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty());
            (r.name.as_str(), has_selector)
        })
        .collect();
    let mut decisions = Vec::with_capacity(identified.len());
    for (r, o) in &identified {
        let reason = leave_behind_reason(r, o, &service_selects, mode);
        if let Some(Reason::AutoTokenSecret { .. }) = &reason {
            sel.auto_token_secrets.insert(r.name.clone());
        }
        decisions.push(reason);
    }
    for ((r, o), reason) in identified.into_iter().zip(decisions) {
        match reason {
            Some(reason) => {
                if reason == Reason::DefaultServiceAccountMerged {
                    sel.default_service_account = Some(o);
                }
                sel.left_behind.push(LeftBehind { object: r, reason });
            }
            None => sel.keep.push((r, o)),
        }
    }
    Ok(sel)
}

fn leave_behind_reason(
    r: &ObjectRef,
    o: &Value,
    services: &BTreeMap<&str, bool>,
    mode: VolumeMode,
) -> Option<Reason> {
    let group = r.group();
    if let Some(component) = label(o, labels::COMPONENT) {
        return Some(Reason::FerryOwn {
            component: component.to_owned(),
        });
    }
    if AGGREGATED_READ_ONLY.contains(&group) {
        return Some(Reason::AggregatedApi {
            group: group.to_owned(),
        });
    }
    match (group, r.kind.as_str()) {
        ("" | "events.k8s.io", "Event") => return Some(Reason::Event),
        ("", "Node") | ("storage.k8s.io", "CSINode" | "VolumeAttachment") => {
            return Some(Reason::ClusterInfrastructure);
        }
        ("coordination.k8s.io", "Lease") => return Some(Reason::Lease),
        _ => {}
    }
    if o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return Some(Reason::Terminating);
    }
    match (group, r.kind.as_str()) {
        ("", "ConfigMap") if r.name == "kube-root-ca.crt" => return Some(Reason::KubeRootCa),
        ("", "ServiceAccount") if r.name == "default" => {
            return Some(Reason::DefaultServiceAccountMerged);
        }
        ("", "Endpoints") => {
            // The endpoints controller stamps this annotation on every object it writes.
            let stamped =
                annotation(o, "endpoints.kubernetes.io/last-change-trigger-time").is_some();
            if services.get(r.name.as_str()) == Some(&true) || stamped {
                return Some(Reason::ManagedEndpoints {
                    service: r.name.clone(),
                });
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            if let Some(m) = label(o, "endpointslice.kubernetes.io/managed-by")
                .filter(|m| ENDPOINTSLICE_CONTROLLERS.contains(m))
            {
                return Some(Reason::ManagedEndpointSlice {
                    manager: m.to_owned(),
                });
            }
        }
        _ => {}
    }
    if let Some(owner) = controller_owner(o) {
        let owner_kind = owner
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let owner_name = owner
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // PVCs of volumeClaimTemplates carry the data; the StatefulSet adopts them by name.
        if !r.is("", "PersistentVolumeClaim") {
            if r.is("batch", "Job") && owner_kind == "CronJob" {
                return Some(Reason::JobOfCronJob {
                    cronjob: owner_name.to_owned(),
                });
            }
            return Some(Reason::ControllerOwned {
                owner_kind: owner_kind.to_owned(),
                owner_name: owner_name.to_owned(),
            });
        }
    }
    if r.is("", "Pod") {
        if let Some(phase) = o
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .filter(|p| matches!(*p, "Succeeded" | "Failed"))
        {
            return Some(Reason::CompletedPod {
                phase: phase.to_owned(),
            });
        }
    }
    if r.is("batch", "Job") {
        if let Some(condition) = finished_condition(o) {
            return Some(Reason::FinishedJob {
                condition: condition.to_owned(),
            });
        }
    }
    if r.is("", "Secret") {
        if let Some(sa) = auto_token_owner(r, o) {
            return Some(Reason::AutoTokenSecret {
                service_account: sa.to_owned(),
            });
        }
    }
    if r.is("", "PersistentVolume") && mode == VolumeMode::Copy {
        return Some(Reason::VolumeNotReattached);
    }
    None
}

/// `Complete` or `Failed` when a Job's terminal condition is true.
pub(crate) fn finished_condition(job: &Value) -> Option<&str> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find_map(|c| {
            let t = c.get("type")?.as_str()?;
            (matches!(t, "Complete" | "Failed") && c.get("status")?.as_str()? == "True")
                .then_some(t)
        })
}

/// Alphabet of apimachinery's `rand.String`, which names legacy auto tokens `<sa>-token-xxxxx`.
const RAND_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

/// The ServiceAccount an auto-created token Secret belongs to. Hand-made token
/// Secrets have names a person chose, so the generated name is the tell.
fn auto_token_owner<'a>(r: &ObjectRef, o: &'a Value) -> Option<&'a str> {
    if o.get("type").and_then(Value::as_str) != Some("kubernetes.io/service-account-token") {
        return None;
    }
    let sa = annotation(o, "kubernetes.io/service-account.name")?;
    let suffix = r.name.strip_prefix(sa)?.strip_prefix("-token-")?;
    (suffix.len() == 5 && suffix.chars().all(|c| RAND_ALPHABET.contains(c))).then_some(sa)
}

/// Rank of an apiVersion for keeping one copy of a doubly-served object:
/// a non-legacy group first, then GA over beta over alpha, then higher numbers.
fn version_rank(api_version: &str) -> (bool, u8, u32, u32) {
    let legacy_group = group_of(api_version) == "extensions";
    let v = version_of(api_version);
    let parse = |s: &str| s.parse::<u32>().unwrap_or(0);
    let digits_end = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (stability, major, minor) = match v.strip_prefix('v') {
        Some(rest) => {
            let (major, tail) = rest.split_at(digits_end(rest));
            if tail.is_empty() {
                (3, parse(major), 0)
            } else if let Some(m) = tail.strip_prefix("beta") {
                (2, parse(major), parse(m))
            } else if let Some(m) = tail.strip_prefix("alpha") {
                (1, parse(major), parse(m))
            } else {
                (0, 0, 0)
            }
        }
        None => (0, 0, 0),
    };
    (!legacy_group, stability, major, minor)
}

/// Keeps one copy of each uid; discovery may list a resource under two groups
/// (e.g. `extensions` and `apps`) and the exporter may have listed both.
fn dedupe_versions(
    objects: Vec<(ObjectRef, Value)>,
    left: &mut Vec<LeftBehind>,
) -> Vec<(ObjectRef, Value)> {
    let mut best: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (r, o)) in objects.iter().enumerate() {
        let Some(uid) = o.pointer("/metadata/uid").and_then(Value::as_str) else {
            continue;
        };
        match best.get(uid) {
            Some(&j) if version_rank(&objects[j].0.api_version) >= version_rank(&r.api_version) => {
            }
            _ => {
                best.insert(uid.to_owned(), i);
            }
        }
    }
    let mut kept = Vec::with_capacity(objects.len());
    for (i, (r, o)) in objects.iter().enumerate() {
        let winner = o
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .and_then(|u| best.get(u));
        match winner {
            Some(&j) if j != i => left.push(LeftBehind {
                object: r.clone(),
                reason: Reason::DuplicateVersion {
                    kept: objects[j].0.api_version.clone(),
                },
            }),
            _ => kept.push(i),
        }
    }
    let mut objects: Vec<Option<(ObjectRef, Value)>> = objects.into_iter().map(Some).collect();
    kept.into_iter().filter_map(|i| objects[i].take()).collect()
}
