//! Status commits: Ferry records what it did as files on a status branch.
//!
//! The push never forces. When the remote moved between Ferry's fetch and
//! its push, the commit is rebuilt from the new remote head plus only
//! Ferry's files, so every commit someone else pushed stays in history.
use std::cell::RefCell;
use std::rc::Rc;

use git2::{FileMode, PushOptions, build::TreeUpdateBuilder};

use super::{GitRepo, Oid, REMOTE, RepoError, auth};

/// Trailer naming the placement commit a status commit reports on. Its
/// presence marks a commit as Ferry's own, see [`is_ferry_status_message`].
pub const TRAILER_PLACEMENT_COMMIT: &str = "Ferry-Placement-Commit";
/// Trailer naming the migration a status commit reports on.
pub const TRAILER_MIGRATION: &str = "Ferry-Migration";

/// Author and committer of status commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Display name, e.g. `Ferry (east)`.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "Ferry".into(),
            email: "ferry@localhost".into(),
        }
    }
}

/// One status update to commit and push.
#[derive(Debug, Clone)]
pub struct StatusWrite {
    /// Branch that holds status; created as an orphan branch if missing.
    /// May be the placement branch itself.
    pub branch: String,
    /// Files to create or overwrite: repository-relative path → bytes.
    pub files: Vec<(String, Vec<u8>)>,
    /// Files to delete if present (e.g. status of a finished migration).
    pub removals: Vec<String>,
    /// Commit message without trailers.
    pub message: String,
    /// Placement commit this status reports on (written as a trailer).
    pub placement_commit: Oid,
    /// Migration id, if the status is about one migration.
    pub migration: Option<String>,
    /// Further `Key: value` trailers.
    pub extra_trailers: Vec<(String, String)>,
    /// Author and committer.
    pub identity: Identity,
    /// How often to rebuild and retry after a rejected push (at least 1).
    pub max_attempts: u32,
}

impl StatusWrite {
    /// A status write with the default identity and 5 attempts.
    pub fn new(
        branch: impl Into<String>,
        placement_commit: Oid,
        message: impl Into<String>,
    ) -> Self {
        StatusWrite {
            branch: branch.into(),
            files: Vec::new(),
            removals: Vec::new(),
            message: message.into(),
            placement_commit,
            migration: None,
            extra_trailers: Vec::new(),
            identity: Identity::default(),
            max_attempts: 5,
        }
    }

    /// Full commit message including Ferry's trailers.
    pub fn full_message(&self) -> String {
        let mut msg = self.message.trim_end().to_string();
        msg.push_str("\n\n");
        msg.push_str(&format!(
            "{TRAILER_PLACEMENT_COMMIT}: {}\n",
            self.placement_commit
        ));
        if let Some(m) = &self.migration {
            msg.push_str(&format!("{TRAILER_MIGRATION}: {m}\n"));
        }
        for (k, v) in &self.extra_trailers {
            msg.push_str(&format!("{k}: {v}\n"));
        }
        msg
    }
}

/// Result of a status write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOutcome {
    /// Head of the status branch after the write.
    pub commit: Oid,
    /// Push attempts used (1 when nobody raced us).
    pub attempts: u32,
    /// True when the files already had this content and nothing was pushed.
    pub unchanged: bool,
}

/// Whether a commit message carries Ferry's status trailer.
pub fn is_ferry_status_message(message: &str) -> bool {
    git2::message_trailers_strs(message)
        .map(|t| {
            t.iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(TRAILER_PLACEMENT_COMMIT))
        })
        .unwrap_or(false)
}

fn validate_path(path: &str) -> Result<(), RepoError> {
    let bad = |reason| {
        Err(RepoError::BadStatusPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.starts_with('/') {
        return bad("it is absolute");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("it has an empty component"),
            "." | ".." => return bad("it contains . or .."),
            p if p.eq_ignore_ascii_case(".git") => return bad("it points into .git"),
            _ => {}
        }
    }
    Ok(())
}

/// Why a push attempt did not land.
enum PushFailure {
    /// The remote branch moved; rebuild and retry.
    Rejected(String),
    Fatal(RepoError),
}

impl GitRepo {
    /// Commit `write.files` on top of the remote status branch and push.
    pub fn write_status(&self, write: &StatusWrite) -> Result<StatusOutcome, RepoError> {
        self.write_status_with(write, &mut |_| {})
    }

    /// Like [`write_status`](Self::write_status), calling `before_push(attempt)`
    /// after the commit is built and before it is pushed — the window in
    /// which another writer can race Ferry (tests use it to provoke that).
    pub fn write_status_with(
        &self,
        write: &StatusWrite,
        before_push: &mut dyn FnMut(u32),
    ) -> Result<StatusOutcome, RepoError> {
        for path in write.files.iter().map(|(p, _)| p).chain(&write.removals) {
            validate_path(path)?;
        }
        let branch = &write.branch;
        let commit_err = |source| RepoError::Commit {
            url: self.url_shown.clone(),
            branch: branch.clone(),
            source,
        };
        let max = write.max_attempts.max(1);
        let mut last_reason = String::new();
        for attempt in 1..=max {
            self.fetch_all(branch)?;
            let base = self.branch_head(branch)?;
            let base_commit = base
                .map(|b| self.repo.find_commit(b))
                .transpose()
                .map_err(commit_err)?;
            let base_tree = match &base_commit {
                Some(c) => c.tree().map_err(commit_err)?,
                None => {
                    let empty = self
                        .repo
                        .treebuilder(None)
                        .and_then(|b| b.write())
                        .map_err(commit_err)?;
                    self.repo.find_tree(empty).map_err(commit_err)?
                }
            };
            let mut update = TreeUpdateBuilder::new();
            for (path, bytes) in &write.files {
                let blob = self.repo.blob(bytes).map_err(commit_err)?;
                update.upsert(path.as_str(), blob, FileMode::Blob);
            }
            for path in &write.removals {
                // libgit2 refuses to remove what is not there.
                if base_tree.get_path(std::path::Path::new(path)).is_ok() {
                    update.remove(path.as_str());
                }
            }
            let tree_id = update
                .create_updated(&self.repo, &base_tree)
                .map_err(commit_err)?;
            if let Some(b) = base.filter(|_| tree_id == base_tree.id()) {
                return Ok(StatusOutcome {
                    commit: b,
                    attempts: attempt,
                    unchanged: true,
                });
            }
            let tree = self.repo.find_tree(tree_id).map_err(commit_err)?;
            let sig = git2::Signature::now(&write.identity.name, &write.identity.email)
                .map_err(commit_err)?;
            let parents: Vec<&git2::Commit<'_>> = base_commit.iter().collect();
            let commit = self
                .repo
                .commit(None, &sig, &sig, &write.full_message(), &tree, &parents)
                .map_err(commit_err)?;
            before_push(attempt);
            match self.push_commit(commit, branch) {
                Ok(()) => {
                    self.repo
                        .reference(
                            &format!("refs/remotes/{REMOTE}/{branch}"),
                            commit,
                            true,
                            "ferry status push",
                        )
                        .map_err(commit_err)?;
                    tracing::info!(%branch, %commit, attempt, "pushed status commit");
                    return Ok(StatusOutcome {
                        commit,
                        attempts: attempt,
                        unchanged: false,
                    });
                }
                Err(PushFailure::Rejected(reason)) => {
                    tracing::info!(%branch, attempt, %reason, "status push rejected; rebuilding on the new remote head");
                    // Retrying only helps if the remote actually moved; a
                    // hook or protection rule would reject forever.
                    self.fetch_all(branch)?;
                    if self.branch_head(branch)? == base {
                        return Err(RepoError::PushRejected {
                            url: self.url_shown.clone(),
                            branch: branch.clone(),
                            attempts: attempt,
                            reason,
                        });
                    }
                    last_reason = reason;
                }
                Err(PushFailure::Fatal(e)) => return Err(e),
            }
        }
        Err(RepoError::PushRejected {
            url: self.url_shown.clone(),
            branch: branch.clone(),
            attempts: max,
            reason: last_reason,
        })
    }

    /// Push `commit` to `refs/heads/<branch>` without force.
    fn push_commit(&self, commit: Oid, branch: &str) -> Result<(), PushFailure> {
        let fatal = |source| {
            PushFailure::Fatal(RepoError::Push {
                url: self.url_shown.clone(),
                branch: branch.into(),
                hint: "the local cache could not record the commit; delete the cache directory to re-clone",
                source,
            })
        };
        // libgit2 pushes references, not bare object ids.
        let local = format!("refs/ferry/push/{branch}");
        self.repo
            .reference(&local, commit, true, "ferry status push")
            .map_err(fatal)?;
        let callbacks = auth::Callbacks::new();
        let rejected: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
        let mut cb = callbacks.build(&self.source);
        let sink = rejected.clone();
        cb.push_update_reference(move |_refname, status| {
            if let Some(msg) = status {
                *sink.borrow_mut() = Some(msg.to_string());
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let result = self
            .repo
            .find_remote(REMOTE)
            .and_then(|mut r| r.push(&[format!("{local}:refs/heads/{branch}")], Some(&mut opts)));
        let _ = self
            .repo
            .find_reference(&local)
            .and_then(|mut r| r.delete());
        match result {
            Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
                Err(PushFailure::Rejected(e.message().to_string()))
            }
            Err(source) => Err(callbacks
                .take_failure()
                .map(PushFailure::Fatal)
                .unwrap_or_else(|| {
                    PushFailure::Fatal(RepoError::Push {
                        url: self.url_shown.clone(),
                        branch: branch.into(),
                        hint: super::hint_for(&source),
                        source,
                    })
                })),
            Ok(()) => match rejected.borrow_mut().take() {
                Some(reason) => Err(PushFailure::Rejected(reason)),
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_trailers_that_mark_it() {
        let oid = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let mut w = StatusWrite::new("status", oid, "status: shop moved to west\n");
        w.migration = Some("shop-20261122".into());
        let msg = w.full_message();
        assert!(msg.ends_with(&format!(
            "{TRAILER_PLACEMENT_COMMIT}: {oid}\n{TRAILER_MIGRATION}: shop-20261122\n"
        )));
        assert!(is_ferry_status_message(&msg));
        assert!(!is_ferry_status_message(
            "Move shop to west\n\nSigned-off-by: a <a@b>\n"
        ));
    }

    #[test]
    fn status_paths_are_validated() {
        assert!(validate_path("status/shop.yaml").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            ".git/config",
            "a//b",
            "x/.GIT/y",
        ] {
            assert!(validate_path(bad).is_err(), "{bad} accepted");
        }
    }
}
