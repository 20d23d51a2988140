//! The documents of a placement repository, as they are written in YAML.
//!
//! Names and references that validation reports on are `Spanned` so findings
//! can point at them; spans serialize as plain values.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// `apiVersion` of every Ferry document.
pub const API_VERSION: &str = "ferry.dev/v1alpha1";

/// What every document starts with; read leniently first to decide how to parse the rest.
#[derive(Debug, Deserialize)]
pub struct Header {
    /// Must be [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: Option<Spanned<String>>,
    /// `Settings`, `Cluster`, `Placement` or `Overlay`.
    pub kind: Option<Spanned<String>>,
}

/// `metadata` of named documents.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Cluster name or namespace name (DNS-1123 label).
    pub name: Spanned<String>,
    /// Labels (clusters only): visible to overlay templates as `cluster.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

// ---------------------------------------------------------------- Settings

/// `ferry.yaml`: repository-wide settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsDoc {
    /// [`API_VERSION`].
    pub api_version: Spanned<String>,
    /// `Settings`.
    pub kind: Spanned<String>,
    /// The settings.
    #[serde(default)]
    pub spec: Settings,
}

/// Repository-wide settings; every field has a default so `ferry.yaml` is optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// Where status files are written.
    #[serde(default)]
    pub status: StatusSettings,
    /// Author and committer of status commits.
    #[serde(default)]
    pub commit_identity: CommitIdentity,
    /// Keys whose signatures on placement commits Ferry accepts. Empty: signatures are not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_signing_keys: Vec<SigningKey>,
}

/// Where Ferry writes status files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusSettings {
    /// Branch for status commits. A dedicated branch by default because protected
    /// main branches reject bot pushes.
    #[serde(default = "default_status_branch")]
    pub branch: Spanned<String>,
    /// Directory (repo-relative) holding `<namespace>.yaml` and `history.jsonl`.
    #[serde(default = "default_status_path")]
    pub path: Spanned<String>,
}

impl Default for StatusSettings {
    fn default() -> Self {
        StatusSettings { branch: default_status_branch(), path: default_status_path() }
    }
}

/// A value that was not written in the file (a default).
fn unplaced(value: &str) -> Spanned<String> {
    Spanned::new(value.into(), serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}

fn default_status_branch() -> Spanned<String> {
    unplaced("ferry-status")
}
fn default_status_path() -> Spanned<String> {
    unplaced("status")
}

/// Git identity of Ferry's status commits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommitIdentity {
    /// Author name.
    #[serde(default = "default_identity_name")]
    pub name: String,
    /// Author e-mail.
    #[serde(default = "default_identity_email")]
    pub email: Spanned<String>,
}

impl Default for CommitIdentity {
    fn default() -> Self {
        CommitIdentity { name: default_identity_name(), email: default_identity_email() }
    }
}

fn default_identity_name() -> String {
    "Ferry".into()
}
fn default_identity_email() -> Spanned<String> {
    unplaced("ferry@localhost")
}

/// A key trusted to sign placement commits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningKey {
    /// Who owns the key (for messages).
    pub name: String,
    /// OpenSSH public key line (`ssh-ed25519 AAAA…`) or an ASCII-armored OpenPGP public key.
    pub public_key: Spanned<String>,
}

// ----------------------------------------------------------------- Cluster

/// `clusters/<name>.yaml`: a cluster Ferry can place namespaces on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterDoc {
    /// [`API_VERSION`].
    pub api_version: Spanned<String>,
    /// `Cluster`.
    pub kind: Spanned<String>,
    /// Name and labels.
    pub metadata: Metadata,
    /// The rest.
    pub spec: ClusterSpec,
}

/// How to reach a cluster and what differs on it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// How to reach the API server.
    pub access: Spanned<Access>,
    /// Free-form variables for overlay templates (`cluster.vars.*`), e.g. ingress domain.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Storage class on the source → storage class on this cluster, applied to PVCs moved here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_classes: BTreeMap<String, String>,
    /// Capacity kept free on this cluster when checking that a namespace fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<Reserve>,
    /// How volume data reaches this cluster's mover pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover: Option<MoverSpec>,
}

/// The volume mover on a destination cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MoverSpec {
    /// Service type of the receiver: ClusterIP (flat network between clusters), NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<crate::pipeline::volumes::ServiceType>,
    /// Host the source dials instead of the address the Service reports (e.g. a DNS name in front of the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Ferry's image for the mover pods (default: this Ferry's release image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Move volume data through an S3 bucket instead of a direct TLS connection
    /// (for clusters that cannot reach each other). Credentials come from
    /// Ferry's environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// optional `AWS_SESSION_TOKEN`) and reach the mover pods in a Secret that
    /// is deleted with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3MoverSpec>,
}

/// Where the S3 transport keeps a migration's chunks and manifests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3MoverSpec {
    /// `http(s)://host[:port]`, reachable from the mover pods of both clusters (path-style addressing).
    pub endpoint: String,
    /// `s3://BUCKET[/PREFIX]`; each claim of a migration gets its own prefix below it.
    pub bucket: String,
    /// Signing region (default us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Exactly one way of reaching a cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Access {
    /// Context name in the agent's kubeconfig (running outside the clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_context: Option<String>,
    /// Secret holding a kubeconfig (running in-cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<SecretRef>,
}

/// A key of a Secret in the cluster the agent runs in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key inside `data`; defaults to `kubeconfig`.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "kubeconfig".into()
}

/// Headroom kept free (Kubernetes quantities).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    /// CPU, e.g. `"2"` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Spanned<String>>,
    /// Memory, e.g. `4Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Spanned<String>>,
    /// Persistent storage, e.g. `100Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Spanned<String>>,
}

// --------------------------------------------------------------- Placement

/// `namespaces/<ns>.yaml`: where a namespace runs and how it moves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementDoc {
    /// [`API_VERSION`].
    pub api_version: Spanned<String>,
    /// `Placement`.
    pub kind: Spanned<String>,
    /// `name` is the namespace.
    pub metadata: Metadata,
    /// The placement.
    pub spec: PlacementSpec,
}

/// Desired cluster of a namespace and how to get it there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Name of the cluster the namespace should run on.
    pub cluster: Spanned<String>,
    /// How the workloads move.
    #[serde(default)]
    pub strategy: Strategy,
    /// How persistent volumes move.
    #[serde(default)]
    pub volumes: VolumeMode,
    /// Commands run in pods around the move.
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// While true, Ferry does nothing for this namespace.
    #[serde(default)]
    pub suspend: bool,
    /// How long the retired source namespace is kept (scaled to zero), e.g. `72h`.
    #[serde(default = "default_retention")]
    pub retention: Spanned<String>,
    /// For `pre-copy`: longest acceptable final sync (the downtime budget), e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_final_sync: Option<Spanned<String>>,
}

fn default_retention() -> Spanned<String> {
    unplaced("168h")
}

/// Migration strategy.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Scale to zero, copy everything, start on the destination.
    #[default]
    StopCopyStart,
    /// Copy volumes while running, then stop and sync only what changed.
    PreCopy,
    /// Move a StatefulSet one ordinal at a time with `spec.ordinals.start`.
    StatefulsetOrdinals,
}

/// How persistent volumes get to the destination.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeMode {
    /// New volumes on the destination, data copied.
    #[default]
    Copy,
    /// Re-attach the same shared storage (PVs retained and re-bound), no copy.
    Reattach,
}

/// Hooks around quiesce and start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hooks {
    /// Run on the source before workloads are scaled down (e.g. `nodetool drain`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before_quiesce: Vec<Hook>,
    /// Run on the destination after workloads are ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_start: Vec<Hook>,
}

impl Hooks {
    /// No hook at all.
    pub fn is_empty(&self) -> bool {
        self.before_quiesce.is_empty() && self.after_start.is_empty()
    }
}

/// A command executed in every pod a selector matches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hook {
    /// Name for logs and status.
    pub name: String,
    /// Pod label selector (all must match).
    pub selector: BTreeMap<String, String>,
    /// Container to exec in; the pod's first container when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// argv of the command.
    pub command: Spanned<Vec<String>>,
    /// Give up after this long, e.g. `5m`.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Spanned<String>,
    /// When true, a failing hook stops the migration.
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_hook_timeout() -> Spanned<String> {
    unplaced("5m")
}
fn default_true() -> bool {
    true
}

// ----------------------------------------------------------------- Overlay

/// `overlays/<ns>/overlay.yaml`: changes applied to a namespace's objects on its
/// destination, kustomize-like. Patch and resource files are minijinja templates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlayDoc {
    /// [`API_VERSION`].
    pub api_version: Spanned<String>,
    /// `Overlay`.
    pub kind: Spanned<String>,
    /// Patches, applied in order.
    #[serde(default)]
    pub patches: Vec<PatchRef>,
    /// Extra objects created in the namespace (files relative to the overlay directory).
    #[serde(default)]
    pub resources: Vec<Spanned<String>>,
}

/// One patch: from a file or inline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchRef {
    /// File relative to the overlay directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    /// Inline patch text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Spanned<String>>,
    /// Which objects to patch; strategic-merge patches default to the object they name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// Object selector for patches.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    /// API group (`""` or omitted for core when `version` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// API version without group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Exact object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Equality-based label selector, `k=v,k2=v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// Documents that carry `apiVersion` and `kind`.
pub trait Kinded {
    /// `apiVersion` with its position.
    fn api_version(&self) -> &Spanned<String>;
    /// `kind` with its position.
    fn kind(&self) -> &Spanned<String>;
}

macro_rules! kinded {
    ($($t:ty),*) => {$(
        impl Kinded for $t {
            fn api_version(&self) -> &Spanned<String> {
                &self.api_version
            }
            fn kind(&self) -> &Spanned<String> {
                &self.kind
            }
        }
    )*};
}
kinded!(SettingsDoc, ClusterDoc, PlacementDoc, OverlayDoc);
