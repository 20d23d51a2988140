//! Framing: every message is `tag: u8, len: u32 LE, body`. Control messages and the
//! listing are hand-encoded (fixed-width little-endian fields, length-prefixed bytes);
//! file data travels as raw or zstd-compressed chunks.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::tree::{Entry, Kind, Local};
use super::{MoverError, Result};

/// Largest accepted frame body (a 1 MiB chunk plus headroom; listing batches stay smaller).
pub const MAX_FRAME: usize = 4 << 20;

/// Message tags.
pub mod tag {
    /// Connection opener: version, role, session id.
    pub const HELLO: u8 = 1;
    /// Batch of listing entries.
    pub const ENTRIES: u8 = 2;
    /// End of listing (entry count).
    pub const LISTING_END: u8 = 3;
    /// Batch of needed files (with receiver block hashes for delta).
    pub const NEED: u8 = 4;
    /// End of need list.
    pub const NEED_END: u8 = 5;
    /// Start of one file's data.
    pub const FILE_BEGIN: u8 = 6;
    /// File data at an offset.
    pub const CHUNK: u8 = 7;
    /// A block that is now a hole.
    pub const ZERO: u8 = 8;
    /// End of a file: sender's content hash.
    pub const FILE_END: u8 = 9;
    /// No more files on this data connection.
    pub const DATA_END: u8 = 10;
    /// All data connections are done.
    pub const FINISH: u8 = 11;
    /// Receiver's report (JSON).
    pub const DONE: u8 = 12;
    /// Fatal error text; the session is over.
    pub const ERROR: u8 = 13;
    /// Sender's tree hash and verdict.
    pub const VERDICT: u8 = 14;
    /// Receiver finished writing everything from one data connection.
    pub const DATA_DONE: u8 = 15;
    /// A listed file vanished before it could be sent.
    pub const FILE_GONE: u8 = 16;
}

/// Connection roles in `Hello`.
pub const ROLE_CONTROL: u8 = 0;
/// Data connection role.
pub const ROLE_DATA: u8 = 1;

/// One received frame.
#[derive(Debug)]
pub struct Frame {
    /// Message tag.
    pub tag: u8,
    /// Body.
    pub body: Vec<u8>,
}

/// Frame header + body as one buffer.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + body.len());
    v.push(tag);
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// Write one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut hdr = [0u8; 5];
    hdr[0] = tag;
    hdr[1..].copy_from_slice(&(body.len() as u32).to_le_bytes());
    w.write_all(&hdr).await?;
    w.write_all(body).await
}

/// Read one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut hdr = [0u8; 5];
    match r.read_exact(&mut hdr[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut hdr[1..]).await?;
    let len = u32::from_le_bytes(hdr[1..].try_into().unwrap()) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame { tag: hdr[0], body }))
}

/// Body encoder.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// Empty encoder.
    pub fn new() -> Self {
        Enc(Vec::new())
    }
    /// Append a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// Append a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Append a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Append an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Append raw bytes without a length.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    /// Append length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.raw(v)
    }
}

/// Body decoder; every short read is a protocol error naming the message.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// Decode `buf`, naming it `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Dec { buf, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(MoverError::Protocol(format!("{} message truncated at byte {}", self.what, self.pos)));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Read a byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// Read a u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    /// Read a u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// Read an i64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// Read a 32-byte digest.
    pub fn digest(&mut self) -> Result<[u8; 32]> {
        Ok(self.take(32)?.try_into().unwrap())
    }
    /// Read length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// The unread remainder.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Encode one listing entry.
pub fn put_entry(enc: &mut Enc, e: &Entry) {
    enc.bytes(&e.path).u8(e.kind as u8).u32(e.mode).u32(e.uid).u32(e.gid).i64(e.mtime_s).u32(e.mtime_ns).u64(e.size).bytes(&e.target);
}

/// Decode one listing entry.
pub fn get_entry(d: &mut Dec<'_>) -> Result<Entry> {
    let path = d.bytes()?.to_vec();
    let k = d.u8()?;
    let kind = Kind::from_u8(k).ok_or_else(|| MoverError::Protocol(format!("unknown entry type {k}")))?;
    Ok(Entry {
        path,
        kind,
        mode: d.u32()?,
        uid: d.u32()?,
        gid: d.u32()?,
        mtime_s: d.i64()?,
        mtime_ns: d.u32()?,
        size: d.u64()?,
        target: d.bytes()?.to_vec(),
        local: Local::default(),
    })
}

/// Shared byte counters for one or more connections.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Bytes read from the socket.
    pub rx: Arc<AtomicU64>,
    /// Bytes written to the socket.
    pub tx: Arc<AtomicU64>,
}

impl Counters {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.rx.load(Ordering::Relaxed)
    }
    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.tx.load(Ordering::Relaxed)
    }
}

/// A socket wrapper counting the bytes that really cross the wire (TLS records included).
pub struct Counted<S> {
    inner: S,
    counters: Counters,
}

impl<S> Counted<S> {
    /// Wrap `inner`, adding to `counters`.
    pub fn new(inner: S, counters: Counters) -> Self {
        Counted { inner, counters }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped socket and the counters.
    pub fn into_parts(self) -> (S, Counters) {
        (self.inner, self.counters)
    }
}

impl<S: std::io::Read> std::io::Read for Counted<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.rx.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<S: std::io::Write> std::io::Write for Counted<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counters.tx.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.counters.tx.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Turn an async TLS connection whose handshake is done into a blocking one.
pub fn into_sync<C: Into<rustls::Connection>>(io: Counted<tokio::net::TcpStream>, conn: C) -> std::io::Result<super::stream::SyncTls> {
    let (tcp, counters) = io.into_parts();
    let tcp = tcp.into_std()?;
    super::stream::SyncTls::new(Counted::new(tcp, counters), conn)
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters.rx.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.tx.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Message text of an ERROR frame.
pub fn error_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_roundtrip() {
        let e = Entry {
            path: b"a/\xffb".to_vec(),
            kind: Kind::Symlink,
            mode: 0,
            uid: 1000,
            gid: 1001,
            mtime_s: -5,
            mtime_ns: 999_999_999,
            size: 12,
            target: b"../x".to_vec(),
            local: Local::default(),
        };
        let mut enc = Enc::new();
        put_entry(&mut enc, &e);
        let mut d = Dec::new(&enc.0, "entries");
        assert_eq!(get_entry(&mut d).unwrap(), e);
        assert!(d.is_empty());
        let mut short = Dec::new(&enc.0[..10], "entries");
        assert!(get_entry(&mut short).unwrap_err().to_string().contains("truncated"));
    }

    #[tokio::test]
    async fn frames_roundtrip_and_reject_oversize() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, tag::CHUNK, b"xyz").await.unwrap();
        let f = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!((f.tag, f.body.as_slice()), (tag::CHUNK, &b"xyz"[..]));
        let mut hdr = vec![tag::CHUNK];
        hdr.extend_from_slice(&(u32::MAX).to_le_bytes());
        a.write_all(&hdr).await.unwrap();
        assert!(read_frame(&mut b).await.unwrap_err().to_string().contains("exceeds"));
    }
}
