//! Status files Ferry writes to the status branch: one `<namespace>.yaml` per
//! namespace (overwritten) and `history.jsonl` (append-only, one JSON object a
//! line, so concurrent appends merge without conflicts).
use serde::{Deserialize, Serialize};

use super::types::{API_VERSION, Settings};

/// Phase of a namespace as last observed by Ferry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum Phase {
    /// Runs where the repository says.
    InSync,
    /// A migration is planned but not started.
    Pending,
    /// A migration is running.
    Migrating,
    /// The last migration finished; the source is retained.
    Succeeded,
    /// The last migration failed (see `errors`); Ferry waits for a new commit.
    Failed,
    /// The destination or source cluster is unreachable.
    Waiting,
    /// The namespace is live on more than one cluster; Ferry does nothing.
    Conflict,
    /// `suspend: true`.
    Suspended,
    /// Removed from the repository; left where it is.
    Unmanaged,
}

/// `status/<namespace>.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// [`API_VERSION`].
    pub api_version: String,
    /// `PlacementStatus`.
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// Placement commit this status describes.
    pub observed_commit: String,
    /// Current phase.
    pub phase: Phase,
    /// Source cluster of the last/current migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Id of the last/current migration (also in the `ferry.dev/migration` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_id: Option<String>,
    /// RFC 3339 start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Time workloads were unavailable, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Pipeline stages in execution order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// Per-volume data verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<VolumeVerification>,
    /// Every pass of the volume data mover (pre-copy passes, then the final one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_passes: Vec<VolumePass>,
    /// Errors, most recent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<StatusError>,
}

impl NamespaceStatus {
    /// A status with only the required fields.
    pub fn new(namespace: &str, commit: &str, phase: Phase) -> Self {
        NamespaceStatus {
            api_version: API_VERSION.into(),
            kind: "PlacementStatus".into(),
            namespace: namespace.into(),
            observed_commit: commit.into(),
            phase,
            from: None,
            to: None,
            migration_id: None,
            started_at: None,
            finished_at: None,
            downtime_ms: None,
            stages: Vec::new(),
            verification: Vec::new(),
            volume_passes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Render as YAML for the status file.
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::SerializeError> {
        serde_saphyr::to_string(self)
    }

    /// Parse a status file.
    pub fn from_yaml(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }
}

/// One pipeline stage (preflight, export, transform, quiesce, volumes, apply, cutover, verify, cleanup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Skipped`.
    pub phase: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Wall time of the stage, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Objects handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// Bytes moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Free-form note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Hashes proving a volume's bytes arrived intact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeVerification {
    /// PVC name.
    pub pvc: String,
    /// Hash algorithm, e.g. `blake3`.
    pub algorithm: String,
    /// Tree hash on the source.
    pub source_hash: String,
    /// Tree hash on the destination.
    pub destination_hash: String,
    /// Bytes hashed.
    pub bytes: u64,
    /// Files hashed.
    pub files: u64,
}

impl VolumeVerification {
    /// Both sides hashed equal.
    pub fn matches(&self) -> bool {
        self.source_hash == self.destination_hash
    }
}

/// One pass over one volume, as journaled and shown in the status file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumePass {
    pub pvc: String,
    pub pass: u32,
    /// `pre-copy` (application running) or `final` (application stopped).
    pub phase: String,
    pub files_total: u64,
    pub files_sent: u64,
    pub files_deleted: u64,
    /// File bytes sent (before compression).
    pub bytes: u64,
    /// Bytes on the wire (TLS included).
    pub wire_bytes: u64,
    pub duration_ms: u64,
    /// Source files that changed while they were read (pre-copy only).
    pub unstable_files: u64,
    pub source_hash: String,
    pub destination_hash: String,
    /// Address the source's sender dialled (the receiver's Service).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receiver: String,
    /// The uid the sender ran as (0: root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
}

/// An error with its chain of causes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusError {
    /// Stage that failed.
    pub stage: String,
    /// Top-level message.
    pub message: String,
    /// Causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// Whether retrying may help (transient) or a new commit is needed (permanent).
    pub transient: bool,
    /// RFC 3339.
    pub at: String,
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// RFC 3339.
    pub at: String,
    /// Namespace.
    pub namespace: String,
    /// Placement commit.
    pub commit: String,
    /// Phase reached.
    pub phase: Phase,
    /// Source cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Migration id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_id: Option<String>,
    /// Short description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl HistoryEntry {
    /// The line to append (no trailing newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("history entries always serialize")
    }
}

/// Repo-relative path of a namespace's status file.
pub fn status_file(settings: &Settings, namespace: &str) -> String {
    format!("{}/{namespace}.yaml", settings.status.path.value.trim_end_matches('/'))
}

/// Repo-relative path of the history file.
pub fn history_file(settings: &Settings) -> String {
    format!("{}/history.jsonl", settings.status.path.value.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_yaml() {
        let mut s = NamespaceStatus::new("mysql", "0123abcd", Phase::Succeeded);
        s.from = Some("east".into());
        s.to = Some("west".into());
        s.downtime_ms = Some(1234);
        s.stages.push(StageStatus { name: "volumes".into(), phase: "Succeeded".into(), started_at: None, finished_at: None, duration_ms: Some(2500), objects: None, bytes: Some(1 << 20), message: None });
        s.verification.push(VolumeVerification { pvc: "data-mysql-0".into(), algorithm: "blake3".into(), source_hash: "aa".into(), destination_hash: "aa".into(), bytes: 1 << 20, files: 3 });
        s.errors.push(StatusError { stage: "apply".into(), message: "conflict".into(), causes: vec!["already exists".into()], transient: true, at: "2026-01-01T00:00:00Z".into() });
        let yaml = s.to_yaml().unwrap();
        assert!(yaml.contains("phase: Succeeded"), "{yaml}");
        assert!(yaml.contains("observedCommit: 0123abcd"), "{yaml}");
        assert_eq!(NamespaceStatus::from_yaml(&yaml).unwrap(), s);
        assert!(s.verification[0].matches());
    }

    #[test]
    fn paths_follow_settings() {
        let mut settings = Settings::default();
        assert_eq!(status_file(&settings, "web"), "status/web.yaml");
        settings.status.path.value = "ops/ferry/".into();
        assert_eq!(history_file(&settings), "ops/ferry/history.jsonl");
    }

    #[test]
    fn history_line_is_single_line_json() {
        let e = HistoryEntry { at: "t".into(), namespace: "web".into(), commit: "c".into(), phase: Phase::Failed, from: None, to: Some("west".into()), migration_id: None, message: "a\nb".into() };
        let line = e.to_line();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<HistoryEntry>(&line).unwrap(), e);
    }
}
