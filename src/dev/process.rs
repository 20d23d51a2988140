//! Starting and stopping the harness's background processes.
//!
//! Every component runs in its own process group, detached from the
//! terminal, with its output in a log file; its pid is recorded in the state
//! file. Stopping finds processes both through recorded pids and by scanning
//! `/proc` for our components whose command line names the state directory, so
//! that `down` also cleans up after a crash that lost the pids.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Names of the programs the harness runs (argv[0] basenames, or ferry's own subcommand).
pub const COMPONENT_PROGRAMS: &[&str] = &["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubelet", "containerd", "containerd-shim-runc-v2"];

/// Spawn `program args…` detached, logging to `log`. Returns the pid.
pub fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let out = fs::OpenOptions::new().create(true).append(true).open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(child.id())
}

/// Whether `pid` is alive and its command line mentions the directory `root`
/// (guards against pid reuse).
pub fn alive_with(pid: u32, root: &Path) -> bool {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => !is_zombie(pid) && args_of(&cmd).iter().any(|a| mentions(a, root)),
        Err(_) => false,
    }
}

fn args_of(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// `arg` names `root` itself or a path inside it (not merely a sibling such as `root2`).
fn mentions(arg: &str, root: &Path) -> bool {
    let root = root.display().to_string();
    arg.contains(&format!("{root}/")) || arg.ends_with(&root)
}

/// A zombie whose threads have all exited. A multi-threaded process (every Go
/// component) shows its leader as `Z` while other threads still shut down and
/// hold its sockets, so the leader's state alone is not enough.
fn is_zombie(pid: u32) -> bool {
    let leader_z = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    leader_z && fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count() <= 1).unwrap_or(true)
}

/// All processes that are harness components of the state dir `root`.
pub fn find_components(root: &Path) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return found };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args = args_of(&raw);
        let Some(argv0) = args.first() else { continue };
        let base = Path::new(argv0).file_name().and_then(|s| s.to_str()).unwrap_or("");
        let is_component = COMPONENT_PROGRAMS.contains(&base)
            || (args.iter().any(|a| a == "dev") && args.iter().any(|a| a == "provisioner" || a == "node-agent"))
            // Pods the node agent started (their mount-namespace wrapper names the pod directory).
            || base == "unshare";
        if is_component && args.iter().any(|a| mentions(a, root)) && !is_zombie(pid) {
            found.push(pid);
        }
    }
    found
}

/// Pids of live processes whose program (argv[0] basename) is `name`, any state dir.
pub fn find_programs(name: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                args_of(&raw).first().is_some_and(|a0| Path::new(a0).file_name().and_then(|s| s.to_str()) == Some(name))
            }) && !is_zombie(pid)
        })
        .collect()
}

/// SIGTERM the pids, wait up to `grace`, then SIGKILL what is left and wait for it to go.
pub fn stop_all(pids: &[u32], grace: Duration) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let gone = |pid: u32| !PathBuf::from(format!("/proc/{pid}")).exists() || is_zombie(pid);
    while Instant::now() < deadline && !pids.iter().all(|&p| gone(p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids {
        if !gone(pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !pids.iter().all(|&p| gone(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something accepts connections on 127.0.0.1:port.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// `n` distinct free ports on 127.0.0.1 for servers started later.
///
/// Ports from the kernel's `bind(:0)` come out of the ephemeral range, which
/// is also where every outgoing connection takes its local port: between
/// choosing such a port and the server binding it, a client connection of
/// another component (the API server to etcd, a controller to the API server)
/// can take it, and the server then fails with "address already in use". So
/// choose below the ephemeral range (and below the NodePort range), where
/// only servers that asked for the port bind.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (12000u16, ephemeral_low.min(30000));
    anyhow::ensure!(hi > lo + 1000, "the ephemeral port range starts at {ephemeral_low}; no room below it for the harness's servers");
    // Start somewhere different per process so parallel callers rarely probe the same ports.
    let seed = std::process::id() as u64 ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let span = (hi - lo) as u64;
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for i in 0..span {
        if ports.len() == n {
            break;
        }
        let port = lo + ((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17).wrapping_add(i * 7919) % span) as u16;
        if ports.contains(&port) {
            continue;
        }
        // Hold each listener until all are chosen, so the n ports are distinct and free together.
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    anyhow::ensure!(ports.len() == n, "found only {} free ports in {lo}-{hi} on 127.0.0.1", ports.len());
    Ok(ports)
}
