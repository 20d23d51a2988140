//! Directory-to-directory passes over loopback TLS preserve every attribute and apply
//! deletions; checked with the independent tree checker.
mod common;
mod treecheck;

use common::*;

#[test]
fn every_attribute_survives_and_a_second_pass_sends_nothing() {
    let w = Work::new();
    let (src, dst, state) = (w.path("src"), w.path("dst"), w.path("state"));
    build_attr_tree(&src);
    let before = treecheck::snapshot(&src);
    let p = copy_ok(&src, &dst, &["--state", state.to_str().unwrap()]);
    treecheck::assert_same(&src, &dst);
    assert_eq!(p.u("files_sent"), p.u("files_total"));
    assert!(p.u("file_bytes_sent") > 600_000);
    // The sparse file's holes were not sent.
    assert!(p.u("file_bytes_sent") < 2 << 20, "holes were sent: {}", p.report);
    let again = copy_ok(&src, &dst, &["--state", state.to_str().unwrap()]);
    assert_eq!(again.u("files_sent"), 0);
    assert_eq!(again.u("file_bytes_sent"), 0);
    assert_eq!(again.u("files_skipped"), p.u("files_total"));
    assert_eq!(again.report["sender_tree_hash"], p.report["sender_tree_hash"]);
    treecheck::assert_same(&src, &dst);
    assert!(treecheck::compare_snapshots(&before, &treecheck::snapshot(&src)).is_empty(), "source was modified");
}

#[test]
fn deletions_type_changes_and_metadata_only_changes() {
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    build_attr_tree(&src);
    copy_ok(&src, &dst, &[]);
    change_attr_tree(&src);
    let p = copy_ok(&src, &dst, &[]);
    treecheck::assert_same(&src, &dst);
    assert!(p.u("entries_deleted") >= 5, "{}", p.report);
    assert!(p.report["receiver"]["meta_updates"].as_u64().unwrap() >= 1);
    // Deleting everything leaves an empty root with the source's metadata.
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.symlink_metadata().unwrap().is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    copy_ok(&src, &dst, &[]);
    treecheck::assert_same(&src, &dst);
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);
}

#[test]
fn compressible_data_is_compressed_when_asked() {
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    write(&src.join("log"), "the same line again and again\n".repeat(100_000).as_bytes());
    write(&src.join("random"), &bytes(9, 1 << 20));
    let p = copy_ok(&src, &dst, &["--compress", "always"]);
    treecheck::assert_same(&src, &dst);
    assert_eq!(p.report["compression"], true);
    let raw = p.u("file_bytes_sent");
    assert_eq!(raw, 3_000_000 + (1 << 20));
    // The text shrinks, the random megabyte is sent as is.
    assert!(p.u("data_bytes_sent") < (1 << 20) + 200_000, "{}", p.report);
    let never = copy_ok(&src, &w.path("dst2"), &["--compress", "never"]);
    assert_eq!(never.u("data_bytes_sent"), raw);
}

#[test]
fn tree_checker_notices_each_kind_of_difference() {
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    build_attr_tree(&src);
    copy_ok(&src, &dst, &[]);
    treecheck::assert_same(&src, &dst);
    let check = |what: &str| {
        let d = treecheck::compare(&src, &dst);
        assert!(d.iter().any(|x| x.contains(what)), "checker missed a {what} difference: {d:?}");
    };
    chmod(&dst.join("plain.txt"), 0o644);
    check("mode");
    chown(&dst.join("empty"), 1, 1);
    check("owner");
    set_mtime(&dst.join("sym-rel"), 1, 1);
    check("mtime");
    std::fs::write(dst.join("dir/linked"), b"SHARED INODE").unwrap();
    check("content");
    std::fs::remove_file(dst.join("link-2")).unwrap();
    std::fs::write(dst.join("link-2"), b"shared inode").unwrap();
    check("hardlinks");
    std::fs::write(dst.join("sparse.img"), vec![0u8; 64 << 20]).unwrap();
    check("allocation");
    std::fs::remove_file(dst.join("sym-abs")).unwrap();
    check("missing");
}

/// A database-like sparse file written at scattered offsets between passes: the
/// block-wise update sends only the changed blocks and keeps every hole a hole.
#[test]
fn block_updates_of_a_sparse_file_keep_its_holes() {
    use std::os::unix::fs::FileExt;
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("ibdata1")).unwrap();
    f.set_len(16 << 20).unwrap();
    f.write_all_at(&bytes(3, 4096), 1 << 20).unwrap();
    copy_ok(&src, &dst, &[]);
    treecheck::assert_same(&src, &dst);
    // Eight 8-byte writes, each in a different 1 MiB block, each allocating one page.
    for i in 0..8u64 {
        f.write_all_at(&i.to_le_bytes(), i * (2 << 20) + 12_345).unwrap();
    }
    let p = copy_ok(&src, &dst, &[]);
    assert_eq!(p.u("files_delta"), 1, "{}", p.report);
    assert!(p.u("file_bytes_sent") <= 16 * 4096, "only the data pages of the changed blocks: {}", p.report);
    // treecheck compares allocated blocks too: the destination must not have filled the holes.
    treecheck::assert_same(&src, &dst);
}
