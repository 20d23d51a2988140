//! A private OpenSSH server on a loopback port for tests: its own host key,
//! a generated deploy key in its authorized_keys, killed on drop.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd: own host key, own authorized_keys, loopback only.
/// Killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub deploy_key: PathBuf,
}

pub fn keygen(path: &Path, comment: &str) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path));
}

pub fn free_port() -> u16 {
    ferry::dev::process::free_ports(1).unwrap()[0]
}

impl Sshd {
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/install-deps.sh (installs the packages in scripts/test-deps.txt)"
        );
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_ed25519");
        let deploy_key = dir.path().join("deploy_ed25519");
        keygen(&host_key, "host");
        keygen(&deploy_key, "ferry-deploy");
        std::fs::copy(
            deploy_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPubkeyAuthentication yes\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                     PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
                    hk = host_key.display(),
                    d = dir.path().display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // port taken meanwhile or bad config: try again
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        child,
                        port,
                        dir,
                        deploy_key,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd did not start; log:\n{}",
            std::fs::read_to_string(dir_log(&dir)).unwrap_or_default()
        );
    }

    pub fn user() -> String {
        run(Command::new("id").arg("-un"))
    }

    pub fn url(&self, bare: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            Self::user(),
            self.port,
            bare.display()
        )
    }

    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(dir_log(&self.dir)).unwrap_or_default()
    }
}

fn dir_log(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("sshd.log")
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

