//! Tree listings: a parallel walk producing sorted entries with the metadata the mover
//! preserves, hardlink grouping, and the deterministic tree hash both ends compute.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use super::hash::{BlockHasher, Digest};
use super::{BLOCK_SIZE, MoverError, Result};

/// Entry type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Directory.
    Dir = 1,
    /// Regular file carrying content (the first path of a hardlink group is one too).
    File = 2,
    /// Symbolic link; `target` holds the link text.
    Symlink = 3,
    /// Further name of a hardlinked file; `target` holds the group's first path.
    Hardlink = 4,
}

impl Kind {
    /// Decode from the wire.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::Hardlink,
            _ => return None,
        })
    }

    /// File and Hardlink are both regular files on disk.
    pub fn is_regular(self) -> bool {
        matches!(self, Kind::File | Kind::Hardlink)
    }
}

/// Local facts about an entry that never cross the wire (used for cache validation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Local {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Link count.
    pub nlink: u64,
    /// ctime seconds.
    pub ctime_s: i64,
    /// ctime nanoseconds.
    pub ctime_ns: u32,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
}

/// One path in a tree (relative, `/`-separated, the root is the empty path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative path bytes.
    pub path: Vec<u8>,
    /// Type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (0 for symlinks).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime_s: i64,
    /// Modification time, nanoseconds.
    pub mtime_ns: u32,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Symlink text, or the first path of the hardlink group.
    pub target: Vec<u8>,
    /// Local-only facts.
    pub local: Local,
}

impl Entry {
    /// Path for display.
    pub fn display(&self) -> String {
        if self.path.is_empty() { ".".to_string() } else { String::from_utf8_lossy(&self.path).into_owned() }
    }

    /// Absolute path under `root`.
    pub fn abs(&self, root: &Path) -> PathBuf {
        abs_path(root, &self.path)
    }
}

/// `root` joined with a relative path in bytes.
pub fn abs_path(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(OsStr::from_bytes(rel)) }
}

fn entry_from_meta(path: Vec<u8>, md: &std::fs::Metadata, root: &Path) -> Result<Option<Entry>> {
    let ft = md.file_type();
    let (kind, size, target) = if ft.is_dir() {
        (Kind::Dir, 0, Vec::new())
    } else if ft.is_file() {
        (Kind::File, md.size(), Vec::new())
    } else if ft.is_symlink() {
        let p = abs_path(root, &path);
        let t = std::fs::read_link(&p).map_err(|e| MoverError::io("readlink", &p, e))?;
        (Kind::Symlink, md.size(), t.into_os_string().into_encoded_bytes())
    } else {
        tracing::warn!(path = %String::from_utf8_lossy(&path), "skipping special file (fifo, socket or device)");
        return Ok(None);
    };
    Ok(Some(Entry {
        path,
        kind,
        mode: if kind == Kind::Symlink { 0 } else { md.mode() & 0o7777 },
        uid: md.uid(),
        gid: md.gid(),
        mtime_s: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        size,
        target,
        local: Local {
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            ctime_s: md.ctime(),
            ctime_ns: md.ctime_nsec() as u32,
            blocks: md.blocks(),
        },
    }))
}

/// Walk `root` with `threads` workers, skipping the top-level names in `exclude`.
/// Returns entries sorted by path with hardlinks grouped.
pub fn walk(root: &Path, threads: usize, exclude: &[&[u8]]) -> Result<Vec<Entry>> {
    let md = std::fs::symlink_metadata(root).map_err(|e| MoverError::io("stat", root, e))?;
    if !md.is_dir() {
        return Err(MoverError::Config(format!("{} is not a directory", root.display())));
    }
    let root_entry = entry_from_meta(Vec::new(), &md, root)?.expect("dir");
    struct Shared {
        queue: Vec<Vec<u8>>,
        busy: usize,
        out: Vec<Entry>,
        err: Option<MoverError>,
    }
    let shared = Mutex::new(Shared { queue: vec![Vec::new()], busy: 0, out: vec![root_entry], err: None });
    let cv = Condvar::new();
    let worker = || {
        loop {
            let dir = {
                let mut s = shared.lock().unwrap();
                loop {
                    if s.err.is_some() {
                        return;
                    }
                    if let Some(d) = s.queue.pop() {
                        s.busy += 1;
                        break d;
                    }
                    if s.busy == 0 {
                        cv.notify_all();
                        return;
                    }
                    s = cv.wait(s).unwrap();
                }
            };
            let mut found = Vec::new();
            let mut subdirs = Vec::new();
            let res = (|| -> Result<()> {
                let p = abs_path(root, &dir);
                let rd = std::fs::read_dir(&p).map_err(|e| MoverError::io("read directory", &p, e))?;
                for de in rd {
                    let de = de.map_err(|e| MoverError::io("read directory", &p, e))?;
                    let name = de.file_name();
                    let name = name.as_bytes();
                    if dir.is_empty() && exclude.contains(&name) {
                        continue;
                    }
                    let mut rel = Vec::with_capacity(dir.len() + 1 + name.len());
                    if !dir.is_empty() {
                        rel.extend_from_slice(&dir);
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(name);
                    let md = match de.metadata() {
                        Ok(m) => m,
                        // Vanished between readdir and stat: it is simply not part of this listing.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(MoverError::io("stat", &abs_path(root, &rel), e)),
                    };
                    if let Some(e) = entry_from_meta(rel, &md, root)? {
                        if e.kind == Kind::Dir {
                            subdirs.push(e.path.clone());
                        }
                        found.push(e);
                    }
                }
                Ok(())
            })();
            let mut s = shared.lock().unwrap();
            s.busy -= 1;
            match res {
                Ok(()) => {
                    s.out.append(&mut found);
                    s.queue.append(&mut subdirs);
                }
                Err(e) => {
                    if s.err.is_none() {
                        s.err = Some(e);
                    }
                }
            }
            cv.notify_all();
        }
    };
    std::thread::scope(|sc| {
        for _ in 0..threads.max(1) {
            sc.spawn(worker);
        }
    });
    let s = shared.into_inner().unwrap();
    if let Some(e) = s.err {
        return Err(e);
    }
    let mut out = s.out;
    out.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    group_hardlinks(&mut out);
    Ok(out)
}

/// Mark every regular file sharing an inode with an earlier path as a [`Kind::Hardlink`]
/// to the group's first path (entries must be sorted).
pub fn group_hardlinks(entries: &mut [Entry]) {
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    for i in 0..entries.len() {
        let e = &entries[i];
        if e.kind != Kind::File || e.local.nlink < 2 {
            continue;
        }
        match first.get(&(e.local.dev, e.local.ino)) {
            Some(&leader) => {
                let t = entries[leader].path.clone();
                let e = &mut entries[i];
                e.kind = Kind::Hardlink;
                e.target = t;
            }
            None => {
                first.insert((e.local.dev, e.local.ino), i);
            }
        }
    }
}

/// Deterministic hash over a sorted listing: each entry's path, type and metadata plus
/// its content hash (files), link text (symlinks) or group leader (hardlinks), folded
/// into one digest. `content(i)` gives the content hash of file entry `i`.
pub fn tree_hash(entries: &[Entry], mut content: impl FnMut(usize) -> Digest) -> Digest {
    let mut top = blake3::Hasher::new();
    top.update(b"ferry-tree-v1");
    top.update(&(entries.len() as u64).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let mut h = blake3::Hasher::new();
        h.update(&(e.path.len() as u64).to_le_bytes());
        h.update(&e.path);
        h.update(&[e.kind as u8]);
        h.update(&e.mode.to_le_bytes());
        h.update(&e.uid.to_le_bytes());
        h.update(&e.gid.to_le_bytes());
        h.update(&e.mtime_s.to_le_bytes());
        h.update(&e.mtime_ns.to_le_bytes());
        match e.kind {
            Kind::Dir => {}
            Kind::File => {
                h.update(&e.size.to_le_bytes());
                h.update(&content(i));
            }
            Kind::Symlink | Kind::Hardlink => {
                h.update(&(e.target.len() as u64).to_le_bytes());
                h.update(&e.target);
            }
        }
        top.update(h.finalize().as_bytes());
    }
    *top.finalize().as_bytes()
}

/// Open a file for reading without following symlinks and, where permitted, without
/// updating its atime (the source must stay untouched).
pub fn open_read(path: &Path) -> std::io::Result<File> {
    let try_open = |flags| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path);
    match try_open(libc::O_NOFOLLOW | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => try_open(libc::O_NOFOLLOW),
        r => r,
    }
}

/// Opens files by name relative to their parent directory, keeping the last directory
/// open: work in listing order stays in one directory for a while, and each open then
/// looks up one name instead of the whole path.
pub struct DirCache {
    root: PathBuf,
    dir: Vec<u8>,
    fd: Option<std::os::fd::OwnedFd>,
}

impl DirCache {
    /// Paths are relative to `root`.
    pub fn new(root: &Path) -> Self {
        DirCache { root: root.to_path_buf(), dir: Vec::new(), fd: None }
    }

    /// `openat(2)` of the relative path `rel` (flags get O_CLOEXEC).
    pub fn open(&mut self, rel: &[u8], flags: i32, mode: u32) -> std::io::Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        if self.fd.is_none() || self.dir != parent {
            self.fd = None;
            let p = std::ffi::CString::new(abs_path(&self.root, parent).into_os_string().into_encoded_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: valid C string; the fd is owned below.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fresh fd we own.
            self.fd = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            self.dir.clear();
            self.dir.extend_from_slice(parent);
        }
        let name = std::ffi::CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let dirfd = self.fd.as_ref().expect("set above").as_raw_fd();
        // SAFETY: valid dirfd and C string; the fd is owned by the File.
        let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ENOTDIR) {
                // The directory itself may have been replaced: look it up again next time.
                self.fd = None;
            }
            return Err(e);
        }
        // SAFETY: fresh fd we own.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// [`open_read`] relative to the cached directory.
    pub fn open_read(&mut self, rel: &[u8]) -> std::io::Result<File> {
        match self.open(rel, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self.open(rel, libc::O_RDONLY | libc::O_NOFOLLOW, 0),
            r => r,
        }
    }
}

/// Data ranges of an open file (SEEK_DATA/SEEK_HOLE when it has fewer allocated blocks
/// than its size suggests, else one range).
pub fn data_segments(file: &File, size: u64, alloc_blocks: u64) -> Vec<(u64, u64)> {
    if size == 0 {
        return Vec::new();
    }
    if alloc_blocks * 512 >= size {
        return vec![(0, size)];
    }
    let fd = file.as_raw_fd();
    let mut segs = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on an fd we own; errors are checked.
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only holes remain
            }
            return vec![(0, size)]; // filesystem without SEEK_DATA: treat as dense
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let end = if end < 0 { size as i64 } else { end.min(size as i64) };
        if end > start {
            segs.push((start as u64, end as u64));
        }
        pos = end;
    }
    segs
}

/// Hash an open file by reading only its data ranges: (block hashes, content hash).
pub fn hash_file(file: &File, path: &Path, size: u64, alloc_blocks: u64) -> Result<(Vec<Digest>, Digest)> {
    let mut h = BlockHasher::new();
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for (start, end) in data_segments(file, size, alloc_blocks) {
        let mut off = start;
        while off < end {
            let n = ((end - off).min(BLOCK_SIZE - off % BLOCK_SIZE)) as usize;
            let got = read_full_at(file, &mut buf[..n], off).map_err(|e| MoverError::io("read", path, e))?;
            h.feed(off, &buf[..got]).map_err(MoverError::Protocol)?;
            if got < n {
                break; // file shrank while reading: the rest hashes as zeros
            }
            off += n as u64;
        }
    }
    Ok(h.finish(size))
}

/// Read until `buf` is full or EOF; returns bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, ino: u64, nlink: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_s: 1,
            mtime_ns: 0,
            size: 3,
            target: vec![],
            local: Local { dev: 1, ino, nlink, ..Local::default() },
        }
    }

    #[test]
    fn hardlinks_point_at_first_path() {
        let mut v = vec![file("a", 5, 2), file("b", 6, 1), file("c", 5, 2)];
        group_hardlinks(&mut v);
        assert_eq!(v[0].kind, Kind::File);
        assert_eq!(v[1].kind, Kind::File);
        assert_eq!(v[2].kind, Kind::Hardlink);
        assert_eq!(v[2].target, b"a");
    }

    #[test]
    fn dir_cache_opens_relative_to_the_right_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("top"), b"1").unwrap();
        std::fs::write(d.path().join("a/b/x"), b"2").unwrap();
        std::fs::write(d.path().join("a/y"), b"3").unwrap();
        std::os::unix::fs::symlink("x", d.path().join("a/b/link")).unwrap();
        let mut c = DirCache::new(d.path());
        let read = |f: File| std::io::read_to_string(f).unwrap();
        assert_eq!(read(c.open_read(b"a/b/x").unwrap()), "2");
        assert_eq!(read(c.open_read(b"a/y").unwrap()), "3");
        assert_eq!(read(c.open_read(b"top").unwrap()), "1");
        assert_eq!(c.open_read(b"a/b/link").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(c.open_read(b"a/b/none").unwrap_err().raw_os_error(), Some(libc::ENOENT));
        let f = c.open(b"a/new", libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600).unwrap();
        drop(f);
        assert!(d.path().join("a/new").is_file());
    }

    #[test]
    fn tree_hash_sees_metadata_and_content() {
        let v = vec![file("a", 1, 1)];
        let base = tree_hash(&v, |_| [1; 32]);
        assert_ne!(base, tree_hash(&v, |_| [2; 32]));
        let mut w = v.clone();
        w[0].uid = 7;
        assert_ne!(base, tree_hash(&w, |_| [1; 32]));
        let mut w = v.clone();
        w[0].mtime_ns = 1;
        assert_ne!(base, tree_hash(&w, |_| [1; 32]));
        let mut w = v.clone();
        w[0].local.ino = 99; // local facts do not count
        assert_eq!(base, tree_hash(&w, |_| [1; 32]));
    }
}

/// `f` over `items` on `threads` threads (work taken one item at a time); the first
/// error wins and stops the other threads at their next item. Results in no particular order.
pub fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results = Mutex::new(Vec::with_capacity(items.len()));
    let err = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while !failed.load(std::sync::atomic::Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else { return };
                    match f(item) {
                        Ok(r) => results.lock().expect("lock").push(r),
                        Err(e) => {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            err.lock().expect("lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match err.into_inner().expect("lock") {
        Some(e) => Err(e),
        None => Ok(results.into_inner().expect("lock")),
    }
}
