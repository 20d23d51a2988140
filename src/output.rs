//! Shared CLI output: tracing setup, `-o table|json|yaml`.
use std::io::IsTerminal;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable table.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
    /// YAML.
    Yaml,
}

/// Structured logs to stderr: human-readable on a terminal, JSON lines otherwise
/// (override with FERRY_LOG_FORMAT=json|text).
pub fn init_tracing(filter: &str) {
    // kube's client builder logs every failed connection at ERROR; callers get
    // the same error as a Result and decide whether it matters (polling loops).
    let filter = format!("{filter},kube_client::client::builder=off");
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match std::env::var("FERRY_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.compact().try_init() };
}

/// Print a serializable value as JSON or YAML.
pub fn print_structured<T: serde::Serialize>(value: &T, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        OutputFormat::Table => anyhow::bail!("print_structured called with table format"),
    }
    Ok(())
}
