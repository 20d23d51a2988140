//! Turning what the agent decided and what a migration did into status files
//! (pure), and writing them to the status branch (through the repo edge).
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::model::status::{HistoryEntry, NamespaceStatus, Phase, StageStatus, StatusError, history_file, status_file};
use crate::model::{Desired, Settings};
use crate::pipeline::journal::{Journal, Outcome};
use crate::plan::{Action, Step};
use crate::repo::{GitRepo, Identity, Oid, StatusWrite};

/// Status of a namespace the plan does not migrate. `at` is the placement
/// commit's time: the file only changes when the situation does, so a sync
/// that finds nothing new commits nothing.
pub fn from_step(step: &Step, commit: &str, at: &str) -> NamespaceStatus {
    let (phase, from, to) = match &step.action {
        Action::Nothing { cluster } => (Phase::InSync, None, Some(cluster.clone())),
        Action::Migrate { from, to, .. } => (Phase::Pending, Some(from.clone()), Some(to.clone())),
        Action::Unmanaged { .. } => (Phase::Unmanaged, None, None),
        Action::Conflict { .. } => (Phase::Conflict, None, None),
        Action::WaitUnreachable { .. } => (Phase::Waiting, None, None),
        Action::Suspended { cluster } => (Phase::Suspended, None, Some(cluster.clone())),
        Action::AbsentEverywhere { cluster } => (Phase::Waiting, None, Some(cluster.clone())),
        Action::Invalid { .. } => (Phase::Failed, None, None),
    };
    let mut s = NamespaceStatus::new(&step.namespace, commit, phase);
    s.from = from;
    s.to = to;
    let mut why: Vec<String> = step.notes.clone();
    match &step.action {
        Action::WaitUnreachable { errors, .. } => why.extend(errors.iter().cloned()),
        Action::Invalid { reason } => why.push(reason.clone()),
        Action::AbsentEverywhere { cluster } => why.push(format!("placed on {cluster} but found on no cluster: nothing to move")),
        _ => {}
    }
    if matches!(phase, Phase::Conflict | Phase::Waiting | Phase::Failed) && !why.is_empty() {
        s.errors.push(StatusError { stage: "plan".into(), message: why.remove(0), causes: why, transient: phase == Phase::Waiting, at: at.to_string() });
    }
    s
}

/// Status of a namespace whose migration the journal describes.
pub fn from_journal(j: &Journal) -> NamespaceStatus {
    let phase = match j.outcome {
        Outcome::Running | Outcome::RollingBack => Phase::Migrating,
        Outcome::Succeeded => Phase::Succeeded,
        Outcome::RolledBack => Phase::Failed,
    };
    let mut s = NamespaceStatus::new(&j.namespace, &j.placement_commit, phase);
    s.from = Some(j.from.clone());
    s.to = Some(j.to.clone());
    s.migration_id = Some(j.migration_id.clone());
    s.started_at = Some(j.started_at.clone());
    s.finished_at = j.finished_at.clone();
    s.downtime_ms = j.downtime_ms;
    s.verification = j.verification.clone();
    s.volume_passes = j.volume_passes.clone();
    s.stages = j.stages.iter().map(|r| StageStatus {
        name: r.stage.clone(),
        phase: if r.finished_at.is_some() { "Succeeded".into() } else if j.failure.as_ref().is_some_and(|f| f.stage.name() == r.stage) { "Failed".into() } else { "Running".into() },
        started_at: Some(r.started_at.clone()),
        finished_at: r.finished_at.clone(),
        duration_ms: r.duration_ms,
        objects: r.counts.get("objects").or_else(|| r.counts.get("to apply")).or_else(|| r.counts.get("objects verified")).copied(),
        bytes: r.counts.get("bytes").copied(),
        message: {
            let counts = r.counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
            let text = [counts, r.message.clone().unwrap_or_default()].into_iter().filter(|x| !x.is_empty()).collect::<Vec<_>>().join("; ");
            (!text.is_empty()).then_some(text)
        },
    }).collect();
    if let Some(f) = &j.failure {
        s.errors.push(StatusError {
            stage: f.stage.name().into(),
            message: f.message.clone(),
            causes: Vec::new(),
            transient: false,
            at: j.finished_at.clone().unwrap_or_else(crate::pipeline::journal::now),
        });
    }
    s
}

/// Status of the repository when its placement commit cannot be acted on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub observed_commit: String,
    /// Ready, Invalid, Untrusted.
    pub phase: String,
    pub at: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Writes status files to the status branch and keeps history appended.
#[derive(Clone)]
pub struct StatusWriter {
    pub repo: Arc<Mutex<GitRepo>>,
    pub settings: Settings,
    /// Don't push (dry runs).
    pub dry_run: bool,
}

impl StatusWriter {
    fn identity(&self) -> Identity {
        Identity { name: self.settings.commit_identity.name.clone(), email: self.settings.commit_identity.email.value.clone() }
    }

    /// Write one namespace's status (no commit when unchanged); optionally append a history line.
    pub async fn namespace(&self, status: &NamespaceStatus, commit: Oid, history: Option<HistoryEntry>, message: String) -> anyhow::Result<()> {
        let mut files = vec![(status_file(&self.settings, &status.namespace), status.to_yaml()?.into_bytes())];
        let branch = self.settings.status.branch.value.clone();
        let repo = self.repo.clone();
        if let Some(h) = &history {
            let path = history_file(&self.settings);
            let existing = {
                let repo = repo.lock().await;
                match repo.branch_head(&branch)? {
                    Some(head) => repo.read_file_at(head, &path)?.unwrap_or_default(),
                    None => Vec::new(),
                }
            };
            let mut text = existing;
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(h.to_line().as_bytes());
            text.push(b'\n');
            files.push((path, text));
        }
        self.write(files, commit, status.migration_id.clone(), message).await
    }

    /// Write many namespaces' statuses in one commit (no commit when none changed).
    pub async fn namespaces(&self, statuses: &[NamespaceStatus], commit: Oid, message: String) -> anyhow::Result<()> {
        if statuses.is_empty() {
            return Ok(());
        }
        let mut files = Vec::with_capacity(statuses.len());
        for st in statuses {
            files.push((status_file(&self.settings, &st.namespace), st.to_yaml()?.into_bytes()));
        }
        self.write(files, commit, None, message).await
    }

    /// Write the repository status file.
    pub async fn repository(&self, status: &RepositoryStatus, commit: Oid) -> anyhow::Result<()> {
        let path = format!("{}/_repository.yaml", self.settings.status.path.value.trim_end_matches('/'));
        self.write(vec![(path, serde_saphyr::to_string(status)?.into_bytes())], commit, None, format!("ferry: repository {}", status.phase)).await
    }

    async fn write(&self, files: Vec<(String, Vec<u8>)>, commit: Oid, migration: Option<String>, message: String) -> anyhow::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let mut w = StatusWrite::new(self.settings.status.branch.value.clone(), commit, message);
        w.files = files;
        w.migration = migration;
        w.identity = self.identity();
        let repo = self.repo.clone().lock_owned().await;
        let outcome = tokio::task::spawn_blocking(move || repo.write_status(&w)).await??;
        tracing::debug!(commit = %outcome.commit, attempts = outcome.attempts, unchanged = outcome.unchanged, "status written");
        Ok(())
    }
}

/// The desired state's settings, or defaults when the commit could not be loaded.
pub fn settings_of(desired: Option<&Desired>) -> Settings {
    desired.map(|d| d.settings.clone()).unwrap_or_default()
}
