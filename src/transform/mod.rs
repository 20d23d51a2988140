//! Pure object transforms of a namespace migration: which exported objects to
//! copy, what to strip and rewrite in each, in which order to apply them, the
//! patches that stop and restart workloads around cutover, and what the
//! destination must offer (preflight requirements).
//!
//! Everything here is a function of `serde_json::Value` objects as the API
//! server returns them; no client, no IO. The rules are those of
//! `notes/migration-rules.md` (collected from Velero, Crane, Stork, K10).
//!
//! | step         | module            |
//! |--------------|-------------------|
//! | leave behind | [`select`]        |
//! | strip/rewrite| [`rewrite`]       |
//! | apply order  | [`order`]         |
//! | cutover      | [`cutover`]       |
//! | preflight    | [`requirements`]  |
//!
//! Choices the notes leave open, made here:
//! - Node ports: a port is a person's when `last-applied-configuration` sets it
//!   or a managedFields entry owns its `f:nodePort` (server-side apply and
//!   `kubectl create` leave no last-applied). An object with neither record
//!   (not from an API server, e.g. an earlier output) keeps its ports, which
//!   makes the transform idempotent.
//! - Jobs that are still running are copied suspended, like CronJobs, with the
//!   original `suspend` recorded: otherwise both clusters would run them.
//! - Auto-created token Secrets are told apart from hand-made ones by their
//!   generated name `<sa>-token-<5 chars of apimachinery's rand alphabet>`.
//! - Objects with the same uid listed under two versions/groups keep the copy
//!   at the best version (non-`extensions` group, GA > beta > alpha, higher first).
//! - Requirements are computed on the transformed objects: classes after the
//!   map, node ports after dropping allocated ones, replica counts from the
//!   recorded annotation. Job status does not travel, so a copied Job counts
//!   its full parallelism.
//! - `batch/v1beta1` CronJobs (no longer served) are written as `batch/v1`,
//!   whose schema reads them unchanged.

pub mod cutover;
pub mod error;
pub mod object;
pub mod order;
pub mod quantity;
pub mod requirements;
pub mod rewrite;
pub mod select;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::TransformError;
pub use object::ObjectRef;
pub use requirements::Requirements;
pub use select::{LeftBehind, Reason};

/// How persistent volumes reach the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeMode {
    /// A new volume is provisioned on the destination and the mover copies the bytes.
    #[default]
    Copy,
    /// Shared storage: the source PersistentVolume is re-created on the destination.
    Reattach,
}

/// Everything the transform needs to know besides the objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformContext {
    /// Migration id, written into the `ferry.dev/migration` label.
    pub migration_id: String,
    /// Source cluster name, written into the `ferry.dev/source-cluster` label.
    pub source_cluster: String,
    /// Destination cluster name.
    pub dest_cluster: String,
    /// Placement commit that caused the migration (annotation).
    pub placement_commit: String,
    /// Source StorageClass name → destination StorageClass name.
    pub storage_class_map: BTreeMap<String, String>,
    /// The source's default StorageClass, resolved by the caller, for claims naming none.
    pub source_default_storage_class: Option<String>,
    /// PriorityClasses that exist on the destination.
    pub dest_priority_classes: BTreeSet<String>,
    /// Keep `loadBalancerIP`/`externalIPs` of LoadBalancer Services.
    pub keep_load_balancer_ips: bool,
    /// `(old, new)` when the namespace is cloned under a new name.
    pub rename: Option<(String, String)>,
    /// How volumes move.
    pub volume_mode: VolumeMode,
}

impl TransformContext {
    /// Checks the values that end up in labels or names, so a bad context fails
    /// here with its field named instead of at apply time on the destination.
    pub fn validate(&self) -> Result<(), TransformError> {
        for (field, value) in [
            ("migration_id", &self.migration_id),
            ("source_cluster", &self.source_cluster),
        ] {
            if let Err(problem) = check_label_value(value) {
                return Err(TransformError::InvalidContext {
                    field,
                    value: value.clone(),
                    problem,
                });
            }
        }
        if self.placement_commit.is_empty() {
            return Err(TransformError::InvalidContext {
                field: "placement_commit",
                value: String::new(),
                problem: "is empty; pass the placement repository commit id".into(),
            });
        }
        if let Some((old, new)) = &self.rename {
            for (field, value) in [("rename.old", old), ("rename.new", new)] {
                if let Err(problem) = check_dns_label(value) {
                    return Err(TransformError::InvalidContext {
                        field,
                        value: value.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_label_value(v: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if v.is_empty() {
        return Err(
            "is empty; it is written into a label, use 1-63 letters, digits, '-', '_' or '.'"
                .into(),
        );
    }
    if v.len() > 63
        || !v.chars().all(ok_char)
        || !v.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !v.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("is not a valid label value: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into());
    }
    Ok(())
}

fn check_dns_label(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("is not a namespace name: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'".into())
    }
}

/// A patch for an object the destination creates by itself (the `default` ServiceAccount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MergePatch {
    /// The object to patch on the destination.
    pub target: ObjectRef,
    /// JSON merge patch (RFC 7386).
    pub patch: Value,
}

/// Result of transforming one namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformOutput {
    /// Objects to apply, in apply order.
    pub apply: Vec<Value>,
    /// Objects not copied, and why.
    pub left_behind: Vec<LeftBehind>,
    /// Patches for objects the destination creates itself.
    pub merge_patches: Vec<MergePatch>,
    /// What the destination must offer.
    pub requirements: Requirements,
}

/// Transforms the exported objects of one namespace into what to apply on the destination.
pub fn transform_namespace(
    objects: Vec<Value>,
    ctx: &TransformContext,
) -> Result<TransformOutput, TransformError> {
    ctx.validate()?;
    let sel = select::select(objects, ctx.volume_mode)?;
    let mut apply = Vec::with_capacity(sel.keep.len());
    for (r, mut o) in sel.keep {
        rewrite::transform_object(&r, &mut o, ctx, &sel.auto_token_secrets)?;
        apply.push(o);
    }
    order::sort_for_apply(&mut apply);
    let merge_patches = sel
        .default_service_account
        .as_ref()
        .and_then(|sa| {
            let mut target = ObjectRef::of(sa, 0).ok()?;
            if let (Some((old, new)), Some(ns)) = (&ctx.rename, &mut target.namespace) {
                if ns == old {
                    *ns = new.clone();
                }
            }
            Some(MergePatch {
                target,
                patch: rewrite::default_service_account_patch(sa)?,
            })
        })
        .into_iter()
        .collect();
    let requirements = requirements::requirements(&apply)?;
    Ok(TransformOutput {
        apply,
        left_behind: sel.left_behind,
        merge_patches,
        requirements,
    })
}
