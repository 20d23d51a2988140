//! Sending end of a pass: walk the source, ship the listing, stream what the receiver
//! needs over parallel data connections, then compare tree hashes.
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::hash::{BlockHasher, Digest, block_count, block_hash, block_len, file_hash, zero_hash};
use super::index::{Cached, HashIndex};
use super::stats::Report;
use super::stream::{OutBuf, SyncTls};
use super::tree::{self, Entry, Kind};
use super::wire::{self, Counted, Counters, Dec, Enc, tag};
use super::{BLOCK_SIZE, DELTA_MIN, MoverError, PROTOCOL_VERSION, Result};

/// Whether to zstd-compress file chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    /// Compress unless the receiver is on a loopback address (where CPU, not bandwidth, is scarce).
    Auto,
    /// Compress chunks that shrink by at least 10 %.
    Always,
    /// Never compress.
    Never,
}

/// Options for one sending pass.
pub struct SendOptions {
    /// Receiver address `host:port`.
    pub addr: String,
    /// Name expected in the receiver's certificate.
    pub server_name: ServerName<'static>,
    /// Client TLS configuration (mutual TLS).
    pub tls: Arc<ClientConfig>,
    /// Source directory.
    pub src: PathBuf,
    /// Hash cache directory (outside `src`).
    pub state: Option<PathBuf>,
    /// Parallel data connections.
    pub streams: usize,
    /// Compression policy.
    pub compress: Compress,
    /// Bandwidth limit in bytes per second over all data connections.
    pub bwlimit: Option<u64>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

type Tls = TlsStream<Counted<TcpStream>>;

struct Job {
    idx: usize,
    remote_blocks: Option<Vec<Digest>>,
}

/// What was sent for one file.
struct Sent {
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
    ino: u64,
    content: Digest,
    blocks: Vec<Digest>,
    unstable: bool,
    gone: bool,
}

#[derive(Default)]
struct Totals {
    file_bytes: AtomicU64,
    data_bytes: AtomicU64,
}

async fn connect(opts: &SendOptions, counters: &Counters) -> Result<Tls> {
    let ctx = || format!("connect to receiver at {}", opts.addr);
    // A receiver behind a fresh Service may take a moment to become reachable
    // (NodePort rules, load balancers): retry refused and unreachable for up to 30 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let tcp = loop {
        match TcpStream::connect(&opts.addr).await {
            Ok(t) => break t,
            Err(e) if std::time::Instant::now() < deadline
                && matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::TimedOut) => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(MoverError::net(ctx(), e)),
        }
    };
    tcp.set_nodelay(true).map_err(|e| MoverError::net(ctx(), e))?;
    let connector = TlsConnector::from(opts.tls.clone());
    connector
        .connect(opts.server_name.clone(), Counted::new(tcp, counters.clone()))
        .await
        .map_err(|e| MoverError::net(format!("TLS handshake with receiver at {}", opts.addr), e))
}

fn hello(role: u8, session: &[u8; 16]) -> Vec<u8> {
    let mut e = Enc::new();
    e.u32(PROTOCOL_VERSION).u8(role).raw(session).u64(BLOCK_SIZE);
    e.0
}

/// Run one pass to a receiver.
pub async fn send(opts: SendOptions) -> Result<Report> {
    super::stream::keep_freed_memory();
    let started = Instant::now();
    if let Some(state) = &opts.state {
        refuse_state_inside(state, &opts.src)?;
    }
    let counters = Counters::default();
    let src = opts.src.clone();
    let walk = tokio::task::spawn_blocking(move || {
        let entries = tree::walk(&src, 4, &[])?;
        readable(&src, &entries)?;
        Ok::<_, MoverError>(entries)
    });
    let (src2, state) = (opts.src.clone(), opts.state.clone());
    let index = tokio::task::spawn_blocking(move || match state {
        Some(s) => HashIndex::load(&s, "sender.idx", &src2),
        None => Ok(HashIndex::memory()),
    });
    let control = connect(&opts, &counters).await?;
    let compress = match opts.compress {
        Compress::Always => true,
        Compress::Never => false,
        Compress::Auto => !control.get_ref().0.get_ref().peer_addr().map(|a| a.ip().is_loopback()).unwrap_or(false),
    };
    let mut entries = walk.await.expect("walk task")?;
    let mut index = index.await.expect("index task")?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, entries = entries.len(), "walked source");
    let session: [u8; 16] = rand::random();
    let (ctl_rd, ctl_wr) = tokio::io::split(control);
    let mut ctl_wr = BufWriter::with_capacity(1 << 20, ctl_wr);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Result<wire::Frame>>();
    tokio::spawn(async move {
        let mut rd = ctl_rd;
        loop {
            match wire::read_frame(&mut rd).await {
                Ok(Some(f)) => {
                    if ctl_tx.send(Ok(f)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = ctl_tx.send(Err(MoverError::Protocol("receiver closed the control connection".into())));
                    return;
                }
                Err(e) => {
                    let _ = ctl_tx.send(Err(MoverError::net("control connection to receiver", e)));
                    return;
                }
            }
        }
    });
    let net = |e| MoverError::net("control connection to receiver", e);
    wire::write_frame(&mut ctl_wr, tag::HELLO, &hello(wire::ROLE_CONTROL, &session)).await.map_err(net)?;
    let mut batch = Enc::new();
    for e in &entries {
        wire::put_entry(&mut batch, e);
        if batch.0.len() > 512 * 1024 {
            wire::write_frame(&mut ctl_wr, tag::ENTRIES, &batch.0).await.map_err(net)?;
            batch.0.clear();
        }
    }
    if !batch.0.is_empty() {
        wire::write_frame(&mut ctl_wr, tag::ENTRIES, &batch.0).await.map_err(net)?;
    }
    wire::write_frame(&mut ctl_wr, tag::LISTING_END, &(entries.len() as u64).to_le_bytes()).await.map_err(net)?;
    ctl_wr.flush().await.map_err(net)?;

    // Need list.
    let mut jobs = Vec::new();
    loop {
        let f = next_ctl(&mut ctl_rx).await?;
        match f.tag {
            tag::NEED => {
                let mut d = Dec::new(&f.body, "need");
                while !d.is_empty() {
                    let idx = d.u32()? as usize;
                    let delta = d.u8()? == 1;
                    let n = d.u32()? as usize;
                    if idx >= entries.len() || entries[idx].kind != Kind::File {
                        return Err(MoverError::Protocol(format!("receiver asked for entry {idx}, which is not a file")));
                    }
                    let mut blocks = Vec::with_capacity(n.min(1 << 20));
                    for _ in 0..n {
                        blocks.push(d.digest()?);
                    }
                    jobs.push(Job { idx, remote_blocks: delta.then_some(blocks) });
                }
            }
            tag::NEED_END => break,
            t => return Err(MoverError::Protocol(format!("unexpected message {t} while waiting for the need list"))),
        }
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, files = jobs.len(), "need list received");
    let needed: HashSet<usize> = jobs.iter().map(|j| j.idx).collect();
    let total_bytes: u64 = jobs.iter().map(|j| entries[j.idx].size).sum();
    // Big files first so they do not become the tail of the pass; the rest in listing
    // order, so the streams work through one directory at a time (see `tree::DirCache`).
    jobs.sort_by_key(|j| (std::cmp::Reverse(entries[j.idx].size.max(BLOCK_SIZE)), j.idx));
    let n_jobs = jobs.len();

    // Content hashes of files not sent, computed while data flows.
    let entries_arc = Arc::new(std::mem::take(&mut entries));
    let cached: Arc<HashMap<Vec<u8>, Cached>> = Arc::new(std::mem::take(&mut index.map));
    let skipped_hashes = {
        let (entries, cached, src, needed) = (entries_arc.clone(), cached.clone(), opts.src.clone(), needed.clone());
        tokio::task::spawn_blocking(move || hash_unsent(&entries, &cached, &src, &needed))
    };

    let bar = (opts.progress && total_bytes > 0).then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let totals = Arc::new(Totals::default());
    let results: Arc<Mutex<HashMap<usize, Sent>>> = Arc::new(Mutex::new(HashMap::new()));
    let streams = opts.streams.max(1).min(n_jobs);
    if n_jobs > 0 {
        let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
        let limiter = opts.bwlimit.map(|r| Arc::new((Instant::now(), AtomicU64::new(0), r)));
        let mut tasks = Vec::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Whatever ends this pass early also stops the stream threads at their next file.
        struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_guard = StopOnDrop(stop.clone());
        // Handshakes of all data connections at once.
        let conns = futures::future::try_join_all((0..streams).map(|_| connect(&opts, &counters))).await?;
        for conn in conns {
            let (io, tls) = conn.into_inner();
            let conn = wire::into_sync(io, tls).map_err(|e| MoverError::net("data connection to receiver", e))?;
            let ctx = Stream {
                queue: queue.clone(),
                entries: entries_arc.clone(),
                src: opts.src.clone(),
                compress,
                totals: totals.clone(),
                results: results.clone(),
                bar: bar.clone(),
                limiter: limiter.clone(),
                session,
                stop: stop.clone(),
            };
            // A plain thread (not the runtime's blocking pool): a failed pass exits without
            // waiting for the other streams.
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(ctx.run(conn));
            });
            tasks.push(rx);
        }
        let all = futures::future::try_join_all(tasks.into_iter().map(|t| async move {
            t.await.unwrap_or_else(|_| Err(MoverError::Protocol("data stream thread panicked".into())))
        }));
        tokio::pin!(all);
        tokio::select! {
            r = &mut all => {
                if let Err(e) = r {
                    // The receiver usually says why it dropped the stream on the control connection
                    // (a local failure, such as a source read error, speaks for itself).
                    if matches!(e, MoverError::Net { .. } | MoverError::Protocol(_))
                        && let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(2), ctl_rx.recv()).await
                        && f.tag == tag::ERROR {
                        return Err(MoverError::Peer { side: "receiver", message: wire::error_text(&f.body) });
                    }
                    return Err(e);
                }
            }
            f = next_ctl(&mut ctl_rx) => {
                let f = f?;
                return Err(MoverError::Protocol(format!("unexpected message {} during the data phase", f.tag)));
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "data phase done");
    wire::write_frame(&mut ctl_wr, tag::FINISH, &[]).await.map_err(net)?;
    ctl_wr.flush().await.map_err(net)?;
    // Sender's tree hash over what it actually sent, and its hash cache, while the
    // receiver re-walks its tree.
    let (unsent, changed_unsent, misses) = skipped_hashes.await.expect("hash task")?;
    let results = std::mem::take(&mut *results.lock().unwrap());
    let entries = Arc::try_unwrap(entries_arc).unwrap_or_else(|a| (*a).clone());
    let cached = Arc::try_unwrap(cached).unwrap_or_else(|a| (*a).clone());
    let state = opts.state.clone();
    let conclusion = tokio::task::spawn_blocking(move || conclude(entries, results, unsent, changed_unsent, misses, cached, index, state.is_some()));
    let f = next_ctl(&mut ctl_rx).await?;
    if f.tag != tag::DONE {
        return Err(MoverError::Protocol(format!("expected the receiver's report, got message {}", f.tag)));
    }
    let receiver: super::stats::ReceiverReport =
        serde_json::from_slice(&f.body).map_err(|e| MoverError::Protocol(format!("receiver report: {e}")))?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "receiver report received");
    let Concluded { entries, hash, unstable, files_sent } = conclusion.await.expect("conclusion task")?;
    let sender_hash = hex::encode(hash);
    let ok = sender_hash == receiver.tree_hash;
    let mut v = Enc::new();
    v.raw(&hash).u8(if ok { 0 } else if unstable > 0 { 3 } else { 1 });
    wire::write_frame(&mut ctl_wr, tag::VERDICT, &v.0).await.map_err(net)?;
    ctl_wr.flush().await.map_err(net)?;
    let _ = ctl_wr.shutdown().await;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "verdict sent, cache saved");
    let files_total = entries.iter().filter(|e| e.kind == Kind::File).count() as u64;
    let bytes_total = entries.iter().filter(|e| e.kind == Kind::File).map(|e| e.size).sum::<u64>();
    Ok(Report {
        source: opts.src.display().to_string(),
        destination: opts.addr.clone(),
        ok,
        entries: entries.len() as u64,
        files_total,
        bytes_total,
        files_sent,
        files_delta: receiver.files_delta,
        files_skipped: receiver.files_skipped,
        entries_deleted: receiver.entries_deleted,
        unstable_files: unstable,
        file_bytes_sent: totals.file_bytes.load(Ordering::Relaxed),
        data_bytes_sent: totals.data_bytes.load(Ordering::Relaxed),
        wire_bytes_sent: counters.sent(),
        wire_bytes_received: counters.received(),
        compression: compress,
        streams: streams as u64,
        duration_ms: started.elapsed().as_millis() as u64,
        sender_tree_hash: sender_hash,
        receiver_tree_hash: receiver.tree_hash.clone(),
        receiver,
    })
}

/// The sender's side of the proof, computed while the receiver finishes.
struct Concluded {
    /// The listing as sent (sizes and mtimes as read, vanished files dropped).
    entries: Vec<Entry>,
    hash: Digest,
    unstable: u64,
    files_sent: u64,
}

/// Tree hash over what was sent (and the cached or fresh hashes of what was not), and
/// the new hash cache.
#[allow(clippy::too_many_arguments)]
fn conclude(
    mut entries: Vec<Entry>,
    results: HashMap<usize, Sent>,
    unsent: Vec<(usize, Digest)>,
    changed_unsent: u64,
    misses: u64,
    mut cached: HashMap<Vec<u8>, Cached>,
    mut index: HashIndex,
    save: bool,
) -> Result<Concluded> {
    let mut unstable = changed_unsent;
    let mut content = vec![[0u8; 32]; entries.len()];
    for (i, d) in unsent {
        content[i] = d;
    }
    let mut gone = false;
    for (&idx, s) in &results {
        let e = &mut entries[idx];
        if s.unstable || s.gone {
            unstable += 1;
        }
        if s.gone {
            gone = true;
            continue;
        }
        e.size = s.size;
        (e.mtime_s, e.mtime_ns) = s.mtime;
        content[idx] = s.content;
    }
    let cached_len = cached.len();
    // A pass that sent nothing and hashed nothing anew leaves the cache as it is.
    let files_now = entries.iter().enumerate().filter(|(i, e)| e.kind == Kind::File && !results.get(i).is_some_and(|s| s.gone)).count();
    if save && (!results.is_empty() || misses > 0 || files_now != cached_len) {
        let mut map = HashMap::with_capacity(files_now);
        for (i, e) in entries.iter().enumerate() {
            if e.kind != Kind::File {
                continue;
            }
            match results.get(&i) {
                Some(s) if s.gone => {}
                Some(s) if !s.unstable => {
                    let c = Cached { size: s.size, mtime: s.mtime, ctime: s.ctime, ino: s.ino, content: s.content, blocks: s.blocks.clone() };
                    map.insert(e.path.clone(), c);
                }
                _ => {
                    // Not sent (or changed while being sent): keep a cache entry that still
                    // matches, else record the hash known now.
                    match cached.remove_entry(&e.path) {
                        Some((p, c)) if c.matches(e) => {
                            map.insert(p, c);
                        }
                        _ => {
                            let c = Cached {
                                size: e.size,
                                mtime: (e.mtime_s, e.mtime_ns),
                                ctime: (e.local.ctime_s, e.local.ctime_ns),
                                ino: e.local.ino,
                                content: content[i],
                                blocks: Vec::new(),
                            };
                            map.insert(e.path.clone(), c);
                        }
                    }
                }
            }
        }
        index.dirty = true;
        index.map = map;
    }
    if gone {
        let keep: Vec<bool> = (0..entries.len()).map(|i| !results.get(&i).is_some_and(|s| s.gone)).collect();
        let mut k = keep.iter();
        entries.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        content.retain(|_| *k.next().expect("same length"));
    }
    let hash = tree::tree_hash(&entries, |i| content[i]);
    if index.dirty {
        index.save(&entries)?;
    }
    let files_sent = results.values().filter(|s| !s.gone).count() as u64;
    Ok(Concluded { entries, hash, unstable, files_sent })
}

/// Refuse a state directory inside the tree it describes (it would be copied or deleted).
pub fn refuse_state_inside(state: &Path, data: &Path) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (s, d) = (canon(state), canon(data));
    if s.starts_with(&d) {
        return Err(MoverError::Config(format!(
            "--state {} is inside the data directory {}; put it outside (it would be copied or deleted as data)",
            state.display(),
            data.display()
        )));
    }
    Ok(())
}

async fn next_ctl(rx: &mut mpsc::UnboundedReceiver<Result<wire::Frame>>) -> Result<wire::Frame> {
    match rx.recv().await {
        Some(Ok(f)) if f.tag == tag::ERROR => Err(MoverError::Peer { side: "receiver", message: wire::error_text(&f.body) }),
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(e),
        None => Err(MoverError::Protocol("control connection closed".into())),
    }
}

/// Fail before any data moves when this (non-root) user cannot read every file
/// and directory: a clear "Permission denied" instead of a broken stream.
fn readable(src: &Path, entries: &[Entry]) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for e in entries {
        let mode = match e.kind {
            Kind::File => nix::unistd::AccessFlags::R_OK,
            Kind::Dir => nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK,
            _ => continue,
        };
        let p = e.abs(src);
        if let Err(errno) = nix::unistd::faccessat(nix::fcntl::AT_FDCWD, &p, mode, nix::fcntl::AtFlags::AT_EACCESS) {
            return Err(MoverError::io("read", &p, std::io::Error::from_raw_os_error(errno as i32)));
        }
    }
    Ok(())
}

/// Staged plaintext is encrypted and sent once this much has piled up.
const FLUSH_AT: usize = 1024 * 1024;

/// One data connection: its own thread takes files from the shared queue, reads them
/// straight into the plaintext buffer, hashes them there and encrypts in batches.
struct Stream {
    queue: Arc<Mutex<VecDeque<Job>>>,
    entries: Arc<Vec<Entry>>,
    src: PathBuf,
    compress: bool,
    totals: Arc<Totals>,
    results: Arc<Mutex<HashMap<usize, Sent>>>,
    bar: Option<indicatif::ProgressBar>,
    limiter: Option<Arc<(Instant, AtomicU64, u64)>>,
    session: [u8; 16],
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// What one stream thread needs while sending files.
struct Out<'a> {
    tls: SyncTls,
    buf: OutBuf,
    /// Whole-block scratch for delta updates (compare before sending).
    block: Vec<u8>,
    zc: Option<zstd::bulk::Compressor<'static>>,
    zbuf: Vec<u8>,
    totals: &'a Totals,
    bar: Option<&'a indicatif::ProgressBar>,
    limiter: Option<&'a (Instant, AtomicU64, u64)>,
    dirs: tree::DirCache,
}

impl Out<'_> {
    fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let n = self.buf.send(&mut self.tls).map_err(|e| MoverError::net("data connection to receiver", e))?;
        if let Some(l) = self.limiter {
            let sent = l.1.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            let due = Duration::from_secs_f64(sent as f64 / l.2 as f64);
            let elapsed = l.0.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        Ok(())
    }

    fn frame(&mut self, tag: u8, body: &[u8]) -> Result<()> {
        self.buf.frame(tag, body);
        self.maybe_flush()
    }

    /// Stage a CHUNK frame header for `len` bytes at `off`; returns where its payload starts.
    fn chunk_header(&mut self, off: u64, len: usize) -> usize {
        self.buf.put(&[tag::CHUNK]);
        self.buf.put(&((13 + len) as u32).to_le_bytes());
        self.buf.put(&off.to_le_bytes());
        self.buf.put(&(len as u32).to_le_bytes());
        self.buf.put(&[0]);
        self.buf.cut();
        self.buf.len()
    }

    /// The CHUNK whose payload (`len` raw bytes) was just staged at `start`: compress it
    /// in place when that pays, count it, and send when enough is staged.
    fn chunk_done(&mut self, start: usize, len: usize, try_compress: &mut bool) -> Result<()> {
        let mut wire_len = len;
        if *try_compress && let Some(z) = self.zc.as_mut() {
            self.zbuf.resize(zstd::zstd_safe::compress_bound(len), 0);
            match z.compress_to_buffer(self.buf.tail(start), &mut self.zbuf) {
                Ok(c) if (c as u64) * 10 < len as u64 * 9 => {
                    self.buf.truncate(start);
                    self.buf.put(&self.zbuf[..c]);
                    let hdr = self.buf.tail_mut(start - 18);
                    hdr[1..5].copy_from_slice(&((13 + c) as u32).to_le_bytes());
                    hdr[17] = 1;
                    wire_len = c;
                }
                // Incompressible data: stop trying for the rest of this file.
                _ => *try_compress = false,
            }
        }
        self.totals.file_bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.totals.data_bytes.fetch_add(wire_len as u64, Ordering::Relaxed);
        if let Some(b) = self.bar {
            b.inc(len as u64);
        }
        self.maybe_flush()
    }

    /// Stage a chunk copied from `data`.
    fn chunk_from(&mut self, off: u64, data: &[u8], try_compress: &mut bool) -> Result<()> {
        let start = self.chunk_header(off, data.len());
        self.buf.put(data);
        self.chunk_done(start, data.len(), try_compress)
    }
}

impl Stream {
    fn run(self, tls: SyncTls) -> Result<()> {
        let net = |e| MoverError::net("data connection to receiver", e);
        let zc = if self.compress { Some(zstd::bulk::Compressor::new(1).map_err(|e| MoverError::Protocol(format!("zstd: {e}")))?) } else { None };
        let mut out = Out {
            tls,
            buf: OutBuf::new(FLUSH_AT, BLOCK_SIZE as usize + 64),
            block: Vec::new(),
            zc,
            zbuf: Vec::new(),
            totals: &self.totals,
            bar: self.bar.as_ref(),
            limiter: self.limiter.as_deref(),
            dirs: tree::DirCache::new(&self.src),
        };
        out.frame(tag::HELLO, &hello(wire::ROLE_DATA, &self.session))?;
        let mut done = Vec::new();
        let r = loop {
            if self.stop.load(Ordering::Relaxed) {
                break Err(MoverError::Protocol("pass aborted".into()));
            }
            let Some(job) = self.queue.lock().unwrap().pop_front() else { break Ok(()) };
            match send_file(&job, &self.entries, &self.src, &mut out) {
                Ok(sent) => done.push((job.idx, sent)),
                Err(e) => break Err(e),
            }
            if done.len() >= 64 {
                self.results.lock().unwrap().extend(done.drain(..));
            }
        };
        self.results.lock().unwrap().extend(done.drain(..));
        r?;
        out.frame(tag::DATA_END, &[])?;
        out.flush()?;
        let mut tls = out.tls;
        match tls.read_frame().map_err(net)? {
            Some(f) if f.tag == tag::DATA_DONE => Ok(()),
            Some(f) if f.tag == tag::ERROR => Err(MoverError::Peer { side: "receiver", message: wire::error_text(&f.body) }),
            Some(f) => Err(MoverError::Protocol(format!("unexpected message {} at the end of a data stream", f.tag))),
            None => Err(MoverError::Protocol("receiver closed a data connection before acknowledging it".into())),
        }
    }
}

fn send_file(job: &Job, entries: &[Entry], src: &Path, out: &mut Out<'_>) -> Result<Sent> {
    use std::os::unix::fs::MetadataExt;
    let e = &entries[job.idx];
    let path = e.abs(src);
    let gone = |out: &mut Out<'_>| -> Result<Sent> {
        out.frame(tag::FILE_GONE, &(job.idx as u32).to_le_bytes())?;
        Ok(Sent { size: 0, mtime: (0, 0), ctime: (0, 0), ino: 0, content: [0; 32], blocks: vec![], unstable: true, gone: true })
    };
    let file = match out.dirs.open_read(&e.path) {
        Ok(f) => f,
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR)) => return gone(out),
        Err(err) => return Err(MoverError::io("open", &path, err)),
    };
    let md = file.metadata().map_err(|err| MoverError::io("stat", &path, err))?;
    if !md.is_file() {
        return gone(out);
    }
    let (size, mtime, ctime) = (md.size(), (md.mtime(), md.mtime_nsec() as u32), (md.ctime(), md.ctime_nsec() as u32));
    let remote = job.remote_blocks.as_deref();
    let mut b = Enc::new();
    b.u32(job.idx as u32).u64(size).i64(mtime.0).u32(mtime.1).u8(remote.is_some() as u8);
    out.frame(tag::FILE_BEGIN, &b.0)?;

    let segs = tree::data_segments(&file, size, md.blocks());
    let mut unstable = false;
    let mut try_compress = out.zc.is_some();
    let hashes = match remote {
        // Whole file: every data segment goes out in block-sized pieces, read straight into
        // the send buffer and hashed there (holes hash as zeros).
        None => {
            let mut hasher = BlockHasher::new();
            for &(s, t) in &segs {
                let mut off = s;
                while off < t {
                    let n = (t - off).min(BLOCK_SIZE - off % BLOCK_SIZE) as usize;
                    let start = out.chunk_header(off, n);
                    let dst = out.buf.spare(n);
                    let got = tree::read_full_at(&file, dst, off).map_err(|err| MoverError::io("read", &path, err))?;
                    if got < n {
                        dst[got..].fill(0); // shrank under us
                        unstable = true;
                    }
                    hasher.feed(off, dst).map_err(MoverError::Protocol)?;
                    out.buf.commit(n);
                    out.chunk_done(start, n, &mut try_compress)?;
                    off += n as u64;
                }
            }
            let (hashes, content) = hasher.finish(size);
            debug_assert_eq!(content, file_hash(size, &hashes));
            hashes
        }
        Some(r) => delta_blocks(&file, &path, size, &segs, r, out, &mut unstable, &mut try_compress)?,
    };
    let content = file_hash(size, &hashes);
    let md2 = file.metadata().map_err(|err| MoverError::io("stat", &path, err))?;
    if md2.size() != size || (md2.mtime(), md2.mtime_nsec() as u32) != mtime || (md2.ctime(), md2.ctime_nsec() as u32) != ctime {
        unstable = true;
    }
    let mut fe = [0u8; 33];
    fe[..32].copy_from_slice(&content);
    fe[32] = unstable as u8;
    out.frame(tag::FILE_END, &fe)?;
    let blocks = if size < DELTA_MIN { Vec::new() } else { hashes };
    Ok(Sent { size, mtime, ctime, ino: md.ino(), content, blocks, unstable, gone: false })
}

/// Block-wise update: hash every block, send only those whose hash differs from the
/// receiver's (holes stay holes: the block is punched, then its data segments sent).
#[allow(clippy::too_many_arguments)]
fn delta_blocks(
    file: &std::fs::File,
    path: &Path,
    size: u64,
    segs: &[(u64, u64)],
    remote: &[Digest],
    out: &mut Out<'_>,
    unstable: &mut bool,
    try_compress: &mut bool,
) -> Result<Vec<Digest>> {
    let mut blk = std::mem::take(&mut out.block);
    blk.resize(BLOCK_SIZE as usize, 0);
    let mut hashes = Vec::with_capacity(block_count(size) as usize);
    let mut seg_i = 0;
    for bi in 0..block_count(size) {
        let off = bi * BLOCK_SIZE;
        let len = block_len(size, bi);
        let end = off + len;
        while seg_i < segs.len() && segs[seg_i].1 <= off {
            seg_i += 1;
        }
        let mut pieces = Vec::new();
        let mut k = seg_i;
        while k < segs.len() && segs[k].0 < end {
            pieces.push((segs[k].0.max(off), segs[k].1.min(end)));
            k += 1;
        }
        let blk = &mut blk[..len as usize];
        let h = if pieces.is_empty() {
            zero_hash(len)
        } else {
            if pieces.len() != 1 || pieces[0] != (off, end) {
                blk.fill(0);
            }
            for &(s, t) in &pieces {
                let dst = &mut blk[(s - off) as usize..(t - off) as usize];
                let got = tree::read_full_at(file, dst, s).map_err(|err| MoverError::io("read", path, err))?;
                if got < dst.len() {
                    dst[got..].fill(0); // shrank under us
                    *unstable = true;
                }
            }
            block_hash(blk)
        };
        if remote.get(bi as usize) != Some(&h) {
            let whole = pieces.len() == 1 && pieces[0] == (off, end);
            if whole {
                out.chunk_from(off, blk, try_compress)?;
            } else {
                let mut z = Enc::new();
                z.u64(off).u64(len);
                out.frame(tag::ZERO, &z.0)?;
                for &(s, t) in &pieces {
                    out.chunk_from(s, &blk[(s - off) as usize..(t - off) as usize], try_compress)?;
                }
            }
        }
        hashes.push(h);
    }
    out.block = std::mem::take(&mut blk);
    Ok(hashes)
}

/// Content hashes of regular files the receiver did not need: from the cache where it
/// still matches, else by reading them (two threads).
fn hash_unsent(entries: &[Entry], cached: &HashMap<Vec<u8>, Cached>, src: &Path, needed: &HashSet<usize>) -> Result<(Vec<(usize, Digest)>, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let changed = AtomicU64::new(0);
    let misses = AtomicU64::new(0);
    let todo: Vec<usize> = (0..entries.len()).filter(|i| entries[*i].kind == Kind::File && !needed.contains(i)).collect();
    let out = tree::par_map(&todo, 2, |&i| {
        let e = &entries[i];
        if let Some(c) = cached.get(&e.path).filter(|c| c.matches(e)) {
            return Ok((i, c.content));
        }
        misses.fetch_add(1, Ordering::Relaxed);
        let p = e.abs(src);
        let f = tree::open_read(&p).map_err(|x| MoverError::io("open", &p, x))?;
        let (_, c) = tree::hash_file(&f, &p, e.size, e.local.blocks)?;
        // Changed since the walk: the receiver kept the old version.
        if let Ok(m) = f.metadata()
            && (m.size(), m.mtime(), m.mtime_nsec() as u32, m.ctime(), m.ctime_nsec() as u32) != (e.size, e.mtime_s, e.mtime_ns, e.local.ctime_s, e.local.ctime_ns)
        {
            changed.fetch_add(1, Ordering::Relaxed);
        }
        Ok((i, c))
    })?;
    Ok((out, changed.into_inner(), misses.into_inner()))
}
