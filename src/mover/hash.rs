//! Content hashing: a file's content hash is blake3 over its size and the blake3 hashes
//! of its 1 MiB blocks. Block hashes double as the delta-transfer index, so a receiver
//! that updated only some blocks can derive the whole-file hash without re-reading it.
use std::sync::OnceLock;

use super::BLOCK_SIZE;

/// A 32-byte blake3 digest.
pub type Digest = [u8; 32];

static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];

/// Hash of `len` zero bytes (fast path for holes: full blocks are cached).
pub fn zero_hash(len: u64) -> Digest {
    static FULL: OnceLock<Digest> = OnceLock::new();
    if len == BLOCK_SIZE {
        return *FULL.get_or_init(|| hash_zeros(BLOCK_SIZE));
    }
    hash_zeros(len)
}

fn hash_zeros(mut len: u64) -> Digest {
    let mut h = blake3::Hasher::new();
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..n]);
        len -= n as u64;
    }
    *h.finalize().as_bytes()
}

/// Hash of one block's bytes.
pub fn block_hash(data: &[u8]) -> Digest {
    *blake3::hash(data).as_bytes()
}

/// Whole-file content hash from its size and block hashes.
pub fn file_hash(size: u64, blocks: &[Digest]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"ferry-file-v1");
    h.update(&size.to_le_bytes());
    for b in blocks {
        h.update(b);
    }
    *h.finalize().as_bytes()
}

/// Number of blocks a file of `size` bytes has.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE)
}

/// Length of block `i` of a file of `size` bytes.
pub fn block_len(size: u64, i: u64) -> u64 {
    (size - i * BLOCK_SIZE).min(BLOCK_SIZE)
}

/// Incremental block hasher fed with data at increasing offsets; gaps are holes and hash
/// as zeros, so a sparse file hashes the same as its dense equivalent.
pub struct BlockHasher {
    pos: u64,
    in_block: u64,
    hasher: blake3::Hasher,
    blocks: Vec<Digest>,
}

impl Default for BlockHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockHasher {
    /// Empty hasher at offset 0.
    pub fn new() -> Self {
        BlockHasher { pos: 0, in_block: 0, hasher: blake3::Hasher::new(), blocks: Vec::new() }
    }

    /// Current offset (bytes consumed, including gaps).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Feed `data` found at `offset` (must be ≥ the current position).
    pub fn feed(&mut self, offset: u64, mut data: &[u8]) -> Result<(), String> {
        if offset < self.pos {
            return Err(format!("data at offset {offset} after offset {}: chunks must arrive in order", self.pos));
        }
        self.zeros_to(offset);
        while !data.is_empty() {
            let room = (BLOCK_SIZE - self.in_block) as usize;
            let n = room.min(data.len());
            self.hasher.update(&data[..n]);
            self.advance(n as u64);
            data = &data[n..];
        }
        Ok(())
    }

    fn advance(&mut self, n: u64) {
        self.pos += n;
        self.in_block += n;
        if self.in_block == BLOCK_SIZE {
            self.blocks.push(*self.hasher.finalize().as_bytes());
            self.hasher.reset();
            self.in_block = 0;
        }
    }

    fn zeros_to(&mut self, target: u64) {
        while self.pos < target {
            if self.in_block == 0 && target - self.pos >= BLOCK_SIZE {
                self.blocks.push(zero_hash(BLOCK_SIZE));
                self.pos += BLOCK_SIZE;
                continue;
            }
            let n = (BLOCK_SIZE - self.in_block).min(target - self.pos).min(ZEROS.len() as u64);
            self.hasher.update(&ZEROS[..n as usize]);
            self.advance(n);
        }
    }

    /// Finish a file of `size` bytes (trailing hole hashed as zeros): block hashes and content hash.
    pub fn finish(mut self, size: u64) -> (Vec<Digest>, Digest) {
        self.zeros_to(size);
        if self.in_block > 0 {
            self.blocks.push(*self.hasher.finalize().as_bytes());
        }
        let content = file_hash(size, &self.blocks);
        (self.blocks, content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_and_dense_hash_alike() {
        let size = 3 * BLOCK_SIZE + 123;
        let mut dense = vec![0u8; size as usize];
        dense[5..10].copy_from_slice(b"hello");
        dense[(2 * BLOCK_SIZE + 7) as usize] = 9;
        let mut a = BlockHasher::new();
        a.feed(0, &dense).unwrap();
        let mut b = BlockHasher::new();
        b.feed(5, b"hello").unwrap();
        b.feed(2 * BLOCK_SIZE + 7, &[9]).unwrap();
        let (ba, ca) = a.finish(size);
        let (bb, cb) = b.finish(size);
        assert_eq!(ba.len(), 4);
        assert_eq!(ba, bb);
        assert_eq!(ca, cb);
        assert_eq!(ba[1], zero_hash(BLOCK_SIZE));
        assert_eq!(ba[0], block_hash(&dense[..BLOCK_SIZE as usize]));
    }

    #[test]
    fn out_of_order_is_rejected() {
        let mut h = BlockHasher::new();
        h.feed(10, b"x").unwrap();
        assert!(h.feed(5, b"y").is_err());
    }

    #[test]
    fn empty_file_has_no_blocks() {
        let (b, c) = BlockHasher::new().finish(0);
        assert!(b.is_empty());
        assert_eq!(c, file_hash(0, &[]));
    }
}
