//! The placement repository: Ferry's API. Types, loading from an in-memory
//! file map (the agent reads a git tree without a checkout), validation with
//! positioned findings, and the status files Ferry writes back.
//!
//! Layout (see `examples/placement-repo/README.md`):
//! `ferry.yaml` (Settings), `clusters/*.yaml` (Cluster), `namespaces/*.yaml`
//! (Placement), `overlays/<namespace>/overlay.yaml` (Overlay) plus the patch
//! and resource files it names.
pub mod cli;
pub mod finding;
pub mod names;
pub mod status;
pub mod types;
pub mod validate;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use finding::{Code, Finding, Report, Severity};
pub use types::*;

use crate::overlay::{ClusterInfo, OverlayContext, OverlaySource};

/// Repository files by repo-relative path (`/`-separated), as read from a
/// working directory or a git tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFiles(pub BTreeMap<String, String>);

/// Reading a working directory failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory or a file in it could not be read.
    #[error("reading {path}")]
    Io {
        /// Path that failed.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl RepoFiles {
    /// Read every UTF-8 file under `dir`, skipping `.git` and hidden entries.
    /// Binary files are skipped: nothing Ferry reads is binary.
    pub fn from_dir(dir: &Path) -> Result<Self, ReadError> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        // Symlinked directories are followed; remember where we have been so a cycle ends.
        let mut visited = std::collections::BTreeSet::new();
        while let Some(d) = stack.pop() {
            if !visited.insert(std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone())) {
                continue;
            }
            let entries = std::fs::read_dir(&d).map_err(|source| ReadError::Io { path: d.display().to_string(), source })?;
            for entry in entries {
                let entry = entry.map_err(|source| ReadError::Io { path: d.display().to_string(), source })?;
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let ft = entry.file_type().map_err(|source| ReadError::Io { path: path.display().to_string(), source })?;
                // Follow symlinks to directories too: examples link fixtures in.
                if ft.is_dir() || (ft.is_symlink() && path.is_dir()) {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).map_err(|source| ReadError::Io { path: path.display().to_string(), source })?;
                    if let Ok(text) = String::from_utf8(bytes) {
                        let rel = path.strip_prefix(dir).unwrap_or(&path);
                        let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                        files.insert(key, text);
                    }
                }
            }
        }
        Ok(RepoFiles(files))
    }

    /// Contents of a file.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }

    /// Insert or replace a file (handy in tests and generators).
    pub fn insert(&mut self, path: impl Into<String>, text: impl Into<String>) {
        self.0.insert(path.into(), text.into());
    }
}

/// A loaded cluster: its document and the file it came from.
#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    /// Name (= `metadata.name`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Spec.
    pub spec: ClusterSpec,
    /// Repo-relative file.
    pub file: String,
}

impl Cluster {
    /// What overlay templates see of this cluster.
    pub fn info(&self) -> ClusterInfo {
        ClusterInfo { name: self.name.clone(), labels: self.labels.clone(), vars: self.spec.variables.clone() }
    }
}

/// A loaded placement.
#[derive(Clone, Debug, Serialize)]
pub struct Placement {
    /// The namespace.
    pub namespace: String,
    /// Spec.
    pub spec: PlacementSpec,
    /// Repo-relative file.
    pub file: String,
}

impl Placement {
    /// Spec without source positions, for comparing two commits: moving a
    /// document within its file is not a placement change.
    pub fn fingerprint(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }
}

/// The desired state a commit expresses.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Repository settings (defaults when `ferry.yaml` is absent).
    pub settings: Settings,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Placements by namespace.
    pub placements: BTreeMap<String, Placement>,
    /// Overlays by namespace.
    pub overlays: BTreeMap<String, OverlaySource>,
}

impl Desired {
    /// Template context for `namespace` moving from `source` to its placed cluster.
    pub fn overlay_context(&self, namespace: &str, source: Option<&str>) -> Option<OverlayContext> {
        let p = self.placements.get(namespace)?;
        let dest = self.clusters.get(&p.spec.cluster.value)?;
        Some(OverlayContext {
            namespace: namespace.to_string(),
            cluster: dest.info(),
            source: source.map(|s| self.clusters.get(s).map(Cluster::info).unwrap_or(ClusterInfo { name: s.to_string(), ..Default::default() })),
        })
    }
}

/// Load a repository without checks beyond what parsing needs. Findings of
/// this stage are included in [`validate::validate`]'s report.
pub fn load(files: &RepoFiles) -> (Desired, Vec<Finding>) {
    validate::load(files)
}

/// Load and validate; errors make the [`Report`] not ok.
pub fn validate(files: &RepoFiles, objects: Option<&BTreeMap<String, Vec<serde_json::Value>>>) -> (Desired, Report) {
    validate::validate(files, objects)
}

/// Loading for consumers that need a usable model: fails on any error finding.
#[derive(Debug, thiserror::Error)]
#[error("the placement repository has {} error(s); first: {}", .0.errors, .0.findings.iter().find(|f| f.severity == Severity::Error).map(|f| f.to_string()).unwrap_or_default())]
pub struct InvalidRepo(pub Report);

/// Load and validate, returning the model only when there is no error.
pub fn load_valid(files: &RepoFiles) -> Result<Desired, InvalidRepo> {
    let (desired, report) = validate(files, None);
    if report.ok() { Ok(desired) } else { Err(InvalidRepo(report)) }
}
