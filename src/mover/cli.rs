//! `ferry mover …`: the data plane on its own, between two directories.
//!
//! ```text
//! ferry mover certs   --out CERTS [--san NAME]…          # per-migration CA + receiver/sender certs
//! ferry mover receive --listen ADDR --dir DST --certs CERTS [--state DIR] [--serve] [--ready-file F] [-o json]
//! ferry mover send    --to ADDR --dir SRC --certs CERTS [--sender-state DIR] [--streams N]
//!                     [--compress auto|always|never] [--bwlimit BYTES/S] [-o json]
//! ferry mover copy    SRC DST [--state DIR] [--streams N] [--compress …] [-o json]   # both ends, loopback TLS
//!
//! # through object storage, for clusters that cannot reach each other (see `bucket`):
//! ferry mover s3-push --dir SRC --endpoint URL --bucket s3://BUCKET/PREFIX [--state DIR] [--jobs N]
//!                     [--compress auto|always|never] [--create-bucket] [-o json]
//! ferry mover s3-pull --dir DST --endpoint URL --bucket s3://BUCKET/PREFIX [--state DIR] [--jobs N]
//!                     [--pass NAME] [--expect-tree-hash HEX] [-o json]
//! ```
//!
//! S3 credentials: `--access-key`/`--secret-key`/`--region` or `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (default `us-east-1`), or
//! `--credentials-file` in the AWS shared-credentials format (`[default]` profile or
//! `--profile`). The endpoint comes from `--endpoint` or `AWS_ENDPOINT_URL`; buckets are
//! addressed path-style; `--ca-file` adds a CA for https endpoints.
//!
//! Exit codes: 0 both tree hashes equal; 1 error or mismatch (message on stderr);
//! 3 source files changed during the pass, run another (final) pass after quiescing
//! (for `s3-push`: nothing was published, the chunks already uploaded are kept).
//! `-o json` prints the [`Report`] the migration pipeline consumes ([`S3Report`] for
//! the S3 commands).
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::send::Compress;
use super::stats::{ReceiverReport, Report, S3Report};
use super::{bucket, certs, receive, s3, send};
use crate::output::{OutputFormat, print_structured};

/// Mover subcommands.
#[derive(Subcommand, Debug)]
pub enum MoverCommand {
    /// Mint a per-migration CA plus receiver (server) and sender (client) certificates into DIR.
    Certs {
        /// Output directory (ca.pem, server.pem, server-key.pem, client.pem, client-key.pem).
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS names or IPs for the receiver certificate (e.g. its Service name).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// Receive one pass into DIR (or keep serving passes with --serve).
    Receive {
        /// Address to listen on, e.g. 0.0.0.0:7443 in a pod or 127.0.0.1:0 for tests.
        #[arg(long)]
        listen: String,
        /// Destination directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Directory with ca.pem, server.pem, server-key.pem.
        #[arg(long)]
        certs: PathBuf,
        /// Hash cache directory, outside DIR (speeds up later passes).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Keep accepting passes instead of exiting after the first.
        #[arg(long)]
        serve: bool,
        /// Write the bound address to this file once listening (readiness for scripts and pods).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Send DIR to a receiver.
    Send {
        /// Receiver address host:port.
        #[arg(long)]
        to: String,
        /// Source directory.
        #[arg(long)]
        dir: PathBuf,
        /// Directory with ca.pem, client.pem, client-key.pem.
        #[arg(long)]
        certs: PathBuf,
        /// Name to verify in the receiver's certificate.
        #[arg(long, default_value = certs::SERVER_NAME)]
        server_name: String,
        #[command(flatten)]
        tuning: Tuning,
        /// Also write the JSON report to this file (a pod's /dev/termination-log).
        #[arg(long)]
        report_file: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Copy SRC to DST through both ends over loopback TLS (benchmarks, quick checks).
    Copy {
        /// Source directory.
        src: PathBuf,
        /// Destination directory.
        dst: PathBuf,
        /// State directory, outside both trees (hash caches in STATE/send and STATE/receive).
        #[arg(long)]
        state: Option<PathBuf>,
        #[command(flatten)]
        tuning: Tuning,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Push SRC into an S3 bucket as content-addressed chunks plus a manifest (resumable).
    S3Push {
        /// Source directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        s3: S3Args,
        /// Hash cache directory, outside DIR (unchanged files are not re-read).
        #[arg(long)]
        state: Option<PathBuf>,
        /// zstd compression of chunks (auto and always: when a chunk shrinks by 10 %).
        #[arg(long, value_enum, default_value_t = Compress::Auto)]
        compress: Compress,
        /// Create the bucket if it does not exist.
        #[arg(long)]
        create_bucket: bool,
        /// Also write the JSON report to this file (a pod's /dev/termination-log).
        #[arg(long)]
        report_file: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Pull the latest (or a named) pass from an S3 bucket into DIR and verify its tree hash.
    S3Pull {
        /// Destination directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        s3: S3Args,
        /// Hash cache directory, outside DIR.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Pass to pull (a manifest name; default: the newest, named by PREFIX/LATEST).
        #[arg(long)]
        pass: Option<String>,
        /// Fail unless the pass's recorded sender tree hash is this one (from the push's report).
        #[arg(long)]
        expect_tree_hash: Option<String>,
        /// Also write the JSON report to this file (a pod's /dev/termination-log).
        #[arg(long)]
        report_file: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

/// Where the bucket is and how to sign requests.
#[derive(clap::Args, Debug)]
pub struct S3Args {
    /// Bucket and key prefix, `s3://BUCKET/PREFIX`.
    #[arg(long)]
    bucket: String,
    /// S3 endpoint, `http(s)://host[:port]` (path-style addressing).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: String,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: Option<String>,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Session token for temporary credentials.
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    session_token: Option<String>,
    /// Signing region.
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// AWS shared-credentials file (`aws_access_key_id`, `aws_secret_access_key`, …).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Profile in the credentials file.
    #[arg(long, default_value = "default")]
    profile: String,
    /// Extra CA certificates (PEM) trusted for an https endpoint.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Parallel requests (object stores answer each GET after tens of milliseconds: pulls need many in flight).
    #[arg(long, default_value_t = 32)]
    jobs: usize,
}

impl S3Args {
    fn client(&self) -> anyhow::Result<s3::Client> {
        let mut file: std::collections::HashMap<String, String> = Default::default();
        if let Some(f) = &self.credentials_file {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("read credentials file {}: {e}", f.display()))?;
            let mut section = String::new();
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') && line.ends_with(']') {
                    section = line[1..line.len() - 1].trim().trim_start_matches("profile ").to_string();
                } else if let Some((k, v)) = line.split_once('=')
                    && section == self.profile
                {
                    file.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
            if file.is_empty() {
                anyhow::bail!("credentials file {} has no [{}] profile", f.display(), self.profile);
            }
        }
        let pick = |flag: &Option<String>, key: &str| flag.clone().or_else(|| file.get(key).cloned());
        let access_key = pick(&self.access_key, "aws_access_key_id")
            .ok_or_else(|| anyhow::anyhow!("no S3 access key: set AWS_ACCESS_KEY_ID, --access-key or --credentials-file"))?;
        let secret_key = pick(&self.secret_key, "aws_secret_access_key")
            .ok_or_else(|| anyhow::anyhow!("no S3 secret key: set AWS_SECRET_ACCESS_KEY, --secret-key or --credentials-file"))?;
        let creds = s3::Credentials {
            access_key,
            secret_key,
            session_token: pick(&self.session_token, "aws_session_token"),
            region: pick(&self.region, "region").unwrap_or_else(|| "us-east-1".into()),
        };
        let loc = s3::Location::parse(&self.endpoint, &self.bucket)?;
        Ok(s3::Client::new(loc, creds, self.ca_file.as_deref())?)
    }
}

/// Sender tuning shared by `send` and `copy`.
#[derive(clap::Args, Debug)]
pub struct Tuning {
    /// Hash cache directory of the sender, outside the source (for `send`).
    #[arg(long = "sender-state")]
    sender_state: Option<PathBuf>,
    /// Parallel data connections.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// zstd compression of file chunks.
    #[arg(long, value_enum, default_value_t = Compress::Auto)]
    compress: Compress,
    /// Bandwidth limit in bytes per second.
    #[arg(long)]
    bwlimit: Option<u64>,
}

/// Run a mover subcommand. Exit codes: 0 trees verified equal, 1 error or mismatch,
/// 3 source changed during the pass (run another pass).
pub async fn run(cmd: MoverCommand) -> anyhow::Result<ExitCode> {
    // In a pod the mover is PID 1, where a signal without a handler is ignored:
    // without this a deleted mover pod would wait out its whole grace period.
    // Stopping mid-pass is safe — files land by rename, the next pass resumes.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    tokio::select! {
        r = run_command(cmd) => r,
        _ = term.recv() => {
            tracing::warn!("SIGTERM: stopping the mover");
            Ok(ExitCode::from(143))
        }
        _ = int.recv() => {
            tracing::warn!("SIGINT: stopping the mover");
            Ok(ExitCode::from(130))
        }
    }
}

async fn run_command(cmd: MoverCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MoverCommand::Certs { out, sans, days } => {
            let m = certs::mint(&sans, days)?;
            certs::write(&out, &m)?;
            eprintln!("wrote CA, receiver and sender certificates to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        MoverCommand::Receive { listen, dir, certs: cdir, state, serve, ready_file, output } => {
            let tls = certs::server_config_dir(&cdir)?;
            let listener = receive::bind(&listen).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, dir = %dir.display(), "mover receiver listening");
            if let Some(f) = &ready_file {
                let tmp = f.with_extension("tmp");
                std::fs::write(&tmp, addr.to_string())?;
                std::fs::rename(&tmp, f)?;
            }
            let rep = receive::serve(listener, receive::ReceiveOptions { tls, dst: dir, state, serve }).await?;
            print_receiver(&rep, output)?;
            Ok(ExitCode::SUCCESS)
        }
        MoverCommand::Send { to, dir, certs: cdir, server_name, tuning, report_file, output } => {
            let opts = send::SendOptions {
                addr: to,
                server_name: certs::server_name(&server_name)?,
                tls: certs::client_config_dir(&cdir)?,
                src: dir,
                state: tuning.sender_state,
                streams: tuning.streams,
                compress: tuning.compress,
                bwlimit: tuning.bwlimit,
                progress: output == OutputFormat::Table && std::io::stderr().is_terminal(),
            };
            let rep = send::send(opts).await?;
            write_report(report_file.as_deref(), &rep)?;
            finish(&rep, output)
        }
        MoverCommand::Copy { src, dst, state, tuning, output } => {
            let m = certs::mint(&[], 1)?;
            let server = certs::server_config(&m.ca, &m.server_cert, &m.server_key)?;
            let client = certs::client_config(&m.ca, &m.client_cert, &m.client_key)?;
            let listener = receive::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let rstate = state.as_ref().map(|s| s.join("receive"));
            let recv = tokio::spawn(receive::serve(listener, receive::ReceiveOptions { tls: server, dst, state: rstate, serve: false }));
            let opts = send::SendOptions {
                addr,
                server_name: certs::server_name(certs::SERVER_NAME)?,
                tls: client,
                src,
                state: state.as_ref().map(|s| s.join("send")).or(tuning.sender_state),
                streams: tuning.streams,
                compress: tuning.compress,
                bwlimit: tuning.bwlimit,
                progress: output == OutputFormat::Table && std::io::stderr().is_terminal(),
            };
            let sent = send::send(opts).await;
            match sent {
                Ok(rep) => {
                    let r = recv.await?;
                    if rep.ok {
                        r?;
                    }
                    finish(&rep, output)
                }
                Err(e) => {
                    recv.abort();
                    Err(e.into())
                }
            }
        }
        MoverCommand::S3Push { dir, s3, state, compress, create_bucket, report_file, output } => {
            let opts = bucket::PushOptions { client: s3.client()?, src: dir, state, jobs: s3.jobs, compress, create_bucket };
            let rep = bucket::push(opts).await?;
            write_report(report_file.as_deref(), &rep)?;
            finish_s3(&rep, output)
        }
        MoverCommand::S3Pull { dir, s3, state, pass, expect_tree_hash, report_file, output } => {
            let opts = bucket::PullOptions { client: s3.client()?, dst: dir, state, jobs: s3.jobs, pass, expect_tree_hash };
            let rep = bucket::pull(opts).await?;
            write_report(report_file.as_deref(), &rep)?;
            finish_s3(&rep, output)
        }
    }
}

fn write_report(file: Option<&std::path::Path>, rep: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(f) = file {
        std::fs::write(f, serde_json::to_vec(rep)?).map_err(|e| anyhow::anyhow!("writing the report to {}: {e}", f.display()))?;
    }
    Ok(())
}

fn finish_s3(rep: &S3Report, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match output {
        OutputFormat::Table => {
            let (verb, n, bytes) =
                if rep.operation == "s3-push" { ("uploaded", rep.chunks_uploaded, rep.bytes_uploaded) } else { ("downloaded", rep.chunks_downloaded, rep.bytes_downloaded) };
            println!(
                "{} pass {}: {n} of {} chunks {verb} ({} skipped, {} holes), {} of {} files, deleted {}; {} file bytes, {bytes} bytes {verb}, {:.2} s",
                rep.operation,
                if rep.pass.is_empty() { "-" } else { &rep.pass },
                rep.chunks_total,
                rep.chunks_skipped,
                rep.chunks_holes,
                rep.files_sent,
                rep.files_total,
                rep.entries_deleted,
                rep.file_bytes_transferred,
                rep.duration_ms as f64 / 1000.0
            );
            println!("tree hash sender   {}", rep.sender_tree_hash);
            if !rep.receiver_tree_hash.is_empty() {
                println!("tree hash receiver {}", rep.receiver_tree_hash);
            }
        }
        f => print_structured(rep, f)?,
    }
    if rep.ok {
        return Ok(ExitCode::SUCCESS);
    }
    if rep.operation == "s3-push" {
        eprintln!(
            "error: {} source files changed during the push; nothing was published (uploaded chunks are kept) — run another push after quiescing writers",
            rep.unstable_files
        );
        return Ok(ExitCode::from(3));
    }
    eprintln!("error: tree hash mismatch: sender {} receiver {} — the destination does not equal the pushed tree", rep.sender_tree_hash, rep.receiver_tree_hash);
    Ok(ExitCode::from(1))
}

fn finish(rep: &Report, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match output {
        OutputFormat::Table => {
            println!(
                "sent {} of {} files ({} block-wise), skipped {}, deleted {}; {} file bytes, {} bytes on the wire, {} streams, {:.2} s",
                rep.files_sent,
                rep.files_total,
                rep.files_delta,
                rep.files_skipped,
                rep.entries_deleted,
                rep.file_bytes_sent,
                rep.wire_bytes_sent,
                rep.streams,
                rep.duration_ms as f64 / 1000.0
            );
            println!("tree hash sender   {}", rep.sender_tree_hash);
            println!("tree hash receiver {}", rep.receiver_tree_hash);
        }
        f => print_structured(rep, f)?,
    }
    if rep.ok {
        return Ok(ExitCode::SUCCESS);
    }
    if rep.unstable_files > 0 {
        eprintln!(
            "error: tree hash mismatch: sender {} receiver {}; {} source files changed during the pass — run another pass (after quiescing writers)",
            rep.sender_tree_hash, rep.receiver_tree_hash, rep.unstable_files
        );
        return Ok(ExitCode::from(3));
    }
    eprintln!("error: tree hash mismatch: sender {} receiver {} — the destination does not equal the source", rep.sender_tree_hash, rep.receiver_tree_hash);
    Ok(ExitCode::from(1))
}

fn print_receiver(rep: &ReceiverReport, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Table => {
            println!(
                "received {} files ({} block-wise), skipped {}, deleted {}; {} file bytes written, {:.2} s",
                rep.files_written,
                rep.files_delta,
                rep.files_skipped,
                rep.entries_deleted,
                rep.file_bytes_written,
                rep.duration_ms as f64 / 1000.0
            );
            println!("tree hash receiver {}", rep.tree_hash);
            Ok(())
        }
        f => print_structured(rep, f),
    }
}
