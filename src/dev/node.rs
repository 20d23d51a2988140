//! The node agent: kube-proxy's part for every harness cluster and, where a
//! real kubelet cannot run ([`super::kubelet::unavailable`], or
//! `FERRY_DEV_NODE=agent`), a small stand-in for the kubelet that runs pods of
//! Ferry's own image as processes, so that mover pods still really run and
//! really mount their volumes while scheduling, Services, EndpointSlices and
//! pod status all go through the real API server.
//!
//! As a stand-in node it registers a Node (`<cluster>-mover`, labelled
//! `ferry.dev/mover=true`, tainted `ferry.dev/mover=true:NoSchedule` so that
//! only pods tolerating it land there), keeps its Lease and Ready condition
//! fresh, and for each pod bound to it:
//! - resolves its volumes: `persistentVolumeClaim` → the bound PV's
//!   `hostPath`/`local` directory, `secret`/`configMap` → files written from the
//!   API objects (with `defaultMode`), `emptyDir` → a fresh directory;
//! - builds a root filesystem (the host's `/usr`, `/etc`, … read-only, a
//!   private `/dev`, `/proc`, `/tmp`) in a private mount namespace
//!   (`unshare --mount`), bind-mounts each volume at its `mountPath` and the
//!   container's termination-message file at `/dev/termination-log`, then
//!   `chroot`s as the pod's `runAsUser`/`runAsGroup` and executes the
//!   container's command — Ferry's image is the only one it knows; its
//!   `ferry` binary is this very executable, mounted at `/usr/local/bin/ferry`;
//! - gives the pod its own loopback address as pod IP (`$(POD_IP)` and
//!   `fieldRef`s expand as on a kubelet), runs `tcpSocket` readiness probes,
//!   and reports phase, conditions, container states, exit codes and
//!   termination messages in the pod status;
//! - honours deletion (SIGTERM, grace period, SIGKILL, then the final delete).
//!
//! In both modes it does kube-proxy's part for Services (kube-proxy keeps its
//! rules in the host's one set of iptables chains; two would fight): it listens on
//! `NODE_IP:nodePort` and forwards to the ready endpoints of the Service's
//! EndpointSlices that live on this node.
//!
//! What it does not do (and Ferry does not rely on): images other than Ferry's,
//! cgroup limits, capabilities, init containers, exec/logs/port-forward APIs.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::Child;

use super::Layout;

/// Label on the node agent's Node (and on any dedicated mover node): mover pods go there.
pub const MOVER_NODE_LABEL: &str = "ferry.dev/mover";
/// Image repository whose pods the node agent runs (any tag).
pub const FERRY_IMAGE_REPOSITORY: &str = "ghcr.io/ferry-gitops/ferry";
/// Where the `ferry` binary appears inside a pod.
pub const BINARY_IN_POD: &str = "/usr/local/bin/ferry";

/// Name of the node agent's Node in `cluster`.
pub fn node_name(cluster: &str) -> String {
    format!("{cluster}-mover")
}

/// Options of one node agent.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub cluster: String,
    /// Loopback address of the node (InternalIP), e.g. 127.0.1.1.
    pub node_ip: String,
    /// First two octets of pod IPs, e.g. "10.201".
    pub pod_ip_prefix: String,
    /// The cluster's Service range, e.g. 10.96.0.0/16 (routed locally: ClusterIPs reach local pods).
    pub service_cidr: String,
    /// A real kubelet is the node: run no pods, register nothing, only do
    /// kube-proxy's part for endpoints in the pod range (which the node's bridge routes).
    pub proxy_only: bool,
}

struct Running {
    child: Child,
    container: String,
    started_at: String,
    restarts: u32,
    termination_log: PathBuf,
    /// terminationMessagePolicy: FallbackToLogsOnError.
    fallback_to_logs: bool,
}

struct PodRun {
    ip: String,
    dir: PathBuf,
    running: Vec<Running>,
    /// Containers that ended: name → (exit code, message, started, finished).
    ended: BTreeMap<String, (i32, String, String, String)>,
    ready: bool,
    killing_since: Option<Instant>,
    reported: Value,
}

/// Run the node agent of `opts.cluster` until killed.
pub async fn run(state_dir: &Path, opts: NodeOptions) -> anyhow::Result<()> {
    let layout = Layout::new(state_dir)?;
    let client =
        crate::kubeconfig::client_for(&layout.component_kubeconfig(&opts.cluster), &opts.cluster)
            .await?;
    let node = node_name(&opts.cluster);
    let root = layout.cluster_dir(&opts.cluster).join("node");
    std::fs::create_dir_all(root.join("pods"))?;
    // Pod IPs: a /16 that is local on this host (AnyIP on the loopback device), so every pod
    // can bind its own address and the EndpointSlice controller accepts it.
    let cidr = format!("{}.0.0/16", opts.pod_ip_prefix);
    let local_ranges: Vec<&String> = if opts.proxy_only { vec![&opts.service_cidr] } else { vec![&cidr, &opts.service_cidr] };
    for &range in &local_ranges {
        let out = std::process::Command::new("ip").args(["route", "replace", "local", range, "dev", "lo"]).output().context("running ip (iproute2)")?;
        if !out.status.success() {
            bail!("cannot route {range} to the loopback device: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    // Ferry's "image": this executable as it was when the node started (a rebuild
    // replaces target/debug/ferry; pods keep running the version the node had).
    let image = root.join("image-ferry");
    let _ = std::fs::remove_file(&image);
    let exe = std::env::current_exe()?;
    if std::fs::hard_link(&exe, &image).is_err() {
        std::fs::copy(&exe, &image).with_context(|| format!("copying {} to {}", exe.display(), image.display()))?;
    }
    if !opts.proxy_only {
        register(&client, &node, &opts).await.context("registering the node")?;
    }
    tracing::info!(node, ip = %opts.node_ip, proxy_only = opts.proxy_only, "node agent started");

    let proxies: Proxies = Arc::default();
    let mut pods: HashMap<String, PodRun> = HashMap::new();
    let mut next_ip: u32 = 1;
    let mut last_heartbeat = Instant::now() - Duration::from_secs(60);
    let mut last_proxy = Instant::now() - Duration::from_secs(60);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        if opts.proxy_only {
            // Nothing of a node's own: only Services.
        } else if last_heartbeat.elapsed() > Duration::from_secs(10) {
            if let Err(e) = heartbeat(&client, &node, &opts).await {
                tracing::warn!(error = %format!("{e:#}"), "node heartbeat failed");
            }
            last_heartbeat = Instant::now();
        }
        if opts.proxy_only {
        } else if let Err(e) = sync_pods(&client, &node, &opts, &root, &mut pods, &mut next_ip).await {
            tracing::warn!(error = %format!("{e:#}"), "pod sync failed; retrying");
        }
        if last_proxy.elapsed() > Duration::from_millis(500) {
            if let Err(e) = sync_node_ports(&client, &opts, &pods, &proxies).await {
                tracing::warn!(error = %format!("{e:#}"), "NodePort sync failed; retrying");
            }
            last_proxy = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = term.recv() => {
                for run in pods.values_mut() {
                    for r in &mut run.running {
                        signal_group(&r.child, nix::sys::signal::Signal::SIGKILL);
                    }
                }
                for &range in &local_ranges {
                    let _ = std::process::Command::new("ip").args(["route", "del", "local", range, "dev", "lo"]).output();
                }
                return Ok(());
            }
        }
    }
}

fn now() -> String {
    crate::pipeline::journal::now()
}

async fn register(client: &kube::Client, node: &str, opts: &NodeOptions) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let obj: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": {
                "kubernetes.io/hostname": node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/region": opts.cluster,
                MOVER_NODE_LABEL: "true",
                "type": "ferry-node-agent",
            },
        },
        "spec": {"taints": [{"key": MOVER_NODE_LABEL, "value": "true", "effect": "NoSchedule"}]},
    }))?;
    match nodes.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    heartbeat(client, node, opts).await
}

async fn heartbeat(client: &kube::Client, node: &str, opts: &NodeOptions) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let t = now();
    let resources =
        json!({"cpu": "8", "memory": "32Gi", "pods": "64", "ephemeral-storage": "100Gi"});
    let cond = |type_: &str, status: &str, reason: &str| json!({"type": type_, "status": status, "reason": reason, "message": "ferry node agent", "lastHeartbeatTime": t, "lastTransitionTime": t});
    nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": opts.node_ip}, {"type": "Hostname", "address": node}],
        "conditions": [
            cond("Ready", "True", "NodeAgentReady"),
            cond("MemoryPressure", "False", "NodeAgentHasSufficientMemory"),
            cond("DiskPressure", "False", "NodeAgentHasNoDiskPressure"),
            cond("PIDPressure", "False", "NodeAgentHasSufficientPID"),
        ],
        "nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "ferry-node-agent",
            "kubeProxyVersion": "", "containerRuntimeVersion": "ferry-node-agent://1", "kernelVersion": "",
            "osImage": "", "bootID": "", "machineID": "", "systemUUID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }}))).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let micro = time::OffsetDateTime::now_utc().format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))?;
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro},
    });
    leases
        .patch(
            node,
            &PatchParams::apply("ferry-node-agent").force(),
            &Patch::Apply(lease),
        )
        .await?;
    Ok(())
}

fn signal_group(child: &Child, sig: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

fn pod_key(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

async fn sync_pods(
    client: &kube::Client,
    node: &str,
    opts: &NodeOptions,
    root: &Path,
    pods: &mut HashMap<String, PodRun>,
    next_ip: &mut u32,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?
        .items;
    let present: std::collections::HashSet<String> = list.iter().map(pod_key).collect();
    // Pods gone from the API (force-deleted): stop their processes.
    for (uid, run) in pods.iter_mut().filter(|(uid, _)| !present.contains(*uid)) {
        for r in &mut run.running {
            signal_group(&r.child, nix::sys::signal::Signal::SIGKILL);
        }
        tracing::info!(uid, "pod removed from the API; processes killed");
    }
    pods.retain(|uid, run| {
        let keep = present.contains(uid);
        if !keep {
            let _ = std::fs::remove_dir_all(&run.dir);
        }
        keep
    });
    for pod in &list {
        let uid = pod_key(pod);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64;
            let done = match pods.get_mut(&uid) {
                Some(run) => {
                    reap(run);
                    if run.running.is_empty() {
                        true
                    } else {
                        let since = *run.killing_since.get_or_insert_with(|| {
                            for r in &run.running {
                                signal_group(&r.child, nix::sys::signal::Signal::SIGTERM);
                            }
                            Instant::now()
                        });
                        if since.elapsed() > Duration::from_secs(grace) {
                            for r in &run.running {
                                signal_group(&r.child, nix::sys::signal::Signal::SIGKILL);
                            }
                        }
                        false
                    }
                }
                None => true,
            };
            if done {
                if let Some(run) = pods.remove(&uid) {
                    let _ = std::fs::remove_dir_all(&run.dir);
                }
                match pods_api
                    .delete(
                        &name,
                        &DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            continue;
        }
        if !pods.contains_key(&uid) {
            if phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            if phase == "Running" {
                // Known to the API as running but not to us: the agent restarted and lost it.
                let patch = json!({"status": {"phase": "Failed", "reason": "NodeAgentRestarted", "message": "the node agent restarted and lost this pod's processes"}});
                pods_api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                continue;
            }
            let ip = format!(
                "{}.{}.{}",
                opts.pod_ip_prefix,
                (*next_ip / 250) % 250,
                *next_ip % 250 + 1
            );
            *next_ip += 1;
            let dir = root
                .join("pods")
                .join(format!("{ns}_{name}_{}", &uid[..8.min(uid.len())]));
            match start_pod(client, pod, opts, &ip, &dir).await {
                Ok(running) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), %ip, "pod started");
                    pods.insert(
                        uid.clone(),
                        PodRun {
                            ip,
                            dir,
                            running,
                            ended: BTreeMap::new(),
                            ready: false,
                            killing_since: None,
                            reported: Value::Null,
                        },
                    );
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %msg, "pod cannot start");
                    let waiting = pod.spec.as_ref().map(|s| s.containers.iter().map(|c| json!({
                        "name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "CreateContainerError", "message": msg}},
                    })).collect::<Vec<_>>()).unwrap_or_default();
                    let patch = json!({"status": {"phase": "Pending", "hostIP": opts.node_ip, "containerStatuses": waiting,
                        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False", "reason": "CreateContainerError", "message": msg}]}});
                    pods_api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            continue;
        }
        let run = pods.get_mut(&uid).expect("present");
        reap(run);
        restart_if_needed(pod, run, opts).await?;
        run.ready = !run.running.is_empty() && probes_pass(pod, &run.ip).await;
        let status = pod_status(pod, run, opts);
        if status != run.reported {
            pods_api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status.clone()})),
                )
                .await?;
            run.reported = status;
        }
    }
    Ok(())
}

/// Move exited processes to `ended`.
fn reap(run: &mut PodRun) {
    let mut still = Vec::new();
    for mut r in std::mem::take(&mut run.running) {
        match r.child.try_wait() {
            Ok(Some(st)) => {
                let code = st.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(9)
                });
                let mut msg = std::fs::read_to_string(&r.termination_log).unwrap_or_default();
                let log = std::fs::read(run.dir.join(format!("{}.log", r.container))).unwrap_or_default();
                let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(2048)..]).trim().to_string();
                if msg.trim().is_empty() && code != 0 && r.fallback_to_logs {
                    msg = tail.clone();
                }
                if msg.len() > 4096 {
                    let mut cut = 4096;
                    while !msg.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    msg.truncate(cut);
                }
                tracing::info!(container = %r.container, code, log_tail = %tail, "container exited");
                run.ended.insert(
                    r.container.clone(),
                    (code, msg, r.started_at.clone(), now()),
                );
            }
            _ => still.push(r),
        }
    }
    run.running = still;
}

async fn restart_if_needed(pod: &Pod, run: &mut PodRun, opts: &NodeOptions) -> anyhow::Result<()> {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    if run.killing_since.is_some() {
        return Ok(());
    }
    let restart: Vec<String> = run
        .ended
        .iter()
        .filter(|(_, (code, ..))| policy == "Always" || (policy == "OnFailure" && *code != 0))
        .map(|(n, _)| n.clone())
        .collect();
    for name in restart {
        let Some(c) = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
        else {
            continue;
        };
        let restarts = run.ended.len() as u32;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut r = spawn_container(pod, c, opts, &run.ip, &run.dir).await?;
        r.restarts = restarts;
        run.ended.remove(&name);
        run.running.push(r);
    }
    Ok(())
}

async fn probes_pass(pod: &Pod, ip: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    for c in &spec.containers {
        let Some(probe) = &c.readiness_probe else {
            continue;
        };
        let Some(tcp) = &probe.tcp_socket else {
            continue;
        };
        let port = match &tcp.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => {
                match c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(n))
                {
                    Some(p) => p.container_port as u16,
                    None => return false,
                }
            }
        };
        let addr = format!("{ip}:{port}");
        let ok = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !ok {
            return false;
        }
    }
    true
}

fn pod_status(pod: &Pod, run: &PodRun, opts: &NodeOptions) -> Value {
    let spec = pod.spec.as_ref();
    let containers: Vec<&Container> = spec
        .map(|s| s.containers.iter().collect())
        .unwrap_or_default();
    let mut statuses = Vec::new();
    for c in &containers {
        let running = run.running.iter().find(|r| r.container == c.name);
        let (state, restarts) = match (running, run.ended.get(&c.name)) {
            (Some(r), _) => (json!({"running": {"startedAt": r.started_at}}), r.restarts),
            (None, Some((code, msg, started, finished))) => (
                json!({"terminated": {
                    "exitCode": code, "reason": if *code == 0 { "Completed" } else { "Error" },
                    "message": msg, "startedAt": started, "finishedAt": finished,
                }}),
                0,
            ),
            (None, None) => (json!({"waiting": {"reason": "ContainerCreating"}}), 0),
        };
        statuses.push(json!({
            "name": c.name, "image": c.image, "imageID": "", "restartCount": restarts,
            "ready": running.is_some() && run.ready, "started": running.is_some(), "state": state,
        }));
    }
    let all_ended = !containers.is_empty()
        && containers.iter().all(|c| run.ended.contains_key(&c.name))
        && run.running.is_empty();
    let phase = if all_ended {
        if run.ended.values().all(|(code, ..)| *code == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let ready = if run.ready && !all_ended {
        "True"
    } else {
        "False"
    };
    let cond = |t: &str, s: &str| json!({"type": t, "status": s});
    json!({
        "phase": phase,
        "hostIP": opts.node_ip, "hostIPs": [{"ip": opts.node_ip}],
        "podIP": run.ip, "podIPs": [{"ip": run.ip}],
        "startTime": run.running.first().map(|r| r.started_at.clone()).or_else(|| run.ended.values().next().map(|e| e.2.clone())),
        "conditions": [cond("PodScheduled", "True"), cond("Initialized", "True"), cond("ContainersReady", ready), cond("Ready", ready)],
        "containerStatuses": statuses,
    })
}

/// Resolve volumes, then start every container of `pod`.
async fn start_pod(
    client: &kube::Client,
    pod: &Pod,
    opts: &NodeOptions,
    ip: &str,
    dir: &Path,
) -> anyhow::Result<Vec<Running>> {
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        bail!("init containers are not supported by the ferry node agent");
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    std::fs::create_dir_all(dir.join("volumes"))?;
    let mut sources = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        let target = dir.join("volumes").join(&v.name);
        let path = if let Some(pvc) = &v.persistent_volume_claim {
            claim_path(client, &ns, &pvc.claim_name).await?
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let secret = Api::<Secret>::namespaced(client.clone(), &ns)
                .get(&name)
                .await
                .with_context(|| format!("secret {ns}/{name}"))?;
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            write_files(&target, &data, s.default_mode.unwrap_or(0o644))?;
            target
        } else if let Some(c) = &v.config_map {
            let name = c.name.clone();
            let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get(&name)
                .await
                .with_context(|| format!("configmap {ns}/{name}"))?;
            let data = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            write_files(&target, &data, c.default_mode.unwrap_or(0o644))?;
            target
        } else if let Some(p) = &v.projected {
            // The service-account token volume every pod gets unless it opts out.
            let mut files = BTreeMap::new();
            for src in p.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let sa = spec
                        .service_account_name
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                        Api::namespaced(client.clone(), &ns);
                    let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"audiences": t.audience.iter().collect::<Vec<_>>(), "expirationSeconds": t.expiration_seconds.unwrap_or(3600)}});
                    let resp: Value = api
                        .create_subresource("token", &sa, &PostParams::default(), &req)
                        .await
                        .with_context(|| format!("token for service account {ns}/{sa}"))?;
                    files.insert(
                        t.path.clone(),
                        resp.pointer("/status/token")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .as_bytes()
                            .to_vec(),
                    );
                } else if let Some(c) = &src.config_map {
                    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                        .get(&c.name)
                        .await
                        .with_context(|| format!("configmap {ns}/{}", c.name))?;
                    let data = cm.data.unwrap_or_default();
                    for item in c.items.iter().flatten() {
                        files.insert(
                            item.path.clone(),
                            data.get(&item.key)
                                .cloned()
                                .unwrap_or_default()
                                .into_bytes(),
                        );
                    }
                } else if let Some(d) = &src.downward_api {
                    for item in d.items.iter().flatten() {
                        let value = match item.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                            Some("metadata.namespace") => ns.clone(),
                            Some("metadata.name") => pod.metadata.name.clone().unwrap_or_default(),
                            other => bail!(
                                "volume {}: downwardAPI field {other:?} is not supported by the ferry node agent",
                                v.name
                            ),
                        };
                        files.insert(item.path.clone(), value.into_bytes());
                    }
                } else {
                    bail!(
                        "volume {}: only serviceAccountToken, configMap and downwardAPI projections are supported by the ferry node agent",
                        v.name
                    );
                }
            }
            write_files(&target, &files, p.default_mode.unwrap_or(0o644))?;
            target
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&target)?;
            target
        } else {
            bail!(
                "volume {}: only persistentVolumeClaim, secret, configMap and emptyDir volumes are supported by the ferry node agent",
                v.name
            );
        };
        sources.insert(v.name.clone(), path);
    }
    let paths = serde_json::to_vec(&sources)?;
    std::fs::write(dir.join("volumes.json"), paths)?;
    let mut running = Vec::new();
    for c in &spec.containers {
        running.push(spawn_container(pod, c, opts, ip, dir).await?);
    }
    Ok(running)
}

async fn claim_path(client: &kube::Client, ns: &str, claim: &str) -> anyhow::Result<PathBuf> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(claim)
        .await
        .with_context(|| format!("claim {ns}/{claim}"))?;
    let Some(pv_name) = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
    else {
        bail!("claim {ns}/{claim} is not bound yet");
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await?;
    let spec = pv.spec.context("PV without spec")?;
    let path = spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path))
        .with_context(|| format!("volume {pv_name} of claim {ns}/{claim} is neither hostPath nor local; the ferry node agent cannot mount it"))?;
    Ok(PathBuf::from(path))
}

fn write_files(dir: &Path, data: &BTreeMap<String, Vec<u8>>, mode: i32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (k, v) in data {
        if k.contains('/') || k.starts_with('.') {
            bail!("key {k:?} is not a plain file name");
        }
        let p = dir.join(k);
        std::fs::write(&p, v)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode as u32 & 0o777))?;
    }
    Ok(())
}

/// `$(VAR)` expansion as a kubelet does it; `$$` escapes.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(j) if env.contains_key(&body[..j]) => {
                    out.push_str(&env[&body[..j]]);
                    rest = &body[j + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

async fn spawn_container(
    pod: &Pod,
    c: &Container,
    opts: &NodeOptions,
    ip: &str,
    dir: &Path,
) -> anyhow::Result<Running> {
    let image = c.image.clone().unwrap_or_default();
    let repo = image.rsplit_once(':').map(|(r, _)| r).unwrap_or(&image);
    if repo != FERRY_IMAGE_REPOSITORY {
        bail!(
            "image {image:?}: the ferry node agent runs only Ferry's own image ({FERRY_IMAGE_REPOSITORY}:<tag>)"
        );
    }
    let spec = pod.spec.as_ref().context("no spec")?;
    let sources: BTreeMap<String, PathBuf> =
        serde_json::from_slice(&std::fs::read(dir.join("volumes.json"))?)?;
    // Environment, with fieldRefs resolved.
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    env.insert(
        "HOSTNAME".to_string(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    for e in c.env.iter().flatten() {
        let v = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(f) = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
            match f.field_path.as_str() {
                "status.podIP" => ip.to_string(),
                "status.hostIP" => opts.node_ip.clone(),
                "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
                "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
                other => bail!(
                    "env {}: fieldRef {other} is not supported by the ferry node agent",
                    e.name
                ),
            }
        } else {
            bail!(
                "env {}: only value and fieldRef are supported by the ferry node agent",
                e.name
            );
        };
        env.insert(e.name.clone(), v);
    }
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    if argv.is_empty() {
        bail!(
            "container {}: Ferry's image has no default command; set command",
            c.name
        );
    }
    let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
    let psc = spec.security_context.as_ref();
    let csc = c.security_context.as_ref();
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
        .unwrap_or(0);
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group))
        .unwrap_or(uid);
    if csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        == Some(true)
        && uid == 0
    {
        bail!(
            "container {}: runAsNonRoot is set but the container would run as root (set runAsUser)",
            c.name
        );
    }

    let rootfs = dir.join(format!("rootfs-{}", c.name));
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&rootfs)?;
    let termination_log = dir.join(format!("{}.termination-log", c.name));
    std::fs::write(&termination_log, b"")?;
    // Writable by any user the container runs as, as a kubelet makes it.
    std::fs::set_permissions(&termination_log, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    let exe = dir.parent().and_then(Path::parent).context("pod dir")?.join("image-ferry");
    let r = quote(&rootfs.display().to_string());
    let mut script = String::from("set -e\n");
    for top in [
        "usr", "etc", "bin", "sbin", "lib", "lib64", "lib32", "libx32",
    ] {
        let host = Path::new("/").join(top);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                std::os::unix::fs::symlink(std::fs::read_link(&host)?, rootfs.join(top))?;
            }
            Ok(m) if m.is_dir() => {
                std::fs::create_dir_all(rootfs.join(top))?;
                script.push_str(&format!(
                    "mount --rbind -o ro /{top} {r}/{top}\nmount -o remount,bind,ro {r}/{top}\n"
                ));
            }
            _ => {}
        }
    }
    for d in ["proc", "dev", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    script.push_str(&format!("mount -t proc proc {r}/proc\nmount -t tmpfs -o mode=755 tmpfs {r}/dev\nmount -t tmpfs -o mode=1777 tmpfs {r}/tmp\n"));
    for n in ["null", "zero", "random", "urandom", "full", "tty"] {
        script.push_str(&format!(
            "touch {r}/dev/{n} && mount --bind /dev/{n} {r}/dev/{n}\n"
        ));
    }
    script.push_str(&format!(
        "touch {r}/dev/termination-log && mount --bind {} {r}/dev/termination-log\n",
        quote(&termination_log.display().to_string())
    ));
    script.push_str(&format!("mount -t tmpfs -o mode=755 tmpfs {r}/usr/local/bin\ntouch {r}{BINARY_IN_POD} && mount --bind {} {r}{BINARY_IN_POD}\n", quote(&exe.display().to_string())));
    for m in c.volume_mounts.iter().flatten() {
        let src = sources
            .get(&m.name)
            .with_context(|| format!("volumeMount {}: no volume of that name", m.name))?;
        if !m.mount_path.starts_with('/') || m.mount_path.contains("..") {
            bail!(
                "volumeMount {}: mountPath {:?} must be absolute",
                m.name,
                m.mount_path
            );
        }
        let src = match &m.sub_path {
            Some(s) if !s.is_empty() => src.join(s),
            _ => src.clone(),
        };
        let target = format!("{r}{}", quote(&m.mount_path));
        script.push_str(&format!(
            "mkdir -p {target}\nmount --bind {} {target}\n",
            quote(&src.display().to_string())
        ));
        if m.read_only == Some(true) {
            script.push_str(&format!("mount -o remount,bind,ro {target}\n"));
        }
    }
    let workdir = c.working_dir.clone().unwrap_or_else(|| "/".into());
    let mut exec = format!(
        "exec chroot --userspec={uid}:{gid} {r} /usr/bin/env -i -C {}",
        quote(&workdir)
    );
    for (k, v) in &env {
        exec.push_str(&format!(" {}", quote(&format!("{k}={v}"))));
    }
    for a in &argv {
        exec.push(' ');
        exec.push_str(&quote(a));
    }
    script.push_str(&exec);
    script.push('\n');
    std::fs::write(dir.join(format!("{}.sh", c.name)), &script)?;

    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", c.name)))?;
    let child = tokio::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--kill-child",
            "sh",
        ])
        .arg(dir.join(format!("{}.sh", c.name)))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting unshare (util-linux)")?;
    Ok(Running {
        child,
        container: c.name.clone(),
        started_at: now(),
        restarts: 0,
        termination_log,
        fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
    })
}

/// Listen address → the ready local endpoints behind it.
type Proxies = Arc<RwLock<HashMap<String, Arc<RwLock<Vec<SocketAddr>>>>>>;

/// kube-proxy's part: listen on NODE_IP:nodePort and on CLUSTER_IP:port (the
/// cluster's service range is routed to the loopback device, so a flat network
/// between the harness clusters), forward to local ready endpoints.
async fn sync_node_ports(
    client: &kube::Client,
    opts: &NodeOptions,
    pods: &HashMap<String, PodRun>,
    proxies: &Proxies,
) -> anyhow::Result<()> {
    let local_ips: std::collections::HashSet<&str> = pods.values().map(|p| p.ip.as_str()).collect();
    let pod_prefix = format!("{}.", opts.pod_ip_prefix);
    let local = |a: &str| if opts.proxy_only { a.starts_with(&pod_prefix) } else { local_ips.contains(a) };
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut wanted: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    let service_prefix = opts.service_cidr.split('.').take(2).collect::<Vec<_>>().join(".") + ".";
    for svc in &services {
        let Some(spec) = &svc.spec else { continue };
        let cluster_ip = spec.cluster_ip.clone().filter(|ip| ip.starts_with(&service_prefix));
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            let mut targets = Vec::new();
            for s in slices.iter().filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name)
            }) {
                let Some(p) = s.ports.iter().flatten().find(|p| {
                    p.name == port.name || s.ports.as_ref().is_some_and(|v| v.len() == 1)
                }) else {
                    continue;
                };
                let Some(target_port) = p.port else { continue };
                for e in s.endpoints.iter().flatten() {
                    if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for a in e
                        .addresses
                        .iter()
                        .filter(|a| local(a.as_str()))
                    {
                        if let Ok(sa) = format!("{a}:{target_port}").parse() {
                            targets.push(sa);
                        }
                    }
                }
            }
            if let Some(ip) = &cluster_ip {
                // Listen as long as the Service exists, with or without ready
                // endpoints: dropping the listener when a readiness probe flaps
                // would reset connections waiting in its accept queue.
                wanted.insert(format!("{ip}:{}", port.port), targets.clone());
            }
            if let Some(node_port) = port.node_port {
                wanted.insert(format!("{}:{node_port}", opts.node_ip), targets);
            }
        }
    }
    let mut current = proxies.write().expect("lock");
    current.retain(|addr, _| wanted.contains_key(addr));
    for (addr, targets) in wanted {
        if let Some(t) = current.get(&addr) {
            *t.write().expect("lock") = targets;
            continue;
        }
        let listener = match std::net::TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen for the Service");
                continue;
            }
        };
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let shared = Arc::new(RwLock::new(targets));
        current.insert(addr.clone(), shared.clone());
        let registry = proxies.clone();
        let key = addr.clone();
        tokio::spawn(async move {
            loop {
                let still = registry
                    .read()
                    .expect("lock")
                    .get(&key)
                    .is_some_and(|t| Arc::ptr_eq(t, &shared));
                if !still {
                    return;
                }
                let accepted =
                    tokio::time::timeout(Duration::from_secs(1), listener.accept()).await;
                let Ok(Ok((mut inbound, _))) = accepted else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    // The connection is accepted before an endpoint is known to
                    // answer (kube-proxy's rules would simply not match yet): keep
                    // trying the Service's current endpoints for a while, as its
                    // list follows the EndpointSlices, before giving up.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut attempt = 0usize;
                    let mut outbound = None;
                    while outbound.is_none() && Instant::now() < deadline {
                        let targets = shared.read().expect("lock").clone();
                        if !targets.is_empty() {
                            let target = targets[attempt % targets.len()];
                            attempt += 1;
                            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(target)).await {
                                Ok(Ok(s)) => outbound = Some(s),
                                _ => tracing::debug!(%target, "endpoint did not answer; retrying"),
                            }
                        }
                        if outbound.is_none() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    let Some(mut outbound) = outbound else {
                        tracing::warn!("no endpoint of the Service answered within 30 s; closing the connection");
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        tracing::info!(%addr, "Service listening");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_a_kubelet() {
        let env = BTreeMap::from([("POD_IP".to_string(), "127.101.0.2".to_string())]);
        assert_eq!(
            expand("--listen=$(POD_IP):7443", &env),
            "--listen=127.101.0.2:7443"
        );
        assert_eq!(
            expand("$(UNKNOWN) $$(POD_IP) $x", &env),
            "$(UNKNOWN) $(POD_IP) $x"
        );
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(quote("a'b"), "'a'\\''b'");
    }
}
