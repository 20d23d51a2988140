//! `ferry mover …`: the data plane on its own, between two directories.
//!
//! ```text
//! ferry mover certs   --out CERTS [--san NAME]…          # per-migration CA + receiver/sender certs
//! ferry mover receive --listen ADDR --dir DST --certs CERTS [--state DIR] [--serve] [--ready-file F] [-o json]
//! ferry mover send    --to ADDR --dir SRC --certs CERTS [--sender-state DIR] [--streams N]
//!                     [--compress auto|always|never] [--bwlimit BYTES/S] [-o json]
//! ferry mover copy    SRC DST [--state DIR] [--streams N] [--compress …] [-o json]   # both ends, loopback TLS
//! ```
//!
//! Exit codes: 0 both tree hashes equal; 1 error or mismatch (message on stderr);
//! 3 source files changed during the pass, run another (final) pass after quiescing.
//! `-o json` prints the [`Report`] the migration pipeline consumes.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::send::Compress;
use super::stats::{ReceiverReport, Report};
use super::{certs, receive, send};
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
            if let Some(f) = &report_file {
                std::fs::write(f, serde_json::to_vec(&rep)?).map_err(|e| anyhow::anyhow!("writing the report to {}: {e}", f.display()))?;
            }
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
    }
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
