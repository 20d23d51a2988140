//! Faults: receiver killed mid-pass, a flipped byte on the wire, a full destination,
//! files changing during a pass, a sender from another migration's CA.
mod common;
mod treecheck;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn make_files(src: &std::path::Path, n: u64, size: usize) {
    for i in 0..n {
        write(&src.join(format!("f{i:03}.bin")), &bytes(1000 + i, size));
    }
}

/// Files in `dst` whose size and mtime match the source: finished by the mover.
fn complete_files(src: &std::path::Path, dst: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dst) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            let (Ok(d), Ok(s)) = (e.metadata(), std::fs::metadata(src.join(e.file_name()))) else { return false };
            d.is_file() && d.size() == s.size() && (d.mtime(), d.mtime_nsec()) == (s.mtime(), s.mtime_nsec())
        })
        .count()
}

#[test]
fn receiver_killed_mid_transfer_resumes_without_resending_completed_files() {
    let w = Work::new();
    let (src, dst, certs_dir) = (w.path("src"), w.path("dst"), w.path("certs"));
    make_files(&src, 100, 512 << 10);
    certs(&certs_dir);
    let (mut recv, addr) = start_receiver(&dst, &certs_dir, w.dir.path(), &[]);
    // 10 MB/s: the 52 MB pass takes ~5 s, so the kill lands mid-transfer.
    let sender = spawn_sender(&addr, &src, &certs_dir, &["--bwlimit", "10000000", "--streams", "2"]);
    let t = Instant::now();
    while complete_files(&src, &dst) < 15 {
        assert!(t.elapsed() < Duration::from_secs(60), "transfer made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    recv.kill().unwrap();
    recv.wait().unwrap();
    let done_before = complete_files(&src, &dst);
    assert!(done_before < 100, "the kill came too late to test resumption");
    let s = finish(sender);
    assert_ne!(s.code, 0, "sender must fail when the receiver dies");
    assert!(s.stderr.contains("error:"), "no clear error: {}", s.stderr);

    let (recv, addr) = start_receiver(&dst, &certs_dir, w.dir.path(), &[]);
    let s = finish(spawn_sender(&addr, &src, &certs_dir, &[]));
    assert_eq!(s.code, 0, "{}", s.stderr);
    let r = finish(recv);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s.u("files_skipped") >= done_before as u64, "completed files were re-sent: {}", s.report);
    assert_eq!(s.u("files_sent") + s.u("files_skipped"), 100);
    assert!(s.u("file_bytes_sent") <= (100 - done_before as u64) * (512 << 10));
    treecheck::assert_same(&src, &dst);
}

/// Forward TCP to `target`, flipping one bit of the client→server byte at `at` (once).
fn flipping_proxy(target: String, at: u64) -> (String, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let flipped = Arc::new(AtomicBool::new(false));
    let f = flipped.clone();
    std::thread::spawn(move || {
        for c in l.incoming().take(16) {
            let Ok(mut c) = c else { return };
            let Ok(mut s) = TcpStream::connect(&target) else { return };
            let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
            let f = f.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut pos = 0u64;
                loop {
                    let n = match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if pos <= at && at < pos + n as u64 && !f.swap(true, Ordering::SeqCst) {
                        buf[(at - pos) as usize] ^= 0x10;
                    }
                    pos += n as u64;
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, flipped)
}

#[test]
fn flipped_byte_on_the_wire_fails_loudly() {
    let w = Work::new();
    let (src, dst, certs_dir) = (w.path("src"), w.path("dst"), w.path("certs"));
    write(&src.join("payload.bin"), &bytes(5, 4 << 20));
    let before = treecheck::snapshot(&src);
    certs(&certs_dir);
    let (recv, addr) = start_receiver(&dst, &certs_dir, w.dir.path(), &[]);
    let (proxy, flipped) = flipping_proxy(addr, 300_000);
    let s = finish(spawn_sender(&proxy, &src, &certs_dir, &["--streams", "1"]));
    let r = finish(recv);
    assert!(flipped.load(Ordering::SeqCst), "the proxy never flipped a byte");
    assert_ne!(s.code, 0, "sender accepted a corrupted stream");
    assert_ne!(r.code, 0, "receiver accepted a corrupted stream");
    assert!(r.stderr.contains("TLS verification"), "receiver error is not clear: {}", r.stderr);
    assert!(s.stderr.contains("TLS") || s.stderr.contains("corrupt"), "sender error is not clear: {}", s.stderr);
    assert!(!dst.join("payload.bin").exists(), "a partial file was left behind");
    assert!(treecheck::compare_snapshots(&before, &treecheck::snapshot(&src)).is_empty());
}

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_destination_is_a_clear_error_and_leaves_the_source_untouched() {
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    make_files(&src, 8, 1 << 20);
    std::fs::create_dir_all(&dst).unwrap();
    let st = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&dst).status().unwrap();
    assert!(st.success(), "mounting a small tmpfs needs root");
    let _m = Mount(dst.clone());
    let before = treecheck::snapshot(&src);
    let p = copy(&src, &dst, &["--streams", "1"]);
    assert_ne!(p.code, 0);
    assert!(p.stderr.contains("destination volume full"), "unclear error: {}", p.stderr);
    assert!(p.stderr.contains("No space left on device"), "unclear error: {}", p.stderr);
    assert!(treecheck::compare_snapshots(&before, &treecheck::snapshot(&src)).is_empty(), "source changed");
    // What is on the destination is complete files only (the interrupted one was removed).
    for e in std::fs::read_dir(&dst).unwrap() {
        let e = e.unwrap();
        assert_eq!(std::fs::read(e.path()).unwrap(), std::fs::read(src.join(e.file_name())).unwrap(), "partial file {:?}", e.file_name());
    }
}

#[test]
fn file_changing_during_a_pass_is_consistent_after_the_final_pass() {
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    make_files(&src, 30, 1 << 20);
    write(&src.join("hot.log"), b"start\n");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, src) = (stop.clone(), src.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut f = std::fs::OpenOptions::new().append(true).open(src.join("hot.log")).unwrap();
                f.write_all(format!("line {i}\n").as_bytes()).unwrap();
                std::fs::write(src.join(format!("f{:03}.bin", i % 30)), bytes(i, 1 << 20)).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let first = copy(&src, &dst, &["--bwlimit", "20000000"]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(first.code == 0 || first.code == 3, "unexpected failure: {}", first.stderr);
    if first.code == 3 {
        assert!(first.stderr.contains("changed during the pass"), "{}", first.stderr);
        assert!(first.u("unstable_files") > 0);
    }
    copy_ok(&src, &dst, &[]);
    treecheck::assert_same(&src, &dst);
}

#[test]
fn sender_from_another_ca_is_refused() {
    let w = Work::new();
    let (src, dst) = (w.path("src"), w.path("dst"));
    write(&src.join("x"), b"x");
    certs(&w.path("ours"));
    certs(&w.path("theirs"));
    let (mut recv, addr) = start_receiver(&dst, &w.path("ours"), w.dir.path(), &[]);
    let s = finish(spawn_sender(&addr, &src, &w.path("theirs"), &[]));
    recv.kill().unwrap();
    recv.wait().unwrap();
    assert_ne!(s.code, 0);
    assert!(s.stderr.contains("TLS handshake"), "{}", s.stderr);
    assert!(!dst.join("x").exists());
    treecheck::assert_same(&src, &src);
}
