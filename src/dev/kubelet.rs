//! A real node per harness cluster: the kubelet built from the same Go module
//! as the control plane, Debian's containerd and runc, and the CNI bridge
//! plugin. Mover pods (the only pods that tolerate the node's taint) run here
//! as real containers of Ferry's locally built image ([`super::image`]),
//! mounting their volumes through the kubelet.
//!
//! Layout under `STATE/<cluster>/node/`: `containerd/` (root, state, sockets,
//! config), `kubelet/` (root dir, config, kubeconfig, client cert), `cni/`
//! (network config and IPAM state). Each cluster has its own containerd — two
//! kubelets sharing one would garbage-collect each other's pods — and its own
//! cgroup root (`/ferry<slot>-<cluster>`), bridge (`ferry<slot>`) and pod range
//! (`10.(200+slot).0.0/16`, gateway `.0.1`, which is also the node's
//! InternalIP). Services are forwarded by the node agent in `--proxy-only`
//! mode: kube-proxy keeps its rules in the host's one set of iptables chains,
//! and two of them (one per cluster) would delete each other's rules.
//!
//! What the kubelet changes on the host and how it is undone ([`cleanup`]):
//! kernel tunables (`kernel.panic`, `kernel.panic_on_oops`,
//! `vm.overcommit_memory`, …: saved before the first kubelet starts, restored
//! when the last one stops), cgroups, network namespaces and mounts of its
//! pods, the bridge.
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{ClusterState, Layout, process};

/// Host programs a real node needs (besides the kubelet in the binaries dir).
const HOST_PROGRAMS: &[&str] = &["/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/usr/bin/containerd-shim-runc-v2"];

/// Kernel tunables the kubelet sets (`protectKernelDefaults: false`).
const TUNABLES: &[&str] = &["kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward"];
/// Where the values before the first kubelet are kept (machine-wide: several harnesses may run).
const TUNABLES_SAVED: &str = "/run/ferry-dev/sysctl.before";

/// Why a real node cannot run here, or `None` when it can.
pub fn unavailable(bin_dir: &Path) -> Option<String> {
    if !bin_dir.join("kubelet").exists() {
        return Some(format!("no kubelet in {} (scripts/build-k8s.sh builds it)", bin_dir.display()));
    }
    if let Some(p) = HOST_PROGRAMS.iter().find(|p| !Path::new(p).exists()) {
        return Some(format!("{p} is missing (scripts/install-deps.sh installs containerd, runc and containernetworking-plugins)"));
    }
    if nix::unistd::geteuid().as_raw() != 0 {
        return Some("a kubelet needs root".into());
    }
    None
}

/// The node's address: the gateway of its pod bridge.
pub fn node_ip(c: &ClusterState) -> String {
    format!("{}.0.1", c.pod_ip_prefix())
}

fn bridge(c: &ClusterState) -> String {
    format!("ferry{}", c.network_slot().unwrap_or(0))
}

fn dir(layout: &Layout, c: &ClusterState) -> PathBuf {
    layout.cluster_dir(&c.name).join("node")
}

fn containerd_socket(layout: &Layout, c: &ClusterState) -> PathBuf {
    dir(layout, c).join("containerd/containerd.sock")
}

/// Unique among the harness clusters running on this machine (two harnesses may
/// both have an `east`): a kubelet removes pod cgroups under its root that are
/// not its own pods'.
pub fn cgroup_root(c: &ClusterState) -> String {
    format!("ferry{}-{}", c.network_slot().unwrap_or(0), c.name)
}

fn ip(args: &[&str]) -> anyhow::Result<std::process::Output> {
    std::process::Command::new("ip").args(args).output().context("running ip (iproute2)")
}

/// Start containerd and the kubelet of cluster `c`; records their pids in `c.pids`.
pub async fn start(layout: &Layout, bin_dir: &Path, c: &mut ClusterState) -> anyhow::Result<()> {
    let node = super::node::node_name(&c.name);
    let d = dir(layout, c);
    let (cd, kd, cni) = (d.join("containerd"), d.join("kubelet"), d.join("cni"));
    for x in [&cd, &kd, &cni.join("net.d")] {
        fs::create_dir_all(x)?;
    }
    // Sandboxes of an earlier run are gone (their processes were killed): start IPAM afresh.
    let _ = fs::remove_dir_all(cni.join("ipam"));
    save_tunables()?;
    make_cgroup_root(c)?;

    // The bridge with the gateway address first: the kubelet checks that --node-ip is local.
    let (br, gw) = (bridge(c), node_ip(c));
    let _ = ip(&["link", "add", &br, "type", "bridge"]);
    let out = ip(&["addr", "replace", &format!("{gw}/16"), "dev", &br])?;
    if !out.status.success() {
        bail!("cannot give bridge {br} the address {gw}/16: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    ip(&["link", "set", &br, "up"])?;
    fs::write(cni.join("net.d/10-ferry.conflist"), serde_json::to_vec_pretty(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": cgroup_root(c),
        "plugins": [{
            "type": "bridge", "bridge": br, "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {
                "type": "host-local", "dataDir": cni.join("ipam"),
                "ranges": [[{"subnet": format!("{}.0.0/16", c.pod_ip_prefix()), "gateway": gw}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    }))?)?;

    // containerd
    let socket = containerd_socket(layout, c);
    let config = cd.join("config.toml");
    fs::write(&config, format!(
        r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_selinux = false
  # This machine's capability bounding set lacks CAP_SYS_RESOURCE: runc cannot
  # lower oom_score_adj below the parent's, which the kubelet asks for.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#,
        root = cd.join("root").display(),
        state = cd.join("state").display(),
        sock = socket.display(),
        pause = super::image::PAUSE_IMAGE,
        runc_root = cd.join("runc").display(),
        conf_dir = cni.join("net.d").display(),
    ))?;
    let _ = fs::remove_file(&socket);
    let pid = process::spawn(Path::new("/usr/bin/containerd"), &["--config".into(), config.display().to_string()], &layout.log(&c.name, "containerd"))?;
    c.pids.insert("containerd".into(), pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ctr(&socket, &["version"]).await.is_ok_and(|o| o.status.success()) {
        if Instant::now() > deadline || !process::alive_with(pid, &layout.root) {
            bail!("containerd did not start (see {})", layout.log(&c.name, "containerd").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ferry's image and the pause image, from this very binary.
    let exe = std::env::current_exe()?;
    let images = layout.root.join("images");
    let archive = tokio::task::spawn_blocking(move || super::image::ensure_archive(&exe, &images)).await??;
    let out = ctr(&socket, &["-n", "k8s.io", "images", "import", &archive.display().to_string()]).await?;
    if !out.status.success() {
        bail!("importing {} into containerd failed: {}", archive.display(), String::from_utf8_lossy(&out.stderr).trim());
    }

    // kubelet: client certificate system:node:<node>, config, flags.
    let kubeconfig = kd.join("kubeconfig");
    let pki = super::pki::Pki { dir: layout.pki(&c.name) };
    if !kubeconfig.exists() {
        let (cert, key) = pki.issue_client(&format!("system:node:{node}"), "system:nodes")?;
        crate::kubeconfig::write_cert_kubeconfig(&kubeconfig, &[crate::kubeconfig::CertContext {
            name: c.name.clone(),
            server: format!("https://127.0.0.1:{}", c.ports.apiserver),
            ca_pem: fs::read_to_string(pki.ca_cert())?,
            client_cert_pem: cert,
            client_key_pem: key,
        }])?;
    }
    let kcfg = kd.join("config.yaml");
    fs::write(&kcfg, format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 on this machine kind; the kubelet refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroot}
containerRuntimeEndpoint: unix://{sock}
imageServiceEndpoint: unix://{sock}
podLogsDir: {logs}
address: {gw}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
failSwapOn: false
# Otherwise a KUBE-FIREWALL rule drops packets to 127.0.0.0/8 from other sources.
makeIPTablesUtilChains: false
oomScoreAdj: 0
# The images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Only memory: a signal left out of evictionHard is disabled. Disk-pressure
# eviction would garbage-collect the imported images, which no registry can restore.
evictionHard: {{memory.available: "100Mi"}}
nodeStatusUpdateFrequency: 5s
"#,
        cgroot = cgroup_root(c),
        sock = socket.display(),
        logs = kd.join("pod-logs").display(),
        gw = gw,
        port = c.ports.kubelet,
        healthz = c.ports.kubelet_healthz,
        ca = pki.ca_cert().display(),
    ))?;
    let args = vec![
        format!("--config={}", kcfg.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--root-dir={}", kd.join("root").display()),
        format!("--cert-dir={}", kd.join("pki").display()),
        format!("--hostname-override={node}"),
        format!("--node-ip={gw}"),
        format!("--node-labels={}=true,type=ferry-kubelet", super::node::MOVER_NODE_LABEL),
        format!("--register-with-taints={}=true:NoSchedule", super::node::MOVER_NODE_LABEL),
        "--v=1".into(),
    ];
    let pid = process::spawn(&bin_dir.join("kubelet"), &args, &layout.log(&c.name, "kubelet"))?;
    c.pids.insert("kubelet".into(), pid);
    Ok(())
}

/// Whether the kubelet of `c` answers its healthz.
pub async fn healthy(c: &ClusterState) -> bool {
    let url = format!("127.0.0.1:{}", c.ports.kubelet_healthz);
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&url)).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.is_err() {
        return false;
    }
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut body)).await;
    let text = String::from_utf8_lossy(&body);
    text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")
}

async fn ctr(socket: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    tokio::process::Command::new("/usr/bin/ctr")
        .arg("--address")
        .arg(socket)
        .args(args)
        .output()
        .await
        .context("running ctr")
}

/// The kubelet wants its cgroup root to exist in every controller (cgroup v1);
/// a new cpuset starts empty and takes its parent's CPUs and memory nodes.
fn make_cgroup_root(c: &ClusterState) -> anyhow::Result<()> {
    for e in fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let ctl = e.path();
        if e.file_name() == "unified" || !ctl.join("cgroup.procs").exists() {
            continue;
        }
        let d = ctl.join(cgroup_root(c));
        fs::create_dir_all(&d).with_context(|| format!("creating cgroup {}", d.display()))?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if d.join(f).exists() && fs::read_to_string(d.join(f)).unwrap_or_default().trim().is_empty() {
                fs::write(d.join(f), fs::read_to_string(ctl.join(f))?.trim())?;
            }
        }
    }
    Ok(())
}

fn save_tunables() -> anyhow::Result<()> {
    let saved = Path::new(TUNABLES_SAVED);
    if saved.exists() {
        return Ok(());
    }
    fs::create_dir_all(saved.parent().expect("parent"))?;
    let mut text = String::new();
    for t in TUNABLES {
        if let Ok(v) = fs::read_to_string(Path::new("/proc/sys").join(t)) {
            text.push_str(&format!("{t}={}\n", v.trim()));
        }
    }
    fs::write(saved, text)?;
    Ok(())
}

fn restore_tunables() {
    let Ok(text) = fs::read_to_string(TUNABLES_SAVED) else { return };
    for line in text.lines() {
        if let Some((t, v)) = line.split_once('=') {
            let _ = fs::write(Path::new("/proc/sys").join(t), v);
        }
    }
    let _ = fs::remove_file(TUNABLES_SAVED);
}

/// Undo what the node of `c` left on the host once its kubelet, containerd and
/// shims are stopped: kill its containers (by cgroup), remove its pods'
/// network namespaces (by address), mounts under its directory, cgroups and
/// bridge; restore the kernel tunables when no other kubelet runs.
pub fn cleanup(layout: &Layout, c: &ClusterState) {
    let root = cgroup_root(c);
    let controllers: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().map(|e| e.path().join(&root)).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    // Containers' processes: SIGKILL, a few rounds (a dying process may fork).
    for _ in 0..20 {
        let mut any = false;
        for ctl in &controllers {
            for dir in walk_dirs(ctl) {
                for pid in fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Network namespaces of its pods: those with an address in its pod range.
    let prefix = format!(" {}.", c.pod_ip_prefix());
    for ns in fs::read_dir("/run/netns").map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>()).unwrap_or_default() {
        let addrs = ip(&["-n", &ns, "-4", "-o", "addr", "show"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        if addrs.contains(&format!("inet{prefix}")) {
            let _ = ip(&["netns", "delete", &ns]);
        }
    }
    unmount_under(&dir(layout, c));
    for ctl in &controllers {
        let mut dirs = walk_dirs(ctl);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = fs::remove_dir(&d);
        }
    }
    let _ = ip(&["link", "del", &bridge(c)]);
    let kubelets_left = process::find_programs("kubelet");
    if kubelets_left.is_empty() {
        restore_tunables();
    }
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out.retain(|p| p.exists());
    out
}

/// Lazily unmount everything mounted at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(canon) = dir.canonicalize() else { return };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&canon))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}
