//! Hash cache kept outside the data directory (`--state DIR`): for each file, the
//! metadata it was hashed at and its block and content hashes. An entry is trusted only
//! while size, mtime, ctime and inode all still match — ctime cannot be set from user
//! space, so any write since then invalidates it (the same rule git's index uses).
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::hash::Digest;
use super::tree::Entry;
use super::{MoverError, Result};

const MAGIC: &[u8; 8] = b"FERRYIX1";

/// Cached hashes of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    /// Size when hashed.
    pub size: u64,
    /// mtime when hashed.
    pub mtime: (i64, u32),
    /// ctime when hashed.
    pub ctime: (i64, u32),
    /// Inode when hashed.
    pub ino: u64,
    /// Content hash.
    pub content: Digest,
    /// Block hashes (kept only for files large enough for delta transfer).
    pub blocks: Vec<Digest>,
}

impl Cached {
    /// Whether this cache entry still describes `e`.
    pub fn matches(&self, e: &Entry) -> bool {
        self.size == e.size
            && self.mtime == (e.mtime_s, e.mtime_ns)
            && self.ctime == (e.local.ctime_s, e.local.ctime_ns)
            && self.ino == e.local.ino
    }
}

/// The cache for one tree root.
#[derive(Debug, Default)]
pub struct HashIndex {
    file: Option<PathBuf>,
    root: Vec<u8>,
    /// Path → cached hashes.
    pub map: HashMap<Vec<u8>, Cached>,
    /// Set when entries were added; a clean cache with nothing to prune is not rewritten.
    pub dirty: bool,
}

impl HashIndex {
    /// In-memory cache (no `--state`).
    pub fn memory() -> Self {
        HashIndex::default()
    }

    /// Load `state/name` for tree `root`; a missing, foreign or damaged file gives an empty cache.
    pub fn load(state: &Path, name: &str, root: &Path) -> Result<Self> {
        std::fs::create_dir_all(state).map_err(|e| MoverError::io("create state directory", state, e))?;
        let file = state.join(name);
        // Canonical, so `dst` and `/abs/dst` share one cache.
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let root_b = root.as_os_str().as_encoded_bytes().to_vec();
        let mut idx = HashIndex { file: Some(file.clone()), root: root_b, map: HashMap::new(), dirty: false };
        match std::fs::File::open(&file) {
            Ok(f) => match read_map(&mut BufReader::with_capacity(1 << 20, f), &idx.root) {
                Ok(Some(m)) => idx.map = m,
                Ok(None) => tracing::info!(file = %file.display(), "hash cache belongs to another tree; starting fresh"),
                Err(e) => tracing::warn!(file = %file.display(), error = %e, "hash cache unreadable; starting fresh"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(MoverError::io("open hash cache", &file, e)),
        }
        Ok(idx)
    }

    /// Valid cached hashes for `e`, if any.
    pub fn get(&self, e: &Entry) -> Option<&Cached> {
        self.map.get(&e.path).filter(|c| c.matches(e))
    }

    /// Keep only paths in `keep` and write the cache atomically (no-op for in-memory caches).
    pub fn save(&mut self, keep: &[Entry]) -> Result<()> {
        let Some(file) = self.file.clone() else { return Ok(()) };
        let before = self.map.len();
        // Prune only when some cached path is not in `keep` (listings hold unique paths).
        if keep.iter().filter(|e| self.map.contains_key(&e.path)).count() < before {
            let mut kept = HashMap::with_capacity(keep.len());
            for e in keep {
                if let Some(c) = self.map.remove(&e.path) {
                    kept.insert(e.path.clone(), c);
                }
            }
            self.map = kept;
        }
        if !self.dirty && self.map.len() == before {
            return Ok(());
        }
        self.dirty = false;
        let tmp = file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            w.write_all(MAGIC)?;
            put_bytes(&mut w, &self.root)?;
            w.write_all(&(self.map.len() as u64).to_le_bytes())?;
            for (p, c) in &self.map {
                put_bytes(&mut w, p)?;
                for v in [c.size, c.mtime.0 as u64, c.mtime.1 as u64, c.ctime.0 as u64, c.ctime.1 as u64, c.ino, c.blocks.len() as u64] {
                    w.write_all(&v.to_le_bytes())?;
                }
                w.write_all(&c.content)?;
                for b in &c.blocks {
                    w.write_all(b)?;
                }
            }
            // No fsync: a torn cache after a crash fails its checks and is rebuilt, and fsync
            // on a busy volume costs seconds per pass.
            w.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, &file)
        };
        write().map_err(|e| MoverError::io("write hash cache", &file, e))
    }
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    w.write_all(&(b.len() as u64).to_le_bytes())?;
    w.write_all(b)
}

fn get_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_bytes(r: &mut impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    let n = get_u64(r)?;
    if n > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "length out of range"));
    }
    let mut v = vec![0u8; n as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

fn read_map(r: &mut impl Read, root: &[u8]) -> std::io::Result<Option<HashMap<Vec<u8>, Cached>>> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad magic"));
    }
    if get_bytes(r, 1 << 16)? != root {
        return Ok(None);
    }
    let n = get_u64(r)?;
    let mut map = HashMap::with_capacity(n.min(1 << 24) as usize);
    for _ in 0..n {
        let p = get_bytes(r, 1 << 16)?;
        let mut v = [0u64; 7];
        for x in v.iter_mut() {
            *x = get_u64(r)?;
        }
        let mut content = [0u8; 32];
        r.read_exact(&mut content)?;
        if v[6] > 1 << 24 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "block count out of range"));
        }
        let mut blocks = vec![[0u8; 32]; v[6] as usize];
        for b in blocks.iter_mut() {
            r.read_exact(b)?;
        }
        map.insert(p, Cached { size: v[0], mtime: (v[1] as i64, v[2] as u32), ctime: (v[3] as i64, v[4] as u32), ino: v[5], content, blocks });
    }
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::tree::{Kind, Local};

    #[test]
    fn roundtrip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let e = Entry {
            path: b"x/y".to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime_s: 10,
            mtime_ns: 5,
            size: 7,
            target: vec![],
            local: Local { ino: 9, ctime_s: 11, ctime_ns: 3, ..Local::default() },
        };
        let c = Cached { size: 7, mtime: (10, 5), ctime: (11, 3), ino: 9, content: [4; 32], blocks: vec![[1; 32]] };
        let mut idx = HashIndex::load(dir.path(), "ix", Path::new("/data")).unwrap();
        idx.map.insert(e.path.clone(), c.clone());
        idx.dirty = true;
        idx.save(std::slice::from_ref(&e)).unwrap();
        let idx = HashIndex::load(dir.path(), "ix", Path::new("/data")).unwrap();
        assert_eq!(idx.get(&e), Some(&c));
        let mut changed = e.clone();
        changed.local.ctime_ns = 4;
        assert!(idx.get(&changed).is_none());
        let other = HashIndex::load(dir.path(), "ix", Path::new("/elsewhere")).unwrap();
        assert!(other.map.is_empty());
    }
}
