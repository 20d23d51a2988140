//! Receiving end: accept one pass (or many with `serve`), apply the plan, write file
//! data, and prove the result with a tree hash over a fresh walk of the destination.
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::hash::{BlockHasher, Digest, block_count, block_hash, block_len, file_hash, zero_hash};
use super::index::{Cached, HashIndex};
use super::plan;
use super::stream::SyncTls;
use super::stats::ReceiverReport;
use super::tree::{self, Entry, Kind};
use super::wire::{self, Counted, Counters, Dec, Enc, tag};
use super::{BLOCK_SIZE, DELTA_MIN, MoverError, PROTOCOL_VERSION, Result};

/// Options for the receiving end.
pub struct ReceiveOptions {
    /// Server TLS configuration (mutual TLS).
    pub tls: Arc<ServerConfig>,
    /// Destination directory (created if missing).
    pub dst: PathBuf,
    /// Hash cache directory (outside `dst`).
    pub state: Option<PathBuf>,
    /// Keep accepting passes instead of exiting after the first.
    pub serve: bool,
}

type Tls = TlsStream<Counted<TcpStream>>;
/// Files written by one data connection, for the hash cache.
type Written = Arc<Mutex<Vec<(Vec<u8>, Cached)>>>;
/// The running pass: session id, where its data connections go, its task.
type Current = Option<([u8; 16], mpsc::Sender<Tls>, tokio::task::JoinHandle<Result<ReceiverReport>>)>;

struct Hello {
    role: u8,
    session: [u8; 16],
}

async fn handshake(tcp: TcpStream, acceptor: TlsAcceptor, counters: Counters) -> Result<(Hello, Tls)> {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = tcp.set_nodelay(true);
    let mut tls = tokio::time::timeout(Duration::from_secs(30), acceptor.accept(Counted::new(tcp, counters)))
        .await
        .map_err(|_| MoverError::Protocol(format!("TLS handshake with {peer} timed out")))?
        .map_err(|e| MoverError::net(format!("TLS handshake with {peer}"), e))?;
    let f = wire::read_frame(&mut tls)
        .await
        .map_err(|e| MoverError::net(format!("hello from {peer}"), e))?
        .ok_or_else(|| MoverError::Protocol(format!("{peer} closed before hello")))?;
    let mut d = Dec::new(&f.body, "hello");
    if f.tag != tag::HELLO {
        return Err(MoverError::Protocol(format!("{peer}: expected hello, got message {}", f.tag)));
    }
    let version = d.u32()?;
    if version != PROTOCOL_VERSION {
        return Err(MoverError::Protocol(format!("sender speaks protocol {version}, this receiver speaks {PROTOCOL_VERSION}: use the same ferry version on both ends")));
    }
    let role = d.u8()?;
    let session = d.digest_prefix16()?;
    let bs = d.u64()?;
    if bs != BLOCK_SIZE {
        return Err(MoverError::Protocol(format!("sender block size {bs} differs from {BLOCK_SIZE}")));
    }
    Ok((Hello { role, session }, tls))
}

/// Bind the listening socket (separate so callers can learn the port before serving).
pub async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| MoverError::net(format!("listen on {addr}"), e))
}

/// Serve passes on `listener`: one (default) or until killed (`serve`).
pub async fn serve(listener: TcpListener, opts: ReceiveOptions) -> Result<ReceiverReport> {
    super::stream::keep_freed_memory();
    if let Some(state) = &opts.state {
        super::send::refuse_state_inside(state, &opts.dst)?;
    }
    std::fs::create_dir_all(&opts.dst).map_err(|e| MoverError::io("create destination", &opts.dst, e))?;
    let opts = Arc::new(opts);
    let acceptor = TlsAcceptor::from(opts.tls.clone());
    let (hello_tx, mut hello_rx) = mpsc::channel::<Result<(Hello, Tls)>>(16);
    let mut current: Current = None;
    let mut counters = Counters::default();
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (tcp, _) = acc.map_err(|e| MoverError::net("accept", e))?;
                let (acceptor, tx, c) = (acceptor.clone(), hello_tx.clone(), counters.clone());
                tokio::spawn(async move {
                    let _ = tx.send(handshake(tcp, acceptor, c).await).await;
                });
            }
            h = hello_rx.recv() => {
                let (hello, mut tls) = match h.expect("sender kept") {
                    Ok(v) => v,
                    Err(e) => {
                        // Strangers (wrong CA, wrong version) are refused loudly but do not end the service.
                        tracing::warn!(error = %e, "refused connection");
                        continue;
                    }
                };
                match hello.role {
                    wire::ROLE_CONTROL if current.is_none() => {
                        counters = Counters::default();
                        let (dtx, drx) = mpsc::channel(64);
                        let task = tokio::spawn(session(tls, drx, opts.clone(), counters.clone()));
                        current = Some((hello.session, dtx, task));
                    }
                    wire::ROLE_DATA if current.as_ref().is_some_and(|c| c.0 == hello.session) => {
                        let _ = current.as_ref().unwrap().1.send(tls).await;
                    }
                    _ => {
                        let _ = wire::write_frame(&mut tls, tag::ERROR, b"receiver is busy with another pass or the session is unknown").await;
                        let _ = tls.shutdown().await;
                    }
                }
            }
            r = async { (&mut current.as_mut().unwrap().2).await }, if current.is_some() => {
                current = None;
                let r = r.unwrap_or_else(|e| Err(MoverError::Protocol(format!("session task failed: {e}"))));
                if !opts.serve {
                    return r;
                }
                match r {
                    Ok(rep) => tracing::info!(files_written = rep.files_written, tree_hash = %rep.tree_hash, "pass complete"),
                    Err(e) => tracing::error!(error = %e, "pass failed"),
                }
            }
        }
    }
}

trait Digest16 {
    fn digest_prefix16(&mut self) -> Result<[u8; 16]>;
}
impl Digest16 for Dec<'_> {
    fn digest_prefix16(&mut self) -> Result<[u8; 16]> {
        let mut s = [0u8; 16];
        for b in s.iter_mut() {
            *b = self.u8()?;
        }
        Ok(s)
    }
}

/// What a writer needs to know about a file it is asked for.
pub(crate) struct NeedInfo {
    /// Receiver block hashes when updating in place.
    pub(crate) delta: Option<Vec<Digest>>,
    /// A regular file is already at the destination path (replace via temp + rename).
    pub(crate) exists: bool,
}

#[derive(Default)]
struct WriteTotals {
    files: AtomicU64,
    delta: AtomicU64,
    bytes: AtomicU64,
}

async fn session(control: Tls, mut data_rx: mpsc::Receiver<Tls>, opts: Arc<ReceiveOptions>, counters: Counters) -> Result<ReceiverReport> {
    let (rd, wr) = tokio::io::split(control);
    let wr = Arc::new(tokio::sync::Mutex::new(BufWriter::new(wr)));
    let r = session_inner(rd, wr.clone(), &mut data_rx, &opts, &counters).await;
    if let Err(e) = &r {
        let mut w = wr.lock().await;
        let _ = wire::write_frame(&mut *w, tag::ERROR, e.to_string().as_bytes()).await;
        let _ = w.flush().await;
    }
    r
}

type CtlWriter = Arc<tokio::sync::Mutex<BufWriter<tokio::io::WriteHalf<Tls>>>>;

async fn session_inner(
    mut rd: tokio::io::ReadHalf<Tls>,
    wr: CtlWriter,
    data_rx: &mut mpsc::Receiver<Tls>,
    opts: &ReceiveOptions,
    counters: &Counters,
) -> Result<ReceiverReport> {
    let started = Instant::now();
    let net = |e| MoverError::net("control connection from sender", e);
    let dst_root = opts.dst.clone();
    let walk = tokio::task::spawn_blocking(move || tree::walk(&dst_root, 4, &[]));
    let (state, dst_root) = (opts.state.clone(), opts.dst.clone());
    let index = tokio::task::spawn_blocking(move || match state {
        Some(s) => HashIndex::load(&s, "receiver.idx", &dst_root),
        None => Ok(HashIndex::memory()),
    });
    let mut src: Vec<Entry> = Vec::new();
    loop {
        let f = wire::read_frame(&mut rd).await.map_err(net)?.ok_or_else(|| MoverError::Protocol("sender closed during the listing".into()))?;
        match f.tag {
            tag::ENTRIES => {
                let mut d = Dec::new(&f.body, "entries");
                while !d.is_empty() {
                    src.push(wire::get_entry(&mut d)?);
                }
            }
            tag::LISTING_END => {
                let n = Dec::new(&f.body, "listing end").u64()?;
                if n != src.len() as u64 {
                    return Err(MoverError::Protocol(format!("listing announced {n} entries but carried {}", src.len())));
                }
                break;
            }
            tag::ERROR => return Err(MoverError::Peer { side: "sender", message: wire::error_text(&f.body) }),
            t => return Err(MoverError::Protocol(format!("unexpected message {t} during the listing"))),
        }
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, entries = src.len(), "listing received");
    plan::validate(&src).map_err(MoverError::Protocol)?;
    let dst = walk.await.expect("walk task")?;
    let mut index = index.await.expect("index task")?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "destination walked, cache loaded");
    let plan = plan::compute(&src, &dst);
    let src = Arc::new(src);
    let root = opts.dst.clone();

    // Structure first: deletions, directories, symlinks, metadata-only changes; then
    // block hashes for in-place updates.
    let (src2, root2) = (src.clone(), root.clone());
    let index_map = std::mem::take(&mut index.map);
    let (report0, need, index_map, dst) = tokio::task::spawn_blocking(move || apply_structure(&src2, dst, &plan, &root2, index_map))
        .await
        .expect("structure task")?;
    index.map = index_map;
    let changed = !need.is_empty() || report0.entries_deleted + report0.dirs_created + report0.symlinks_created + report0.meta_updates > 0;
    index.dirty |= need.values().any(|n| n.delta.is_some());
    {
        let mut w = wr.lock().await;
        let mut batch = Enc::new();
        let mut keys: Vec<&usize> = need.keys().collect();
        keys.sort();
        for &i in keys {
            let n = &need[&i];
            batch.u32(i as u32).u8(n.delta.is_some() as u8);
            let blocks = n.delta.as_deref().unwrap_or(&[]);
            batch.u32(blocks.len() as u32);
            for b in blocks {
                batch.raw(b);
            }
            if batch.0.len() > 512 * 1024 {
                wire::write_frame(&mut *w, tag::NEED, &batch.0).await.map_err(net)?;
                batch.0.clear();
            }
        }
        if !batch.0.is_empty() {
            wire::write_frame(&mut *w, tag::NEED, &batch.0).await.map_err(net)?;
        }
        wire::write_frame(&mut *w, tag::NEED_END, &[]).await.map_err(net)?;
        w.flush().await.map_err(net)?;
    }

    tracing::debug!(ms = started.elapsed().as_millis() as u64, files = need.len(), "structure applied, need list sent");
    // Data phase: until the sender says FINISH.
    let need = Arc::new(need);
    let totals = Arc::new(WriteTotals::default());
    let written: Written = Arc::new(Mutex::new(Vec::new()));
    let (err_tx, mut err_rx) = mpsc::unbounded_channel::<MoverError>();
    let mut handlers = Vec::new();
    loop {
        tokio::select! {
            f = wire::read_frame(&mut rd) => {
                match f.map_err(net)? {
                    Some(f) if f.tag == tag::FINISH => break,
                    Some(f) if f.tag == tag::ERROR => return Err(MoverError::Peer { side: "sender", message: wire::error_text(&f.body) }),
                    Some(f) => return Err(MoverError::Protocol(format!("unexpected message {} during the data phase", f.tag))),
                    None => return Err(MoverError::Protocol("sender closed the control connection during the data phase".into())),
                }
            }
            Some(conn) = data_rx.recv() => {
                let (src, need, root, totals, written, err_tx) = (src.clone(), need.clone(), root.clone(), totals.clone(), written.clone(), err_tx.clone());
                let (io, tls) = conn.into_inner();
                let peer = io.get_ref().peer_addr().map(|a| a.to_string()).unwrap_or_default();
                let tls = wire::into_sync(io, tls).map_err(|e| MoverError::net(format!("data stream from {peer}"), e))?;
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                // One plain thread per data connection (see `stream`).
                std::thread::spawn(move || {
                    if let Err(e) = data_stream(tls, &peer, &src, &need, &root, &totals, &written) {
                        let _ = err_tx.send(e);
                    }
                    let _ = done_tx.send(());
                });
                handlers.push(done_rx);
            }
            Some(e) = err_rx.recv() => return Err(e),
        }
    }
    for h in handlers {
        let _ = h.await;
    }
    if let Ok(e) = err_rx.try_recv() {
        return Err(e);
    }
    for (p, c) in std::mem::take(&mut *written.lock().unwrap()) {
        index.map.insert(p, c);
        index.dirty = true;
    }

    tracing::debug!(ms = started.elapsed().as_millis() as u64, "data phase done");
    // Hardlinks, directory metadata, then the proof.
    let (src2, root2) = (src.clone(), root.clone());
    let (links, final_entries, hash, mut index) =
        tokio::task::spawn_blocking(move || finish_unsaved(&src2, &root2, index, dst, changed)).await.expect("finish task")?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "links, directory metadata, re-walk and tree hash done");
    let mut report = report0;
    report.hardlinks_created = links;
    report.files_written = totals.files.load(Ordering::Relaxed);
    report.files_delta = totals.delta.load(Ordering::Relaxed);
    report.file_bytes_written = totals.bytes.load(Ordering::Relaxed);
    report.entries = final_entries.len() as u64;
    report.tree_hash = hex::encode(hash);
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.wire_bytes_received = counters.received();
    report.wire_bytes_sent = counters.sent();
    {
        let body = serde_json::to_vec(&report).expect("report serializes");
        let mut w = wr.lock().await;
        wire::write_frame(&mut *w, tag::DONE, &body).await.map_err(net)?;
        w.flush().await.map_err(net)?;
    }
    // The hash cache is saved while the sender compares hashes.
    let save = tokio::task::spawn_blocking(move || index.save(&final_entries));
    let f = wire::read_frame(&mut rd).await.map_err(net)?.ok_or_else(|| MoverError::Protocol("sender closed before its verdict".into()));
    save.await.expect("save task")?;
    let f = f?;
    if f.tag != tag::VERDICT {
        return Err(MoverError::Protocol(format!("expected the sender's verdict, got message {}", f.tag)));
    }
    let mut d = Dec::new(&f.body, "verdict");
    let sender_hash = hex::encode(d.digest()?);
    let code = d.u8()?;
    report.wire_bytes_received = counters.received();
    report.wire_bytes_sent = counters.sent();
    if code != 0 || sender_hash != report.tree_hash {
        let why = if code == 3 { " (source files changed during the pass: run another pass)" } else { "" };
        return Err(MoverError::Peer {
            side: "sender",
            message: format!("tree hash mismatch: sender {sender_hash}, receiver {}{why}", report.tree_hash),
        });
    }
    Ok(report)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths never contain NUL (validated)")
}

/// Set mtime (and atime to the same) without following symlinks.
fn set_mtime_nofollow(p: &Path, s: i64, ns: u32) -> std::io::Result<()> {
    let ts = libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as libc::c_long };
    let times = [ts, ts];
    let c = cpath(p);
    // SAFETY: valid C string and timespec array.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

pub(crate) fn set_mtime_fd(f: &File, s: i64, ns: u32) -> std::io::Result<()> {
    let ts = libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as libc::c_long };
    let times = [ts, ts];
    // SAFETY: fd is open; timespec array is valid.
    let r = unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
    if r != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn chmod(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn remove_any(p: &Path, is_dir: bool) -> std::io::Result<()> {
    let r = if is_dir { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

pub(crate) type Structure = (ReceiverReport, HashMap<usize, NeedInfo>, HashMap<Vec<u8>, Cached>, Vec<Entry>);

pub(crate) fn apply_structure(src: &[Entry], dst: Vec<Entry>, plan: &plan::Plan, root: &Path, mut cache: HashMap<Vec<u8>, Cached>) -> Result<Structure> {
    let mut rep = ReceiverReport { files_skipped: plan.skipped as u64, ..Default::default() };
    for &j in &plan.deletes {
        let p = dst[j].abs(root);
        remove_any(&p, dst[j].kind == Kind::Dir).map_err(|e| MoverError::io("delete", &p, e))?;
        rep.entries_deleted += 1;
    }
    for &i in &plan.mkdirs {
        let p = src[i].abs(root);
        // Owner-only until the final metadata pass sets the real mode.
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
            r => r.map_err(|e| MoverError::io("create directory", &p, e))?,
        }
        rep.dirs_created += 1;
    }
    for &i in &plan.symlinks {
        let e = &src[i];
        let p = e.abs(root);
        remove_any(&p, false).map_err(|x| MoverError::io("replace symlink", &p, x))?;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&e.target), &p).map_err(|x| MoverError::io("create symlink", &p, x))?;
        std::os::unix::fs::lchown(&p, Some(e.uid), Some(e.gid)).map_err(|x| MoverError::io("chown symlink", &p, x))?;
        set_mtime_nofollow(&p, e.mtime_s, e.mtime_ns).map_err(|x| MoverError::io("set symlink mtime", &p, x))?;
        rep.symlinks_created += 1;
    }
    for &i in &plan.symlink_meta {
        let e = &src[i];
        let p = e.abs(root);
        std::os::unix::fs::lchown(&p, Some(e.uid), Some(e.gid)).map_err(|x| MoverError::io("chown symlink", &p, x))?;
        set_mtime_nofollow(&p, e.mtime_s, e.mtime_ns).map_err(|x| MoverError::io("set symlink mtime", &p, x))?;
        rep.meta_updates += 1;
    }
    for &i in &plan.file_meta {
        let e = &src[i];
        let p = e.abs(root);
        std::os::unix::fs::lchown(&p, Some(e.uid), Some(e.gid)).map_err(|x| MoverError::io("chown", &p, x))?;
        // After chown, which clears setuid/setgid bits.
        chmod(&p, e.mode).map_err(|x| MoverError::io("chmod", &p, x))?;
        set_mtime_nofollow(&p, e.mtime_s, e.mtime_ns).map_err(|x| MoverError::io("set mtime", &p, x))?;
        rep.meta_updates += 1;
    }
    let mut need = HashMap::with_capacity(plan.transfers.len());
    for t in &plan.transfers {
        let delta = if t.delta {
            let d = &dst[t.dst.expect("delta has a destination")];
            let blocks = match cache.get(&d.path).filter(|c| c.matches(d) && c.blocks.len() as u64 == block_count(d.size)) {
                Some(c) => c.blocks.clone(),
                None => {
                    let p = d.abs(root);
                    let f = tree::open_read(&p).map_err(|x| MoverError::io("open", &p, x))?;
                    let (blocks, content) = tree::hash_file(&f, &p, d.size, d.local.blocks)?;
                    cache.insert(
                        d.path.clone(),
                        Cached {
                            size: d.size,
                            mtime: (d.mtime_s, d.mtime_ns),
                            ctime: (d.local.ctime_s, d.local.ctime_ns),
                            ino: d.local.ino,
                            content,
                            blocks: blocks.clone(),
                        },
                    );
                    blocks
                }
            };
            Some(blocks)
        } else {
            None
        };
        need.insert(t.src, NeedInfo { delta, exists: t.dst.is_some() });
    }
    Ok((rep, need, cache, dst))
}

/// One data connection on its own thread: decrypt, parse frames, write files. File data
/// goes from rustls' decrypted records straight to the file and the hasher.
fn data_stream(
    mut tls: SyncTls,
    peer: &str,
    src: &[Entry],
    need: &HashMap<usize, NeedInfo>,
    root: &Path,
    totals: &WriteTotals,
    written: &Mutex<Vec<(Vec<u8>, Cached)>>,
) -> Result<()> {
    let net = |e: std::io::Error| {
        let ctx = if e.kind() == std::io::ErrorKind::InvalidData {
            format!("data stream from {peer} failed TLS verification (corrupted or tampered in transit)")
        } else {
            format!("data stream from {peer}")
        };
        MoverError::net(ctx, e)
    };
    let mut w = Writer { src, need, root, totals, open: None, dec: None, out: Vec::new(), dirs: tree::DirCache::new(root), stage: Vec::new() };
    let r = receive_frames(&mut tls, &mut w, &net);
    if r.is_err() {
        w.abort();
    }
    written.lock().unwrap().append(&mut w.out);
    r?;
    let net = |e| MoverError::net(format!("data stream from {peer}"), e);
    tls.write_frame(tag::DATA_DONE, &[]).map_err(net)?;
    let _ = tls.close();
    Ok(())
}

fn receive_frames(tls: &mut SyncTls, w: &mut Writer<'_>, net: &dyn Fn(std::io::Error) -> MoverError) -> Result<()> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed in the middle of a message");
    loop {
        let Some((t, len)) = tls.read_header().map_err(net)? else {
            return Err(MoverError::Protocol("data connection ended without DATA_END".into()));
        };
        if t == tag::DATA_END {
            return Ok(());
        }
        let mut body = Vec::new();
        if t == tag::CHUNK && len >= 13 && w.streaming() {
            let mut h = [0u8; 13];
            if !tls.read_exact(&mut h).map_err(net)? {
                return Err(net(eof()));
            }
            let off = u64::from_le_bytes(h[..8].try_into().unwrap());
            let raw_len = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
            if h[12] == 0 && raw_len == len - 13 {
                w.begin_chunk(off, raw_len)?;
                // Gathered from the records into one buffer: one large write (large page
                // cache folios cost less per byte than 16 KiB writes) and one hasher update.
                let mut stage = std::mem::take(&mut w.stage);
                stage.clear();
                while stage.len() < raw_len {
                    let data = tls.fill().map_err(net)?;
                    if data.is_empty() {
                        return Err(net(eof()));
                    }
                    let n = data.len().min(raw_len - stage.len());
                    stage.extend_from_slice(&data[..n]);
                    tls.consume(n);
                }
                let r = w.write_piece(off, &stage);
                w.stage = stage;
                r?;
                continue;
            }
            body.extend_from_slice(&h);
        }
        let have = body.len();
        body.resize(len, 0);
        if len > have && !tls.read_exact(&mut body[have..]).map_err(net)? {
            return Err(net(eof()));
        }
        w.frame(wire::Frame { tag: t, body })?;
    }
}

struct OpenFile {
    idx: usize,
    file: File,
    path: PathBuf,
    temp: Option<PathBuf>,
    created: bool,
    size: u64,
    mtime: (i64, u32),
    delta: Option<Vec<Digest>>,
    hasher: BlockHasher,
    end: u64,
    /// Write-behind: data below this offset has been handed to the disk.
    flushed: u64,
}

/// Large files start writeback every this many bytes, so the disk works while data
/// still arrives instead of after the pass (and dirty memory stays bounded).
const WRITE_BEHIND: u64 = 8 << 20;

struct Writer<'a> {
    src: &'a [Entry],
    need: &'a HashMap<usize, NeedInfo>,
    root: &'a Path,
    totals: &'a WriteTotals,
    open: Option<OpenFile>,
    dec: Option<zstd::bulk::Decompressor<'static>>,
    out: Vec<(Vec<u8>, Cached)>,
    dirs: tree::DirCache,
    stage: Vec<u8>,
}

impl Writer<'_> {
    /// Whether CHUNK data for the open file can be written as it arrives (whole-file
    /// transfers; block-wise updates need each block whole).
    fn streaming(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.delta.is_none())
    }

    /// Check an uncompressed chunk of `len` bytes at `off` before its data arrives.
    fn begin_chunk(&mut self, off: u64, len: usize) -> Result<()> {
        let o = self.open.as_mut().expect("streaming needs an open file");
        if off.checked_add(len as u64).is_none_or(|end| end > o.size) {
            return Err(MoverError::Protocol(format!("chunk at {off} (+{len}) does not fit a {}-byte file", o.size)));
        }
        Ok(())
    }

    /// Write and hash a streamed chunk.
    fn write_piece(&mut self, off: u64, data: &[u8]) -> Result<()> {
        let o = self.open.as_mut().expect("streaming needs an open file");
        if let Err(x) = o.file.write_all_at(data, off) {
            return Err(MoverError::io("write", o.temp.as_ref().unwrap_or(&o.path), x));
        }
        o.end = o.end.max(off + data.len() as u64);
        o.hasher.feed(off, data).map_err(MoverError::Protocol)?;
        self.totals.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if o.end - o.flushed >= WRITE_BEHIND || (o.end == o.size && o.size >= WRITE_BEHIND) {
            // SAFETY: open fd, range within the file; only starts asynchronous writeback.
            unsafe { libc::sync_file_range(o.file.as_raw_fd(), o.flushed as i64, (o.end - o.flushed) as i64, libc::SYNC_FILE_RANGE_WRITE) };
            o.flushed = o.end;
        }
        Ok(())
    }

    /// Remove what an interrupted file left behind (temp files, half-written new files).
    fn abort(&mut self) {
        if let Some(o) = self.open.take() {
            if let Some(t) = &o.temp {
                let _ = std::fs::remove_file(t);
            } else if o.created {
                let _ = std::fs::remove_file(&o.path);
            }
        }
    }

    fn frame(&mut self, f: wire::Frame) -> Result<()> {
        let mut d = Dec::new(&f.body, "data");
        match f.tag {
            tag::FILE_BEGIN => {
                if self.open.is_some() {
                    return Err(MoverError::Protocol("file started before the previous one ended".into()));
                }
                let idx = d.u32()? as usize;
                let size = d.u64()?;
                let mtime = (d.i64()?, d.u32()?);
                let delta_flag = d.u8()? == 1;
                let n = self.need.get(&idx).ok_or_else(|| MoverError::Protocol(format!("sender sent entry {idx}, which was not requested")))?;
                if delta_flag != n.delta.is_some() {
                    return Err(MoverError::Protocol(format!("entry {idx}: delta mode disagrees with the request")));
                }
                let e = &self.src[idx];
                let path = e.abs(self.root);
                // New files start with their final permission bits minus group/other write and
                // setuid/setgid/sticky (set after the data, with the owner), so most need no chmod.
                let (file, temp) = if n.delta.is_none() && !n.exists {
                    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW;
                    (self.dirs.open(&e.path, flags, e.mode & 0o755).map_err(|x| MoverError::io("create", &path, x))?, None)
                } else {
                    open_target_mode(&path, self.root, n.delta.is_some(), n.exists, idx, e.mode & 0o755)?
                };
                let created = n.delta.is_none() && !n.exists;
                let delta = match &n.delta {
                    Some(old) => {
                        file.set_len(size).map_err(|x| MoverError::io("resize", &path, x))?;
                        let mut blocks = old.clone();
                        blocks.resize(block_count(size) as usize, [0; 32]);
                        Some(blocks)
                    }
                    None => None,
                };
                self.open = Some(OpenFile { idx, file, path, temp, created, size, mtime, delta, hasher: BlockHasher::new(), end: 0, flushed: 0 });
            }
            tag::CHUNK => {
                let o = self.open.as_mut().ok_or_else(|| MoverError::Protocol("data outside a file".into()))?;
                let off = d.u64()?;
                let raw_len = d.u32()? as usize;
                let compressed = d.u8()? == 1;
                let payload = d.rest();
                let decompressed;
                let data: &[u8] = if compressed {
                    let z = match &mut self.dec {
                        Some(z) => z,
                        None => self.dec.insert(zstd::bulk::Decompressor::new().map_err(|e| MoverError::Protocol(format!("zstd: {e}")))?),
                    };
                    decompressed = z.decompress(payload, raw_len).map_err(|e| MoverError::Protocol(format!("bad zstd chunk: {e}")))?;
                    &decompressed
                } else {
                    payload
                };
                if data.len() != raw_len || off.checked_add(raw_len as u64).is_none_or(|end| end > o.size) {
                    return Err(MoverError::Protocol(format!("chunk at {off} (+{raw_len}) does not fit a {}-byte file", o.size)));
                }
                let target = o.temp.as_ref().unwrap_or(&o.path).clone();
                o.file.write_all_at(data, off).map_err(|x| MoverError::io("write", &target, x))?;
                o.end = o.end.max(off + raw_len as u64);
                match &mut o.delta {
                    Some(blocks) => {
                        let b = off / BLOCK_SIZE;
                        let (start, len) = (b * BLOCK_SIZE, block_len(o.size, b));
                        if off % BLOCK_SIZE == 0 && raw_len as u64 == len {
                            blocks[b as usize] = block_hash(data);
                        } else if off + raw_len as u64 <= start + len && (b as usize) < blocks.len() {
                            // A data segment of a partly sparse block (after the block was punched):
                            // hash the block as it now reads, holes as zeros.
                            let mut whole = vec![0u8; len as usize];
                            crate::mover::tree::read_full_at(&o.file, &mut whole, start).map_err(|x| MoverError::io("read back", &target, x))?;
                            blocks[b as usize] = block_hash(&whole);
                        } else {
                            return Err(MoverError::Protocol("delta chunk crosses a block boundary".into()));
                        }
                    }
                    None => o.hasher.feed(off, data).map_err(MoverError::Protocol)?,
                }
                self.totals.bytes.fetch_add(raw_len as u64, Ordering::Relaxed);
            }
            tag::ZERO => {
                let o = self.open.as_mut().ok_or_else(|| MoverError::Protocol("hole outside a file".into()))?;
                let (off, len) = (d.u64()?, d.u64()?);
                let b = off / BLOCK_SIZE;
                let Some(blocks) = o.delta.as_mut() else { return Err(MoverError::Protocol("hole message outside a delta update".into())) };
                if off % BLOCK_SIZE != 0 || b >= blocks.len() as u64 || len != block_len(o.size, b) {
                    return Err(MoverError::Protocol("hole is not one whole block".into()));
                }
                punch_hole(&o.file, off, len).map_err(|x| MoverError::io("punch hole", &o.path, x))?;
                blocks[b as usize] = zero_hash(len);
            }
            tag::FILE_END => {
                let o = self.open.take().ok_or_else(|| MoverError::Protocol("file end outside a file".into()))?;
                let theirs = d.digest()?;
                let _unstable = d.u8()?;
                self.open = Some(o);
                let r = self.finish_file(theirs);
                if r.is_err() {
                    self.abort();
                }
                r?;
            }
            tag::FILE_GONE => {
                let idx = d.u32()? as usize;
                if !self.need.contains_key(&idx) {
                    return Err(MoverError::Protocol(format!("sender reported entry {idx} gone, which was not requested")));
                }
                let p = self.src[idx].abs(self.root);
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_file() => std::fs::remove_file(&p).map_err(|x| MoverError::io("delete", &p, x))?,
                    _ => {}
                }
            }
            t => return Err(MoverError::Protocol(format!("unexpected message {t} on a data connection"))),
        }
        Ok(())
    }

    fn finish_file(&mut self, theirs: Digest) -> Result<()> {
        let o = self.open.as_mut().expect("open file");
        let e = &self.src[o.idx];
        let target = o.temp.clone().unwrap_or_else(|| o.path.clone());
        let (blocks, content) = match o.delta.take() {
            Some(b) => {
                let c = file_hash(o.size, &b);
                (b, c)
            }
            None => {
                if o.end < o.size {
                    // The file ends in a hole: extend it without writing.
                    o.file.set_len(o.size).map_err(|x| MoverError::io("resize", &target, x))?;
                }
                std::mem::take(&mut o.hasher).finish(o.size)
            }
        };
        if content != theirs {
            return Err(MoverError::ContentMismatch { path: e.display(), sender: hex::encode(theirs), receiver: hex::encode(content) });
        }
        // mtime first (owner and mode changes leave it alone), then owner and mode only
        // where the file does not have them yet; the last stat gives the ctime to cache.
        set_mtime_fd(&o.file, o.mtime.0, o.mtime.1).map_err(|x| MoverError::io("set mtime", &target, x))?;
        let mut md = o.file.metadata().map_err(|x| MoverError::io("stat", &target, x))?;
        let chown = (md.uid(), md.gid()) != (e.uid, e.gid);
        if chown {
            std::os::unix::fs::fchown(&o.file, Some(e.uid), Some(e.gid)).map_err(|x| MoverError::io("chown", &target, x))?;
        }
        // After chown, which clears setuid/setgid bits.
        if chown || md.mode() & 0o7777 != e.mode {
            use std::os::unix::fs::PermissionsExt;
            o.file.set_permissions(std::fs::Permissions::from_mode(e.mode)).map_err(|x| MoverError::io("chmod", &target, x))?;
        }
        if let Some(t) = &o.temp {
            std::fs::rename(t, &o.path).map_err(|x| MoverError::io("rename into place", &o.path, x))?;
            // Rename changes the inode's ctime; cache what the next walk will see.
            md = std::fs::symlink_metadata(&o.path).map_err(|x| MoverError::io("stat", &o.path, x))?;
        } else if chown || md.mode() & 0o7777 != e.mode {
            md = o.file.metadata().map_err(|x| MoverError::io("stat", &target, x))?;
        }
        self.totals.files.fetch_add(1, Ordering::Relaxed);
        if self.need[&o.idx].delta.is_some() {
            self.totals.delta.fetch_add(1, Ordering::Relaxed);
        }
        self.out.push((
            e.path.clone(),
            Cached {
                size: o.size,
                mtime: o.mtime,
                ctime: (md.ctime(), md.ctime_nsec() as u32),
                ino: md.ino(),
                content,
                blocks: if o.size >= DELTA_MIN { blocks } else { Vec::new() },
            },
        ));
        self.open = None;
        Ok(())
    }
}

pub(crate) fn punch_hole(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fd is open; range is within the file.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off as i64, len as i64) };
    if r == 0 {
        return Ok(());
    }
    // Filesystems without hole punching get explicit zeros.
    let zeros = vec![0u8; len as usize];
    f.write_all_at(&zeros, off)
}

/// Link hardlinks, set directory metadata deepest-first, re-walk and hash the tree.
/// When the pass changed nothing, the walk from its start is the final state and is hashed
/// as is (this keeps a no-change pass cheap).
pub(crate) fn finish(src: &[Entry], root: &Path, index: HashIndex, dst: Vec<Entry>, changed: bool) -> Result<(u64, usize, Digest, HashIndex)> {
    let (links, entries, hash, mut index) = finish_unsaved(src, root, index, dst, changed)?;
    index.save(&entries)?;
    Ok((links, entries.len(), hash, index))
}

/// [`finish`] without saving the hash cache: the final listing comes back for that.
fn finish_unsaved(src: &[Entry], root: &Path, mut index: HashIndex, dst: Vec<Entry>, mut changed: bool) -> Result<(u64, Vec<Entry>, Digest, HashIndex)> {
    let mut links = 0;
    for e in src.iter().filter(|e| e.kind == Kind::Hardlink) {
        let p = e.abs(root);
        let leader = tree::abs_path(root, &e.target);
        let lm = std::fs::symlink_metadata(&leader).map_err(|x| MoverError::io("stat hardlink target", &leader, x))?;
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.dev() == lm.dev() && m.ino() == lm.ino() => continue,
            Ok(m) => remove_any(&p, m.is_dir()).map_err(|x| MoverError::io("replace with hardlink", &p, x))?,
            Err(_) => {}
        }
        std::fs::hard_link(&leader, &p).map_err(|x| MoverError::io("hardlink", &p, x))?;
        links += 1;
        changed = true;
    }
    let plan_dirs = {
        let mut d: Vec<&Entry> = src.iter().filter(|e| e.kind == Kind::Dir).collect();
        d.sort_by_key(|e| std::cmp::Reverse(e.path.iter().filter(|&&b| b == b'/').count() + usize::from(!e.path.is_empty())));
        d
    };
    for e in plan_dirs {
        if !changed
            && let Ok(k) = dst.binary_search_by(|d| d.path.cmp(&e.path))
            && dst[k].kind == Kind::Dir
            && (dst[k].mode, dst[k].uid, dst[k].gid, dst[k].mtime_s, dst[k].mtime_ns) == (e.mode, e.uid, e.gid, e.mtime_s, e.mtime_ns)
        {
            continue;
        }
        changed = true;
        let p = e.abs(root);
        std::os::unix::fs::lchown(&p, Some(e.uid), Some(e.gid)).map_err(|x| MoverError::io("chown directory", &p, x))?;
        chmod(&p, e.mode).map_err(|x| MoverError::io("chmod directory", &p, x))?;
        set_mtime_nofollow(&p, e.mtime_s, e.mtime_ns).map_err(|x| MoverError::io("set directory mtime", &p, x))?;
    }
    let entries = if changed { tree::walk(root, 4, &[])? } else { dst };
    let contents = hash_tree_files(&entries, root, &mut index)?;
    let hash = tree::tree_hash(&entries, |i| contents[i]);
    Ok((links, entries, hash, index))
}

/// Content hash per entry index (zero for non-files): cache where valid, else read.
pub(crate) fn hash_tree_files(entries: &[Entry], root: &Path, index: &mut HashIndex) -> Result<Vec<Digest>> {
    let mut out = vec![[0u8; 32]; entries.len()];
    let mut todo = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.kind != Kind::File {
            continue;
        }
        match index.get(e) {
            Some(c) => out[i] = c.content,
            None => todo.push(i),
        }
    }
    let results = tree::par_map(&todo, 2, |&i| {
        let e = &entries[i];
        let p = e.abs(root);
        let f = tree::open_read(&p).map_err(|x| MoverError::io("open", &p, x))?;
        let (blocks, c) = tree::hash_file(&f, &p, e.size, e.local.blocks)?;
        Ok((i, blocks, c))
    })?;
    for (i, blocks, c) in results {
        index.dirty = true;
        let e = &entries[i];
        out[i] = c;
        index.map.insert(
            e.path.clone(),
            Cached {
                size: e.size,
                mtime: (e.mtime_s, e.mtime_ns),
                ctime: (e.local.ctime_s, e.local.ctime_ns),
                ino: e.local.ino,
                content: c,
                blocks: if e.size >= DELTA_MIN { blocks } else { Vec::new() },
            },
        );
    }
    Ok(out)
}

/// Open the file a pass writes: the existing file in place for a delta update
/// (read-write: partly sparse blocks are read back), a temporary name beside it
/// when something else is in the way (renamed over it at the end), else a new file.
pub(crate) fn open_target(path: &std::path::Path, root: &std::path::Path, delta: bool, exists: bool, tag: &str) -> Result<(std::fs::File, Option<std::path::PathBuf>)> {
    open_target_mode(path, root, delta, exists, tag, 0o600)
}

/// [`open_target`] creating new files with permission bits `mode` (before the umask).
pub(crate) fn open_target_mode(
    path: &std::path::Path,
    root: &std::path::Path,
    delta: bool,
    exists: bool,
    tag: impl std::fmt::Display,
    mode: u32,
) -> Result<(std::fs::File, Option<std::path::PathBuf>)> {
    if delta {
        let f = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|x| MoverError::io("open", path, x))?;
        return Ok((f, None));
    }
    if exists {
        let t = path.parent().unwrap_or(root).join(format!(".ferry-{tag}-{:08x}.tmp", rand::random::<u32>()));
        let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&t).map_err(|x| MoverError::io("create", &t, x))?;
        return Ok((f, Some(t)));
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|x| MoverError::io("create", path, x))?;
    Ok((f, None))
}
