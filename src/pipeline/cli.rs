//! `ferry migrate NAMESPACE --from A --to B`: the pipeline from the command line.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::journal::Journal;
use super::{MigrateError, Migration, Spec, progress};
use crate::cluster::Cluster;
use crate::output::OutputFormat;

/// Arguments of `ferry migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Namespace to move.
    pub namespace: String,
    /// Source cluster (a kubeconfig context).
    #[arg(long)]
    pub from: String,
    /// Destination cluster (a kubeconfig context). With --repo: default the placement's cluster.
    #[arg(long)]
    pub to: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "FERRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Placement repository (local directory or Git URL): clusters are reached as its
    /// cluster definitions say, and its storage-class map, reserve, retention and
    /// overlays apply.
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch of --repo when it is a Git URL.
    #[arg(long, default_value = "main", requires = "repo")]
    pub branch: String,
    /// Directory with one kubeconfig per cluster, named after it (with --repo).
    #[arg(long, requires = "repo")]
    pub kubeconfig_dir: Option<PathBuf>,
    /// Map a source StorageClass to a destination one, e.g. `fast=standard` (repeatable).
    #[arg(long = "storage-class-map", value_parser = parse_pair)]
    pub storage_class_map: Vec<(String, String)>,
    /// How long to keep the retired source (scaled to 0) before deleting it; `0s` deletes it at once.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub retain: Duration,
    /// How long cutover waits for the destination's workloads to become Ready.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Placement commit recorded in provenance labels and the journal.
    #[arg(long, default_value = "manual")]
    pub placement_commit: String,
    /// Keep LoadBalancer IPs and externalIPs of Services.
    #[arg(long)]
    pub keep_load_balancer_ips: bool,
    /// Destination memory to keep free, e.g. `4Gi`.
    #[arg(long, default_value = "0")]
    pub reserve_memory: String,
    /// Destination CPU to keep free, e.g. `500m`.
    #[arg(long, default_value = "0")]
    pub reserve_cpu: String,
    /// How to move volume data: stop-copy-start, or pre-copy (passes while the
    /// application runs, then a short final pass). With --repo: the placement's.
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Service type of the destination's mover receiver (with --repo: the cluster definition's).
    #[arg(long, value_enum)]
    pub mover_service_type: Option<crate::pipeline::volumes::ServiceType>,
    /// Host the source's mover dials instead of the one the receiver's Service reports.
    #[arg(long)]
    pub mover_address: Option<String>,
    /// Ferry's image for the mover pods.
    #[arg(long)]
    pub mover_image: Option<String>,
    /// Move volume data through this S3 bucket (`s3://BUCKET[/PREFIX]`) instead of a direct
    /// connection; needs --mover-s3-endpoint and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
    #[arg(long, requires = "mover_s3_endpoint")]
    pub mover_s3_bucket: Option<String>,
    /// S3 endpoint `http(s)://host[:port]` reachable from both clusters' mover pods.
    #[arg(long, requires = "mover_s3_bucket")]
    pub mover_s3_endpoint: Option<String>,
    /// S3 signing region.
    #[arg(long)]
    pub mover_s3_region: Option<String>,
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `--strategy` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    StopCopyStart,
    PreCopy,
}

fn apply_mover_flags(args: &MigrateArgs, spec: &mut Spec) -> anyhow::Result<()> {
    if let (Some(bucket), Some(endpoint)) = (&args.mover_s3_bucket, &args.mover_s3_endpoint) {
        let s3 = crate::model::S3MoverSpec { endpoint: endpoint.clone(), bucket: bucket.clone(), region: args.mover_s3_region.clone() };
        crate::pipeline::volumes::check_s3(&s3).map_err(|e| anyhow::anyhow!("--mover-s3-*: {e}"))?;
        spec.mover.s3 = Some(s3);
    }
    if let Some(s) = args.strategy {
        spec.strategy = match s {
            StrategyArg::StopCopyStart => crate::model::Strategy::StopCopyStart,
            StrategyArg::PreCopy => crate::model::Strategy::PreCopy,
        };
    }
    if let Some(t) = args.mover_service_type {
        spec.mover.service_type = t;
    }
    if let Some(a) = &args.mover_address {
        spec.mover.address = Some(a.clone());
    }
    if let Some(i) = &args.mover_image {
        spec.mover.image = i.clone();
    }
    Ok(())
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("{s:?} is not SOURCE=DEST (e.g. fast=standard)"))
}

/// Run `ferry migrate`. Exit codes: 0 done, 3 preflight refused, 4 failed and rolled back, 1 other errors.
pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    if let Some(repo) = &args.repo {
        return run_with_repo(&args, repo).await;
    }
    let to = args.to.clone().context("--to is required without --repo")?;
    let kubeconfig = crate::kubeconfig::resolve_path(args.kubeconfig.as_deref())
        .context("no kubeconfig: pass --kubeconfig or set KUBECONFIG")?;
    if args.from == to {
        anyhow::bail!("--from and --to are both {:?}: a namespace moves between two different clusters", args.from);
    }
    let source = Cluster::connect(&args.from, &kubeconfig, &args.from).await?;
    let dest = Cluster::connect(&to, &kubeconfig, &to).await?;
    let mut spec = Spec {
        storage_class_map: args.storage_class_map.iter().cloned().collect::<BTreeMap<_, _>>(),
        retention: args.retain,
        ready_timeout: args.ready_timeout,
        keep_load_balancer_ips: args.keep_load_balancer_ips,
        reserve: (
            crate::transform::quantity::millicores(&args.reserve_cpu).with_context(|| format!("--reserve-cpu {:?} is not a quantity", args.reserve_cpu))?,
            crate::transform::quantity::bytes(&args.reserve_memory).with_context(|| format!("--reserve-memory {:?} is not a quantity", args.reserve_memory))?,
        ),
        ..Spec::new(&args.namespace, &args.placement_commit)
    };
    apply_mover_flags(&args, &mut spec)?;
    execute(spec, &source, &dest, args.output).await
}

/// `--repo`: the placement repository says where `--to` is and how to move.
async fn run_with_repo(args: &MigrateArgs, repo: &str) -> anyhow::Result<ExitCode> {
    use crate::model::{RepoFiles, load_valid};
    let repo_args = crate::repo::cli::RepoArgs::new(repo, Some(args.branch.clone()));
    let (files, commit) = match repo_args.working_dir() {
        Some(dir) => (RepoFiles::from_dir(dir)?, args.placement_commit.clone()),
        None => {
            let git = repo_args.open().await?;
            tokio::task::spawn_blocking(move || -> anyhow::Result<(RepoFiles, String)> {
                let head = git.fetch()?;
                Ok((RepoFiles(git.read_files_at(head, "")?), head.to_string()))
            })
            .await??
        }
    };
    let desired = load_valid(&files).context("the placement repository is invalid: run `ferry validate` for every finding")?;
    let placed = desired.placements.get(&args.namespace).map(|p| p.spec.cluster.value.clone())
        .with_context(|| format!("namespace {} has no placement in {repo}", args.namespace))?;
    let to = args.to.clone().unwrap_or_else(|| placed.clone());
    if to != placed {
        anyhow::bail!("the repository places {} on {placed}, not {to}: change the placement (or drop --to)", args.namespace);
    }
    if args.from == to {
        anyhow::bail!("{} is placed on {to}, which is also --from: nothing to move", args.namespace);
    }
    let creds = crate::cluster::observe::Credentials { kubeconfig: args.kubeconfig.clone(), kubeconfig_dir: args.kubeconfig_dir.clone() };
    let source = crate::cluster::observe::connect(&desired, &args.from, &creds).await?;
    let dest = crate::cluster::observe::connect(&desired, &to, &creds).await?;
    let mut spec = Spec::from_placement(&desired, &args.namespace, &args.from, &commit)?;
    spec.ready_timeout = args.ready_timeout;
    for (k, v) in &args.storage_class_map {
        spec.storage_class_map.insert(k.clone(), v.clone());
    }
    apply_mover_flags(args, &mut spec)?;
    execute(spec, &source, &dest, args.output).await
}

async fn execute(spec: Spec, source: &Cluster, dest: &Cluster, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let console = progress::Console::default();
    let m = Migration { spec, source, dest, progress: &console, stop: None };
    match m.run().await {
        Ok(journal) => {
            print_journal(&journal, output)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(MigrateError::RolledBack { journal, .. }) if output != OutputFormat::Table => {
            print_journal(&journal, output)?;
            Ok(ExitCode::from(4))
        }
        Err(e) => {
            let code = match &e {
                MigrateError::Preflight { .. } => 3,
                MigrateError::RolledBack { .. } => 4,
                _ => 1,
            };
            eprintln!("error: {e}");
            Ok(ExitCode::from(code))
        }
    }
}

fn print_journal(j: &Journal, format: OutputFormat) -> anyhow::Result<()> {
    if format != OutputFormat::Table {
        return crate::output::print_structured(j, format);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(vec!["STAGE", "DURATION", "RESULT"]);
    for s in &j.stages {
        let counts = s.counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
        let msg = [counts, s.message.clone().unwrap_or_default()].into_iter().filter(|x| !x.is_empty()).collect::<Vec<_>>().join("; ");
        t.add_row(vec![s.stage.clone(), s.duration_ms.map(|d| format!("{:.1}s", d as f64 / 1000.0)).unwrap_or_else(|| "-".into()), msg]);
    }
    println!("migration {} of {}: {} → {} ({:?})", j.migration_id, j.namespace, j.from, j.to, j.outcome);
    println!("{t}");
    if let Some(d) = j.downtime_ms {
        println!("downtime: {:.1}s", d as f64 / 1000.0);
    }
    Ok(())
}
