//! Stopping the source, starting the destination, and telling when workloads are Ready.
use std::time::Duration;

use serde_json::Value;

use super::Migration;
use super::journal::Stored;
use crate::cluster::{Cluster, obj_ref};
use crate::labels;
use crate::transform::cutover;

/// Kinds whose pods Ferry stops and starts.
const WORKLOADS: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "CronJob"),
];

fn has_controller(o: &Value) -> bool {
    o.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|a| a.iter().any(|r| r["controller"] == true))
}

async fn workloads(cluster: &Cluster, ns: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for (av, kind) in WORKLOADS {
        for o in cluster.list(av, kind, Some(ns), None).await? {
            // ReplicaSets of Deployments are the Deployment's business.
            if !has_controller(&o) {
                out.push(o);
            }
        }
    }
    Ok(out)
}

fn running_pod(p: &Value) -> bool {
    let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    let ours = p.pointer("/metadata/labels").and_then(|l| l.get(labels::COMPONENT)).is_some();
    !ours && phase != "Succeeded" && phase != "Failed"
}

/// Apply the merge patch `make` computes for each object, several at a time.
async fn patch_all(
    cluster: &Cluster,
    objects: &[Value],
    make: fn(&crate::transform::ObjectRef, &Value) -> Result<Option<Value>, crate::transform::TransformError>,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut patches = Vec::new();
    for o in objects {
        let r = obj_ref(o);
        if let Some(p) = make(&r, o)? {
            patches.push((r, p));
        }
    }
    let mut results = futures::stream::iter(patches.iter().map(|(r, p)| cluster.merge_patch(r, p))).buffer_unordered(16);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Stop every workload in the source namespace (recording originals) and wait until its pods are gone.
pub(super) async fn quiesce(m: &Migration<'_>, stored: &mut Stored) -> anyhow::Result<usize> {
    let ns = &m.spec.namespace;
    // Journal first: from here on a rollback must restore the source.
    if !stored.journal.source_quiesced {
        stored.journal.source_quiesced = true;
        stored.journal.downtime_started_at = Some(super::journal::now());
        m.save(stored).await?;
    }
    run_hooks(m, m.source, &m.spec.before_quiesce, "beforeQuiesce").await?;
    let source_workloads = workloads(m.source, ns).await?;
    let mut stopped = source_workloads.len();
    patch_all(m.source, &source_workloads, cutover::quiesce_patch).await?;
    // Bare Pods have no controller to scale: keep them in the journal, then delete.
    let bare: Vec<Value> = m.source.list("v1", "Pod", Some(ns), None).await?.into_iter()
        .filter(|p| !has_controller(p) && running_pod(p))
        .collect();
    if !bare.is_empty() {
        for p in &bare {
            if !stored.journal.bare_pods.iter().any(|q| q.pointer("/metadata/name") == p.pointer("/metadata/name")) {
                stored.journal.bare_pods.push(p.clone());
            }
        }
        m.save(stored).await?;
        for p in &bare {
            m.source.delete(&obj_ref(p)).await?;
        }
        stopped += bare.len();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let left: Vec<String> = m.source.list("v1", "Pod", Some(ns), None).await?.iter()
            .filter(|p| running_pod(p))
            .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
            .collect();
        if left.is_empty() {
            break;
        }
        m.progress.detail(&format!("waiting for {} source pod(s) to stop", left.len()));
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("source pods still running after 300s: {}", left.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(stopped)
}

/// Scale the destination to the recorded counts, start bare Pods, wait until all is Ready.
pub(super) async fn cutover(m: &Migration<'_>, stored: &mut Stored) -> anyhow::Result<usize> {
    let ns = &m.spec.namespace;
    let dest_workloads = workloads(m.dest, ns).await?;
    patch_all(m.dest, &dest_workloads, cutover::restore_patch).await?;
    for p in &stored.journal.bare_pods {
        let mut pod = p.clone();
        crate::transform::rewrite::strip_common(&mut pod);
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("nodeName");
        }
        let mut pod = pod;
        pod["metadata"]["labels"][labels::MIGRATION] = Value::String(stored.journal.migration_id.clone());
        pod["metadata"]["labels"][labels::SOURCE_CLUSTER] = Value::String(m.source.name.clone());
        m.dest.apply(&pod).await?;
    }
    let deadline = tokio::time::Instant::now() + m.spec.ready_timeout;
    loop {
        let waiting = not_ready(m.dest, ns).await?;
        if waiting.is_empty() {
            break;
        }
        m.progress.detail(&format!("waiting for {}", waiting.join(", ")));
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "workloads not Ready on {} after {}s: {} (check events: kubectl --context {} -n {ns} get events)",
                m.dest.name, m.spec.ready_timeout.as_secs(), waiting.join(", "), m.dest.name
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    run_hooks(m, m.dest, &m.spec.after_start, "afterStart").await?;
    Ok(dest_workloads.len() + stored.journal.bare_pods.len())
}

/// Run each hook in every Running pod its selector picks. A required hook
/// that fails (or finds no pod) fails the stage; an optional one is logged.
async fn run_hooks(m: &Migration<'_>, cluster: &Cluster, hooks: &[super::HookSpec], when: &str) -> anyhow::Result<()> {
    let ns = &m.spec.namespace;
    for h in hooks {
        let selector = h.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let pods: Vec<String> = cluster.list("v1", "Pod", Some(ns), Some(&selector)).await?.iter()
            .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"))
            .filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut problems = Vec::new();
        if pods.is_empty() {
            problems.push(format!("no Running pod matches {selector}"));
        }
        for pod in &pods {
            m.progress.detail(&format!("hook {} in {pod}", h.name));
            match cluster.exec(ns, pod, h.container.as_deref(), &h.command, h.timeout).await {
                Ok(_) => tracing::info!(hook = %h.name, %pod, cluster = %cluster.name, "hook succeeded"),
                Err(e) => problems.push(format!("{pod}: {e}")),
            }
        }
        if !problems.is_empty() {
            let msg = format!("{when} hook {:?} ({}) on {}: {}", h.name, h.command.join(" "), cluster.name, problems.join("; "));
            if h.required {
                anyhow::bail!("{msg} (mark the hook `required: false` to go on despite failures)");
            }
            tracing::warn!("{msg}; not required, continuing");
        }
    }
    Ok(())
}

/// Put the source back as it was before quiesce.
pub(super) async fn restore_source(m: &Migration<'_>, stored: &mut Stored) -> anyhow::Result<()> {
    let ns = &m.spec.namespace;
    if m.source.namespace(ns).await?.is_none() {
        anyhow::bail!("the source namespace {ns} is gone from {}; cannot restore it", m.source.name);
    }
    patch_all(m.source, &workloads(m.source, ns).await?, cutover::restore_patch).await?;
    for p in &stored.journal.bare_pods {
        let mut pod = p.clone();
        crate::transform::rewrite::strip_common(&mut pod);
        m.source.create(&pod).await?;
    }
    stored.journal.source_quiesced = false;
    Ok(())
}

/// Workloads in `ns` that are not Ready yet, as "Kind/name (ready/want)".
pub(super) async fn not_ready(cluster: &Cluster, ns: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for o in workloads(cluster, ns).await? {
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let int = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let want = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let observed = int("/status/observedGeneration") >= int("/metadata/generation");
        let (ready, ok) = match kind {
            "Deployment" => {
                let avail = int("/status/availableReplicas");
                (avail, observed && avail == want && int("/status/updatedReplicas") == want && int("/status/replicas") == want)
            }
            "StatefulSet" | "ReplicaSet" => {
                let r = int("/status/readyReplicas");
                (r, observed && r == want && int("/status/replicas") == want)
            }
            _ => continue,
        };
        if !ok {
            out.push(format!("{kind}/{name} ({ready}/{want})"));
        }
    }
    for p in cluster.list("v1", "Pod", Some(ns), None).await? {
        if has_controller(&p) || !running_pod(&p) {
            continue;
        }
        let ready = p.pointer("/status/conditions").and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if !ready {
            out.push(format!("Pod/{}", p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()));
        }
    }
    Ok(out)
}
