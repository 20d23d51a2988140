//! `ferry plan`: what Ferry would do for a placement commit.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{Observed, plan, table};
use crate::model::{RepoFiles, load_valid};
use crate::output::{OutputFormat, print_structured};

/// Arguments of `ferry plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Working directory of the placement repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// Observed cluster state as a JSON or YAML file (see `plan::Observed`),
    /// instead of reading the clusters.
    #[arg(long)]
    pub observed: Option<PathBuf>,
    /// Working directory of the base commit: plan only namespaces whose placement changed (PR mode).
    #[arg(long)]
    pub base_dir: Option<PathBuf>,
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

/// Run `ferry plan` against a working directory and an observed-state file.
pub async fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let desired = load_valid(&RepoFiles::from_dir(&args.repo)?).context("run `ferry validate` for every finding")?;
    let base = match &args.base_dir {
        Some(dir) => Some(load_valid(&RepoFiles::from_dir(dir)?).context("base commit")?),
        None => None,
    };
    let Some(observed_path) = &args.observed else {
        anyhow::bail!("reading live clusters is not wired into `ferry plan` yet: pass --observed FILE");
    };
    let observed = read_observed(observed_path)?;
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
