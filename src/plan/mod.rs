//! The planner: desired placement × observed clusters → one step per
//! namespace. Pure: no IO, no clock, so every case is a unit test.
//!
//! Safety rules it encodes:
//! - a namespace removed from the repository is never deleted, only reported;
//! - a namespace live on two clusters is never touched (a person must decide);
//! - nothing moves while a cluster it depends on is unreachable;
//! - a source namespace Ferry retired (labelled [`labels::RETAINED`]) is a
//!   leftover, not a second live copy.
pub mod cli;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::labels;
use crate::model::{Desired, Strategy, VolumeMode};

/// What Ferry saw on the clusters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    /// Per cluster name.
    #[serde(default)]
    pub clusters: BTreeMap<String, ObservedCluster>,
}

/// One cluster: reachable with its namespaces, or not (`error` set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedCluster {
    /// Why the cluster could not be read; `None` when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Namespaces found (ignored when `error` is set).
    #[serde(default)]
    pub namespaces: Vec<ObservedNamespace>,
}

impl ObservedCluster {
    /// A reachable cluster.
    pub fn reachable(namespaces: Vec<ObservedNamespace>) -> Self {
        ObservedCluster { error: None, namespaces }
    }

    /// An unreachable cluster.
    pub fn unreachable(error: impl Into<String>) -> Self {
        ObservedCluster { error: Some(error.into()), namespaces: Vec::new() }
    }
}

/// A namespace as observed on one cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObservedNamespace {
    /// Namespace name.
    pub name: String,
    /// Namespace labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Objects that would be migrated.
    #[serde(default)]
    pub objects: u64,
    /// PersistentVolumeClaims.
    #[serde(default)]
    pub pvcs: u64,
    /// Sum of PVC storage requests, bytes.
    #[serde(default)]
    pub storage_bytes: u64,
    /// Sum of CPU requests, millicores.
    #[serde(default)]
    pub cpu_millis: u64,
    /// Sum of memory requests, bytes.
    #[serde(default)]
    pub memory_bytes: u64,
}

impl ObservedNamespace {
    /// Ferry retired this copy after moving the namespace away.
    pub fn is_retained(&self) -> bool {
        self.labels.get(labels::RETAINED).is_some_and(|v| v == "true")
    }

    /// Ferry created or retired this namespace at some point.
    pub fn touched_by_ferry(&self) -> bool {
        self.labels.keys().any(|k| k.starts_with(labels::PREFIX))
    }
}

/// What to do for one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Already where the repository says.
    Nothing {
        /// The cluster it runs on.
        cluster: String,
    },
    /// Move it.
    Migrate {
        /// Source cluster.
        from: String,
        /// Destination cluster.
        to: String,
        /// Objects to copy.
        objects: u64,
        /// PVCs to move.
        pvcs: u64,
        /// Requested storage to move, bytes.
        bytes: u64,
        /// Placement's strategy.
        strategy: Strategy,
        /// Placement's volume mode.
        volumes: VolumeMode,
    },
    /// No longer in the repository (or never was, but Ferry touched it): left alone.
    Unmanaged {
        /// Clusters where it is live.
        clusters: Vec<String>,
    },
    /// Live on more than one cluster: Ferry will not guess which copy is real.
    Conflict {
        /// Clusters where it is live.
        clusters: Vec<String>,
    },
    /// A cluster the decision depends on is unreachable.
    WaitUnreachable {
        /// Unreachable cluster(s).
        clusters: Vec<String>,
        /// Their errors.
        errors: Vec<String>,
    },
    /// `suspend: true` in the placement.
    Suspended {
        /// Desired cluster.
        cluster: String,
    },
    /// Placed, but found on no cluster: nothing to move.
    AbsentEverywhere {
        /// Desired cluster.
        cluster: String,
    },
    /// The placement names a cluster that does not exist (only when the model was not validated).
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

impl Action {
    /// Short kebab-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Nothing { .. } => "nothing",
            Action::Migrate { .. } => "migrate",
            Action::Unmanaged { .. } => "unmanaged",
            Action::Conflict { .. } => "conflict",
            Action::WaitUnreachable { .. } => "wait-unreachable",
            Action::Suspended { .. } => "suspended",
            Action::AbsentEverywhere { .. } => "absent-everywhere",
            Action::Invalid { .. } => "invalid",
        }
    }
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Namespace.
    pub namespace: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Extra context for people (retained copies, why waiting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Counts per action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Steps per action name.
    pub actions: BTreeMap<String, usize>,
    /// Bytes requested by all migrations.
    pub migrate_bytes: u64,
}

/// The plan: steps sorted by namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// One step per namespace considered.
    pub steps: Vec<Step>,
    /// Totals.
    pub summary: Summary,
}

impl Plan {
    /// Step of a namespace.
    pub fn step(&self, namespace: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.namespace == namespace)
    }

    /// Migrations only.
    pub fn migrations(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| matches!(s.action, Action::Migrate { .. }))
    }
}

/// Namespaces that belong to the cluster itself; never reported as unmanaged.
fn is_system_namespace(ns: &str) -> bool {
    matches!(ns, "default" | "kube-system" | "kube-public" | "kube-node-lease" | "local-path-storage") || ns.starts_with("ferry-")
}

/// Where each namespace is observed, split into live and retained copies.
#[derive(Default)]
struct Presence<'a> {
    live: Vec<(&'a str, &'a ObservedNamespace)>,
    retained: Vec<&'a str>,
}

/// Compute the plan.
///
/// `base`: the desired state at the pull request's base commit. When given,
/// only namespaces whose placement differs between `base` and `desired`
/// (added, changed or removed) are planned, which is what a PR comment shows.
pub fn plan(desired: &Desired, observed: &Observed, base: Option<&Desired>) -> Plan {
    let mut presence: BTreeMap<&str, Presence<'_>> = BTreeMap::new();
    let mut unreachable: BTreeMap<&str, &str> = BTreeMap::new();
    for (cluster, oc) in &observed.clusters {
        if let Some(err) = &oc.error {
            unreachable.insert(cluster, err);
            continue;
        }
        for ns in &oc.namespaces {
            let p = presence.entry(ns.name.as_str()).or_default();
            if ns.is_retained() {
                p.retained.push(cluster);
            } else {
                p.live.push((cluster, ns));
            }
        }
    }
    // Clusters named in the repo but absent from the observation count as unreachable:
    // not knowing is not the same as "the namespace is not there".
    for c in desired.clusters.keys() {
        if !observed.clusters.contains_key(c) {
            unreachable.entry(c).or_insert("not observed");
        }
    }

    let changed = |ns: &str| -> bool {
        match base {
            None => true,
            Some(b) => match (b.placements.get(ns), desired.placements.get(ns)) {
                (Some(old), Some(new)) => old.fingerprint() != new.fingerprint(),
                (None, None) => false,
                _ => true,
            },
        }
    };

    let empty = Presence::default();
    let mut steps = Vec::new();
    for (ns, placement) in &desired.placements {
        if !changed(ns) {
            continue;
        }
        let p = presence.get(ns.as_str()).unwrap_or(&empty);
        steps.push(plan_one(ns, &placement.spec.cluster.value, placement.spec.suspend, placement.spec.strategy, placement.spec.volumes, p, desired, &unreachable));
    }

    // Unmanaged: in the base but removed now, or live and carrying Ferry's labels.
    let previously: BTreeSet<&str> = base.map(|b| b.placements.keys().map(String::as_str).collect()).unwrap_or_default();
    for (ns, p) in &presence {
        if desired.placements.contains_key(*ns) || is_system_namespace(ns) || p.live.is_empty() {
            continue;
        }
        let removed = previously.contains(ns);
        let ferry = p.live.iter().any(|(_, o)| o.touched_by_ferry());
        if removed || (base.is_none() && ferry) {
            let mut notes = vec!["not in the repository: Ferry leaves it where it is and never deletes it".to_string()];
            if !p.retained.is_empty() {
                notes.push(format!("retained copy on {}", p.retained.join(", ")));
            }
            steps.push(Step { namespace: ns.to_string(), action: Action::Unmanaged { clusters: p.live.iter().map(|(c, _)| c.to_string()).collect() }, notes });
        }
    }
    for ns in previously {
        if !desired.placements.contains_key(ns) && presence.get(ns).is_none_or(|p| p.live.is_empty()) {
            let notes = vec!["removed from the repository and not found live on any reachable cluster".to_string()];
            steps.push(Step { namespace: ns.to_string(), action: Action::Unmanaged { clusters: Vec::new() }, notes });
        }
    }

    steps.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    let mut summary = Summary::default();
    for s in &steps {
        *summary.actions.entry(s.action.name().to_string()).or_default() += 1;
        if let Action::Migrate { bytes, .. } = s.action {
            summary.migrate_bytes += bytes;
        }
    }
    Plan { steps, summary }
}

#[allow(clippy::too_many_arguments)]
fn plan_one(
    ns: &str,
    dest: &str,
    suspend: bool,
    strategy: Strategy,
    volumes: VolumeMode,
    p: &Presence<'_>,
    desired: &Desired,
    unreachable: &BTreeMap<&str, &str>,
) -> Step {
    let step = |action: Action, notes: Vec<String>| Step { namespace: ns.to_string(), action, notes };
    if suspend {
        return step(Action::Suspended { cluster: dest.to_string() }, vec!["suspend: true — Ferry does nothing for this namespace".into()]);
    }
    if !desired.clusters.contains_key(dest) {
        return step(Action::Invalid { reason: format!("cluster `{dest}` is not defined") }, vec![]);
    }
    let mut notes: Vec<String> = p.retained.iter().map(|c| format!("retained copy on {c} (ignored)")).collect();
    let mut live: Vec<&str> = p.live.iter().map(|(c, _)| *c).collect();
    // A copy on the destination that a Ferry migration from another live copy
    // created is that migration in progress (interrupted or running): resume
    // it, do not call it a conflict.
    if live.len() == 2 && !unreachable.contains_key(dest) {
        let in_progress = p.live.iter().find(|(c, _)| *c == dest).and_then(|(_, o)| {
            let src = o.labels.get(labels::SOURCE_CLUSTER)?;
            (o.labels.contains_key(labels::MIGRATION) && src != dest && live.contains(&src.as_str())).then_some(src.as_str())
        });
        if let Some(src) = in_progress {
            notes.push(format!("a migration {src} → {dest} is in progress; it resumes"));
            live.retain(|c| *c != dest);
            let o = p.live.iter().find(|(c, _)| *c == src).map(|(_, o)| *o).expect("source is live");
            return step(
                Action::Migrate { from: src.to_string(), to: dest.to_string(), objects: o.objects, pvcs: o.pvcs, bytes: o.storage_bytes, strategy, volumes },
                notes,
            );
        }
    }
    if live.len() > 1 {
        notes.insert(0, "live on several clusters: decide which copy is authoritative and remove the others".into());
        return step(Action::Conflict { clusters: live.iter().map(|c| c.to_string()).collect() }, notes);
    }
    let wait = |clusters: Vec<&str>, mut notes: Vec<String>, why: String| {
        notes.insert(0, why);
        step(
            Action::WaitUnreachable {
                clusters: clusters.iter().map(|c| c.to_string()).collect(),
                errors: clusters.iter().map(|c| unreachable.get(c).copied().unwrap_or_default().to_string()).collect(),
            },
            notes,
        )
    };
    if unreachable.contains_key(dest) {
        return wait(vec![dest], notes, format!("destination {dest} is unreachable"));
    }
    match live.first() {
        Some(&c) if c == dest => {
            // Another copy could hide on an unreachable cluster; only a move would act on it.
            if !unreachable.is_empty() {
                notes.push(format!("unreachable: {}", unreachable.keys().copied().collect::<Vec<_>>().join(", ")));
            }
            step(Action::Nothing { cluster: dest.to_string() }, notes)
        }
        Some(&src) => {
            if !unreachable.is_empty() {
                // A copy on an unreachable cluster would make this a conflict we cannot see.
                let clusters: Vec<&str> = unreachable.keys().copied().collect();
                return wait(clusters, notes, format!("would migrate {src} → {dest}, but a cluster is unreachable and may hold another live copy"));
            }
            let o = p.live[0].1;
            if p.retained.contains(&dest) {
                notes.push(format!("the retained copy on {dest} will be replaced"));
            }
            step(
                Action::Migrate { from: src.to_string(), to: dest.to_string(), objects: o.objects, pvcs: o.pvcs, bytes: o.storage_bytes, strategy, volumes },
                notes,
            )
        }
        None if !unreachable.is_empty() => {
            let clusters: Vec<&str> = unreachable.keys().copied().collect();
            wait(clusters, notes, "not found on reachable clusters; it may live on an unreachable one".into())
        }
        None => step(Action::AbsentEverywhere { cluster: dest.to_string() }, notes),
    }
}

/// Render a plan as a table for people.
pub fn table(plan: &Plan) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(["NAMESPACE", "ACTION", "FROM", "TO", "OBJECTS", "PVCS", "BYTES", "NOTES"]);
    for s in &plan.steps {
        let (from, to, objects, pvcs, bytes) = match &s.action {
            Action::Migrate { from, to, objects, pvcs, bytes, .. } => (from.clone(), to.clone(), objects.to_string(), pvcs.to_string(), human_bytes(*bytes)),
            Action::Nothing { cluster } | Action::Suspended { cluster } | Action::AbsentEverywhere { cluster } => (String::new(), cluster.clone(), String::new(), String::new(), String::new()),
            Action::Unmanaged { clusters } | Action::Conflict { clusters } => (clusters.join(","), String::new(), String::new(), String::new(), String::new()),
            Action::WaitUnreachable { clusters, .. } => (String::new(), clusters.join(","), String::new(), String::new(), String::new()),
            Action::Invalid { reason } => (String::new(), reason.clone(), String::new(), String::new(), String::new()),
        };
        t.add_row([s.namespace.clone(), s.action.name().to_string(), from, to, objects, pvcs, bytes, s.notes.join("; ")]);
    }
    t
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests;
