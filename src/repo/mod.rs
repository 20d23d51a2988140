//! Everything Ferry does with Git — the only module that imports `git2`.
//!
//! - [`GitRepo`] keeps a bare clone of the placement repository in a cache
//!   directory, fetches it over `file://`, SSH (deploy key, known_hosts
//!   check) or HTTPS (token), and reads files at a commit without a checkout.
//! - [`GitRepo::write_status`] commits status files with Ferry's identity
//!   and pushes them, rebuilding the commit on the new remote head when
//!   someone pushed meanwhile; it never force-pushes.
//! - [`signature`] verifies SSH and OpenPGP commit signatures against
//!   trusted keys; [`watch`] notices saves in a local working copy.
//!
//! All calls block; async callers wrap them in `tokio::task::spawn_blocking`.
//!
//! Caveat: libgit2 pushes to `file://` remotes in-process, so the remote's
//! server-side hooks do not run there; they do over SSH and HTTPS.
mod auth;
pub mod cli;
mod error;
mod pr;
pub mod signature;
mod status;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, FetchOptions, FetchPrune, ObjectType, Repository, TreeWalkMode, TreeWalkResult,
};

pub use auth::{Auth, HostKeyPolicy, SecretSource, redact_url};
pub use error::RepoError;
/// A Git object id (commit SHA).
pub use git2::Oid;
pub use pr::pr_number;
pub use signature::{SignatureKind, SignatureVerdict, TrustedKeys};
pub use status::{
    Identity, StatusOutcome, StatusWrite, TRAILER_MIGRATION, TRAILER_PLACEMENT_COMMIT,
    is_ferry_status_message,
};
pub use watch::{WorkingCopyWatch, watch};

/// Name of the remote inside the cache clone.
const REMOTE: &str = "origin";

/// Where the placement repository lives and how to reach it.
#[derive(Debug, Clone)]
pub struct RepoSource {
    /// Clone URL: `file:///…`, `ssh://user@host:port/path`, `user@host:path` or `https://…`.
    pub url: String,
    /// The placement branch Ferry follows.
    pub branch: String,
    /// Credentials for the remote.
    pub auth: Auth,
    /// Directory of Ferry's bare clone; created on first use.
    pub cache_dir: PathBuf,
    /// Extra CA certificate(s), PEM, trusted for this remote's HTTPS in
    /// addition to the system roots (self-hosted forges).
    pub tls_ca_file: Option<PathBuf>,
}

/// Metadata of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit id.
    pub id: Oid,
    /// Full message.
    pub message: String,
    /// First line of the message.
    pub summary: String,
    /// Author name.
    pub author_name: String,
    /// Author e-mail.
    pub author_email: String,
    /// Author time, seconds since the Unix epoch.
    pub time: i64,
    /// Parent commit ids, first parent first.
    pub parents: Vec<Oid>,
    /// `Key: value` trailers at the end of the message.
    pub trailers: Vec<(String, String)>,
}

impl CommitInfo {
    /// Value of the first trailer named `key` (case-insensitive).
    pub fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Whether Ferry wrote this commit as a status update; such commits must
    /// never trigger work, also when status shares the placement branch.
    pub fn is_ferry_status_commit(&self) -> bool {
        self.trailer(TRAILER_PLACEMENT_COMMIT).is_some()
    }

    /// Pull/merge request number named in the message, see [`pr_number`].
    pub fn pr_number(&self) -> Option<u64> {
        pr_number(&self.message)
    }
}

/// Ferry's bare clone of one remote repository.
pub struct GitRepo {
    repo: Repository,
    source: RepoSource,
    url_shown: String,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo")
            .field("url", &self.url_shown)
            .field("branch", &self.source.branch)
            .finish()
    }
}

impl GitRepo {
    /// Open the cache clone, or create it (bare, no checkout) and fetch.
    pub fn open_or_clone(source: &RepoSource) -> Result<Self, RepoError> {
        let url_shown = redact_url(&source.url);
        let dir = &source.cache_dir;
        let open_err = |e| RepoError::OpenCache {
            path: dir.clone(),
            source: e,
        };
        let fresh = !dir.join("HEAD").exists();
        let repo = if fresh {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(git2::Error::from_str(&format!("create directory: {e}"))))?;
            let repo = Repository::init_bare(dir).map_err(open_err)?;
            repo.remote(REMOTE, &source.url).map_err(open_err)?;
            repo
        } else {
            let repo = Repository::open_bare(dir).map_err(open_err)?;
            let found = repo
                .find_remote(REMOTE)
                .map_err(open_err)?
                .url()
                .unwrap_or("")
                .to_string();
            if found != source.url {
                return Err(RepoError::CacheUrlMismatch {
                    path: dir.clone(),
                    found: redact_url(&found),
                    url: url_shown,
                });
            }
            repo
        };
        let this = GitRepo {
            repo,
            source: source.clone(),
            url_shown,
        };
        if fresh {
            this.fetch()?;
        }
        Ok(this)
    }

    /// The source this clone follows.
    pub fn source(&self) -> &RepoSource {
        &self.source
    }

    /// Fetch every branch and return the head of the placement branch.
    pub fn fetch(&self) -> Result<Oid, RepoError> {
        self.fetch_all(&self.source.branch)?;
        self.branch_head(&self.source.branch)?
            .ok_or_else(|| RepoError::BranchMissing {
                url: self.url_shown.clone(),
                branch: self.source.branch.clone(),
            })
    }

    /// Fetch all remote branches into `refs/remotes/origin/*`, pruning
    /// deleted ones. `branch` only labels errors.
    fn fetch_all(&self, branch: &str) -> Result<(), RepoError> {
        let callbacks = auth::Callbacks::new();
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks.build(&self.source));
        opts.prune(FetchPrune::On);
        opts.download_tags(AutotagOption::None);
        let result = self.repo.find_remote(REMOTE).and_then(|mut remote| {
            remote.fetch(
                &[format!("+refs/heads/*:refs/remotes/{REMOTE}/*")],
                Some(&mut opts),
                Some("ferry fetch"),
            )
        });
        result.map_err(|source| {
            callbacks
                .take_failure()
                .unwrap_or_else(|| RepoError::Fetch {
                    url: self.url_shown.clone(),
                    branch: branch.to_string(),
                    hint: hint_for(&source),
                    source,
                })
        })
    }

    /// Last fetched head of a remote branch, `None` if the remote lacks it.
    pub fn branch_head(&self, branch: &str) -> Result<Option<Oid>, RepoError> {
        match self
            .repo
            .refname_to_id(&format!("refs/remotes/{REMOTE}/{branch}"))
        {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(source) => Err(RepoError::Resolve {
                url: self.url_shown.clone(),
                rev: branch.into(),
                source,
            }),
        }
    }

    /// Resolve a revision (full or abbreviated SHA, `origin/branch`, `HEAD~1` …) to a commit.
    /// The clone is bare and has no HEAD of its own: `HEAD` means the fetched
    /// head of the placement branch, and a bare branch name its remote branch.
    pub fn resolve(&self, rev: &str) -> Result<Oid, RepoError> {
        let err = |source| RepoError::Resolve { url: self.url_shown.clone(), rev: rev.to_string(), source };
        let spec = match rev.strip_prefix("HEAD") {
            Some(rest) => format!("refs/remotes/{REMOTE}/{}{rest}", self.source.branch),
            None => rev.to_string(),
        };
        let obj = self.repo.revparse_single(&spec)
            .or_else(|e| self.repo.revparse_single(&format!("refs/remotes/{REMOTE}/{rev}")).map_err(|_| e))
            .map_err(err)?;
        Ok(obj.peel_to_commit().map_err(err)?.id())
    }

    fn commit(&self, oid: Oid) -> Result<git2::Commit<'_>, RepoError> {
        self.repo
            .find_commit(oid)
            .map_err(|source| RepoError::Read {
                url: self.url_shown.clone(),
                commit: oid.to_string(),
                what: "commit".into(),
                source,
            })
    }

    /// Every regular file under `prefix` (`""` = whole tree) at `commit`,
    /// keyed by its path from the repository root. A missing prefix yields
    /// an empty map; symlinks and submodules are skipped.
    pub fn read_files_at(
        &self,
        commit: Oid,
        prefix: &str,
    ) -> Result<BTreeMap<String, String>, RepoError> {
        let prefix = prefix.trim_matches('/');
        let read_err = |what: String, source| RepoError::Read {
            url: self.url_shown.clone(),
            commit: commit.to_string(),
            what,
            source,
        };
        let root = self
            .commit(commit)?
            .tree()
            .map_err(|e| read_err("tree".into(), e))?;
        let tree = if prefix.is_empty() {
            root
        } else {
            match root.get_path(Path::new(prefix)) {
                Ok(entry) if entry.kind() == Some(ObjectType::Tree) => self
                    .repo
                    .find_tree(entry.id())
                    .map_err(|e| read_err(prefix.to_string(), e))?,
                Ok(_) => return Ok(BTreeMap::new()),
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(BTreeMap::new()),
                Err(e) => return Err(read_err(prefix.to_string(), e)),
            }
        };
        let mut blobs = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let is_file = entry.kind() == Some(ObjectType::Blob) && entry.filemode() != 0o120000;
            if is_file {
                let name = String::from_utf8_lossy(entry.name_bytes());
                let path = if prefix.is_empty() {
                    format!("{dir}{name}")
                } else {
                    format!("{prefix}/{dir}{name}")
                };
                blobs.push((path, entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| read_err(format!("{prefix}/"), e))?;
        let mut files = BTreeMap::new();
        for (path, id) in blobs {
            let blob = self
                .repo
                .find_blob(id)
                .map_err(|e| read_err(path.clone(), e))?;
            let text =
                String::from_utf8(blob.content().to_vec()).map_err(|_| RepoError::NotUtf8 {
                    url: self.url_shown.clone(),
                    commit: commit.to_string(),
                    path: path.clone(),
                })?;
            files.insert(path, text);
        }
        Ok(files)
    }

    /// Bytes of one file at `commit`, `None` if it does not exist there.
    pub fn read_file_at(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let read_err = |source| RepoError::Read {
            url: self.url_shown.clone(),
            commit: commit.to_string(),
            what: path.to_string(),
            source,
        };
        let tree = self.commit(commit)?.tree().map_err(read_err)?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match entry.to_object(&self.repo).map_err(read_err)?.into_blob() {
            Ok(blob) => Ok(Some(blob.content().to_vec())),
            Err(_) => Ok(None),
        }
    }

    /// Paths added, modified or deleted between `base` and `rev` (both
    /// sides of a rename). `base = None` lists every file of `rev`.
    pub fn changed_paths(
        &self,
        base: Option<Oid>,
        rev: Oid,
    ) -> Result<BTreeSet<String>, RepoError> {
        let diff_err = |source| RepoError::Read {
            url: self.url_shown.clone(),
            commit: rev.to_string(),
            what: format!(
                "diff against {}",
                base.map(|b| b.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ),
            source,
        };
        let new_tree = self.commit(rev)?.tree().map_err(diff_err)?;
        let old_tree = match base {
            Some(b) => Some(self.commit(b)?.tree().map_err(diff_err)?),
            None => None,
        };
        let diff = self
            .repo
            .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)
            .map_err(diff_err)?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path() {
                    paths.insert(p.to_string_lossy().into_owned());
                }
            }
        }
        Ok(paths)
    }

    /// Message, author, time, parents and trailers of a commit.
    pub fn commit_info(&self, oid: Oid) -> Result<CommitInfo, RepoError> {
        let c = self.commit(oid)?;
        let message = String::from_utf8_lossy(c.message_bytes()).into_owned();
        let trailers = git2::message_trailers_strs(&message)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let author = c.author();
        Ok(CommitInfo {
            id: oid,
            summary: message.lines().next().unwrap_or("").to_string(),
            author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            time: author.when().seconds(),
            parents: c.parent_ids().collect(),
            trailers,
            message,
        })
    }

    /// The newest commit at or below `head` (following first parents) that
    /// is not a Ferry status commit — the placement state Ferry acts on.
    ///
    /// A commit counts as status only if it carries Ferry's trailer *and*
    /// changes nothing outside `status_dir`: anyone can copy a trailer, and
    /// a disguised commit that edits placements must not be skipped.
    pub fn latest_placement_commit(&self, head: Oid, status_dir: &str) -> Result<Oid, RepoError> {
        let status_dir = status_dir.trim_matches('/');
        let mut current = head;
        loop {
            let info = self.commit_info(current)?;
            let Some(&parent) = info.parents.first() else {
                return Ok(current);
            };
            if !info.is_ferry_status_commit() {
                return Ok(current);
            }
            let only_status = self.changed_paths(Some(parent), current)?.iter().all(|p| {
                !status_dir.is_empty()
                    && p.starts_with(status_dir)
                    && p[status_dir.len()..].starts_with('/')
            });
            if !only_status {
                tracing::warn!(commit = %current, "commit carries Ferry's status trailer but changes files outside {status_dir}/; treating it as a placement commit");
                return Ok(current);
            }
            current = parent;
        }
    }

    /// Whether `ancestor` is reachable from `descendant` (or equal to it).
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, RepoError> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(descendant, ancestor)
            .map_err(|source| RepoError::Read {
                url: self.url_shown.clone(),
                commit: descendant.to_string(),
                what: format!("ancestry of {ancestor}"),
                source,
            })
    }
}

/// What the operator should try, from the class of a transport error.
fn hint_for(e: &git2::Error) -> &'static str {
    use git2::{ErrorClass as C, ErrorCode as K};
    match (e.class(), e.code()) {
        (_, K::Auth) | (C::Ssh, _) => {
            "check the deploy key or token and that it has access to the repository"
        }
        (_, K::Certificate) => {
            "the server's certificate or host key was refused; check known_hosts / CA trust"
        }
        (C::Net | C::Http, _) => "check the URL, DNS and that the server is reachable",
        (C::Repository | C::Odb, _) => {
            "the cache may be corrupt; delete the cache directory to re-clone"
        }
        _ => "check the URL and that the repository exists",
    }
}

#[cfg(test)]
mod tests {
    /// The agent moves the clone into `spawn_blocking`, so it must stay `Send`.
    #[test]
    fn git_repo_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<super::GitRepo>();
        assert_send::<super::WorkingCopyWatch>();
    }
}
