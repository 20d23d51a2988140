//! Watch a local working copy for the edit-save-see loop.
//!
//! Editors save in bursts (temp file, rename, chmod) and Git rewrites its
//! index on every status call, so events are filtered and debounced into a
//! single "something changed" tick.
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::RepoError;

/// A live watch; dropping it stops watching.
pub struct WorkingCopyWatch {
    rx: mpsc::Receiver<()>,
    _watcher: RecommendedWatcher,
}

impl WorkingCopyWatch {
    /// Wait for the next debounced change; `None` once the watch ended.
    pub async fn changed(&mut self) -> Option<()> {
        self.rx.recv().await
    }
}

/// Start watching `path` recursively. A tick is delivered once no relevant
/// event arrived for `debounce` after the last one. Changes inside `.git/`
/// are ignored: they are Git's bookkeeping, not edits.
pub fn watch(path: &Path, debounce: Duration) -> Result<WorkingCopyWatch, RepoError> {
    let root = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let watch_err = |source| RepoError::Watch {
        path: root.clone(),
        source,
    };
    let (raw_tx, raw_rx) = std_mpsc::channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            let _ = raw_tx.send(event);
        }
    })
    .map_err(watch_err)?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(watch_err)?;
    let (tx, rx) = mpsc::channel(1);
    let thread_root = root.clone();
    // A plain thread keeps this usable without a runtime handle and ends
    // when the watcher (and with it `raw_tx`) is dropped.
    std::thread::Builder::new()
        .name("ferry-watch".into())
        .spawn(move || debounce_loop(&thread_root, raw_rx, tx, debounce))
        .map_err(|e| watch_err(notify::Error::io(e)))?;
    Ok(WorkingCopyWatch {
        rx,
        _watcher: watcher,
    })
}

fn relevant(root: &Path, event: &notify::Event) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        let rel: PathBuf = p
            .strip_prefix(root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.clone());
        rel.components()
            .next()
            .is_none_or(|c| c.as_os_str() != ".git")
    })
}

fn debounce_loop(
    root: &Path,
    raw: std_mpsc::Receiver<notify::Event>,
    tx: mpsc::Sender<()>,
    debounce: Duration,
) {
    let mut pending_since: Option<Instant> = None;
    loop {
        let event = match pending_since {
            None => match raw.recv() {
                Ok(e) => Some(e),
                Err(_) => return,
            },
            Some(last) => match raw.recv_timeout(debounce.saturating_sub(last.elapsed())) {
                Ok(e) => Some(e),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        match event {
            Some(e) if relevant(root, &e) => pending_since = Some(Instant::now()),
            Some(_) => {}
            None => {
                pending_since = None;
                // A full channel already holds an undelivered tick, which
                // covers this change too.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
                    return;
                }
            }
        }
    }
}
