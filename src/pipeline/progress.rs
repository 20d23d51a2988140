//! How a running migration reports progress: a live display on a terminal,
//! structured log lines otherwise. The agent adds its own reporter that writes
//! status files.
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use super::journal::{Journal, Stage};

/// Receives stage events.
pub trait Progress: Send + Sync {
    /// A stage began (or resumed).
    fn started(&self, stage: Stage);
    /// A stage finished.
    fn finished(&self, stage: Stage, counts: &BTreeMap<String, u64>, message: Option<&str>);
    /// A stage failed.
    fn failed(&self, stage: Stage, message: &str);
    /// Free-form detail inside a stage ("waiting for 3 pods").
    fn detail(&self, _message: &str) {}
    /// The journal was saved (status writers hook in here).
    fn journal(&self, _journal: &Journal) {}
}

/// Spinners on a terminal, log lines elsewhere.
pub struct Console {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    tty: bool,
}

impl Default for Console {
    fn default() -> Self {
        Console { bar: Mutex::new(None), tty: std::io::stderr().is_terminal() }
    }
}

fn summary(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
}

impl Progress for Console {
    fn started(&self, stage: Stage) {
        if self.tty {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {prefix:<10} {wide_msg} {elapsed}").expect("template"));
            bar.set_prefix(stage.name());
            bar.enable_steady_tick(Duration::from_millis(120));
            *self.bar.lock().expect("lock") = Some(bar);
        } else {
            tracing::info!(stage = stage.name(), "stage started");
        }
    }
    fn finished(&self, stage: Stage, counts: &BTreeMap<String, u64>, message: Option<&str>) {
        let text = [summary(counts), message.unwrap_or("").to_string()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ");
        if let Some(bar) = self.bar.lock().expect("lock").take() {
            bar.finish_and_clear();
            eprintln!("✓ {:<10} {text} ({:.1}s)", stage.name(), bar.elapsed().as_secs_f64());
        } else {
            tracing::info!(stage = stage.name(), summary = %text, "stage finished");
        }
    }
    fn failed(&self, stage: Stage, message: &str) {
        if let Some(bar) = self.bar.lock().expect("lock").take() {
            bar.finish_and_clear();
            eprintln!("✗ {:<10} {message}", stage.name());
        } else {
            tracing::error!(stage = stage.name(), error = %message, "stage failed");
        }
    }
    fn detail(&self, message: &str) {
        if let Some(bar) = self.bar.lock().expect("lock").as_ref() {
            bar.set_message(message.to_string());
        } else {
            tracing::debug!(%message);
        }
    }
}
