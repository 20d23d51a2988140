//! Command-line options naming a placement repository, shared by `ferry plan`
//! and `ferry agent`.
use std::path::{Path, PathBuf};

use super::{Auth, GitRepo, HostKeyPolicy, RepoSource, SecretSource};

/// Where the placement repository is and how to reach it.
#[derive(clap::Args, Debug, Clone)]
pub struct RepoArgs {
    /// Placement repository: a local directory, or a Git URL (file://, ssh://, user@host:path, https://).
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch holding the placements (default main).
    #[arg(long)]
    pub branch: Option<String>,
    /// SSH deploy key for ssh URLs.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file checked for ssh URLs (default ~/.ssh/known_hosts).
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Record unknown ssh host keys in --known-hosts on first contact instead of refusing.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Environment variable holding an https token.
    #[arg(long)]
    pub token_env: Option<String>,
    /// Extra CA (PEM) trusted for https.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Where Ferry keeps its bare clone (default ~/.cache/ferry/git/<hash of URL>).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl RepoArgs {
    /// A repository given by URL or path only, everything else defaulted.
    pub fn new(repo: impl Into<String>, branch: Option<String>) -> RepoArgs {
        RepoArgs { repo: Some(repo.into()), branch, ssh_key: None, known_hosts: None, accept_new_host_keys: false, token_env: None, ca_file: None, cache_dir: None }
    }

    /// The repository as given.
    pub fn repo(&self) -> anyhow::Result<&str> {
        self.repo.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| anyhow::anyhow!("no placement repository: pass --repo PATH|URL"))
    }

    /// The placement branch.
    pub fn branch(&self) -> &str {
        self.branch.as_deref().unwrap_or("main")
    }

    /// A local working directory (read as it is, uncommitted edits included).
    pub fn working_dir(&self) -> Option<&Path> {
        let repo = self.repo.as_deref()?;
        let p = Path::new(repo);
        (!repo.contains("://") && p.is_dir()).then_some(p)
    }

    /// The Git source; a local directory becomes a file:// URL of its repository.
    pub fn source(&self) -> anyhow::Result<RepoSource> {
        let url = match self.working_dir() {
            Some(dir) => format!("file://{}", dir.canonicalize()?.display()),
            None => self.repo()?.to_string(),
        };
        let auth = if let Some(key) = &self.ssh_key {
            let hosts = self.known_hosts.clone().unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".ssh/known_hosts")
            });
            Auth::SshKey {
                private_key: key.clone(),
                passphrase: None,
                host_keys: if self.accept_new_host_keys { HostKeyPolicy::AcceptNew(hosts) } else { HostKeyPolicy::KnownHosts(hosts) },
            }
        } else if let Some(env) = &self.token_env {
            Auth::Token { token: SecretSource::Env(env.clone()), username: None }
        } else {
            Auth::None
        };
        let cache_dir = self.cache_dir.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
            base.join("ferry/git").join(&blake3::hash(url.as_bytes()).to_hex()[..16])
        });
        Ok(RepoSource { url, branch: self.branch().to_string(), auth, cache_dir, tls_ca_file: self.ca_file.clone() })
    }

    /// Open (cloning or fetching) the repository.
    pub async fn open(&self) -> anyhow::Result<GitRepo> {
        let source = self.source()?;
        Ok(tokio::task::spawn_blocking(move || GitRepo::open_or_clone(&source)).await??)
    }
}
