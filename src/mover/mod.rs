//! Volume data plane: copy a directory tree to another directory over mutual TLS,
//! sending only what changed since the previous pass, and prove the result with a
//! tree hash computed independently on both ends.
//!
//! | file          | role                                                              | IO |
//! |---------------|-------------------------------------------------------------------|----|
//! | [`certs`]     | mint a per-migration CA + server/client certs, build rustls configs | disk |
//! | [`tree`]      | walk a tree into sorted [`tree::Entry`]s, group hardlinks, tree hash | disk |
//! | [`hash`]      | block hashing (blake3, 1 MiB blocks), file content hash            | -  |
//! | [`index`]     | per-side hash cache kept outside the data dir (`--state`)          | disk |
//! | [`plan`]      | pure: compare source listing with destination → what to do        | -  |
//! | [`wire`]      | length-prefixed frames, message encoding, byte-counting stream     | -  |
//! | [`stream`]    | blocking TLS for data connections: one thread per connection      | net |
//! | [`send`] / [`receive`] | the two ends of one pass                                  | disk, net |
//! | [`s3`]        | minimal S3 client: SigV4 signing, PUT/GET/HEAD, ListObjectsV2      | net |
//! | [`bucket`]    | object-storage transport: content-addressed chunks + manifest     | disk, net |
//! | [`cli`]       | `ferry mover receive|send|copy|certs|s3-push|s3-pull`              | stdout |
//!
//! One pass (S = sender, R = receiver):
//! 1. S opens a control connection, sends `Hello` and its full listing.
//! 2. R walks its destination meanwhile, computes the [`plan`], applies deletions,
//!    directories, symlinks and metadata-only changes, and answers with the list of
//!    files it needs — with its block hashes for large files it already has.
//! 3. S opens up to `--streams` data connections and streams file contents (whole files,
//!    or only the blocks whose hash differs); R writes them and sets metadata last, so a
//!    file with the right size and mtime on disk is a finished file (this is what lets
//!    the next pass resume after a crash).
//! 4. S sends `Finish`; R links hardlinks, sets directory metadata deepest-first,
//!    re-walks its tree and returns its tree hash. S compares with its own; a mismatch
//!    fails the pass.
pub mod bucket;
pub mod certs;
pub mod cli;
pub mod hash;
pub mod index;
pub mod plan;
pub mod receive;
pub mod s3;
pub mod send;
pub mod stats;
pub mod stream;
pub mod tree;
pub mod wire;

use std::path::{Path, PathBuf};

/// Everything that can go wrong in a pass.
#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The destination filesystem ran out of space (ENOSPC) or hit a file size limit (EFBIG).
    #[error(
        "destination volume full while writing {path}: {source}; free space on (or enlarge) the destination volume and rerun — the source was not modified"
    )]
    NoSpace {
        /// File being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Network or TLS failure, including records that fail TLS integrity checks.
    #[error("{context}: {source}")]
    Net {
        /// Which connection and what it was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent something that does not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer reported an error and aborted.
    #[error("{side} reported: {message}")]
    Peer {
        /// `receiver` or `sender`.
        side: &'static str,
        /// Its message.
        message: String,
    },
    /// Certificates could not be minted, read or used.
    #[error("certificates: {0}")]
    Certs(String),
    /// A file's content hash on the receiver differs from the sender's.
    #[error("content verification failed for {path}: sender {sender}, receiver {receiver}")]
    ContentMismatch {
        /// Relative path.
        path: String,
        /// Sender's content hash (hex).
        sender: String,
        /// Receiver's content hash (hex).
        receiver: String,
    },
    /// Invalid configuration (paths, options).
    #[error("{0}")]
    Config(String),
}

impl MoverError {
    /// Wrap an io error with the operation and path, turning ENOSPC/EFBIG into [`MoverError::NoSpace`].
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => MoverError::NoSpace { path: path.to_path_buf(), source },
            _ => MoverError::Io { op, path: path.to_path_buf(), source },
        }
    }

    /// Wrap a network error with what the connection was doing.
    pub fn net(context: impl Into<String>, source: std::io::Error) -> Self {
        MoverError::Net { context: context.into(), source }
    }
}

/// Result alias for the mover.
pub type Result<T, E = MoverError> = std::result::Result<T, E>;

/// Protocol version; both ends must agree.
pub const PROTOCOL_VERSION: u32 = 1;
/// Block size for delta transfer and content hashing.
pub const BLOCK_SIZE: u64 = 1 << 20;
/// Files at least this large on both sides are updated block-wise instead of re-sent whole.
pub const DELTA_MIN: u64 = 2 * BLOCK_SIZE;
