//! Object-storage transport: push a tree into an S3 bucket as content-addressed chunks
//! plus a manifest, and pull it back into a directory, with the same tree-hash proof as
//! the TLS transport — for clusters that cannot reach each other.
//!
//! Layout under `s3://BUCKET/PREFIX/`:
//! - `chunks/<blake3 hex>`: one object per distinct 1 MiB block ([`BLOCK_SIZE`], the
//!   mover's block size, so chunk hashes *are* the block hashes of [`super::hash`]).
//!   Body: `FCK1`, one byte encoding (0 raw, 1 zstd), payload. All-zero blocks are never
//!   stored: they are holes on pull, so sparse files stay sparse.
//! - `manifests/<pass>.json.zst`: the listing (paths, types, modes, owners, mtimes,
//!   symlink targets, hardlinks, chunk lists) and the sender's tree hash.
//! - `LATEST`: the name of the newest complete pass, written after its manifest.
//!
//! Push skips chunks the bucket already has (one listing of `chunks/`), so an
//! interrupted push resumes where it stopped and a later push uploads only changed
//! blocks. Pull checks the manifest against its own tree hash, verifies every chunk's
//! blake3 on download, applies the tree with the receiver's plan (deletions, type
//! changes, in-place block updates of large files), and re-walks and hashes the
//! destination: a mismatch fails the pull.
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::hash::{Digest, block_count, block_hash, block_len, file_hash, zero_hash};
use super::index::{Cached, HashIndex};
use super::receive::{self, NeedInfo};
use super::s3::Client;
use super::send::{Compress, refuse_state_inside};
use super::stats::S3Report;
use super::tree::{self, Entry, Kind, Local};
use super::{BLOCK_SIZE, MoverError, Result, plan};

const CHUNK_MAGIC: &[u8; 4] = b"FCK1";
const MANIFEST_FORMAT: &str = "ferry-s3-manifest-v1";

/// Options for `ferry mover s3-push`.
pub struct PushOptions {
    /// Signed client for the bucket and prefix.
    pub client: Client,
    /// Source directory.
    pub src: PathBuf,
    /// Hash cache directory (outside `src`): unchanged files are not re-read.
    pub state: Option<PathBuf>,
    /// Parallel requests.
    pub jobs: usize,
    /// Compression policy (`auto` compresses chunks that shrink by 10 % or more).
    pub compress: Compress,
    /// Create the bucket when it does not exist.
    pub create_bucket: bool,
}

/// Options for `ferry mover s3-pull`.
pub struct PullOptions {
    /// Signed client for the bucket and prefix.
    pub client: Client,
    /// Destination directory (created if missing).
    pub dst: PathBuf,
    /// Hash cache directory (outside `dst`).
    pub state: Option<PathBuf>,
    /// Parallel requests.
    pub jobs: usize,
    /// Pass to pull (default: the one named by `LATEST`).
    pub pass: Option<String>,
    /// The sender's tree hash as learned out of band (from the push's report): the
    /// manifest must carry exactly this hash, which also pins the pass.
    pub expect_tree_hash: Option<String>,
}

/// The manifest object.
#[derive(Serialize, Deserialize, Debug)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Pass name (also the object name).
    pub pass: String,
    /// Source directory at push time (informational).
    pub source: String,
    /// Chunk size; must equal the mover's block size.
    pub block_size: u64,
    /// Sender's tree hash (hex) over these entries.
    pub tree_hash: String,
    /// Sorted entries, root first.
    pub entries: Vec<MEntry>,
}

/// One manifest entry. Paths and link targets that are not UTF-8 are carried in `*_b64`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct MEntry {
    /// Relative path (empty for the root).
    pub path: String,
    /// Exact path bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// `dir`, `file`, `symlink` or `hardlink`.
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// mtime seconds.
    pub mtime: i64,
    /// mtime nanoseconds.
    pub mtime_ns: u32,
    /// Size in bytes (files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Symlink text or hardlink group leader.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Exact target bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    /// Chunk hash (hex) per block; empty string for an all-zero block (a hole).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Dir => "dir",
        Kind::File => "file",
        Kind::Symlink => "symlink",
        Kind::Hardlink => "hardlink",
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn split_bytes(b: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), Some(b64().encode(b))),
    }
}

fn join_bytes(s: &str, b: &Option<String>, what: &str) -> Result<Vec<u8>> {
    match b {
        Some(b) => b64().decode(b).map_err(|e| MoverError::Protocol(format!("manifest: bad base64 {what} for {s:?}: {e}"))),
        None => Ok(s.as_bytes().to_vec()),
    }
}

impl Manifest {
    /// Entries and per-file block digests (holes as the zero-block hash) from the manifest.
    fn decode(&self) -> Result<(Vec<Entry>, Vec<Vec<Option<Digest>>>)> {
        if self.format != MANIFEST_FORMAT {
            return Err(MoverError::Protocol(format!("manifest format {:?} is not {MANIFEST_FORMAT}: use the same ferry version on both ends", self.format)));
        }
        if self.block_size != BLOCK_SIZE {
            return Err(MoverError::Protocol(format!("manifest block size {} differs from {BLOCK_SIZE}", self.block_size)));
        }
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut chunks = Vec::with_capacity(self.entries.len());
        for m in &self.entries {
            let kind = match m.kind.as_str() {
                "dir" => Kind::Dir,
                "file" => Kind::File,
                "symlink" => Kind::Symlink,
                "hardlink" => Kind::Hardlink,
                k => {
                    return Err(MoverError::Protocol(format!("manifest entry {:?}: unknown kind {k:?}", m.path)));
                }
            };
            let mut list = Vec::new();
            if kind == Kind::File {
                if m.chunks.len() as u64 != block_count(m.size) {
                    return Err(MoverError::Protocol(format!("manifest entry {:?}: {} chunks for {} bytes", m.path, m.chunks.len(), m.size)));
                }
                for c in &m.chunks {
                    if c.is_empty() {
                        list.push(None);
                    } else {
                        let mut d = [0u8; 32];
                        hex::decode_to_slice(c, &mut d).map_err(|_| MoverError::Protocol(format!("manifest entry {:?}: bad chunk hash {c:?}", m.path)))?;
                        list.push(Some(d));
                    }
                }
            }
            entries.push(Entry {
                path: join_bytes(&m.path, &m.path_b64, "path")?,
                kind,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime_s: m.mtime,
                mtime_ns: m.mtime_ns,
                size: if kind == Kind::Dir { 0 } else { m.size },
                target: join_bytes(&m.target, &m.target_b64, "target")?,
                local: Local::default(),
            });
            chunks.push(list);
        }
        Ok((entries, chunks))
    }
}

/// Block digests of a file, holes filled with the zero-block hash.
fn full_blocks(size: u64, chunks: &[Option<Digest>]) -> Vec<Digest> {
    chunks.iter().enumerate().map(|(b, c)| c.unwrap_or_else(|| zero_hash(block_len(size, b as u64)))).collect()
}

fn chunk_key(client: &Client, d: &Digest) -> String {
    client.location().key(&format!("chunks/{}", hex::encode(d)))
}

/// Encode a chunk object body, compressing when it shrinks by at least 10 %.
fn encode_chunk(data: &[u8], compress: bool, zc: &mut Option<zstd::bulk::Compressor<'static>>) -> Result<Vec<u8>> {
    if compress {
        let z = match zc {
            Some(z) => z,
            None => zc.insert(zstd::bulk::Compressor::new(1).map_err(|e| MoverError::Protocol(format!("zstd: {e}")))?),
        };
        let c = z.compress(data).map_err(|e| MoverError::Protocol(format!("zstd: {e}")))?;
        if c.len() < data.len() - data.len() / 10 {
            let mut out = Vec::with_capacity(c.len() + 5);
            out.extend_from_slice(CHUNK_MAGIC);
            out.push(1);
            out.extend_from_slice(&c);
            return Ok(out);
        }
    }
    let mut out = Vec::with_capacity(data.len() + 5);
    out.extend_from_slice(CHUNK_MAGIC);
    out.push(0);
    out.extend_from_slice(data);
    Ok(out)
}

/// Decode a chunk object body and check that it hashes to its name.
fn decode_chunk(body: &[u8], want: &Digest, expect_len: u64) -> Result<Vec<u8>> {
    let bad = |why: String| {
        MoverError::Protocol(format!("chunk {} failed verification: {why} — the bucket copy is corrupted or was tampered with", hex::encode(want)))
    };
    if body.len() < 5 || &body[..4] != CHUNK_MAGIC {
        return Err(bad("not a ferry chunk object".into()));
    }
    let data = match body[4] {
        0 => body[5..].to_vec(),
        1 => zstd::bulk::decompress(&body[5..], BLOCK_SIZE as usize).map_err(|e| bad(format!("bad zstd data: {e}")))?,
        e => return Err(bad(format!("unknown encoding {e}"))),
    };
    if data.len() as u64 != expect_len {
        return Err(bad(format!("{} bytes, expected {expect_len}", data.len())));
    }
    let got = block_hash(&data);
    if &got != want {
        return Err(bad(format!("content hashes to {}", hex::encode(got))));
    }
    Ok(data)
}

fn fault_after_uploads(n: u64) {
    if let Ok(v) = std::env::var("FERRY_FAULT")
        && v.strip_prefix("s3-crash-after-uploads:").and_then(|x| x.parse::<u64>().ok()) == Some(n)
    {
        eprintln!("FERRY_FAULT: crashing after {n} chunk uploads");
        std::process::abort();
    }
}

/// Pass name: UTC time, sortable, plus a random suffix.
fn pass_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    let t = now.format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z")).expect("date formats");
    format!("{t}-{:08x}", rand::random::<u32>())
}

#[derive(Default)]
struct PushTotals {
    chunks_uploaded: AtomicU64,
    file_bytes: AtomicU64,
    files_sent: AtomicU64,
    files_read: AtomicU64,
    unstable: AtomicU64,
}

struct PushShared {
    client: Client,
    src: PathBuf,
    /// Chunks in the bucket or claimed by an upload of this pass.
    have: Mutex<HashSet<Digest>>,
    compress: bool,
    totals: PushTotals,
    sem: Arc<Semaphore>,
}

/// Result of one file: block hashes (holes as zero hashes), whether it was read, metadata.
struct Pushed {
    blocks: Vec<Digest>,
    holes: Vec<bool>,
    cached: Option<Cached>,
}

/// What a blocking read of one block found.
enum Block {
    Hole,
    Present(Digest),
    Upload(Digest, Vec<u8>, u64),
}

async fn push_file(sh: Arc<PushShared>, e: Entry, cached: Option<Cached>) -> Result<Pushed> {
    let n = block_count(e.size) as usize;
    let path = e.abs(&sh.src);
    // With valid cached hashes, only blocks the bucket lacks need reading.
    let known: Option<Vec<Digest>> = cached.filter(|c| c.blocks.len() == n).map(|c| c.blocks);
    let is_hole = |b: usize, d: &Digest| *d == zero_hash(block_len(e.size, b as u64));
    let mut blocks = vec![[0u8; 32]; n];
    let mut holes = vec![false; n];
    let mut todo = Vec::new();
    match &known {
        Some(k) => {
            let have = sh.have.lock().unwrap();
            for (b, d) in k.iter().enumerate() {
                blocks[b] = *d;
                if is_hole(b, d) {
                    holes[b] = true;
                } else if !have.contains(d) {
                    todo.push(b);
                }
            }
        }
        None => todo.extend(0..n),
    }
    let from_cache = known.is_some();
    if todo.is_empty() && from_cache {
        return Ok(Pushed { blocks, holes, cached: None });
    }
    let file = match tree::open_read(&path) {
        Ok(f) => Arc::new(f),
        Err(x) if x.kind() == std::io::ErrorKind::NotFound => {
            sh.totals.unstable.fetch_add(1, Ordering::Relaxed);
            return Ok(Pushed { blocks, holes, cached: None });
        }
        Err(x) => return Err(MoverError::io("open", &path, x)),
    };
    let segs = Arc::new(tree::data_segments(&file, e.size, e.local.blocks));
    sh.totals.files_read.fetch_add(1, Ordering::Relaxed);
    let mut uploads = Vec::new();
    let mut uploaded_any = false;
    for b in todo {
        let (off, len) = (b as u64 * BLOCK_SIZE, block_len(e.size, b as u64));
        let (file, segs, sh2, path2) = (file.clone(), segs.clone(), sh.clone(), path.clone());
        let r = tokio::task::spawn_blocking(move || -> Result<Block> {
            if !segs.iter().any(|&(s, t)| s < off + len && t > off) {
                return Ok(Block::Hole);
            }
            let mut buf = vec![0u8; len as usize];
            let got = tree::read_full_at(&file, &mut buf, off).map_err(|x| MoverError::io("read", &path2, x))?;
            buf.truncate(got); // shrank while reading: detected by the re-stat below
            buf.resize(len as usize, 0);
            let d = block_hash(&buf);
            if d == zero_hash(len) {
                return Ok(Block::Hole);
            }
            if !sh2.have.lock().unwrap().insert(d) {
                return Ok(Block::Present(d));
            }
            thread_local! {
                static ZC: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
            }
            let body = ZC.with(|z| encode_chunk(&buf, sh2.compress, &mut z.borrow_mut()))?;
            Ok(Block::Upload(d, body, len))
        })
        .await
        .expect("read task")?;
        match r {
            Block::Hole => {
                blocks[b] = zero_hash(len);
                holes[b] = true;
            }
            Block::Present(d) => blocks[b] = d,
            Block::Upload(d, body, raw) => {
                blocks[b] = d;
                uploaded_any = true;
                let permit = sh.sem.clone().acquire_owned().await.expect("semaphore");
                let sh2 = sh.clone();
                uploads.push(tokio::spawn(async move {
                    let _p = permit;
                    sh2.client.put(&chunk_key(&sh2.client, &d), Bytes::from(body)).await?;
                    sh2.totals.file_bytes.fetch_add(raw, Ordering::Relaxed);
                    let done = sh2.totals.chunks_uploaded.fetch_add(1, Ordering::Relaxed) + 1;
                    fault_after_uploads(done);
                    Ok::<(), MoverError>(())
                }));
            }
        }
    }
    for u in uploads {
        u.await.expect("upload task")?;
    }
    if uploaded_any {
        sh.totals.files_sent.fetch_add(1, Ordering::Relaxed);
    }
    // The file must not have changed while it was read.
    let md = file.metadata().map_err(|x| MoverError::io("stat", &path, x))?;
    let same = md.size() == e.size
        && (md.mtime(), md.mtime_nsec() as u32) == (e.mtime_s, e.mtime_ns)
        && (md.ctime(), md.ctime_nsec() as u32) == (e.local.ctime_s, e.local.ctime_ns);
    if !same {
        sh.totals.unstable.fetch_add(1, Ordering::Relaxed);
        return Ok(Pushed { blocks, holes, cached: None });
    }
    let cached = Cached {
        size: e.size,
        mtime: (e.mtime_s, e.mtime_ns),
        ctime: (e.local.ctime_s, e.local.ctime_ns),
        ino: e.local.ino,
        content: file_hash(e.size, &blocks),
        blocks: blocks.clone(),
    };
    Ok(Pushed { blocks, holes, cached: Some(cached) })
}

/// Push `src` into the bucket: upload missing chunks, then the manifest, then `LATEST`.
/// Returns the report; `ok` is false (and nothing is published) when source files
/// changed during the push.
pub async fn push(opts: PushOptions) -> Result<S3Report> {
    let started = Instant::now();
    if let Some(s) = &opts.state {
        refuse_state_inside(s, &opts.src)?;
    }
    let client = opts.client.clone();
    client.check_bucket(opts.create_bucket).await?;
    let (src, state) = (opts.src.clone(), opts.state.clone());
    let walked = tokio::task::spawn_blocking(move || -> Result<(Vec<Entry>, HashIndex)> {
        let entries = tree::walk(&src, 4, &[])?;
        let index = match &state {
            Some(s) => HashIndex::load(s, "s3-push.idx", &src)?,
            None => HashIndex::memory(),
        };
        Ok((entries, index))
    });
    let chunk_prefix = client.location().key("chunks/");
    let listed = client.list(&chunk_prefix).await?;
    let (entries, mut index) = walked.await.expect("walk task")?;
    let mut have = HashSet::with_capacity(listed.len());
    for k in &listed {
        let mut d = [0u8; 32];
        if let Some(h) = k.strip_prefix(&chunk_prefix)
            && hex::decode_to_slice(h, &mut d).is_ok()
        {
            have.insert(d);
        }
    }
    let present_before = have.len();
    tracing::debug!(entries = entries.len(), chunks_in_bucket = present_before, "source walked, bucket listed");

    let jobs = opts.jobs.max(1);
    let sh = Arc::new(PushShared {
        client: client.clone(),
        src: opts.src.clone(),
        have: Mutex::new(have),
        compress: opts.compress != Compress::Never,
        totals: PushTotals::default(),
        sem: Arc::new(Semaphore::new(jobs)),
    });
    let files: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].kind == Kind::File).collect();
    let results: Vec<(usize, Result<Pushed>)> = futures::stream::iter(files.iter().copied())
        .map(|i| {
            let (sh, e, cached) = (sh.clone(), entries[i].clone(), index.get(&entries[i]).cloned());
            async move { (i, push_file(sh, e, cached).await) }
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let mut pushed: HashMap<usize, Pushed> = HashMap::with_capacity(results.len());
    for (i, r) in results {
        pushed.insert(i, r?);
    }
    for (i, p) in pushed.iter_mut() {
        if let Some(c) = p.cached.take() {
            index.map.insert(entries[*i].path.clone(), c);
        }
    }
    let t = &sh.totals;
    let unstable = t.unstable.load(Ordering::Relaxed);
    let contents: Vec<Digest> = (0..entries.len()).map(|i| pushed.get(&i).map(|p| file_hash(entries[i].size, &p.blocks)).unwrap_or([0; 32])).collect();
    let tree_hash = hex::encode(tree::tree_hash(&entries, |i| contents[i]));

    let mut report = S3Report {
        operation: "s3-push".into(),
        source: opts.src.display().to_string(),
        destination: client.location().display(),
        entries: entries.len() as u64,
        files_total: files.len() as u64,
        bytes_total: files.iter().map(|&i| entries[i].size).sum(),
        files_sent: t.files_sent.load(Ordering::Relaxed),
        files_read: t.files_read.load(Ordering::Relaxed),
        unstable_files: unstable,
        chunks_total: pushed.values().map(|p| p.holes.iter().filter(|h| !**h).count() as u64).sum(),
        chunks_uploaded: t.chunks_uploaded.load(Ordering::Relaxed),
        chunks_holes: pushed.values().map(|p| p.holes.iter().filter(|h| **h).count() as u64).sum(),
        chunks_in_bucket_before: present_before as u64,
        file_bytes_transferred: t.file_bytes.load(Ordering::Relaxed),
        compression: sh.compress,
        jobs: jobs as u64,
        sender_tree_hash: tree_hash.clone(),
        ..Default::default()
    };
    report.files_skipped = report.files_total - report.files_sent;
    report.chunks_skipped = report.chunks_total - report.chunks_uploaded;
    if unstable == 0 {
        let pass = pass_name();
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            pass: pass.clone(),
            source: opts.src.display().to_string(),
            block_size: BLOCK_SIZE,
            tree_hash: tree_hash.clone(),
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let (path, path_b64) = split_bytes(&e.path);
                    let (target, target_b64) = split_bytes(&e.target);
                    let chunks = match pushed.get(&i) {
                        Some(p) => p.blocks.iter().zip(&p.holes).map(|(d, h)| if *h { String::new() } else { hex::encode(d) }).collect(),
                        None => Vec::new(),
                    };
                    MEntry {
                        path,
                        path_b64,
                        kind: kind_name(e.kind).into(),
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        mtime: e.mtime_s,
                        mtime_ns: e.mtime_ns,
                        size: if e.kind == Kind::Dir { 0 } else { e.size },
                        target,
                        target_b64,
                        chunks,
                    }
                })
                .collect(),
        };
        let json = serde_json::to_vec(&manifest).expect("manifest serializes");
        let body = zstd::bulk::compress(&json, 3).map_err(|e| MoverError::Protocol(format!("zstd: {e}")))?;
        client.put(&client.location().key(&format!("manifests/{pass}.json.zst")), Bytes::from(body)).await?;
        client.put(&client.location().key("LATEST"), Bytes::from(format!("{pass}\n"))).await?;
        report.pass = pass;
        report.ok = true;
    }
    let mut index = index;
    let entries2 = entries.clone();
    index.dirty = true;
    tokio::task::spawn_blocking(move || index.save(&entries2)).await.expect("save task")?;
    report.bytes_uploaded = client.traffic.sent.load(Ordering::Relaxed);
    report.bytes_downloaded = client.traffic.received.load(Ordering::Relaxed);
    report.requests = client.traffic.requests.load(Ordering::Relaxed);
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[derive(Default)]
struct PullTotals {
    files: AtomicU64,
    delta: AtomicU64,
    chunks_downloaded: AtomicU64,
    chunks_reused: AtomicU64,
    chunks_holes: AtomicU64,
    bytes: AtomicU64,
}

struct PullShared {
    client: Client,
    root: PathBuf,
    totals: PullTotals,
    sem: Arc<Semaphore>,
}

async fn fetch_chunk(sh: &PullShared, d: &Digest, len: u64) -> Result<Vec<u8>> {
    let _p = sh.sem.acquire().await.expect("semaphore");
    let key = chunk_key(&sh.client, d);
    let body = sh.client.get(&key).await?.ok_or_else(|| {
        MoverError::Protocol(format!(
            "chunk {} is missing from {} (the pass is incomplete or the bucket was pruned)",
            hex::encode(d),
            sh.client.location().display()
        ))
    })?;
    let data = tokio::task::spawn_blocking({
        let d = *d;
        move || decode_chunk(&body, &d, len)
    })
    .await
    .expect("decode task")?;
    sh.totals.chunks_downloaded.fetch_add(1, Ordering::Relaxed);
    Ok(data)
}

/// Write one file from its chunks: in place for delta updates, else a new file (via a
/// temp name when something is in the way); metadata last.
async fn pull_file(sh: Arc<PullShared>, e: Entry, chunks: Vec<Option<Digest>>, need: NeedInfo) -> Result<(Vec<u8>, Cached)> {
    let path = e.abs(&sh.root);
    let (file, temp) = super::receive::open_target(&path, &sh.root, need.delta.is_some(), need.exists, "s3")?;
    let target = temp.clone().unwrap_or_else(|| path.clone());
    let r = async {
        file.set_len(e.size).map_err(|x| MoverError::io("resize", &target, x))?;
        let file = Arc::new(file);
        let old = need.delta.as_deref().unwrap_or(&[]);
        let mut work = Vec::new();
        for (b, c) in chunks.iter().enumerate() {
            let len = block_len(e.size, b as u64);
            let want = c.unwrap_or_else(|| zero_hash(len));
            if need.delta.is_some() && old.get(b) == Some(&want) {
                sh.totals.chunks_reused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match c {
                None => {
                    sh.totals.chunks_holes.fetch_add(1, Ordering::Relaxed);
                    if need.delta.is_some() {
                        receive::punch_hole(&file, b as u64 * BLOCK_SIZE, len).map_err(|x| MoverError::io("punch hole", &target, x))?;
                    }
                }
                Some(d) => work.push((b as u64, *d, len)),
            }
        }
        // A fresh file is all hole: zero pages inside chunks stay holes too.
        let sparse = need.delta.is_none();
        let (sh2, target2) = (sh.clone(), target.clone());
        let mut s = futures::stream::iter(work)
            .map(|(b, d, len)| {
                let (sh, file, target) = (sh2.clone(), file.clone(), target2.clone());
                async move {
                    let data = fetch_chunk(&sh, &d, len).await?;
                    tokio::task::spawn_blocking(move || write_chunk(&file, &data, b * BLOCK_SIZE, sparse).map_err(|x| MoverError::io("write", &target, x)))
                        .await
                        .expect("write task")?;
                    sh.totals.bytes.fetch_add(len, Ordering::Relaxed);
                    Ok::<(), MoverError>(())
                }
            })
            .buffer_unordered(4);
        while let Some(r) = s.next().await {
            r?;
        }
        drop(s);
        let file = Arc::try_unwrap(file).map_err(|_| MoverError::Protocol("file still shared after writing".into()))?;
        std::os::unix::fs::fchown(&file, Some(e.uid), Some(e.gid)).map_err(|x| MoverError::io("chown", &target, x))?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(e.mode)).map_err(|x| MoverError::io("chmod", &target, x))?;
        receive::set_mtime_fd(&file, e.mtime_s, e.mtime_ns).map_err(|x| MoverError::io("set mtime", &target, x))?;
        if let Some(t) = &temp {
            std::fs::rename(t, &path).map_err(|x| MoverError::io("rename into place", &path, x))?;
        }
        let md = std::fs::symlink_metadata(&path).map_err(|x| MoverError::io("stat", &path, x))?;
        Ok::<_, MoverError>(md)
    }
    .await;
    let md = match r {
        Ok(md) => md,
        Err(x) => {
            if let Some(t) = &temp {
                let _ = std::fs::remove_file(t);
            } else if need.delta.is_none() {
                let _ = std::fs::remove_file(&path);
            }
            return Err(x);
        }
    };
    sh.totals.files.fetch_add(1, Ordering::Relaxed);
    if need.delta.is_some() {
        sh.totals.delta.fetch_add(1, Ordering::Relaxed);
    }
    let blocks = full_blocks(e.size, &chunks);
    let content = file_hash(e.size, &blocks);
    Ok((e.path.clone(), Cached { size: e.size, mtime: (e.mtime_s, e.mtime_ns), ctime: (md.ctime(), md.ctime_nsec() as u32), ino: md.ino(), content, blocks }))
}

/// Write a chunk at `off`; with `sparse` (a fresh file), skip all-zero 4 KiB pages so
/// they stay holes, the way the source's holes inside a block were.
fn write_chunk(file: &std::fs::File, data: &[u8], off: u64, sparse: bool) -> std::io::Result<()> {
    if !sparse {
        return file.write_all_at(data, off);
    }
    const PAGE: usize = 4096;
    let mut run: Option<usize> = None;
    for (k, page) in data.chunks(PAGE).enumerate() {
        let zero = page.iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(k * PAGE),
            (true, Some(start)) => {
                file.write_all_at(&data[start..k * PAGE], off + start as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], off + start as u64)?;
    }
    Ok(())
}

/// Pull a pass into `dst` and prove it with the tree hash. `ok` is false on a mismatch.
pub async fn pull(opts: PullOptions) -> Result<S3Report> {
    let started = Instant::now();
    if let Some(s) = &opts.state {
        refuse_state_inside(s, &opts.dst)?;
    }
    std::fs::create_dir_all(&opts.dst).map_err(|e| MoverError::io("create destination", &opts.dst, e))?;
    let client = opts.client.clone();
    let loc = client.location().clone();
    client.check_bucket(false).await?;
    let pass = match &opts.pass {
        Some(p) => p.clone(),
        None => {
            let b = client
                .get(&loc.key("LATEST"))
                .await?
                .ok_or_else(|| MoverError::Config(format!("no pass has been pushed to {} yet (no LATEST object)", loc.display())))?;
            String::from_utf8_lossy(&b).trim().to_string()
        }
    };
    if pass.is_empty() || pass.contains('/') {
        return Err(MoverError::Protocol(format!("bad pass name {pass:?}")));
    }
    let mkey = loc.key(&format!("manifests/{pass}.json.zst"));
    let body = client.get(&mkey).await?.ok_or_else(|| MoverError::Config(format!("pass {pass} has no manifest at s3://{}/{mkey}", loc.bucket)))?;
    let json = zstd::stream::decode_all(&body[..]).map_err(|e| MoverError::Protocol(format!("manifest {pass}: bad zstd data: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| MoverError::Protocol(format!("manifest {pass}: {e}")))?;
    if let Some(want) = &opts.expect_tree_hash
        && !want.eq_ignore_ascii_case(&manifest.tree_hash)
    {
        return Err(MoverError::Protocol(format!(
            "pass {pass} carries tree hash {}, not the expected {want}: it is another pass, or the manifest was replaced",
            manifest.tree_hash
        )));
    }
    let (src, chunks) = manifest.decode()?;
    plan::validate(&src).map_err(|e| MoverError::Protocol(format!("manifest {pass}: {e}")))?;
    let contents: Vec<Digest> =
        src.iter().zip(&chunks).map(|(e, c)| if e.kind == Kind::File { file_hash(e.size, &full_blocks(e.size, c)) } else { [0; 32] }).collect();
    let manifest_hash = hex::encode(tree::tree_hash(&src, |i| contents[i]));
    if manifest_hash != manifest.tree_hash {
        return Err(MoverError::Protocol(format!(
            "manifest {pass} does not match its own tree hash (recorded {}, computed {manifest_hash}): it is corrupted or was tampered with",
            manifest.tree_hash
        )));
    }

    let (dst_root, state) = (opts.dst.clone(), opts.state.clone());
    let (dst, mut index) = tokio::task::spawn_blocking(move || -> Result<(Vec<Entry>, HashIndex)> {
        let dst = tree::walk(&dst_root, 4, &[])?;
        let index = match &state {
            Some(s) => HashIndex::load(s, "s3-pull.idx", &dst_root)?,
            None => HashIndex::memory(),
        };
        Ok((dst, index))
    })
    .await
    .expect("walk task")?;
    let plan = plan::compute(&src, &dst);
    let src = Arc::new(src);
    let (src2, root2) = (src.clone(), opts.dst.clone());
    let index_map = std::mem::take(&mut index.map);
    let (report0, need, index_map, dst) =
        tokio::task::spawn_blocking(move || receive::apply_structure(&src2, dst, &plan, &root2, index_map)).await.expect("structure task")?;
    index.map = index_map;
    let changed = !need.is_empty() || report0.entries_deleted + report0.dirs_created + report0.symlinks_created + report0.meta_updates > 0;
    index.dirty = true;

    let jobs = opts.jobs.max(1);
    let sh = Arc::new(PullShared { client: client.clone(), root: opts.dst.clone(), totals: PullTotals::default(), sem: Arc::new(Semaphore::new(jobs)) });
    let mut need: Vec<(usize, NeedInfo)> = need.into_iter().collect();
    need.sort_by_key(|(i, _)| *i);
    let results: Vec<Result<(Vec<u8>, Cached)>> =
        futures::stream::iter(need).map(|(i, n)| pull_file(sh.clone(), src[i].clone(), chunks[i].clone(), n)).buffer_unordered(jobs).collect().await;
    for r in results {
        let (p, c) = r?;
        index.map.insert(p, c);
    }
    let src2 = src.clone();
    let root2 = opts.dst.clone();
    let (links, final_entries, hash, _index) =
        tokio::task::spawn_blocking(move || receive::finish(&src2, &root2, index, dst, changed)).await.expect("finish task")?;
    let t = &sh.totals;
    let mut receiver = report0;
    receiver.hardlinks_created = links;
    receiver.files_written = t.files.load(Ordering::Relaxed);
    receiver.files_delta = t.delta.load(Ordering::Relaxed);
    receiver.file_bytes_written = t.bytes.load(Ordering::Relaxed);
    receiver.entries = final_entries as u64;
    receiver.tree_hash = hex::encode(hash);
    receiver.wire_bytes_received = client.traffic.received.load(Ordering::Relaxed);
    receiver.wire_bytes_sent = client.traffic.sent.load(Ordering::Relaxed);
    receiver.duration_ms = started.elapsed().as_millis() as u64;
    let files_total = src.iter().filter(|e| e.kind == Kind::File).count() as u64;
    Ok(S3Report {
        operation: "s3-pull".into(),
        source: loc.display(),
        destination: opts.dst.display().to_string(),
        pass,
        ok: receiver.tree_hash == manifest.tree_hash,
        entries: src.len() as u64,
        files_total,
        bytes_total: src.iter().filter(|e| e.kind == Kind::File).map(|e| e.size).sum(),
        files_sent: receiver.files_written,
        files_skipped: receiver.files_skipped,
        entries_deleted: receiver.entries_deleted,
        chunks_total: chunks.iter().flatten().filter(|c| c.is_some()).count() as u64,
        chunks_downloaded: t.chunks_downloaded.load(Ordering::Relaxed),
        chunks_skipped: t.chunks_reused.load(Ordering::Relaxed),
        chunks_holes: chunks.iter().flatten().filter(|c| c.is_none()).count() as u64,
        file_bytes_transferred: receiver.file_bytes_written,
        bytes_uploaded: client.traffic.sent.load(Ordering::Relaxed),
        bytes_downloaded: client.traffic.received.load(Ordering::Relaxed),
        requests: client.traffic.requests.load(Ordering::Relaxed),
        jobs: jobs as u64,
        duration_ms: started.elapsed().as_millis() as u64,
        sender_tree_hash: manifest.tree_hash,
        receiver_tree_hash: receiver.tree_hash.clone(),
        receiver: Some(receiver),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_roundtrip_and_verify() {
        let text = b"abc".repeat(10_000);
        let d = block_hash(&text);
        let mut zc = None;
        let enc = encode_chunk(&text, true, &mut zc).unwrap();
        assert_eq!(enc[4], 1, "text compresses");
        assert_eq!(decode_chunk(&enc, &d, text.len() as u64).unwrap(), text);
        let mut bad = encode_chunk(&text, false, &mut zc).unwrap();
        bad[100] ^= 1;
        let e = decode_chunk(&bad, &d, text.len() as u64).unwrap_err().to_string();
        assert!(e.contains("failed verification"), "{e}");
    }

    #[test]
    fn non_utf8_paths_survive_the_manifest() {
        let (s, b) = split_bytes(b"bin-\xff");
        assert!(b.is_some());
        assert_eq!(join_bytes(&s, &b, "path").unwrap(), b"bin-\xff");
        let (s, b) = split_bytes(b"plain");
        assert_eq!((s.as_str(), b), ("plain", None));
    }
}
