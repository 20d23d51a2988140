//! Tree-equality checker independent of the mover: walks both trees with std::fs and
//! compares type, mode, owner, mtime (ns), size, content, symlink target, hardlink
//! structure and sparseness of every path, including the roots.
#![allow(dead_code)]
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Everything compared about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<[u8; 32]>,
    pub target: Option<Vec<u8>>,
    /// Other paths in this tree sharing the inode (sorted), for regular files.
    pub links: Vec<Vec<u8>>,
    pub alloc: u64,
}

fn content_hash(p: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    *h.finalize().as_bytes()
}

/// Every path under `root` (relative bytes; the root is the empty path) with its attributes.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() { root.to_path_buf() } else { root.join(std::ffi::OsStr::from_bytes(&rel)) };
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            'f'
        } else {
            '?'
        };
        if kind == 'd' {
            for de in std::fs::read_dir(&p).unwrap() {
                let name = de.unwrap().file_name();
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                stack.push(child);
            }
        }
        if kind == 'f' {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(
            rel,
            Node {
                kind,
                mode: if kind == 'l' { 0 } else { md.mode() & 0o7777 },
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                size: if kind == 'd' { 0 } else { md.size() },
                content: (kind == 'f').then(|| content_hash(&p)),
                target: (kind == 'l').then(|| std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                links: Vec::new(),
                alloc: md.blocks() * 512,
            },
        );
    }
    for paths in inodes.values() {
        if paths.len() < 2 {
            continue;
        }
        let mut sorted = paths.clone();
        sorted.sort();
        for p in paths {
            out.get_mut(p).unwrap().links = sorted.iter().filter(|q| *q != p).cloned().collect();
        }
    }
    out
}

fn show(p: &[u8]) -> String {
    if p.is_empty() { ".".into() } else { String::from_utf8_lossy(p).into_owned() }
}

/// Differences between `expected` (source) and `actual` (destination); empty when equal.
/// A sparse source file must stay sparse: the copy may allocate at most 1 MiB more.
pub fn compare_snapshots(expected: &BTreeMap<Vec<u8>, Node>, actual: &BTreeMap<Vec<u8>, Node>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, a) in expected {
        let Some(b) = actual.get(p) else {
            diffs.push(format!("{}: missing in destination", show(p)));
            continue;
        };
        let mut d = |what: &str, x: String, y: String| diffs.push(format!("{}: {what} differs: {x} vs {y}", show(p)));
        if a.kind != b.kind {
            d("type", a.kind.to_string(), b.kind.to_string());
            continue;
        }
        if a.mode != b.mode {
            d("mode", format!("{:o}", a.mode), format!("{:o}", b.mode));
        }
        if (a.uid, a.gid) != (b.uid, b.gid) {
            d("owner", format!("{}:{}", a.uid, a.gid), format!("{}:{}", b.uid, b.gid));
        }
        if a.mtime != b.mtime {
            d("mtime", format!("{:?}", a.mtime), format!("{:?}", b.mtime));
        }
        if a.size != b.size {
            d("size", a.size.to_string(), b.size.to_string());
        }
        if a.content != b.content {
            d("content", "…".into(), "…".into());
        }
        if a.target != b.target {
            d("symlink target", format!("{:?}", a.target), format!("{:?}", b.target));
        }
        if a.links != b.links {
            d("hardlinks", format!("{:?}", a.links.iter().map(|l| show(l)).collect::<Vec<_>>()), format!("{:?}", b.links.iter().map(|l| show(l)).collect::<Vec<_>>()));
        }
        if a.kind == 'f' && a.alloc < a.size && b.alloc > a.alloc + (1 << 20) {
            d("allocation (holes filled)", a.alloc.to_string(), b.alloc.to_string());
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("{}: extra in destination", show(p)));
        }
    }
    diffs
}

/// Compare two trees.
pub fn compare(expected: &Path, actual: &Path) -> Vec<String> {
    compare_snapshots(&snapshot(expected), &snapshot(actual))
}

/// Panic with the first differences unless the trees are equal.
pub fn assert_same(expected: &Path, actual: &Path) {
    let diffs = compare(expected, actual);
    assert!(diffs.is_empty(), "trees differ ({} differences):\n{}", diffs.len(), diffs.iter().take(30).cloned().collect::<Vec<_>>().join("\n"));
}
