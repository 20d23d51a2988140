//! Ferry's container image, built locally for the harness's real nodes.
//!
//! There is no registry here, so the image is an OCI image layout in a tar
//! archive that `ctr images import` loads into each node's containerd. One
//! layer holds the `ferry` binary (this executable, without debug info) at
//! `/usr/local/bin/ferry`, the shared libraries it links (as `ldd` lists
//! them), a minimal `/etc/passwd` and `/tmp`. Two images share the layer:
//! - `ghcr.io/ferry-gitops/ferry:<version>` — what mover pods run;
//! - [`PAUSE_IMAGE`] — the pod sandbox image, whose entrypoint is
//!   `ferry dev pause` (sleep until signalled, as the upstream pause does).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The sandbox ("pause") image every node's containerd is configured with.
pub const PAUSE_IMAGE: &str = "ferry.local/pause:1";

/// The mover image name pods ask for by default.
pub fn ferry_image() -> String {
    format!("{}:{}", super::node::FERRY_IMAGE_REPOSITORY, env!("CARGO_PKG_VERSION"))
}

/// Build (or reuse) the image archive for `binary` under `dir`; returns its path.
/// The archive is rebuilt when the binary changes (size or mtime).
pub fn ensure_archive(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let meta = fs::metadata(binary).with_context(|| format!("reading {}", binary.display()))?;
    let stamp = format!("{} {:?} {}", binary.display(), meta.modified()?, meta.len());
    let archive = dir.join("ferry-oci.tar");
    let stamp_file = dir.join("ferry-oci.stamp");
    if archive.exists() && fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(archive);
    }
    let work = tempfile::tempdir_in(dir)?;
    let rootfs = work.path().join("rootfs");
    for d in ["usr/local/bin", "etc", "tmp", "data", "proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/usr/local/bin/ferry\nnobody:x:65534:65534:nobody:/nonexistent:/usr/local/bin/ferry\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    // Without debug info: a debug build is ~160 MB, stripped ~40 MB.
    let bin = rootfs.join("usr/local/bin/ferry");
    let out = Command::new("strip").arg("--strip-debug").arg("-o").arg(&bin).arg(binary).output();
    match out {
        Ok(o) if o.status.success() => {}
        _ => {
            fs::copy(binary, &bin)?;
        }
    }
    for lib in shared_libraries(binary)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        let target = rootfs.join(rel);
        fs::create_dir_all(target.parent().expect("library path has a parent"))?;
        fs::copy(&lib, &target).with_context(|| format!("copying {}", lib.display()))?;
    }
    let layer = work.path().join("layer.tar");
    let out = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name", "--mtime=@0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!("tar failed building the image layer: {}", String::from_utf8_lossy(&out.stderr).trim());
    }

    let oci = work.path().join("oci");
    let blobs = oci.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let digest = hex::encode(Sha256::digest(bytes));
        fs::write(blobs.join(&digest), bytes)?;
        Ok((format!("sha256:{digest}"), bytes.len()))
    };
    let (layer_digest, layer_size) = {
        let bytes = fs::read(&layer)?;
        put(&bytes)?
    };
    let mut manifests = Vec::new();
    for (name, entrypoint) in [(ferry_image(), json!(null)), (PAUSE_IMAGE.to_string(), json!(["/usr/local/bin/ferry", "dev", "pause"]))] {
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Entrypoint": entrypoint, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "ferry dev (src/dev/image.rs)"}],
        });
        let (config_digest, config_size) = put(&serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        });
        let (digest, size) = put(&serde_json::to_vec(&manifest)?)?;
        let tag = name.rsplit_once(':').map(|(_, t)| t.to_string()).unwrap_or_default();
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }));
    }
    fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(oci.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}))?)?;
    let tmp = dir.join("ferry-oci.tar.tmp");
    let out = Command::new("tar").args(["--numeric-owner", "--owner=0", "--group=0", "-C"]).arg(&oci).arg("-cf").arg(&tmp).arg(".").output()?;
    if !out.status.success() {
        bail!("tar failed writing the image archive: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    fs::rename(&tmp, &archive)?;
    fs::write(&stamp_file, stamp)?;
    Ok(archive)
}

/// The shared libraries `binary` loads, resolved to files (from `ldd`).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// `ferry dev pause`: the sandbox's process. Sleeps until SIGTERM or SIGINT
/// (as PID 1 signals without a handler are ignored, so it waits explicitly).
pub fn pause() -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()?;
    let _ = set.wait()?;
    Ok(())
}
