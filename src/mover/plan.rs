//! Pure decisions: validate the sender's listing and compare it with the destination's
//! to decide what the receiver deletes, creates, updates and needs sent.
use std::collections::HashSet;

use super::DELTA_MIN;
use super::tree::{Entry, Kind};

/// A file the receiver needs from the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Index into the source listing.
    pub src: usize,
    /// Index into the destination listing when a regular file is already there.
    pub dst: Option<usize>,
    /// Update block-wise in place (large file already present, not hardlinked).
    pub delta: bool,
}

/// What the receiver does in one pass. Indices refer to the source listing unless noted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Destination-listing indices to remove (recursively for directories).
    pub deletes: Vec<usize>,
    /// Directories to create.
    pub mkdirs: Vec<usize>,
    /// Symlinks to (re)create.
    pub symlinks: Vec<usize>,
    /// Existing symlinks whose owner or mtime differ.
    pub symlink_meta: Vec<usize>,
    /// Unchanged files whose mode or owner differ.
    pub file_meta: Vec<usize>,
    /// Files whose content must be sent.
    pub transfers: Vec<Transfer>,
    /// Hardlinks to check and, where needed, create after the data phase.
    pub links: Vec<usize>,
    /// All source directories, deepest first (metadata applied after their contents).
    pub dirs: Vec<usize>,
    /// Regular files whose content is already in place.
    pub skipped: usize,
}

#[derive(PartialEq, Eq)]
enum Class {
    Dir,
    Regular,
    Symlink,
}

fn class(k: Kind) -> Class {
    match k {
        Kind::Dir => Class::Dir,
        Kind::File | Kind::Hardlink => Class::Regular,
        Kind::Symlink => Class::Symlink,
    }
}

/// Reject listings that could escape the destination or that are not in canonical order.
pub fn validate(src: &[Entry]) -> Result<(), String> {
    let bad = |i: usize, e: &Entry, why: &str| Err(format!("listing entry {i} ({}): {why}", e.display()));
    let Some(first) = src.first() else { return Err("listing is empty: it must start with the root directory".into()) };
    if !first.path.is_empty() || first.kind != Kind::Dir {
        return bad(0, first, "the first entry must be the root directory (empty path)");
    }
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    let mut files: HashSet<&[u8]> = HashSet::new();
    dirs.insert(b"");
    for (i, e) in src.iter().enumerate().skip(1) {
        if e.path <= src[i - 1].path {
            return bad(i, e, "paths must be unique and sorted by bytes");
        }
        if e.path.contains(&0) || e.target.contains(&0) {
            return bad(i, e, "NUL byte in path or link target");
        }
        if e.path.split(|&b| b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..") {
            return bad(i, e, "path must be relative without empty, '.' or '..' components");
        }
        if e.mtime_ns >= 1_000_000_000 {
            return bad(i, e, "mtime nanoseconds out of range");
        }
        let parent = match e.path.iter().rposition(|&b| b == b'/') {
            Some(p) => &e.path[..p],
            None => &b""[..],
        };
        if !dirs.contains(parent) {
            return bad(i, e, "parent directory is not listed before it");
        }
        match e.kind {
            Kind::Dir => {
                dirs.insert(&e.path);
            }
            Kind::File => {
                files.insert(&e.path);
            }
            Kind::Hardlink => {
                if !files.contains(e.target.as_slice()) {
                    return bad(i, e, "hardlink target is not a file listed before it");
                }
            }
            Kind::Symlink => {}
        }
    }
    Ok(())
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// Compare a validated source listing with the destination's (both sorted by path).
pub fn compute(src: &[Entry], dst: &[Entry]) -> Plan {
    let mut plan = Plan::default();
    let mut deleted_dir: Option<&[u8]> = None;
    fn delete<'a>(plan: &mut Plan, j: usize, deleted_dir: &mut Option<&'a [u8]>, d: &'a Entry) {
        if deleted_dir.is_some_and(|p| is_under(&d.path, p)) {
            return; // removed with its parent
        }
        plan.deletes.push(j);
        if d.kind == Kind::Dir {
            *deleted_dir = Some(&d.path);
        }
    }
    let create = |plan: &mut Plan, i: usize, s: &Entry| match s.kind {
        Kind::Dir => plan.mkdirs.push(i),
        Kind::File => plan.transfers.push(Transfer { src: i, dst: None, delta: false }),
        Kind::Symlink => plan.symlinks.push(i),
        Kind::Hardlink => plan.links.push(i),
    };
    let (mut i, mut j) = (0, 0);
    while i < src.len() || j < dst.len() {
        let ord = match (src.get(i), dst.get(j)) {
            (Some(s), Some(d)) => s.path.cmp(&d.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                create(&mut plan, i, &src[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                delete(&mut plan, j, &mut deleted_dir, &dst[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (s, d) = (&src[i], &dst[j]);
                if class(s.kind) != class(d.kind) || (s.path.is_empty() && d.kind != Kind::Dir) {
                    delete(&mut plan, j, &mut deleted_dir, d);
                    create(&mut plan, i, s);
                } else {
                    match s.kind {
                        Kind::Dir => {}
                        Kind::Symlink => {
                            if s.target != d.target {
                                plan.symlinks.push(i);
                            } else if (s.uid, s.gid, s.mtime_s, s.mtime_ns) != (d.uid, d.gid, d.mtime_s, d.mtime_ns) {
                                plan.symlink_meta.push(i);
                            }
                        }
                        Kind::File => {
                            if s.size == d.size && (s.mtime_s, s.mtime_ns) == (d.mtime_s, d.mtime_ns) {
                                plan.skipped += 1;
                                if (s.mode, s.uid, s.gid) != (d.mode, d.uid, d.gid) {
                                    plan.file_meta.push(i);
                                }
                            } else {
                                let delta = s.size >= DELTA_MIN && d.size >= DELTA_MIN && d.kind == Kind::File && d.local.nlink == 1;
                                plan.transfers.push(Transfer { src: i, dst: Some(j), delta });
                            }
                        }
                        Kind::Hardlink => plan.links.push(i),
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    plan.dirs = src.iter().enumerate().filter(|(_, e)| e.kind == Kind::Dir).map(|(i, _)| i).collect();
    plan.dirs.sort_by_key(|&i| std::cmp::Reverse(src[i].path.iter().filter(|&&b| b == b'/').count() + usize::from(!src[i].path.is_empty())));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mover::tree::Local;

    fn e(path: &str, kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_s: mtime,
            mtime_ns: 0,
            size,
            target: if kind == Kind::Hardlink { b"a".to_vec() } else { vec![] },
            local: Local { nlink: 1, ..Local::default() },
        }
    }

    #[test]
    fn decides_each_kind_of_change() {
        let src = vec![
            e("", Kind::Dir, 0, 1),
            e("a", Kind::File, 10, 5),
            e("big", Kind::File, DELTA_MIN * 2, 7),
            e("d", Kind::Dir, 0, 1),
            e("d/new", Kind::File, 1, 1),
            e("h", Kind::Hardlink, 10, 5),
            e("same", Kind::File, 3, 3),
        ];
        let mut same_owner_changed = e("same", Kind::File, 3, 3);
        same_owner_changed.uid = 9;
        let dst = vec![
            e("", Kind::Dir, 0, 9),
            e("a", Kind::File, 10, 4),
            e("big", Kind::File, DELTA_MIN * 2, 6),
            e("d", Kind::File, 1, 1),
            e("gone", Kind::Dir, 0, 1),
            e("gone/x", Kind::File, 1, 1),
            same_owner_changed,
        ];
        validate(&src).unwrap();
        let p = compute(&src, &dst);
        assert_eq!(p.deletes, vec![3, 4], "file d replaced by a dir; gone/ removed once with its content");
        assert_eq!(p.mkdirs, vec![3]);
        assert_eq!(
            p.transfers,
            vec![
                Transfer { src: 1, dst: Some(1), delta: false },
                Transfer { src: 2, dst: Some(2), delta: true },
                Transfer { src: 4, dst: None, delta: false }
            ]
        );
        assert_eq!(p.links, vec![5]);
        assert_eq!(p.file_meta, vec![6]);
        assert_eq!(p.skipped, 1);
        assert_eq!(p.dirs, vec![3, 0], "deepest first, root last");
    }

    #[test]
    fn rejects_escaping_and_unsorted_listings() {
        let root = e("", Kind::Dir, 0, 1);
        assert!(validate(&[root.clone(), e("../x", Kind::File, 1, 1)]).unwrap_err().contains("'..'"));
        assert!(validate(&[root.clone(), e("b", Kind::File, 1, 1), e("a", Kind::File, 1, 1)]).unwrap_err().contains("sorted"));
        assert!(validate(&[root.clone(), e("x/y", Kind::File, 1, 1)]).unwrap_err().contains("parent"));
        assert!(validate(&[root, e("h", Kind::Hardlink, 1, 1)]).unwrap_err().contains("hardlink target"));
        assert!(validate(&[e("a", Kind::File, 1, 1)]).unwrap_err().contains("root"));
    }
}
