//! `ferry validate PATH`: the checks a reviewer wants before merging.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::{RepoFiles, yaml::split_documents};
use crate::output::{OutputFormat, print_structured};

/// Arguments of `ferry validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Working directory of the placement repository.
    pub path: PathBuf,
    /// Output: compiler-style lines (table), or `json`/`yaml` for CI bots.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Directory of the namespaces' current objects, `DIR/<namespace>/*.yaml`
    /// (e.g. an export). With it, overlay patches are applied to them and a
    /// patch that matches nothing is an error.
    #[arg(long)]
    pub objects: Option<PathBuf>,
    /// Keep running: validate again whenever a file under PATH changes (debounced).
    #[arg(long)]
    pub watch: bool,
}

/// Run `ferry validate`: exit 0 when there is no error, 1 otherwise.
pub async fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let files = RepoFiles::from_dir(&args.path)?;
    let objects = match &args.objects {
        Some(dir) => Some(read_objects(dir)?),
        None => None,
    };
    let (_, report) = super::validate(&files, objects.as_ref());
    match args.output {
        OutputFormat::Table => {
            for f in &report.findings {
                println!("{f}");
            }
            let verdict = if report.ok() { "ok" } else { "FAILED" };
            println!("{}: {verdict}: {} error(s), {} warning(s)", args.path.display(), report.errors, report.warnings);
        }
        other => print_structured(&report, other)?,
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Read `dir/<namespace>/**/*.yaml` into objects per namespace. `List`
/// documents are flattened.
pub fn read_objects(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<Value>>> {
    let files = RepoFiles::from_dir(dir)?;
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (path, text) in &files.0 {
        let Some((ns, _)) = path.split_once('/') else { continue };
        if !(path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json")) {
            continue;
        }
        let list = out.entry(ns.to_string()).or_default();
        for doc in split_documents(path, text) {
            let v: Value = serde_saphyr::from_str(doc.text).with_context(|| format!("{}/{path}: line {}", dir.display(), doc.line_offset + 1))?;
            match v.get("items").and_then(Value::as_array) {
                Some(items) if v.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List")) => list.extend(items.iter().cloned()),
                _ => list.push(v),
            }
        }
    }
    Ok(out)
}
