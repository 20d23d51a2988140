//! Pass summaries printed with `-o json` and consumed by the migration pipeline.
use serde::{Deserialize, Serialize};

/// What the receiver did in one pass.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiverReport {
    /// Entries in the destination tree after the pass.
    pub entries: u64,
    /// Files whose content was written.
    pub files_written: u64,
    /// Of those, files updated block-wise in place.
    pub files_delta: u64,
    /// Regular files already in place (metadata match).
    pub files_skipped: u64,
    /// Entries removed because the source no longer has them (a removed directory counts once).
    pub entries_deleted: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Symlinks created or replaced.
    pub symlinks_created: u64,
    /// Hardlinks created.
    pub hardlinks_created: u64,
    /// Entries whose owner/mode/mtime alone were updated.
    pub meta_updates: u64,
    /// File bytes written to disk.
    pub file_bytes_written: u64,
    /// Bytes received on all connections (TLS records included).
    pub wire_bytes_received: u64,
    /// Bytes sent on all connections.
    pub wire_bytes_sent: u64,
    /// Receiver's tree hash (hex).
    pub tree_hash: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// The sender's summary of one pass, including the receiver's report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// Source directory.
    pub source: String,
    /// Receiver address.
    pub destination: String,
    /// Both tree hashes are equal.
    pub ok: bool,
    /// Entries in the source listing.
    pub entries: u64,
    /// Regular files (content-carrying) in the source.
    pub files_total: u64,
    /// Their total size in bytes (apparent size; holes count).
    #[serde(default)]
    pub bytes_total: u64,
    /// Files whose content was sent (whole or block-wise).
    pub files_sent: u64,
    /// Of those, files sent block-wise.
    pub files_delta: u64,
    /// Files skipped because the destination already had them.
    pub files_skipped: u64,
    /// Entries deleted on the destination.
    pub entries_deleted: u64,
    /// Files that changed or vanished while being sent (another pass is needed).
    pub unstable_files: u64,
    /// Raw file bytes sent (before compression).
    pub file_bytes_sent: u64,
    /// File payload bytes on the wire (after compression, before TLS).
    pub data_bytes_sent: u64,
    /// All bytes written to the network on all connections (TLS records included).
    pub wire_bytes_sent: u64,
    /// All bytes read from the network.
    pub wire_bytes_received: u64,
    /// Whether chunks were zstd-compressed when it paid.
    pub compression: bool,
    /// Data connections used.
    pub streams: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Sender's tree hash (hex).
    pub sender_tree_hash: String,
    /// Receiver's tree hash (hex).
    pub receiver_tree_hash: String,
    /// Receiver's own report.
    pub receiver: ReceiverReport,
}

/// Summary of one `ferry mover s3-push` or `s3-pull`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct S3Report {
    /// `s3-push` or `s3-pull`.
    pub operation: String,
    /// Source directory (push) or `s3://bucket/prefix` (pull).
    pub source: String,
    /// `s3://bucket/prefix` (push) or destination directory (pull).
    pub destination: String,
    /// Pass (manifest) name; empty when a push published nothing.
    pub pass: String,
    /// Push: the manifest was published. Pull: both tree hashes are equal.
    pub ok: bool,
    /// Entries in the tree.
    pub entries: u64,
    /// Regular files (content-carrying) in the tree.
    pub files_total: u64,
    /// Their total size in bytes (apparent size; holes count).
    #[serde(default)]
    pub bytes_total: u64,
    /// Push: files with at least one chunk uploaded. Pull: files written.
    pub files_sent: u64,
    /// Push: files re-read (not served by the hash cache). Pull: 0.
    pub files_read: u64,
    /// Files that needed no transfer.
    pub files_skipped: u64,
    /// Pull: entries deleted from the destination.
    pub entries_deleted: u64,
    /// Push: files that changed or vanished while being read (nothing published; run another push).
    pub unstable_files: u64,
    /// Chunk references of the tree (holes excluded; a chunk shared by two files counts twice).
    pub chunks_total: u64,
    /// Chunks uploaded by this push.
    pub chunks_uploaded: u64,
    /// Chunks downloaded by this pull.
    pub chunks_downloaded: u64,
    /// Push: chunk references already in the bucket (or uploaded earlier in this push).
    /// Pull: blocks already right in destination files updated in place.
    pub chunks_skipped: u64,
    /// All-zero blocks, never stored (holes).
    pub chunks_holes: u64,
    /// Push: chunks found in the bucket before the push.
    pub chunks_in_bucket_before: u64,
    /// Raw file bytes of the chunks transferred (before compression).
    pub file_bytes_transferred: u64,
    /// HTTP request body bytes sent (chunks after compression, manifest, `LATEST`).
    pub bytes_uploaded: u64,
    /// HTTP response body bytes received (listings, chunks, manifest).
    pub bytes_downloaded: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Whether chunks were zstd-compressed when it paid.
    pub compression: bool,
    /// Parallel requests.
    pub jobs: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Sender's tree hash (hex), as computed by the push and recorded in the manifest.
    pub sender_tree_hash: String,
    /// Tree hash of the destination after the pull (empty for a push).
    pub receiver_tree_hash: String,
    /// Pull: what was done to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<ReceiverReport>,
}
