//! A small dynamic provisioner for the harness: PVCs of a StorageClass whose
//! provisioner is [`PROVISIONER_NAME`] get a hostPath PersistentVolume backed
//! by a fresh directory under `STATE/<cluster>/volumes/`, pre-bound to the
//! claim (the controller-manager's PV controller completes the binding).
//! Released volumes of reclaim policy Delete have their directory removed.
//!
//! It polls instead of watching: a dev cluster holds few claims, and a poll
//! loop has no watch-restart edge cases to get wrong.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use super::{Layout, PROVISIONER_NAME};
use crate::labels;

/// Run the provisioner for `cluster` until killed.
pub async fn run(state_dir: &Path, cluster: &str) -> anyhow::Result<()> {
    let layout = Layout::new(state_dir)?;
    let client = crate::kubeconfig::client_for(&layout.component_kubeconfig(cluster), cluster).await?;
    tracing::info!(cluster, "hostPath provisioner started");
    loop {
        if let Err(e) = reconcile(&client, &layout, cluster).await {
            tracing::warn!(cluster, error = %e, "provisioner pass failed; retrying");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn reconcile(client: &kube::Client, layout: &Layout, cluster: &str) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let classes = classes.list(&ListParams::default()).await?.items;
    let ours: BTreeMap<String, StorageClass> = classes.iter()
        .filter(|sc| sc.provisioner == PROVISIONER_NAME)
        .map(|sc| (sc.metadata.name.clone().unwrap_or_default(), sc.clone()))
        .collect();
    let default_class = classes.iter()
        .find(|sc| sc.metadata.annotations.as_ref().and_then(|a| a.get("storageclass.kubernetes.io/is-default-class")).is_some_and(|v| v == "true"))
        .and_then(|sc| sc.metadata.name.clone());

    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let existing = pvs.list(&ListParams::default()).await?.items;
    let claimed: BTreeSet<String> = existing.iter()
        .filter_map(|pv| pv.spec.as_ref()?.claim_ref.as_ref()?.uid.clone())
        .collect();

    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    for pvc in pvcs.list(&ListParams::default()).await?.items {
        let Some(spec) = pvc.spec.as_ref() else { continue };
        let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase != "Pending" || spec.volume_name.is_some() || pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let class = spec.storage_class_name.clone().or_else(|| default_class.clone());
        let Some(class) = class else { continue };
        let Some(sc) = ours.get(&class) else { continue };
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        if claimed.contains(&uid) {
            continue;
        }
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let size = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).map(|q| q.0.clone()).unwrap_or_else(|| "1Gi".into());
        let pv_name = format!("pvc-{uid}");
        let dir = layout.volumes(cluster).join(format!("{ns}_{name}_{}", &uid[..8.min(uid.len())]));
        std::fs::create_dir_all(&dir)?;
        let pv: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "labels": {labels::DEV_PROVISIONED: "true"},
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class,
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            },
        }))?;
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => tracing::info!(cluster, namespace = %ns, claim = %name, volume = %pv_name, path = %dir.display(), "provisioned"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    for pv in existing {
        let ours = pv.metadata.annotations.as_ref().and_then(|a| a.get("pv.kubernetes.io/provisioned-by")).is_some_and(|p| p == PROVISIONER_NAME);
        let Some(spec) = pv.spec.as_ref() else { continue };
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        if !ours || !released || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") {
            continue;
        }
        if let Some(path) = spec.host_path.as_ref().map(|h| h.path.clone()) {
            // Only ever remove directories inside this cluster's volume root.
            let root = layout.volumes(cluster);
            if Path::new(&path).starts_with(&root) && Path::new(&path).exists() {
                std::fs::remove_dir_all(&path)?;
            }
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        match pvs.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(cluster, volume = %name, "deleted released volume"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
