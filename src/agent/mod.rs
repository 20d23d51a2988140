//! `ferry agent`: follow the placement repository and act on it.
//!
//! One loop is the single writer: trigger (interval with jitter, or a
//! webhook) → fetch → validate → check signatures → observe the clusters →
//! plan → run migrations (one per namespace, a bounded number at once) →
//! status files committed to the status branch after every stage. Webhooks
//! only wake the loop. Ferry's own status commits are skipped when finding the
//! placement commit, so they never cause work. Interrupted migrations are found
//! again by the planner (the destination copy names its source) and resume
//! from their journal.
pub mod lease;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};

use crate::cluster::observe::{Credentials, connect_all, observe};
use crate::metrics::Metrics;
use crate::model::status::{HistoryEntry, NamespaceStatus, Phase};
use crate::model::{Desired, RepoFiles};
use crate::pipeline::journal::{Journal, Stage};
use crate::pipeline::progress::Progress;
use crate::pipeline::{MigrateError, Migration, Spec};
use crate::plan::{Action, Step};
use crate::repo::{GitRepo, Oid, TrustedKeys};
use crate::webhook::{Readiness, ServerState, Target, WebhookSpec};
use status::{RepositoryStatus, StatusWriter};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub repo: crate::repo::cli::RepoArgs,
    pub credentials: Credentials,
    pub interval: Duration,
    /// Address for webhooks, /healthz, /readyz and /metrics.
    pub listen: Option<SocketAddr>,
    pub webhooks: WebhookSpec,
    /// Run one sync and exit.
    pub once: bool,
    pub max_concurrent: usize,
    pub ready_timeout: Duration,
    /// Leader election: only the holder of this lease acts.
    pub lease: Option<LeaseOptions>,
}

/// Where the leader-election lease lives.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub config: lease::LeaseConfig,
    /// Kubeconfig and context of the management cluster; None = in-cluster config.
    pub kubeconfig: Option<(PathBuf, String)>,
}

/// What one sync did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub commit: Option<String>,
    pub skipped_unchanged: bool,
    pub invalid: bool,
    pub migrations: BTreeMap<String, String>,
    /// Some migration was interrupted: sync again soon, not after the full interval.
    pub retry_soon: bool,
}

/// The running agent.
pub struct Agent {
    opts: Options,
    repo: Arc<Mutex<GitRepo>>,
    pub metrics: Arc<Metrics>,
    last_synced: Option<Oid>,
    /// (namespace, placement commit) whose migration failed: not retried until a new commit.
    failed: BTreeSet<(String, String)>,
    stop: Arc<AtomicBool>,
}

impl Agent {
    /// Open (clone or fetch) the repository.
    pub async fn new(opts: Options) -> anyhow::Result<Agent> {
        let repo = opts.repo.open().await.context("opening the placement repository")?;
        Ok(Agent { opts, repo: Arc::new(Mutex::new(repo)), metrics: Arc::new(Metrics::new()), last_synced: None, failed: BTreeSet::new(), stop: Arc::new(AtomicBool::new(false)) })
    }

    /// Run until `shutdown` resolves (SIGTERM/ctrl-c at the binary's edge). A
    /// migration that is running then stops at its next stage boundary, journaled,
    /// and resumes on the next start.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let readiness = Readiness::default();
        let (triggers, mut wake) = crate::webhook::trigger_channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
        let mut leader_rx = None;
        if let Some(l) = &self.opts.lease {
            let client = match &l.kubeconfig {
                Some((path, ctx)) => crate::kubeconfig::client_for(path, ctx).await?,
                None => kube::Client::try_default().await.context("in-cluster config for the leader-election lease")?,
            };
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(lease::run(client, l.config.clone(), tx));
            leader_rx = Some(rx);
        }
        if let Some(addr) = self.opts.listen {
            let target = Target { repo_url: self.repo_url(), branch: self.opts.repo.branch().to_string() };
            let config = self.opts.webhooks.resolve("webhooks", &target)?;
            let state = ServerState::new(config, triggers, self.metrics.clone(), readiness.clone());
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            tracing::info!(address = %listener.local_addr()?, "serving webhooks, /healthz, /readyz, /metrics");
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                let _ = crate::webhook::serve(listener, crate::webhook::router(state), async move { let _ = stop_rx.wait_for(|s| *s).await; }).await;
            });
        }
        let mut retry_soon;
        loop {
            if let Some(rx) = leader_rx.as_mut() {
                if !*rx.borrow() {
                    readiness.set(true);
                    tracing::info!("standby: waiting for the leader-election lease");
                    let mut stop_rx = stop_rx.clone();
                    tokio::select! {
                        r = rx.wait_for(|l| *l) => { r?; }
                        _ = stop_rx.wait_for(|s| *s) => break,
                    }
                }
            }
            match self.sync().await {
                Ok(report) => {
                    readiness.set(true);
                    retry_soon = report.retry_soon;
                    tracing::info!(commit = ?report.commit, unchanged = report.skipped_unchanged, migrations = ?report.migrations, "sync done");
                }
                Err(e) => {
                    retry_soon = true;
                    tracing::error!(error = %format!("{e:#}"), "sync failed; retrying soon");
                }
            }
            if self.opts.once || self.stop.load(Ordering::SeqCst) {
                break;
            }
            let interval = if retry_soon { self.opts.interval.min(Duration::from_secs(5)) } else { self.opts.interval };
            let jitter = interval.mul_f64(rand::random::<f64>() * 0.2);
            let mut stop_rx = stop_rx.clone();
            tokio::select! {
                _ = tokio::time::sleep(interval + jitter) => {}
                p = wake.recv() => if let Some(p) = p { tracing::info!(coalesced = p.coalesced, "webhook triggered a sync"); },
                _ = stop_rx.wait_for(|s| *s) => break,
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    fn repo_url(&self) -> String {
        self.opts.repo.source().map(|s| s.url).unwrap_or_else(|_| self.opts.repo.repo.clone().unwrap_or_default())
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&GitRepo) -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
        let repo = self.repo.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || f(&repo)).await?
    }

    /// One pass of the loop.
    pub async fn sync(&mut self) -> anyhow::Result<SyncReport> {
        let mut report = SyncReport::default();
        let (head, head_files) = self.blocking(|r| {
            let head = r.fetch()?;
            Ok((head, r.read_files_at(head, "")?))
        }).await?;
        let (head_desired, _) = crate::model::load(&RepoFiles(head_files.clone()));
        let status_dir = head_desired.settings.status.path.value.clone();
        let commit = self.blocking(move |r| Ok(r.latest_placement_commit(head, &status_dir)?)).await?;
        report.commit = Some(commit.to_string());
        let files = if commit == head { head_files } else { self.blocking(move |r| Ok(r.read_files_at(commit, "")?)).await? };
        let (desired, validation) = crate::model::validate(&RepoFiles(files), None);
        let writer = StatusWriter { repo: self.repo.clone(), settings: desired.settings.clone(), dry_run: false };

        if !validation.ok() {
            report.invalid = true;
            if self.last_synced != Some(commit) {
                let errors = validation.findings.iter().map(|f| f.to_string()).collect();
                let st = RepositoryStatus { api_version: crate::model::API_VERSION, kind: "RepositoryStatus", observed_commit: commit.to_string(), phase: "Invalid".into(), at: crate::pipeline::journal::now(), errors };
                writer.repository(&st, commit).await?;
                tracing::error!(%commit, errors = validation.errors, "placement commit is invalid; nothing changes until a valid commit");
            }
            self.last_synced = Some(commit);
            return Ok(report);
        }
        if !desired.settings.trusted_signing_keys.is_empty() {
            let mut keys = TrustedKeys::default();
            for k in &desired.settings.trusted_signing_keys {
                let text = k.public_key.value.trim().to_string();
                if text.contains("BEGIN PGP PUBLIC KEY BLOCK") { keys.openpgp.push(text) } else { keys.ssh.push(text) }
            }
            let verdict = self.blocking(move |r| {
                let ring = keys.load()?;
                Ok(r.verify_commit_signature(commit, &ring)?)
            }).await?;
            if !verdict.is_acceptable() {
                let st = RepositoryStatus { api_version: crate::model::API_VERSION, kind: "RepositoryStatus", observed_commit: commit.to_string(), phase: "Untrusted".into(), at: crate::pipeline::journal::now(), errors: vec![verdict.to_string()] };
                writer.repository(&st, commit).await?;
                tracing::error!(%commit, %verdict, "placement commit is not signed by a trusted key; nothing changes");
                self.last_synced = Some(commit);
                return Ok(report);
            }
        }
        let st = RepositoryStatus { api_version: crate::model::API_VERSION, kind: "RepositoryStatus", observed_commit: commit.to_string(), phase: "Ready".into(), at: String::new(), errors: Vec::new() };
        writer.repository(&st, commit).await?;

        let clusters = connect_all(&desired, &self.opts.credentials).await;
        let observed = observe(&clusters).await;
        let plan = crate::plan::plan(&desired, &observed, None);
        let commit_s = commit.to_string();
        let commit_time = self.blocking(move |r| Ok(r.commit_info(commit)?.time)).await?;
        let at = time::OffsetDateTime::from_unix_timestamp(commit_time).ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        // What the status branch says now: a namespace that a migration put
        // where it belongs keeps that migration's record (stages, downtime,
        // hashes) instead of a bare "InSync".
        let status_branch = desired.settings.status.branch.value.clone();
        let status_dir = desired.settings.status.path.value.clone();
        let existing = self.blocking(move |r| Ok(match r.branch_head(&status_branch)? {
            Some(h) => r.read_files_at(h, &status_dir)?,
            None => BTreeMap::new(),
        })).await?;
        let keeps_record = |st: &NamespaceStatus| {
            let path = crate::model::status::status_file(&desired.settings, &st.namespace);
            existing.get(&path).and_then(|t| NamespaceStatus::from_yaml(t).ok())
                .is_some_and(|old| st.phase == Phase::InSync && old.phase == Phase::Succeeded && old.to == st.to)
        };
        // Everything that does not move is recorded in one commit (none if nothing changed).
        let settled: Vec<NamespaceStatus> = plan.steps.iter()
            .filter(|s| !matches!(s.action, Action::Migrate { .. }))
            .map(|s| status::from_step(s, &commit_s, &at))
            .filter(|st| !keeps_record(st))
            .collect();
        writer.namespaces(&settled, commit, format!("ferry: status of {} namespace(s) at {}", settled.len(), &commit_s[..12.min(commit_s.len())])).await?;
        if plan.migrations().next().is_none() && self.last_synced == Some(commit) {
            report.skipped_unchanged = true;
        }
        let todo: Vec<Step> = plan.migrations().filter(|s| !self.failed.contains(&(s.namespace.clone(), commit_s.clone()))).cloned().collect();
        let results: Vec<(String, Result<Journal, MigrationFailure>)> = futures::stream::iter(todo.into_iter().map(|step| {
            let (desired, clusters, writer, metrics, stop) = (&desired, &clusters, writer.clone(), self.metrics.clone(), self.stop.clone());
            let ready_timeout = self.opts.ready_timeout;
            async move {
                let ns = step.namespace.clone();
                let r = run_migration(&step, desired, clusters, writer, metrics, commit, ready_timeout, stop).await;
                (ns, r)
            }
        }))
        .buffer_unordered(self.opts.max_concurrent.max(1))
        .collect()
        .await;
        for (ns, r) in results {
            let outcome = match &r {
                Ok(j) => format!("{:?}", j.outcome).to_lowercase(),
                Err(f) if f.permanent => {
                    self.failed.insert((ns.clone(), commit_s.clone()));
                    format!("failed: {}", f.message)
                }
                Err(f) => {
                    report.retry_soon = true;
                    format!("interrupted: {}", f.message)
                }
            };
            report.migrations.insert(ns, outcome);
        }
        self.last_synced = Some(commit);
        self.metrics.sync_succeeded(&commit_s, SystemTime::now());
        Ok(report)
    }
}

/// Progress reporter that queues status snapshots for an ordered writer task.
struct StatusProgress {
    tx: mpsc::UnboundedSender<NamespaceStatus>,
    metrics: Arc<Metrics>,
    /// Volume passes already counted in the bytes-moved metric (None until the first journal).
    passes_counted: std::sync::Mutex<Option<usize>>,
}

impl Progress for StatusProgress {
    fn started(&self, _stage: Stage) {}
    fn finished(&self, _stage: Stage, _counts: &BTreeMap<String, u64>, _message: Option<&str>) {}
    fn failed(&self, stage: Stage, message: &str) {
        tracing::warn!(stage = stage.name(), %message, "migration stage failed");
    }
    fn journal(&self, journal: &Journal) {
        if let Some(r) = journal.stages.last().filter(|r| r.finished_at.is_some()) {
            self.metrics.observe_stage(&r.stage, Duration::from_millis(r.duration_ms.unwrap_or(0)));
        }
        {
            let mut counted = self.passes_counted.lock().expect("lock");
            // A resumed migration's earlier passes were counted by the process that ran them.
            let from = counted.unwrap_or(journal.volume_passes.len());
            for p in journal.volume_passes.iter().skip(from) {
                self.metrics.add_bytes_moved(p.bytes);
            }
            *counted = Some(journal.volume_passes.len());
        }
        let _ = self.tx.send(status::from_journal(journal));
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_migration(
    step: &Step,
    desired: &Desired,
    clusters: &BTreeMap<String, Result<crate::cluster::Cluster, crate::cluster::ClusterError>>,
    writer: StatusWriter,
    metrics: Arc<Metrics>,
    commit: Oid,
    ready_timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Journal, MigrationFailure> {
    let Action::Migrate { from, to, .. } = &step.action else { return Err(MigrationFailure { message: "not a migration".into(), permanent: true }) };
    let ns = step.namespace.clone();
    let cluster = |name: &str| clusters.get(name).and_then(|c| c.as_ref().ok())
        .ok_or_else(|| MigrationFailure { message: format!("cluster {name} is unreachable"), permanent: false });
    let (source, dest) = (cluster(from)?, cluster(to)?);
    let mut spec = Spec::from_placement(desired, &ns, from, &commit.to_string()).map_err(|e| MigrationFailure { message: format!("{e:#}"), permanent: true })?;
    spec.ready_timeout = ready_timeout;

    // Status snapshots are written in order by one task, so a slow push never
    // blocks the migration and never reorders stages.
    let (tx, mut rx) = mpsc::unbounded_channel::<NamespaceStatus>();
    let w = writer.clone();
    let ns2 = ns.clone();
    let status_task = tokio::spawn(async move {
        while let Some(mut st) = rx.recv().await {
            while let Ok(next) = rx.try_recv() {
                st = next; // only the newest snapshot matters
            }
            let msg = format!("ferry: {} {:?} ({})", ns2, st.phase, st.stages.last().map(|s| s.name.as_str()).unwrap_or("start"));
            if let Err(e) = w.namespace(&st, commit, None, msg).await {
                tracing::warn!(error = %format!("{e:#}"), "writing status failed");
            }
        }
    });
    let progress = StatusProgress { tx, metrics: metrics.clone(), passes_counted: std::sync::Mutex::new(None) };
    let m = Migration { spec, source, dest, progress: &progress, stop: Some(stop) };
    let result = m.run().await;
    drop(m);
    drop(progress);
    let _ = status_task.await;

    // Permanent failures wait for a new placement commit; anything else (a
    // journal conflict with another runner, an API hiccup, a shutdown) is
    // retried at the next sync, which comes soon.
    let (journal, err, permanent) = match result {
        Ok(j) => (Some(j), None, false),
        Err(MigrateError::RolledBack { journal, message, stage, .. }) => (Some(*journal), Some(format!("{stage}: {message}")), true),
        Err(e @ (MigrateError::Preflight { .. } | MigrateError::NoSuchNamespace { .. })) => (None, Some(format!("{e:#}")), true),
        Err(e) => (None, Some(format!("{e:#}")), false),
    };
    let final_status = match &journal {
        Some(j) => status::from_journal(j),
        None => {
            let mut st = NamespaceStatus::new(&ns, &commit.to_string(), if permanent { Phase::Failed } else { Phase::Migrating });
            st.from = Some(from.clone());
            st.to = Some(to.clone());
            st.errors.push(crate::model::status::StatusError { stage: "migration".into(), message: err.clone().unwrap_or_default(), causes: Vec::new(), transient: !permanent, at: crate::pipeline::journal::now() });
            st
        }
    };
    if err.is_some() && !permanent {
        tracing::warn!(namespace = %ns, error = %err.clone().unwrap_or_default(), "migration interrupted; retrying at the next sync");
        let msg = format!("ferry: {ns} {from} → {to} interrupted");
        if let Err(e) = writer.namespace(&final_status, commit, None, msg).await {
            tracing::warn!(error = %format!("{e:#}"), "writing status failed");
        }
        return Err(MigrationFailure { message: err.unwrap_or_default(), permanent });
    }
    {
        let history = HistoryEntry {
            at: crate::pipeline::journal::now(),
            namespace: ns.clone(),
            commit: commit.to_string(),
            phase: final_status.phase,
            from: Some(from.clone()),
            to: Some(to.clone()),
            migration_id: journal.as_ref().map(|j| j.migration_id.clone()),
            message: err.clone().unwrap_or_else(|| "migrated".into()),
        };
        metrics.migration_finished(if err.is_none() { "succeeded" } else { "failed" });
        if let Some(ms) = journal.as_ref().and_then(|j| j.downtime_ms) {
            metrics.set_downtime(Duration::from_millis(ms));
        }
        let msg = format!("ferry: {ns} {:?} {from} → {to}", final_status.phase);
        if let Err(e) = writer.namespace(&final_status, commit, Some(history), msg).await {
            tracing::warn!(error = %format!("{e:#}"), "writing the final status failed");
        }
    }
    match (journal, err) {
        (Some(j), None) => Ok(j),
        (_, Some(message)) => Err(MigrationFailure { message, permanent }),
        (None, None) => Err(MigrationFailure { message: "no result".into(), permanent: false }),
    }
}

/// Why a migration run by the agent did not complete.
#[derive(Debug)]
struct MigrationFailure {
    message: String,
    /// Waits for a new placement commit (rolled back, refused); otherwise retried soon.
    permanent: bool,
}

/// Read the `webhooks:` spec from a YAML file.
pub fn read_webhook_spec(path: &PathBuf) -> anyhow::Result<WebhookSpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Arguments of `ferry agent`. Flags override `--config`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Agent configuration file (YAML; see deploy/configmap.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub repo: crate::repo::cli::RepoArgs,
    /// Kubeconfig with a context per cluster (`access.kubeconfigContext`); default $KUBECONFIG.
    #[arg(long, env = "FERRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory with one kubeconfig per cluster, named after it (Secrets mounted in-cluster).
    #[arg(long)]
    pub kubeconfig_dir: Option<PathBuf>,
    /// Poll interval (+0–20 % jitter); webhooks trigger sooner. Default 60s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Serve webhooks, /healthz, /readyz and /metrics here.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// YAML file with the webhook receivers (bodyLimitBytes, receivers[]), instead of the config's `webhooks:`.
    #[arg(long)]
    pub webhooks: Option<PathBuf>,
    /// Run one sync and exit (CI bots, cron).
    #[arg(long)]
    pub once: bool,
    /// Migrations running at once (at most one per namespace). Default 2.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// How long cutover waits for workloads to become Ready. Default 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ready_timeout: Option<Duration>,
    /// Leader election: name of the Lease only whose holder acts (for several replicas).
    #[arg(long)]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (default $POD_NAMESPACE, else ferry-system).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Kubeconfig of the cluster holding the Lease (default: in-cluster config).
    #[arg(long, requires = "lease_context")]
    pub lease_kubeconfig: Option<PathBuf>,
    /// Context in --lease-kubeconfig.
    #[arg(long, requires = "lease_kubeconfig")]
    pub lease_context: Option<String>,
    /// Lease duration: a standby takes over this long after the leader stopped renewing.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
}

/// The agent configuration file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentFile {
    #[serde(default)]
    pub repository: Option<RepositoryFile>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub clusters: ClustersFile,
    #[serde(default)]
    pub leader_election: Option<LeaderElectionFile>,
    #[serde(default)]
    pub webhooks: WebhookSpec,
    #[serde(default)]
    pub max_concurrent_migrations: Option<usize>,
    #[serde(default)]
    pub ready_timeout: Option<String>,
}

/// `repository:` of the agent configuration.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryFile {
    pub url: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

/// `clusters:` of the agent configuration.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClustersFile {
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub kubeconfig_dir: Option<PathBuf>,
}

/// `leaderElection:` of the agent configuration.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionFile {
    pub lease_name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Read and check an agent configuration file.
pub fn read_config(path: &std::path::Path) -> anyhow::Result<AgentFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn duration(what: &str, v: Option<&String>) -> anyhow::Result<Option<Duration>> {
    v.map(|s| humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("{what}: {s:?} is not a duration ({e}); write e.g. 30s, 5m, 1h")))
        .transpose()
}

/// Merge flags over the configuration file into agent options.
pub fn options(args: AgentArgs) -> anyhow::Result<Options> {
    let file = match &args.config {
        Some(p) => read_config(p)?,
        None => AgentFile::default(),
    };
    let at = |f: &str| format!("{}: {f}", args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "flags".into()));
    let r = file.repository.unwrap_or_default();
    let a = args.repo;
    let repo = crate::repo::cli::RepoArgs {
        repo: a.repo.or((!r.url.is_empty()).then_some(r.url)),
        branch: a.branch.or(r.branch),
        ssh_key: a.ssh_key.or(r.ssh_key_file),
        known_hosts: a.known_hosts.or(r.known_hosts_file),
        accept_new_host_keys: a.accept_new_host_keys,
        token_env: a.token_env.or(r.token_env),
        ca_file: a.ca_file.or(r.ca_file),
        cache_dir: a.cache_dir.or(r.cache_dir),
    };
    repo.repo().context("set repository.url in --config, or pass --repo")?;
    let webhooks = match &args.webhooks {
        Some(p) => read_webhook_spec(p)?,
        None => file.webhooks,
    };
    let lease_name = args.lease_name.clone().or(file.leader_election.as_ref().map(|l| l.lease_name.clone()));
    let lease = lease_name.map(|name| LeaseOptions {
        config: lease::LeaseConfig {
            name,
            namespace: args.lease_namespace.clone()
                .or(file.leader_election.as_ref().and_then(|l| l.namespace.clone()))
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "ferry-system".into()),
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
            duration: args.lease_duration,
        },
        kubeconfig: args.lease_kubeconfig.clone().zip(args.lease_context.clone()),
    });
    Ok(Options {
        lease,
        repo,
        credentials: Credentials {
            kubeconfig: args.kubeconfig.or(file.clusters.kubeconfig),
            kubeconfig_dir: args.kubeconfig_dir.or(file.clusters.kubeconfig_dir),
        },
        interval: args.interval.or(duration(&at("interval"), file.interval.as_ref())?).unwrap_or(Duration::from_secs(60)),
        listen: args.listen,
        webhooks,
        once: args.once,
        max_concurrent: args.max_concurrent.or(file.max_concurrent_migrations).unwrap_or(2),
        ready_timeout: args.ready_timeout.or(duration(&at("readyTimeout"), file.ready_timeout.as_ref())?).unwrap_or(Duration::from_secs(300)),
    })
}

/// Run `ferry agent` until SIGTERM or ctrl-c.
pub async fn run_cli(args: AgentArgs) -> anyhow::Result<std::process::ExitCode> {
    let opts = options(args)?;
    let agent = Agent::new(opts).await?;
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the current stage"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: finishing the current stage"),
        }
    };
    agent.run(shutdown).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>) -> AgentArgs {
        AgentArgs {
            config, repo: crate::repo::cli::RepoArgs { repo: None, branch: None, ssh_key: None, known_hosts: None, accept_new_host_keys: false, token_env: None, ca_file: None, cache_dir: None },
            kubeconfig: None, kubeconfig_dir: None, interval: None, listen: None, webhooks: None, once: false, max_concurrent: None, ready_timeout: None,
            lease_name: None, lease_namespace: None, lease_kubeconfig: None, lease_context: None, lease_duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn the_deployed_config_parses_into_options() {
        let cm: serde_json::Value = serde_saphyr::from_str(include_str!("../../deploy/configmap.yaml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, cm["data"]["agent.yaml"].as_str().unwrap()).unwrap();
        let o = options(args(Some(path))).unwrap();
        assert_eq!(o.repo.repo().unwrap(), "git@github.com:example/placement.git");
        assert_eq!(o.repo.branch(), "main");
        assert_eq!(o.interval, Duration::from_secs(300));
        assert_eq!(o.credentials.kubeconfig_dir.as_deref(), Some(std::path::Path::new("/etc/ferry/clusters")));
        assert_eq!(o.webhooks.receivers.len(), 2);
    }

    #[test]
    fn flags_override_the_file_and_bad_values_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, "repository:\n  url: https://example.com/p.git\ninterval: soon\n").unwrap();
        let err = options(args(Some(path.clone()))).unwrap_err().to_string();
        assert!(err.contains("interval") && err.contains("\"soon\""), "{err}");
        std::fs::write(&path, "repository:\n  url: https://example.com/p.git\ninterval: 1m\n").unwrap();
        let mut a = args(Some(path.clone()));
        a.interval = Some(Duration::from_secs(5));
        a.repo.repo = Some("file:///tmp/x".into());
        let o = options(a).unwrap();
        assert_eq!((o.repo.repo().unwrap(), o.interval), ("file:///tmp/x", Duration::from_secs(5)));
        std::fs::write(&path, "repository:\n  url: x\n  colour: blue\n").unwrap();
        assert!(options(args(Some(path))).unwrap_err().to_string().contains("colour"));
        assert!(options(args(None)).unwrap_err().to_string().contains("--repo"));
    }
}
