//! Local multi-cluster harness (placeholder while being written).
pub mod binaries;
pub mod provisioner;
use std::path::{Path, PathBuf};
use crate::output::OutputFormat;
pub fn default_state_dir() -> PathBuf { PathBuf::from("/tmp/ferry-dev") }
pub struct UpOptions { pub clusters: Vec<String>, pub nodes: u32, pub node_cpu: String, pub node_memory: String }
#[derive(serde::Serialize)]
pub struct StatusReport {}
impl StatusReport { pub fn healthy(&self) -> bool { false } }
pub async fn up(_s: &Path, _o: &UpOptions) -> anyhow::Result<StatusReport> { anyhow::bail!("todo") }
pub async fn status(_s: &Path) -> anyhow::Result<StatusReport> { anyhow::bail!("todo") }
pub fn down(_s: &Path, _p: bool) -> anyhow::Result<()> { anyhow::bail!("todo") }
pub async fn demo(_s: &Path) -> anyhow::Result<()> { anyhow::bail!("todo") }
pub fn print_status(_r: &StatusReport, _o: OutputFormat) -> anyhow::Result<()> { Ok(()) }
