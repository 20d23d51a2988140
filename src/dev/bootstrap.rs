//! What a fresh harness cluster gets once its control plane is up: simulated
//! nodes with realistic allocatable resources, a default StorageClass served
//! by the hostPath provisioner, and the `default` ServiceAccount in place.
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{ClusterState, DEFAULT_STORAGE_CLASS, PROVISIONER_NAME};

pub(super) async fn run(client: &kube::Client, c: &ClusterState) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 1..=c.nodes {
        let name = format!("{}-node-{i}", c.name);
        let resources = json!({"cpu": c.node_cpu, "memory": c.node_memory, "pods": "110", "ephemeral-storage": "100Gi"});
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "ferry-dev",
                    "topology.kubernetes.io/region": c.name,
                    "topology.kubernetes.io/zone": format!("{}-{}", c.name, (b'a' + ((i - 1) % 3) as u8) as char),
                    "type": "kwok",
                },
            },
            "spec": {},
            "status": {"capacity": resources, "allocatable": resources},
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        // Status is a subresource: set it explicitly so kwok keeps our numbers.
        nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"capacity": resources, "allocatable": resources}}))).await?;
    }

    let scs: Api<StorageClass> = Api::all(client.clone());
    let sc: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": DEFAULT_STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true,
    }))?;
    match scs.create(&PostParams::default(), &sc).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ready, total) = node_readiness(client).await?;
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let sa_ok = sa.get_opt("default").await?.is_some();
        // kwok's nodes plus the node agent's real one.
        if ready == c.nodes + 1 && total == c.nodes + 1 && sa_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out: {ready}/{total} nodes Ready, default ServiceAccount present: {sa_ok} (see the kwok and kube-controller-manager logs)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (Ready nodes, all nodes).
pub(super) async fn node_readiness(client: &kube::Client) -> anyhow::Result<(u32, u32)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&Default::default()).await?;
    let ready = list.items.iter().filter(|n| {
        n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }).count();
    Ok((ready as u32, list.items.len() as u32))
}
