//! Blocking TLS for data connections. The handshake and `Hello` happen on the async
//! runtime like every other connection; then each data connection is handed to one OS
//! thread that drives rustls directly: the sender reads files straight into its plaintext
//! buffer and encrypts from there, the receiver writes file data straight from rustls'
//! decrypted records. No channel hops or wakeups between threads per frame, few syscalls
//! (socket reads of up to 256 KiB, vectored socket writes of up to 64 records).
use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::wire::{self, Counted, Frame, MAX_FRAME};

/// The data path allocates and frees many record-sized buffers (rustls makes one per TLS
/// record) from several threads; glibc would hand freed memory back to the kernel and
/// take page faults to get it again. Keep it (the mover's memory use is bounded anyway).
pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only tunes glibc's allocator thresholds.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
    });
}

/// Socket reads land here first: rustls asks for a few KiB at a time.
const READ_BUF: usize = 1024 * 1024;
/// Ciphertext rustls may queue before it must be written out.
const SEND_QUEUE: usize = 2 << 20;

/// Counted socket with a large read-ahead buffer.
struct Sock {
    inner: Counted<TcpStream>,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl Read for Sock {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
            self.len = self.inner.read(&mut self.buf)?;
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One TLS connection driven synchronously.
pub struct SyncTls {
    sock: Sock,
    conn: rustls::Connection,
}

/// rustls errors (failed record authentication above all) as `InvalidData`, like tokio-rustls.
fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl SyncTls {
    /// Take over a connection whose handshake finished on the async runtime.
    pub fn new(sock: Counted<TcpStream>, conn: impl Into<rustls::Connection>) -> io::Result<Self> {
        sock.get_ref().set_nonblocking(false)?;
        let mut conn = conn.into();
        conn.set_buffer_limit(Some(SEND_QUEUE));
        Ok(SyncTls { sock: Sock { inner: sock, buf: vec![0u8; READ_BUF].into_boxed_slice(), pos: 0, len: 0 }, conn })
    }

    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        self.sock.inner.get_ref()
    }

    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock.inner)?;
        }
        Ok(())
    }

    /// Encrypt `data` into records of its own (rustls never packs two writes into one
    /// record); sends only when rustls' queue is full.
    pub fn queue(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.conn.writer().write(data)?;
            data = &data[n..];
            if !data.is_empty() {
                self.flush_tls()?;
            }
        }
        Ok(())
    }

    /// Send everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }

    /// Encrypt and send all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.queue(data)?;
        self.flush_tls()
    }

    /// Send close_notify and half-close the socket.
    pub fn close(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls()?;
        self.socket().shutdown(std::net::Shutdown::Write)
    }

    /// The next decrypted bytes, or an empty slice at a clean end of stream (close_notify
    /// or TCP end between records); [`SyncTls::consume`] what was used.
    pub fn fill(&mut self) -> io::Result<&[u8]> {
        loop {
            let st = match self.conn.process_new_packets() {
                Ok(st) => st,
                Err(e) => {
                    // Tell the peer why (an alert is queued), best effort.
                    let _ = self.flush_tls();
                    return Err(tls_err(e));
                }
            };
            if st.plaintext_bytes_to_read() > 0 {
                return self.conn.reader().into_first_chunk();
            }
            if st.peer_has_closed() {
                return Ok(&[]);
            }
            self.flush_tls()?;
            if self.conn.read_tls(&mut self.sock)? == 0 {
                // TCP end without close_notify: fine between frames, the caller decides.
                let st = self.conn.process_new_packets().map_err(tls_err)?;
                if st.plaintext_bytes_to_read() > 0 {
                    continue;
                }
                return Ok(&[]);
            }
        }
    }

    /// Mark `n` bytes returned by [`SyncTls::fill`] as used.
    pub fn consume(&mut self, n: usize) {
        use std::io::BufRead;
        self.conn.reader().consume(n);
    }

    /// Fill `buf` completely; `Ok(false)` when the stream ended before its first byte.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let chunk = self.fill()?;
            if chunk.is_empty() {
                if got == 0 {
                    return Ok(false);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the middle of a message"));
            }
            let n = chunk.len().min(buf.len() - got);
            buf[got..got + n].copy_from_slice(&chunk[..n]);
            self.consume(n);
            got += n;
        }
        Ok(true)
    }

    /// Read a frame header: `Ok(None)` on a clean end of stream between frames.
    pub fn read_header(&mut self) -> io::Result<Option<(u8, usize)>> {
        let mut hdr = [0u8; 5];
        if !self.read_exact(&mut hdr)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(hdr[1..].try_into().unwrap()) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")));
        }
        Ok(Some((hdr[0], len)))
    }

    /// Read one whole frame.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        let Some((tag, len)) = self.read_header()? else { return Ok(None) };
        let mut body = vec![0u8; len];
        if !self.read_exact(&mut body)? && len > 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the middle of a message"));
        }
        Ok(Some(Frame { tag, body }))
    }

    /// Send one frame now.
    pub fn write_frame(&mut self, tag: u8, body: &[u8]) -> io::Result<()> {
        self.write_all(&wire::frame(tag, body))
    }
}

/// Plaintext staging buffer of the sender: frames are assembled in place (file data is
/// read straight into it) and encrypted in batches. A record starts at every cut (the
/// start of a chunk's data), so the receiver gets file data in records aligned to the
/// file offset: whole pages to write and whole blake3 chunks to hash.
pub struct OutBuf {
    buf: Box<[u8]>,
    len: usize,
    cuts: Vec<usize>,
}

impl OutBuf {
    /// Room for `flush_at` bytes plus one frame of up to `max_frame` bytes.
    pub fn new(flush_at: usize, max_frame: usize) -> Self {
        OutBuf { buf: vec![0u8; flush_at + max_frame + 64].into_boxed_slice(), len: 0, cuts: Vec::new() }
    }

    /// Bytes staged.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append bytes.
    pub fn put(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    /// Append a whole frame.
    pub fn frame(&mut self, tag: u8, body: &[u8]) {
        self.put(&[tag]);
        self.put(&(body.len() as u32).to_le_bytes());
        self.put(body);
    }

    /// `n` writable bytes at the end (not yet counted as staged).
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        &mut self.buf[self.len..self.len + n]
    }

    /// Count `n` bytes written through [`OutBuf::spare`] as staged.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Start a new TLS record here.
    pub fn cut(&mut self) {
        self.cuts.push(self.len);
    }

    /// Drop staged bytes back to `len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        while self.cuts.last().is_some_and(|&c| c > self.len) {
            self.cuts.pop();
        }
    }

    /// Staged bytes from `from` on.
    pub fn tail(&self, from: usize) -> &[u8] {
        &self.buf[from..self.len]
    }

    /// Staged bytes from `from` on, writable.
    pub fn tail_mut(&mut self, from: usize) -> &mut [u8] {
        &mut self.buf[from..self.len]
    }

    /// Encrypt and send everything staged.
    pub fn send(&mut self, tls: &mut SyncTls) -> io::Result<usize> {
        let n = self.len;
        let mut start = 0;
        for &c in &self.cuts {
            if c > start {
                tls.queue(&self.buf[start..c])?;
                start = c;
            }
        }
        tls.queue(&self.buf[start..n])?;
        tls.flush()?;
        self.len = 0;
        self.cuts.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbuf_stages_frames_and_keeps_cuts_consistent() {
        let mut b = OutBuf::new(64, 64);
        b.frame(7, b"ab");
        b.cut();
        let start = b.len();
        b.spare(3).copy_from_slice(b"xyz");
        b.commit(3);
        assert_eq!(b.tail(start), b"xyz");
        assert_eq!(b.tail(0), &[7, 2, 0, 0, 0, b'a', b'b', b'x', b'y', b'z'][..]);
        b.cut();
        b.truncate(start); // a cut at the truncation point stays, later ones go
        assert_eq!(b.cuts, vec![start]);
        b.truncate(3);
        assert_eq!(b.cuts, Vec::<usize>::new());
        assert_eq!(b.len(), 3);
    }
}
