//! Scale: a 200 MiB file with 4 MiB changed in the middle sends only the changed blocks;
//! 100,000 files in one directory.
mod common;
mod treecheck;

use std::os::unix::fs::FileExt;

use common::*;

#[test]
fn small_change_in_large_file_sends_only_changed_blocks() {
    let w = Work::new();
    let (src, dst, state) = (w.path("src"), w.path("dst"), w.path("state"));
    let st = ["--state", state.to_str().unwrap()];
    std::fs::create_dir_all(&src).unwrap();
    let big = src.join("disk.img");
    {
        let f = std::fs::File::create(&big).unwrap();
        for i in 0..25u64 {
            f.write_all_at(&bytes(100 + i, 8 << 20), i * (8 << 20)).unwrap();
        }
    }
    let first = copy_ok(&src, &dst, &st);
    assert_eq!(first.u("file_bytes_sent"), 200 << 20);

    // 4 MiB changed in the middle (not block-aligned: touches 5 blocks at most).
    std::fs::OpenOptions::new().write(true).open(&big).unwrap().write_all_at(&bytes(7, 4 << 20), (100 << 20) + 12345).unwrap();
    set_mtime(&big, 1_700_000_000, 1);
    let p = copy_ok(&src, &dst, &st);
    treecheck::assert_same(&src, &dst);
    assert_eq!(p.u("files_delta"), 1);
    assert!(p.u("file_bytes_sent") <= 5 << 20, "sent {} file bytes", p.u("file_bytes_sent"));
    assert!(p.u("file_bytes_sent") >= 4 << 20);
    assert!(p.u("wire_bytes_sent") < (5 << 20) + (256 << 10), "sent {} bytes on the wire", p.u("wire_bytes_sent"));

    // Append: only the tail (and the previously partial last block) travels.
    let f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    f.write_all_at(&bytes(8, 3 << 19), 200 << 20).unwrap();
    let p = copy_ok(&src, &dst, &st);
    treecheck::assert_same(&src, &dst);
    assert!(p.u("file_bytes_sent") <= 2 << 20, "append sent {}", p.u("file_bytes_sent"));

    // Same pass without any cache on the receiver side: block hashes are recomputed.
    std::fs::OpenOptions::new().write(true).open(&big).unwrap().write_all_at(b"tiny", 3).unwrap();
    let p = copy_ok(&src, &dst, &[]);
    treecheck::assert_same(&src, &dst);
    assert_eq!(p.u("file_bytes_sent"), 1 << 20);
}

#[test]
fn hundred_thousand_files_in_one_directory() {
    let w = Work::new();
    let (src, dst, state) = (w.path("src"), w.path("dst"), w.path("state"));
    let st = ["--state", state.to_str().unwrap()];
    let dir = src.join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..100_000u32 {
        std::fs::write(dir.join(format!("f{i:06}")), i.to_le_bytes()).unwrap();
    }
    let p = copy_ok(&src, &dst, &st);
    assert_eq!(p.u("files_sent"), 100_000);
    treecheck::assert_same(&src, &dst);
    let again = copy_ok(&src, &dst, &st);
    assert_eq!(again.u("files_sent"), 0);
    assert_eq!(again.u("files_skipped"), 100_000);
    // Deleting half of them is propagated (the pass itself proves equality by tree hash).
    for i in (0..100_000u32).step_by(2) {
        std::fs::remove_file(dir.join(format!("f{i:06}"))).unwrap();
    }
    let p = copy_ok(&src, &dst, &st);
    assert_eq!(p.u("entries_deleted"), 50_000);
    assert_eq!(std::fs::read_dir(dst.join("many")).unwrap().count(), 50_000);
    assert!(!dst.join("many/f000000").exists() && dst.join("many/f000001").exists());
}
