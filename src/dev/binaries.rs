//! The upstream binaries the harness runs, built from their Go modules by
//! `scripts/build-k8s.sh` (embedded here so the installed binary can build
//! them too) into a cache outside the repository.
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

const BUILD_SCRIPT: &str = include_str!("../../scripts/build-k8s.sh");
/// Programs the harness needs in the binaries directory.
pub const REQUIRED: &[&str] = &["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"];

/// Directory holding every required binary: `$FERRY_K8S_BIN` if set, otherwise
/// the build script's cache (building what is missing — minutes when cold).
pub fn ensure() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRY_K8S_BIN").filter(|v| !v.is_empty()).map(PathBuf::from) {
        let missing: Vec<_> = REQUIRED.iter().filter(|b| !dir.join(b).is_file()).collect();
        if !missing.is_empty() {
            bail!("FERRY_K8S_BIN={} lacks {missing:?}; unset it to build them with scripts/build-k8s.sh", dir.display());
        }
        return Ok(dir);
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(BUILD_SCRIPT)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the embedded build script (is bash installed?)")?;
    if !out.status.success() {
        bail!("building the Kubernetes binaries failed ({}); see the messages above", out.status);
    }
    let dir = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
    let dir = PathBuf::from(dir);
    if !dir.join("kube-apiserver").is_file() {
        bail!("the build script did not report a binaries directory (got {:?})", dir.display());
    }
    Ok(dir)
}
