//! The migration journal: durable progress that makes a migration resumable.
//!
//! Where: a ConfigMap `ferry-journal` in the *source* namespace on the source
//! cluster (and a final copy in the destination namespace once it succeeds).
//! Why there: it lives exactly as long as what it protects — the source is
//! never deleted before the migration is finished — so it needs no extra
//! namespace, CRD or local disk, and any Ferry process (the CLI, a restarted
//! agent, a standby replica) finds it after a crash. Every write is a
//! compare-and-swap on the ConfigMap's resourceVersion, so two runners cannot
//! both advance one migration. The ConfigMap carries `ferry.dev/component`, so
//! export leaves it behind.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterError};
use crate::labels;

/// Name of the journal ConfigMap.
pub const NAME: &str = "ferry-journal";
const KEY: &str = "journal.json";

/// Pipeline stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Preflight,
    Export,
    Transform,
    Apply,
    PreCopy,
    Quiesce,
    Volumes,
    Cutover,
    Verify,
    Retire,
    Done,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Preflight, Stage::Export, Stage::Transform, Stage::Apply, Stage::PreCopy, Stage::Quiesce,
        Stage::Volumes, Stage::Cutover, Stage::Verify, Stage::Retire,
    ];
    pub fn next(self) -> Stage {
        let i = Self::ALL.iter().position(|s| *s == self).map(|i| i + 1).unwrap_or(Self::ALL.len());
        Self::ALL.get(i).copied().unwrap_or(Stage::Done)
    }
    pub fn name(self) -> &'static str {
        match self {
            Stage::Preflight => "preflight",
            Stage::Export => "export",
            Stage::Transform => "transform",
            Stage::Apply => "apply",
            Stage::PreCopy => "pre-copy",
            Stage::Quiesce => "quiesce",
            Stage::Volumes => "volumes",
            Stage::Cutover => "cutover",
            Stage::Verify => "verify",
            Stage::Retire => "retire",
            Stage::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        Self::ALL.into_iter().chain([Stage::Done]).find(|st| st.name() == s)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Overall state of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    RollingBack,
    Succeeded,
    RolledBack,
}

/// What one stage did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// e.g. objects → 12, workloads → 3
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A failure, with the stage it happened in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub stage: Stage,
    pub message: String,
}

/// The journal of one migration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    pub migration_id: String,
    pub namespace: String,
    pub from: String,
    pub to: String,
    pub placement_commit: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Outcome,
    /// The first stage not yet completed.
    pub next: Stage,
    pub stages: Vec<StageRecord>,
    pub failure: Option<Failure>,
    /// Ferry created the destination namespace (so rollback may delete it).
    pub created_destination: bool,
    /// Source workloads were (possibly) stopped: rollback must restore them.
    pub source_quiesced: bool,
    /// When the source was stopped (downtime starts), RFC 3339.
    pub downtime_started_at: Option<String>,
    pub downtime_ms: Option<u64>,
    /// Names of the objects applied, by "apiVersion/Kind"; verify finds each on the destination.
    #[serde(default)]
    pub expected: BTreeMap<String, Vec<String>>,
    /// Bare Pods deleted from the source at quiesce, kept to recreate them
    /// on the destination at cutover, or on the source at rollback.
    #[serde(default)]
    pub bare_pods: Vec<Value>,
    #[serde(default)]
    pub left_behind: Vec<String>,
    /// Every pass of the volume mover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_passes: Vec<crate::model::status::VolumePass>,
    /// Tree hashes of both sides after the final pass, per claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<crate::model::status::VolumeVerification>,
    /// The non-root uid/gid each claim's application runs as (recorded before quiesce).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_user: BTreeMap<String, (i64, i64)>,
}

impl Journal {
    /// Record that `stage` started (idempotent on resume: reuses its open record).
    pub fn begin(&mut self, stage: Stage) {
        if self.stages.last().is_some_and(|r| r.stage == stage.name() && r.finished_at.is_none()) {
            return;
        }
        self.stages.push(StageRecord { stage: stage.name().into(), started_at: now(), ..Default::default() });
    }
    /// Record that `stage` finished with `counts`, and move on.
    pub fn finish(&mut self, stage: Stage, counts: BTreeMap<String, u64>, message: Option<String>) {
        let rec = match self.stages.iter_mut().rev().find(|r| r.stage == stage.name()) {
            Some(r) => r,
            None => {
                self.begin(stage);
                self.stages.last_mut().expect("just pushed")
            }
        };
        let end = now();
        rec.duration_ms = elapsed_ms(&rec.started_at, &end);
        rec.finished_at = Some(end);
        rec.counts = counts;
        rec.message = message;
        self.next = stage.next();
    }
}

/// Current time, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("formats")
}

/// Milliseconds between two RFC 3339 times.
pub fn elapsed_ms(from: &str, to: &str) -> Option<u64> {
    use time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(from, &Rfc3339).ok()?;
    let b = time::OffsetDateTime::parse(to, &Rfc3339).ok()?;
    Some((b - a).whole_milliseconds().max(0) as u64)
}

/// A journal as stored, with the resourceVersion for compare-and-swap.
pub struct Stored {
    pub journal: Journal,
    resource_version: Option<String>,
}

fn cm_ref(namespace: &str) -> crate::cluster::ObjectRef {
    crate::cluster::ObjectRef { api_version: "v1".into(), kind: "ConfigMap".into(), namespace: Some(namespace.into()), name: NAME.into() }
}

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cluster {cluster}: journal {namespace}/{NAME} is unreadable ({detail}); inspect it with kubectl and delete it only if no migration of {namespace} is in progress")]
    Corrupt { cluster: String, namespace: String, detail: String },
    #[error("cluster {cluster}: journal {namespace}/{NAME} was changed by someone else (another Ferry running the same migration?); stop the other runner and retry")]
    Conflict { cluster: String, namespace: String },
}

/// Read the journal of `namespace` from `cluster`.
pub async fn load(cluster: &Cluster, namespace: &str) -> Result<Option<Stored>, JournalError> {
    let Some(cm) = cluster.get(&cm_ref(namespace)).await? else { return Ok(None) };
    let raw = cm.get("data").and_then(|d| d.get(KEY)).and_then(Value::as_str)
        .ok_or_else(|| JournalError::Corrupt { cluster: cluster.name.clone(), namespace: namespace.into(), detail: format!("no data.{KEY}") })?;
    let journal = serde_json::from_str(raw)
        .map_err(|e| JournalError::Corrupt { cluster: cluster.name.clone(), namespace: namespace.into(), detail: e.to_string() })?;
    let rv = cm.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
    Ok(Some(Stored { journal, resource_version: rv }))
}

impl Stored {
    /// A journal not yet written.
    pub fn new(journal: Journal) -> Stored {
        Stored { journal, resource_version: None }
    }

    /// Write the journal to `namespace` on `cluster`, failing if it changed since read.
    pub async fn save(&mut self, cluster: &Cluster, namespace: &str) -> Result<(), JournalError> {
        let body = serde_json::to_string_pretty(&self.journal).expect("journal serializes");
        let mut cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": NAME,
                "namespace": namespace,
                "labels": {labels::COMPONENT: "journal", labels::MIGRATION: self.journal.migration_id},
            },
            "data": {KEY: body},
        });
        match &self.resource_version {
            None => {
                if !cluster.create(&cm).await? {
                    return Err(JournalError::Conflict { cluster: cluster.name.clone(), namespace: namespace.into() });
                }
            }
            Some(rv) => {
                // A merge patch carrying resourceVersion is a compare-and-swap: 409 if it moved.
                cm["metadata"]["resourceVersion"] = json!(rv);
                match cluster.merge_patch(&cm_ref(namespace), &cm).await {
                    Ok(_) => {}
                    Err(ClusterError::Api { source: kube::Error::Api(e), .. }) if e.code == 409 => {
                        return Err(JournalError::Conflict { cluster: cluster.name.clone(), namespace: namespace.into() });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let fresh = cluster.get(&cm_ref(namespace)).await?;
        self.resource_version = fresh.as_ref().and_then(|c| c.pointer("/metadata/resourceVersion")).and_then(Value::as_str).map(str::to_string);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_advance_in_order_and_end_done() {
        let mut s = Stage::Preflight;
        let mut seen = vec![s];
        while s != Stage::Done {
            s = s.next();
            seen.push(s);
        }
        assert_eq!(seen.len(), 11);
        assert_eq!(seen[4], Stage::PreCopy);
        assert_eq!(seen[5], Stage::Quiesce);
        assert_eq!(Stage::parse("cutover"), Some(Stage::Cutover));
        assert_eq!(Stage::parse("nope"), None);
    }

    #[test]
    fn elapsed_between_rfc3339_times() {
        assert_eq!(elapsed_ms("2026-01-01T00:00:00Z", "2026-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(elapsed_ms("garbage", "2026-01-01T00:00:01Z"), None);
    }
}
