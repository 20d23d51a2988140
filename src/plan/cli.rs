//! `ferry plan`: what Ferry would do for a placement commit.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{Observed, plan, table};
use crate::cluster::observe::{Credentials, connect_all, observe};
use crate::model::{Desired, RepoFiles, load_valid};
use crate::output::{OutputFormat, print_structured};
use crate::repo::cli::RepoArgs;

/// Arguments of `ferry plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Commit to plan (default: the branch head; a local directory without --rev is read as it is on disk).
    #[arg(long)]
    pub rev: Option<String>,
    /// Base commit: plan only namespaces whose placement changed between --base and --rev (the plan of a PR).
    #[arg(long)]
    pub base: Option<String>,
    /// Working directory of the base commit (PR mode without Git).
    #[arg(long, conflicts_with = "base")]
    pub base_dir: Option<PathBuf>,
    /// Observed cluster state as a JSON or YAML file (see `plan::Observed`), instead of reading the clusters.
    #[arg(long)]
    pub observed: Option<PathBuf>,
    /// Kubeconfig with a context per cluster (`access.kubeconfigContext`); default $KUBECONFIG.
    #[arg(long, env = "FERRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory with one kubeconfig file per cluster, named after it.
    #[arg(long)]
    pub kubeconfig_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Read an observed-state file (JSON if it parses as such, else YAML).
pub fn read_observed(path: &std::path::Path) -> anyhow::Result<Observed> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(o) = serde_json::from_str(&text) {
        return Ok(o);
    }
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.without_snippet()))
}

fn load(files: &RepoFiles, what: &str) -> anyhow::Result<Desired> {
    load_valid(files).with_context(|| format!("{what}: run `ferry validate` for every finding"))
}

/// Run `ferry plan`.
pub async fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (desired, base) = match (args.repo.working_dir(), &args.rev, &args.base) {
        (Some(dir), None, None) => {
            let base = match &args.base_dir {
                Some(b) => Some(load(&RepoFiles::from_dir(b)?, "base directory")?),
                None => None,
            };
            (load(&RepoFiles::from_dir(dir)?, "working directory")?, base)
        }
        _ => {
            let repo = args.repo.open().await?;
            let (rev, base) = (args.rev.clone(), args.base.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<(Desired, Option<Desired>)> {
                let head = repo.fetch()?;
                let commit = match &rev {
                    Some(r) => repo.resolve(r)?,
                    None => head,
                };
                let desired = load(&RepoFiles(repo.read_files_at(commit, "")?), &format!("commit {commit}"))?;
                let base = match &base {
                    Some(b) => {
                        let oid = repo.resolve(b)?;
                        Some(load(&RepoFiles(repo.read_files_at(oid, "")?), &format!("base commit {oid}"))?)
                    }
                    None => None,
                };
                Ok((desired, base))
            })
            .await??
        }
    };
    let observed = match &args.observed {
        Some(path) => read_observed(path)?,
        None => {
            let creds = Credentials { kubeconfig: args.kubeconfig.clone(), kubeconfig_dir: args.kubeconfig_dir.clone() };
            observe(&connect_all(&desired, &creds).await).await
        }
    };
    let p = plan(&desired, &observed, base.as_ref());
    match args.output {
        OutputFormat::Table => {
            println!("{}", table(&p));
            let counts: Vec<String> = p.summary.actions.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!("{}", counts.join(", "));
        }
        other => print_structured(&p, other)?,
    }
    Ok(ExitCode::SUCCESS)
}
