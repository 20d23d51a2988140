//! Fault injection for crash tests: `FERRY_FAULT=crash-after:<stage>` kills the
//! process (SIGKILL-like abort, no cleanup) right after a stage is journaled,
//! `FERRY_FAULT=crash-in-apply:<n>` after the n-th applied object. Unset in
//! normal operation; it costs one environment lookup per call.
use super::journal::Stage;

fn fault() -> Option<String> {
    std::env::var("FERRY_FAULT").ok().filter(|v| !v.is_empty())
}

fn die(what: &str) -> ! {
    eprintln!("FERRY_FAULT: crashing {what}");
    // abort() raises SIGABRT: no destructors, no flush — like a kill -9.
    std::process::abort()
}

/// Called after `stage` was journaled as finished.
pub fn after_stage(stage: Stage) {
    if fault().as_deref() == Some(&format!("crash-after:{}", stage.name())) {
        die(&format!("after stage {stage}"));
    }
}

/// Called after the n-th object was applied.
pub fn in_apply(n: usize) {
    if fault().as_deref() == Some(&format!("crash-in-apply:{n}")) {
        die(&format!("after applying object {n}"));
    }
}
