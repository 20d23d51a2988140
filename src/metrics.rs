//! Prometheus metrics of the agent, exposed as OpenMetrics text on `/metrics`.
//!
//! One [`Metrics`] value is created at start-up and shared (`Arc`) by the
//! agent loop and the HTTP server; every recorder takes `&self` because the
//! underlying metrics are atomics.
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Content type of the text exposition served on `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommitLabels {
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    provider: String,
    result: String,
}

type StageHistograms = Family<StageLabels, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 50 ms .. ~3.6 h: stages range from an API call to a multi-terabyte copy.
    Histogram::new(exponential_buckets(0.05, 2.0, 18))
}

/// Every metric the agent exports, with the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    migrations: Family<ResultLabels, Counter>,
    stage_duration: StageHistograms,
    bytes_moved: Counter,
    downtime: Gauge<f64, AtomicU64>,
    last_sync_time: Gauge<f64, AtomicU64>,
    last_sync_commit: Family<CommitLabels, Gauge>,
    webhook_requests: Family<WebhookLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `ferry_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let migrations = Family::<ResultLabels, Counter>::default();
        registry.register("migrations", "Namespace migrations finished, by result", migrations.clone());
        let stage_duration = StageHistograms::new_with_constructor(stage_histogram);
        registry.register_with_unit(
            "stage_duration",
            "Duration of migration pipeline stages",
            Unit::Seconds,
            stage_duration.clone(),
        );
        let bytes_moved = Counter::default();
        registry.register_with_unit("moved", "Volume bytes copied between clusters", Unit::Bytes, bytes_moved.clone());
        let downtime = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "downtime",
            "Downtime of the migration currently in cutover (0 when none is)",
            Unit::Seconds,
            downtime.clone(),
        );
        let last_sync_time = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "last_successful_sync_timestamp",
            "Unix time of the last successful sync",
            Unit::Seconds,
            last_sync_time.clone(),
        );
        let last_sync_commit = Family::<CommitLabels, Gauge>::default();
        registry.register(
            "last_successful_sync_commit",
            "Placement commit of the last successful sync (value is always 1)",
            last_sync_commit.clone(),
        );
        let webhook_requests = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests received, by provider and result",
            webhook_requests.clone(),
        );
        Metrics { registry, migrations, stage_duration, bytes_moved, downtime, last_sync_time, last_sync_commit, webhook_requests }
    }

    /// Count one finished migration (`result`: e.g. `succeeded`, `failed`, `rolled_back`).
    pub fn migration_finished(&self, result: &str) {
        self.migrations.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
    }

    /// Record how long one pipeline stage took.
    pub fn observe_stage(&self, stage: &str, took: Duration) {
        self.stage_duration.get_or_create(&StageLabels { stage: stage.to_owned() }).observe(took.as_secs_f64());
    }

    /// Add volume bytes copied.
    pub fn add_bytes_moved(&self, bytes: u64) {
        self.bytes_moved.inc_by(bytes);
    }

    /// Set the downtime of the cutover in progress; `Duration::ZERO` when it ended.
    pub fn set_downtime(&self, downtime: Duration) {
        self.downtime.set(downtime.as_secs_f64());
    }

    /// Record a successful sync of `commit` at `at`.
    pub fn sync_succeeded(&self, commit: &str, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.last_sync_time.set(secs);
        // Only the latest commit stays in the family, so dashboards can join on it.
        self.last_sync_commit.clear();
        self.last_sync_commit.get_or_create(&CommitLabels { commit: commit.to_owned() }).set(1);
    }

    /// Count one webhook request (`provider` is `unknown` when no receiver matched the path).
    pub fn webhook_request(&self, provider: &str, result: &str) {
        self.webhook_requests
            .get_or_create(&WebhookLabels { provider: provider.to_owned(), result: result.to_owned() })
            .inc();
    }

    /// Webhook requests counted so far for `provider` and `result`.
    pub fn webhook_requests(&self, provider: &str, result: &str) -> u64 {
        self.webhook_requests
            .get(&WebhookLabels { provider: provider.to_owned(), result: result.to_owned() })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Value of the sample line starting with `prefix` (name plus labels).
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
    }

    #[test]
    fn recorded_values_appear_in_the_exposition() {
        let m = Metrics::new();
        m.migration_finished("succeeded");
        m.migration_finished("succeeded");
        m.migration_finished("failed");
        m.observe_stage("volumes", Duration::from_millis(1500));
        m.add_bytes_moved(4096);
        m.add_bytes_moved(1);
        m.set_downtime(Duration::from_millis(2500));
        m.sync_succeeded("abc123", UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        m.sync_succeeded("def456", UNIX_EPOCH + Duration::from_secs(1_700_000_100));
        m.webhook_request("github", "accepted");
        let t = m.encode();
        assert_eq!(sample(&t, r#"ferry_migrations_total{result="succeeded"}"#), Some(2.0), "{t}");
        assert_eq!(sample(&t, r#"ferry_migrations_total{result="failed"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"ferry_stage_duration_seconds_count{stage="volumes"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"ferry_stage_duration_seconds_sum{stage="volumes"}"#), Some(1.5));
        assert_eq!(sample(&t, "ferry_moved_bytes_total"), Some(4097.0));
        assert_eq!(sample(&t, "ferry_downtime_seconds"), Some(2.5));
        assert_eq!(sample(&t, "ferry_last_successful_sync_timestamp_seconds"), Some(1_700_000_100.0));
        assert_eq!(sample(&t, r#"ferry_last_successful_sync_commit{commit="def456"}"#), Some(1.0));
        assert!(!t.contains("abc123"), "an older commit must not stay exported:\n{t}");
        assert_eq!(sample(&t, r#"ferry_webhook_requests_total{provider="github",result="accepted"}"#), Some(1.0));
        assert_eq!(m.webhook_requests("github", "accepted"), 1);
        assert!(t.ends_with("# EOF\n"));
    }
}
