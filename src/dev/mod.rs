//! The local multi-cluster harness behind `ferry dev up | down | status`.
//!
//! Each cluster is a set of real upstream processes — etcd, kube-apiserver
//! (TLS, RBAC, service accounts), kube-controller-manager, kube-scheduler and
//! kwok simulating nodes and pods — plus Ferry's own hostPath volume
//! provisioner. Everything lives under one state directory:
//!
//! ```text
//! STATE/state.json            ports and pids of every component
//! STATE/kubeconfig            one context per cluster
//! STATE/<cluster>/pki/        CA, serving and client certificates, SA key
//! STATE/<cluster>/etcd/       etcd data
//! STATE/<cluster>/volumes/    one directory per provisioned PersistentVolume
//! STATE/<cluster>/logs/       one log file per component
//! ```
pub mod binaries;
mod bootstrap;
pub mod demo;
pub mod image;
pub mod kubelet;
mod health;
pub mod node;
pub mod pki;
pub mod process;
pub mod provisioner;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::output::OutputFormat;
use pki::Pki;

/// Storage provisioner name of the harness's default StorageClass.
pub const PROVISIONER_NAME: &str = "ferry.dev/hostpath";
/// Name of the default StorageClass in every harness cluster.
pub const DEFAULT_STORAGE_CLASS: &str = "standard";
const KWOK_STAGES: &str = include_str!("kwok-stages.yaml");

/// `$XDG_STATE_HOME/ferry/dev`, else `~/.local/state/ferry/dev`.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("ferry/dev");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/ferry/dev")
}

/// What `up` starts.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub clusters: Vec<String>,
    pub nodes: u32,
    pub node_cpu: String,
    pub node_memory: String,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions { clusters: vec!["east".into(), "west".into()], nodes: 2, node_cpu: "4".into(), node_memory: "16Gi".into() }
    }
}

/// Ports of one cluster's components on 127.0.0.1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ports {
    pub etcd: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
    pub kwok: u16,
    /// The real node's kubelet API and healthz (0 in state files from before real nodes).
    #[serde(default)]
    pub kubelet: u16,
    #[serde(default)]
    pub kubelet_healthz: u16,
}

/// Persisted record of one cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub ports: Ports,
    /// component name → pid
    pub pids: BTreeMap<String, u32>,
    pub nodes: u32,
    pub node_cpu: String,
    pub node_memory: String,
    /// Loopback address of the cluster's node agent (its one real node), e.g. 127.0.1.1.
    #[serde(default)]
    pub node_ip: String,
    /// What runs the cluster's one real node: "kubelet" (kubelet + containerd)
    /// or "agent" (the node agent runs pods as processes; where a kubelet cannot).
    #[serde(default)]
    pub node: String,
}

impl ClusterState {
    pub fn kubelet_node(&self) -> bool {
        self.node == "kubelet"
    }
    /// Components of this cluster, in start order.
    fn components(&self) -> Vec<&'static str> {
        let mut v = COMPONENTS.to_vec();
        if self.kubelet_node() {
            v.extend(["containerd", "kubelet"]);
        }
        v
    }
}

/// Harness clusters on one machine, at most: each gets node IP 127.0.N.1, pod IPs
/// 10.(200+N).0.0/16 and Services 10.(95+N).0.0/16, all routed to the loopback device.
pub const NETWORK_SLOTS: u16 = 28;

/// Machine-wide reservations of network slots: `/run/ferry-dev/slots/<N>`
/// holds the state directory that owns slot N (until `dev down --purge`, or
/// until that directory is gone).
mod slots {
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::{Path, PathBuf};

    const DIR: &str = "/run/ferry-dev/slots";

    pub fn lock() -> anyhow::Result<fs::File> {
        use fs2::FileExt;
        fs::create_dir_all(DIR)?;
        let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(Path::new(DIR).join(".lock"))?;
        f.lock_exclusive()?;
        Ok(f)
    }

    fn owners() -> Vec<(u16, PathBuf)> {
        fs::read_dir(DIR)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| Some((e.file_name().to_str()?.parse::<u16>().ok()?, PathBuf::from(fs::read_to_string(e.path()).ok()?.trim()))))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Slots held by other state directories that still exist.
    pub fn reserved_by_others(root: &Path) -> BTreeSet<u16> {
        owners().into_iter().filter(|(_, owner)| owner != root && owner.join("state.json").exists()).map(|(s, _)| s).collect()
    }

    pub fn reserve(slot: u16, root: &Path) -> anyhow::Result<()> {
        fs::write(Path::new(DIR).join(slot.to_string()), root.display().to_string())?;
        Ok(())
    }

    pub fn release(root: &Path) {
        for (slot, owner) in owners() {
            if owner == root {
                let _ = fs::remove_file(Path::new(DIR).join(slot.to_string()));
            }
        }
    }
}

/// Slots whose pod range some running node agent has routed locally.
fn network_slots_in_use() -> std::collections::BTreeSet<u16> {
    let out = std::process::Command::new("ip").args(["route", "show", "table", "local"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("local 10."))
        .filter_map(|l| l.split('.').next()?.parse::<u16>().ok())
        .filter(|second| (201..=200 + NETWORK_SLOTS).contains(second))
        .map(|second| second - 200)
        .collect()
}

impl ClusterState {
    /// The network slot N of the node IP 127.0.N.1.
    pub fn network_slot(&self) -> Option<u16> {
        self.node_ip.split('.').nth(2).and_then(|o| o.parse::<u16>().ok()).filter(|s| (1..=NETWORK_SLOTS).contains(s))
    }
    /// First two octets of the pod IPs the node agent hands out (a /16 it routes
    /// to the loopback device: the API server rejects loopback endpoint addresses).
    pub fn pod_ip_prefix(&self) -> String {
        let third = self.node_ip.split('.').nth(2).and_then(|o| o.parse::<u16>().ok()).unwrap_or(1);
        format!("10.{}", 200 + third)
    }
    /// The cluster's Service range; distinct per cluster, as on a flat network between clusters.
    pub fn service_cidr(&self) -> String {
        let third = self.node_ip.split('.').nth(2).and_then(|o| o.parse::<u16>().ok()).unwrap_or(1);
        format!("10.{}.0.0/16", 95 + third)
    }
}

/// Persisted record of the whole harness (`STATE/state.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub bin_dir: PathBuf,
    pub clusters: Vec<ClusterState>,
}

/// Paths of a state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> anyhow::Result<Layout> {
        fs::create_dir_all(root).with_context(|| format!("creating state directory {}", root.display()))?;
        Ok(Layout { root: root.canonicalize()? })
    }
    pub fn state_file(&self) -> PathBuf { self.root.join("state.json") }
    pub fn kubeconfig(&self) -> PathBuf { self.root.join("kubeconfig") }
    pub fn cluster_dir(&self, c: &str) -> PathBuf { self.root.join(c) }
    pub fn pki(&self, c: &str) -> PathBuf { self.cluster_dir(c).join("pki") }
    pub fn volumes(&self, c: &str) -> PathBuf { self.cluster_dir(c).join("volumes") }
    pub fn log(&self, c: &str, component: &str) -> PathBuf { self.cluster_dir(c).join("logs").join(format!("{component}.log")) }
    pub fn component_kubeconfig(&self, c: &str) -> PathBuf { self.cluster_dir(c).join("admin.kubeconfig") }

    pub fn load(&self) -> anyhow::Result<Option<State>> {
        match fs::read(self.state_file()) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| format!("parsing {}", self.state_file().display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let tmp = self.state_file().with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
        fs::rename(tmp, self.state_file())?;
        Ok(())
    }
    fn lock(&self) -> anyhow::Result<fs::File> {
        use fs2::FileExt;
        let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.root.join("lock"))?;
        f.lock_exclusive().context("locking the state directory")?;
        Ok(f)
    }
}

/// Health of one component.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub healthy: bool,
}

/// Health of one cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub context: String,
    pub server: String,
    pub version: Option<String>,
    pub nodes_ready: u32,
    pub nodes_total: u32,
    pub components: Vec<ComponentStatus>,
    pub error: Option<String>,
}

impl ClusterStatus {
    pub fn healthy(&self) -> bool {
        self.error.is_none() && self.components.iter().all(|c| c.healthy) && self.nodes_total > 0 && self.nodes_ready == self.nodes_total
    }
}

/// Health of the whole harness.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub state_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub clusters: Vec<ClusterStatus>,
}

impl StatusReport {
    pub fn healthy(&self) -> bool {
        !self.clusters.is_empty() && self.clusters.iter().all(ClusterStatus::healthy)
    }
}

const COMPONENTS: &[&str] = &["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "provisioner", "node-agent"];

/// Start the clusters (or confirm they already run) and wait until every component is healthy.
pub async fn up(state_dir: &Path, opts: &UpOptions) -> anyhow::Result<StatusReport> {
    for name in &opts.clusters {
        if !is_dns_label(name) {
            bail!("cluster name {name:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)");
        }
    }
    let layout = Layout::new(state_dir)?;
    let _lock = layout.lock()?;
    let started = Instant::now();
    if let Some(state) = layout.load()? {
        let same = state.clusters.iter().map(|c| &c.name).eq(opts.clusters.iter());
        if same {
            let report = status_of(&layout, &state).await;
            if report.healthy() {
                tracing::info!(state = %layout.root.display(), "clusters already running");
                return Ok(report);
            }
        }
        tracing::info!("restarting the harness: not every component is healthy");
        stop(&layout, Some(&state));
    } else {
        stop(&layout, None);
    }

    let bin_dir = tokio::task::spawn_blocking(binaries::ensure).await??;
    let node_mode = match std::env::var("FERRY_DEV_NODE").ok().as_deref() {
        Some("agent") => "agent".to_string(),
        Some("kubelet") => match kubelet::unavailable(&bin_dir) {
            None => "kubelet".to_string(),
            Some(why) => bail!("FERRY_DEV_NODE=kubelet, but a kubelet node cannot run here: {why}"),
        },
        Some(other) if !other.is_empty() => bail!("FERRY_DEV_NODE={other:?}: use kubelet or agent"),
        _ => match kubelet::unavailable(&bin_dir) {
            None => "kubelet".to_string(),
            Some(why) => {
                tracing::warn!(reason = %why, "real nodes unavailable; the node agent runs mover pods as processes");
                "agent".to_string()
            }
        },
    };
    let previous = layout.load()?.unwrap_or_default();
    let mut state = State { bin_dir: bin_dir.clone(), clusters: Vec::new() };
    // Slots are machine-wide: reserve them under a lock, so that two harnesses
    // starting at the same time (or one restarting while another starts) never
    // share one — they would share pod ranges, bridges and cgroup roots.
    let _slots_lock = slots::lock()?;
    let mut taken = network_slots_in_use();
    taken.extend(slots::reserved_by_others(&layout.root));
    for name in opts.clusters.iter() {
        let old = previous.clusters.iter().find(|c| &c.name == name);
        let ports = match old {
            Some(c) if ports_free(&c.ports) => c.ports.clone(),
            _ => allocate_ports()?,
        };
        state.clusters.push(ClusterState {
            name: name.clone(),
            ports,
            pids: BTreeMap::new(),
            nodes: opts.nodes,
            node_cpu: opts.node_cpu.clone(),
            node_memory: opts.node_memory.clone(),
            node: node_mode.clone(),
            node_ip: {
                // A cluster keeps its addresses for life: its Service range is stored in etcd.
                let slot = match old.and_then(|c| c.network_slot()) {
                    Some(s) if taken.contains(&s) => bail!(
                        "cluster {name}'s network slot {s} (Services 10.{}.0.0/16, pods 10.{}.0.0/16) is routed by another running harness; stop that one, or recreate this one with `ferry dev down --state {} --purge`",
                        95 + s, 200 + s, layout.root.display()
                    ),
                    Some(s) => Some(s),
                    None => (1..=NETWORK_SLOTS).find(|s| !taken.contains(s)),
                }
                .context("every harness network slot is in use (ip route show table local | grep 'local 10.2'); stop other harnesses")?;
                taken.insert(slot);
                slots::reserve(slot, &layout.root)?;
                format!("127.0.{slot}.1")
            },
        });
    }
    layout.save(&state)?;

    if state.clusters.iter().any(ClusterState::kubelet_node) {
        // Once, before the clusters start in parallel (each node imports it).
        let (exe, images) = (std::env::current_exe()?, layout.root.join("images"));
        tokio::task::spawn_blocking(move || image::ensure_archive(&exe, &images)).await?.context("building Ferry's image")?;
    }
    let result = async {
        let mut tasks = Vec::new();
        for cluster in state.clusters.clone() {
            let layout = layout.clone();
            let bin_dir = bin_dir.clone();
            tasks.push(tokio::spawn(async move { start_cluster(&layout, &bin_dir, cluster).await }));
        }
        let mut started_clusters = Vec::new();
        for t in tasks {
            started_clusters.push(t.await??);
        }
        anyhow::Ok(started_clusters)
    }
    .await;
    match result {
        Ok(clusters) => state.clusters = clusters,
        Err(e) => {
            // Never leave half a harness behind: stop what was started.
            stop(&layout, Some(&state));
            return Err(e.context(format!("starting the clusters failed; component logs are under {}/<cluster>/logs/", layout.root.display())));
        }
    }
    layout.save(&state)?;
    write_kubeconfig(&layout, &state)?;
    let report = status_of(&layout, &state).await;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), kubeconfig = %layout.kubeconfig().display(), "clusters up");
    Ok(report)
}

/// Health of the harness in `state_dir`.
pub async fn status(state_dir: &Path) -> anyhow::Result<StatusReport> {
    let layout = Layout::new(state_dir)?;
    let Some(state) = layout.load()? else {
        bail!("no harness in {} (start one with `ferry dev up --state {}`)", layout.root.display(), layout.root.display());
    };
    Ok(status_of(&layout, &state).await)
}

/// Stop every process of the harness in `state_dir`; with `purge`, delete the directory too.
pub fn down(state_dir: &Path, purge: bool) -> anyhow::Result<()> {
    if !state_dir.exists() {
        tracing::info!(state = %state_dir.display(), "nothing to stop");
        return Ok(());
    }
    let layout = Layout::new(state_dir)?;
    let _lock = layout.lock()?;
    let state = layout.load()?;
    let stopped = stop(&layout, state.as_ref());
    if let Some(mut state) = state {
        for c in &mut state.clusters {
            c.pids.clear();
        }
        layout.save(&state)?;
    }
    tracing::info!(processes = stopped, state = %layout.root.display(), "harness stopped");
    if purge {
        slots::release(&layout.root);
        // Volumes' files may belong to other users; remove_dir_all copes as root.
        fs::remove_dir_all(&layout.root).with_context(|| format!("removing {}", layout.root.display()))?;
    }
    Ok(())
}

/// Print a status report as a table or structured output.
pub fn print_status(report: &StatusReport, format: OutputFormat) -> anyhow::Result<()> {
    if format != OutputFormat::Table {
        return crate::output::print_structured(report, format);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(vec!["CLUSTER", "CONTEXT", "API SERVER", "VERSION", "NODES", "HEALTH", "COMPONENTS"]);
    for c in &report.clusters {
        let comps = c.components.iter()
            .map(|x| format!("{}{}", x.name, if x.healthy { "✓" } else if x.running { "…" } else { "✗" }))
            .collect::<Vec<_>>()
            .join(" ");
        table.add_row(vec![
            c.name.clone(),
            c.context.clone(),
            c.server.clone(),
            c.version.clone().unwrap_or_else(|| "-".into()),
            format!("{}/{}", c.nodes_ready, c.nodes_total),
            if c.healthy() { "healthy".into() } else { c.error.clone().unwrap_or_else(|| "unhealthy".into()) },
            comps,
        ]);
    }
    println!("{table}");
    println!("kubeconfig: {}", report.kubeconfig.display());
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-') && !s.ends_with('-')
}

fn allocate_ports() -> anyhow::Result<Ports> {
    let p = process::free_ports(8)?;
    Ok(Ports { etcd: p[0], etcd_peer: p[1], apiserver: p[2], controller_manager: p[3], scheduler: p[4], kwok: p[5], kubelet: p[6], kubelet_healthz: p[7] })
}

fn ports_free(p: &Ports) -> bool {
    [p.etcd, p.etcd_peer, p.apiserver, p.controller_manager, p.scheduler, p.kwok, p.kubelet, p.kubelet_healthz].iter().all(|&port| port != 0 && !process::port_in_use(port))
}

/// Stop recorded pids and any stray component of this state dir. Returns how many were signalled.
fn stop(layout: &Layout, state: Option<&State>) -> usize {
    let mut pids: Vec<u32> = state
        .map(|s| s.clusters.iter().flat_map(|c| c.pids.values().copied()).filter(|&p| process::alive_with(p, &layout.root)).collect())
        .unwrap_or_default();
    for p in process::find_components(&layout.root) {
        if !pids.contains(&p) {
            pids.push(p);
        }
    }
    process::stop_all(&pids, Duration::from_secs(10));
    // What real nodes leave behind: their containers, mounts, network namespaces, cgroups, bridge.
    for c in state.map(|s| s.clusters.as_slice()).unwrap_or_default() {
        if c.kubelet_node() {
            kubelet::cleanup(layout, c);
        }
    }
    // Node agents remove their routes when they stop; after a crash (SIGKILL) they cannot.
    for c in state.map(|s| s.clusters.as_slice()).unwrap_or_default() {
        if c.network_slot().is_some() {
            for range in [format!("{}.0.0/16", c.pod_ip_prefix()), c.service_cidr()] {
                let _ = std::process::Command::new("ip").args(["route", "del", "local", &range, "dev", "lo"]).output();
            }
        }
    }
    pids.len()
}

fn write_kubeconfig(layout: &Layout, state: &State) -> anyhow::Result<()> {
    let mut contexts = Vec::new();
    for c in &state.clusters {
        contexts.push(cert_context(layout, c)?);
    }
    crate::kubeconfig::write_cert_kubeconfig(&layout.kubeconfig(), &contexts)
}

fn cert_context(layout: &Layout, c: &ClusterState) -> anyhow::Result<crate::kubeconfig::CertContext> {
    let pki = Pki { dir: layout.pki(&c.name) };
    Ok(crate::kubeconfig::CertContext {
        name: c.name.clone(),
        server: format!("https://127.0.0.1:{}", c.ports.apiserver),
        ca_pem: fs::read_to_string(pki.ca_cert())?,
        client_cert_pem: fs::read_to_string(pki.admin_cert())?,
        client_key_pem: fs::read_to_string(pki.admin_key())?,
    })
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until the API server answers `/readyz` with "ok"; returns its client.
async fn wait_apiserver(kubeconfig: &Path, context: &str, timeout: Duration) -> anyhow::Result<kube::Client> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(cl) = crate::kubeconfig::client_for(kubeconfig, context).await {
            if apiserver_ready(&cl).await {
                return Ok(cl);
            }
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {context}: kube-apiserver /readyz", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apiserver_ready(cl: &kube::Client) -> bool {
    let req = http::Request::get("/readyz").body(Vec::new()).expect("static request");
    matches!(cl.request_text(req).await, Ok(body) if body.trim() == "ok")
}

async fn start_cluster(layout: &Layout, bin: &Path, mut c: ClusterState) -> anyhow::Result<ClusterState> {
    let name = c.name.clone();
    let dir = layout.cluster_dir(&name);
    fs::create_dir_all(layout.volumes(&name))?;
    let pki = Pki::ensure(&layout.pki(&name))?;
    crate::kubeconfig::write_cert_kubeconfig(&layout.component_kubeconfig(&name), &[cert_context(layout, &c)?])?;
    let p = c.ports.clone();
    let s = |x: &Path| x.display().to_string();
    let kcfg = s(&layout.component_kubeconfig(&name));

    // etcd
    let etcd_args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", s(&dir.join("etcd"))),
        format!("--listen-client-urls=http://127.0.0.1:{}", p.etcd),
        format!("--advertise-client-urls=http://127.0.0.1:{}", p.etcd),
        format!("--listen-peer-urls=http://127.0.0.1:{}", p.etcd_peer),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", p.etcd_peer),
        format!("--initial-cluster={name}=http://127.0.0.1:{}", p.etcd_peer),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ];
    c.pids.insert("etcd".into(), process::spawn(&bin.join("etcd"), &etcd_args, &layout.log(&name, "etcd"))?);
    wait_for(&format!("{name}: etcd"), Duration::from_secs(60), || health::ok(p.etcd, "/health", None))
        .await.map_err(|e| explain(e, layout, &c, "etcd"))?;

    // kube-apiserver
    let api_args = vec![
        format!("--etcd-servers=http://127.0.0.1:{}", p.etcd),
        format!("--secure-port={}", p.apiserver),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--cert-dir={}", s(&dir.join("apiserver"))),
        format!("--tls-cert-file={}", s(&pki.serving_cert())),
        format!("--tls-private-key-file={}", s(&pki.serving_key())),
        format!("--client-ca-file={}", s(&pki.ca_cert())),
        format!("--service-cluster-ip-range={}", c.service_cidr()),
        "--service-node-port-range=30000-32767".into(),
        // Node: the real node's kubelet (system:node:<name>) reads only what its pods need.
        "--authorization-mode=Node,RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", s(&pki.sa_pub())),
        format!("--service-account-signing-key-file={}", s(&pki.sa_key())),
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        "--enable-priority-and-fairness=false".into(),
        "--profiling=false".into(),
        "--v=0".into(),
    ];
    c.pids.insert("kube-apiserver".into(), process::spawn(&bin.join("kube-apiserver"), &api_args, &layout.log(&name, "kube-apiserver"))?);
    let kubeconfig = layout.component_kubeconfig(&name);
    let client = wait_apiserver(&kubeconfig, &name, Duration::from_secs(120)).await.map_err(|e| explain(e, layout, &c, "kube-apiserver"))?;

    // controller-manager, scheduler, kwok and the provisioner start together.
    let delegated = |port: u16| vec![
        format!("--kubeconfig={kcfg}"),
        format!("--authentication-kubeconfig={kcfg}"),
        format!("--authorization-kubeconfig={kcfg}"),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", s(&pki.serving_cert())),
        format!("--tls-private-key-file={}", s(&pki.serving_key())),
        // The default client rate limit (20 qps) makes controllers the bottleneck
        // as soon as a few hundred workloads change at once.
        "--kube-api-qps=200".into(),
        "--kube-api-burst=400".into(),
        "--v=0".into(),
    ];
    let mut kcm_args = delegated(p.controller_manager);
    kcm_args.extend([
        format!("--root-ca-file={}", s(&pki.ca_cert())),
        format!("--service-account-private-key-file={}", s(&pki.sa_key())),
        format!("--cluster-signing-cert-file={}", s(&pki.ca_cert())),
        format!("--cluster-signing-key-file={}", s(&pki.ca_key())),
        "--controllers=*".into(),
        "--use-service-account-credentials=false".into(),
    ]);
    c.pids.insert("kube-controller-manager".into(), process::spawn(&bin.join("kube-controller-manager"), &kcm_args, &layout.log(&name, "kube-controller-manager"))?);
    c.pids.insert("kube-scheduler".into(), process::spawn(&bin.join("kube-scheduler"), &delegated(p.scheduler), &layout.log(&name, "kube-scheduler"))?);

    let stages = dir.join("kwok.yaml");
    fs::write(&stages, KWOK_STAGES)?;
    let kwok_args = vec![
        format!("--kubeconfig={kcfg}"),
        format!("--config={}", s(&stages)),
        "--manage-all-nodes=false".into(),
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
        format!("--server-address=127.0.0.1:{}", p.kwok),
        "--node-lease-duration-seconds=40".into(),
        "--cidr=10.244.0.1/16".into(),
    ];
    c.pids.insert("kwok".into(), process::spawn(&bin.join("kwok"), &kwok_args, &layout.log(&name, "kwok"))?);

    let me = std::env::current_exe().context("locating the ferry binary")?;
    let prov_args = vec!["dev".into(), "provisioner".into(), format!("--state={}", layout.root.display()), format!("--cluster={name}")];
    c.pids.insert("provisioner".into(), process::spawn(&me, &prov_args, &layout.log(&name, "provisioner"))?);
    let kubelet_node = c.kubelet_node();
    let node_ip = if kubelet_node { kubelet::node_ip(&c) } else { c.node_ip.clone() };
    let mut node_args = vec![
        "dev".into(), "node-agent".into(), format!("--state={}", layout.root.display()), format!("--cluster={name}"),
        format!("--node-ip={node_ip}"), format!("--pod-ip-prefix={}", c.pod_ip_prefix()), format!("--service-cidr={}", c.service_cidr()),
    ];
    if kubelet_node {
        kubelet::start(layout, bin, &mut c).await.map_err(|e| explain(e, layout, &c, "containerd"))?;
        node_args.push("--proxy-only".into());
    }
    c.pids.insert("node-agent".into(), process::spawn(&me, &node_args, &layout.log(&name, "node-agent"))?);

    let ca = pki.ca_cert();
    // Generous: on a two-core machine, both clusters' Go binaries start at once.
    let t = Duration::from_secs(120);
    wait_for(&format!("{name}: kube-controller-manager /healthz"), t, || health::ok(p.controller_manager, "/healthz", Some(&ca)))
        .await.map_err(|e| explain(e, layout, &c, "kube-controller-manager"))?;
    wait_for(&format!("{name}: kube-scheduler /healthz"), t, || health::ok(p.scheduler, "/healthz", Some(&ca)))
        .await.map_err(|e| explain(e, layout, &c, "kube-scheduler"))?;
    wait_for(&format!("{name}: kwok /healthz"), t, || health::ok(p.kwok, "/healthz", None))
        .await.map_err(|e| explain(e, layout, &c, "kwok"))?;
    if kubelet_node {
        let cc = c.clone();
        wait_for(&format!("{name}: kubelet /healthz"), t, || kubelet::healthy(&cc))
            .await.map_err(|e| explain(e, layout, &c, "kubelet"))?;
    }

    bootstrap::run(&client, &c).await.with_context(|| format!("{name}: bootstrapping nodes and storage"))?;
    Ok(c)
}

/// A component that never became healthy: say whether it is still running
/// and quote the end of its log, which usually names the cause.
fn explain(e: anyhow::Error, layout: &Layout, c: &ClusterState, component: &str) -> anyhow::Error {
    let running = c.pids.get(component).is_some_and(|&pid| process::alive_with(pid, &layout.root));
    let log = layout.log(&c.name, component);
    let tail = fs::read_to_string(&log).map(|t| {
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    }).unwrap_or_default();
    e.context(format!(
        "{} {component} {}; last lines of {}:\n    {tail}",
        c.name,
        if running { "is running but not healthy" } else { "exited" },
        log.display()
    ))
}

async fn status_of(layout: &Layout, state: &State) -> StatusReport {
    let mut clusters = Vec::new();
    for c in &state.clusters {
        clusters.push(cluster_status(layout, c).await);
    }
    StatusReport { state_dir: layout.root.clone(), kubeconfig: layout.kubeconfig(), clusters }
}

async fn cluster_status(layout: &Layout, c: &ClusterState) -> ClusterStatus {
    let ca = Pki { dir: layout.pki(&c.name) }.ca_cert();
    let mut components = Vec::new();
    let mut client = None;
    for comp in c.components() {
        let pid = c.pids.get(comp).copied();
        let running = pid.is_some_and(|p| process::alive_with(p, &layout.root));
        let healthy = running && match comp {
            "etcd" => health::ok(c.ports.etcd, "/health", None).await,
            "kube-apiserver" => match crate::kubeconfig::client_for(&layout.component_kubeconfig(&c.name), &c.name).await {
                Ok(cl) => {
                    let ok = apiserver_ready(&cl).await;
                    if ok {
                        client = Some(cl);
                    }
                    ok
                }
                Err(_) => false,
            },
            "kube-controller-manager" => health::ok(c.ports.controller_manager, "/healthz", Some(&ca)).await,
            "kube-scheduler" => health::ok(c.ports.scheduler, "/healthz", Some(&ca)).await,
            "kwok" => health::ok(c.ports.kwok, "/healthz", None).await,
            "kubelet" => kubelet::healthy(c).await,
            _ => true,
        };
        components.push(ComponentStatus { name: comp.to_string(), pid, running, healthy });
    }
    let mut status = ClusterStatus {
        name: c.name.clone(),
        context: c.name.clone(),
        server: format!("https://127.0.0.1:{}", c.ports.apiserver),
        version: None,
        nodes_ready: 0,
        nodes_total: 0,
        components,
        error: None,
    };
    match client {
        Some(cl) => {
            status.version = cl.apiserver_version().await.ok().map(|v| v.git_version);
            match bootstrap::node_readiness(&cl).await {
                Ok((ready, total)) => {
                    status.nodes_ready = ready;
                    status.nodes_total = total;
                }
                Err(e) => status.error = Some(format!("listing nodes: {e}")),
            }
        }
        None => status.error = Some("API server not ready".into()),
    }
    status
}
